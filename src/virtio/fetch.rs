//! Fetching the virtio-win ISO so that people can trust it: streamed into a
//! `.partial` file while hashed in the same pass, resumed with `Range` + `If-Range`,
//! retried with backoff, checked (ISO 9660 with a virtio-win volume id, the announced
//! size, the pinned SHA-256) before it is accepted, and cached by content. A second
//! fetch sends one conditional request and transfers nothing when nothing changed.

use crate::net::{Stop, Try};

mod cache;
mod local;
mod source;
mod transfer;

use super::{iso, Error};
use crate::error::Setting;
use cache::*;
pub use cache::{LockEntry, LockFile};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use source::known;
pub use source::{check_version, Source};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use transfer::without_credentials;
use transfer::*;

/// fedorapeople's direct-downloads tree (virtio-win-pkg-scripts `README.md`,
/// `make-repo.py`).
pub const DIRECT_DOWNLOADS: &str =
    "https://fedorapeople.org/groups/virt/virtio-win/direct-downloads";
const KNOWN: &str = include_str!("../../assets/virtio-win-known.toml");
const CHUNK: usize = 256 * 1024;

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// What pinned the accepted SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

impl std::fmt::Display for PinnedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PinnedBy::Flag => return Setting::Sha256.fmt(f),
            PinnedBy::Lock => "wingold.lock",
            PinnedBy::KnownTable => "the known-versions table",
            PinnedBy::FirstUse => "first use",
        })
    }
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

impl Fetched {
    /// The ISO at `path`, fetched from `url` as the cache index records it.
    fn of(path: PathBuf, url: &str, e: &IndexEntry, from_cache: bool, by: PinnedBy) -> Fetched {
        Fetched {
            path,
            version: e.version.clone(),
            sha256: e.sha256.clone(),
            size: e.size,
            url: url.to_owned(),
            final_url: e.final_url.clone(),
            from_cache,
            pinned_by: by,
        }
    }
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

impl Options {
    /// Fetching `source` with the defaults `fetch` and `build` share: the default
    /// cache, pins in `lock_file`, 4 retries, 30 s to connect or between bytes.
    pub fn new(source: Source, lock_file: PathBuf) -> Options {
        Options {
            source,
            sha256: None,
            cache: default_cache(),
            lock_file,
            offline: false,
            progress: false,
            retries: 4,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
        }
    }
}

/// The default cache folder: `$XDG_CACHE_HOME/wingold`, else `~/.cache/wingold`.
pub fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("wingold")
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

/// Fetches (or finds in the cache) the ISO `opts` asks for.
pub fn fetch(opts: &Options) -> Result<Fetched, Error> {
    if let Some(s) = &opts.sha256 {
        if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::BadSha256(s.clone()));
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
        let path = cache.name(&e.sha256, &e.version)?;
        Ok(Fetched::of(path, &url, e, true, by))
    };

    if opts.offline {
        return match &cached {
            Some(e) => accept_cached(e, &lock),
            None => Err(Error::NotCached {
                url,
                cache: opts.cache.clone(),
            }),
        };
    }
    if url.starts_with("file://") {
        return local::fetch_file(opts, &url, &cache, &mut index, &mut lock);
    }

    let client = reqwest::blocking::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.stall_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent(concat!("wingold/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Network {
            url: url.clone(),
            reason: crate::net::one_line(&e),
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
    let result = crate::net::with_backoff(
        opts.retries,
        opts.backoff,
        || match t.attempt(cached.as_ref()) {
            Ok(Attempt::Retry(why)) => Try::Again(scrub(&why, &request_url)),
            Ok(done) => Try::Done(done),
            Err(e) => Try::Fail(e),
        },
        |why, wait| {
            if !opts.progress {
                crate::note::say(format!(
                    "{url}: {why}; retrying in {:.1} s",
                    wait.as_secs_f64()
                ));
            }
        },
    );
    if let Some(p) = &t.progress {
        p.finish_and_clear();
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(Stop::Failed(e)) => {
            discard(&partial, &meta_path);
            return Err(e);
        }
        Err(Stop::GaveUp(last_problem)) => {
            return Err(Error::Network {
                url,
                reason: format!(
                    "{last_problem} (gave up after {} attempts; the partial file is kept to \
                     resume)",
                    opts.retries + 1
                ),
            })
        }
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
        Attempt::Retry(_) => unreachable!("with_backoff returns no retry"),
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
    let entry = IndexEntry {
        sha256: d.sha256,
        version,
        size: d.size,
        final_url: d.final_url.to_owned(),
        etag: d.etag,
        last_modified: d.last_modified,
    };
    let fetched = Fetched::of(path, d.url, &entry, false, pinned_by);
    index.urls.insert(d.url.to_owned(), entry);
    cache.save_index(index)?;
    record_first_use(
        opts,
        lock,
        pinned_by,
        &fetched.version,
        &fetched.sha256,
        d.url,
    )?;
    Ok(fetched)
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
                "SHA-256 {sha256} does not match the pin {pin} ({by}) for virtio-win {version}"
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
    crate::note::say(format!(
        "virtio-win {version} has no known checksum; trusting this download \
         (SHA-256 {sha256}) on first use and pinning it in {}",
        opts.lock_file.display()
    ));
    lock.virtio_win.push(LockEntry {
        version: version.into(),
        sha256: sha256.into(),
        url: url.into(),
    });
    lock.save(&opts.lock_file)
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
