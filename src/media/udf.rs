//! Reading a UDF file system inside a disc image without mounting it (ECMA-167 as
//! OSTA UDF 1.02 profiles it): enough to find a file by its path and read bytes of
//! it. Windows installer ISOs keep `sources/install.wim` in UDF only; their ISO 9660
//! tree holds a README that says so. Bounds-checked throughout: a damaged image is
//! an error, never a panic.

use super::Error;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Disc sectors, and the only logical block size read (that of every DVD image).
const BLOCK: u64 = 2048;
/// The anchor volume descriptor pointer's sector (ECMA-167 3/8.4.2.1).
const ANCHOR: u64 = 256;
/// Descriptor tag identifiers (ECMA-167 3/7.2.1, 4/7.2.1).
const TAG_ANCHOR: u16 = 2;
const TAG_PARTITION: u16 = 5;
const TAG_LOGICAL_VOLUME: u16 = 6;
const TAG_TERMINATOR: u16 = 8;
const TAG_FILE_SET: u16 = 256;
const TAG_FILE_ID: u16 = 257;
const TAG_ALLOCATION_EXTENT: u16 = 258;
const TAG_FILE_ENTRY: u16 = 261;
const TAG_EXTENDED_FILE_ENTRY: u16 = 266;
/// Volume descriptors looked at, at most.
const MAX_DESCRIPTORS: u64 = 64;
/// A folder's bytes read at most (a Windows ISO's largest holds ~1,000 names).
const MAX_FOLDER: u64 = 16 << 20;
/// Extents of one file followed at most.
const MAX_EXTENTS: usize = 4096;

/// A file found in the file system: its size and where its bytes are.
#[derive(Debug, Clone)]
pub struct UdfFile {
    pub size: u64,
    pub is_dir: bool,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    /// Bytes kept in the file entry itself.
    Embedded(Vec<u8>),
    /// Runs of the file in order: where in the image (None: a hole, zeros) and
    /// how long.
    Extents(Vec<(Option<u64>, u64)>),
}

