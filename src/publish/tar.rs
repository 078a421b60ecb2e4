//! The containerDisk layer as a tar stream, headers written by hand so that every
//! byte is fixed (the layout kubevirt/containerdisks' `pkg/build/tar.go` makes):
//! `disk/` (0555) and
//! `disk/disk.img` (0444), both 107:107 `qemu`, mtime 0, no PAX records, then two
//! zero blocks. Sizes from 8 GiB up take GNU's base-256 size field, which Go's
//! archive/tar (containerd, CDI) and umoci read.

use std::io::{self, Read};

const BLOCK: usize = 512;

/// One ustar/GNU header block.
pub fn header(name: &str, mode: u32, uid: u32, user: &str, size: u64, dir: bool) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |h: &mut [u8; BLOCK], at: usize, len: usize, v: u64| {
        let text = format!("{v:0width$o}\0", width = len - 1);
        h[at..at + len].copy_from_slice(text.as_bytes());
    };
    octal(&mut h, 100, 8, mode as u64);
    octal(&mut h, 108, 8, uid as u64);
    octal(&mut h, 116, 8, uid as u64);
    if size < 0o77777777777 {
        octal(&mut h, 124, 12, size);
    } else {
        // GNU base-256: the high bit of the first byte set, the size big-endian.
        h[124] = 0x80;
        h[124 + 4..124 + 12].copy_from_slice(&size.to_be_bytes());
    }
    octal(&mut h, 136, 12, 0); // mtime
    h[156] = if dir { b'5' } else { b'0' };
    // GNU magic ("ustar  \0"), as the tar crate's new_gnu() writes.
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..265 + user.len()].copy_from_slice(user.as_bytes());
    h[297..297 + user.len()].copy_from_slice(user.as_bytes());
    // Checksum: the header's bytes with the checksum field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
    h
}

/// The bytes before a file's data in the disk layer: the `disk/` entry and the
/// `disk/disk.img` header.
fn disk_prefix(size: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 * BLOCK);
    v.extend_from_slice(&header("disk/", 0o555, 107, "qemu", 0, true));
    v.extend_from_slice(&header("disk/disk.img", 0o444, 107, "qemu", size, false));
    v
}

/// Padding after `size` bytes of data, then the two zero blocks that end a tar.
fn disk_suffix(size: u64) -> Vec<u8> {
    let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    vec![0u8; pad + 2 * BLOCK]
}

/// The length of the disk layer for a file of `size` bytes.
pub fn disk_layer_len(size: u64) -> u64 {
    2 * BLOCK as u64 + size + disk_suffix(size).len() as u64
}

/// The disk layer as a reader over the golden file: prefix, the file, suffix.
pub fn disk_layer(file: std::fs::File, size: u64) -> impl Read {
    io::Cursor::new(disk_prefix(size))
        .chain(file.take(size))
        .chain(io::Cursor::new(disk_suffix(size)))
}

/// A small layer of files (path, mode, data) under their folder entries, owned by
/// root, mtime 0.
pub fn small_layer(dirs: &[&str], files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for d in dirs {
        v.extend_from_slice(&header(d, 0o555, 0, "root", 0, true));
    }
    for (name, mode, data) in files {
        v.extend_from_slice(&header(name, *mode, 0, "root", data.len() as u64, false));
        v.extend_from_slice(data);
        v.extend_from_slice(&vec![0u8; (BLOCK - data.len() % BLOCK) % BLOCK]);
    }
    v.extend_from_slice(&[0u8; 2 * BLOCK]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_sizes_use_base_256() {
        let h = header("disk/disk.img", 0o444, 107, "qemu", 9 << 30, false);
        assert_eq!(h[124], 0x80);
        assert_eq!(u64::from_be_bytes(h[128..136].try_into().unwrap()), 9 << 30);
        let small = header("disk/disk.img", 0o444, 107, "qemu", 1000, false);
        assert_eq!(&small[124..136], b"00000001750\0");
        assert_eq!(disk_layer_len(1000), 1024 + 1000 + 24 + 1024);
    }
}
