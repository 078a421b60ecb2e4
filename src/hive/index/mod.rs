//! Subkey indexes written straight into a hive's bytes, many keys at once.
//!
//! libhivex adds one subkey at a time: it reads and compares every sibling's name
//! and copies the parent's whole index into a new cell, leaving the old one
//! behind — so N new subkeys under one key cost N² time and N² bytes (20,000 keys
//! made a 1.6 GB hive in 43 s). Here every new key of a hive is laid out in one
//! new hive bin and each parent gets one new index, sorted and hashed as Windows
//! does (REGF "Hash leaf", "Index root"), before hivex opens the result.
//!
//! Cells: a size (negative when allocated) then the record; offsets inside records
//! are relative to the start of the hive bins data (file offset − 4096).

#![deny(unsafe_code)]

mod reader;
mod view;

pub use reader::{audit, check_structure, Audit, Error, Result};
pub use view::View;

use super::{base_block_checksum, BASE_BLOCK_LEN};
use reader::{i32_at, rel_to_file, u32_at, Entry, Reader};
use std::collections::{BTreeMap, HashMap};

/// Leaf entries per index cell, the leaves under an index root when there are
/// more. A leaf of 507 entries fills one 4 KiB block, where (as remembered of the
/// NT kernel, not confirmed by a source here) Windows splits leaves itself; any
/// leaf size reads back (libhivex writes single leaves of thousands).
const LEAF_MAX: usize = 500;

/// Where the base block keeps the root cell and the size of the bins data.
const ROOT_CELL_AT: usize = 0x24;
const BINS_SIZE_AT: usize = 0x28;
const MINOR_VERSION_AT: usize = 0x18;
const HBIN_HEADER_LEN: usize = 32;
const NO_CELL: u32 = 0xffff_ffff;

// Key node fields, from the start of the cell (size field included).
const NK_FLAGS: usize = 6;
const NK_TIMESTAMP: usize = 8;
const NK_PARENT: usize = 20;
const NK_SUBKEYS: usize = 24;
const NK_SUBKEY_LIST: usize = 32;
const NK_VOLATILE_LIST: usize = 36;
const NK_VALUE_LIST: usize = 44;
const NK_SECURITY: usize = 48;
const NK_CLASS: usize = 52;
const NK_MAX_NAME: usize = 56;
const NK_NAME_LEN: usize = 76;
const NK_NAME: usize = 80;
const KEY_COMP_NAME: u16 = 0x20;
const SK_REFCOUNT: usize = 16;

/// A key to add, with the keys to add below it.
#[derive(Debug, Default)]
struct NewKey {
    name: String,
    children: BTreeMap<Vec<u16>, NewKey>,
}

impl NewKey {
    /// Adds the path `names` below this key (the missing part of a key path).
    fn insert(&mut self, names: &[&str]) {
        if let Some((first, rest)) = names.split_first() {
            self.children
                .entry(sort_key(first))
                .or_insert_with(|| NewKey {
                    name: (*first).to_owned(),
                    children: BTreeMap::new(),
                })
                .insert(rest);
        }
    }

    fn count(&self) -> usize {
        self.children.values().map(|c| 1 + c.count()).sum()
    }
}

/// A name as Windows orders and hashes it: UTF-16 units, each upper-cased on its
/// own (`hive::fold_name`).
pub fn sort_key(name: &str) -> Vec<u16> {
    super::fold_name(name).encode_utf16().collect()
}

/// The hash a hash leaf keeps for `name`: 37 × h + unit over the upper-cased
/// UTF-16 units.
pub fn name_hash(name: &str) -> u32 {
    sort_key(name)
        .iter()
        .fold(0u32, |h, &u| h.wrapping_mul(37).wrapping_add(u as u32))
}

/// A hive's bytes with new keys laid out, and the keys laid out (folded paths,
/// every missing parent included).
pub struct LaidOut {
    pub bytes: Vec<u8>,
    pub keys: std::collections::HashSet<String>,
}