/// An opened UDF file system.
pub struct Udf {
    file: File,
    path: PathBuf,
    len: u64,
    /// The partition's first byte in the image.
    partition: u64,
    partition_len: u64,
    root: UdfFile,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Udf {
    /// Opens the UDF file system of the image at `path`; `Error::NotUdf` when it
    /// has none.
    pub fn open(path: &Path) -> Result<Udf, Error> {
        let file = crate::input::open(path, true)?;
        let len = file
            .metadata()
            .map_err(|source| Error::io(path, source))?
            .len();
        let mut udf = Udf {
            file,
            path: path.to_owned(),
            len,
            partition: 0,
            partition_len: 0,
            root: UdfFile {
                size: 0,
                is_dir: true,
                data: Data::Embedded(Vec::new()),
            },
        };
        let anchor = udf.sector(ANCHOR).map_err(|_| udf.not_udf("too short"))?;
        if tag_of(&anchor, ANCHOR as u32) != Some(TAG_ANCHOR) {
            return Err(udf.not_udf("no anchor volume descriptor at sector 256"));
        }
        let (vds_len, vds_at) = (le32(&anchor, 16) as u64, le32(&anchor, 20) as u64);
        let mut partition = None;
        let mut fsd = None;
        for n in 0..(vds_len / BLOCK).min(MAX_DESCRIPTORS) {
            let at = vds_at + n;
            let d = udf.sector(at)?;
            match tag_of(&d, at as u32) {
                Some(TAG_PARTITION) => {
                    partition = Some((le32(&d, 188) as u64, le32(&d, 192) as u64));
                }
                Some(TAG_LOGICAL_VOLUME) => {
                    let block = le32(&d, 212) as u64;
                    if block != BLOCK {
                        return Err(udf.damaged(format!("logical blocks of {block} bytes")));
                    }
                    // One partition map, of type 1: what UDF 1.02 discs have.
                    let (maps, first) = (le32(&d, 268), d[440]);
                    if maps != 1 || first != 1 {
                        return Err(udf.damaged(
                            "not one plain partition (UDF 2.50 metadata partitions are not read)"
                                .into(),
                        ));
                    }
                    fsd = Some(le32(&d, 252) as u64);
                }
                Some(TAG_TERMINATOR) => break,
                _ => {}
            }
        }
        let (Some((start, blocks)), Some(fsd)) = (partition, fsd) else {
            return Err(udf.damaged("no partition or logical volume descriptor".into()));
        };
        udf.partition = start * BLOCK;
        udf.partition_len = blocks * BLOCK;
        let set = udf.block(fsd)?;
        if tag_of(&set, fsd as u32) != Some(TAG_FILE_SET) {
            return Err(udf.damaged("no file set descriptor".into()));
        }
        udf.root = udf.entry(le32(&set, 404) as u64)?;
        if !udf.root.is_dir {
            return Err(udf.damaged("the root is not a folder".into()));
        }
        Ok(udf)
    }

    fn not_udf(&self, reason: &str) -> Error {
        Error::NotUdf {
            path: self.path.clone(),
            reason: reason.to_owned(),
        }
    }

    fn damaged(&self, reason: String) -> Error {
        Error::Damaged {
            path: self.path.clone(),
            reason,
        }
    }

    /// `len` bytes at `offset` of the image, refused past its end.
    fn bytes(&self, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.damaged(format!("{len} bytes at {offset} run past the end")));
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| Error::io(&self.path, source))?;
        Ok(buf)
    }

    fn sector(&self, n: u64) -> Result<Vec<u8>, Error> {
        self.bytes(n * BLOCK, BLOCK)
    }

    /// A logical block of the partition.
    fn block(&self, lb: u64) -> Result<Vec<u8>, Error> {
        self.bytes(self.partition_offset(lb, BLOCK)?, BLOCK)
    }

    /// Where `len` bytes from logical block `lb` are in the image, refused past
    /// the partition's end.
    fn partition_offset(&self, lb: u64, len: u64) -> Result<u64, Error> {
        let at = lb.checked_mul(BLOCK);
        match at {
            Some(at) if at.checked_add(len).is_some_and(|e| e <= self.partition_len) => {
                Ok(self.partition + at)
            }
            _ => Err(self.damaged(format!("block {lb} is outside the partition"))),
        }
    }

    /// The file (or standard) entry at logical block `lb`.
    fn entry(&self, lb: u64) -> Result<UdfFile, Error> {
        let e = self.block(lb)?;
        let (size, ads_at, ads_len) = match tag_of(&e, lb as u32) {
            Some(TAG_FILE_ENTRY) => (
                le64(&e, 56),
                176 + le32(&e, 168) as usize,
                le32(&e, 172) as usize,
            ),
            Some(TAG_EXTENDED_FILE_ENTRY) => (
                le64(&e, 56),
                216 + le32(&e, 208) as usize,
                le32(&e, 212) as usize,
            ),
            _ => return Err(self.damaged(format!("no file entry at block {lb}"))),
        };
        let ads = e
            .get(ads_at..ads_at.saturating_add(ads_len))
            .ok_or_else(|| self.damaged(format!("file entry at block {lb} overflows")))?;
        let is_dir = e[27] == 4;
        let data = match le16(&e, 34) & 7 {
            0 => Data::Extents(self.extents(ads, size, lb)?),
            3 => {
                let bytes = ads
                    .get(..size as usize)
                    .ok_or_else(|| self.damaged(format!("embedded file at block {lb}")))?;
                Data::Embedded(bytes.to_vec())
            }
            kind => {
                return Err(self.damaged(format!(
                    "allocation descriptors of type {kind} at block {lb} (UDF 1.02 discs use \
                     short ones)"
                )))
            }
        };
        Ok(UdfFile { size, is_dir, data })
    }

    /// Short allocation descriptors, followed into allocation extent
    /// descriptors, until `size` bytes are covered.
    fn extents(&self, first: &[u8], size: u64, lb: u64) -> Result<Vec<(Option<u64>, u64)>, Error> {
        let mut out = Vec::new();
        let mut covered = 0u64;
        let mut ads = first.to_vec();
        'chain: loop {
            for ad in ads.chunks_exact(8) {
                let (raw, pos) = (le32(ad, 0), le32(ad, 4) as u64);
                let (kind, len) = (raw >> 30, (raw & 0x3fff_ffff) as u64);
                if len == 0 || covered >= size {
                    break 'chain;
                }
                if out.len() == MAX_EXTENTS {
                    return Err(self.damaged(format!("file at block {lb} has too many extents")));
                }
                match kind {
                    // Recorded, or allocated and not recorded (reads as zeros).
                    0 => {
                        let take = len.min(size - covered);
                        out.push((Some(self.partition_offset(pos, take)?), take));
                        covered += take;
                    }
                    1 | 2 => {
                        let take = len.min(size - covered);
                        out.push((None, take));
                        covered += take;
                    }
                    // The next extent of allocation descriptors.
                    _ => {
                        let next = self.block(pos)?;
                        if tag_of(&next, pos as u32) != Some(TAG_ALLOCATION_EXTENT) {
                            return Err(self.damaged(format!("no allocation extent at {pos}")));
                        }
                        let n = (le32(&next, 20) as usize).min(BLOCK as usize - 24);
                        ads = next[24..24 + n].to_vec();
                        continue 'chain;
                    }
                }
            }
            break;
        }
        if covered < size {
            return Err(self.damaged(format!("file at block {lb} is shorter than its size")));
        }
        Ok(out)
    }

    /// `len` bytes of `f` from `offset`, refused past its end.
    pub fn read(&self, f: &UdfFile, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        if offset.checked_add(len).is_none_or(|end| end > f.size) {
            return Err(self.damaged(format!("{len} bytes at {offset} of a {} byte file", f.size)));
        }
        match &f.data {
            Data::Embedded(b) => Ok(b[offset as usize..(offset + len) as usize].to_vec()),
            Data::Extents(runs) => super::read_runs(runs, offset, len, |at, n| self.bytes(at, n)),
        }
    }

    /// The names in folder `dir`, with their entries' blocks.
    fn list(&self, dir: &UdfFile) -> Result<Vec<(String, u64)>, Error> {
        if dir.size > MAX_FOLDER {
            return Err(self.damaged(format!("a folder of {} bytes", dir.size)));
        }
        let bytes = self.read(dir, 0, dir.size)?;
        let mut out = Vec::new();
        let mut at = 0usize;
        while at + 38 <= bytes.len() {
            let d = &bytes[at..];
            if le16(d, 0) != TAG_FILE_ID || !checksum_ok(d) {
                return Err(self.damaged(format!("no file identifier at byte {at} of a folder")));
            }
            let (flags, name_len, iu_len) = (d[18], d[19] as usize, le16(d, 36) as usize);
            let total = (38 + iu_len + name_len).div_ceil(4) * 4;
            let name = d
                .get(38 + iu_len..38 + iu_len + name_len)
                .ok_or_else(|| self.damaged("a file identifier runs past its folder".into()))?;
            // Deleted entries and the parent link are not names.
            if flags & 0x0c == 0 {
                out.push((cs0(name), le32(d, 24) as u64));
            }
            at += total;
        }
        Ok(out)
    }

    /// The file at `path` (`/`-separated, compared without regard to case as
    /// Windows does for these names), or None.
    pub fn find(&self, path: &str) -> Result<Option<UdfFile>, Error> {
        let mut here = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !here.is_dir {
                return Ok(None);
            }
            let Some((_, lb)) = self
                .list(&here)?
                .into_iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(part))
            else {
                return Ok(None);
            };
            here = self.entry(lb)?;
        }
        Ok(Some(here))
    }
}

/// The descriptor tag's identifier when its checksum holds and it says it is
/// at `location`.
fn tag_of(d: &[u8], location: u32) -> Option<u16> {
    (d.len() >= 16 && checksum_ok(d) && le32(d, 12) == location).then(|| le16(d, 0))
}

/// ECMA-167 3/7.2.3: byte 4 is the sum of the tag's other 15 bytes.
fn checksum_ok(d: &[u8]) -> bool {
    d.len() >= 16
        && d[..16]
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 4)
            .fold(0u8, |s, (_, &b)| s.wrapping_add(b))
            == d[4]
}

/// An OSTA compressed Unicode name (UDF 2.1.1): 8 bits a character, or 16 bits
/// big-endian.
fn cs0(name: &[u8]) -> String {
    match name.split_first() {
        Some((8, rest)) => rest.iter().map(|&b| b as char).collect(),
        Some((16, rest)) => char::decode_utf16(
            rest.chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .map(|c| c.unwrap_or('\u{fffd}'))
        .collect(),
        _ => String::new(),
    }
}
