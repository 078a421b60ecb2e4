//! Reading an ISO 9660 image without mounting it: the primary volume descriptor and
//! the directory tree, with Rock Ridge names (the virtio-win ISO has no Joliet
//! since virtio-win-pkg-scripts commit eb194b9; a Windows ISO repacked by
//! xorriso or mkisofs has them). Bounds-checked throughout: a damaged ISO is an
//! error, never a panic.

use crate::media::Error;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SECTOR: u64 = 2048;
/// The primary volume descriptor is at sector 16; its identifier at byte 1.
const PVD_OFFSET: u64 = 16 * SECTOR;
const ISO_MAGIC: &[u8; 5] = b"CD001";
/// Directory nesting followed at most (the virtio-win tree is 3 deep).
const MAX_DEPTH: usize = 16;
/// Entries listed at most, against loops in a damaged image.
const MAX_ENTRIES: usize = 200_000;

/// One file or folder in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path from the root, `/`-separated, Rock Ridge names.
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    /// Byte offset of its data in the image.
    pub offset: u64,
}

/// An opened ISO image.
pub struct Iso {
    file: File,
    path: PathBuf,
    len: u64,
    pub volume_id: String,
    /// The volume's creation date (seconds since 1970, UTC), when recorded.
    pub created: Option<i64>,
    root: (u64, u64),
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads the volume id of an ISO image, or None when it is no ISO 9660 image.
pub fn volume_id(path: &Path) -> std::io::Result<Option<String>> {
    let file = crate::input::open(path, true)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut pvd = [0u8; 2048];
    match file.read_exact_at(&mut pvd, PVD_OFFSET) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if &pvd[1..6] != ISO_MAGIC || pvd[0] != 1 {
        return Ok(None);
    }
    Ok(Some(
        String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned(),
    ))
}

impl Iso {
    pub fn open(path: &Path) -> Result<Iso, Error> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::input::open(path, true)?;
        let len = file.metadata().map_err(io)?.len();
        let mut pvd = [0u8; 2048];
        if len < PVD_OFFSET + SECTOR {
            return Err(Error::NotIso {
                path: path.to_owned(),
                reason: "too small".into(),
            });
        }
        file.read_exact_at(&mut pvd, PVD_OFFSET).map_err(io)?;
        if pvd[0] != 1 || &pvd[1..6] != ISO_MAGIC {
            return Err(Error::NotIso {
                path: path.to_owned(),
                reason: "no primary volume descriptor (`CD001`) at sector 16".into(),
            });
        }
        let root = &pvd[156..190];
        let iso = Iso {
            volume_id: String::from_utf8_lossy(&pvd[40..72]).trim_end().to_owned(),
            created: volume_date(&pvd[813..830]),
            root: (le32(root, 2) as u64 * SECTOR, le32(root, 10) as u64),
            file,
            path: path.to_owned(),
            len,
        };
        if iso.root.0 + iso.root.1 > len {
            return Err(iso.damaged("the root directory lies past the end"));
        }
        Ok(iso)
    }

    fn damaged(&self, reason: &str) -> Error {
        Error::DamagedIso {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Every file and folder, depth first, with Rock Ridge names where present.
    pub fn list(&self) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        self.walk(self.root, "", 0, &mut out)?;
        Ok(out)
    }

    /// The bytes of a file entry (from [`Iso::list`]).
    pub fn read(&self, entry: &Entry) -> Result<Vec<u8>, Error> {
        if entry.is_dir || entry.offset.saturating_add(entry.size) > self.len {
            return Err(self.damaged(&format!("{} lies past the end", entry.path)));
        }
        let mut buf = vec![0u8; entry.size as usize];
        self.file
            .read_exact_at(&mut buf, entry.offset)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }

    /// Up to `len` bytes from the start of a file (its headers).
    pub fn read_head(&self, entry: &Entry, len: u64) -> Result<Vec<u8>, Error> {
        let head = Entry {
            size: entry.size.min(len),
            ..entry.clone()
        };
        self.read(&head)
    }

    /// The SHA-256 of a file, read in 1 MiB pieces (never held whole).
    pub fn sha256(&self, entry: &Entry) -> Result<String, Error> {
        use sha2::{Digest, Sha256};
        if entry.is_dir || entry.offset.saturating_add(entry.size) > self.len {
            return Err(self.damaged(&format!("{} lies past the end", entry.path)));
        }
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < entry.size {
            let n = (entry.size - at).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], entry.offset + at)
                .map_err(|source| Error::Io {
                    path: self.path.clone(),
                    source,
                })?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        Ok(format!("{:x}", h.finalize()))
    }

