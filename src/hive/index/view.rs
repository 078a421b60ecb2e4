//! Reading a hive without libhivex: keys and values straight from its bytes,
//! every offset bounds-checked. What every read-only look at a hive uses
//! (finding Windows, inspecting, planning, verifying): no temporary copy, no
//! parse of the whole file up front, so a look at three values of an 11 MiB
//! SYSTEM hive costs the cells on their path.

use super::reader::{rel_to_file, u32_at, Reader};
use super::{NK_VALUE_LIST, NO_CELL};
use crate::hive::{fold_name, Error, HeaderState, RegValue, Result};
use std::cell::RefCell;
use std::collections::HashMap;

/// Key node: the value count lies just before the value list.
const NK_VALUES: usize = NK_VALUE_LIST - 4;
/// Value record fields, from the start of the record (after the cell size).
const VK_NAME_LEN: usize = 2;
const VK_DATA_SIZE: usize = 4;
const VK_DATA: usize = 8;
const VK_TYPE: usize = 12;
const VK_FLAGS: usize = 16;
const VK_NAME: usize = 20;
const VALUE_COMP_NAME: u16 = 0x0001;
/// Data kept in the data field itself (size's top bit).
const DATA_INLINE: u32 = 0x8000_0000;
/// Data larger than this is split into `db` segments (hive format 1.4 on).
const BIG_DATA_SEGMENT: usize = 16344;

/// A hive opened to be read: its bytes (borrowed, or owned), and lookups
/// cached per key.
pub struct View<'a> {
    name: String,
    bytes: std::borrow::Cow<'a, [u8]>,
    /// Why the hive is dirty, when it is: a body that cannot be read is then
    /// one a write was cut off in.
    dirty: Option<String>,
    /// Each key's subkeys by folded name (the first of two equal names wins).
    children: RefCell<HashMap<usize, HashMap<String, usize>>>,
    last_key: RefCell<Option<(String, usize)>>,
}

impl<'a> View<'a> {
    /// Opens `bytes` as a hive, reading them where they are; `name` names it in
    /// errors (e.g. `SYSTEM`).
    pub fn open(name: &str, bytes: &'a [u8]) -> Result<View<'a>> {
        Self::new(name, std::borrow::Cow::Borrowed(bytes))
    }

    /// [`View::open`] on bytes it keeps.
    pub fn owned(name: &str, bytes: Vec<u8>) -> Result<View<'static>> {
        View::new(name, std::borrow::Cow::Owned(bytes))
    }

    fn new(name: &str, bytes: std::borrow::Cow<'a, [u8]>) -> Result<View<'a>> {
        let state = HeaderState::parse(name, &bytes)?;
        let view = View {
            name: name.to_owned(),
            bytes,
            dirty: state.dirty_reason(),
            children: RefCell::default(),
            last_key: RefCell::default(),
        };
        // The root key must read, as libhivex requires to open a hive at all.
        let reader = view.reader("")?;
        let root = reader.root().map_err(|e| view.open_err(e))?;
        reader.name(root).map_err(|e| view.open_err(e))?;
        Ok(view)
    }

    fn open_err(&self, e: super::Error) -> Error {
        match &self.dirty {
            Some(reason) => Error::NeedsRepair {
                name: self.name.clone(),
                reason: reason.clone(),
            },
            None => Error::Open {
                name: self.name.clone(),
                reason: e.to_string(),
            },
        }
    }

    fn read_err(&self, path: &str, e: impl std::fmt::Display) -> Error {
        match &self.dirty {
            Some(reason) => Error::NeedsRepair {
                name: self.name.clone(),
                reason: reason.clone(),
            },
            None => Error::Read {
                name: self.name.clone(),
                path: path.to_owned(),
                reason: e.to_string(),
            },
        }
    }

    fn reader(&self, path: &str) -> Result<Reader<'_>> {
        Reader::new(&self.bytes).map_err(|e| {
            if path.is_empty() {
                self.open_err(e)
            } else {
                self.read_err(path, e)
            }
        })
    }

