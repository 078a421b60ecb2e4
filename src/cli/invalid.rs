//! What the command line (or a config section only the CLI acts on) gets wrong,
//! found before anything is written.

use std::path::PathBuf;

/// A refused command line.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("--for {0:?}: expected OS/ARCH, e.g. 2k3/x86")]
    ForSpec(String),

    #[error("give --output OUT (an overlay backed by IMAGE) or --in-place")]
    InjectMode,

    #[error("--copy-in {0}: give LOCAL:GUEST_PATH, e.g. payload/:C:\\Tools")]
    CopyInSpec(String),

    #[error("--install needs --windows-iso and --virtio-iso")]
    InstallIsos,

    #[error("--password-stdin: no password on standard input")]
    NoPassword,

    #[error("--password-stdin: the first line of standard input is over 64 KiB; give the password alone")]
    LongPassword,

    #[error("{}: [publish] to: {reason}", .config.display())]
    PublishTo {
        config: PathBuf,
        reason: crate::registry::BadReference,
    },

    #[error("{}: [publish] tags: {tag:?} is no valid tag", .config.display())]
    PublishTag { config: PathBuf, tag: String },
}

crate::error::classify! {
    impl Classify for Invalid {
        fn kind(&self) -> crate::error::Kind {
            use crate::error::Kind;
            match self {
                Invalid::ForSpec(_)
                | Invalid::InjectMode
                | Invalid::CopyInSpec(_)
                | Invalid::InstallIsos => Kind::Usage,
                Invalid::NoPassword
                | Invalid::LongPassword
                | Invalid::PublishTo { .. }
                | Invalid::PublishTag { .. } => Kind::BadInput,
            }
        }
    }
}
