//! Raw disk images: the file is the disk.

use super::lock::{lock_image, Access};
use super::{check_range, BlockDev, Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub struct RawImage {
    file: File,
    path: PathBuf,
    len: u64,
    writable: bool,
    /// Written since the last flush: flushing a clean image costs no fsync.
    dirty: std::cell::Cell<bool>,
}

impl RawImage {
    /// Opens `path` as a raw disk, locked as QEMU would lock it.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        let writable = access == Access::ReadWrite;
        let file = super::open_disk_file(path, access)?;
        lock_image(&file, path, access)?;
        let len = super::file_size(&file, path)?;
        Ok(RawImage {
            file,
            path: path.to_owned(),
            len,
            writable,
            dirty: std::cell::Cell::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl BlockDev for RawImage {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.len, offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.path, "read", e))
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(self.len, offset, buf.len())?;
        self.dirty.set(true);
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(&self.path, "write", e))
    }

    fn flush(&self) -> Result<()> {
        if !self.writable || !self.dirty.get() {
            return Ok(());
        }
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.path, "fsync", e))?;
        self.dirty.set(false);
        Ok(())
    }

    fn is_writable(&self) -> bool {
        self.writable
    }
}
