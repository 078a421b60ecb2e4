//! Errors of the NTFS layer, each saying what happened and, where Windows can fix it,
//! what to do there.

use std::io;

pub type Result<T> = std::result::Result<T, Error>;

/// What to do inside Windows when its volume is not safe to write offline.
pub const SHUTDOWN_HINT: &str = "boot Windows, run `powercfg /h off` as administrator, \
                                 then shut down fully with `shutdown /s /t 0`";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{volume}: no NTFS filesystem here ({reason})")]
    NotNtfs { volume: String, reason: String },

    #[error("{volume}: Windows is hibernated or used Fast Startup ({evidence}); {SHUTDOWN_HINT}")]
    Hibernated { volume: String, evidence: String },

    #[error(
        "{volume}: the NTFS volume is marked dirty (Windows wants chkdsk); boot Windows, \
         run `chkdsk /f` on it, then shut down fully"
    )]
    Dirty { volume: String },

    /// Metadata NTFS keeps twice disagrees: a write to the volume was cut off
    /// between its two copies (a killed run, a crash), and chkdsk has to settle it.
    #[error(
        "{volume}: the NTFS volume needs repair ({reason}: a write to it was cut off); \
         boot Windows once so that chkdsk repairs it, or run `ntfsfix` on the partition"
    )]
    NeedsRepair { volume: String, reason: String },

    #[error("{volume}: libntfs-3g cannot mount it: {reason}")]
    Mount { volume: String, reason: String },

    #[error(
        "{volume}: the volume came up read-only, so nothing would be written; {SHUTDOWN_HINT}"
    )]
    NotWritable { volume: String },

    #[error("{volume}: {path}: not found")]
    NotFound { volume: String, path: String },

    #[error("{volume}: {path}: not a directory")]
    NotADirectory { volume: String, path: String },

    #[error("{volume}: {path}: invalid path ({reason})")]
    BadPath {
        volume: String,
        path: String,
        reason: String,
    },

    /// `reason` holds the cause (libntfs-3g's message, or the OS error), printed
    /// once; the OS error is kept, not chained, so it is not printed twice.
    #[error("{volume}: {path}: {op} failed: {reason}")]
    Op {
        volume: String,
        path: String,
        op: &'static str,
        reason: String,
        errno: io::Error,
    },

    #[error("{volume}: {path}: a folder, where a file is expected")]
    NotAFile { volume: String, path: String },

    #[error("the volume is open read-only")]
    ReadOnly,

    #[error(transparent)]
    Image(#[from] crate::image::Error),
}

crate::error::classify! {
    impl Classify for Error {
        /// The input being wrong or unsafe to use is bad input; the rest failures.
        fn kind(&self) -> crate::error::Kind {
            use crate::error::Kind;
            match self {
                Error::NotNtfs { .. }
                | Error::Hibernated { .. }
                | Error::Dirty { .. }
                | Error::NeedsRepair { .. }
                | Error::Mount { .. }
                | Error::NotFound { .. }
                | Error::NotADirectory { .. }
                | Error::NotAFile { .. }
                | Error::BadPath { .. } => Kind::BadInput,
                Error::Image(e) => e.kind(),
                Error::NotWritable { .. } | Error::Op { .. } | Error::ReadOnly => Kind::Failure,
            }
        }
    }
}
