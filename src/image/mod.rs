//! Disk images as byte-addressable block devices.
//!
//! Everything above this layer (NTFS, hives, the golden pipeline) sees a disk as a
//! [`BlockDev`]: a length and reads and writes at any byte offset and length.
//! This module owns the formats (qcow2 through `qcow2-rs`, raw files), overlays
//! whose backing file is another image, partition tables (MBR and GPT) and
//! [`PartitionView`]s that slice a device. It knows nothing of NTFS or Windows.
//!
//! The single entry point is [`open`], which sniffs the magic and picks the format.

#![deny(unsafe_code)]

mod create;
mod error;
pub mod fat;
mod lock;
mod partition;
mod qcow2;
mod raw;
mod size;

pub use create::{create_overlay, create_qcow2, publish, CreateOptions};
pub use error::{Error, Result};
pub use lock::{in_use, Access};
pub use partition::{
    probe_filesystem, scan_partitions, Partition, PartitionTable, Role, TableKind,
};
pub(crate) use qcow2::Header as Qcow2Header;
pub use qcow2::{
    backing_chain, backing_files, backing_path, panic_is_guarded, Chain, Qcow2Image, Unresolved,
};
pub use raw::RawImage;
pub use size::parse_size;

use std::io::Read;
use std::path::Path;

/// Logical sector size assumed for partition tables and qcow2-rs I/O.
pub const SECTOR_SIZE: u64 = 512;

/// A block device addressed in bytes.
///
/// Implementations accept any offset and length within `len()`; those that sit on
/// sector-granular storage do read-modify-write of partial sectors themselves.
pub trait BlockDev {
    /// Size of the device in bytes.
    fn len(&self) -> u64;

    /// Whether the device is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`. Reading past `len()` is an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Writes `buf` at `offset`. Writing past `len()` is an error.
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;

    /// Makes every write so far durable (data and metadata).
    fn flush(&self) -> Result<()>;

    /// Whether writes are allowed.
    fn is_writable(&self) -> bool;

    /// Whether `[offset, offset + len)` may hold data. False only when every byte
    /// of it is known to read as zero without being stored (unallocated qcow2
    /// clusters down the whole backing chain, zero clusters); finalize skips those
    /// without reading them.
    fn allocated(&self, _offset: u64, _len: u64) -> Result<bool> {
        Ok(true)
    }
}

/// A box of a device, or a reference to one, is that device.
macro_rules! same_device {
    ($($outer:ty),+) => {$(
        impl<D: BlockDev + ?Sized> BlockDev for $outer {
            fn len(&self) -> u64 {
                (**self).len()
            }
            fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
                (**self).read_at(offset, buf)
            }
            fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
                (**self).write_at(offset, buf)
            }
            fn flush(&self) -> Result<()> {
                (**self).flush()
            }
            fn is_writable(&self) -> bool {
                (**self).is_writable()
            }
            fn allocated(&self, offset: u64, len: u64) -> Result<bool> {
                (**self).allocated(offset, len)
            }
        }
    )+};
}

same_device!(Box<D>, &D);

/// Checks that `[offset, offset + len)` lies within a device of `size` bytes.
pub(crate) fn check_range(size: u64, offset: u64, len: usize) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}

/// The image formats wingold recognises by their magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Qcow2,
    Raw,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        })
    }
}

/// Magic numbers of formats we do not handle, so that they are refused by name
/// instead of being taken for raw disks.
const FOREIGN_MAGICS: &[(&[u8], &str)] = &[
    (b"KDMV", "VMDK"),
    (b"# Disk DescriptorFile", "VMDK descriptor"),
    (b"WithoutFreeSpace", "Parallels"),
    (b"WithouFreSpacExt", "Parallels"),
    (b"vhdxfile", "VHDX"),
    (b"conectix", "VHD"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>", "VDI"),
    (b"QED\0", "QED"),
];

/// Opens the disk file at `path` for `access`, after [`check_kind`].
pub(crate) fn open_disk_file(path: &Path, access: Access) -> Result<std::fs::File> {
    check_kind(path)?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(access == Access::ReadWrite)
        .open(path)
        .map_err(|e| Error::open(path, e))
}

/// Refuses, before anything opens it (opening a FIFO blocks), what cannot be a
/// disk: a folder, a FIFO, a socket, a character device. Regular files and block
/// devices (LVM volumes, loop devices) pass.
pub(crate) fn check_kind(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata(path)
        .map_err(|e| Error::open(path, e))?
        .file_type();
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else {
        return Ok(());
    };
    Err(Error::NotAnImage {
        path: path.to_owned(),
        reason: format!("it is {what}, not a file or block device"),
    })
}

/// The size of an open disk: a regular file's length, or a block device's size.
pub(crate) fn file_size(file: &std::fs::File, path: &Path) -> Result<u64> {
    use std::io::Seek;
    use std::os::unix::fs::FileTypeExt;
    let meta = file.metadata().map_err(|e| Error::open(path, e))?;
    if meta.file_type().is_block_device() {
        let mut f = file;
        let end = f
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| Error::open(path, e))?;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::open(path, e))?;
        return Ok(end);
    }
    Ok(meta.len())
}

