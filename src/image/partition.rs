//! MBR and GPT partition tables, read from any [`BlockDev`].
//!
//! Numbering follows Linux (and `sfdisk`): MBR primaries 1–4 by slot, logical
//! partitions 5, 6, … in the order of the extended partition's EBR chain; GPT
//! entries by their index + 1. The extended container itself is listed too, as
//! sfdisk does, with `role` telling it apart.

use super::{BlockDev, Error, Result, SECTOR_SIZE};
use serde::Serialize;
use std::path::Path;

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];
const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xee;
const MBR_EXTENDED_TYPES: [u8; 3] = [0x05, 0x0f, 0x85];
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Logical partitions followed at most; a longer EBR chain is taken for a loop.
const MAX_LOGICAL: usize = 128;
/// GPT entry arrays larger than this are refused as damaged (the norm is 16 KiB).
const MAX_GPT_ARRAY: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
    /// No table: a bare filesystem from sector 0 (a volume image), seen as one
    /// partition, number 1, spanning the whole device.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Extended,
    Logical,
}

/// One partition. Offsets and sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// MBR: the type byte in hex without prefix, as sfdisk prints it (`7`, `83`);
    /// GPT: the type GUID, upper case.
    pub type_id: String,
    pub role: Role,
    pub bootable: bool,
    /// GPT only: the partition's unique GUID and its name.
    pub uuid: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    /// MBR disk signature (`0x1234abcd`) or GPT disk GUID.
    pub disk_id: String,
    pub partitions: Vec<Partition>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Formats a GUID stored in mixed-endian order (first three fields little-endian).
fn guid(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

struct MbrEntry {
    status: u8,
    kind: u8,
    lba: u64,
    sectors: u64,
}

fn mbr_entries(sector: &[u8]) -> [MbrEntry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        MbrEntry {
            status: e[0],
            kind: e[4],
            lba: le32(e, 8) as u64,
            sectors: le32(e, 12) as u64,
        }
    })
}

/// Reads the partition table of `dev` (`path` names it in errors).
pub fn scan_partitions(dev: &dyn BlockDev, path: &Path) -> Result<PartitionTable> {
    let none = |reason: &str| Error::NoPartitionTable {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if dev.len() < 2 * SECTOR_SIZE {
        return Err(none("the disk is smaller than two sectors"));
    }
    let mut mbr = [0u8; 512];
    dev.read_at(0, &mut mbr)?;
    if mbr[510..512] != MBR_SIGNATURE {
        return Err(none("sector 0 has no boot signature (a blank disk?)"));
    }
    if &mbr[3..11] == b"NTFS    " || &mbr[82..90] == b"FAT32   " || &mbr[54..59] == b"FAT1" {
        return Ok(PartitionTable {
            kind: TableKind::None,
            disk_id: String::new(),
            partitions: vec![Partition {
                number: 1,
                start: 0,
                size: dev.len(),
                type_id: String::new(),
                role: Role::Primary,
                bootable: false,
                uuid: None,
                name: None,
            }],
        });
    }
    let entries = mbr_entries(&mbr);
    if entries.iter().any(|e| e.kind == MBR_TYPE_GPT_PROTECTIVE) {
        return scan_gpt(dev, path);
    }
    scan_mbr(dev, path, &mbr, &entries)
}

fn scan_mbr(
    dev: &dyn BlockDev,
    path: &Path,
    mbr: &[u8],
    entries: &[MbrEntry; 4],
) -> Result<PartitionTable> {
    let bad = |reason: String| Error::BadPartitionTable {
        path: path.to_owned(),
        reason,
    };
    let disk_sectors = dev.len() / SECTOR_SIZE;
    let check = |n: u32, lba: u64, sectors: u64| {
        if lba + sectors > disk_sectors || lba == 0 {
            Err(bad(format!(
                "partition {n} (sectors {lba}+{sectors}) lies outside the disk ({disk_sectors} sectors)"
            )))
        } else {
            Ok(())
        }
    };
    let mut parts = Vec::new();
    let mut logical = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let number = i as u32 + 1;
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        if e.status != 0 && e.status != 0x80 {
            return Err(bad(format!(
                "partition {number} has an invalid status byte {:#x}",
                e.status
            )));
        }
        check(number, e.lba, e.sectors)?;
        let extended = MBR_EXTENDED_TYPES.contains(&e.kind);
        parts.push(Partition {
            number,
            start: e.lba * SECTOR_SIZE,
            size: e.sectors * SECTOR_SIZE,
            type_id: format!("{:x}", e.kind),
            role: if extended {
                Role::Extended
            } else {
                Role::Primary
            },
            bootable: e.status == 0x80,
            uuid: None,
            name: None,
        });
        if extended {
            logical = scan_ebr_chain(dev, path, e.lba, e.sectors)?;
        }
    }
    for (i, mut p) in logical.into_iter().enumerate() {
        p.number = 5 + i as u32;
        parts.push(p);
    }
    Ok(PartitionTable {
        kind: TableKind::Mbr,
        disk_id: format!("{:#010x}", le32(mbr, 440)),
        partitions: parts,
    })
}

