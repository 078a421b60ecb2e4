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

#![forbid(unsafe_code)]

use super::{base_block_checksum, BASE_BLOCK_LEN};
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
#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub name: String,
    pub children: BTreeMap<Vec<u16>, NewKey>,
}

impl NewKey {
    /// Adds the path `names` below this key (the missing part of a key path).
    pub fn insert(&mut self, names: &[&str]) {
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
/// An error only when a name is not ASCII and the indexes cannot be read.
pub fn lay_out_new_keys<'p>(
    bytes: &[u8],
    paths: impl IntoIterator<Item = &'p str>,
    min_keys: usize,
) -> Result<Option<LaidOut>, String> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let attempt = || -> Result<Option<LaidOut>, String> {
        let mut non_ascii = false;
        let reader = Reader::new(bytes)?;
        let root = rel_to_file(u32_at(bytes, ROOT_CELL_AT)?);
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
        Ok(done) => Ok(done),
        // Which keys are new is not known then: any name outside ASCII refuses.
        Err(reason) if paths.iter().any(|p| !p.is_ascii()) => Err(format!(
            "cannot add keys named outside ASCII: the subkey indexes do not read as \
             Windows writes them ({reason})"
        )),
        // Indexes this cannot read: libhivex adds the keys one by one.
        Err(_) => Ok(None),
    }
}

