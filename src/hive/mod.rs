//! One registry hive: header checks, and reading through hivex on a temporary copy.
//!
//! The hive's bytes come from (and go back to) the NTFS layer; hivex works on a
//! `tempfile`. Registry key names are case-insensitive, so lookups here are too.
//! This module may not touch NTFS or images: it sees bytes only.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod index;

use hivex::{Hive as HivexHandle, OpenFlags};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name}: not a registry hive: {reason}")]
    NotAHive { name: String, reason: String },

    #[error("{name}: hivex cannot open it: {source}")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{name}: the hive needs repair: a write to it was interrupted ({reason}) and its \
         body cannot be read; restore it from a copy of the image"
    )]
    NeedsRepair { name: String, reason: String },

    #[error("{name}: cannot stage the hive in a temporary file")]
    Temp {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{name}: {path}: {reason}")]
    Read {
        name: String,
        path: String,
        reason: String,
    },

    #[error(
        "{name}: the hive is dirty ({why}): changes are pending in its transaction logs, \
         which wingold does not replay; boot Windows and shut it down fully \
         (`shutdown /s /t 0`), then try again"
    )]
    Dirty { name: String, why: String },

    #[error("{name}: {path}: {op} failed")]
    Write {
        name: String,
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{name}: {path}: holds the name {found:?} with a NUL character in it; libhivex \
         compares and writes names as C strings and would merge or rename it, so this \
         key is not changed"
    )]
    NulInName {
        name: String,
        path: String,
        found: String,
    },

    #[error(
        "{name}: {path}: a value of {len} bytes is more than libhivex can write \
         ({MAX_VALUE_DATA} bytes at most)"
    )]
    ValueTooLarge {
        name: String,
        path: String,
        len: usize,
    },

    #[error("{name}: the root key of a hive cannot be deleted (delete its subkeys instead)")]
    RootDelete { name: String },

    #[error("{name}: the hive was opened read-only")]
    ReadOnly { name: String },
}

impl Error {
    /// Whether the error is the input being wrong (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::NotAHive { .. }
                | Error::Open { .. }
                | Error::Dirty { .. }
                | Error::NeedsRepair { .. }
                | Error::NulInName { .. }
                | Error::RootDelete { .. }
                | Error::ValueTooLarge { .. }
        )
    }
}

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

/// Hive copies live in the temporary folder as `wingold-hive-PID-…`.
const HIVE_TEMP_PREFIX: &str = "wingold-hive-";

/// The largest value data libhivex writes: one block of at most 1,000,000 bytes
/// (its HIVEX_MAX_ALLOCATION) holding a 4-byte size and the data (found by trying).
pub const MAX_VALUE_DATA: usize = 999_996;

/// Size of the regf base block.
pub const BASE_BLOCK_LEN: usize = 4096;
/// Offset of the XOR-32 checksum of the first 508 bytes (REGF "Base block").
const CHECKSUM_OFFSET: usize = 508;

/// The REGF checksum of a base block: XOR of its first 127 dwords, with 0 stored
/// as 1 and 0xffffffff as 0xfffffffe.
fn base_block_checksum(bytes: &[u8]) -> u32 {
    let xor = bytes[..CHECKSUM_OFFSET]
        .chunks_exact(4)
        .fold(0u32, |acc, d| {
            acc ^ u32::from_le_bytes(d.try_into().expect("4"))
        });
    match xor {
        0 => 1,
        0xffff_ffff => 0xffff_fffe,
        x => x,
    }
}

/// `bytes` (a clean hive) with its base block marked as a write in progress, the
/// way Windows marks it while it writes a hive: the secondary sequence one behind
/// the primary, checksum recomputed. Written first, it makes a hive torn by a crash
/// read as dirty (needing repair), never as clean; the clean base block is written
/// over it once the whole body is durable.
pub fn mark_write_in_progress(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() < BASE_BLOCK_LEN {
        return out;
    }
    let primary = u32::from_le_bytes(out[4..8].try_into().expect("4"));
    out[8..12].copy_from_slice(&primary.wrapping_sub(1).to_le_bytes());
    let sum = base_block_checksum(&out);
    out[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 4].copy_from_slice(&sum.to_le_bytes());
    out
}

/// What the regf base block says (reference/windows-offline.md §4a).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderState {
    pub primary_sequence: u32,
    pub secondary_sequence: u32,
    pub checksum_valid: bool,
    pub major_version: u32,
    pub minor_version: u32,
}

