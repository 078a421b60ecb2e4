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

mod error;
mod security;
pub use security::with_frozen_clock;
mod sys;

pub use error::{Error, Result, SHUTDOWN_HINT};

use crate::image::{Access, BlockDev};
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::Once;

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
/// ("hibr"/"HIBR"), or resuming ("wake"/"WAKE"). reference/windows-offline.md §4.
const HIBERNATION_MAGICS: [&[u8; 4]; 4] = [b"hibr", b"HIBR", b"wake", b"WAKE"];
/// NTFS names are at most 255 UTF-16 units.
const MAX_NAME_UNITS: usize = 255;

// ---------------------------------------------------------------------------
// Logging: libntfs-3g's messages are kept per thread and added to our errors.

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}
const LOG_KEEP: usize = 12;

/// Called by log_shim.c with one formatted message.
#[no_mangle]
extern "C" fn wingold_ntfs_log(_level: c_uint, function: *const c_char, text: *const c_char) {
    let _ = catch_unwind(|| {
        // SAFETY: the shim passes two NUL-terminated strings that live for this call.
        let (function, text) = unsafe { (CStr::from_ptr(function), CStr::from_ptr(text)) };
        let line = format!(
            "{}: {}",
            function.to_string_lossy(),
            text.to_string_lossy().trim()
        );
        if std::env::var_os("WINGOLD_NTFS_DEBUG").is_some() {
            eprintln!("libntfs-3g: {line}");
        }
        LOG.with(|log| {
            let mut log = log.borrow_mut();
            if log.len() == LOG_KEEP {
                log.remove(0);
            }
            log.push(line);
        });
    });
}

/// Takes what libntfs-3g said since the last call, as one line.
fn take_log() -> String {
    LOG.with(|log| log.borrow_mut().drain(..).collect::<Vec<_>>().join("; "))
}

fn install_log_handler() {
    static ONCE: Once = Once::new();
    // SAFETY: the shim only registers a static handler with libntfs-3g.
    ONCE.call_once(|| unsafe { sys::wingold_ntfs_install_log_handler() });
}

fn set_errno(code: c_int) {
    // SAFETY: errno is thread-local; writing it is what C callers expect of us.
    unsafe { *libc::__errno_location() = code };
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

// ---------------------------------------------------------------------------
// Device operations: libntfs-3g's I/O, served by a BlockDev.

/// What `d_private` points to while a volume is mounted.
struct DevCtx<'a> {
    dev: &'a dyn BlockDev,
    pos: Cell<i64>,
    writable: bool,
    /// The last error of the image layer, to report instead of a bare EIO.
    failure: RefCell<Option<crate::image::Error>>,
}

/// Runs a callback body, turning a panic into -1 with errno EIO.
fn callback<T: From<i8>>(body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        T::from(-1)
    })
}

/// # Safety
/// `dev` must be a device made by [`Volume::mount`], whose `d_private` points to a
/// live `DevCtx`.
unsafe fn ctx<'x>(dev: *mut sys::ntfs_device) -> &'x DevCtx<'x> {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &*((*dev).d_private as *const DevCtx<'x>) }
}

impl DevCtx<'_> {
    fn fail(&self, e: crate::image::Error) -> i64 {
        *self.failure.borrow_mut() = Some(e);
        set_errno(libc::EIO);
        -1
    }

    fn pread(&self, buf: &mut [u8], offset: i64) -> i64 {
        if offset < 0 {
            set_errno(libc::EINVAL);
            return -1;
        }
        let len = self.dev.len();
        let offset = offset as u64;
        if offset >= len {
            return 0;
        }
        let n = (buf.len() as u64).min(len - offset) as usize;
        match self.dev.read_at(offset, &mut buf[..n]) {
            Ok(()) => n as i64,
            Err(e) => self.fail(e),
        }
    }

    fn pwrite(&self, buf: &[u8], offset: i64) -> i64 {
        if !self.writable {
            set_errno(libc::EROFS);
            return -1;
        }
        if offset < 0 {
            set_errno(libc::EINVAL);
            return -1;
        }
        let len = self.dev.len();
        let offset = offset as u64;
        if offset >= len {
            set_errno(libc::ENOSPC);
            return -1;
        }
        let n = (buf.len() as u64).min(len - offset) as usize;
        match self.dev.write_at(offset, &buf[..n]) {
            Ok(()) => n as i64,
            Err(e) => self.fail(e),
        }
    }
}