/// The hive's bytes with every key of `plan` added below the existing key whose
/// cell starts at file offset `parent`. The caller has checked that none exists.
pub fn add_subkeys(bytes: &[u8], plan: &BTreeMap<usize, NewKey>) -> Result<Vec<u8>, String> {
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
            return Err("a key to add exists already".into());
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
    for (parent, new, entries, index, sk, stamp) in &parents {
        for child in new.children.values() {
            w.write_key(
                child,
                (*parent - BASE_BLOCK_LEN) as u32,
                *sk,
                stamp,
                &layout,
            )?;
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

/// One child in an index: its sort key, name and cell (relative offset).
struct Entry {
    key: Vec<u16>,
    name: String,
    offset: u32,
}

/// The cells of one index: leaves of at most [`LEAF_MAX`] entries, and the index
/// root above them when there is more than one.
#[derive(Clone)]
struct IndexCells {
    top: u32,
    leaves: Vec<u32>,
}

/// Relative offsets handed out in the new bin, in order.
struct Layout {
    next: u32,
    /// Per new key (by the address of its plan entry): its cell and index.
    keys: BTreeMap<*const NewKey, (u32, Option<IndexCells>)>,
}

impl Layout {
    fn new(first: u32) -> Layout {
        Layout {
            next: first,
            keys: BTreeMap::new(),
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
        for child in key.children.values() {
            self.plan_key(child);
        }
        let index = (!key.children.is_empty()).then(|| self.plan_index(key.children.len()));
        self.keys.insert(key as *const NewKey, (at, index));
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

    fn write_key(
        &mut self,
        key: &NewKey,
        parent: u32,
        sk: u32,
        stamp: &[u8],
        layout: &Layout,
    ) -> Result<(), String> {
        let (me, index) = layout
            .keys
            .get(&(key as *const NewKey))
            .cloned()
            .ok_or("a new key was not laid out")?;
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
            index.as_ref().map_or(NO_CELL, |i| i.top),
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
        if let Some(index) = index {
            let entries: Vec<Entry> = key
                .children
                .iter()
                .map(|(k, child)| {
                    let at = layout.keys[&(child as *const NewKey)].0;
                    Entry {
                        key: k.clone(),
                        name: child.name.clone(),
                        offset: at,
                    }
                })
                .collect();
            self.write_index(&entries, &index);
        }
        for child in key.children.values() {
            self.write_key(child, me, sk, stamp, layout)?;
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

fn rel_to_file(rel: u32) -> usize {
    rel as usize + BASE_BLOCK_LEN
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4")))
        .ok_or_else(|| format!("offset {at:#x} is outside the hive"))
}

fn i32_at(b: &[u8], at: usize) -> Result<i32, String> {
    u32_at(b, at).map(|v| v as i32)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Read-only walks over the existing cells, every offset bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    bins_size: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Reader<'a>, String> {
        let bins_size = u32_at(bytes, BINS_SIZE_AT)? as usize;
        if bytes.len() < BASE_BLOCK_LEN + bins_size || bins_size % 4096 != 0 {
            return Err("the bins data size does not match the file".into());
        }
        Ok(Reader { bytes, bins_size })
    }

    /// The allocated cell at file offset `at`, checked to hold `id`; its record.
    fn cell(&self, at: usize, id: &[u8; 2]) -> Result<&'a [u8], String> {
        if at < BASE_BLOCK_LEN || at >= BASE_BLOCK_LEN + self.bins_size {
            return Err(format!("cell {at:#x} is outside the bins"));
        }
        let size = i32_at(self.bytes, at)?;
        if size >= 0 {
            return Err(format!("cell {at:#x} is not allocated"));
        }
        let end = at + size.unsigned_abs() as usize;
        let record = self
            .bytes
            .get(at + 4..end)
            .ok_or_else(|| format!("cell {at:#x} runs past the end"))?;
        if record.len() < 2 || &record[..2] != id {
            return Err(format!(
                "cell {at:#x} is not a {} cell",
                String::from_utf8_lossy(id)
            ));
        }
        Ok(record)
    }

    /// The index cells of the key at `nk` (leaves and root), none when it has no
    /// subkeys.
    fn index_cells(&self, nk: usize) -> Result<Vec<usize>, String> {
        let record = self.cell(nk, b"nk")?;
        let count = u32_at(record, NK_SUBKEYS - 4)?;
        let list = u32_at(record, NK_SUBKEY_LIST - 4)?;
        if count == 0 || list == NO_CELL {
            return Ok(Vec::new());
        }
        let top = rel_to_file(list);
        let mut cells = vec![top];
        let size = i32_at(self.bytes, top)?;
        if size < 0 && self.bytes.get(top + 4..top + 6) == Some(b"ri") {
            let ri = self.cell(top, b"ri")?;
            let n = u16::from_le_bytes([ri[2], ri[3]]) as usize;
            for i in 0..n {
                cells.push(rel_to_file(u32_at(ri, 4 + 4 * i)?));
            }
        }
        Ok(cells)
    }

    /// The existing children of the key at `nk`, with their names.
    fn children(&self, nk: usize) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        for cell in self.index_cells(nk)? {
            let id = self
                .bytes
                .get(cell + 4..cell + 6)
                .ok_or("index out of range")?;
            let (stride, record) = match id {
                b"lf" | b"lh" => (8, self.cell(cell, id.try_into().expect("2"))?),
                b"li" => (4, self.cell(cell, b"li")?),
                b"ri" => continue,
                _ => return Err(format!("cell {cell:#x} is not a subkey index")),
            };
            let n = u16::from_le_bytes([record[2], record[3]]) as usize;
            for i in 0..n {
                let offset = u32_at(record, 4 + stride * i)?;
                let name = self.name(rel_to_file(offset))?;
                out.push(Entry {
                    key: sort_key(&name),
                    name,
                    offset,
                });
            }
        }
        let record = self.cell(nk, b"nk")?;
        if out.len() != u32_at(record, NK_SUBKEYS - 4)? as usize {
            return Err(format!("key {nk:#x}: its index and subkey count differ"));
        }
        Ok(out)
    }

    /// The name of the key whose cell is at `nk`.
    fn name(&self, nk: usize) -> Result<String, String> {
        let record = self.cell(nk, b"nk")?;
        let flags = u16::from_le_bytes([record[NK_FLAGS - 4], record[NK_FLAGS - 3]]);
        let len = u16::from_le_bytes([record[NK_NAME_LEN - 4], record[NK_NAME_LEN - 3]]) as usize;
        let raw = record
            .get(NK_NAME - 4..NK_NAME - 4 + len)
            .ok_or_else(|| format!("key {nk:#x}: name runs past its cell"))?;
        Ok(if flags & KEY_COMP_NAME != 0 {
            raw.iter().map(|&b| b as char).collect()
        } else {
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        })
    }
}

/// What [`audit`] found in a hive's subkey indexes.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    pub keys: usize,
    pub hash_leaves: usize,
    pub index_roots: usize,
    pub largest_leaf: usize,
}

/// Walks every key from the root and checks each subkey index against the rules
/// this module writes by: entries in Windows order (upper-cased UTF-16, no two
/// equal), hash-leaf hashes equal to [`name_hash`], counts equal to the key's.
/// Run on hives Windows wrote, it checks those rules against Windows.
pub fn audit(bytes: &[u8]) -> Result<Audit, String> {
    let reader = Reader::new(bytes)?;
    let mut audit = Audit::default();
    let mut todo = vec![rel_to_file(u32_at(bytes, ROOT_CELL_AT)?)];
    while let Some(nk) = todo.pop() {
        audit.keys += 1;
        let cells = reader.index_cells(nk)?;
        for &cell in &cells {
            let record_id = bytes.get(cell + 4..cell + 6).ok_or("index out of range")?;
            if record_id == b"ri" {
                audit.index_roots += 1;
                continue;
            }
            if record_id == b"lh" {
                let record = reader.cell(cell, b"lh")?;
                let n = u16::from_le_bytes([record[2], record[3]]) as usize;
                audit.hash_leaves += 1;
                audit.largest_leaf = audit.largest_leaf.max(n);
                for i in 0..n {
                    let offset = u32_at(record, 4 + 8 * i)?;
                    let stored = u32_at(record, 8 + 8 * i)?;
                    let name = reader.name(rel_to_file(offset))?;
                    if stored != name_hash(&name) {
                        return Err(format!(
                            "key {name:?}: hash {stored:#010x} stored, {:#010x} computed",
                            name_hash(&name)
                        ));
                    }
                }
            }
        }
        let children = reader.children(nk)?;
        for w in children.windows(2) {
            if w[0].key >= w[1].key {
                return Err(format!(
                    "subkeys {:?} and {:?} are out of order",
                    w[0].name, w[1].name
                ));
            }
        }
        todo.extend(children.iter().map(|c| rel_to_file(c.offset)));
    }
    Ok(audit)
}
