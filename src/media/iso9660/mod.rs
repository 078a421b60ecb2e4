//! An ISO 9660 (ECMA-119) image with Joliet names, written by hand and
//! deterministic (no clock in it): 2048-byte sectors; sectors 0-15 unused; a
//! primary volume descriptor (8.3 upper-case names), a Joliet supplementary one
//! (the real names, UCS-2 big-endian: what Windows and Linux show), the
//! terminator; little- and big-endian path tables for each; one extent per
//! directory and per file, file data shared by both trees.

mod read;

pub use read::{volume_id, Entry, Iso};
use std::collections::BTreeMap;

pub const SECTOR: usize = 2048;

/// A directory of the image: subdirectories and files by their Joliet name.
#[derive(Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, usize>,
    /// Its extent (sector) in each tree: primary, Joliet.
    at: [usize; 2],
}

fn both16(v: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..].copy_from_slice(&v.to_be_bytes());
    b
}

fn both32(v: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..].copy_from_slice(&v.to_be_bytes());
    b
}

/// A primary-tree name: upper case, `[A-Z0-9_]`, 8.3 for files (with `;1`),
/// 8 for directories.
fn primary_name(name: &str, dir: bool) -> Vec<u8> {
    let clean = |s: &str, n: usize| -> String {
        s.chars()
            .map(|c| match c.to_ascii_uppercase() {
                c @ ('A'..='Z' | '0'..='9') => c,
                _ => '_',
            })
            .take(n)
            .collect()
    };
    if dir {
        return clean(name, 8).into_bytes();
    }
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    format!("{}.{};1", clean(stem, 8), clean(ext, 3)).into_bytes()
}

fn joliet_name(name: &str, dir: bool) -> Vec<u8> {
    let full = if dir {
        name.to_owned()
    } else {
        format!("{name};1")
    };
    full.encode_utf16().flat_map(|u| u.to_be_bytes()).collect()
}

/// One directory record.
fn record(extent: usize, size: usize, dir: bool, name: &[u8]) -> Vec<u8> {
    let len = 33 + name.len() + (name.len() + 1) % 2;
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(extent as u32));
    r[10..18].copy_from_slice(&both32(size as u32));
    // Recording date (18..25) left zero: no clock in the image.
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r[33..33 + name.len()].copy_from_slice(name);
    r
}

/// The bytes of a directory's extent in `tree` (0 primary, 1 Joliet).
fn dir_extent(d: &Dir, parent: &Dir, tree: usize, data_at: &[usize], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut put = |r: Vec<u8>| {
        // A record never crosses a sector.
        if out.len() / SECTOR != (out.len() + r.len() - 1) / SECTOR {
            out.resize(out.len().div_ceil(SECTOR) * SECTOR, 0);
        }
        out.extend(r);
    };
    put(record(d.at[tree], SECTOR, true, &[0]));
    put(record(parent.at[tree], SECTOR, true, &[1]));
    let name = |n: &str, dir: bool| {
        if tree == 0 {
            primary_name(n, dir)
        } else {
            joliet_name(n, dir)
        }
    };
    // Records sorted by their identifier in this tree.
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (n, sub) in &d.dirs {
        let id = name(n, true);
        entries.push((id.clone(), record(sub.at[tree], SECTOR, true, &id)));
    }
    for (n, &i) in &d.files {
        let id = name(n, false);
        entries.push((id.clone(), record(data_at[i], sizes[i], false, &id)));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, r) in entries {
        put(r);
    }
    out
}

/// Every directory in path-table order (breadth first, by name), with its
/// parent's index into the same list.
fn dirs_in_order(root: &Dir) -> Vec<(&Dir, usize, String)> {
    let mut out = vec![(root, 0usize, String::new())];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].0;
        for (n, sub) in &d.dirs {
            out.push((sub, i, n.clone()));
        }
        i += 1;
    }
    out
}

fn path_table(order: &[(&Dir, usize, String)], tree: usize, big: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for (d, parent, n) in order {
        let id = if n.is_empty() {
            vec![0]
        } else if tree == 0 {
            primary_name(n, true)
        } else {
            joliet_name(n, true)
        };
        t.push(id.len() as u8);
        t.push(0);
        let at = d.at[tree] as u32;
        t.extend(if big {
            at.to_be_bytes()
        } else {
            at.to_le_bytes()
        });
        let p = (*parent + 1) as u16;
        t.extend(if big {
            p.to_be_bytes()
        } else {
            p.to_le_bytes()
        });
        t.extend(&id);
        if id.len() % 2 == 1 {
            t.push(0);
        }
    }
    t
}

