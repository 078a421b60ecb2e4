//! `.reg` text → `Vec<RegEdit>`, with regedit's syntax and semantics.
//!
//! Accepts `Windows Registry Editor Version 5.00` and `REGEDIT4` files; UTF-16LE
//! with a BOM (as regedit writes them), UTF-8 with or without a BOM, and ANSI
//! (Latin-1) REGEDIT4 files; CRLF or LF; `;` comments; line continuation with a
//! trailing backslash. Every error names the file, line and column and what was
//! expected. Pure Rust, no C: this is what the fuzz tests hammer.

use super::{Op, RegEdit};
use crate::hive::types::{REG_BINARY, REG_DWORD, REG_SZ};

/// Where a `.reg` file's syntax goes wrong and what was expected there: the payload
/// of `reg::Error::Syntax`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syntax {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Syntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

const HEADER_V5: &str = "Windows Registry Editor Version 5.00";
const HEADER_V4: &str = "REGEDIT4";
/// `hex(2)` (REG_EXPAND_SZ) and `hex(7)` (REG_MULTI_SZ): text types whose bytes are
/// ANSI in REGEDIT4 files and UTF-16LE in version-5 files.
const REG_EXPAND_SZ_TYPE: u32 = 2;
const REG_MULTI_SZ_TYPE: u32 = 7;

/// Which header the file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `Windows Registry Editor Version 5.00`.
    V5,
    /// `REGEDIT4`: text in hex(2)/hex(7) data is ANSI.
    V4,
}

/// Decodes the file's bytes: UTF-16LE with BOM, UTF-8 (BOM optional), else Latin-1.
fn decode(bytes: &[u8], file: &str) -> Result<String, Syntax> {
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        if rest.len() % 2 != 0 {
            return Err(Syntax {
                file: file.to_owned(),
                line: 1,
                column: 1,
                message: "UTF-16 text with an odd number of bytes (truncated file?)".into(),
            });
        }
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16(&units).map_err(|_| Syntax {
            file: file.to_owned(),
            line: 1,
            column: 1,
            message: "invalid UTF-16 text".into(),
        });
    }
    let bytes = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    Ok(match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        // An ANSI file (REGEDIT4 era): take it as Latin-1.
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    })
}

/// A logical line (continuations joined) and where each of its characters came from.
struct Logical {
    text: Vec<char>,
    /// Where each physical piece of `text` came from: (index of its first char in
    /// `text`, line, column), 1-based; the columns run on within a piece.
    pieces: Vec<(usize, usize, usize)>,
    line: usize,
}

impl Logical {
    fn at(&self, idx: usize) -> (usize, usize) {
        match self.pieces.partition_point(|&(start, _, _)| start <= idx) {
            0 => self
                .pieces
                .first()
                .map(|&(_, l, c)| (l, c))
                .unwrap_or((self.line, 1)),
            n => {
                let (start, line, col) = self.pieces[n - 1];
                (line, col + idx - start)
            }
        }
    }
}

