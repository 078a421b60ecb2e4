//! Writing through a mounted volume: files whole or streamed, ranges in place,
//! folders, the dirty flag. Every write checks the volume was mounted writable.

use super::{
    errno, take_log, to_utf16, DataAttr, Error, Inode, Result, Volume, FILE_ROOT, VOLUME_IS_DIRTY,
};
use crate::ntfs::sys;
use std::ffi::c_void;
use std::ptr::NonNull;
impl Volume<'_> {
    pub(super) fn require_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly)
        }
    }

    pub(super) fn create_in(
        &self,
        dir: &Inode,
        name: &str,
        mode: libc::mode_t,
        path: &str,
    ) -> Result<Inode> {
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
        // The file's times are left as they were: the same inputs must give a
        // byte-identical image (golden builds), and Windows does not look at a
        // hive file's times.
        self.write_file_from(path, data.len() as u64, &mut &data[..])
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
    pub(super) fn pwrite_all(
        &self,
        attr: &DataAttr,
        offset: u64,
        data: &[u8],
        path: &str,
    ) -> Result<()> {
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

    /// Changes `path`, which holds `old`, to hold `new`, writing only the
    /// `page`-byte pages that differ (runs of them in one write each): a hive
    /// rewritten after a few edits costs the pages it changed, in a qcow2
    /// overlay too. The first page goes first (a crash-ordered writer's "write in
    /// progress" header lands before any of the body), then the file grows, the
    /// other pages follow in file order, and a shrinking file is cut last. Returns
    /// the bytes written.
    pub fn write_changed(&self, path: &str, old: &[u8], new: &[u8], page: usize) -> Result<u64> {
        self.require_writable()?;
        let mref = self.must_lookup(path)?;
        let ino = self.open_inode(mref, path)?;
        let mut written = 0u64;
        {
            let attr = self.open_data(&ino, path)?;
            if attr.size() != old.len() as u64 {
                return Err(Error::BadPath {
                    volume: self.name.clone(),
                    path: path.to_owned(),
                    reason: format!(
                        "holds {} bytes, not the {} read before: it changed meanwhile",
                        attr.size(),
                        old.len()
                    ),
                });
            }
            let differs = |i: usize| {
                let at = i * page;
                let chunk = &new[at..(at + page).min(new.len())];
                old.get(at..at + chunk.len()) != Some(chunk)
            };
            let pages = new.len().div_ceil(page);
            let mut write_run = |from: usize, to: usize| -> Result<()> {
                let (a, b) = (from * page, (to * page).min(new.len()));
                self.pwrite_all(&attr, a as u64, &new[a..b], path)?;
                written += (b - a) as u64;
                Ok(())
            };
            if pages > 0 && differs(0) {
                write_run(0, 1)?;
            }
            if new.len() > old.len() {
                self.resize(&attr, new.len() as u64, path)?;
            }
            let mut i = 1;
            while i < pages {
                if !differs(i) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < pages && differs(i) {
                    i += 1;
                }
                write_run(start, i)?;
            }
            if new.len() < old.len() {
                self.resize(&attr, new.len() as u64, path)?;
            }
        }
        ino.close().map_err(|e| self.op_error(path, "closing", e))?;
        Ok(written)
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
    pub(super) fn set_dirty(&self, dirty: bool) -> Result<()> {
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
    pub(super) fn resize(&self, attr: &DataAttr, len: u64, path: &str) -> Result<()> {
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
}