impl HeaderState {
    /// Parses the base block at the start of `bytes`.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<HeaderState> {
        let bad = |reason: &str| Error::NotAHive {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() < BASE_BLOCK_LEN {
            return Err(bad("shorter than the 4096-byte base block"));
        }
        if &bytes[0..4] != b"regf" {
            return Err(bad("no `regf` signature"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let expected = base_block_checksum(bytes);
        Ok(HeaderState {
            primary_sequence: u32_at(4),
            secondary_sequence: u32_at(8),
            checksum_valid: u32_at(CHECKSUM_OFFSET) == expected,
            major_version: u32_at(20),
            minor_version: u32_at(24),
        })
    }

    /// Clean: checksum right and both sequence numbers equal. A dirty hive has
    /// changes pending in its transaction logs.
    pub fn is_clean(&self) -> bool {
        self.checksum_valid && self.primary_sequence == self.secondary_sequence
    }

    /// Why the hive is dirty, when it is.
    pub fn dirty_reason(&self) -> Option<String> {
        if !self.checksum_valid {
            Some("the header checksum is wrong".into())
        } else if self.primary_sequence != self.secondary_sequence {
            Some(format!(
                "primary sequence {} != secondary sequence {}",
                self.primary_sequence, self.secondary_sequence
            ))
        } else {
            None
        }
    }
}

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
    /// Folded paths of keys [`Hive::prepare_keys`] made that no edit has reached
    /// yet: the first `create_key` through one reports it as added.
    prepared: HashSet<String>,
    /// Whether anything was changed since the hive was opened.
    edited: bool,
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
    /// logs hold (reference/windows-offline.md §4b).
    pub fn open_write(name: &str, bytes: &[u8]) -> Result<Hive> {
        let header = HeaderState::parse(name, bytes)?;
        if let Some(why) = header.dirty_reason() {
            return Err(Error::Dirty {
                name: name.to_owned(),
                why,
            });
        }
        Self::open(name, bytes, true)
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
                    source,
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
            edited: false,
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
                    self.edited = true;
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
        self.edited = true;
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
        self.edited = true;
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
        self.edited = true;
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

    /// Makes every key of `paths` that does not exist yet, with its missing
    /// parents, in one pass over the hive's bytes ([`index`]): libhivex adds keys
    /// one at a time at a cost that grows with the number of siblings. Only before
    /// any other edit; the keys then count as added by the first edit that reaches
    /// them, so reports read as if each edit had made its own. Keys this cannot
    /// make (names with NUL, a hive whose indexes it cannot read) are left to
    /// [`Hive::create_key`].
    pub fn prepare_keys<'p>(&mut self, paths: impl IntoIterator<Item = &'p str>) -> Result<()> {
        self.require_writable()?;
        if self.edited {
            return Ok(());
        }
        let root = ffi::root(&self.handle).map_err(|e| self.read_err("", e))?;
        let mut plan: BTreeMap<usize, index::NewKey> = BTreeMap::new();
        let mut prepared = HashSet::new();
        for path in paths {
            let parts: Vec<&str> = path.split('\\').filter(|p| !p.is_empty()).collect();
            if parts.iter().any(|p| p.contains('\0')) {
                continue;
            }
            let mut node = root;
            let mut depth = 0;
            while depth < parts.len() {
                match self.child(node, parts[depth], path)? {
                    Some(next) => node = next,
                    None => break,
                }
                depth += 1;
            }
            if depth == parts.len() || self.nul_clash(node, parts[depth]).is_some() {
                continue;
            }
            plan.entry(node).or_default().insert(&parts[depth..]);
            for end in depth + 1..=parts.len() {
                prepared.insert(fold_name(&parts[..end].join("\\")));
            }
        }
        if plan.is_empty() {
            return Ok(());
        }
        let staged = |e| self.write_err("", "adding keys", e);
        let bytes = std::fs::read(self.file.path()).map_err(staged)?;
        let Ok(bytes) = index::add_subkeys(&bytes, &plan) else {
            return Ok(());
        };
        std::fs::write(self.file.path(), &bytes).map_err(staged)?;
        self.handle = HivexHandle::open(self.file.path(), OpenFlags::WRITE)
            .map_err(|e| self.write_err("", "reopening after adding keys", e))?;
        self.forget_nodes();
        self.prepared = prepared;
        Ok(())
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

/// Thin safe wrappers over libhivex's node and value calls (the hivex crate keeps
/// its handles' numbers private and refuses value types above REG_QWORD, which real
/// hives carry). Every function takes the open hive whose handles it is given.
mod ffi {
    use super::NodeH;
    use hivex::sys;
    use hivex::Hive;
    use std::io;

    type ValueH = sys::hive_value_h;

    /// Copies a 0-terminated array that hivex malloc'd, then frees it.
    ///
    /// # Safety
    /// `p` is NULL or a malloc'd array of handles ending with 0.
    unsafe fn take_handles(p: *mut usize) -> Vec<usize> {
        if p.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut i = 0;
        // SAFETY: guaranteed by the caller: the array ends with 0.
        unsafe {
            while *p.add(i) != 0 {
                out.push(*p.add(i));
                i += 1;
            }
            libc::free(p as *mut libc::c_void);
        }
        out
    }

    pub fn root(h: &Hive) -> io::Result<NodeH> {
        // SAFETY: h is an open hive.
        match unsafe { sys::hivex_root(h.as_handle()) } {
            0 => Err(io::Error::last_os_error()),
            n => Ok(n),
        }
    }

    pub fn children(h: &Hive, node: NodeH) -> Vec<NodeH> {
        // SAFETY: h is open and node came from it; the result is a 0-terminated
        // malloc'd array.
        unsafe { take_handles(sys::hivex_node_children(h.as_handle(), node)) }
    }

    pub fn node_name(h: &Hive, node: NodeH) -> io::Result<String> {
        // SAFETY: as above; the name is a malloc'd UTF-8 string of `len` bytes (a
        // name may hold NUL characters, which a C string would cut off).
        unsafe {
            let len = sys::hivex_node_name_len(h.as_handle(), node);
            take_string_len(sys::hivex_node_name(h.as_handle(), node), len)
        }
    }

    pub fn values(h: &Hive, node: NodeH) -> Vec<ValueH> {
        // SAFETY: as for children().
        unsafe { take_handles(sys::hivex_node_values(h.as_handle(), node)) }
    }

    pub fn value_key(h: &Hive, v: ValueH) -> io::Result<String> {
        // SAFETY: as for node_name().
        unsafe {
            let len = sys::hivex_value_key_len(h.as_handle(), v);
            take_string_len(sys::hivex_value_key(h.as_handle(), v), len)
        }
    }

    /// Copies `len` bytes of a string that hivex malloc'd, then frees it.
    ///
    /// # Safety
    /// `p` is NULL or a malloc'd buffer of at least `len` bytes.
    unsafe fn take_string_len(p: *mut std::ffi::c_char, len: usize) -> io::Result<String> {
        if p.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: guaranteed by the caller; the C string's own length bounds it too.
        unsafe {
            let c_len = std::ffi::CStr::from_ptr(p).to_bytes().len();
            let n = if len > c_len { len } else { c_len };
            let bytes = std::slice::from_raw_parts(p as *const u8, n);
            let s = String::from_utf8_lossy(bytes).into_owned();
            libc::free(p as *mut libc::c_void);
            Ok(s)
        }
    }

    fn cstring(s: &str) -> io::Result<std::ffi::CString> {
        std::ffi::CString::new(s).map_err(|_| io::Error::other("a name holds a NUL character"))
    }

    pub fn add_child(h: &Hive, parent: NodeH, name: &str) -> io::Result<NodeH> {
        let c = cstring(name)?;
        // SAFETY: h is open for writing and parent came from it; c is NUL-terminated.
        match unsafe { sys::hivex_node_add_child(h.as_handle(), parent, c.as_ptr()) } {
            0 => Err(io::Error::last_os_error()),
            n => Ok(n),
        }
    }

    pub fn delete_child(h: &Hive, node: NodeH) -> io::Result<()> {
        // SAFETY: h is open for writing and node came from it.
        match unsafe { sys::hivex_node_delete_child(h.as_handle(), node) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    pub fn set_values(h: &Hive, node: NodeH, values: &[(String, u32, Vec<u8>)]) -> io::Result<()> {
        let names: Vec<std::ffi::CString> = values
            .iter()
            .map(|(n, _, _)| cstring(n))
            .collect::<io::Result<_>>()?;
        let raw: Vec<sys::hive_set_value> = values
            .iter()
            .zip(&names)
            .map(|((_, kind, data), c)| sys::hive_set_value {
                key: c.as_ptr() as *mut _,
                t: *kind as sys::hive_type,
                len: data.len(),
                value: data.as_ptr() as *mut _,
            })
            .collect();
        // SAFETY: h is open for writing, node came from it; the array and what it
        // points to live for the call, and hivex copies them.
        match unsafe { sys::hivex_node_set_values(h.as_handle(), node, raw.len(), raw.as_ptr(), 0) }
        {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    pub fn commit(h: &Hive) -> io::Result<()> {
        // SAFETY: h is open for writing; NULL commits to the file it was opened from.
        match unsafe { sys::hivex_commit(h.as_handle(), std::ptr::null(), 0) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// The value's type number and raw bytes.
    pub fn value_value(h: &Hive, v: ValueH) -> io::Result<(u32, Vec<u8>)> {
        let mut kind: sys::hive_type = 0;
        let mut len: usize = 0;
        // SAFETY: h is open and v came from it; hivex returns a malloc'd buffer of
        // `len` bytes (or NULL with errno set), which we copy and free.
        unsafe {
            let data = sys::hivex_value_value(h.as_handle(), v, &mut kind, &mut len);
            if data.is_null() {
                return Err(io::Error::last_os_error());
            }
            let bytes = std::slice::from_raw_parts(data as *const u8, len).to_vec();
            libc::free(data as *mut libc::c_void);
            Ok((kind, bytes))
        }
    }
}
