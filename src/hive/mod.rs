//! One registry hive: header checks, and reading through hivex on a temporary copy.
//!
//! The hive's bytes come from (and go back to) the NTFS layer; hivex works on a
//! `tempfile`. Registry key names are case-insensitive, so lookups here are too.
//! This module may not touch NTFS or images: it sees bytes only.

#![deny(clippy::undocumented_unsafe_blocks)]

mod error;
mod header;
pub mod index;
pub mod marvin;
pub mod replay;

pub use error::{Error, Result};
use header::{base_block_checksum, CHECKSUM_OFFSET};
pub use header::{HeaderState, BASE_BLOCK_LEN};
pub use index::View;

use hivex::{Hive as HivexHandle, OpenFlags};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

/// A registry name as Windows compares names: each UTF-16 unit upper-cased on its
/// own, by the simple case mapping (`ß` stays `ß`, where `str::to_uppercase`
/// gives `SS` and would merge two names Windows keeps apart); characters outside
/// the BMP (surrogate pairs) are left as they are.
pub fn fold_name(name: &str) -> String {
    if name.is_ascii() {
        return name.to_ascii_uppercase();
    }
    name.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) if (c as u32) < 0x10000 && (u as u32) < 0x10000 => u,
                _ => c,
            }
        })
        .collect()
}

/// Whether `file` (any case) is one of `hive`'s transaction logs: `HIVE.LOG`
/// (NT 5.x), `HIVE.LOG1` and `HIVE.LOG2` (Vista and later).
pub fn is_log_of(hive: &str, file: &str) -> bool {
    file.split_once('.').is_some_and(|(stem, ext)| {
        stem.eq_ignore_ascii_case(hive)
            && ["LOG", "LOG1", "LOG2"]
                .iter()
                .any(|x| ext.eq_ignore_ascii_case(x))
    })
}

/// [`Hive::open_write_with_keys`] lays keys out itself from this many new keys on.
pub const LAY_OUT_MIN_KEYS: usize = 64;

/// Hive copies live in the temporary folder as `wingold-hive-PID-…`.
const HIVE_TEMP_PREFIX: &str = "wingold-hive-";

/// The largest value data libhivex writes: one block of at most 1,000,000 bytes
/// (its HIVEX_MAX_ALLOCATION) holding a 4-byte size and the data (found by trying).
pub const MAX_VALUE_DATA: usize = 999_996;

/// Registry value types (winnt.h `REG_*`).
pub mod types {
    pub const REG_NONE: u32 = 0;
    pub const REG_SZ: u32 = 1;
    pub const REG_EXPAND_SZ: u32 = 2;
    pub const REG_BINARY: u32 = 3;
    pub const REG_DWORD: u32 = 4;
    pub const REG_MULTI_SZ: u32 = 7;
    pub const REG_QWORD: u32 = 11;
}

/// A value's type and raw bytes, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegValue {
    pub kind: u32,
    pub data: Vec<u8>,
}

impl RegValue {
    /// A REG_SZ / REG_EXPAND_SZ as text (UTF-16LE, up to the first NUL).
    pub fn as_string(&self) -> Option<String> {
        if self.kind != types::REG_SZ && self.kind != types::REG_EXPAND_SZ {
            return None;
        }
        let units: Vec<u16> = self
            .data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(String::from_utf16_lossy(&units))
    }

    /// A REG_DWORD's number.
    pub fn as_dword(&self) -> Option<u32> {
        (self.kind == types::REG_DWORD && self.data.len() == 4)
            .then(|| u32::from_le_bytes(self.data[..4].try_into().expect("4")))
    }
}

