//! Registry credentials: base64 for the `Authorization` header, and the auth
//! files skopeo and podman keep.

use super::{Credentials, Error};
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

/// Whether an auth file's key names `host` (`HOST[:PORT]`): the bare name as
/// skopeo writes it, or a URL as docker and podman may (`https://HOST:PORT/v2/`).
fn key_names(key: &str, host: &str) -> bool {
    let bare = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let bare = bare.split('/').next().unwrap_or(bare);
    bare.eq_ignore_ascii_case(host)
}

/// Credentials for `host` from the files skopeo and podman read:
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `~/.docker/config.json` (`auths.<host>.auth` = base64 of `user:password`). A
/// file that is missing is passed over; one that is there but broken is named
/// with its problem (never with what it holds).
pub fn credentials_from_files(host: &str) -> Result<Option<Credentials>, Error> {
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
        if !f.exists() {
            continue;
        }
        let bytes = crate::input::read(&f, crate::input::SMALL)?;
        let bad = |problem: &str| Error::AuthFile {
            path: f.clone(),
            problem: problem.to_owned(),
        };
        let j: Value = serde_json::from_slice(&bytes).map_err(|e| {
            bad(&format!(
                "not JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let Some(auths) = j.get("auths").and_then(Value::as_object) else {
            continue;
        };
        let Some((key, entry)) = auths.iter().find(|(k, _)| key_names(k, host)) else {
            continue;
        };
        let Some(auth) = entry.get("auth").and_then(Value::as_str) else {
            continue;
        };
        let problem = format!("the entry for {key:?}");
        let raw =
            unbase64(auth).ok_or_else(|| bad(&format!("{problem}: its auth is not base64")))?;
        let text = String::from_utf8(raw)
            .map_err(|_| bad(&format!("{problem}: its auth is not UTF-8 text")))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| bad(&format!("{problem}: its auth is not user:password")))?;
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::{base64, key_names, unbase64};

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "user:pa:ss wörd"] {
            assert_eq!(unbase64(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn keys_name_the_host_as_skopeo_podman_and_docker_write_them() {
        for key in [
            "reg.example:5000",
            "https://reg.example:5000",
            "https://reg.example:5000/v2/",
            "http://REG.example:5000/v1/",
        ] {
            assert!(key_names(key, "reg.example:5000"), "{key}");
        }
        for key in ["reg.example", "https://reg.example:5001/v2/", "other:5000"] {
            assert!(!key_names(key, "reg.example:5000"), "{key}");
        }
    }
}