/// Lays out every key of `paths` (relative to the root) that does not exist yet,
/// with its missing parents — when there are at least `min_keys` of them or a
/// name is not ASCII (libhivex would hash and sort its UTF-8 bytes, where Windows
/// looks it up by upper-cased UTF-16); None leaves them to libhivex. Keys beside a
/// sibling whose name holds a NUL are left to libhivex too (it refuses them).
/// An error only when a name is not ASCII and the indexes cannot be read: which
/// keys are new is not known then, and libhivex would hash such names wrongly.
pub fn lay_out_new_keys<'p>(
    bytes: &[u8],
    paths: impl IntoIterator<Item = &'p str>,
    min_keys: usize,
) -> Result<Option<LaidOut>> {
    let paths: Vec<&str> = paths.into_iter().collect();
    if paths.is_empty() {
        return Ok(None);
    }
    let attempt = || -> Result<Option<LaidOut>> {
        let mut non_ascii = false;
        let reader = Reader::new(bytes)?;
        let root = reader.root()?;
        // Each key's children by Windows name, read once; None when one holds a NUL.
        let mut children: HashMap<usize, Option<HashMap<Vec<u16>, usize>>> = HashMap::new();
        let mut plan: BTreeMap<usize, NewKey> = BTreeMap::new();
        let mut keys = std::collections::HashSet::new();
        for path in &paths {
            let parts: Vec<&str> = path.split('\\').filter(|p| !p.is_empty()).collect();
            if parts.iter().any(|p| p.contains('\0')) {
                continue;
            }
            let mut node = root;
            let mut depth = 0;
            let mut blocked = false;
            while depth < parts.len() {
                let known = match children.entry(node) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let list = reader.children(node)?;
                        e.insert((!list.iter().any(|c| c.name.contains('\0'))).then(|| {
                            let mut map = HashMap::new();
                            for c in list {
                                map.entry(c.key).or_insert(rel_to_file(c.offset));
                            }
                            map
                        }))
                    }
                };
                let Some(map) = known else {
                    blocked = true;
                    break;
                };
                match map.get(&sort_key(parts[depth])) {
                    Some(&next) => node = next,
                    None => break,
                }
                depth += 1;
            }
            if blocked || depth == parts.len() {
                continue;
            }
            non_ascii |= parts[depth..].iter().any(|p| !p.is_ascii());
            plan.entry(node).or_default().insert(&parts[depth..]);
            for end in depth + 1..=parts.len() {
                keys.insert(super::fold_name(&parts[..end].join("\\")));
            }
        }
        if keys.len() < min_keys && !non_ascii {
            return Ok(None);
        }
        Ok(Some(LaidOut {
            bytes: add_subkeys(bytes, &plan)?,
            keys,
        }))
    };
    match attempt() {
        Err(e) if paths.iter().any(|p| !p.is_ascii()) => Err(e),
        // Indexes this cannot read: libhivex adds the (ASCII) keys one by one.
        Err(_) => Ok(None),
        done => done,
    }
}

