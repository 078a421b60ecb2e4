//! Fetching the virtio-win ISO so that people can trust it: streamed into a
//! `.partial` file while hashed in the same pass, resumed with `Range` + `If-Range`,
//! retried with backoff, checked (ISO 9660 with a virtio-win volume id, the announced
//! size, the pinned SHA-256) before it is accepted, and cached by content. A second
//! fetch sends one conditional request and transfers nothing when nothing changed.

use super::iso;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// fedorapeople's direct-downloads tree (reference/windows-offline.md §5a).
pub const DIRECT_DOWNLOADS: &str =
    "https://fedorapeople.org/groups/virt/virtio-win/direct-downloads";
const KNOWN: &str = include_str!("../../assets/virtio-win-known.toml");
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    #[error("{url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("{url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{}: {op} failed", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Bad input (exit 2): a wrong pin, a refused download, a bad argument.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Error::BadInput(_) | Error::Refused { .. })
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// Where the ISO comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stable,
    Latest,
    Version(String),
    Url(String),
}

#[derive(Debug, Deserialize)]
struct KnownTable {
    iso: Vec<KnownIso>,
}

#[derive(Debug, Clone, Deserialize)]
struct KnownIso {
    version: String,
    release: u32,
    sha256: String,
}

fn known() -> Vec<KnownIso> {
    toml::from_str::<KnownTable>(KNOWN)
        .expect("assets/virtio-win-known.toml parses (unit-tested)")
        .iso
}

/// `0.1.NNN`, checked.
pub fn check_version(v: &str) -> Result<(), Error> {
    let ok = v
        .strip_prefix("0.1.")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "invalid virtio-win version {v:?}: expected 0.1.NNN"
        )))
    }
}

impl Source {
    pub fn url(&self) -> Result<String, Error> {
        Ok(match self {
            Source::Stable => format!("{DIRECT_DOWNLOADS}/stable-virtio/virtio-win.iso"),
            Source::Latest => format!("{DIRECT_DOWNLOADS}/latest-virtio/virtio-win.iso"),
            Source::Version(v) => {
                check_version(v)?;
                let release = known()
                    .into_iter()
                    .find(|k| &k.version == v)
                    .map(|k| k.release)
                    .unwrap_or(1);
                format!(
                    "{DIRECT_DOWNLOADS}/archive-virtio/virtio-win-{v}-{release}/virtio-win-{v}.iso"
                )
            }
            Source::Url(u) => {
                if !(u.starts_with("http://")
                    || u.starts_with("https://")
                    || u.starts_with("file://"))
                {
                    return Err(Error::BadInput(format!(
                        "unsupported URL {u:?}: use http://, https:// or file://"
                    )));
                }
                u.clone()
            }
        })
    }
}

/// What pinned the accepted SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PinnedBy {
    /// `--sha256` on the command line (or `sha256` in wingold.toml).
    Flag,
    /// An earlier fetch of this version, in wingold.lock.
    Lock,
    /// assets/virtio-win-known.toml.
    KnownTable,
    /// Nothing knew this version: trusted on first use, now in wingold.lock.
    FirstUse,
}

/// A fetched ISO. `fetch --json` prints this; field names are part of the CLI contract.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub path: PathBuf,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub url: String,
    pub final_url: String,
    pub from_cache: bool,
    pub pinned_by: PinnedBy,
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    pub sha256: Option<String>,
    pub cache: PathBuf,
    pub lock_file: PathBuf,
    pub offline: bool,
    pub progress: bool,
    pub retries: u32,
    pub connect_timeout: Duration,
    /// No byte for this long ends the attempt.
    pub stall_timeout: Duration,
    /// First retry delay; it doubles each time.
    pub backoff: Duration,
}

/// The default cache folder: `$XDG_CACHE_HOME/wingold`, else `~/.cache/wingold`.
pub fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("wingold")
}

/// What the cache remembers of a URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IndexEntry {
    sha256: String,
    version: String,
    size: u64,
    final_url: String,
    etag: Option<String>,
    last_modified: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    urls: BTreeMap<String, IndexEntry>,
}

/// A partial download and the validator that must still match to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartialMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    total: u64,
}

/// wingold.lock: the SHA-256 each virtio-win version had when first fetched.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LockFile {
    #[serde(default)]
    pub virtio_win: Vec<LockEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockEntry {
    pub version: String,
    pub sha256: String,
    pub url: String,
}

