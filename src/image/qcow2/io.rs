//! qcow2-rs's I/O engine over wingold's locked file: short reads and failed
//! writes are errors, never panics; header rewrites keep what qcow2-rs does not
//! know about.

use super::header::{be32, be64};
use crate::image::SECTOR_SIZE;
use qcow2_rs::error::Qcow2Result;
use qcow2_rs::ops::Qcow2IoOps;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

/// Fields qcow2-rs may change when it rewrites the header; everything else on disk
/// (extensions, backing file name) is ours and kept.
const MUTABLE_FIELDS: &[(usize, usize)] = &[(36, 4), (40, 8), (48, 8), (56, 4)];

/// qcow2-rs's I/O engine over our locked file. Short reads and failed writes are
/// errors, never panics; header rewrites keep what qcow2-rs does not know about.
pub(super) struct FileIo {
    pub(super) file: File,
    /// Set when a read hit the end of the file: the image is truncated.
    pub(super) hit_eof: Rc<Cell<bool>>,
    /// The last error the host gave a read, write or flush (a full disk, EIO):
    /// qcow2-rs reports it only in its own Debug form.
    pub(super) host_error: Rc<RefCell<Option<std::io::Error>>>,
    /// Set when the host refused a write or flush: later writes are dropped (see
    /// `write_from`) and `flush` fails, instead of qcow2-rs failing again and
    /// printing its error in Debug form on stderr.
    pub(super) write_failed: Rc<Cell<bool>>,
    /// The header as on disk; shared with [`Qcow2Image`], which sets and clears
    /// the dirty bit in it.
    pub(super) header: Rc<RefCell<Vec<u8>>>,
    pub(super) header_len: usize,
}

impl FileIo {
    /// Remembers `e` for the message, and hands it on.
    fn host(&self, e: std::io::Error) -> std::io::Error {
        let copy = match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        };
        *self.host_error.borrow_mut() = Some(copy);
        e
    }

    /// [`FileIo::host`] for a write or flush.
    fn host_write(&self, e: std::io::Error) -> std::io::Error {
        self.write_failed.set(true);
        self.host(e)
    }

    /// Whether `[offset, offset + len)` lies within the L1 table rounded up to sectors.
    fn in_l1_tail(&self, offset: u64, len: usize) -> bool {
        let h = self.header.borrow();
        let l1_offset = be64(&h, 40);
        let l1_bytes = (be32(&h, 36) as u64 * 8).div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
        offset >= l1_offset && offset + len as u64 <= l1_offset + l1_bytes
    }
}

impl Qcow2IoOps for FileIo {
    async fn read_to(&self, offset: u64, buf: &mut [u8]) -> Qcow2Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.host(e).into()),
            }
        }
        if done < buf.len() {
            // qemu writes the L1 table's entries only, and qcow2-rs reads it in whole
            // sectors: that tail reads as zeros, as in QEMU. Anything else is missing.
            if !self.in_l1_tail(offset, buf.len()) {
                self.hit_eof.set(true);
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            buf[done..].fill(0);
        }
        Ok(buf.len())
    }

    async fn write_from(&self, offset: u64, buf: &[u8]) -> Qcow2Result<()> {
        // After the host refused a write, nothing more reaches the file: the
        // caller has its error, flush() reports it again, and the metadata that
        // qcow2-rs still flushes (it must, to drop its cache) would describe
        // clusters that were never written. The file keeps its last consistent
        // tables.
        if self.write_failed.get() {
            return Ok(());
        }
        if offset == 0 {
            let mut header = self.header.borrow_mut();
            for &(at, len) in MUTABLE_FIELDS {
                header[at..at + len].copy_from_slice(&buf[at..at + len]);
            }
            self.file
                .write_all_at(&header[..self.header_len], 0)
                .map_err(|e| self.host_write(e))?;
            return Ok(());
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.host_write(e))?;
        Ok(())
    }

    async fn fallocate(&self, offset: u64, len: usize, _flags: u32) -> Qcow2Result<()> {
        use nix::fcntl::{fallocate, FallocateFlags};
        use std::os::fd::AsRawFd;
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        // On failure qcow2-rs falls back to writing zeros.
        fallocate(self.file.as_raw_fd(), flags, offset as i64, len as i64)
            .map_err(std::io::Error::from)?;
        Ok(())
    }

    async fn fsync(&self, _offset: u64, _len: usize, _flags: u32) -> Qcow2Result<()> {
        self.file.sync_data().map_err(|e| self.host_write(e))?;
        Ok(())
    }
}
