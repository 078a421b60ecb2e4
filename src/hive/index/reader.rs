//! Read-only walks over a hive's existing key cells and subkey indexes, every
//! offset bounds-checked, and [`audit`], which checks them against the rules
//! [`super`] writes by.

use super::{
    name_hash, sort_key, NK_FLAGS, NK_NAME, NK_NAME_LEN, NK_PARENT, NK_SUBKEYS, NK_SUBKEY_LIST,
};
use super::{BINS_SIZE_AT, KEY_COMP_NAME, NO_CELL, ROOT_CELL_AT, SK_REFCOUNT};
use crate::hive::BASE_BLOCK_LEN;

/// Why a hive's subkey indexes cannot be read, or do not follow Windows' rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("offset {at:#x} is outside the hive")]
    OutsideHive { at: usize },
    #[error("the bins data size does not match the file")]
    BinsSize,
    #[error("cell {at:#x} is outside the bins")]
    OutsideBins { at: usize },
    #[error("cell {at:#x} is not allocated")]
    Unallocated { at: usize },
    #[error("cell {at:#x} runs past the end")]
    PastEnd { at: usize },
    #[error("cell {at:#x} is not a {} cell", String::from_utf8_lossy(.want))]
    WrongCell { at: usize, want: [u8; 2] },
    #[error("cell {at:#x} is too short for a {} record", String::from_utf8_lossy(.id))]
    Short { at: usize, id: [u8; 2] },
    #[error("cell {at:#x} is not a subkey index")]
    NotAnIndex { at: usize },
    #[error("key {at:#x}: its index and subkey count differ")]
    CountDiffers { at: usize },
    #[error("key {at:#x}: name runs past its cell")]
    NamePastCell { at: usize },
    #[error("a key to add exists already")]
    KeyExists,
    #[error("a new key was not laid out")]
    NotLaidOut,
    #[error("key {name:?}: hash {stored:#010x} stored, {computed:#010x} computed")]
    WrongHash {
        name: String,
        stored: u32,
        computed: u32,
    },
    #[error("subkeys {first:?} and {second:?} are out of order")]
    OutOfOrder { first: String, second: String },
    #[error("key {name:?} is listed twice under one key")]
    Duplicate { name: String },
    #[error("key {name:?} ({at:#x}) is listed under two keys, or under itself")]
    Shared { name: String, at: usize },
    #[error("key {name:?} ({at:#x}) names {stored:#x} as its parent, not the key listing it")]
    WrongParent {
        name: String,
        at: usize,
        stored: usize,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// One child in an index: its sort key, name and cell (relative offset).
pub(super) struct Entry {
    pub key: Vec<u16>,
    pub name: String,
    pub offset: u32,
}

pub(super) fn rel_to_file(rel: u32) -> usize {
    rel as usize + BASE_BLOCK_LEN
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4")))
        .ok_or(Error::OutsideHive { at })
}

pub(super) fn i32_at(b: &[u8], at: usize) -> Result<i32> {
    u32_at(b, at).map(|v| v as i32)
}

/// The existing cells of one hive.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    pub bins_size: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Reader<'a>> {
        let bins_size = u32_at(bytes, BINS_SIZE_AT)? as usize;
        if bytes.len() < BASE_BLOCK_LEN + bins_size || bins_size % 4096 != 0 {
            return Err(Error::BinsSize);
        }
        Ok(Reader { bytes, bins_size })
    }

    /// The file offset of the root key's cell.
    pub fn root(&self) -> Result<usize> {
        Ok(rel_to_file(u32_at(self.bytes, ROOT_CELL_AT)?))
    }

    /// The allocated cell at file offset `at`, checked to hold `id`; its record.
    pub fn cell(&self, at: usize, id: &[u8; 2]) -> Result<&'a [u8]> {
        let record = self.raw(at)?;
        if record.len() < 2 || &record[..2] != id {
            return Err(Error::WrongCell { at, want: *id });
        }
        // The fixed part every reader here indexes into directly.
        let fixed = match id {
            b"nk" => NK_NAME - 4,
            b"sk" => SK_REFCOUNT,
            _ => 4,
        };
        if record.len() < fixed {
            return Err(Error::Short { at, id: *id });
        }
        Ok(record)
    }

    /// The allocated cell at file offset `at`, whatever it holds (a value list,
    /// value data): its bytes after the size.
    pub fn raw(&self, at: usize) -> Result<&'a [u8]> {
        if at < BASE_BLOCK_LEN || at >= BASE_BLOCK_LEN + self.bins_size {
            return Err(Error::OutsideBins { at });
        }
        let size = i32_at(self.bytes, at)?;
        if size >= 0 {
            return Err(Error::Unallocated { at });
        }
        let end = at + size.unsigned_abs() as usize;
        self.bytes.get(at + 4..end).ok_or(Error::PastEnd { at })
    }

    /// The two-letter id of the record at file offset `at` (not checked further).
    fn id(&self, at: usize) -> Result<&'a [u8]> {
        self.bytes
            .get(at + 4..at + 6)
            .ok_or(Error::OutsideHive { at })
    }

    /// The index cells of the key at `nk` (leaves and root), none when it has no
    /// subkeys.
    pub fn index_cells(&self, nk: usize) -> Result<Vec<usize>> {
        let record = self.cell(nk, b"nk")?;
        let count = u32_at(record, NK_SUBKEYS - 4)?;
        let list = u32_at(record, NK_SUBKEY_LIST - 4)?;
        if count == 0 || list == NO_CELL {
            return Ok(Vec::new());
        }
        let top = rel_to_file(list);
        let mut cells = vec![top];
        let size = i32_at(self.bytes, top)?;
        if size < 0 && self.id(top)? == b"ri" {
            let ri = self.cell(top, b"ri")?;
            let n = u16::from_le_bytes([ri[2], ri[3]]) as usize;
            for i in 0..n {
                cells.push(rel_to_file(u32_at(ri, 4 + 4 * i)?));
            }
        }
        Ok(cells)
    }

    /// The existing children of the key at `nk`, with their names.
    pub fn children(&self, nk: usize) -> Result<Vec<Entry>> {
        self.each_child(nk, |offset| {
            let name = self.name(rel_to_file(offset))?;
            Ok(Entry {
                key: sort_key(&name),
                name,
                offset,
            })
        })
    }

    /// The existing children of the key at `nk` as (sort key, cell): what a walk
    /// over every key needs, without a name string per key (a plain ASCII name,
    /// nearly every one, is folded straight from its bytes).
    pub fn child_keys(&self, nk: usize) -> Result<Vec<(Vec<u16>, u32)>> {
        self.each_child(nk, |offset| {
            let at = rel_to_file(offset);
            let record = self.cell(at, b"nk")?;
            let flags = u16::from_le_bytes([record[NK_FLAGS - 4], record[NK_FLAGS - 3]]);
            let len =
                u16::from_le_bytes([record[NK_NAME_LEN - 4], record[NK_NAME_LEN - 3]]) as usize;
            let raw = record
                .get(NK_NAME - 4..NK_NAME - 4 + len)
                .ok_or(Error::NamePastCell { at })?;
            let key = if flags & KEY_COMP_NAME != 0 && raw.is_ascii() {
                raw.iter().map(|b| b.to_ascii_uppercase() as u16).collect()
            } else {
                sort_key(&self.name(at)?)
            };
            Ok((key, offset))
        })
    }

    /// `f` of every child cell (relative offset) listed in `nk`'s index, in
    /// order; the count checked against the key's.
    fn each_child<T>(&self, nk: usize, mut f: impl FnMut(u32) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for cell in self.index_cells(nk)? {
            let id = self.id(cell)?;
            let (stride, record) = match id {
                b"lf" | b"lh" => (8, self.cell(cell, id.try_into().expect("2"))?),
                b"li" => (4, self.cell(cell, b"li")?),
                b"ri" => continue,
                _ => return Err(Error::NotAnIndex { at: cell }),
            };
            let n = u16::from_le_bytes([record[2], record[3]]) as usize;
            for i in 0..n {
                out.push(f(u32_at(record, 4 + stride * i)?)?);
            }
        }
        let record = self.cell(nk, b"nk")?;
        if out.len() != u32_at(record, NK_SUBKEYS - 4)? as usize {
            return Err(Error::CountDiffers { at: nk });
        }
        Ok(out)
    }

    /// The name of the key whose cell is at `nk`.
    pub fn name(&self, nk: usize) -> Result<String> {
        let record = self.cell(nk, b"nk")?;
        let flags = u16::from_le_bytes([record[NK_FLAGS - 4], record[NK_FLAGS - 3]]);
        let len = u16::from_le_bytes([record[NK_NAME_LEN - 4], record[NK_NAME_LEN - 3]]) as usize;
        let raw = record
            .get(NK_NAME - 4..NK_NAME - 4 + len)
            .ok_or(Error::NamePastCell { at: nk })?;
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
/// [`super`] writes by: entries in Windows order (upper-cased UTF-16, no two
/// equal), hash-leaf hashes equal to [`name_hash`], counts equal to the key's;
/// and the tree itself: every key listed once, under the key its parent link
/// names, every cell inside the bins.
/// Run on hives Windows wrote, it checks those rules against Windows.
pub fn audit(bytes: &[u8]) -> Result<Audit> {
    walk(bytes, true)
}

/// The tree alone, as a writer needs it sound: every key listed once, under the
/// key its parent link names, no two subkeys of one key with one name, every
/// cell inside the bins and counts that agree. Hash values and the order of
/// index entries are left to [`audit`]: other tools (libhivex among them) write
/// them their own way, and Windows reads such hives.
pub fn check_structure(bytes: &[u8]) -> Result<Audit> {
    walk(bytes, false)
}

fn walk(bytes: &[u8], strict: bool) -> Result<Audit> {
    let reader = Reader::new(bytes)?;
    let mut audit = Audit::default();
    let root = reader.root()?;
    let mut seen = std::collections::HashSet::from([root]);
    let mut todo = vec![root];
    while let Some(nk) = todo.pop() {
        audit.keys += 1;
        for cell in reader.index_cells(nk)? {
            match reader.id(cell)? {
                b"ri" => audit.index_roots += 1,
                b"lh" => {
                    let record = reader.cell(cell, b"lh")?;
                    let n = u16::from_le_bytes([record[2], record[3]]) as usize;
                    audit.hash_leaves += 1;
                    audit.largest_leaf = audit.largest_leaf.max(n);
                    // Hashes are Windows' rule, checked by the strict audit only.
                    for i in (0..n).filter(|_| strict) {
                        let offset = u32_at(record, 4 + 8 * i)?;
                        let stored = u32_at(record, 8 + 8 * i)?;
                        let name = reader.name(rel_to_file(offset))?;
                        let computed = name_hash(&name);
                        if strict && stored != computed {
                            return Err(Error::WrongHash {
                                name,
                                stored,
                                computed,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if !strict {
            let children = reader.child_keys(nk)?;
            let mut names = std::collections::HashSet::new();
            if let Some((_, offset)) = children.iter().find(|(k, _)| !names.insert(k)) {
                return Err(Error::Duplicate {
                    name: reader.name(rel_to_file(*offset))?,
                });
            }
            for (_, offset) in &children {
                visit(&reader, nk, *offset, &mut seen, &mut todo)?;
            }
            continue;
        }
        // Strict: Windows' order, which also rules out two of one name.
        let children = reader.children(nk)?;
        if let Some(w) = children.windows(2).find(|w| w[0].key >= w[1].key) {
            if w[0].key == w[1].key {
                return Err(Error::Duplicate {
                    name: w[1].name.clone(),
                });
            }
            return Err(Error::OutOfOrder {
                first: w[0].name.clone(),
                second: w[1].name.clone(),
            });
        }
        for c in &children {
            visit(&reader, nk, c.offset, &mut seen, &mut todo)?;
        }
    }
    Ok(audit)
}

/// Checks the child at `offset` of the key at `nk` and queues it: each key once
/// (a key listed under two keys, or looping back up, is damage, and would make
/// the walk endless), its parent link naming `nk`.
fn visit(
    reader: &Reader,
    nk: usize,
    offset: u32,
    seen: &mut std::collections::HashSet<usize>,
    todo: &mut Vec<usize>,
) -> Result<()> {
    let at = rel_to_file(offset);
    if !seen.insert(at) {
        return Err(Error::Shared {
            name: reader.name(at)?,
            at,
        });
    }
    let stored = rel_to_file(u32_at(reader.cell(at, b"nk")?, NK_PARENT - 4)?);
    if stored != nk {
        return Err(Error::WrongParent {
            name: reader.name(at)?,
            at,
            stored,
        });
    }
    todo.push(at);
    Ok(())
}
