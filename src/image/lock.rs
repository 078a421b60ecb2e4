//! Image locking compatible with QEMU's.
//!
//! QEMU (block/file-posix.c) takes open-file-description (OFD) byte-range locks on
//! every image it opens: a shared lock on byte `100 + bit` for each permission it
//! uses and on byte `200 + bit` for each permission it refuses to share with
//! others. Taking the same locks makes a running VM and wingold exclude each other
//! in both directions, and makes `qemu-img` refuse an image wingold is writing.

use super::{Error, Result};
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;

/// QEMU's BLK_PERM_* bits (include/block/block-common.h).
const PERM_CONSISTENT_READ: u32 = 0x01;
const PERM_WRITE: u32 = 0x02;
const PERM_WRITE_UNCHANGED: u32 = 0x04;
const PERM_RESIZE: u32 = 0x08;
const PERM_NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];

/// How an image is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

impl Access {
    /// (permissions used, permissions not shared with others), as QEMU counts them.
    fn perms(self) -> (u32, u32) {
        match self {
            // A consistent read needs nobody writing underneath, as `qemu-img info` does.
            Access::ReadOnly => (PERM_CONSISTENT_READ, PERM_WRITE | PERM_RESIZE),
            Access::ReadWrite => (
                PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED | PERM_RESIZE,
                PERM_WRITE | PERM_RESIZE,
            ),
        }
    }
}

fn lock_byte(file: &File, byte: i64) -> nix::Result<()> {
    let fl = libc::flock {
        l_type: libc::F_RDLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&fl)).map(|_| ())
}

/// Whether another open file description holds a lock on `byte`.
fn byte_is_held(file: &File, byte: i64) -> nix::Result<bool> {
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    };
    fcntl(file.as_raw_fd(), FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Takes QEMU-compatible locks on `file` for `access`, or explains who holds it.
/// The locks live as long as `file` stays open.
pub(crate) fn lock_image(file: &File, path: &Path, access: Access) -> Result<()> {
    let (perm, unshared) = access.perms();
    let io = |e: nix::Error| Error::io(path, "locking", e.into());
    for bit in 0..PERM_NAMES.len() {
        let mask = 1u32 << bit;
        if perm & mask != 0 {
            lock_byte(file, PERM_BASE + bit as i64).map_err(io)?;
        }
        if unshared & mask != 0 {
            lock_byte(file, SHARED_BASE + bit as i64).map_err(io)?;
        }
    }
    // A conflict is asked again a few times before it is reported: a lock this
    // process just released can live on for a moment in a child being spawned
    // (fork copies the open file, exec then closes it).
    let mut conflict = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        conflict = None;
        for (bit, name) in PERM_NAMES.iter().enumerate() {
            let mask = 1u32 << bit;
            // We use it, somebody refuses to share it.
            if perm & mask != 0 && byte_is_held(file, SHARED_BASE + bit as i64).map_err(io)? {
                conflict = Some(format!("it does not share the \"{name}\" permission"));
                break;
            }
            // We refuse to share it, somebody uses it.
            if unshared & mask != 0 && byte_is_held(file, PERM_BASE + bit as i64).map_err(io)? {
                conflict = Some(format!("it holds the \"{name}\" permission"));
                break;
            }
        }
        if conflict.is_none() {
            return Ok(());
        }
    }
    Err(Error::Locked {
        path: path.to_owned(),
        reason: conflict.unwrap_or_default(),
    })
}

/// Whether another program (a running QEMU, another wingold) holds any of QEMU's
/// locks on the image at `path`. Opens it read-only and takes no lock itself.
pub fn in_use(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| Error::open(path, e))?;
    let io = |e: nix::Error| Error::io(path, "testing locks", e.into());
    for bit in 0..PERM_NAMES.len() as i64 {
        if byte_is_held(&file, PERM_BASE + bit).map_err(io)?
            || byte_is_held(&file, SHARED_BASE + bit).map_err(io)?
        {
            return Ok(true);
        }
    }
    Ok(false)
}
