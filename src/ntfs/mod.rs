//! An NTFS volume over any [`BlockDev`], through the system libntfs-3g.
//!
//! libntfs-3g is the NTFS writer libguestfs relies on; it handles runlists,
//! attribute lists, allocation and growth, which replacing a hive needs. We drive it
//! through its custom device operations (`ntfs_device_alloc` with our own
//! `ntfs_device_operations`), so its I/O goes to the `image` layer: no FUSE, no loop
//! device, no root.
//!
//! Before any read-write mount we refuse, with what to do in Windows, a hibernated
//! volume or one left by Fast Startup, and a volume marked dirty. We mount with
//! `NTFS_MNT_RECOVER` only: never `NTFS_MNT_MAY_RDONLY` (it silently falls back to
//! read-only) nor `NTFS_MNT_IGNORE_HIBERFILE`, and prove the volume is writable.
//!
//! All FFI and `unsafe` of libntfs-3g lives in this module. A panic never unwinds
//! into C: every callback catches it and returns -1 with errno EIO.

#![deny(clippy::undocumented_unsafe_blocks)]

mod device;
mod error;
mod log;
mod safety;
mod security;
mod write;
pub use security::with_frozen_clock;
mod sys;

pub use error::{Error, Result, SHUTDOWN_HINT};

use crate::image::{Access, BlockDev};
use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_uint, c_void, CString};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;

use device::*;
use log::*;
use safety::check_boot_sector;
pub use safety::Checked;

/// System file numbers (layout.h `NTFS_SYSTEM_FILES`).
const FILE_LOGFILE: u64 = 2;
const FILE_ROOT: u64 = 5;
/// `$Volume` flag: chkdsk must run (layout.h `VOLUME_IS_DIRTY`).
const VOLUME_IS_DIRTY: u16 = 0x0001;
/// `ntfs_volume.state` bit: mounted read-only (volume.h `NV_ReadOnly`).
const NV_READ_ONLY: u32 = 0;
/// `ntfs_device.d_state` bits (device.h `ND_Open`, `ND_ReadOnly`).
const ND_OPEN: u32 = 0;
const ND_READ_ONLY: u32 = 1;
/// `ntfs_readdir` name types: the DOS 8.3 alias duplicates a long name.
const FILE_NAME_DOS: c_int = 2;
/// Low 48 bits of an MFT reference are the record number.
const MREF_MASK: u64 = 0x0000_ffff_ffff_ffff;
/// First bytes of hiberfil.sys while Windows is hibernated or kept for Fast Startup
/// ("hibr"/"HIBR"), or resuming ("wake"/"WAKE"); ntfs-3g's
/// `ntfs_volume_check_hiberfile` refuses the first two.
const HIBERNATION_MAGICS: [&[u8; 4]; 4] = [b"hibr", b"HIBR", b"wake", b"WAKE"];
/// NTFS names are at most 255 UTF-16 units.
const MAX_NAME_UNITS: usize = 255;

// ---------------------------------------------------------------------------
// The volume.

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
    /// MFT record number.
    pub inode: u64,
}

/// What makes a volume unsafe to write, found on a read-only mount.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VolumeState {
    pub label: String,
    pub dirty: bool,
    /// Why Windows looks hibernated or Fast-Started, when it does.
    pub hibernated: Option<String>,
}

/// A mounted NTFS volume. Dropping it unmounts; call [`Volume::close`] to learn
/// whether everything reached the device.
pub struct Volume<'a> {
    vol: NonNull<sys::ntfs_volume>,
    /// Owned by the mounted device's `d_private`; freed after unmounting.
    ctx: *mut DevCtx<'a>,
    name: String,
    writable: bool,
    _dev: PhantomData<&'a dyn BlockDev>,
}

/// An open inode, closed on drop.
struct Inode {
    ni: NonNull<sys::ntfs_inode>,
}

