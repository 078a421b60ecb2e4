//! The one error type of the virtio layer: fetching, caching and pinning the ISO,
//! and reading it.

use crate::error::Setting;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid virtio-win version {0:?}: expected 0.1.NNN")]
    BadVersion(String),
    #[error("unsupported URL {0:?}: use http://, https:// or file://")]
    BadUrl(String),
    #[error("{sha} {0:?} is not a SHA-256 (64 hex digits)", sha = Setting::Sha256)]
    BadSha256(String),
    #[error(
        "{url}: not in the cache {} and {offline} forbids downloading; fetch it once online",
        cache.display(),
        offline = Setting::Offline
    )]
    NotCached { url: String, cache: PathBuf },
    #[error(transparent)]
    Input(#[from] crate::input::Error),
    #[error("{}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    LockFile { path: PathBuf, reason: String },
    #[error("{url}: {reason}")]
    Refused { url: String, reason: String },
    #[error("{url}: {reason}")]
    Network { url: String, reason: String },
    #[error(transparent)]
    Media(#[from] crate::media::Error),
    #[error("{}: {op} failed", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

crate::error::classify! {
    impl Classify for Error {
        /// Bad input: a wrong pin, a refused download, a bad argument (and what the
        /// ISO reader says of the file); failures: the network's, a read's, a write's.
        fn kind(&self) -> crate::error::Kind {
            match self {
                Error::BadVersion(_)
                | Error::BadUrl(_)
                | Error::BadSha256(_)
                | Error::NotCached { .. }
                | Error::LockFile { .. }
                | Error::Refused { .. } => crate::error::Kind::BadInput,
                Error::Media(e) => crate::error::Classify::kind(e),
                Error::Local { source, .. } => crate::error::open_kind(source),
                Error::Input(e) => crate::error::Classify::kind(e),
                Error::Network { .. } | Error::Io { .. } => crate::error::Kind::Failure,
            }
        }
    }
}
