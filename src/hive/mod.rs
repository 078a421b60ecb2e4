//! One registry hive: header checks, and reading through hivex on a temporary copy.
//!
//! The hive's bytes come from (and go back to) the NTFS layer; hivex works on a
//! `tempfile`. Registry key names are case-insensitive, so lookups here are too.
//! This module may not touch NTFS or images: it sees bytes only.

#![deny(clippy::undocumented_unsafe_blocks)]

use hivex::{Hive as HivexHandle, OpenFlags};
use serde::Serialize;
use std::io::Write;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name}: not a registry hive: {reason}")]
    NotAHive { name: String, reason: String },

    #[error("{name}: hivex cannot open it")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },

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
}

impl Error {
    /// Whether the error is the input being wrong (exit code 2).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::NotAHive { .. } | Error::Open { .. })
    }
}

/// Size of the regf base block.
pub const BASE_BLOCK_LEN: usize = 4096;
/// Offset of the XOR-32 checksum of the first 508 bytes (REGF "Base block").
const CHECKSUM_OFFSET: usize = 508;

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
        let xor = (0..CHECKSUM_OFFSET)
            .step_by(4)
            .fold(0u32, |acc, at| acc ^ u32_at(at));
        // A computed 0 is stored as 1, and 0xffffffff as 0xfffffffe (REGF).
        let expected = match xor {
            0 => 1,
            0xffff_ffff => 0xffff_fffe,
            x => x,
        };
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

/// An open hive (read-only for now), staged in a temporary file for hivex.
pub struct Hive {
    name: String,
    handle: HivexHandle,
    _file: tempfile::NamedTempFile,
}

impl Hive {
    /// Opens `bytes` as a hive; `name` names it in errors (e.g. `SYSTEM`).
    pub fn open_read(name: &str, bytes: &[u8]) -> Result<Hive> {
        HeaderState::parse(name, bytes)?;
        let temp = |source| Error::Temp {
            name: name.to_owned(),
            source,
        };
        let mut file = tempfile::Builder::new()
            .prefix("wingold-hive-")
            .tempfile()
            .map_err(temp)?;
        file.write_all(bytes)
            .and_then(|_| file.flush())
            .map_err(temp)?;
        let handle =
            HivexHandle::open(file.path(), OpenFlags::empty()).map_err(|source| Error::Open {
                name: name.to_owned(),
                source,
            })?;
        Ok(Hive {
            name: name.to_owned(),
            handle,
            _file: file,
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
        let wanted = name.to_uppercase();
        for child in ffi::children(&self.handle, node) {
            let child_name =
                ffi::node_name(&self.handle, child).map_err(|e| self.read_err(path, e))?;
            if child_name.to_uppercase() == wanted {
                return Ok(Some(child));
            }
        }
        Ok(None)
    }

    fn key(&self, path: &str) -> Result<Option<NodeH>> {
        let mut node = ffi::root(&self.handle).map_err(|e| self.read_err(path, e))?;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match self.child(node, part, path)? {
                Some(next) => node = next,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
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
        let wanted = name.to_uppercase();
        for v in ffi::values(&self.handle, node) {
            let key = ffi::value_key(&self.handle, v).map_err(|e| self.read_err(path, e))?;
            if key.to_uppercase() != wanted {
                continue;
            }
            let (kind, data) =
                ffi::value_value(&self.handle, v).map_err(|e| self.read_err(path, e))?;
            return Ok(Some(RegValue { kind, data }));
        }
        Ok(None)
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

    /// # Safety
    /// `p` is NULL or a malloc'd NUL-terminated string.
    unsafe fn take_string(p: *mut std::ffi::c_char) -> io::Result<String> {
        if p.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: guaranteed by the caller.
        unsafe {
            let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
            libc::free(p as *mut libc::c_void);
            Ok(s)
        }
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
        // SAFETY: as above; the name is a malloc'd UTF-8 string.
        unsafe { take_string(sys::hivex_node_name(h.as_handle(), node)) }
    }

    pub fn values(h: &Hive, node: NodeH) -> Vec<ValueH> {
        // SAFETY: as for children().
        unsafe { take_handles(sys::hivex_node_values(h.as_handle(), node)) }
    }

    pub fn value_key(h: &Hive, v: ValueH) -> io::Result<String> {
        // SAFETY: as for node_name().
        unsafe { take_string(sys::hivex_value_key(h.as_handle(), v)) }
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
