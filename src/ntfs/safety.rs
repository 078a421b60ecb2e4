//! The checks before a volume is trusted: an NTFS boot sector, no hibernation or
//! Fast Startup, not marked dirty, and proof that a read-write mount really is one.

use super::{
    take_log, BlockDev, Error, Result, Volume, VolumeState, FILE_LOGFILE, HIBERNATION_MAGICS,
    NV_READ_ONLY, VOLUME_IS_DIRTY,
};
use crate::ntfs::sys;
use std::ffi::c_void;
use std::ffi::CStr;
impl Volume<'_> {
    /// Proves a read-write mount is one by the first write it makes: the dirty
    /// flag. It stays set until [`Volume::close`] clears it after every other
    /// write, so whatever cuts the writing short (a kill, a failed write) leaves
    /// chkdsk a reason to look, and wingold a reason to refuse the volume. Against
    /// a power cut, a caller whose device others see flushes it after `open` and
    /// before `close` (the device's writes reach the disk in no fixed order).
    pub(super) fn mark_dirty(&self) -> Result<()> {
        // SAFETY: vol is mounted; state is a plain field before any
        // configuration-dependent part of the struct.
        let state = unsafe { (*self.vol.as_ptr()).state };
        if state & (1 << NV_READ_ONLY) != 0 {
            return Err(Error::NotWritable {
                volume: self.name.clone(),
            });
        }
        self.set_dirty(true)
    }

    /// Refuses a volume that must not be written offline: hibernated, left by Fast
    /// Startup, or marked dirty. Read-write opens do this first; callers that want
    /// to refuse before creating any output call it on a read-only mount, and
    /// may hand the [`Checked`] it returns to [`Volume::open_checked`].
    pub fn refuse_unsafe(&self) -> Result<Checked> {
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
        Ok(Checked(()))
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

    pub(super) fn hibernation_evidence(&self) -> Result<Option<String>> {
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
}

/// Refuses, before libntfs-3g sees it, a partition whose boot sector is not NTFS's.
pub(super) fn check_boot_sector(dev: &dyn BlockDev, name: &str) -> Result<()> {
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

/// Proof that [`Volume::refuse_unsafe`] passed on a read-only mount, so that a
/// read-write mount of the same bytes (an overlay made on them afterwards)
/// need not mount once more to check.
#[derive(Debug)]
pub struct Checked(());
