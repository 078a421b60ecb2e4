//! Edits built in code rather than parsed from .reg text (drivers, first boot,
//! clone identity): each gets the next line number under one source name, so a
//! report names it as it names a line of a .reg file.

use crate::hive::types::{REG_DWORD, REG_MULTI_SZ, REG_SZ};
use crate::reg::{utf16z, Op, RegEdit};

/// Builds edits with running line numbers under one source name.
pub struct Edits {
    file: std::sync::Arc<str>,
    pub list: Vec<RegEdit>,
}

impl Edits {
    pub fn new(file: String) -> Edits {
        Edits {
            file: file.into(),
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, op: Op) {
        self.list.push(RegEdit {
            file: self.file.clone(),
            line: self.list.len() + 1,
            op,
        });
    }

    pub fn set(&mut self, key: &str, name: &str, kind: u32, data: Vec<u8>) {
        self.push(Op::SetValue {
            key: key.to_owned(),
            name: name.to_owned(),
            kind,
            data,
        });
    }

    pub fn sz(&mut self, key: &str, name: &str, text: &str) {
        self.set(key, name, REG_SZ, utf16z(text));
    }

    pub fn dword(&mut self, key: &str, name: &str, v: u32) {
        self.set(key, name, REG_DWORD, v.to_le_bytes().to_vec());
    }

    pub fn multi_sz(&mut self, key: &str, name: &str, items: &[&str]) {
        let mut data: Vec<u8> = items.iter().flat_map(|s| utf16z(s)).collect();
        data.extend_from_slice(&[0, 0]);
        self.set(key, name, REG_MULTI_SZ, data);
    }

    pub fn delete_key(&mut self, key: &str) {
        self.push(Op::DeleteKey {
            key: key.to_owned(),
        });
    }
}