/// An ISO 9660 image with Joliet names holding `files` (paths with `/`).
pub fn image(volume: &str, files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut root = Dir::default();
    for (i, (path, _)) in files.iter().enumerate() {
        let mut parts: Vec<&str> = path.split('/').collect();
        let file = parts.pop().expect("a path has a file name");
        let mut d = &mut root;
        for p in parts {
            d = d.dirs.entry(p.to_owned()).or_default();
        }
        d.files.insert(file.to_owned(), i);
    }
    // Layout: 16 system sectors, 3 descriptors, 4 path tables, then each
    // directory's two extents (one sector each: seeds are small), then data.
    let mut next = 16 + 3 + 4;
    fn assign(d: &mut Dir, next: &mut usize) {
        d.at = [*next, *next + 1];
        *next += 2;
        for sub in d.dirs.values_mut() {
            assign(sub, next);
        }
    }
    assign(&mut root, &mut next);
    let mut data_at = Vec::new();
    let sizes: Vec<usize> = files.iter().map(|(_, b)| b.len()).collect();
    for s in &sizes {
        data_at.push(next);
        next += s.div_ceil(SECTOR).max(1);
    }
    let total = next;
    let mut img = vec![0u8; total * SECTOR];
    let order = dirs_in_order(&root);
    // Directory extents.
    let parent_of: Vec<&Dir> = order.iter().map(|(_, p, _)| order[*p].0).collect();
    for (k, (d, _, _)) in order.iter().enumerate() {
        for tree in 0..2 {
            let bytes = dir_extent(d, parent_of[k], tree, &data_at, &sizes);
            assert!(bytes.len() <= SECTOR, "a seed directory fits one sector");
            let at = d.at[tree] * SECTOR;
            img[at..at + bytes.len()].copy_from_slice(&bytes);
        }
    }
    for (i, (_, b)) in files.iter().enumerate() {
        img[data_at[i] * SECTOR..data_at[i] * SECTOR + b.len()].copy_from_slice(b);
    }
    // Path tables: sectors 19-22 (primary L, M; Joliet L, M).
    let tables = [
        path_table(&order, 0, false),
        path_table(&order, 0, true),
        path_table(&order, 1, false),
        path_table(&order, 1, true),
    ];
    for (k, t) in tables.iter().enumerate() {
        assert!(t.len() <= SECTOR);
        let at = (19 + k) * SECTOR;
        img[at..at + t.len()].copy_from_slice(t);
    }
    for tree in 0..2 {
        let mut vd = vec![0u8; SECTOR];
        vd[0] = if tree == 0 { 1 } else { 2 };
        vd[1..6].copy_from_slice(b"CD001");
        vd[6] = 1;
        let text = |field: &mut [u8], s: &str| {
            if tree == 0 {
                field.fill(b' ');
                let b = s.as_bytes();
                let n = b.len().min(field.len());
                field[..n].copy_from_slice(&b[..n]);
            } else {
                // UCS-2 big-endian, padded with spaces (0x0020).
                for pair in field.chunks_exact_mut(2) {
                    pair.copy_from_slice(&[0, b' ']);
                }
                for (i, u) in s.encode_utf16().take(field.len() / 2).enumerate() {
                    field[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
                }
            }
        };
        text(&mut vd[8..40], "");
        text(&mut vd[40..72], volume);
        vd[80..88].copy_from_slice(&both32(total as u32));
        if tree == 1 {
            // Joliet level 3.
            vd[88..91].copy_from_slice(b"%/E");
        }
        vd[120..124].copy_from_slice(&both16(1));
        vd[124..128].copy_from_slice(&both16(1));
        vd[128..132].copy_from_slice(&both16(SECTOR as u16));
        let t = &tables[2 * tree];
        vd[132..140].copy_from_slice(&both32(t.len() as u32));
        vd[140..144].copy_from_slice(&((19 + 2 * tree) as u32).to_le_bytes());
        vd[148..152].copy_from_slice(&((20 + 2 * tree) as u32).to_be_bytes());
        let r = record(root.at[tree], SECTOR, true, &[0]);
        vd[156..156 + 34].copy_from_slice(&r[..34]);
        for (from, to) in [(190, 318), (318, 446), (446, 574), (574, 702)] {
            text(&mut vd[from..to], "");
        }
        text(&mut vd[574..702], "WINGOLD");
        for (from, to) in [(702, 739), (739, 776), (776, 813)] {
            text(&mut vd[from..to - (to - from) % 2], "");
        }
        // Dates: all digits zero, no time zone offset ("not specified").
        for at in [813, 830, 847, 864] {
            vd[at..at + 16].fill(b'0');
        }
        vd[881] = 1;
        let at = (16 + tree) * SECTOR;
        img[at..at + SECTOR].copy_from_slice(&vd);
    }
    let term = 18 * SECTOR;
    img[term] = 255;
    img[term + 1..term + 6].copy_from_slice(b"CD001");
    img[term + 6] = 1;
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_whole_sectors_and_deterministic() {
        let files = vec![
            ("meta-data".to_owned(), b"instance-id: x\n".to_vec()),
            ("openstack/latest/meta_data.json".to_owned(), b"{}".to_vec()),
        ];
        let a = image("cidata", &files);
        assert_eq!(a.len() % SECTOR, 0);
        assert_eq!(a, image("cidata", &files));
        assert_eq!(&a[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(&a[17 * SECTOR + 88..17 * SECTOR + 91], b"%/E");
    }
}
