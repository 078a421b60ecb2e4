//! The content-addressed cache (objects by SHA-256, an index of URLs with their
//! validators, partial downloads) and `wingold.lock`, the first-use pins.

use super::{io, Error};
use serde::Deserialize;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::path::Path;
use std::path::PathBuf;
/// What the cache remembers of a URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct IndexEntry {
    pub(super) sha256: String,
    pub(super) version: String,
    pub(super) size: u64,
    pub(super) final_url: String,
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Index {
    pub(super) urls: BTreeMap<String, IndexEntry>,
}

/// A partial download and the validator that must still match to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PartialMeta {
    pub(super) url: String,
    pub(super) etag: Option<String>,
    pub(super) last_modified: Option<String>,
    pub(super) total: u64,
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
            Ok(text) => toml::from_str(&text).map_err(|e| Error::LockFile {
                path: path.to_owned(),
                reason: e.to_string().replace('\n', " "),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockFile::default()),
            Err(e) => Err(io(path, "reading")(e)),
        }
    }

    pub(super) fn save(&self, path: &Path) -> Result<(), Error> {
        let text = format!(
            "# wingold.lock: virtio-win versions and the SHA-256 they had when first fetched.\n\
             # Later fetches of a version must match. Keep it under version control.\n\n{}",
            toml::to_string(self).expect("serializable")
        );
        write_atomic(path, text.as_bytes())
    }
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    crate::fsutil::write_file(path, bytes, 0o644, crate::fsutil::Place::Replace)
        .map_err(io(path, "writing"))
}

pub(super) struct Cache {
    pub(super) dir: PathBuf,
    pub(super) _lock: nix::fcntl::Flock<File>,
}

impl Cache {
    /// Opens the cache folder, holding its lock file exclusively: two fetches into one
    /// cache take turns.
    pub(super) fn open(dir: &Path) -> Result<Cache, Error> {
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

    pub(super) fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    pub(super) fn index(&self) -> Index {
        std::fs::read(self.index_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(super) fn save_index(&self, index: &Index) -> Result<(), Error> {
        write_atomic(
            &self.index_path(),
            &serde_json::to_vec_pretty(index).expect("serializable"),
        )
    }

    pub(super) fn object(&self, sha256: &str) -> PathBuf {
        self.dir.join("objects").join(format!("{sha256}.iso"))
    }

    pub(super) fn named(&self, version: &str) -> PathBuf {
        self.dir.join(format!("virtio-win-{version}.iso"))
    }

    pub(super) fn partial(&self, url: &str) -> (PathBuf, PathBuf) {
        let key = crate::fsutil::sha256_hex(url.as_bytes());
        let base = self.dir.join("partial").join(&key[..32]);
        (base.with_extension("partial"), base.with_extension("json"))
    }

    /// Moves a verified download into the store and names it by version.
    pub(super) fn store(&self, from: &Path, sha256: &str, version: &str) -> Result<PathBuf, Error> {
        let obj = self.object(sha256);
        std::fs::rename(from, &obj).map_err(io(&obj, "storing"))?;
        self.name(sha256, version)
    }

    /// Points `virtio-win-<version>.iso` at the object `sha256`, unless it already
    /// does: two sources may give one version different bytes, and the name must
    /// always show the ISO just accepted.
    pub(super) fn name(&self, sha256: &str, version: &str) -> Result<PathBuf, Error> {
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
