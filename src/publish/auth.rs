//! Registry credentials: base64 for the `Authorization` header, and the auth
//! files skopeo and podman keep.

use super::registry::Credentials;
use serde_json::Value;
use std::path::PathBuf;

/// Standard base64 (the auth header and auth files use it).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; None on anything else.
pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let t: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let t = t
        .strip_suffix(b"==")
        .or_else(|| t.strip_suffix(b"="))
        .unwrap_or(&t);
    let mut out = Vec::new();
    for c in t.chunks(4) {
        let mut n = 0u32;
        for (i, b) in c.iter().enumerate() {
            n |= val(*b)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..c.len().saturating_sub(1)]);
    }
    Some(out)
}

/// Credentials for `host` from the files skopeo and podman read:
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.docker/config.json` (`auths.<host>.auth` = base64 of `user:password`).
pub fn credentials_from_files(host: &str) -> Option<Credentials> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        files.push(PathBuf::from(h).join(".docker/config.json"));
    }
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let Ok(j) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if let Some(auth) = j["auths"][host]["auth"].as_str() {
            let raw = unbase64(auth)?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            return Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            });
        }
    }
    None
}