/// VDI's image signature 0xbeda107f, little-endian, at offset 0x40.
const VDI_SIGNATURE: [u8; 4] = [0x7f, 0x10, 0xda, 0xbe];

/// Reads the first bytes of `path` and tells which format it holds.
pub fn sniff(path: &Path) -> Result<Format> {
    check_kind(path)?;
    let mut file = std::fs::File::open(path).map_err(|e| Error::open(path, e))?;
    let size = file_size(&file, path)?;
    if size == 0 {
        return Err(Error::NotAnImage {
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::open(path, e))?;
    let head = &head[..n];
    if head.starts_with(qcow2::QCOW_MAGIC) {
        return Ok(Format::Qcow2);
    }
    let foreign = FOREIGN_MAGICS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
        // VDI's signature is at 0x40 (after a free-text line).
        .or_else(|| (head.get(0x40..0x44) == Some(&VDI_SIGNATURE[..])).then_some("VDI"));
    if let Some(name) = foreign {
        return Err(Error::NotAnImage {
            path: path.to_owned(),
            reason: format!("it is a {name} image; convert it with `qemu-img convert -O qcow2`"),
        });
    }
    if size % SECTOR_SIZE != 0 {
        return Err(Error::NotAnImage {
            path: path.to_owned(),
            reason: format!(
                "not a qcow2 image, and its size ({size} bytes) is not a whole number of \
                 512-byte sectors, so it is no raw disk either"
            ),
        });
    }
    Ok(Format::Raw)
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// An opened image of any supported format.
pub enum Image {
    Qcow2(Box<Qcow2Image>),
    Raw(RawImage),
}

impl Image {
    /// The format of the top layer.
    pub fn format(&self) -> Format {
        match self {
            Image::Qcow2(_) => Format::Qcow2,
            Image::Raw(_) => Format::Raw,
        }
    }

    /// The file of the top layer.
    pub fn path(&self) -> &Path {
        match self {
            Image::Qcow2(q) => q.path(),
            Image::Raw(r) => r.path(),
        }
    }

    /// The images below this one, nearest first (empty for a standalone image).
    pub fn backing_chain(&self) -> Vec<&Image> {
        let mut out = Vec::new();
        let mut cur = self;
        while let Image::Qcow2(q) = cur {
            let Some(next) = q.backing() else { break };
            out.push(next);
            cur = next;
        }
        out
    }

    fn dev(&self) -> &dyn BlockDev {
        match self {
            Image::Qcow2(q) => q,
            Image::Raw(r) => r,
        }
    }
}

impl BlockDev for Image {
    fn len(&self) -> u64 {
        self.dev().len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.dev().read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.dev().write_at(offset, buf)
    }
    fn flush(&self) -> Result<()> {
        self.dev().flush()
    }
    fn is_writable(&self) -> bool {
        self.dev().is_writable()
    }
    fn allocated(&self, offset: u64, len: u64) -> Result<bool> {
        self.dev().allocated(offset, len)
    }
}

/// Opens an image by sniffing its magic: qcow2 (with its backing chain) or raw.
///
/// `Access::ReadWrite` takes the same OFD locks QEMU takes, so an image that a
/// running QEMU holds is refused instead of being corrupted under it.
pub fn open(path: &Path, access: Access) -> Result<Image> {
    Ok(match sniff(path)? {
        Format::Qcow2 => Image::Qcow2(Box::new(Qcow2Image::open(path, access)?)),
        Format::Raw => Image::Raw(RawImage::open(path, access)?),
    })
}

/// A window of `len` bytes at `start` on another device: a partition.
pub struct PartitionView<D> {
    dev: D,
    start: u64,
    len: u64,
}

impl<D: BlockDev> PartitionView<D> {
    /// Slices `dev`; the window must lie within it.
    pub fn new(dev: D, start: u64, len: u64) -> Result<Self> {
        check_range(dev.len(), start, 0)?;
        match start.checked_add(len) {
            Some(end) if end <= dev.len() => Ok(PartitionView { dev, start, len }),
            _ => Err(Error::OutOfRange {
                offset: start,
                len: len as usize,
                size: dev.len(),
            }),
        }
    }

    /// Where the window starts on the underlying device.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Gives the underlying device back.
    pub fn into_inner(self) -> D {
        self.dev
    }
}

impl<D: BlockDev> BlockDev for PartitionView<D> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, buf.len())?;
        self.dev.read_at(self.start + offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(self.len, offset, buf.len())?;
        self.dev.write_at(self.start + offset, buf)
    }
    fn flush(&self) -> Result<()> {
        self.dev.flush()
    }
    fn is_writable(&self) -> bool {
        self.dev.is_writable()
    }
    fn allocated(&self, offset: u64, len: u64) -> Result<bool> {
        self.dev.allocated(self.start + offset, len)
    }
}
