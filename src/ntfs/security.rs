//! Security descriptors and free space: what copying files into Windows needs so
//! that a new file is protected like its neighbours, not left with the
//! everyone-writable descriptor libntfs-3g gives new files.

use super::{errno, sys, Result, Volume};
use std::ffi::c_char;

/// The largest descriptor read (Windows caps one ACL at 64 KiB).
const MAX_DESCRIPTOR: usize = 256 * 1024;

/// The clock the shim serves libntfs-3g: -1 runs, else frozen at these seconds.
static FROZEN: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

fn freeze(seconds: i64) {
    FROZEN.store(seconds, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: stores one integer read by the shim's clock_gettime.
    unsafe { sys::wingold_ntfs_freeze_clock(seconds) };
}

/// Runs `f` with the clock libntfs-3g stamps new files, folders and MFT records
/// with frozen at `seconds` since 1970 (so that the same inputs give the same
/// bytes); afterwards the clock is as it was (frozen at the outer time, or
/// running), also when `f` fails or panics.
pub fn with_frozen_clock<T>(seconds: i64, f: impl FnOnce() -> T) -> T {
    struct Restore(i64);
    impl Drop for Restore {
        fn drop(&mut self) {
            freeze(self.0);
        }
    }
    let _restore = Restore(FROZEN.load(std::sync::atomic::Ordering::SeqCst));
    freeze(seconds.max(0));
    f()
}

impl Volume<'_> {
    /// A zeroed security context on this volume: libntfs-3g's NTFS-ACL calls read
    /// only `vol` from it (no user mapping, no permission cache).
    fn security_context(&self) -> sys::SECURITY_CONTEXT {
        // SAFETY: SECURITY_CONTEXT is plain data (pointers and integers), for which
        // all zeroes is a valid "none" value.
        let mut scx: sys::SECURITY_CONTEXT = unsafe { std::mem::zeroed() };
        scx.vol = self.vol.as_ptr();
        scx
    }

    /// The self-relative security descriptor of `path` (file or folder), as stored.
    pub fn security(&self, path: &str) -> Result<Vec<u8>> {
        let ino = self.open_inode(self.must_lookup(path)?, path)?;
        let mut scx = self.security_context();
        let mut buf = vec![0u8; MAX_DESCRIPTOR];
        // SAFETY: ino is open; buf holds buf.len() bytes; scx names this volume.
        let n = unsafe {
            sys::ntfs_get_ntfs_acl(
                &mut scx,
                ino.ni.as_ptr(),
                buf.as_mut_ptr() as *mut c_char,
                buf.len(),
            )
        };
        if n <= 0 || n as usize > buf.len() {
            return Err(self.op_error(path, "reading the security descriptor of", errno()));
        }
        buf.truncate(n as usize);
        ino.close().map_err(|e| self.op_error(path, "closing", e))?;
        Ok(buf)
    }

    /// Gives `path` the self-relative security descriptor `descriptor` (libntfs-3g
    /// checks it is well formed and shares it through `$Secure`).
    pub fn set_security(&self, path: &str, descriptor: &[u8]) -> Result<()> {
        self.require_writable()?;
        let ino = self.open_inode(self.must_lookup(path)?, path)?;
        let mut scx = self.security_context();
        // SAFETY: ino is open on a volume mounted read-write; descriptor holds
        // descriptor.len() bytes; flags 0 = create or replace.
        let r = unsafe {
            sys::ntfs_set_ntfs_acl(
                &mut scx,
                ino.ni.as_ptr(),
                descriptor.as_ptr() as *const c_char,
                descriptor.len(),
                0,
            )
        };
        if r != 0 {
            return Err(self.op_error(path, "setting the security descriptor of", errno()));
        }
        ino.close().map_err(|e| self.op_error(path, "closing", e))
    }

    /// Free bytes on the volume, from its cluster bitmap.
    pub fn free_bytes(&self) -> Result<u64> {
        // SAFETY: vol is mounted; the call fills free_clusters, a plain field before
        // any configuration-dependent part of the struct.
        let free = unsafe {
            if sys::ntfs_volume_get_free_space(self.vol.as_ptr()) != 0 {
                return Err(self.op_error("/$Bitmap", "reading", errno()));
            }
            (*self.vol.as_ptr()).free_clusters
        };
        Ok(free.max(0) as u64 * self.cluster_size())
    }
}