/// The hive's bytes with every key of `plan` added below the existing key whose
/// cell starts at file offset `parent`. The caller has checked that none exists.
fn add_subkeys(bytes: &[u8], plan: &BTreeMap<usize, NewKey>) -> Result<Vec<u8>> {
    let reader = Reader::new(bytes)?;
    let bins_end = BASE_BLOCK_LEN + reader.bins_size;
    let mut out = bytes[..bins_end].to_vec();
    let hash_leaves = u32_at(bytes, MINOR_VERSION_AT)? >= 5;

    // Every existing parent: its children (old and new) in Windows order.
    let mut layout = Layout::new(reader.bins_size as u32 + HBIN_HEADER_LEN as u32);
    let mut parents = Vec::new();
    for (&parent, new) in plan {
        if new.children.is_empty() {
            continue;
        }
        let old = reader.children(parent)?;
        let sk = u32_at(bytes, parent + NK_SECURITY)?;
        reader.cell(rel_to_file(sk), b"sk")?;
        let stamp = bytes[parent + NK_TIMESTAMP..parent + NK_TIMESTAMP + 8].to_vec();
        let mut entries: Vec<Entry> = old;
        for child in new.children.values() {
            let at = layout.plan_key(child);
            entries.push(Entry {
                key: sort_key(&child.name),
                name: child.name.clone(),
                offset: at,
            });
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        if entries.windows(2).any(|w| w[0].key == w[1].key) {
            return Err(Error::KeyExists);
        }
        let index = layout.plan_index(entries.len());
        parents.push((parent, new, entries, index, sk, stamp));
    }

    // The new bin: header, cells, and the rest of it free.
    let bin_start = reader.bins_size;
    let used = layout.next as usize - bin_start;
    let bin_len = used.div_ceil(4096) * 4096;
    let mut bin = vec![0u8; bin_len];
    bin[..4].copy_from_slice(b"hbin");
    put_u32(&mut bin, 4, bin_start as u32);
    put_u32(&mut bin, 8, bin_len as u32);
    if bin_len > used {
        put_u32(&mut bin, used, (bin_len - used) as u32);
    }
    let mut w = Writer {
        bin: &mut bin,
        start: bin_start as u32,
        hash_leaves,
    };
    // The keys come in the order they were planned in.
    let mut planned = layout.keys.iter();
    for (parent, new, entries, index, sk, stamp) in &parents {
        for child in new.children.values() {
            let parent = (*parent - BASE_BLOCK_LEN) as u32;
            w.write_key(child, parent, *sk, stamp, &mut planned)?;
        }
        w.write_index(entries, index);
        // The old index cells are free now; the parent points at the new one.
        for cell in reader.index_cells(*parent)? {
            let len = i32_at(&out, cell)?.unsigned_abs();
            put_u32(&mut out, cell, len);
        }
        let p = *parent;
        put_u32(&mut out, p + NK_SUBKEYS, entries.len() as u32);
        put_u32(&mut out, p + NK_SUBKEY_LIST, index.top);
        let longest = entries.iter().map(|e| e.key.len() * 2).max().unwrap_or(0) as u16;
        let old = u16::from_le_bytes([out[p + NK_MAX_NAME], out[p + NK_MAX_NAME + 1]]);
        out[p + NK_MAX_NAME..p + NK_MAX_NAME + 2].copy_from_slice(&old.max(longest).to_le_bytes());
        // Each new key holds a reference to its (inherited) security cell.
        let sk_cell = rel_to_file(*sk);
        let refs = u32_at(&out, sk_cell + SK_REFCOUNT)?;
        put_u32(
            &mut out,
            sk_cell + SK_REFCOUNT,
            refs.saturating_add(new.count() as u32),
        );
    }
    out.extend_from_slice(&bin);
    put_u32(&mut out, BINS_SIZE_AT, (bin_start + bin_len) as u32);
    let sum = base_block_checksum(&out);
    put_u32(&mut out, super::CHECKSUM_OFFSET, sum);
    Ok(out)
}

/// The cells of one index: leaves of at most [`LEAF_MAX`] entries, and the index
/// root above them when there is more than one.
struct IndexCells {
    top: u32,
    leaves: Vec<u32>,
}

/// Where one new key went: its cell, its index, its children's cells.
struct Planned {
    at: u32,
    index: Option<IndexCells>,
    children: Vec<u32>,
}

/// Relative offsets handed out in the new bin, in order.
struct Layout {
    next: u32,
    /// Every new key, in the order planned: each before its children, depth first.
    keys: Vec<Planned>,
}

impl Layout {
    fn new(first: u32) -> Layout {
        Layout {
            next: first,
            keys: Vec::new(),
        }
    }

    fn alloc(&mut self, len: usize) -> u32 {
        let at = self.next;
        self.next += cell_len(len) as u32;
        at
    }

    /// Places `key`'s cell, and its children's cells and index; returns its cell.
    fn plan_key(&mut self, key: &NewKey) -> u32 {
        let at = self.alloc(NK_NAME - 4 + encode_name(&key.name).0.len());
        let slot = self.keys.len();
        self.keys.push(Planned {
            at,
            index: None,
            children: Vec::new(),
        });
        let children = key.children.values().map(|c| self.plan_key(c)).collect();
        let index = (!key.children.is_empty()).then(|| self.plan_index(key.children.len()));
        self.keys[slot].index = index;
        self.keys[slot].children = children;
        at
    }

    fn plan_index(&mut self, n: usize) -> IndexCells {
        let leaves: Vec<u32> = (0..n.div_ceil(LEAF_MAX))
            .map(|i| self.alloc(4 + 8 * (n - i * LEAF_MAX).min(LEAF_MAX)))
            .collect();
        let top = if leaves.len() == 1 {
            leaves[0]
        } else {
            self.alloc(4 + 4 * leaves.len())
        };
        IndexCells { top, leaves }
    }
}

/// Fills the new bin.
struct Writer<'b> {
    bin: &'b mut [u8],
    /// Relative offset of the bin's first byte.
    start: u32,
    hash_leaves: bool,
}