/// Splits into physical lines (CRLF, LF or CR) and joins backslash continuations of
/// value lines. Leading whitespace of a continuation line is dropped, as regedit
/// indents wrapped hex data.
fn logical_lines(text: &str) -> Vec<Logical> {
    let mut out: Vec<Logical> = Vec::new();
    let mut pending: Option<Logical> = None;
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    for (i, raw) in normalized.split('\n').enumerate() {
        let line_no = i + 1;
        let chars: Vec<(usize, char)> = raw.chars().enumerate().collect();
        let (start, continuing) = match &pending {
            Some(_) => (
                chars
                    .iter()
                    .position(|(_, c)| !c.is_whitespace())
                    .unwrap_or(chars.len()),
                true,
            ),
            None => (0, false),
        };
        let mut cur = pending.take().unwrap_or(Logical {
            text: Vec::new(),
            pieces: Vec::new(),
            line: line_no,
        });
        let body = &chars[start..];
        // A trailing backslash (spaces after it tolerated) continues a value line.
        let trimmed_end = body
            .iter()
            .rposition(|(_, c)| !c.is_whitespace())
            .map(|p| p + 1)
            .unwrap_or(0);
        let is_value_line = continuing || {
            let first = body
                .iter()
                .find(|(_, c)| !c.is_whitespace())
                .map(|&(_, c)| c);
            matches!(first, Some('"') | Some('@'))
        };
        let continues = is_value_line && trimmed_end > 0 && body[trimmed_end - 1].1 == '\\' && {
            // `"a"="b\\"` ends with an escaped backslash inside a string: not a
            // continuation. Count the quotes before it to tell.
            let quotes = body[..trimmed_end - 1]
                .iter()
                .fold((0usize, false), |(n, esc), &(_, c)| match (c, esc) {
                    ('\\', false) => (n, true),
                    ('"', false) => (n + 1, false),
                    _ => (n, false),
                })
                .0;
            quotes % 2 == 0
        };
        let end = if continues {
            trimmed_end - 1
        } else {
            body.len()
        };
        if let Some(&(col, _)) = body[..end].first() {
            cur.pieces.push((cur.text.len(), line_no, col + 1));
        }
        cur.text.extend(body[..end].iter().map(|&(_, c)| c));
        if continues {
            pending = Some(cur);
        } else {
            out.push(cur);
        }
    }
    if let Some(cur) = pending {
        out.push(cur);
    }
    out
}

struct Parser<'a> {
    file: &'a str,
    version: Version,
}

/// Longest key name (one path component) and value name Windows allows, in UTF-16
/// units (learn.microsoft.com, "Registry element size limits").
const MAX_KEY_NAME: usize = 255;
const MAX_VALUE_NAME: usize = 16_383;