unsafe extern "C" fn op_open(dev: *mut sys::ntfs_device, flags: c_int) -> c_int {
    callback(|| {
        // SAFETY: libntfs-3g passes the device we allocated; it is valid here.
        let (d, c) = unsafe { (&mut *dev, ctx(dev)) };
        let want_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if want_write && !c.writable {
            set_errno(libc::EROFS);
            return -1;
        }
        d.d_state |= 1 << ND_OPEN;
        if !want_write {
            d.d_state |= 1 << ND_READ_ONLY;
        }
        c.pos.set(0);
        0
    })
}

unsafe extern "C" fn op_close(dev: *mut sys::ntfs_device) -> c_int {
    callback(|| {
        // SAFETY: as in op_open.
        let (d, c) = unsafe { (&mut *dev, ctx(dev)) };
        d.d_state &= !((1 << ND_OPEN) | (1 << ND_READ_ONLY));
        if c.writable {
            if let Err(e) = c.dev.flush() {
                return c.fail(e) as c_int;
            }
        }
        0
    })
}

unsafe extern "C" fn op_seek(dev: *mut sys::ntfs_device, offset: i64, whence: c_int) -> i64 {
    callback(|| {
        // SAFETY: as in op_open.
        let c = unsafe { ctx(dev) };
        let base = match whence {
            libc::SEEK_SET => 0,
            libc::SEEK_CUR => c.pos.get(),
            libc::SEEK_END => c.dev.len() as i64,
            _ => {
                set_errno(libc::EINVAL);
                return -1;
            }
        };
        match base.checked_add(offset) {
            Some(p) if p >= 0 => {
                c.pos.set(p);
                p
            }
            _ => {
                set_errno(libc::EINVAL);
                -1
            }
        }
    })
}

/// # Safety
/// `buf` must be valid for `count` bytes (libntfs-3g's contract).
unsafe fn slice_mut<'x>(buf: *mut c_void, count: i64) -> Option<&'x mut [u8]> {
    // SAFETY: guaranteed by the caller.
    (count >= 0).then(|| unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, count as usize) })
}

/// # Safety
/// `buf` must be valid for `count` bytes (libntfs-3g's contract).
unsafe fn slice<'x>(buf: *const c_void, count: i64) -> Option<&'x [u8]> {
    // SAFETY: guaranteed by the caller.
    (count >= 0).then(|| unsafe { std::slice::from_raw_parts(buf as *const u8, count as usize) })
}

/// # Safety
/// As for [`ctx`].
unsafe fn at_position(dev: *mut sys::ntfs_device, op: impl FnOnce(i64) -> i64) -> i64 {
    callback(|| {
        // SAFETY: guaranteed by the caller.
        let c = unsafe { ctx(dev) };
        let n = op(c.pos.get());
        if n > 0 {
            c.pos.set(c.pos.get() + n);
        }
        n
    })
}

/// Sequential read: `op_pread` at the current position, which then moves on.
unsafe extern "C" fn op_read(dev: *mut sys::ntfs_device, buf: *mut c_void, count: i64) -> i64 {
    // SAFETY: libntfs-3g passes our device and a buffer of `count` bytes.
    unsafe { at_position(dev, |pos| op_pread(dev, buf, count, pos)) }
}

/// Sequential write: `op_pwrite` at the current position, which then moves on.
unsafe extern "C" fn op_write(dev: *mut sys::ntfs_device, buf: *const c_void, count: i64) -> i64 {
    // SAFETY: libntfs-3g passes our device and a buffer of `count` bytes.
    unsafe { at_position(dev, |pos| op_pwrite(dev, buf, count, pos)) }
}