impl Writer<'_> {
    fn at(&self, rel: u32) -> usize {
        (rel - self.start) as usize
    }

    /// Marks the cell at `rel` allocated, `len` bytes of record after its size.
    fn cell(&mut self, rel: u32, len: usize) -> usize {
        let at = self.at(rel);
        put_u32(self.bin, at, (-(cell_len(len) as i32)) as u32);
        at
    }

    /// Writes `key` and the keys below it, taking their places from `planned` in
    /// the order [`Layout::plan_key`] made them.
    fn write_key<'p>(
        &mut self,
        key: &NewKey,
        parent: u32,
        sk: u32,
        stamp: &[u8],
        planned: &mut impl Iterator<Item = &'p Planned>,
    ) -> Result<()> {
        let place = planned.next().ok_or(Error::NotLaidOut)?;
        let me = place.at;
        let (name, compressed) = encode_name(&key.name);
        let c = self.cell(me, NK_NAME - 4 + name.len());
        self.bin[c + 4..c + 6].copy_from_slice(b"nk");
        let flags = if compressed { KEY_COMP_NAME } else { 0 };
        self.bin[c + NK_FLAGS..c + NK_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        self.bin[c + NK_TIMESTAMP..c + NK_TIMESTAMP + 8].copy_from_slice(stamp);
        put_u32(self.bin, c + NK_PARENT, parent);
        put_u32(self.bin, c + NK_SUBKEYS, key.children.len() as u32);
        put_u32(
            self.bin,
            c + NK_SUBKEY_LIST,
            place.index.as_ref().map_or(NO_CELL, |i| i.top),
        );
        put_u32(self.bin, c + NK_VOLATILE_LIST, NO_CELL);
        put_u32(self.bin, c + NK_VALUE_LIST, NO_CELL);
        put_u32(self.bin, c + NK_SECURITY, sk);
        put_u32(self.bin, c + NK_CLASS, NO_CELL);
        let longest = key.children.keys().map(|k| k.len() * 2).max().unwrap_or(0);
        put_u32(self.bin, c + NK_MAX_NAME, longest as u32);
        self.bin[c + NK_NAME_LEN..c + NK_NAME_LEN + 2]
            .copy_from_slice(&(name.len() as u16).to_le_bytes());
        self.bin[c + NK_NAME..c + NK_NAME + name.len()].copy_from_slice(&name);
        if let Some(index) = &place.index {
            let entries: Vec<Entry> = key
                .children
                .iter()
                .zip(&place.children)
                .map(|((k, child), &offset)| Entry {
                    key: k.clone(),
                    name: child.name.clone(),
                    offset,
                })
                .collect();
            self.write_index(&entries, index);
        }
        for child in key.children.values() {
            self.write_key(child, me, sk, stamp, planned)?;
        }
        Ok(())
    }

    fn write_index(&mut self, entries: &[Entry], index: &IndexCells) {
        for (leaf, chunk) in index.leaves.iter().zip(entries.chunks(LEAF_MAX)) {
            let c = self.cell(*leaf, 4 + 8 * chunk.len());
            self.bin[c + 4..c + 6].copy_from_slice(if self.hash_leaves { b"lh" } else { b"lf" });
            self.bin[c + 6..c + 8].copy_from_slice(&(chunk.len() as u16).to_le_bytes());
            for (i, e) in chunk.iter().enumerate() {
                let at = c + 8 + 8 * i;
                put_u32(self.bin, at, e.offset);
                let hint = if self.hash_leaves {
                    name_hash(&e.name).to_le_bytes()
                } else {
                    name_hint(&e.name)
                };
                self.bin[at + 4..at + 8].copy_from_slice(&hint);
            }
        }
        if index.leaves.len() > 1 {
            let c = self.cell(index.top, 4 + 4 * index.leaves.len());
            self.bin[c + 4..c + 6].copy_from_slice(b"ri");
            self.bin[c + 6..c + 8].copy_from_slice(&(index.leaves.len() as u16).to_le_bytes());
            for (i, leaf) in index.leaves.iter().enumerate() {
                put_u32(self.bin, c + 8 + 4 * i, *leaf);
            }
        }
    }
}

/// A fast leaf's hint: the name's first four characters (as bytes).
fn name_hint(name: &str) -> [u8; 4] {
    let mut hint = [0u8; 4];
    for (slot, u) in hint.iter_mut().zip(name.encode_utf16()) {
        *slot = u as u8;
    }
    hint
}

/// A key name as stored: Latin-1 bytes when every character fits (the
/// compressed form), else UTF-16LE.
fn encode_name(name: &str) -> (Vec<u8>, bool) {
    if name.chars().all(|c| (c as u32) < 0x100) {
        (name.chars().map(|c| c as u8).collect(), true)
    } else {
        (
            name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            false,
        )
    }
}

/// A cell's size for a record of `len` bytes: size field included, 8-aligned.
fn cell_len(len: usize) -> usize {
    (len + 4 + 7) & !7
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