    fn child(&self, reader: &Reader, nk: usize, name: &str, path: &str) -> Result<Option<usize>> {
        let mut cache = self.children.borrow_mut();
        let map = match cache.entry(nk) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut map = HashMap::new();
                for c in reader.children(nk).map_err(|e| self.read_err(path, e))? {
                    map.entry(fold_name(&c.name))
                        .or_insert(rel_to_file(c.offset));
                }
                e.insert(map)
            }
        };
        Ok(map.get(&fold_name(name)).copied())
    }

    fn key(&self, path: &str) -> Result<Option<usize>> {
        if let Some((last, nk)) = &*self.last_key.borrow() {
            if last == path {
                return Ok(Some(*nk));
            }
        }
        let reader = self.reader(path)?;
        let mut nk = reader.root().map_err(|e| self.read_err(path, e))?;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match self.child(&reader, nk, part, path)? {
                Some(next) => nk = next,
                None => return Ok(None),
            }
        }
        *self.last_key.borrow_mut() = Some((path.to_owned(), nk));
        Ok(Some(nk))
    }

    /// Whether the key at `path` (relative to the hive's root) exists.
    pub fn has_key(&self, path: &str) -> Result<bool> {
        Ok(self.key(path)?.is_some())
    }

    /// The value `name` (`""` for the default value) of key `path`, if both exist.
    pub fn value(&self, path: &str, name: &str) -> Result<Option<RegValue>> {
        let wanted = fold_name(name);
        Ok(self
            .values(path)?
            .into_iter()
            .find(|(n, _)| fold_name(n) == wanted)
            .map(|(_, v)| v))
    }

    /// Every value under the key at `path`, as (name, value), in hive order.
    pub fn values(&self, path: &str) -> Result<Vec<(String, RegValue)>> {
        let Some(nk) = self.key(path)? else {
            return Ok(Vec::new());
        };
        let reader = self.reader(path)?;
        let bad = |e: super::Error| self.read_err(path, e);
        let record = reader.cell(nk, b"nk").map_err(bad)?;
        let count = u32_at(record, NK_VALUES - 4).map_err(bad)? as usize;
        let list = u32_at(record, NK_VALUE_LIST - 4).map_err(bad)?;
        if count == 0 || list == NO_CELL {
            return Ok(Vec::new());
        }
        let offsets = reader.raw(rel_to_file(list)).map_err(bad)?;
        if offsets.len() < count * 4 {
            return Err(self.read_err(path, "its value list is shorter than its value count"));
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let vk = rel_to_file(u32_at(offsets, 4 * i).map_err(bad)?);
            out.push(self.value_at(&reader, vk, path)?);
        }
        Ok(out)
    }

    fn value_at(&self, reader: &Reader, vk: usize, path: &str) -> Result<(String, RegValue)> {
        let bad = |e: super::Error| self.read_err(path, e);
        let record = reader.cell(vk, b"vk").map_err(bad)?;
        if record.len() < VK_NAME {
            return Err(self.read_err(path, format!("value cell {vk:#x} is too short")));
        }
        let u16_at = |at: usize| u16::from_le_bytes([record[at], record[at + 1]]);
        let name_len = u16_at(VK_NAME_LEN) as usize;
        let raw_name = record.get(VK_NAME..VK_NAME + name_len).ok_or_else(|| {
            self.read_err(path, format!("value {vk:#x}: name runs past its cell"))
        })?;
        let name = if u16_at(VK_FLAGS) & VALUE_COMP_NAME != 0 {
            raw_name.iter().map(|&b| b as char).collect()
        } else {
            let units: Vec<u16> = raw_name
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        };
        let size = u32_at(record, VK_DATA_SIZE).map_err(bad)?;
        let kind = u32_at(record, VK_TYPE).map_err(bad)?;
        let field = &record[VK_DATA..VK_DATA + 4];
        let data = if size & DATA_INLINE != 0 {
            let len = (size & !DATA_INLINE) as usize;
            if len > 4 {
                return Err(
                    self.read_err(path, format!("value {name:?}: inline data of {len} bytes"))
                );
            }
            field[..len].to_vec()
        } else if size == 0 {
            Vec::new()
        } else {
            let len = size as usize;
            let at = rel_to_file(u32::from_le_bytes(field.try_into().expect("4")));
            let cell = reader.raw(at).map_err(bad)?;
            if len > BIG_DATA_SEGMENT && cell.get(..2) == Some(b"db") {
                self.big_data(reader, cell, len, &name, path)?
            } else {
                cell.get(..len)
                    .ok_or_else(|| {
                        self.read_err(path, format!("value {name:?}: data runs past its cell"))
                    })?
                    .to_vec()
            }
        };
        Ok((name, RegValue { kind, data }))
    }

    /// Data split into `db` segments: a count, then the list of segment cells.
    fn big_data(
        &self,
        reader: &Reader,
        db: &[u8],
        len: usize,
        name: &str,
        path: &str,
    ) -> Result<Vec<u8>> {
        let bad = |e: super::Error| self.read_err(path, e);
        if db.len() < 8 {
            return Err(self.read_err(path, format!("value {name:?}: big data record too short")));
        }
        let segments = u16::from_le_bytes([db[2], db[3]]) as usize;
        let list = reader
            .raw(rel_to_file(u32_at(db, 4).map_err(bad)?))
            .map_err(bad)?;
        let mut out = Vec::with_capacity(len);
        for i in 0..segments {
            if out.len() >= len {
                break;
            }
            let seg = reader
                .raw(rel_to_file(u32_at(list, 4 * i).map_err(bad)?))
                .map_err(bad)?;
            let take = (len - out.len()).min(BIG_DATA_SEGMENT).min(seg.len());
            out.extend_from_slice(&seg[..take]);
        }
        if out.len() != len {
            return Err(self.read_err(
                path,
                format!("value {name:?}: big data holds less than its size"),
            ));
        }
        Ok(out)
    }

    /// The names of the subkeys of the key at `path`, in index order.
    pub fn subkeys(&self, path: &str) -> Result<Vec<String>> {
        let Some(nk) = self.key(path)? else {
            return Ok(Vec::new());
        };
        let reader = self.reader(path)?;
        Ok(reader
            .children(nk)
            .map_err(|e| self.read_err(path, e))?
            .into_iter()
            .map(|c| c.name)
            .collect())
    }
}
