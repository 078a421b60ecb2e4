//! Why a first-boot or copy-in request is refused: the scripts, the files or the
//! Windows found do not fit. Found before anything is written.

use crate::error::Setting;

use crate::guest::names::Problem;
use std::path::PathBuf;

/// A refused first-boot or copy-in request.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{watchdog}: {product} has no built-in way to reset a network adapter (no \
         Network Connections folder to script; devcon is a separate Microsoft tool): not \
         installed",
        watchdog = Setting::NicWatchdog
    )]
    NoAdapterReset { product: String },

    #[error(
        "{agent}: QEMU's guest agent targets Windows 8 / Server 2012 and later (QEMU's \
         supported build platforms); {product} is older: not installed",
        agent = Setting::GuestAgent
    )]
    NoGuestAgent { product: String },

    #[error(
        "{agent}: the virtio-win ISO has no guest agent for {arch} Windows",
        agent = Setting::GuestAgent
    )]
    NoAgentMsi { arch: String },

    #[error(
        "{option} {target:?}: give an IP address or a host name",
        option = Setting::WatchdogTarget
    )]
    WatchdogTarget { target: String },

    #[error("{option} {failures}: give 1 to 100", option = Setting::WatchdogFailures)]
    WatchdogFailures { failures: u32 },

    #[error(
        "{}: this Windows ({product}) has no PowerShell \
         (System32\\WindowsPowerShell\\v1.0\\powershell.exe); give a .cmd script",
        .script.display()
    )]
    NoPowerShell { script: PathBuf, product: String },

    #[error("{}: a first-boot script must be .cmd, .bat or .ps1", .script.display())]
    ScriptType { script: PathBuf },

    #[error(
        "{}: cannot read the first-boot service binary; install Debian's rhsrvany package \
         (bookworm-backports), as make setup does",
        .binary.display()
    )]
    NoServiceBinary {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{guest}: only the Windows volume (C:) is written; give C:\\… or \\…")]
    OtherVolume { guest: String },

    #[error("{guest}: {why}; give an absolute path on C:, as C:\\Tools")]
    NotOnVolume { guest: String, why: &'static str },

    #[error("{guest}: name a folder, not the volume's root")]
    VolumeRoot { guest: String },

    #[error("{guest}: {to} is {what}; copy-in does not write there")]
    Owned {
        guest: String,
        to: String,
        what: &'static str,
    },

    #[error("{guest}: no . or .. in guest paths")]
    Dots { guest: String },

    #[error("{guest}: {part:?}: {problem}")]
    GuestName {
        guest: String,
        part: String,
        problem: Problem,
    },

    #[error("{}: a symbolic link; copy-in takes files and folders only", .path.display())]
    Symlink { path: PathBuf },

    #[error("{}: not a file or folder; copy-in takes files and folders only", .path.display())]
    NotFileOrFolder { path: PathBuf },

    #[error("{}: a name that is not UTF-8", .path.display())]
    NotUtf8Name { path: PathBuf },

    #[error("{}: {name:?}: {problem}", .path.display())]
    LocalName {
        path: PathBuf,
        name: String,
        problem: Problem,
    },

    #[error("{}: {name:?} and {other:?} differ only in case; Windows holds one", .path.display())]
    CaseTwins {
        path: PathBuf,
        name: String,
        other: String,
    },
}

crate::error::classify! {
    impl Classify for Refusal {
        fn kind(&self) -> crate::error::Kind {
            match self {
                // The default binary missing is a host without rhsrvany; a named one, a
                // path that leads nowhere.
                Refusal::NoServiceBinary { source, .. } => crate::error::open_kind(source),
                _ => crate::error::Kind::BadInput,
            }
        }
    }
}