/// An open hive, staged in a temporary file for hivex. Writes stay in hivex's
/// memory until [`Hive::commit`], which returns the new bytes; dropping the hive
/// discards them.
pub struct Hive {
    name: String,
    handle: HivexHandle,
    file: tempfile::NamedTempFile,
    writable: bool,
    /// Each key's subkeys by folded name, read once: finding a child is then one
    /// lookup, not a walk over thousands of siblings.
    children: RefCell<HashMap<NodeH, HashMap<String, NodeH>>>,
    /// Value lists being edited, written back once per key (in node order, so the
    /// result is deterministic): libhivex rewrites a key's whole value list on every
    /// set, which made N sets into one key cost N² time and memory.
    pending: RefCell<BTreeMap<NodeH, Pending>>,
    /// Per key, the names of its subkeys that hold a NUL (libhivex would take
    /// `zero\0key` for `zero`); filled with `children`.
    nul_names: RefCell<HashMap<NodeH, Vec<String>>>,
    /// Folded paths of keys [`Hive::open_write_with_keys`] made that no edit has reached
    /// yet: the first `create_key` through one reports it as added.
    prepared: HashSet<String>,
    /// The last key path looked up and its node: edits come in runs on one key.
    last_key: RefCell<Option<(String, NodeH)>>,
    /// The last path `create_key` made sure of (it exists, its adds reported).
    last_created: Option<String>,
}

/// One key's values as edited so far; deleted ones are `None` until written.
#[derive(Default)]
struct Pending {
    values: Vec<Option<(String, RegValue)>>,
    index: HashMap<String, usize>,
}

impl Hive {
    /// Opens `bytes` as a hive; `name` names it in errors (e.g. `SYSTEM`).
    pub fn open_read(name: &str, bytes: &[u8]) -> Result<Hive> {
        Self::open(name, bytes, false)
    }

    /// Opens `bytes` for editing. A dirty hive (bad checksum, or sequence numbers
    /// that differ) is refused: hivex would silently "clean" it and lose what its
    /// logs hold (hivex's `lib/handle.c` neither reads nor resets the logs).
    pub fn open_write(name: &str, bytes: &[u8]) -> Result<Hive> {
        Self::open_write_with_keys(name, bytes, [])
    }