impl Inode {
    fn close(self) -> std::result::Result<(), std::io::Error> {
        let ni = self.ni.as_ptr();
        std::mem::forget(self);
        // SAFETY: ni is an open inode that nothing else refers to.
        if unsafe { sys::ntfs_inode_close(ni) } != 0 {
            return Err(errno());
        }
        Ok(())
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        // SAFETY: ni is an open inode that nothing else refers to.
        unsafe { sys::ntfs_inode_close(self.ni.as_ptr()) };
    }
}

/// The unnamed `$DATA` attribute of an inode, closed on drop.
struct DataAttr {
    na: NonNull<sys::ntfs_attr>,
}

impl Drop for DataAttr {
    fn drop(&mut self) {
        // SAFETY: na is an open attribute that nothing else refers to.
        unsafe { sys::ntfs_attr_close(self.na.as_ptr()) };
    }
}

impl DataAttr {
    fn size(&self) -> u64 {
        // SAFETY: na is open; data_size is a plain field.
        unsafe { (*self.na.as_ptr()).data_size as u64 }
    }
}

fn to_utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().map(u16::to_le).collect()
}

impl<'a> Volume<'a> {
    /// Mounts the NTFS filesystem on `dev` (a partition). `name` names it in errors.
    ///
    /// Read-write: first a read-only look refuses hibernated, Fast-Started and dirty
    /// volumes; then a read-write mount, proven writable by marking the volume
    /// dirty — until [`Volume::close`] (see `mark_dirty`).
    pub fn open(dev: &'a dyn BlockDev, name: &str, access: Access) -> Result<Volume<'a>> {
        install_log_handler();
        check_boot_sector(dev, name)?;
        if access == Access::ReadOnly {
            return Self::mount(dev, name, false);
        }
        if !dev.is_writable() {
            return Err(Error::ReadOnly);
        }
        let checked = Self::mount(dev, name, false)?.refuse_unsafe()?;
        Self::open_checked(dev, name, checked)
    }

    /// A read-write open of bytes a read-only mount has just checked
    /// ([`Volume::refuse_unsafe`]): one mount, marked dirty until
    /// [`Volume::close`] as [`Volume::open`] marks it.
    pub fn open_checked(
        dev: &'a dyn BlockDev,
        name: &str,
        _checked: Checked,
    ) -> Result<Volume<'a>> {
        install_log_handler();
        check_boot_sector(dev, name)?;
        if !dev.is_writable() {
            return Err(Error::ReadOnly);
        }
        let vol = Self::mount(dev, name, true)?;
        vol.mark_dirty()?;
        Ok(vol)
    }

