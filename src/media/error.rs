//! The media layer's one error type: files that do not fit a floppy, and disc
//! images or imaging files that cannot be read.

use super::fat12::ROOT_ENTRIES;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name:?}: not an 8.3 name of letters, digits and _-")]
    Name { name: String },
    #[error("{count} files: a floppy's root folder holds {ROOT_ENTRIES} entries with its label")]
    TooMany { count: usize },
    #[error("{bytes} bytes: more than a 1.44 MB floppy holds")]
    TooLarge { bytes: usize },
    #[error("{}: not an ISO 9660 image ({reason})", path.display())]
    NotIso { path: PathBuf, reason: String },
    #[error("{}: damaged ISO 9660 image: {reason}", path.display())]
    DamagedIso { path: PathBuf, reason: String },
    #[error("{}: no UDF file system ({reason}): not a Windows Vista or later installer ISO", path.display())]
    NotUdf { path: PathBuf, reason: String },
    #[error("{}: damaged UDF file system: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("{}: no sources/install.wim or sources/install.esd: not a Windows Vista or later installer ISO", path.display())]
    NoInstallImage { path: PathBuf },
    #[error("{}: not a Windows imaging file: {reason}", path.display())]
    NotWim { path: PathBuf, reason: String },
    #[error(transparent)]
    Input(#[from] crate::input::Error),
    #[error("{}: read failed", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(super) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

crate::error::classify! {
    impl Classify for Error {
        /// What the user gave is wrong or damaged; a read that fails is not.
        fn kind(&self) -> crate::error::Kind {
            match self {
                Error::Io { .. } => crate::error::Kind::Failure,
                Error::Input(e) => crate::error::Classify::kind(e),
                _ => crate::error::Kind::BadInput,
            }
        }
    }
}
