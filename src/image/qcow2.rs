//! qcow2 images through `qcow2-rs`, behind a guard and our own backing chain.
//!
//! qcow2-rs does the mapping, allocation and refcount work. Around it this module:
//! - reads and checks the header itself first and refuses, by name, what qcow2-rs
//!   cannot handle safely (see [`Header::check`]), so that no bad image reaches code
//!   that panics or corrupts;
//! - hides the backing file from qcow2-rs and follows the chain itself (qcow2-rs
//!   resolves backing names against the current directory, panics when the file is
//!   missing and cannot use raw bases); clusters not allocated in this layer are
//!   read from the base, and written as whole clusters merged with the base's data;
//! - owns the header on disk: when qcow2-rs rewrites it (L1 or refcount table moved)
//!   only those fields are taken over, so extensions and the backing name survive;
//! - accepts any byte offset and length (qcow2-rs wants 512-byte-aligned I/O).

mod backing;
mod header;
mod io;

use super::lock::{lock_image, Access};
use super::{check_range, BlockDev, Error, Image, Result, SECTOR_SIZE};
use backing::*;
pub use backing::{backing_chain, backing_files, backing_path, Chain, Unresolved};
pub(crate) use header::Header;
use header::*;
use io::FileIo;
use qcow2_rs::dev::{Qcow2Dev, Qcow2DevParams};
use qcow2_rs::error::Qcow2Result;
use qcow2_rs::meta::{MappingSource, Qcow2Header};
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub(crate) const QCOW_MAGIC: &[u8] = b"QFI\xfb";

/// Header extension types (docs/interop/qcow2.txt).
pub(crate) const EXT_END: u32 = 0;
pub(crate) const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// A qcow2 header's incompatible feature bits (docs/interop/qcow2.txt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Incompat(pub u64);

impl Incompat {
    pub const DIRTY: Incompat = Incompat(1 << 0);
    pub const CORRUPT: Incompat = Incompat(1 << 1);
    pub const DATA_FILE: Incompat = Incompat(1 << 2);
    pub const COMPRESSION: Incompat = Incompat(1 << 3);
    pub const EXTL2: Incompat = Incompat(1 << 4);
    /// Every bit this module knows.
    const KNOWN: u64 = 0b1_1111;

    pub fn has(self, flag: Incompat) -> bool {
        self.0 & flag.0 != 0
    }

    pub fn with(self, flag: Incompat, on: bool) -> Incompat {
        Incompat(if on {
            self.0 | flag.0
        } else {
            self.0 & !flag.0
        })
    }

    /// The bits set that this module does not know.
    pub fn unknown(self) -> u64 {
        self.0 & !Self::KNOWN
    }
}

/// Smallest cluster size qcow2-rs handles correctly for writes (found by trying).
const MIN_CLUSTER_BITS: u32 = 12;
const MAX_CLUSTER_BITS: u32 = 21;
/// Longest backing chain followed (loops are found by file identity before that).
const MAX_CHAIN_DEPTH: usize = 1000;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is inside a call into qcow2-rs, whose panics we catch
/// and turn into errors (the panic hook stays quiet for those).
pub fn panic_is_guarded() -> bool {
    GUARDED.with(Cell::get)
}

/// Runs a qcow2-rs future to completion. qcow2-rs asserts and unwraps on some damaged
/// images; such a panic becomes an error here instead of reaching the user.
fn block_on<T>(fut: impl std::future::Future<Output = Qcow2Result<T>>) -> Qcow2Result<T> {
    let was = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(fut)
    }));
    GUARDED.with(|g| g.set(was));
    result.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(std::io::Error::other(format!("qcow2-rs gave up on this image: {msg}")).into())
    })
}

/// A qcow2 image, possibly an overlay over a backing chain.
pub struct Qcow2Image {
    dev: Qcow2Dev<FileIo>,
    path: PathBuf,
    len: u64,
    cluster_size: u64,
    writable: bool,
    backing: Option<Box<Image>>,
    header: Header,
    /// A second handle on the same open file description, for fsync.
    file: File,
    hit_eof: Rc<Cell<bool>>,
    host_error: Rc<RefCell<Option<std::io::Error>>>,
    write_failed: Rc<Cell<bool>>,
    /// Written since the last flush: flushing a clean image costs no fsync.
    dirty: Cell<bool>,
    /// The on-disk header, shared with the I/O engine.
    header_bytes: Rc<RefCell<Vec<u8>>>,
}

