//! Errors of the hive layer: each names the hive and, where there is one, the key.

use super::MAX_VALUE_DATA;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name}: not a registry hive: {reason}")]
    NotAHive { name: String, reason: String },

    #[error("{name}: libhivex cannot open it: {reason}")]
    Open { name: String, reason: String },

    #[error(
        "{name}: the hive is damaged ({problem}); wingold does not write into it. Windows \
         repairs a hive when it loads it: boot the image once, shut it down, and run again"
    )]
    Damaged {
        name: String,
        problem: super::index::Error,
    },

    #[error(
        "{name}: the hive needs repair: a write to it was interrupted ({reason}) and its \
         body cannot be read; restore it from a copy of the image"
    )]
    NeedsRepair { name: String, reason: String },

    #[error("{name}: cannot stage the hive in a temporary file")]
    Temp {
        name: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{name}: {path}: {reason}")]
    Read {
        name: String,
        path: String,
        reason: String,
    },

    #[error(
        "{name}: the hive is dirty ({why}) and nothing in its transaction logs brings it \
         up to date, so wingold does not write into it: copy its .LOG1 and .LOG2 (or \
         .LOG) along with it, or boot Windows and shut it down fully \
         (`shutdown /s /t 0`), then try again"
    )]
    Dirty { name: String, why: String },

    #[error(
        "{name}: {reason}; wingold does not use it. Boot Windows once so that it repairs \
         the hive, shut it down fully, and try again"
    )]
    LogReplay { name: String, reason: String },

    #[error("{name}: {path}: {op} failed")]
    Write {
        name: String,
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{name}: {path}: holds the name {found:?} with a NUL character in it; libhivex \
         compares and writes names as C strings and would merge or rename it, so this \
         key is not changed"
    )]
    NulInName {
        name: String,
        path: String,
        found: String,
    },

    #[error(
        "{name}: {path}: a value of {len} bytes is more than libhivex can write \
         ({MAX_VALUE_DATA} bytes at most)"
    )]
    ValueTooLarge {
        name: String,
        path: String,
        len: usize,
    },

    #[error("{name}: the root key of a hive cannot be deleted (delete its subkeys instead)")]
    RootDelete { name: String },

    #[error(
        "{name}: cannot add keys named outside ASCII: the subkey indexes do not read as \
         Windows writes them"
    )]
    Index {
        name: String,
        #[source]
        source: super::index::Error,
    },

    #[error("{name}: the hive was opened read-only")]
    ReadOnly { name: String },
}

crate::error::classify! {
    impl Classify for Error {
        fn kind(&self) -> crate::error::Kind {
            let bad_input = matches!(
                self,
                Error::NotAHive { .. }
                    | Error::Open { .. }
                    | Error::Dirty { .. }
                    | Error::LogReplay { .. }
                    | Error::NeedsRepair { .. }
                    | Error::Damaged { .. }
                    | Error::Index { .. }
                    | Error::NulInName { .. }
                    | Error::RootDelete { .. }
                    | Error::ValueTooLarge { .. }
            );
            if bad_input {
                crate::error::Kind::BadInput
            } else {
                crate::error::Kind::Failure
            }
        }
    }
}
