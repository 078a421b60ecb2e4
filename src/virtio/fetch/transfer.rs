//! One HTTP transfer into a `.partial` file: conditional and ranged requests,
//! resume checks, hashing in the same pass, and URLs and messages with any
//! credentials taken out.

use super::{io, Error, IndexEntry, PartialMeta, CHUNK};
use sha2::Digest;
use sha2::Sha256;
use std::fs::OpenOptions;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
/// What one HTTP attempt ended with.
pub(super) enum Attempt {
    Done {
        final_url: String,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    NotModified,
    Retry(String),
}

pub(super) struct Transfer {
    pub(super) client: reqwest::blocking::Client,
    /// The URL as given, credentials included: only ever sent, never shown.
    pub(super) request_url: String,
    /// The URL without credentials, for messages and records.
    pub(super) url: String,
    pub(super) partial: PathBuf,
    pub(super) meta_path: PathBuf,
    pub(super) hasher: Sha256,
    pub(super) have: u64,
    pub(super) progress: Option<indicatif::ProgressBar>,
}

pub(super) fn header(
    resp: &reqwest::blocking::Response,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Transfer {
    /// One GET: conditional on the cached copy, or resuming the partial file.
    pub(super) fn attempt(&mut self, cached: Option<&IndexEntry>) -> Result<Attempt, Error> {
        use reqwest::header::*;
        let meta: Option<PartialMeta> = std::fs::read(&self.meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|m: &PartialMeta| m.url == self.url);
        let mut req = self.client.get(&self.request_url);
        let resuming = self.have > 0
            && meta
                .as_ref()
                .is_some_and(|m| m.etag.is_some() || m.last_modified.is_some());
        if resuming {
            let m = meta.as_ref().expect("checked");
            req = req.header(RANGE, format!("bytes={}-", self.have));
            req = req.header(
                IF_RANGE,
                m.etag.clone().or(m.last_modified.clone()).expect("checked"),
            );
        } else if let Some(c) = cached {
            if let Some(e) = &c.etag {
                req = req.header(IF_NONE_MATCH, e);
            }
            if let Some(l) = &c.last_modified {
                req = req.header(IF_MODIFIED_SINCE, l);
            }
        }
        let mut resp = match req.send() {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Retry(crate::net::one_line(&e.without_url()))),
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && cached.is_some() && !resuming {
            return Ok(Attempt::NotModified);
        }
        if status.is_server_error() {
            return Ok(Attempt::Retry(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(Error::Refused {
                url: self.url.clone(),
                reason: format!("HTTP {status}"),
            });
        }
        let final_url = without_credentials(resp.url().as_str());
        let etag = header(&resp, ETAG);
        let last_modified = header(&resp, LAST_MODIFIED);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.partial)
            .map_err(io(&self.partial, "opening"))?;
        if status == reqwest::StatusCode::PARTIAL_CONTENT && resuming {
            // A 206 must be the range asked for, of the file we have the start of.
            let expected_total = meta.as_ref().map(|m| m.total).unwrap_or(0);
            let range = header(&resp, CONTENT_RANGE).and_then(|r| content_range(&r));
            let fits = range.is_some_and(|(start, total)| {
                start == self.have && (expected_total == 0 || total == Some(expected_total))
            });
            if !fits {
                drop(file);
                discard(&self.partial, &self.meta_path);
                let asked = std::mem::take(&mut self.have);
                return Ok(Attempt::Retry(format!(
                    "the server answered the resume from byte {asked} with another range ({}); \
                     starting over",
                    header(&resp, CONTENT_RANGE).unwrap_or_else(|| "none".into())
                )));
            }
        }
        let total = if status == reqwest::StatusCode::PARTIAL_CONTENT && resuming {
            // Resumed: the bytes we have were hashed when they arrived in an earlier
            // process only, so hash them once now, then append.
            let total = header(&resp, CONTENT_RANGE)
                .and_then(|r| content_range(&r))
                .and_then(|(_, total)| total)
                .unwrap_or(0);
            self.hasher = Sha256::new();
            file.seek(SeekFrom::Start(0))
                .map_err(io(&self.partial, "reading"))?;
            let mut buf = vec![0u8; CHUNK];
            let mut left = self.have;
            while left > 0 {
                let n = file
                    .read(&mut buf[..CHUNK.min(left as usize)])
                    .map_err(io(&self.partial, "reading"))?;
                if n == 0 {
                    break;
                }
                self.hasher.update(&buf[..n]);
                left -= n as u64;
            }
            total
        } else {
            // A whole body: the server ignored the range, or this is a fresh start.
            file.set_len(0).map_err(io(&self.partial, "truncating"))?;
            self.have = 0;
            self.hasher = Sha256::new();
            resp.content_length().unwrap_or(0)
        };
        file.seek(SeekFrom::Start(self.have))
            .map_err(io(&self.partial, "seeking"))?;
        let meta = PartialMeta {
            url: self.url.clone(),
            etag: etag.clone(),
            last_modified: last_modified.clone(),
            total,
        };
        std::fs::write(
            &self.meta_path,
            serde_json::to_vec(&meta).expect("serializable"),
        )
        .map_err(io(&self.meta_path, "writing"))?;
        if let Some(p) = &self.progress {
            p.set_length(total);
            p.set_position(self.have);
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    file.sync_data().ok();
                    return Ok(Attempt::Retry(format!(
                        "the transfer broke off after {} bytes: {e}",
                        self.have
                    )));
                }
            };
            file.write_all(&buf[..n])
                .map_err(io(&self.partial, "writing"))?;
            self.hasher.update(&buf[..n]);
            self.have += n as u64;
            if let Some(p) = &self.progress {
                p.set_position(self.have);
            }
        }
        file.sync_all().map_err(io(&self.partial, "syncing"))?;
        if total > 0 && self.have != total {
            if self.have < total {
                return Ok(Attempt::Retry(format!(
                    "the transfer ended after {} of {total} bytes",
                    self.have
                )));
            }
            return Err(Error::Refused {
                url: self.url.clone(),
                reason: format!("got {} bytes, but the server announced {total}", self.have),
            });
        }
        Ok(Attempt::Done {
            final_url,
            etag,
            last_modified,
        })
    }
}

/// `bytes START-END/TOTAL` → (START, TOTAL; None for `*`).
pub(super) fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let start = span.split_once('-')?.0.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

/// `url` without its user name and password: what is printed and stored. A URL
/// without credentials comes back exactly as given.
pub fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Removes the credentials of `request_url` from a message, however they appear.
pub(super) fn scrub(text: &str, request_url: &str) -> String {
    let Ok(u) = reqwest::Url::parse(request_url) else {
        return text.to_owned();
    };
    let mut out = text.replace(request_url, &without_credentials(request_url));
    for secret in [Some(u.username()), u.password()].into_iter().flatten() {
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

pub(super) fn discard(partial: &Path, meta: &Path) {
    let _ = std::fs::remove_file(partial);
    let _ = std::fs::remove_file(meta);
}