    fn walk(
        &self,
        (offset, size): (u64, u64),
        prefix: &str,
        depth: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), Error> {
        if depth > MAX_DEPTH {
            return Err(self.damaged("directories nest too deep (a loop?)"));
        }
        if offset + size > self.len || size > 64 << 20 {
            return Err(self.damaged("a directory lies past the end"));
        }
        let mut dir = vec![0u8; size as usize];
        self.file
            .read_exact_at(&mut dir, offset)
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        let mut at = 0usize;
        while at < dir.len() {
            let len = dir[at] as usize;
            if len == 0 {
                // Records never cross a sector: skip to the next one.
                at = (at / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            if len < 34 || at + len > dir.len() {
                return Err(self.damaged("a directory record is cut short"));
            }
            let rec = &dir[at..at + len];
            at += len;
            let name_len = rec[32] as usize;
            if 33 + name_len > rec.len() {
                return Err(self.damaged("a name runs past its record"));
            }
            let raw_name = &rec[33..33 + name_len];
            // "." and ".." are the single bytes 0 and 1.
            if raw_name == [0] || raw_name == [1] {
                continue;
            }
            let su_start = 33 + name_len + (name_len + 1) % 2;
            let name = rock_ridge_name(rec.get(su_start..).unwrap_or(&[])).unwrap_or_else(|| {
                let n = String::from_utf8_lossy(raw_name).into_owned();
                let n = n.split(';').next().unwrap_or("").to_owned();
                n.strip_suffix('.').map(str::to_owned).unwrap_or(n)
            });
            if out.len() >= MAX_ENTRIES {
                return Err(self.damaged("too many entries"));
            }
            let is_dir = rec[25] & 2 != 0;
            let extent = (le32(rec, 2) as u64 * SECTOR, le32(rec, 10) as u64);
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            out.push(Entry {
                path: path.clone(),
                is_dir,
                size: extent.1,
                offset: extent.0,
            });
            if is_dir {
                self.walk(extent, &path, depth + 1, out)?;
            }
        }
        Ok(())
    }
}

/// A PVD date (`YYYYMMDDHHMMSScc` digits and a signed offset in 15-minute steps)
/// as seconds since 1970, UTC; None when unset or malformed.
fn volume_date(b: &[u8]) -> Option<i64> {
    let digits = std::str::from_utf8(&b[..16]).ok()?;
    if !digits.bytes().all(|c| c.is_ascii_digit()) || digits.starts_with("0000") {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (proleptic Gregorian), 1970-01-01 = 0.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let offset = (b[16] as i8) as i64 * 15 * 60;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// The Rock Ridge `NM` name in a record's system use area, if it has one.
fn rock_ridge_name(mut su: &[u8]) -> Option<String> {
    let mut name = Vec::new();
    let mut found = false;
    while su.len() >= 4 {
        let (sig, len) = (&su[0..2], su[2] as usize);
        if len < 4 || len > su.len() {
            break;
        }
        if sig == b"NM" && len >= 5 {
            found = true;
            name.extend_from_slice(&su[5..len]);
            if su[4] & 1 == 0 {
                break;
            }
        }
        if sig == b"ST" {
            break;
        }
        su = &su[len..];
    }
    found.then(|| String::from_utf8_lossy(&name).into_owned())
}
