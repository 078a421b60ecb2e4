//! Errors of the image layer. Each names the file and what is wrong with it.

use crate::error::Kind;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot open", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{}: not a usable disk image: {reason}", path.display())]
    NotAnImage { path: PathBuf, reason: String },

    #[error("{}: qcow2 image is damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    #[error("{}: {what} is not supported: {hint}", path.display())]
    Unsupported {
        path: PathBuf,
        what: String,
        hint: String,
    },

    #[error(
        "{}: the image is in use by another program (a running QEMU?): {reason}; \
         shut the VM down first",
        path.display()
    )]
    Locked { path: PathBuf, reason: String },

    #[error("{}: the image was opened read-only", path.display())]
    ReadOnly { path: PathBuf },

    #[error("{}: backing file {} cannot be used", path.display(), backing.display())]
    Backing {
        path: PathBuf,
        backing: PathBuf,
        #[source]
        source: Box<Error>,
    },

    #[error("{}: already exists; remove it or choose another name", path.display())]
    Exists { path: PathBuf },

    #[error("{}: no partition table: {reason}", path.display())]
    NoPartitionTable { path: PathBuf, reason: String },

    #[error("{}: partition table is damaged: {reason}", path.display())]
    BadPartitionTable { path: PathBuf, reason: String },

    #[error("access of {len} bytes at offset {offset} lies outside the device ({size} bytes)")]
    OutOfRange { offset: u64, len: usize, size: u64 },

    #[error("invalid size {text:?}: {reason}")]
    BadSize { text: String, reason: String },

    #[error("{}: {op} failed", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{}: qcow2 {op} failed: {reason}", path.display())]
    Qcow2 {
        path: PathBuf,
        op: &'static str,
        reason: String,
    },
}

impl Error {
    pub(crate) fn open(path: &Path, source: io::Error) -> Self {
        Error::Open {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(
        path: &Path,
        what: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Error::Unsupported {
            path: path.to_owned(),
            what: what.into(),
            hint: hint.into(),
        }
    }
}

crate::error::classify! {
    impl Classify for Error {
        fn kind(&self) -> Kind {
            match self {
                Error::Open { source, .. } => crate::error::open_kind(source),
                Error::Backing { source, .. } => source.kind(),
                // Writing through a read-only handle is wingold's mistake, not the user's.
                Error::Io { .. }
                | Error::Qcow2 { .. }
                | Error::OutOfRange { .. }
                | Error::ReadOnly { .. } => Kind::Failure,
                Error::NotAnImage { .. }
                | Error::Corrupt { .. }
                | Error::Unsupported { .. }
                | Error::Locked { .. }
                | Error::Exists { .. }
                | Error::NoPartitionTable { .. }
                | Error::BadPartitionTable { .. }
                | Error::BadSize { .. } => Kind::BadInput,
            }
        }
    }
}
