//! Just enough FAT (12, 16, 32) to tell whether a path exists on a volume — the
//! EFI system partition's boot loader — read-only, every offset bounds-checked,
//! cluster chains cut off at the volume's cluster count (a loop cannot hang it).

use super::{BlockDev, Error, Result};

struct Volume<'a> {
    dev: &'a dyn BlockDev,
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved: u64,
    fats: u64,
    fat_sectors: u64,
    root_entries: u64,
    root_cluster: u32,
    clusters: u32,
    kind: u8,
}

fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4")) as u64
}

impl<'a> Volume<'a> {
    fn open(dev: &'a dyn BlockDev) -> Result<Option<Volume<'a>>> {
        if dev.len() < 512 {
            return Ok(None);
        }
        let mut b = [0u8; 512];
        dev.read_at(0, &mut b)?;
        let bps = le16(&b, 11);
        let spc = b[13] as u64;
        let reserved = le16(&b, 14);
        let fats = b[16] as u64;
        let root_entries = le16(&b, 17);
        let total = match le16(&b, 19) {
            0 => le32(&b, 32),
            n => n,
        };
        let fat_sectors = match le16(&b, 22) {
            0 => le32(&b, 36),
            n => n,
        };
        let sane = [512, 1024, 2048, 4096].contains(&bps)
            && spc.is_power_of_two()
            && reserved > 0
            && (1..=2).contains(&fats)
            && fat_sectors > 0;
        if !sane {
            return Ok(None);
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let first_data = reserved + fats * fat_sectors + root_sectors;
        let Some(data) = total.checked_sub(first_data) else {
            return Ok(None);
        };
        let clusters = (data / spc).min(u32::MAX as u64 - 16) as u32;
        let kind = match clusters {
            0..=4084 => 12,
            4085..=65524 => 16,
            _ => 32,
        };
        Ok(Some(Volume {
            dev,
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            reserved,
            fats,
            fat_sectors,
            root_entries,
            root_cluster: le32(&b, 44) as u32,
            clusters,
            kind,
        }))
    }

    fn read(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        if at
            .checked_add(len as u64)
            .is_none_or(|end| end > self.dev.len())
        {
            return Err(Error::Corrupt {
                path: "FAT volume".into(),
                reason: format!("a read at {at} runs past the end"),
            });
        }
        let mut buf = vec![0u8; len];
        self.dev.read_at(at, &mut buf)?;
        Ok(buf)
    }

    fn next_cluster(&self, c: u32) -> Result<Option<u32>> {
        let fat = self.reserved * self.bytes_per_sector;
        let (at, len) = match self.kind {
            12 => (fat + c as u64 * 3 / 2, 2),
            16 => (fat + c as u64 * 2, 2),
            _ => (fat + c as u64 * 4, 4),
        };
        let b = self.read(at, len)?;
        let v = match self.kind {
            12 => {
                let w = le16(&b, 0) as u32;
                if c % 2 == 1 {
                    w >> 4
                } else {
                    w & 0xfff
                }
            }
            16 => le16(&b, 0) as u32,
            _ => le32(&b, 0) as u32 & 0x0fff_ffff,
        };
        let end = match self.kind {
            12 => 0xff8,
            16 => 0xfff8,
            _ => 0x0fff_fff8,
        };
        Ok((v >= 2 && v < end && v < self.clusters + 2).then_some(v))
    }

    fn cluster_bytes(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    fn cluster_at(&self, c: u32) -> u64 {
        let first_data = self.reserved
            + self.fats * self.fat_sectors
            + (self.root_entries * 32).div_ceil(self.bytes_per_sector);
        (first_data + (c as u64 - 2) * self.sectors_per_cluster) * self.bytes_per_sector
    }

    /// A directory's bytes: the fixed root (12, 16), else its cluster chain.
    fn dir(&self, cluster: Option<u32>) -> Result<Vec<u8>> {
        let Some(mut c) = cluster.or((self.kind == 32).then_some(self.root_cluster)) else {
            let at = (self.reserved + self.fats * self.fat_sectors) * self.bytes_per_sector;
            return self.read(at, (self.root_entries * 32) as usize);
        };
        let mut out = Vec::new();
        for _ in 0..=self.clusters.min(1 << 16) {
            if c < 2 || c >= self.clusters + 2 {
                break;
            }
            out.extend(self.read(self.cluster_at(c), self.cluster_bytes() as usize)?);
            match self.next_cluster(c)? {
                Some(n) => c = n,
                None => break,
            }
        }
        Ok(out)
    }
}

/// One directory entry: its long name (or short one), whether it is a folder,
/// its first cluster.
fn entries(dir: &[u8]) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut long: Vec<(u8, Vec<u16>)> = Vec::new();
    for e in dir.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xe5 => {
                long.clear();
                continue;
            }
            _ => {}
        }
        let attr = e[11];
        if attr == 0x0f {
            let units: Vec<u16> = [1..11, 14..26, 28..32]
                .into_iter()
                .flat_map(|r| {
                    e[r].chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect::<Vec<_>>()
                })
                .collect();
            long.push((e[0] & 0x1f, units));
            continue;
        }
        if attr & 0x08 != 0 {
            long.clear();
            continue;
        }
        let name = if long.is_empty() {
            let stem = String::from_utf8_lossy(&e[0..8]).trim_end().to_owned();
            let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_owned();
            if ext.is_empty() {
                stem
            } else {
                format!("{stem}.{ext}")
            }
        } else {
            long.sort_by_key(|(n, _)| *n);
            let units: Vec<u16> = long
                .drain(..)
                .flat_map(|(_, u)| u)
                .take_while(|&u| u != 0 && u != 0xffff)
                .collect();
            String::from_utf16_lossy(&units)
        };
        let cluster = ((le16(e, 20) << 16) | le16(e, 26)) as u32;
        out.push((name, attr & 0x10 != 0, cluster));
    }
    out
}

/// Whether `path` (`\`-separated, any case) names a file on the FAT volume
/// `dev`; `None` when `dev` holds no FAT volume this reads.
pub fn file_exists(dev: &dyn BlockDev, path: &str) -> Result<Option<bool>> {
    let Some(vol) = Volume::open(dev)? else {
        return Ok(None);
    };
    let parts: Vec<&str> = path.split('\\').filter(|p| !p.is_empty()).collect();
    let mut cluster = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let dir = vol.dir(cluster)?;
        let found = entries(&dir)
            .into_iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(part));
        match found {
            Some((_, is_dir, c)) if !last && is_dir => cluster = Some(c),
            Some((_, is_dir, _)) if last => return Ok(Some(!is_dir)),
            _ => return Ok(Some(false)),
        }
    }
    Ok(Some(false))
}
