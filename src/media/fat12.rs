//! A 1.44 MB floppy image (FAT12, as `mformat -f 1440` lays it out) holding a
//! few files in its root folder: what Windows XP / Server 2003 Setup reads
//! `WINNT.SIF` from. Deterministic: the volume serial comes from the files'
//! bytes, every time stamp is 1980-01-01 00:00.
//!
//! Layout (Microsoft's FAT specification, "FAT: General Overview of On-Disk
//! Format"): 2880 sectors of 512 bytes; the boot sector with its BIOS parameter
//! block; two FATs of 9 sectors; a root folder of 224 entries (14 sectors);
//! data clusters of one sector from sector 33 (cluster 2).

use super::Error;

const SECTOR: usize = 512;
const SECTORS: usize = 2880;
const FAT_SECTORS: usize = 9;
pub(super) const ROOT_ENTRIES: usize = 224;
const ROOT_AT: usize = 1 + 2 * FAT_SECTORS;
const DATA_AT: usize = ROOT_AT + ROOT_ENTRIES * 32 / SECTOR;
/// Clusters 2 to the last data sector.
const CLUSTERS: usize = SECTORS - DATA_AT;
/// The media descriptor of a 1.44 MB 3.5" floppy.
const MEDIA: u8 = 0xf0;
/// DOS date of 1980-01-01 (day 1, month 1, year 0).
const DOS_DATE: u16 = (1 << 5) | 1;

/// The 11-byte directory name of `name` (`WINNT.SIF` → `WINNT   SIF`).
fn short_name(name: &str) -> Result<[u8; 11], Error> {
    let bad = || Error::Name {
        name: name.to_owned(),
    };
    let (stem, ext) = name.split_once('.').unwrap_or((name, ""));
    let ok = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if stem.is_empty() || !ok(stem, 8) || !ok(ext, 3) {
        return Err(bad());
    }
    let mut out = [b' '; 11];
    out[..stem.len()].copy_from_slice(stem.to_ascii_uppercase().as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.to_ascii_uppercase().as_bytes());
    Ok(out)
}

/// Sets FAT12 entry `n` to `value` in `fat`.
fn set_entry(fat: &mut [u8], n: usize, value: u16) {
    let at = n * 3 / 2;
    if n % 2 == 0 {
        fat[at] = value as u8;
        fat[at + 1] = (fat[at + 1] & 0xf0) | ((value >> 8) as u8 & 0x0f);
    } else {
        fat[at] = (fat[at] & 0x0f) | ((value as u8 & 0x0f) << 4);
        fat[at + 1] = (value >> 4) as u8;
    }
}

