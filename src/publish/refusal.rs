//! Why a publish is refused: the options or the image given are wrong. Found before anything is uploaded or written.

use crate::error::Setting;

use std::path::PathBuf;

/// A refused publish.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("give docker://HOST/REPO[:TAG] and/or {} DIR", Setting::OciLayout)]
    NoDestination,

    #[error("{tag} {0:?}: not a valid tag", tag = Setting::Tag)]
    Tag(String),

    #[error(
        "{created} {0:?}: give an RFC 3339 time, e.g. 2026-11-30T12:00:00Z",
        created = Setting::Created
    )]
    Created(String),

    #[error(
        "{}: has a backing file ({}); KubeVirt refuses such images: publish a golden \
         image (wingold build), not a clone",
        .golden.display(),
        .backing.display()
    )]
    HasBacking { golden: PathBuf, backing: PathBuf },

    #[error(
        "{}: no {}.manifest.json beside it: publish what wingold build made",
        .golden.display(),
        .version.display()
    )]
    NoManifest { golden: PathBuf, version: PathBuf },

    #[error("{}: its manifest does not parse: {reason}", .golden.display())]
    Manifest { golden: PathBuf, reason: String },

    #[error(
        "{}: its size differs from its manifest's: not the file wingold built",
        .golden.display()
    )]
    SizeDiffers { golden: PathBuf },

    #[error(
        "{}: not an OCI image index; give {layout} an empty folder or an OCI layout",
        .index.display(),
        layout = Setting::OciLayout
    )]
    NotALayout { index: PathBuf },
}

crate::error::classify! {
    impl Classify for Refusal {
        fn kind(&self) -> crate::error::Kind {
            crate::error::Kind::BadInput
        }
    }
}