/// Follows the EBR chain of an extended partition at `ext_lba`.
fn scan_ebr_chain(
    dev: &dyn BlockDev,
    path: &Path,
    ext_lba: u64,
    ext_sectors: u64,
) -> Result<Vec<Partition>> {
    let bad = |reason: String| Error::BadPartitionTable {
        path: path.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    let mut ebr_rel = 0u64;
    loop {
        if out.len() >= MAX_LOGICAL {
            return Err(bad(format!(
                "more than {MAX_LOGICAL} logical partitions (an EBR loop?)"
            )));
        }
        let ebr_lba = ext_lba + ebr_rel;
        let mut ebr = [0u8; 512];
        dev.read_at(ebr_lba * SECTOR_SIZE, &mut ebr)?;
        if ebr[510..512] != MBR_SIGNATURE {
            // An empty extended partition has no valid EBR; sfdisk lists no logicals.
            if out.is_empty() {
                return Ok(out);
            }
            return Err(bad(format!(
                "the EBR at sector {ebr_lba} has no boot signature"
            )));
        }
        let [first, next, ..] = mbr_entries(&ebr);
        if first.kind != 0 && first.sectors != 0 {
            let lba = ebr_lba + first.lba;
            if lba + first.sectors > ext_lba + ext_sectors {
                return Err(bad(format!(
                    "a logical partition (sectors {lba}+{}) lies outside its extended partition",
                    first.sectors
                )));
            }
            out.push(Partition {
                number: 0,
                start: lba * SECTOR_SIZE,
                size: first.sectors * SECTOR_SIZE,
                type_id: format!("{:x}", first.kind),
                role: Role::Logical,
                bootable: first.status == 0x80,
                uuid: None,
                name: None,
            });
        }
        if next.kind == 0 || next.lba == 0 {
            return Ok(out);
        }
        if next.lba <= ebr_rel || next.lba >= ext_sectors {
            return Err(bad(format!(
                "the EBR chain at sector {ebr_lba} points backwards or outside"
            )));
        }
        ebr_rel = next.lba;
    }
}

fn scan_gpt(dev: &dyn BlockDev, path: &Path) -> Result<PartitionTable> {
    let bad = |reason: &str| Error::BadPartitionTable {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut hdr = [0u8; 512];
    dev.read_at(SECTOR_SIZE, &mut hdr)?;
    if &hdr[0..8] != GPT_SIGNATURE {
        return Err(bad("protective MBR found but no GPT header at sector 1"));
    }
    let hdr_size = le32(&hdr, 12) as usize;
    if !(92..=512).contains(&hdr_size) {
        return Err(bad("the GPT header size is invalid"));
    }
    let mut crc_buf = hdr[..hdr_size].to_vec();
    crc_buf[16..20].fill(0);
    if crc32fast::hash(&crc_buf) != le32(&hdr, 16) {
        return Err(bad(
            "the GPT header checksum is wrong (repair it with `sgdisk -v`)",
        ));
    }
    let entries_lba = le64(&hdr, 72);
    let count = le32(&hdr, 80) as u64;
    let entry_size = le32(&hdr, 84) as u64;
    let array_len = count * entry_size;
    if entry_size < 128 || entry_size % 8 != 0 || array_len > MAX_GPT_ARRAY {
        return Err(bad("the GPT entry array has an invalid size"));
    }
    let array_start = entries_lba
        .checked_mul(SECTOR_SIZE)
        .filter(|s| s.saturating_add(array_len) <= dev.len())
        .ok_or_else(|| bad("the GPT entry array lies outside the disk"))?;
    let mut array = vec![0u8; array_len as usize];
    dev.read_at(array_start, &mut array)?;
    if crc32fast::hash(&array) != le32(&hdr, 88) {
        return Err(bad(
            "the GPT entry array checksum is wrong (repair it with `sgdisk -v`)",
        ));
    }
    let disk_sectors = dev.len() / SECTOR_SIZE;
    let mut parts = Vec::new();
    for (i, e) in array.chunks_exact(entry_size as usize).enumerate() {
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        if first == 0 || last < first || last >= disk_sectors {
            return Err(bad(&format!("GPT entry {} lies outside the disk", i + 1)));
        }
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        parts.push(Partition {
            number: i as u32 + 1,
            start: first * SECTOR_SIZE,
            size: (last - first + 1) * SECTOR_SIZE,
            type_id: guid(&e[0..16]),
            role: Role::Primary,
            // Legacy BIOS bootable attribute (bit 2).
            bootable: le64(e, 48) & 4 != 0,
            uuid: Some(guid(&e[16..32])),
            name: Some(String::from_utf16_lossy(&name)),
        });
    }
    Ok(PartitionTable {
        kind: TableKind::Gpt,
        disk_id: guid(&hdr[56..72]),
        partitions: parts,
    })
}

/// What a partition's first bytes say it holds.
pub fn probe_filesystem(dev: &dyn BlockDev) -> Result<&'static str> {
    let mut head = vec![0u8; 2048.min(dev.len() as usize)];
    dev.read_at(0, &mut head)?;
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    Ok(if at(3, b"NTFS    ") {
        "ntfs"
    } else if at(3, b"-FVE-FS-") {
        // A BitLocker volume: its boot sector names the encryption, its
        // contents are ciphertext until Windows unlocks it.
        "bitlocker"
    } else if at(82, b"FAT32   ") || at(54, b"FAT12   ") || at(54, b"FAT16   ") {
        "vfat"
    } else if at(1080, &[0x53, 0xef]) {
        "ext"
    } else if at(3, b"EXFAT   ") {
        "exfat"
    } else {
        "unknown"
    })
}