impl Parser<'_> {
    fn err(&self, l: &Logical, idx: usize, message: impl Into<String>) -> Syntax {
        let (line, column) = l.at(idx);
        Syntax {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// `[KEY]` or `[-KEY]`.
    fn key_line(&self, l: &Logical, start: usize) -> Result<(bool, String), Syntax> {
        let t = &l.text;
        let end = t
            .iter()
            .rposition(|c| !c.is_whitespace())
            .expect("line is not blank");
        if t[end] != ']' {
            return Err(self.err(l, end + 1, "expected `]` at the end of the key line"));
        }
        let mut inner_start = start + 1;
        let delete = t.get(inner_start) == Some(&'-');
        if delete {
            inner_start += 1;
        }
        let path: String = t[inner_start..end].iter().collect();
        let path = path.trim().to_owned();
        if path.is_empty() {
            return Err(self.err(l, inner_start, "expected a key path inside `[ ]`"));
        }
        if path.split('\\').any(|p| p.is_empty()) {
            return Err(self.err(
                l,
                inner_start,
                "empty key name in the path (a doubled or trailing `\\`)",
            ));
        }
        if path.contains('\0') {
            return Err(self.err(l, inner_start, "a key name holds a NUL character"));
        }
        if let Some(long) = path
            .split('\\')
            .map(|p| p.encode_utf16().count())
            .find(|&n| n > MAX_KEY_NAME)
        {
            return Err(self.err(
                l,
                inner_start,
                format!("a key name of {long} characters: Windows allows {MAX_KEY_NAME}"),
            ));
        }
        Ok((delete, path))
    }

    /// A quoted string starting at `t[i] == '"'`; returns the text and the index
    /// after the closing quote. `\\` and `\"` are escapes (and `\n` a newline, as
    /// Wine reads it); any other `\x` is taken literally, as hivex does.
    fn quoted(&self, l: &Logical, i: usize) -> Result<(String, usize), Syntax> {
        let t = &l.text;
        let mut out = String::new();
        let mut j = i + 1;
        loop {
            match t.get(j) {
                None => return Err(self.err(l, i, "unterminated string: expected a closing `\"`")),
                Some('"') => return Ok((out, j + 1)),
                Some('\\') => {
                    match t.get(j + 1) {
                        Some('n') => out.push('\n'),
                        Some(&c) => out.push(c),
                        None => {
                            return Err(self.err(
                                l,
                                j,
                                "unterminated string: expected a closing `\"`",
                            ))
                        }
                    }
                    j += 2;
                }
                Some(&c) => {
                    out.push(c);
                    j += 1;
                }
            }
        }
    }

    fn skip_ws(t: &[char], mut i: usize) -> usize {
        while t.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    }

    fn expect_end(&self, l: &Logical, i: usize) -> Result<(), Syntax> {
        let j = Self::skip_ws(&l.text, i);
        if j < l.text.len() {
            return Err(self.err(l, j, "unexpected text after the value"));
        }
        Ok(())
    }

    /// Comma-separated hex bytes from `i` to the end of the line.
    fn hex_bytes(&self, l: &Logical, i: usize) -> Result<Vec<u8>, Syntax> {
        let t = &l.text;
        let mut out = Vec::new();
        let mut j = Self::skip_ws(t, i);
        if j >= t.len() {
            return Ok(out);
        }
        loop {
            j = Self::skip_ws(t, j);
            let start = j;
            while t.get(j).is_some_and(|c| c.is_ascii_hexdigit()) {
                j += 1;
            }
            let digits: String = t[start..j].iter().collect();
            if digits.is_empty() || digits.len() > 2 {
                return Err(self.err(l, start, "expected a byte as one or two hex digits"));
            }
            out.push(u8::from_str_radix(&digits, 16).expect("hex digits"));
            j = Self::skip_ws(t, j);
            match t.get(j) {
                None => return Ok(out),
                Some(',') => {
                    j += 1;
                    // A trailing comma ends the list.
                    if Self::skip_ws(t, j) >= t.len() {
                        return Ok(out);
                    }
                }
                Some(_) => return Err(self.err(l, j, "expected `,` between hex bytes")),
            }
        }
    }

    /// `"name"=…` or `@=…` under `key`.
    fn value_line(&self, l: &Logical, start: usize, key: &str) -> Result<Op, Syntax> {
        let t = &l.text;
        let (name, mut i) = if t[start] == '@' {
            (String::new(), start + 1)
        } else {
            self.quoted(l, start)?
        };
        if name.contains('\0') {
            return Err(self.err(l, start, "the value name holds a NUL character"));
        }
        let units = name.encode_utf16().count();
        if units > MAX_VALUE_NAME {
            return Err(self.err(
                l,
                start,
                format!("a value name of {units} characters: Windows allows {MAX_VALUE_NAME}"),
            ));
        }
        i = Self::skip_ws(t, i);
        if t.get(i) != Some(&'=') {
            return Err(self.err(l, i, "expected `=` after the value name"));
        }
        i = Self::skip_ws(t, i + 1);
        let rest: String = t[i..].iter().collect();
        let key = key.to_owned();
        if rest.trim_end() == "-" {
            return Ok(Op::DeleteValue { key, name });
        }
        match t.get(i) {
            Some('"') => {
                let (text, after) = self.quoted(l, i)?;
                self.expect_end(l, after)?;
                Ok(Op::SetValue {
                    key,
                    name,
                    kind: REG_SZ,
                    data: utf16z(&text),
                })
            }
            _ if rest.to_ascii_lowercase().starts_with("dword:") => {
                let digits = rest["dword:".len()..].trim_end();
                let at = i + "dword:".len();
                if digits.is_empty()
                    || digits.len() > 8
                    || !digits.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(self.err(l, at, "expected 1 to 8 hex digits after `dword:`"));
                }
                let n = u32::from_str_radix(digits, 16).expect("hex digits");
                Ok(Op::SetValue {
                    key,
                    name,
                    kind: REG_DWORD,
                    data: n.to_le_bytes().to_vec(),
                })
            }
            _ if rest.to_ascii_lowercase().starts_with("hex:") => Ok(Op::SetValue {
                key,
                name,
                kind: REG_BINARY,
                data: self.hex_bytes(l, i + 4)?,
            }),
            _ if rest.to_ascii_lowercase().starts_with("hex(") => {
                let close = t[i..]
                    .iter()
                    .position(|&c| c == ')')
                    .map(|p| i + p)
                    .ok_or_else(|| {
                        self.err(l, i + 4, "expected `)` after the type in `hex(N):`")
                    })?;
                let ty: String = t[i + 4..close].iter().collect();
                let kind = u32::from_str_radix(ty.trim(), 16)
                    .map_err(|_| self.err(l, i + 4, "expected the type in hex inside `hex( )`"))?;
                if t.get(close + 1) != Some(&':') {
                    return Err(self.err(l, close + 1, "expected `:` after `hex(N)`"));
                }
                let mut data = self.hex_bytes(l, close + 2)?;
                if self.version == Version::V4
                    && (kind == REG_EXPAND_SZ_TYPE || kind == REG_MULTI_SZ_TYPE)
                {
                    // ANSI bytes in REGEDIT4 files become UTF-16LE, as regedit does.
                    data = data.iter().flat_map(|&b| [b, 0]).collect();
                }
                Ok(Op::SetValue {
                    key,
                    name,
                    kind,
                    data,
                })
            }
            _ => Err(self.err(
                l,
                i,
                "expected a value: \"text\", dword:, hex:, hex(N): or - (to delete)",
            )),
        }
    }
}