impl LockFile {
    pub fn load(path: &Path) -> Result<LockFile, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                Error::BadInput(format!(
                    "{}: {}",
                    path.display(),
                    e.to_string().replace('\n', " ")
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(io(path, "reading")(e)),
        }
    }

    fn save(&self, path: &Path) -> Result<(), Error> {
        let text = format!(
            "# wingold.lock: virtio-win versions and the SHA-256 they had when first fetched.\n\
             # Later fetches of a version must match. Keep it under version control.\n\n{}",
            toml::to_string(self).expect("serializable")
        );
        write_atomic(path, text.as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::fsutil::write_file(path, bytes, 0o644, crate::fsutil::Place::Replace)
        .map_err(io(path, "writing"))
}

struct Cache {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl Cache {
    /// Opens the cache folder, holding its lock file exclusively: two fetches into one
    /// cache take turns.
    fn open(dir: &Path) -> Result<Cache, Error> {
        for sub in ["", "objects", "partial"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(dir, "creating the cache folder"))?;
        }
        let lock_path = dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path, "opening"))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(&lock_path, "locking")(e.into()))?;
        Ok(Cache {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    fn index(&self) -> Index {
        std::fs::read(self.index_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save_index(&self, index: &Index) -> Result<(), Error> {
        write_atomic(
            &self.index_path(),
            &serde_json::to_vec_pretty(index).expect("serializable"),
        )
    }

    fn object(&self, sha256: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{sha256}.iso"))
    }

    fn named(&self, version: &str) -> PathBuf {
        self.dir.join(format!("virtio-win-{version}.iso"))
    }

    fn partial(&self, url: &str) -> (PathBuf, PathBuf) {
        let key = format!("{:x}", Sha256::digest(url.as_bytes()));
        let base = self.dir.join("partial").join(&key[..32]);
        (base.with_extension("partial"), base.with_extension("json"))
    }

    /// Moves a verified download into the store and names it by version.
    fn store(&self, from: &Path, sha256: &str, version: &str) -> Result<PathBuf, Error> {
        let obj = self.object(sha256);
        std::fs::rename(from, &obj).map_err(io(&obj, "storing"))?;
        self.name(sha256, version)
    }

    /// Points `virtio-win-<version>.iso` at the object `sha256`, unless it already
    /// does: two sources may give one version different bytes, and the name must
    /// always show the ISO just accepted.
    fn name(&self, sha256: &str, version: &str) -> Result<PathBuf, Error> {
        use std::os::unix::fs::MetadataExt;
        let obj = self.object(sha256);
        let named = self.named(version);
        let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
            _ => false,
        };
        if !same(&obj, &named) {
            let tmp = crate::fsutil::temp_name(&named);
            let _ = std::fs::remove_file(&tmp);
            std::fs::hard_link(&obj, &tmp).map_err(io(&named, "naming"))?;
            crate::fsutil::move_into_place(&tmp, &named, crate::fsutil::Place::Replace)
                .map_err(io(&named, "naming"))?;
        }
        Ok(named)
    }
}

/// The version, from the volume id `virtio-win-0.1.285` (what the bytes say), else
/// from a file name like `virtio-win-0.1.285.iso` in the URL.
fn version_of(final_url: &str, volume_id: &str) -> Option<String> {
    let from = |s: &str| {
        let i = s.rfind("virtio-win-")?;
        let rest = &s[i + "virtio-win-".len()..];
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let v = v.trim_end_matches('.').to_owned();
        check_version(&v).ok().map(|_| v)
    };
    from(volume_id).or_else(|| from(final_url.rsplit('/').next().unwrap_or("")))
}

/// The pin for `version`: flag, lock, then known table.
fn pin_for(opts: &Options, lock: &LockFile, version: &str) -> Option<(String, PinnedBy)> {
    if let Some(s) = &opts.sha256 {
        return Some((s.to_ascii_lowercase(), PinnedBy::Flag));
    }
    if let Some(e) = lock.virtio_win.iter().find(|e| e.version == version) {
        return Some((e.sha256.clone(), PinnedBy::Lock));
    }
    known()
        .into_iter()
        .find(|k| k.version == version)
        .map(|k| (k.sha256, PinnedBy::KnownTable))
}

/// Checks a finished download; returns its version.
fn verify_download(path: &Path, url: &str, final_url: &str) -> Result<String, Error> {
    let refused = |reason: String| Error::Refused {
        url: url.to_owned(),
        reason,
    };
    let mut head = [0u8; 512];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io(path, "reading"))?;
    let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    if text.trim_start().starts_with("<!doctype html") || text.contains("<html") {
        return Err(refused(
            "the server sent an HTML page (a bot check?), not an ISO image".into(),
        ));
    }
    let vid = iso::volume_id(path)
        .map_err(io(path, "reading"))?
        .ok_or_else(|| refused("not an ISO 9660 image (no `CD001` at byte 0x8001)".into()))?;
    if !vid.to_ascii_lowercase().starts_with("virtio-win") {
        return Err(refused(format!(
            "the ISO's volume id is {vid:?}, not virtio-win-…"
        )));
    }
    version_of(final_url, &vid).ok_or_else(|| {
        refused(format!(
            "no version in the file name or the volume id {vid:?}"
        ))
    })
}

/// What one HTTP attempt ended with.
enum Attempt {
    Done {
        final_url: String,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    NotModified,
    Retry(String),
}

struct Transfer {
    client: reqwest::blocking::Client,
    /// The URL as given, credentials included: only ever sent, never shown.
    request_url: String,
    /// The URL without credentials, for messages and records.
    url: String,
    partial: PathBuf,
    meta_path: PathBuf,
    hasher: Sha256,
    have: u64,
    progress: Option<indicatif::ProgressBar>,
}

fn header(resp: &reqwest::blocking::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Transfer {
    /// One GET: conditional on the cached copy, or resuming the partial file.
    fn attempt(&mut self, cached: Option<&IndexEntry>) -> Result<Attempt, Error> {
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
            Err(e) => return Ok(Attempt::Retry(describe(&e.without_url()))),
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
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
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
fn scrub(text: &str, request_url: &str) -> String {
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

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s += &format!(": {inner}");
        src = inner.source();
    }
    s
}

fn discard(partial: &Path, meta: &Path) {
    let _ = std::fs::remove_file(partial);
    let _ = std::fs::remove_file(meta);
}

/// Fetches (or finds in the cache) the ISO `opts` asks for.
pub fn fetch(opts: &Options) -> Result<Fetched, Error> {
    if let Some(s) = &opts.sha256 {
        if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::BadInput(format!(
                "--sha256 {s:?} is not a SHA-256 (64 hex digits)"
            )));
        }
    }
    let request_url = opts.source.url()?;
    // Credentials in the URL are sent with the request and nowhere else.
    let url = without_credentials(&request_url);
    let mut lock = LockFile::load(&opts.lock_file)?;
    let cache = Cache::open(&opts.cache)?;
    let mut index = cache.index();
    let cached = index
        .urls
        .get(&url)
        .cloned()
        .filter(|e| cache.object(&e.sha256).exists());

    let accept_cached = |e: &IndexEntry, lock: &LockFile| -> Result<Fetched, Error> {
        let (pin, by) =
            pin_for(opts, lock, &e.version).unwrap_or((e.sha256.clone(), PinnedBy::FirstUse));
        if pin != e.sha256 {
            return Err(Error::Refused {
                url: url.clone(),
                reason: format!(
                    "the cached {} has SHA-256 {}, but the pin says {pin}",
                    e.version, e.sha256
                ),
            });
        }
        Ok(Fetched {
            path: cache.name(&e.sha256, &e.version)?,
            version: e.version.clone(),
            sha256: e.sha256.clone(),
            size: e.size,
            url: url.clone(),
            final_url: e.final_url.clone(),
            from_cache: true,
            pinned_by: by,
        })
    };

    if opts.offline {
        return match &cached {
            Some(e) => accept_cached(e, &lock),
            None => Err(Error::BadInput(format!(
                "{url}: not in the cache {} and --offline forbids downloading; fetch it once online",
                opts.cache.display()
            ))),
        };
    }
    if url.starts_with("file://") {
        return fetch_file(opts, &url, &cache, &mut index, &mut lock);
    }

    let client = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.stall_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent(concat!("wingold/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Network {
            url: url.clone(),
            reason: describe(&e),
        })?;
    let (partial, meta_path) = cache.partial(&url);
    let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    let progress = opts.progress.then(|| {
        let p = indicatif::ProgressBar::new(0);
        p.set_style(
            indicatif::ProgressStyle::with_template(
                "{bytes}/{total_bytes} {bar:40} {bytes_per_sec} {eta}",
            )
            .expect("valid template"),
        );
        p
    });
    let mut t = Transfer {
        client,
        request_url: request_url.clone(),
        url: url.clone(),
        partial: partial.clone(),
        meta_path: meta_path.clone(),
        hasher: Sha256::new(),
        have,
        progress,
    };
    let mut delay = opts.backoff;
    let mut last_problem = String::new();
    let mut outcome = None;
    for attempt in 0..=opts.retries {
        if attempt > 0 {
            if !opts.progress {
                eprintln!(
                    "wingold: {url}: {last_problem}; retrying in {:.1} s",
                    delay.as_secs_f64()
                );
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        match t.attempt(cached.as_ref()) {
            Ok(Attempt::Retry(why)) => last_problem = scrub(&why, &request_url),
            Ok(done) => {
                outcome = Some(done);
                break;
            }
            Err(e) => {
                discard(&partial, &meta_path);
                return Err(e);
            }
        }
    }
    if let Some(p) = &t.progress {
        p.finish_and_clear();
    }
    let Some(outcome) = outcome else {
        return Err(Error::Network {
            url,
            reason: format!(
                "{last_problem} (gave up after {} attempts; the partial file is kept to resume)",
                opts.retries + 1
            ),
        });
    };
    let (final_url, etag, last_modified) = match outcome {
        Attempt::NotModified => {
            return accept_cached(
                cached.as_ref().expect("conditional only with a cache"),
                &lock,
            )
        }
        Attempt::Done {
            final_url,
            etag,
            last_modified,
        } => (final_url, etag, last_modified),
        Attempt::Retry(_) => unreachable!("retries end the loop"),
    };
    let sha256 = format!("{:x}", t.hasher.finalize_reset());
    let downloaded = Downloaded {
        partial: &partial,
        meta: &meta_path,
        url: &url,
        final_url: &final_url,
        sha256,
        size: t.have,
        etag,
        last_modified,
    };
    accept(opts, &cache, &mut index, &mut lock, downloaded)
}

/// A finished download, still under its partial name.
struct Downloaded<'a> {
    partial: &'a Path,
    meta: &'a Path,
    url: &'a str,
    final_url: &'a str,
    sha256: String,
    size: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// Checks a finished download (ISO, version, pin), then stores it, indexes it and
/// pins a first use. Refused: the partial file is deleted, nothing is stored.
fn accept(
    opts: &Options,
    cache: &Cache,
    index: &mut Index,
    lock: &mut LockFile,
    d: Downloaded,
) -> Result<Fetched, Error> {
    let checked = verify_download(d.partial, d.url, d.final_url).and_then(|version| {
        pin_check(opts, lock, d.url, &version, &d.sha256).map(|by| (version, by))
    });
    let (version, pinned_by) = match checked {
        Ok(v) => v,
        Err(e) => {
            discard(d.partial, d.meta);
            return Err(e);
        }
    };
    let path = cache.store(d.partial, &d.sha256, &version)?;
    let _ = std::fs::remove_file(d.meta);
    index.urls.insert(
        d.url.to_owned(),
        IndexEntry {
            sha256: d.sha256.clone(),
            version: version.clone(),
            size: d.size,
            final_url: d.final_url.to_owned(),
            etag: d.etag,
            last_modified: d.last_modified,
        },
    );
    cache.save_index(index)?;
    record_first_use(opts, lock, pinned_by, &version, &d.sha256, d.url)?;
    Ok(Fetched {
        path,
        version,
        sha256: d.sha256,
        size: d.size,
        url: d.url.to_owned(),
        final_url: d.final_url.to_owned(),
        from_cache: false,
        pinned_by,
    })
}

/// The pin check: the SHA-256 must equal the pin, when there is one.
fn pin_check(
    opts: &Options,
    lock: &LockFile,
    url: &str,
    version: &str,
    sha256: &str,
) -> Result<PinnedBy, Error> {
    match pin_for(opts, lock, version) {
        Some((pin, by)) if pin == sha256 => Ok(by),
        Some((pin, by)) => Err(Error::Refused {
            url: url.to_owned(),
            reason: format!(
                "SHA-256 {sha256} does not match the pin {pin} ({}) for virtio-win {version}",
                match by {
                    PinnedBy::Flag => "--sha256",
                    PinnedBy::Lock => "wingold.lock",
                    PinnedBy::KnownTable => "the known-versions table",
                    PinnedBy::FirstUse => "first use",
                }
            ),
        }),
        None => Ok(PinnedBy::FirstUse),
    }
}

fn record_first_use(
    opts: &Options,
    lock: &mut LockFile,
    by: PinnedBy,
    version: &str,
    sha256: &str,
    url: &str,
) -> Result<(), Error> {
    if by != PinnedBy::FirstUse {
        return Ok(());
    }
    eprintln!(
        "wingold: virtio-win {version} has no known checksum; trusting this download \
         (SHA-256 {sha256}) on first use and pinning it in {}",
        opts.lock_file.display()
    );
    lock.virtio_win.push(LockEntry {
        version: version.into(),
        sha256: sha256.into(),
        url: url.into(),
    });
    lock.save(&opts.lock_file)
}

/// A `file://` URL: copied into the cache while hashed, then checked like a download.
fn fetch_file(
    opts: &Options,
    url: &str,
    cache: &Cache,
    index: &mut Index,
    lock: &mut LockFile,
) -> Result<Fetched, Error> {
    let src = PathBuf::from(url.trim_start_matches("file://"));
    let meta =
        std::fs::metadata(&src).map_err(|e| Error::BadInput(format!("{}: {e}", src.display())))?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| format!("mtime {}.{:09}", d.as_secs(), d.subsec_nanos()));
    // The same file unchanged (size and mtime): nothing to copy.
    if let Some(e) = index.urls.get(url).filter(|e| {
        e.size == meta.len() && e.last_modified == stamp && cache.object(&e.sha256).exists()
    }) {
        let e = e.clone();
        let by = pin_check(opts, lock, url, &e.version, &e.sha256)?;
        return Ok(Fetched {
            path: cache.name(&e.sha256, &e.version)?,
            version: e.version,
            sha256: e.sha256,
            size: e.size,
            url: url.into(),
            final_url: url.into(),
            from_cache: true,
            pinned_by: by,
        });
    }
    let (partial, meta_path) = cache.partial(url);
    let mut hasher = Sha256::new();
    let copied = (|| -> std::io::Result<u64> {
        let mut input = File::open(&src)?;
        let mut out = File::create(&partial)?;
        let mut buf = vec![0u8; CHUNK];
        let mut n_total = 0u64;
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            n_total += n as u64;
        }
        out.sync_all()?;
        Ok(n_total)
    })()
    .map_err(io(&src, "copying"));
    let size = match copied {
        Ok(s) => s,
        Err(e) => {
            discard(&partial, &meta_path);
            return Err(e);
        }
    };
    let downloaded = Downloaded {
        partial: &partial,
        meta: &meta_path,
        url,
        final_url: url,
        sha256: format!("{:x}", hasher.finalize()),
        size,
        etag: None,
        last_modified: stamp,
    };
    accept(opts, cache, index, lock, downloaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_table_parses() {
        let k = known();
        assert!(k
            .iter()
            .any(|k| k.version == "0.1.285" && k.sha256.len() == 64));
    }

    #[test]
    fn versions_from_names() {
        assert_eq!(
            version_of("https://x/virtio-win-0.1.285.iso", "").as_deref(),
            Some("0.1.285")
        );
        assert_eq!(
            version_of("https://x/virtio-win.iso", "virtio-win-0.1.271").as_deref(),
            Some("0.1.271")
        );
        assert_eq!(version_of("https://x/virtio-win.iso", "CDROM"), None);
    }

    #[test]
    fn archive_urls_carry_the_release() {
        let u = Source::Version("0.1.285".into()).url().unwrap();
        assert!(
            u.ends_with("/archive-virtio/virtio-win-0.1.285-1/virtio-win-0.1.285.iso"),
            "{u}"
        );
        assert!(Source::Version("1.2".into()).url().is_err());
        assert!(Source::Url("ftp://x".into()).url().is_err());
    }
}