    /// [`Hive::open_write`], with every key of `paths` that does not exist yet (and
    /// its missing parents) laid out in the bytes first, all at once
    /// ([`index::lay_out_new_keys`]): libhivex adds keys one at a time at a cost
    /// that grows with the number of siblings. Fewer than [`LAY_OUT_MIN_KEYS`] new
    /// keys, all named in ASCII, are left to libhivex, and so are keys beside a
    /// sibling whose name holds a NUL. The keys laid out count as added by the first
    /// edit that reaches them, so reports read as if each edit had made its own.
    pub fn open_write_with_keys<'p>(
        name: &str,
        bytes: &[u8],
        paths: impl IntoIterator<Item = &'p str>,
    ) -> Result<Hive> {
        let header = HeaderState::parse(name, bytes)?;
        if let Some(why) = header.dirty_reason() {
            return Err(Error::Dirty {
                name: name.to_owned(),
                why,
            });
        }
        // The whole tree walked before a byte is changed: libhivex would write into
        // a hive whose lists are damaged and leave it worse.
        index::check_structure(bytes).map_err(|problem| Error::Damaged {
            name: name.to_owned(),
            problem,
        })?;
        let laid_out =
            index::lay_out_new_keys(bytes, paths, LAY_OUT_MIN_KEYS).map_err(|source| {
                Error::Index {
                    name: name.to_owned(),
                    source,
                }
            })?;
        match laid_out {
            None => Self::open(name, bytes, true),
            Some(done) => {
                let mut h = Self::open(name, &done.bytes, true)?;
                h.prepared = done.keys;
                Ok(h)
            }
        }
    }

    fn open(name: &str, bytes: &[u8], writable: bool) -> Result<Hive> {
        let state = HeaderState::parse(name, bytes)?;
        let temp = |source| Error::Temp {
            name: name.to_owned(),
            source,
        };
        // Copies a killed run left behind are cleared once per process.
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| {
            crate::fsutil::clear_stale(&std::env::temp_dir(), |n| {
                n.strip_prefix(HIVE_TEMP_PREFIX)?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()
            })
        });
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{HIVE_TEMP_PREFIX}{}-", std::process::id()))
            .tempfile()
            .map_err(temp)?;
        file.write_all(bytes)
            .and_then(|_| file.flush())
            .map_err(temp)?;
        let flags = if writable {
            OpenFlags::WRITE
        } else {
            OpenFlags::empty()
        };
        let handle =
            HivexHandle::open(file.path(), flags).map_err(|source| match state.dirty_reason() {
                Some(reason) => Error::NeedsRepair {
                    name: name.to_owned(),
                    reason,
                },
                None => Error::Open {
                    name: name.to_owned(),
                    // What is wrong, from wingold's own walk when it finds it;
                    // libhivex says only an errno.
                    reason: index::check_structure(bytes)
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| source.to_string()),
                },
            })?;
        Ok(Hive {
            name: name.to_owned(),
            handle,
            file,
            writable,
            children: RefCell::default(),
            pending: RefCell::default(),
            nul_names: RefCell::default(),
            prepared: HashSet::new(),
            last_key: RefCell::default(),
            last_created: None,
        })
    }

    fn read_err(&self, path: &str, reason: impl std::fmt::Display) -> Error {
        Error::Read {
            name: self.name.clone(),
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Finds the child of `node` named `name`, ignoring case as Windows does.
    fn child(&self, node: NodeH, name: &str, path: &str) -> Result<Option<NodeH>> {
        let mut cache = self.children.borrow_mut();
        let map = match cache.entry(node) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut map = HashMap::new();
                for child in ffi::children(&self.handle, node) {
                    let child_name =
                        ffi::node_name(&self.handle, child).map_err(|e| self.read_err(path, e))?;
                    if child_name.contains('\0') {
                        let mut nul = self.nul_names.borrow_mut();
                        nul.entry(node).or_default().push(fold_name(&child_name));
                    }
                    // The first of two names equal but for case wins, as before.
                    map.entry(fold_name(&child_name)).or_insert(child);
                }
                e.insert(map)
            }
        };
        Ok(map.get(&fold_name(name)).copied())
    }

    /// The value list of `node`, loaded into the edit buffer on first use.
    fn pending_of<'p>(
        &self,
        pending: &'p mut BTreeMap<NodeH, Pending>,
        node: NodeH,
        path: &str,
    ) -> Result<&'p mut Pending> {
        Ok(match pending.entry(node) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut p = Pending::default();
                for v in ffi::values(&self.handle, node) {
                    let key =
                        ffi::value_key(&self.handle, v).map_err(|e| self.read_err(path, e))?;
                    if key.contains('\0') {
                        // Writing the list back would cut this name at its NUL.
                        return Err(Error::NulInName {
                            name: self.name.clone(),
                            path: path.to_owned(),
                            found: key,
                        });
                    }
                    let (kind, data) =
                        ffi::value_value(&self.handle, v).map_err(|e| self.read_err(path, e))?;
                    p.index.entry(fold_name(&key)).or_insert(p.values.len());
                    p.values.push(Some((key, RegValue { kind, data })));
                }
                e.insert(p)
            }
        })
    }

    /// Writes every edited value list back into the hive.
    fn flush(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (node, p) in pending {
            let values: Vec<(String, u32, Vec<u8>)> = p
                .values
                .into_iter()
                .flatten()
                .map(|(n, v)| (n, v.kind, v.data))
                .collect();
            ffi::set_values(&self.handle, node, &values)
                .map_err(|e| self.write_err("", "setting values", e))?;
        }
        Ok(())
    }

    fn key(&self, path: &str) -> Result<Option<NodeH>> {
        if let Some((last, node)) = &*self.last_key.borrow() {
            if last == path {
                return Ok(Some(*node));
            }
        }
        let mut node = ffi::root(&self.handle).map_err(|e| self.read_err(path, e))?;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match self.child(node, part, path)? {
                Some(next) => node = next,
                None => return Ok(None),
            }
        }
        *self.last_key.borrow_mut() = Some((path.to_owned(), node));
        Ok(Some(node))
    }

    /// Forgets every cached node handle (after a delete or a reopen).
    fn forget_nodes(&mut self) {
        self.children.borrow_mut().clear();
        self.nul_names.borrow_mut().clear();
        *self.last_key.borrow_mut() = None;
        self.last_created = None;
    }

    /// Whether the key at `path` (relative to the hive's root) exists.
    pub fn has_key(&self, path: &str) -> Result<bool> {
        Ok(self.key(path)?.is_some())
    }

    /// The value `name` (`""` for the default value) of key `path`, if both exist.
    pub fn value(&self, path: &str, name: &str) -> Result<Option<RegValue>> {
        let Some(node) = self.key(path)? else {
            return Ok(None);
        };
        let wanted = fold_name(name);
        if let Some(p) = self.pending.borrow().get(&node) {
            return Ok(p
                .index
                .get(&wanted)
                .and_then(|&i| p.values[i].as_ref())
                .map(|(_, v)| v.clone()));
        }
        for v in ffi::values(&self.handle, node) {
            let key = ffi::value_key(&self.handle, v).map_err(|e| self.read_err(path, e))?;
            if fold_name(&key) != wanted {
                continue;
            }
            let (kind, data) =
                ffi::value_value(&self.handle, v).map_err(|e| self.read_err(path, e))?;
            return Ok(Some(RegValue { kind, data }));
        }
        Ok(None)
    }
    fn write_err(&self, path: &str, op: &'static str, source: std::io::Error) -> Error {
        Error::Write {
            name: self.name.clone(),
            path: path.to_owned(),
            op,
            source,
        }
    }

    fn require_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::ReadOnly {
                name: self.name.clone(),
            })
        }
    }

    /// Creates the key at `path` and its missing parents, as regedit does; returns
    /// the paths of the keys it added (parents first).
    pub fn create_key(&mut self, path: &str) -> Result<Vec<String>> {
        self.require_writable()?;
        if self.last_created.as_deref() == Some(path) {
            return Ok(Vec::new());
        }
        let mut node = ffi::root(&self.handle).map_err(|e| self.read_err(path, e))?;
        let mut walked: Vec<&str> = Vec::new();
        let mut added = Vec::new();
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            walked.push(part);
            node = match self.child(node, part, path)? {
                Some(next) => {
                    if !self.prepared.is_empty() {
                        let here = walked.join("\\");
                        if self.prepared.remove(&fold_name(&here)) {
                            added.push(here);
                        }
                    }
                    next
                }
                None => {
                    // libhivex would take `zero\0key` for `zero`.
                    if let Some(found) = self.nul_clash(node, part) {
                        return Err(Error::NulInName {
                            name: self.name.clone(),
                            path: path.to_owned(),
                            found,
                        });
                    }
                    let next = ffi::add_child(&self.handle, node, part)
                        .map_err(|e| self.write_err(path, "creating the key", e))?;
                    if let Some(map) = self.children.borrow_mut().get_mut(&node) {
                        map.insert(fold_name(part), next);
                    }
                    added.push(walked.join("\\"));
                    next
                }
            };
        }
        self.last_created = Some(path.to_owned());
        Ok(added)
    }

    /// Deletes the key at `path` with everything below it; a missing key is fine.
    /// Returns whether it existed.
    pub fn delete_key(&mut self, path: &str) -> Result<bool> {
        self.require_writable()?;
        if path.split('\\').all(|p| p.is_empty()) {
            return Err(Error::RootDelete {
                name: self.name.clone(),
            });
        }
        let Some(node) = self.key(path)? else {
            return Ok(false);
        };
        // Deleting frees blocks below the key: write what is pending first and
        // forget every cached handle.
        self.flush()?;
        ffi::delete_child(&self.handle, node)
            .map_err(|e| self.write_err(path, "deleting the key", e))?;
        self.forget_nodes();
        Ok(true)
    }

    /// Sets value `name` of the key at `path` (created if missing) to `kind` and
    /// `data`, byte for byte. Returns the value it replaced.
    pub fn set_value(
        &mut self,
        path: &str,
        name: &str,
        kind: u32,
        data: &[u8],
    ) -> Result<Option<RegValue>> {
        self.require_writable()?;
        if data.len() > MAX_VALUE_DATA {
            return Err(Error::ValueTooLarge {
                name: self.name.clone(),
                path: path.to_owned(),
                len: data.len(),
            });
        }
        self.create_key(path)?;
        let node = self.key(path)?.ok_or_else(|| {
            self.write_err(
                path,
                "setting a value",
                std::io::Error::other("the key vanished"),
            )
        })?;
        let mut pending = self.pending.borrow_mut();
        let p = self.pending_of(&mut pending, node, path)?;
        let new = RegValue {
            kind,
            data: data.to_vec(),
        };
        let folded = fold_name(name);
        match p.index.get(&folded).copied() {
            // Keep the existing spelling of the name, as Windows does.
            Some(i) if p.values[i].is_some() => {
                let slot = p.values[i].as_mut().expect("checked");
                Ok(Some(std::mem::replace(&mut slot.1, new)))
            }
            _ => {
                p.index.insert(folded, p.values.len());
                p.values.push(Some((name.to_owned(), new)));
                Ok(None)
            }
        }
    }

    /// Deletes value `name` of the key at `path`; returns it, or None when absent.
    pub fn delete_value(&mut self, path: &str, name: &str) -> Result<Option<RegValue>> {
        self.require_writable()?;
        let Some(node) = self.key(path)? else {
            return Ok(None);
        };
        let mut pending = self.pending.borrow_mut();
        let p = self.pending_of(&mut pending, node, path)?;
        Ok(match p.index.remove(&fold_name(name)) {
            Some(i) => p.values[i].take().map(|(_, v)| v),
            None => None,
        })
    }

    /// A subkey of `node` whose name is `part` up to a NUL, if any.
    fn nul_clash(&self, node: NodeH, part: &str) -> Option<String> {
        let wanted = fold_name(part);
        self.nul_names.borrow().get(&node).and_then(|names| {
            names
                .iter()
                .find(|k| k.split('\0').next() == Some(wanted.as_str()))
                .cloned()
        })
    }

    /// Writes the hive out (hivex sets both sequence numbers and the checksum) and
    /// returns its new bytes.
    pub fn commit(self) -> Result<Vec<u8>> {
        self.require_writable()?;
        self.flush()?;
        ffi::commit(&self.handle).map_err(|e| self.write_err("", "committing", e))?;
        std::fs::read(self.file.path()).map_err(|e| self.write_err("", "reading back", e))
    }

    /// Every value under the key at `path`, as (name, value), in hive order.
    pub fn values(&self, path: &str) -> Result<Vec<(String, RegValue)>> {
        let Some(node) = self.key(path)? else {
            return Ok(Vec::new());
        };
        if let Some(p) = self.pending.borrow().get(&node) {
            return Ok(p.values.iter().flatten().cloned().collect());
        }
        let mut out = Vec::new();
        for v in ffi::values(&self.handle, node) {
            let key = ffi::value_key(&self.handle, v).map_err(|e| self.read_err(path, e))?;
            let (kind, data) =
                ffi::value_value(&self.handle, v).map_err(|e| self.read_err(path, e))?;
            out.push((key, RegValue { kind, data }));
        }
        Ok(out)
    }

    /// The names of the subkeys of the key at `path`.
    pub fn subkeys(&self, path: &str) -> Result<Vec<String>> {
        let Some(node) = self.key(path)? else {
            return Ok(Vec::new());
        };
        ffi::children(&self.handle, node)
            .into_iter()
            .map(|c| ffi::node_name(&self.handle, c).map_err(|e| self.read_err(path, e)))
            .collect()
    }
}

type NodeH = hivex::sys::hive_node_h;
mod ffi;