unsafe extern "C" fn op_pread(
    dev: *mut sys::ntfs_device,
    buf: *mut c_void,
    count: i64,
    offset: i64,
) -> i64 {
    callback(|| {
        // SAFETY: device as in op_open; buf holds count bytes per libntfs-3g.
        let (c, Some(buf)) = (unsafe { ctx(dev) }, unsafe { slice_mut(buf, count) }) else {
            set_errno(libc::EINVAL);
            return -1;
        };
        c.pread(buf, offset)
    })
}

unsafe extern "C" fn op_pwrite(
    dev: *mut sys::ntfs_device,
    buf: *const c_void,
    count: i64,
    offset: i64,
) -> i64 {
    callback(|| {
        // SAFETY: device as in op_open; buf holds count bytes per libntfs-3g.
        let (c, Some(buf)) = (unsafe { ctx(dev) }, unsafe { slice(buf, count) }) else {
            set_errno(libc::EINVAL);
            return -1;
        };
        c.pwrite(buf, offset)
    })
}

unsafe extern "C" fn op_sync(dev: *mut sys::ntfs_device) -> c_int {
    callback(|| {
        // SAFETY: as in op_open.
        let c = unsafe { ctx(dev) };
        if !c.writable {
            return 0;
        }
        match c.dev.flush() {
            Ok(()) => 0,
            Err(e) => c.fail(e) as c_int,
        }
    })
}

unsafe extern "C" fn op_stat(dev: *mut sys::ntfs_device, buf: *mut sys::stat) -> c_int {
    callback(|| {
        // SAFETY: device as in op_open; buf points to a struct stat to fill.
        let (c, st) = unsafe { (ctx(dev), &mut *buf) };
        // SAFETY: struct stat is plain integers, for which all-zero is valid.
        *st = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | 0o600;
        st.st_size = c.dev.len() as i64;
        st.st_blksize = 4096;
        0
    })
}

unsafe extern "C" fn op_ioctl(_dev: *mut sys::ntfs_device, _req: u64, _argp: *mut c_void) -> c_int {
    set_errno(libc::ENOTTY);
    -1
}