/// A floppy labelled `label` (up to 11 characters, upper-cased) holding `files`
/// (8.3 names) in its root folder, in the order given.
pub fn floppy(label: &str, files: &[(&str, &[u8])]) -> Result<Vec<u8>, Error> {
    if files.len() + 1 > ROOT_ENTRIES {
        return Err(Error::TooMany { count: files.len() });
    }
    let total: usize = files.iter().map(|(_, d)| d.len().div_ceil(SECTOR)).sum();
    if total > CLUSTERS {
        return Err(Error::TooLarge {
            bytes: files.iter().map(|(_, d)| d.len()).sum(),
        });
    }
    let mut img = vec![0u8; SECTORS * SECTOR];
    let mut label11 = [b' '; 11];
    for (i, b) in label.bytes().take(11).enumerate() {
        label11[i] = b.to_ascii_uppercase();
    }
    // The volume serial: the first bytes of the files' SHA-256, so that the same
    // files give the same image.
    let mut all = Vec::new();
    for (name, data) in files {
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(data);
    }
    let digest = crate::fsutil::sha256_hex(&all);
    let serial = u32::from_str_radix(&digest[..8], 16).unwrap_or(0);

    // Boot sector: a jump over the BPB to a halt loop, the BPB, the signature.
    let b = &mut img[..SECTOR];
    b[..3].copy_from_slice(&[0xeb, 0x3c, 0x90]);
    b[3..11].copy_from_slice(b"WINGOLD ");
    b[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    b[13] = 1; // sectors per cluster
    b[14..16].copy_from_slice(&1u16.to_le_bytes()); // reserved sectors
    b[16] = 2; // FATs
    b[17..19].copy_from_slice(&(ROOT_ENTRIES as u16).to_le_bytes());
    b[19..21].copy_from_slice(&(SECTORS as u16).to_le_bytes());
    b[21] = MEDIA;
    b[22..24].copy_from_slice(&(FAT_SECTORS as u16).to_le_bytes());
    b[24..26].copy_from_slice(&18u16.to_le_bytes()); // sectors per track
    b[26..28].copy_from_slice(&2u16.to_le_bytes()); // heads
    b[36] = 0; // drive number (floppy)
    b[38] = 0x29; // extended boot signature: serial, label and type follow
    b[39..43].copy_from_slice(&serial.to_le_bytes());
    b[43..54].copy_from_slice(&label11);
    b[54..62].copy_from_slice(b"FAT12   ");
    b[62..64].copy_from_slice(&[0xeb, 0xfe]); // jmp $: not a boot floppy
    b[510] = 0x55;
    b[511] = 0xaa;

    let mut fat = vec![0u8; FAT_SECTORS * SECTOR];
    set_entry(&mut fat, 0, 0xf00 | MEDIA as u16);
    set_entry(&mut fat, 1, 0xfff);
    let mut root = vec![0u8; ROOT_ENTRIES * 32];
    root[..11].copy_from_slice(&label11);
    root[11] = 0x08; // volume label
    root[24..26].copy_from_slice(&DOS_DATE.to_le_bytes());
    let mut cluster = 2usize;
    for (i, (name, data)) in files.iter().enumerate() {
        let e = &mut root[(i + 1) * 32..(i + 2) * 32];
        e[..11].copy_from_slice(&short_name(name)?);
        e[11] = 0x20; // archive
        for at in [16, 18, 24] {
            // created, accessed, written: 1980-01-01
            e[at..at + 2].copy_from_slice(&DOS_DATE.to_le_bytes());
        }
        let n = data.len().div_ceil(SECTOR);
        let first = if n == 0 { 0 } else { cluster };
        e[26..28].copy_from_slice(&(first as u16).to_le_bytes());
        e[28..32].copy_from_slice(&(data.len() as u32).to_le_bytes());
        for k in 0..n {
            let c = cluster + k;
            set_entry(&mut fat, c, if k + 1 == n { 0xfff } else { (c + 1) as u16 });
            let at = (DATA_AT + c - 2) * SECTOR;
            let part = &data[k * SECTOR..((k + 1) * SECTOR).min(data.len())];
            img[at..at + part.len()].copy_from_slice(part);
        }
        cluster += n;
    }
    for copy in 0..2 {
        let at = (1 + copy * FAT_SECTORS) * SECTOR;
        img[at..at + fat.len()].copy_from_slice(&fat);
    }
    img[ROOT_AT * SECTOR..ROOT_AT * SECTOR + root.len()].copy_from_slice(&root);
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::{floppy, short_name, Error};

    #[test]
    fn names_are_8_3_and_upper_case() {
        assert_eq!(&short_name("winnt.sif").unwrap(), b"WINNT   SIF");
        assert!(matches!(
            short_name("toolongname.sif"),
            Err(Error::Name { .. })
        ));
        assert!(matches!(short_name("a.b.c"), Err(Error::Name { .. })));
        assert!(matches!(short_name(".sif"), Err(Error::Name { .. })));
    }

    #[test]
    fn the_same_files_give_the_same_image() {
        let a = floppy("unattend", &[("WINNT.SIF", b"[Data]\r\n")]).unwrap();
        assert_eq!(a.len(), 1_474_560);
        assert_eq!(
            a,
            floppy("unattend", &[("WINNT.SIF", b"[Data]\r\n")]).unwrap()
        );
        assert_ne!(
            a,
            floppy("unattend", &[("WINNT.SIF", b"[Data]\n")]).unwrap()
        );
        let big = vec![0u8; 1_474_560];
        assert!(matches!(
            floppy("x", &[("BIG.BIN", &big)]),
            Err(Error::TooLarge { .. })
        ));
    }
}