    fn mount(dev: &'a dyn BlockDev, name: &str, write: bool) -> Result<Volume<'a>> {
        take_log();
        let ctx = Box::into_raw(Box::new(DevCtx {
            dev,
            pos: Cell::new(0),
            writable: write,
            failure: RefCell::new(None),
        }));
        let cname = CString::new(name.replace('\0', "?")).expect("no NUL left");
        // SAFETY: DEVICE_OPS is a static table libntfs-3g only reads; ctx stays alive
        // until the volume is unmounted (Drop) or the device freed below.
        let devp = unsafe {
            sys::ntfs_device_alloc(
                cname.as_ptr(),
                0,
                &DEVICE_OPS as *const _ as *mut _,
                ctx as *mut c_void,
            )
        };
        if devp.is_null() {
            // SAFETY: ctx came from Box::into_raw above and was not shared.
            drop(unsafe { Box::from_raw(ctx) });
            return Err(Error::Mount {
                volume: name.to_owned(),
                reason: format!("cannot allocate the device: {}", errno()),
            });
        }
        let flags = if write {
            sys::NTFS_MNT_RECOVER
        } else {
            sys::NTFS_MNT_RDONLY
        };
        // SAFETY: devp is a fresh device with our operations.
        let vol = unsafe { sys::ntfs_device_mount(devp, flags as _) };
        let Some(vol) = NonNull::new(vol) else {
            let err = errno();
            // SAFETY: the failed mount closed but did not free the device; ctx is
            // still ours.
            let failure = unsafe {
                sys::ntfs_device_free(devp);
                Box::from_raw(ctx).failure.into_inner()
            };
            if let Some(img) = failure {
                return Err(Error::Image(img));
            }
            return Err(mount_error(name, err, write));
        };
        let v = Volume {
            vol,
            ctx,
            name: name.to_owned(),
            writable: write,
            _dev: PhantomData,
        };
        Ok(v)
    }

    fn op_error(&self, path: &str, op: &'static str, source: std::io::Error) -> Error {
        // SAFETY: ctx lives as long as self.
        let failure = unsafe { (*self.ctx).failure.borrow_mut().take() };
        if let Some(img) = failure {
            return Error::Image(img);
        }
        let log = take_log();
        Error::Op {
            volume: self.name.clone(),
            path: path.to_owned(),
            op,
            reason: if log.is_empty() {
                source.to_string()
            } else {
                log
            },
            errno: source,
        }
    }

    fn open_inode(&self, mref: u64, path: &str) -> Result<Inode> {
        // SAFETY: vol is mounted.
        let ni = unsafe { sys::ntfs_inode_open(self.vol.as_ptr(), mref) };
        NonNull::new(ni)
            .map(|ni| Inode { ni })
            .ok_or_else(|| self.op_error(path, "opening", errno()))
    }

    fn open_data(&self, ino: &Inode, path: &str) -> Result<DataAttr> {
        // SAFETY: ino is open; AT_UNNAMED is libntfs-3g's empty name.
        let na = unsafe {
            sys::ntfs_attr_open(
                ino.ni.as_ptr(),
                sys::ATTR_TYPES_AT_DATA,
                std::ptr::addr_of_mut!(sys::AT_UNNAMED) as *mut u16,
                0,
            )
        };
        NonNull::new(na)
            .map(|na| DataAttr { na })
            .ok_or_else(|| self.op_error(path, "opening the data of", errno()))
    }

    fn pread(&self, attr: &DataAttr, pos: u64, buf: &mut [u8], path: &str) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: attr is open; buf has room for the count passed.
            let n = unsafe {
                sys::ntfs_attr_pread(
                    attr.na.as_ptr(),
                    (pos + done as u64) as i64,
                    (buf.len() - done) as i64,
                    buf[done..].as_mut_ptr() as *mut c_void,
                )
            };
            match n {
                n if n < 0 => return Err(self.op_error(path, "reading", errno())),
                0 => break,
                n => done += n as usize,
            }
        }
        Ok(done)
    }

    /// Splits `path` (`\` or `/` separated, relative to the root) into names.
    fn components<'p>(&self, path: &'p str) -> Result<Vec<&'p str>> {
        let parts: Vec<&str> = path
            .split(['\\', '/'])
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        for p in &parts {
            if *p == ".." || p.encode_utf16().count() > MAX_NAME_UNITS {
                return Err(Error::BadPath {
                    volume: self.name.clone(),
                    path: path.to_owned(),
                    reason: format!("{p:?} is not a usable name"),
                });
            }
        }
        Ok(parts)
    }

    /// Looks `name` up in the open directory `dir`, case-insensitively as Windows
    /// does. libntfs-3g matches Win32 names case-insensitively but POSIX-namespace
    /// names (which Linux tools create) only exactly; for those, the directory is
    /// scanned. (Its ignore-case mode would also lower-case every listed name.)
    fn lookup_in(&self, dir: &Inode, name: &str) -> Result<Option<u64>> {
        let uname = to_utf16(name);
        // SAFETY: dir is an open directory inode; uname holds uname.len() units.
        let r = unsafe {
            sys::ntfs_inode_lookup_by_name(dir.ni.as_ptr(), uname.as_ptr(), uname.len() as c_int)
        };
        take_log();
        if r != u64::MAX {
            return Ok(Some(r & MREF_MASK));
        }
        let wanted = self.upcase(name);
        let found = self
            .read_dir(dir, name)?
            .into_iter()
            .find(|e| self.upcase(&e.name) == wanted);
        Ok(found.map(|e| e.inode))
    }

    /// `name` upper-cased as this volume compares names: each UTF-16 unit through
    /// the volume's own `$UpCase` table (so `ß` stays `ß`, never `SS`, and two
    /// names are one exactly when Windows would find one for the other).
    pub fn upcase(&self, name: &str) -> Vec<u16> {
        // SAFETY: vol is mounted; libntfs-3g read $UpCase into `upcase`
        // (`upcase_len` units, little-endian) at mount and keeps it until umount.
        let table = unsafe {
            let v = &*self.vol.as_ptr();
            if v.upcase.is_null() {
                &[][..]
            } else {
                std::slice::from_raw_parts(v.upcase, v.upcase_len as usize)
            }
        };
        name.encode_utf16()
            .map(|u| table.get(u as usize).map_or(u, |&up| u16::from_le(up)))
            .collect()
    }

    /// The name this volume is reported by (the image and partition).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `path` is a folder; None when there is nothing of that name.
    pub fn is_folder(&self, path: &str) -> Result<Option<bool>> {
        let Some(mref) = self.lookup(path)? else {
            return Ok(None);
        };
        let ino = self.open_inode(mref, path)?;
        // A file has an unnamed data stream; a folder has none and lists.
        let data_err = match self.open_data(&ino, path) {
            Ok(_) => return Ok(Some(false)),
            Err(e) => e,
        };
        match self.read_dir(&ino, path) {
            Ok(_) => Ok(Some(true)),
            Err(_) => Err(data_err),
        }
    }

    fn read_dir(&self, dir: &Inode, path: &str) -> Result<Vec<DirEntry>> {
        let mut out: Vec<DirEntry> = Vec::new();
        let mut pos: i64 = 0;
        // SAFETY: dir is open; `out` outlives the call and the callback only
        // appends to it.
        let r = unsafe {
            sys::ntfs_readdir(
                dir.ni.as_ptr(),
                &mut pos,
                &mut out as *mut Vec<DirEntry> as *mut c_void,
                Some(filldir),
            )
        };
        if r != 0 {
            let e = errno();
            if e.raw_os_error() == Some(libc::ENOTDIR) {
                return Err(Error::NotADirectory {
                    volume: self.name.clone(),
                    path: path.to_owned(),
                });
            }
            return Err(self.op_error(path, "listing", e));
        }
        out.retain(|e| e.name != "." && e.name != "..");
        Ok(out)
    }

    /// The MFT record of `path`, looked up case-insensitively, or None.
    pub fn lookup(&self, path: &str) -> Result<Option<u64>> {
        let mut cur = FILE_ROOT;
        for name in self.components(path)? {
            let dir = self.open_inode(cur, path)?;
            match self.lookup_in(&dir, name)? {
                Some(next) => cur = next,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    fn must_lookup(&self, path: &str) -> Result<u64> {
        self.lookup(path)?.ok_or_else(|| Error::NotFound {
            volume: self.name.clone(),
            path: path.to_owned(),
        })
    }

    /// A folder where a file is expected is the input's fault, said so.
    fn refuse_folder(&self, path: &str) -> Result<()> {
        let parts = self.components(path)?;
        if let Some((name, parents)) = parts.split_last() {
            let parent = parents.join("\\");
            let wanted = self.upcase(name);
            if self
                .list(&parent)?
                .iter()
                .any(|e| e.is_dir && self.upcase(&e.name) == wanted)
            {
                return Err(Error::NotAFile {
                    volume: self.name.clone(),
                    path: path.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The whole content of a file's unnamed data stream.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let ino = self.open_inode(self.must_lookup(path)?, path)?;
        let attr = match self.open_data(&ino, path) {
            Ok(a) => a,
            Err(e) => {
                self.refuse_folder(path)?;
                return Err(e);
            }
        };
        let mut buf = vec![0u8; attr.size() as usize];
        let n = self.pread(&attr, 0, &mut buf, path)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Up to `len` bytes of `path` from `offset` (fewer at the end of the file).
    pub fn read_range(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let ino = self.open_inode(self.must_lookup(path)?, path)?;
        let attr = self.open_data(&ino, path)?;
        let len = attr.size().saturating_sub(offset).min(len as u64) as usize;
        let mut buf = vec![0u8; len];
        let n = self.pread(&attr, offset, &mut buf, path)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The size of `path`'s unnamed data stream.
    pub fn file_size(&self, path: &str) -> Result<u64> {
        let ino = self.open_inode(self.must_lookup(path)?, path)?;
        Ok(self.open_data(&ino, path)?.size())
    }

    /// Lists a directory (long names only, no `.`/`..`), sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        let dir = self.open_inode(self.must_lookup(path)?, path)?;
        let mut out = self.read_dir(&dir, path)?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn cluster_size(&self) -> u64 {
        // SAFETY: vol is mounted; cluster_size is a plain field before any
        // configuration-dependent part of the struct.
        unsafe { (*self.vol.as_ptr()).cluster_size as u64 }
    }

    /// Unmounts, writing everything back; reports any failure on the way. A
    /// volume open for writing is marked clean again, after every other write.
    /// (Dropped without `close`, it stays marked dirty.)
    pub fn close(self) -> Result<()> {
        if self.writable {
            self.set_dirty(false)?;
        }
        let vol = self.vol.as_ptr();
        let ctx = self.ctx;
        let name = self.name.clone();
        std::mem::forget(self);
        take_log();
        // SAFETY: vol is mounted and nothing else refers to it; umount syncs, closes
        // and frees the device, after which ctx is ours to free.
        let (r, failure) = unsafe {
            let r = sys::ntfs_umount(vol, 0);
            (r, Box::from_raw(ctx).failure.into_inner())
        };
        if let Some(img) = failure {
            return Err(Error::Image(img));
        }
        if r != 0 {
            let source = errno();
            return Err(Error::Op {
                volume: name,
                path: "/".into(),
                op: "unmounting",
                reason: take_log(),
                errno: source,
            });
        }
        Ok(())
    }
}

impl Drop for Volume<'_> {
    fn drop(&mut self) {
        // SAFETY: as in close(); errors cannot be reported from here.
        unsafe {
            sys::ntfs_umount(self.vol.as_ptr(), 0);
            drop(Box::from_raw(self.ctx));
        }
    }
}

/// `ntfs_readdir`'s callback: appends one entry to the Vec behind `dirent`.
unsafe extern "C" fn filldir(
    dirent: *mut c_void,
    name: *const u16,
    name_len: c_int,
    name_type: c_int,
    _pos: i64,
    mref: u64,
    dt_type: c_uint,
) -> c_int {
    callback(|| {
        if name_type == FILE_NAME_DOS {
            return 0;
        }
        // SAFETY: dirent is the Vec passed to ntfs_readdir by Volume::list; name
        // holds name_len UTF-16 units.
        let (out, units) = unsafe {
            (
                &mut *(dirent as *mut Vec<DirEntry>),
                std::slice::from_raw_parts(name, name_len.max(0) as usize),
            )
        };
        let units: Vec<u16> = units.iter().map(|u| u16::from_le(*u)).collect();
        out.push(DirEntry {
            name: String::from_utf16_lossy(&units),
            is_dir: dt_type == libc::DT_DIR as c_uint,
            inode: mref & MREF_MASK,
        });
        0
    })
}

fn mount_error(name: &str, err: std::io::Error, write: bool) -> Error {
    let log = take_log();
    let reason = if log.is_empty() { err.to_string() } else { log };
    // libntfs-3g refuses a read-write mount of a hibernated or Fast-Started
    // volume with EPERM.
    if write && err.raw_os_error() == Some(libc::EPERM) {
        return Error::Hibernated {
            volume: name.to_owned(),
            evidence: reason,
        };
    }
    // The copy of the first MFT records in $MFTMirr lags the one in $MFT (or
    // leads it): libntfs-3g writes them one after the other.
    if let Some(at) = reason.find(MIRROR_MISMATCH) {
        return Error::NeedsRepair {
            volume: name.to_owned(),
            reason: reason[at..].trim_end().trim_end_matches('.').to_owned(),
        };
    }
    Error::Mount {
        volume: name.to_owned(),
        reason,
    }
}

/// How libntfs-3g says that `$MFTMirr` and `$MFT` disagree (followed by which record).
const MIRROR_MISMATCH: &str = "$MFTMirr does not match $MFT";