static DEVICE_OPS: sys::ntfs_device_operations = sys::ntfs_device_operations {
    open: Some(op_open),
    close: Some(op_close),
    seek: Some(op_seek),
    read: Some(op_read),
    write: Some(op_write),
    pread: Some(op_pread),
    pwrite: Some(op_pwrite),
    sync: Some(op_sync),
    stat: Some(op_stat),
    ioctl: Some(op_ioctl),
};

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
    /// volumes; then a read-write mount, proven writable by rewriting `$Volume`'s
    /// flags.
    pub fn open(dev: &'a dyn BlockDev, name: &str, access: Access) -> Result<Volume<'a>> {
        install_log_handler();
        check_boot_sector(dev, name)?;
        if access == Access::ReadOnly {
            return Self::mount(dev, name, false);
        }
        if !dev.is_writable() {
            return Err(Error::ReadOnly);
        }
        Self::mount(dev, name, false)?.refuse_unsafe()?;
        let vol = Self::mount(dev, name, true)?;
        vol.prove_writable()?;
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

    fn prove_writable(&self) -> Result<()> {
        // SAFETY: vol is mounted; state and flags are plain fields before any
        // configuration-dependent part of the struct.
        let (state, flags) = unsafe {
            let v = &*self.vol.as_ptr();
            (v.state, v.flags)
        };
        if state & (1 << NV_READ_ONLY) != 0 {
            return Err(Error::NotWritable {
                volume: self.name.clone(),
            });
        }
        // SAFETY: vol is mounted read-write; the flags are written back unchanged.
        if unsafe { sys::ntfs_volume_write_flags(self.vol.as_ptr(), flags) } != 0 {
            return Err(self.op_error("/$Volume", "writing", errno()));
        }
        Ok(())
    }

    /// Refuses a volume that must not be written offline: hibernated, left by Fast
    /// Startup, or marked dirty. Read-write opens do this first; callers that want
    /// to refuse before creating any output call it on a read-only mount.
    pub fn refuse_unsafe(&self) -> Result<()> {
        let state = self.state()?;
        if let Some(evidence) = state.hibernated {
            return Err(Error::Hibernated {
                volume: self.name.clone(),
                evidence,
            });
        }
        if state.dirty {
            return Err(Error::Dirty {
                volume: self.name.clone(),
            });
        }
        Ok(())
    }

    /// The volume's label, dirty flag and hibernation evidence.
    pub fn state(&self) -> Result<VolumeState> {
        // SAFETY: vol is mounted; vol_name is a NUL-terminated string or NULL.
        let (flags, label) = unsafe {
            let v = &*self.vol.as_ptr();
            let label = if v.vol_name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(v.vol_name).to_string_lossy().into_owned()
            };
            (v.flags, label)
        };
        Ok(VolumeState {
            label,
            dirty: u16::from_le(flags) & VOLUME_IS_DIRTY != 0,
            hibernated: self.hibernation_evidence()?,
        })
    }

    fn hibernation_evidence(&self) -> Result<Option<String>> {
        if let Some(mref) = self.lookup("hiberfil.sys")? {
            let ino = self.open_inode(mref, "/hiberfil.sys")?;
            let attr = self.open_data(&ino, "/hiberfil.sys")?;
            let mut head = [0u8; 4];
            let n = self.pread(&attr, 0, &mut head, "/hiberfil.sys")?;
            if n == 4 && HIBERNATION_MAGICS.iter().any(|m| **m == head) {
                return Ok(Some(format!(
                    "hiberfil.sys starts with {:?}",
                    String::from_utf8_lossy(&head)
                )));
            }
        }
        // Fast Startup leaves $LogFile unclean with metadata cached in Windows,
        // marked by restart page version 2.0.
        let ino = self.open_inode(FILE_LOGFILE, "/$LogFile")?;
        let attr = self.open_data(&ino, "/$LogFile")?;
        let mut rp: *mut sys::RESTART_PAGE_HEADER = std::ptr::null_mut();
        // SAFETY: attr is open; rp receives a malloc'd copy or stays NULL.
        let evidence = unsafe {
            let checked = sys::ntfs_check_logfile(attr.na.as_ptr(), &mut rp) != 0;
            let clean = checked && sys::ntfs_is_logfile_clean(attr.na.as_ptr(), rp) != 0;
            let version = if rp.is_null() {
                None
            } else {
                let r = std::ptr::read_unaligned(rp);
                Some((
                    u16::from_le(r.major_ver) as i16,
                    u16::from_le(r.minor_ver) as i16,
                ))
            };
            libc::free(rp as *mut c_void);
            match version {
                Some((2, 0)) if !clean => {
                    Some("$LogFile is unclean with metadata kept in Windows' cache".to_owned())
                }
                _ => None,
            }
        };
        take_log();
        Ok(evidence)
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
        let wanted = name.to_uppercase();
        let found = self
            .read_dir(dir, name)?
            .into_iter()
            .find(|e| e.name.to_uppercase() == wanted);
        Ok(found.map(|e| e.inode))
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
            if self.list(&parent)?.iter().any(|e| {
                e.is_dir && crate::hive::fold_name(&e.name) == crate::hive::fold_name(name)
            }) {
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

    fn require_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly)
        }
    }

    fn create_in(&self, dir: &Inode, name: &str, mode: libc::mode_t, path: &str) -> Result<Inode> {
        let uname = to_utf16(name);
        // SAFETY: dir is an open directory; uname holds at most 255 units (checked
        // by components()); securid 0 lets libntfs-3g make a default descriptor.
        let ni = unsafe {
            sys::ntfs_create(dir.ni.as_ptr(), 0, uname.as_ptr(), uname.len() as u8, mode)
        };
        NonNull::new(ni)
            .map(|ni| Inode { ni })
            .ok_or_else(|| self.op_error(path, "creating", errno()))
    }

    /// Creates `path` and its missing parents as directories (`mkdir -p`).
    pub fn mkdir_p(&self, path: &str) -> Result<()> {
        self.require_writable()?;
        let mut cur = self.open_inode(FILE_ROOT, path)?;
        for name in self.components(path)? {
            let next = match self.lookup_in(&cur, name)? {
                Some(mref) => self.open_inode(mref, path)?,
                None => self.create_in(&cur, name, libc::S_IFDIR, path)?,
            };
            cur.close().map_err(|e| self.op_error(path, "closing", e))?;
            cur = next;
        }
        cur.close().map_err(|e| self.op_error(path, "closing", e))
    }

    /// Replaces the content of `path` with `data`, creating the file when missing
    /// (its folder must exist). The file keeps its identity (record, security, other
    /// streams, times); its data may shrink or grow.
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        self.require_writable()?;
        let parts = self.components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(Error::BadPath {
                volume: self.name.clone(),
                path: path.to_owned(),
                reason: "no file name".into(),
            });
        };
        let dir_mref = self.must_lookup(&parents.join("\\"))?;
        let dir = self.open_inode(dir_mref, path)?;
        let ino = match self.lookup_in(&dir, name)? {
            Some(mref) => self.open_inode(mref, path)?,
            None => self.create_in(&dir, name, libc::S_IFREG, path)?,
        };
        dir.close().map_err(|e| self.op_error(path, "closing", e))?;
        {
            let attr = self.open_data(&ino, path)?;
            self.resize(&attr, data.len() as u64, path)?;
            self.pwrite_all(&attr, 0, data, path)?;
        }
        // The file's times are left as they were: the same inputs must give a
        // byte-identical image (golden builds), and Windows does not look at a
        // hive file's times.
        ino.close().map_err(|e| self.op_error(path, "closing", e))
    }

    /// Replaces the content of `path` with the `len` bytes `src` yields (creating
    /// the file when missing; its folder must exist), streamed in 1 MiB pieces: a
    /// large file is never held in memory.
    pub fn write_file_from(&self, path: &str, len: u64, src: &mut dyn std::io::Read) -> Result<()> {
        self.require_writable()?;
        let parts = self.components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(Error::BadPath {
                volume: self.name.clone(),
                path: path.to_owned(),
                reason: "no file name".into(),
            });
        };
        let dir = self.open_inode(self.must_lookup(&parents.join("\\"))?, path)?;
        let ino = match self.lookup_in(&dir, name)? {
            Some(mref) => self.open_inode(mref, path)?,
            None => self.create_in(&dir, name, libc::S_IFREG, path)?,
        };
        dir.close().map_err(|e| self.op_error(path, "closing", e))?;
        {
            let attr = self.open_data(&ino, path)?;
            self.resize(&attr, len, path)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut at = 0u64;
            while at < len {
                let want = buf.len().min((len - at) as usize);
                let n = src.read(&mut buf[..want]).map_err(|e| Error::Op {
                    volume: self.name.clone(),
                    path: path.to_owned(),
                    op: "reading the source of",
                    reason: e.to_string(),
                    errno: e,
                })?;
                if n == 0 {
                    let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Err(Error::Op {
                        volume: self.name.clone(),
                        path: path.to_owned(),
                        op: "reading the source of",
                        reason: format!("the source ended after {at} of {len} bytes"),
                        errno: e,
                    });
                }
                self.pwrite_all(&attr, at, &buf[..n], path)?;
                at += n as u64;
            }
        }
        ino.close().map_err(|e| self.op_error(path, "closing", e))
    }

    /// Writes all of `data` into `attr` at `offset`.
    fn pwrite_all(&self, attr: &DataAttr, offset: u64, data: &[u8], path: &str) -> Result<()> {
        let mut done = 0;
        while done < data.len() {
            // SAFETY: attr is open; the buffer holds the count passed.
            let n = unsafe {
                sys::ntfs_attr_pwrite(
                    attr.na.as_ptr(),
                    (offset + done as u64) as i64,
                    (data.len() - done) as i64,
                    data[done..].as_ptr() as *const c_void,
                )
            };
            if n <= 0 {
                return Err(self.op_error(path, "writing", errno()));
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Overwrites `data.len()` bytes of `path` at `offset`, inside the file as it is
    /// (no resize): what crash-ordered writers use to write a header last.
    pub fn write_range(&self, path: &str, offset: u64, data: &[u8]) -> Result<()> {
        self.require_writable()?;
        let mref = self.must_lookup(path)?;
        let ino = self.open_inode(mref, path)?;
        {
            let attr = self.open_data(&ino, path)?;
            if offset
                .checked_add(data.len() as u64)
                .is_none_or(|end| end > attr.size())
            {
                return Err(Error::BadPath {
                    volume: self.name.clone(),
                    path: path.to_owned(),
                    reason: format!(
                        "{} bytes at {offset} lie past the end of the file ({} bytes)",
                        data.len(),
                        attr.size()
                    ),
                });
            }
            self.pwrite_all(&attr, offset, data, path)?;
        }
        ino.close().map_err(|e| self.op_error(path, "closing", e))
    }

    /// Sets or clears the volume's dirty flag (chkdsk runs at the next Windows boot
    /// while it is set), written through to the device at once.
    pub fn set_dirty(&self, dirty: bool) -> Result<()> {
        self.require_writable()?;
        // SAFETY: vol is mounted read-write; flags is a plain field before any
        // configuration-dependent part of the struct.
        let flags = unsafe { (*self.vol.as_ptr()).flags };
        let flags = if dirty {
            flags | VOLUME_IS_DIRTY
        } else {
            flags & !VOLUME_IS_DIRTY
        };
        // SAFETY: as above; ntfs_volume_write_flags updates $Volume and syncs it.
        if unsafe { sys::ntfs_volume_write_flags(self.vol.as_ptr(), flags) } != 0 {
            return Err(self.op_error("/$Volume", "writing", errno()));
        }
        Ok(())
    }

    /// Sets the size of `attr`'s data, allocating (not leaving sparse) what grows.
    ///
    /// libntfs-3g's allocator takes one free run per 4 KiB bitmap block and zone
    /// pass, so a large allocation fails with ENOSPC on a volume whose free space
    /// lies in small holes (an aged Windows disk). Then we grow one cluster-sized step
    /// at a time, which fills the holes, as ntfs-3g's FUSE driver does with its
    /// small writes.
    fn resize(&self, attr: &DataAttr, len: u64, path: &str) -> Result<()> {
        let truncate = |size: u64| -> std::result::Result<(), std::io::Error> {
            // SAFETY: attr is open on a volume mounted read-write.
            match unsafe { sys::ntfs_attr_truncate_solid(attr.na.as_ptr(), size as i64) } {
                0 => Ok(()),
                _ => Err(errno()),
            }
        };
        let old = attr.size();
        match truncate(len) {
            Ok(()) => return Ok(()),
            Err(e) if len > old && e.raw_os_error() == Some(libc::ENOSPC) => take_log(),
            Err(e) => return Err(self.op_error(path, "resizing", e)),
        };
        let step = self.cluster_size();
        let mut size = old;
        while size < len {
            size = (size + step).min(len);
            truncate(size).map_err(|e| self.op_error(path, "growing", e))?;
        }
        Ok(())
    }

    fn cluster_size(&self) -> u64 {
        // SAFETY: vol is mounted; cluster_size is a plain field before any
        // configuration-dependent part of the struct.
        unsafe { (*self.vol.as_ptr()).cluster_size as u64 }
    }

    /// Unmounts, writing everything back; reports any failure on the way.
    pub fn close(self) -> Result<()> {
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

/// Refuses, before libntfs-3g sees it, a partition whose boot sector is not NTFS's.
fn check_boot_sector(dev: &dyn BlockDev, name: &str) -> Result<()> {
    let not = |reason: &str| Error::NotNtfs {
        volume: name.to_owned(),
        reason: reason.to_owned(),
    };
    if dev.len() < 4096 {
        return Err(not("the partition is too small"));
    }
    let mut bs = [0u8; 512];
    dev.read_at(0, &mut bs)?;
    if &bs[3..11] != b"NTFS    " {
        return Err(not("the boot sector has no NTFS signature"));
    }
    if bs[510..512] != [0x55, 0xaa] {
        return Err(not(
            "the NTFS boot sector has no 55 AA end marker (damaged?)",
        ));
    }
    Ok(())
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
    Error::Mount {
        volume: name.to_owned(),
        reason,
    }
}
