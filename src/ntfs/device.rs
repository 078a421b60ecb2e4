//! Device operations: libntfs-3g's I/O, served by a BlockDev.

use super::{set_errno, BlockDev, ND_OPEN, ND_READ_ONLY};
use crate::ntfs::sys;
use crate::ntfs::AssertUnwindSafe;
use std::cell::Cell;
use std::cell::RefCell;
use std::ffi::c_int;
use std::ffi::c_void;
use std::panic::catch_unwind;
/// What `d_private` points to while a volume is mounted.
pub(super) struct DevCtx<'a> {
    pub(super) dev: &'a dyn BlockDev,
    pub(super) pos: Cell<i64>,
    pub(super) writable: bool,
    /// The last error of the image layer, to report instead of a bare EIO.
    pub(super) failure: RefCell<Option<crate::image::Error>>,
}

/// Runs a callback body, turning a panic into -1 with errno EIO.
pub(super) fn callback<T: From<i8>>(body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        set_errno(libc::EIO);
        T::from(-1)
    })
}

/// # Safety
/// `dev` must be a device made by [`Volume::mount`], whose `d_private` points to a
/// live `DevCtx`.
pub(super) unsafe fn ctx<'x>(dev: *mut sys::ntfs_device) -> &'x DevCtx<'x> {
    // SAFETY: guaranteed by the caller (see above).
    unsafe { &*((*dev).d_private as *const DevCtx<'x>) }
}

impl DevCtx<'_> {
    fn fail(&self, e: crate::image::Error) -> i64 {
        *self.failure.borrow_mut() = Some(e);
        set_errno(libc::EIO);
        -1
    }

    /// Where a transfer of `count` bytes at `offset` lies on the device: its start
    /// and the bytes before the device's end, None at or past the end; EINVAL (as
    /// the -1 to return) for a negative offset.
    fn clip(&self, count: usize, offset: i64) -> std::result::Result<Option<(u64, usize)>, i64> {
        let Ok(offset) = u64::try_from(offset) else {
            set_errno(libc::EINVAL);
            return Err(-1);
        };
        let len = self.dev.len();
        Ok((offset < len).then(|| (offset, (count as u64).min(len - offset) as usize)))
    }

    fn pread(&self, buf: &mut [u8], offset: i64) -> i64 {
        match self.clip(buf.len(), offset) {
            Err(r) => r,
            Ok(None) => 0,
            Ok(Some((at, n))) => match self.dev.read_at(at, &mut buf[..n]) {
                Ok(()) => n as i64,
                Err(e) => self.fail(e),
            },
        }
    }

    fn pwrite(&self, buf: &[u8], offset: i64) -> i64 {
        if !self.writable {
            set_errno(libc::EROFS);
            return -1;
        }
        match self.clip(buf.len(), offset) {
            Err(r) => r,
            Ok(None) => {
                set_errno(libc::ENOSPC);
                -1
            }
            Ok(Some((at, n))) => match self.dev.write_at(at, &buf[..n]) {
                Ok(()) => n as i64,
                Err(e) => self.fail(e),
            },
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
pub(super) unsafe fn slice_mut<'x>(buf: *mut c_void, count: i64) -> Option<&'x mut [u8]> {
    // SAFETY: guaranteed by the caller.
    (count >= 0).then(|| unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, count as usize) })
}

/// # Safety
/// `buf` must be valid for `count` bytes (libntfs-3g's contract).
pub(super) unsafe fn slice<'x>(buf: *const c_void, count: i64) -> Option<&'x [u8]> {
    // SAFETY: guaranteed by the caller.
    (count >= 0).then(|| unsafe { std::slice::from_raw_parts(buf as *const u8, count as usize) })
}

/// # Safety
/// As for [`ctx`].
pub(super) unsafe fn at_position(dev: *mut sys::ntfs_device, op: impl FnOnce(i64) -> i64) -> i64 {
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

/// The body of `op_pread` and `op_pwrite`: `io` on the device's context and the
/// caller's buffer (None for a negative count: EINVAL).
///
/// # Safety
/// As for [`ctx`].
unsafe fn transfer<B>(
    dev: *mut sys::ntfs_device,
    buf: Option<B>,
    io: impl FnOnce(&DevCtx, B) -> i64,
) -> i64 {
    callback(|| {
        // SAFETY: guaranteed by the caller.
        let c = unsafe { ctx(dev) };
        let Some(buf) = buf else {
            set_errno(libc::EINVAL);
            return -1;
        };
        io(c, buf)
    })
}

unsafe extern "C" fn op_pread(
    dev: *mut sys::ntfs_device,
    buf: *mut c_void,
    n: i64,
    at: i64,
) -> i64 {
    // SAFETY: device as in op_open; buf holds n bytes per libntfs-3g.
    unsafe { transfer(dev, slice_mut(buf, n), |c, buf| c.pread(buf, at)) }
}

unsafe extern "C" fn op_pwrite(
    dev: *mut sys::ntfs_device,
    buf: *const c_void,
    n: i64,
    at: i64,
) -> i64 {
    // SAFETY: device as in op_open; buf holds n bytes per libntfs-3g.
    unsafe { transfer(dev, slice(buf, n), |c, buf| c.pwrite(buf, at)) }
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

pub(super) static DEVICE_OPS: sys::ntfs_device_operations = sys::ntfs_device_operations {
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
