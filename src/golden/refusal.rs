//! Why the golden layer refuses a job: its config, its paths or what it would do
//! to the image are wrong. Each is bad input, found before anything is written.

use crate::error::Setting;

use std::path::PathBuf;

/// A refused build, inject or clone.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{}: not UTF-8 text", .config.display())]
    NotUtf8 { config: PathBuf },

    #[error(
        "hostname {name:?}: {why}; Windows refuses such a computer name: use at most 15 \
         letters, digits and hyphens, not only digits"
    )]
    Hostname { name: String, why: &'static str },

    #[error(
        "hostname {name:?} is already the name of the clone {} in this folder: choose \
         another, or give {force} to allow two machines of one name",
        .other.display(),
        force = Setting::Force
    )]
    HostnameTaken { name: String, other: PathBuf },

    #[error(
        "time zone {zone:?}: the golden's Windows does not know it (no key of that name \
         under SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Time Zones): give a \
         Windows time zone id such as \"W. Europe Standard Time\" or \"UTC\""
    )]
    TimeZone { zone: String },

    #[error(
        "{what} needs a sealed golden (`sysprep /generalize /oobe`): an unsealed Windows \
         reads no answer file at its next boot; seal the golden, or set it in the golden \
         itself"
    )]
    NeedsSealedGolden { what: Setting },

    #[error(
        "{what}: the golden is a Windows NT 5 sysprep image, whose sysprep.inf takes a \
         password only as hashes, a time zone only as an index and no offline domain join: \
         set them in the golden's own C:\\sysprep\\sysprep.inf (wingold sets the computer \
         name there)"
    )]
    Nt5Answer { what: Setting },

    #[error("{}: {why}: a password file holds the password alone, on one line", .file.display())]
    Secret { file: PathBuf, why: &'static str },

    #[error(
        "{}: {why}: give the file `djoin /provision ... /savefile` wrote",
        .file.display()
    )]
    DomainJoin { file: PathBuf, why: &'static str },

    #[error("{}: {message}", .spec.display())]
    Spec { spec: PathBuf, message: String },

    #[error(
        "{format} kubevirt needs a sealed golden (`sysprep /generalize /oobe`): KubeVirt \
         starts every VM from the containerDisk itself, so a clone's name can only reach \
         Windows through the answer file of a sysprep volume, which only a sealed Windows \
         reads",
        format = Setting::Format
    )]
    KubevirtUnsealed,

    #[error(
        "{}: {reason}: UEFI needs OVMF's firmware (Debian package ovmf; `make setup` \
         installs it)",
        .path.display()
    )]
    NoOvmf { path: PathBuf, reason: String },

    #[error(
        "{format} kubevirt: this golden version was never published (no {}): publish it \
         first, or give the containerDisk with {image} REF",
        .record.display(),
        format = Setting::Format,
        image = Setting::Image
    )]
    NotPublished { record: PathBuf },

    #[error("{}:{line}:{column}: {message}", .config.display())]
    Syntax {
        config: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{}: [virtio_win] takes one of channel, version, url or iso", .config.display())]
    VirtioSources { config: PathBuf },

    #[error(
        "{}: [virtio_win] channel must be stable or latest, not {channel:?}",
        .config.display()
    )]
    Channel { config: PathBuf, channel: String },

    #[error(
        "{}: [golden] output: {}: a golden image needs a UTF-8 file name",
        .config.display(),
        .output.display()
    )]
    ConfigOutput { config: PathBuf, output: PathBuf },

    #[error("{}: a golden image needs a UTF-8 file name", .output.display())]
    OutputName { output: PathBuf },

    #[error(
        "{}: the output is {what} ({}); an output can never be an input: choose another \
         output",
        .output.display(),
        .input.display()
    )]
    OutputIsInput {
        output: PathBuf,
        what: &'static str,
        input: PathBuf,
    },

    #[error(
        "{}: the golden output lies inside {}, a tree copied into the guest ([[files]]); \
         the next build would copy the golden image into itself: put the output elsewhere",
        .output.display(),
        .tree.display()
    )]
    OutputInTree { output: PathBuf, tree: PathBuf },

    #[error("{}: the path {path:?} holds a NUL character; no file can be named so", .config.display())]
    NulInPath { config: PathBuf, path: String },

    #[error(
        "{}: is a file, not the symlink to a golden version that wingold keeps there; \
         clones may rest on it, so it is not replaced: move it away (and `qemu-img rebase \
         -u -b NEW_PATH` the clones that use it), then build again",
        .stable.display()
    )]
    StableIsFile { stable: PathBuf },

    #[error(
        "{}: is the golden version {}; clones rest on its bytes and it is never rewritten: \
         inject into an overlay ({output}) or build a new version",
        .image.display(),
        .version.display(),
        output = Setting::Output
    )]
    GoldenVersion { image: PathBuf, version: PathBuf },

    #[error("{}: not a folder of clones", .dir.display())]
    NotCloneFolder { dir: PathBuf },

    #[error("{}: no such golden image", .golden.display())]
    NoGolden { golden: PathBuf },

    #[error(
        "nothing to apply: give {} NAME, {} FILE, {} ISO, {} SCRIPT and/or {} LOCAL:GUEST",
        Setting::Profile,
        Setting::Reg,
        Setting::Drivers,
        Setting::Firstboot,
        Setting::CopyIn
    )]
    NothingToApply,

    #[error(
        "unknown profile {name:?}; known: {}, all (see {list})",
        .known.join(", "),
        list = Setting::ListProfiles
    )]
    UnknownProfile {
        name: String,
        known: Vec<&'static str>,
    },

    /// `culprit` is `file:line` of the edit that did it, when one did.
    #[error(
        "{}this edit would leave Windows unbootable: {problem}; give {force} if you mean it",
        .culprit.as_deref().map(|c| format!("{c}: ")).unwrap_or_default(),
        force = Setting::Force
    )]
    Unbootable {
        culprit: Option<String>,
        problem: String,
    },

    #[error(
        "{}: no {drivers_dir}\\disk.sys to take the driver files' security from; is this \
         an installed Windows?",
        .iso.display()
    )]
    NoSecuritySource { iso: PathBuf, drivers_dir: String },

    #[error(
        "{}: partition {partition} has {free_mib} MiB free; the files to copy and the \
         hives' growth need {needed_mib} MiB: make room in Windows or grow the disk",
        .image.display()
    )]
    NoRoom {
        image: PathBuf,
        partition: u32,
        free_mib: u64,
        needed_mib: u64,
    },
}

crate::error::classify! {
    impl Classify for Refusal {
        fn kind(&self) -> crate::error::Kind {
            crate::error::Kind::BadInput
        }
    }
}
