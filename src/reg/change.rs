//! What an edit changed, as reports and manifests show it: the action, the value
//! before and after (kept as stored, rendered only when shown), and where the edit
//! came from.

use super::{HiveName, RegValue};
use serde::Serialize;
/// A value as the plan shows it: type and bytes (hex in JSON), and a readable form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ValueView {
    #[serde(rename = "type")]
    pub kind: String,
    /// The raw bytes, hex.
    pub data: String,
    /// A readable rendering (numbers, strings), when the type has one.
    pub display: Option<String>,
}

impl From<&RegValue> for ValueView {
    fn from(v: &RegValue) -> Self {
        ValueView {
            kind: type_name(v.kind),
            data: hex(&v.data),
            display: display(v),
        }
    }
}

/// `REG_DWORD 1 (0x1)`, `REG_SZ "text"`, or `REG_BINARY hex:0a0b…` for types
/// without a readable form.
impl std::fmt::Display for ValueView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.display {
            Some(shown) => write!(f, "{} {shown}", self.kind),
            None => write!(f, "{} hex:{}", self.kind, self.data),
        }
    }
}

/// Lower-case hex digits of `data`, in one allocation.
fn hex(data: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(data.len() * 2);
    for b in data {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// `REG_DWORD`, … or `REG_0x1234` for unknown type numbers.
pub fn type_name(kind: u32) -> String {
    match kind {
        0 => "REG_NONE".into(),
        1 => "REG_SZ".into(),
        2 => "REG_EXPAND_SZ".into(),
        3 => "REG_BINARY".into(),
        4 => "REG_DWORD".into(),
        5 => "REG_DWORD_BIG_ENDIAN".into(),
        6 => "REG_LINK".into(),
        7 => "REG_MULTI_SZ".into(),
        8 => "REG_RESOURCE_LIST".into(),
        9 => "REG_FULL_RESOURCE_DESCRIPTOR".into(),
        10 => "REG_RESOURCE_REQUIREMENTS_LIST".into(),
        11 => "REG_QWORD".into(),
        n => format!("REG_{n:#x}"),
    }
}

fn display(v: &RegValue) -> Option<String> {
    match v.kind {
        4 if v.data.len() == 4 => v.as_dword().map(|n| format!("{n} ({n:#x})")),
        11 if v.data.len() == 8 => {
            let n = u64::from_le_bytes(v.data[..8].try_into().ok()?);
            Some(format!("{n} ({n:#x})"))
        }
        1 | 2 => v.as_string().map(|s| format!("{s:?}")),
        7 => {
            let units: Vec<u16> = v
                .data
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let parts: Vec<String> = units
                .split(|&u| u == 0)
                .filter(|p| !p.is_empty())
                .map(|p| format!("{:?}", String::from_utf16_lossy(p)))
                .collect();
            Some(format!("[{}]", parts.join(", ")))
        }
        _ => None,
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    KeyAdded,
    KeyDeleted,
    ValueAdded,
    ValueChanged,
    ValueDeleted,
}

/// One change to one hive.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub hive: HiveName,
    /// Path inside the hive (control sets spelled out).
    pub key: String,
    /// The value's name (`""` for the default value); None for key changes.
    pub value: Option<String>,
    pub action: Action,
    /// Kept as stored and shown as a [`ValueView`] only when printed: a large
    /// `.reg` makes hundreds of thousands of changes.
    #[serde(serialize_with = "as_view")]
    pub old: Option<RegValue>,
    #[serde(serialize_with = "as_view")]
    pub new: Option<RegValue>,
    /// `file:line` of the edit.
    pub source: Source,
}

fn as_view<S: serde::Serializer>(v: &Option<RegValue>, s: S) -> Result<S::Ok, S::Error> {
    v.as_ref().map(ValueView::from).serialize(s)
}

/// Where an edit came from: `file:line` when shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: std::sync::Arc<str>,
    pub line: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