/// UTF-16LE with the terminating NUL that Windows strings carry.
pub fn utf16z(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Parses a whole `.reg` file. `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<(Version, Vec<RegEdit>), super::Error> {
    parse_text(bytes, file).map_err(super::Error::Syntax)
}

fn parse_text(bytes: &[u8], file: &str) -> Result<(Version, Vec<RegEdit>), Syntax> {
    let text = decode(bytes, file)?;
    let lines = logical_lines(&text);
    let mut iter = lines
        .iter()
        .filter(|l| l.text.iter().any(|c| !c.is_whitespace()));
    let header = iter.next().ok_or_else(|| Syntax {
        file: file.to_owned(),
        line: 1,
        column: 1,
        message: format!("empty file: expected `{HEADER_V5}` or `{HEADER_V4}`"),
    })?;
    let head: String = header.text.iter().collect();
    let version = match head.trim() {
        HEADER_V5 => Version::V5,
        HEADER_V4 => Version::V4,
        _ => {
            return Err(Syntax {
                file: file.to_owned(),
                line: header.line,
                column: 1,
                message: format!("expected the header `{HEADER_V5}` or `{HEADER_V4}`"),
            })
        }
    };
    let p = Parser { file, version };
    let shared: std::sync::Arc<str> = file.into();
    let mut edits = Vec::new();
    let mut key: Option<String> = None;
    for l in iter {
        let start = l
            .text
            .iter()
            .position(|c| !c.is_whitespace())
            .expect("blank lines were filtered");
        match l.text[start] {
            ';' => continue,
            '[' => {
                let (delete, path) = p.key_line(l, start)?;
                edits.push(RegEdit {
                    file: shared.clone(),
                    line: l.line,
                    op: if delete {
                        Op::DeleteKey { key: path.clone() }
                    } else {
                        Op::CreateKey { key: path.clone() }
                    },
                });
                // Values after a deleted key have no key to go to.
                key = (!delete).then_some(path);
            }
            '"' | '@' => {
                let Some(k) = &key else {
                    return Err(p.err(l, start, "a value before any `[KEY]` line"));
                };
                let op = p.value_line(l, start, k)?;
                edits.push(RegEdit {
                    file: shared.clone(),
                    line: l.line,
                    op,
                });
            }
            _ => {
                return Err(p.err(
                    l,
                    start,
                    "expected `[KEY]`, `\"name\"=value`, `@=value` or a `;` comment",
                ))
            }
        }
    }
    Ok((version, edits))
}