fn qerr<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl Fn(qcow2_rs::error::Qcow2Error) -> Error + 'a {
    move |e| Error::Qcow2 {
        path: path.to_owned(),
        op,
        reason: e.to_string(),
    }
}

impl Qcow2Image {
    /// Opens a qcow2 image and its backing chain (always read-only below the top).
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        Self::open_in_chain(path, access, &[])
    }

    /// Opens `path` below the images of `above` (device, inode), nearest last.
    fn open_in_chain(path: &Path, access: Access, above: &[(u64, u64)]) -> Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let writable = access == Access::ReadWrite;
        let file = super::open_disk_file(path, access)?;
        let meta = file.metadata().map_err(|e| Error::open(path, e))?;
        let id = (meta.dev(), meta.ino());
        if above.contains(&id) {
            return Err(Error::corrupt(
                path,
                "the backing chain comes back to this image (a loop)",
            ));
        }
        lock_image(&file, path, access)?;
        let file_len = super::file_size(&file, path)?;

        // The header lies in the first cluster; read its size from the fixed part.
        let read_head = |len: u64| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; len.min(file_len) as usize];
            file.read_exact_at(&mut buf, 0)
                .map_err(|e| Error::io(path, "reading the header", e))?;
            Ok(buf)
        };
        let mut first = read_head(4096)?;
        let bits = first.get(20..24).map(|b| be32(b, 0)).unwrap_or(0);
        if (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) && bits > 12 {
            first = read_head(1 << bits)?;
        }
        let header = Header::parse(path, &first)?;
        header.check(path, file_len, access)?;
        let cluster_size = 1u64 << header.cluster_bits;
        first.truncate(cluster_size as usize);
        let scan = scan_tables(&file, path, &header, file_len)?;
        if writable && scan.compressed {
            // qcow2-rs's copy-on-write out of a compressed cluster frees the host
            // cluster it starts in, which other compressed clusters share.
            return Err(Error::unsupported(
                path,
                "writing an image that holds compressed clusters",
                format!(
                    "write an overlay instead (inject's {}), or make an uncompressed copy \
                     with `qemu-img convert -O qcow2 IN OUT`",
                    crate::error::Setting::Output
                ),
            ));
        }

        // Writers must clear autoclear bits they do not maintain (qcow2.txt), e.g.
        // persistent dirty bitmaps, which our writes would make stale.
        if writable && header.version == 3 && header.autoclear_features != 0 {
            first[88..96].fill(0);
            file.write_all_at(&first[88..96], 88)
                .map_err(|e| Error::io(path, "clearing autoclear features", e))?;
        }

        let backing = match &header.backing_file {
            None => None,
            Some(name) => {
                let chain: Vec<(u64, u64)> = above.iter().copied().chain([id]).collect();
                Some(Box::new(open_backing(path, name, &header, &chain)?))
            }
        };

        // qcow2-rs sees the header without a backing file: we follow the chain.
        let mut hidden = first.clone();
        hidden[8..20].fill(0);
        if header.version == 2 {
            // qcow2-rs reads version 3 fields past the 72-byte header: what is there
            // in version 2 (extensions, the backing name) we have parsed already.
            hidden[72..].fill(0);
        }
        // qcow2-rs refuses the dirty bit; reads need no refcounts, and writes to a
        // dirty image were refused above. We set and clear the bit ourselves.
        if header.version == 3 {
            hidden[79] &= !(Incompat::DIRTY.0 as u8);
        }
        let q_header = Qcow2Header::from_buf(&hidden)
            .map_err(|e| Error::corrupt(path, format!("the header is invalid: {e}")))?;
        let params = Qcow2DevParams::new(9, None, None, !writable, false);
        let header_len = (header.backing_file_offset as usize + header.backing_file_size as usize)
            .max(first.len().min(4096));
        let sync_handle = file
            .try_clone()
            .map_err(|e| Error::io(path, "duplicating the handle", e))?;
        let hit_eof = Rc::new(Cell::new(false));
        let host_error = Rc::new(RefCell::new(None));
        let write_failed = Rc::new(Cell::new(false));
        let header_bytes = Rc::new(RefCell::new(first));
        let io = FileIo {
            file,
            hit_eof: hit_eof.clone(),
            host_error: host_error.clone(),
            write_failed: write_failed.clone(),
            header: header_bytes.clone(),
            header_len,
        };
        let dev = block_on(async { Qcow2Dev::new(path, q_header, &params, io) })
            .map_err(|e| Error::corrupt(path, format!("qcow2-rs cannot open it: {e}")))?;
        block_on(dev.qcow2_prep_io()).map_err(|e| {
            if hit_eof.get() {
                Error::corrupt(
                    path,
                    "its tables lie past the end of the file (is it truncated?)",
                )
            } else {
                qerr(path, "loading tables")(e)
            }
        })?;
        Ok(Qcow2Image {
            dev,
            path: path.to_owned(),
            len: header.size,
            cluster_size,
            writable,
            backing,
            header,
            file: sync_handle,
            hit_eof,
            host_error,
            write_failed,
            dirty: Cell::new(false),
            header_bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }

    /// The backing file name as stored in the header.
    pub fn backing_file(&self) -> Option<&str> {
        self.header.backing_file.as_deref()
    }

    /// The backing image, opened read-only.
    pub fn backing(&self) -> Option<&Image> {
        self.backing.as_deref()
    }

    /// Sets or clears the header's dirty bit (version 3): set before the first write
    /// after a flush, cleared once a flush made everything durable. A process killed
    /// in between leaves an image that QEMU repairs on its next read-write open
    /// (refcounts rebuilt), that `qemu-img check -r all` repairs, and that wingold
    /// reads but refuses to write.
    fn set_dirty_bit(&self, on: bool) -> Result<()> {
        if self.header.version < 3 {
            return Ok(());
        }
        let mut h = self.header_bytes.borrow_mut();
        let features = Incompat(be64(&h, 72)).with(Incompat::DIRTY, on);
        h[72..80].copy_from_slice(&features.0.to_be_bytes());
        self.file
            .write_all_at(&h[72..80], 72)
            .map_err(|e| Error::io(&self.path, "marking the image dirty", e))
    }

    /// Turns a qcow2-rs error into ours; a read past the end of the file means the
    /// image is truncated, which is bad input rather than a failed operation.
    fn qerr(&self, op: &'static str) -> impl Fn(qcow2_rs::error::Qcow2Error) -> Error + '_ {
        move |e| {
            if self.hit_eof.replace(false) {
                Error::corrupt(
                    &self.path,
                    "its tables point past the end of the file (is it truncated?)",
                )
            } else if let Some(host) = self.host_error.borrow_mut().take() {
                Error::io(&self.path, op, host)
            } else {
                qerr(&self.path, op)(e)
            }
        }
    }

    fn mapping(&self, offset: u64) -> Result<MappingSource> {
        let m = block_on(self.dev.get_mapping(offset)).map_err(self.qerr("mapping"))?;
        Ok(m.source)
    }

    /// Reads sector-aligned data of this layer only (unallocated reads as zeros).
    fn read_layer(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let n = block_on(self.dev.read_at(buf, offset)).map_err(self.qerr("read"))?;
        if n != buf.len() {
            // qcow2-rs reports a failed cluster read inside a longer read as a short
            // read and drops the cause; our I/O engine remembers whether it was EOF.
            if self.hit_eof.replace(false) {
                return Err(Error::corrupt(
                    &self.path,
                    "its tables point past the end of the file (is it truncated?)",
                ));
            }
            return Err(Error::Qcow2 {
                path: self.path.clone(),
                op: "read",
                reason: format!(
                    "only {n} of {} bytes at offset {offset} could be read; \
                     `qemu-img check` may tell why",
                    buf.len()
                ),
            });
        }
        Ok(())
    }

    /// Reads sector-aligned data, following the backing chain.
    fn read_aligned(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some(base) = &self.backing else {
            return self.read_layer(offset, buf);
        };
        // Runs of clusters that come from the same place are read with one call:
        // the layers below read long runs far faster than cluster by cluster.
        let from_base =
            |m: MappingSource| matches!(m, MappingSource::Unallocated | MappingSource::Backing);
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let below = from_base(self.mapping(at)?);
            let mut end = done
                + ((self.cluster_size - at % self.cluster_size) as usize).min(buf.len() - done);
            while end < buf.len() && from_base(self.mapping(offset + end as u64)?) == below {
                end += (self.cluster_size as usize).min(buf.len() - end);
            }
            let part = &mut buf[done..end];
            if below {
                read_base(base, at, part)?;
            } else {
                self.read_layer(at, part)?;
            }
            done = end;
        }
        Ok(())
    }

    /// Writes sector-aligned data. Clusters not yet allocated in this layer are
    /// written whole, merged with what the chain below holds, because qcow2-rs
    /// knows nothing of our backing chain.
    fn write_aligned(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let werr = self.qerr("write");
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let in_cluster = at % self.cluster_size;
            let n = ((self.cluster_size - in_cluster) as usize).min(buf.len() - done);
            let whole = in_cluster == 0 && n as u64 == self.cluster_size;
            let part = &buf[done..done + n];
            let in_place = whole || self.mapping(at)? == MappingSource::DataFile;
            if in_place {
                block_on(self.dev.write_at(part, at)).map_err(&werr)?;
            } else {
                let start = at - in_cluster;
                let len = self.cluster_size.min(self.len - start) as usize;
                let mut cluster = vec![0u8; len];
                self.read_aligned(start, &mut cluster)?;
                cluster[in_cluster as usize..in_cluster as usize + n].copy_from_slice(part);
                block_on(self.dev.write_at(&cluster, start)).map_err(&werr)?;
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockDev for Qcow2Image {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let (start, end) = aligned_span(offset, buf.len());
        if start == offset && end == offset + buf.len() as u64 {
            return self.read_aligned(offset, buf);
        }
        let mut bounce = vec![0u8; (end - start) as usize];
        self.read_aligned(start, &mut bounce)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&bounce[skip..skip + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(self.len, offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        if !self.dirty.replace(true) {
            self.set_dirty_bit(true)?;
        }
        let (start, end) = aligned_span(offset, buf.len());
        if start == offset && end == offset + buf.len() as u64 {
            return self.write_aligned(offset, buf);
        }
        // Read-modify-write of the partial first and last sectors.
        let mut bounce = vec![0u8; (end - start) as usize];
        let last = bounce.len() - SECTOR_SIZE as usize;
        self.read_aligned(start, &mut bounce[..SECTOR_SIZE as usize])?;
        if last > 0 {
            self.read_aligned(end - SECTOR_SIZE, &mut bounce[last..])?;
        }
        let skip = (offset - start) as usize;
        bounce[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_aligned(start, &bounce)
    }

    fn flush(&self) -> Result<()> {
        if !self.writable || !self.dirty.get() {
            return Ok(());
        }
        if self.write_failed.get() {
            // The host refused a write: the image stays marked dirty (QEMU's
            // check repairs it); a metadata flush now would only fail again.
            return Err(Error::io(
                &self.path,
                "metadata flush after a refused write",
                std::io::Error::other("the host refused an earlier write to this image"),
            ));
        }
        block_on(self.dev.flush_meta()).map_err(self.qerr("metadata flush"))?;
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.path, "fsync", e))?;
        self.dirty.set(false);
        // Everything is durable: the image is consistent again. Should this last
        // write be lost, the image merely stays marked dirty.
        self.set_dirty_bit(false)
    }

    fn is_writable(&self) -> bool {
        self.writable
    }

    fn allocated(&self, offset: u64, len: u64) -> Result<bool> {
        let end = offset.saturating_add(len).min(self.len);
        let mut at = offset - offset % self.cluster_size;
        while at < end {
            match self.mapping(at)? {
                MappingSource::DataFile | MappingSource::Compressed => return Ok(true),
                MappingSource::Zero => {}
                MappingSource::Unallocated | MappingSource::Backing => {
                    if let Some(base) = &self.backing {
                        let n = self.cluster_size.min(end - at);
                        if at < base.len() && base.allocated(at, n.min(base.len() - at))? {
                            return Ok(true);
                        }
                    }
                }
            }
            at += self.cluster_size;
        }
        Ok(false)
    }
}

/// The sector-aligned span covering `len` bytes at `offset`.
fn aligned_span(offset: u64, len: usize) -> (u64, u64) {
    let start = offset - offset % SECTOR_SIZE;
    let end = (offset + len as u64).div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
    (start, end)
}

impl Drop for Qcow2Image {
    fn drop(&mut self) {
        // Metadata that qcow2-rs still caches must reach the file; errors here
        // cannot be reported, so callers that care call flush() first.
        if self.writable && self.dev.need_flush_meta() {
            let _ = block_on(self.dev.flush_meta());
        }
    }
}
