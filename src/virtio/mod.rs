//! virtio-win: fetching, verifying, caching and pinning the driver ISO, reading it
//! without mounting, and picking driver folders for a Windows version.
//!
//! Knows nothing of disk images or NTFS.

#![forbid(unsafe_code)]

pub mod drivers;
pub mod fetch;
pub mod iso;

pub use fetch::{fetch, Fetched, Options, PinnedBy, Source};

/// The alias folders for an ISO OS code given by hand (`--for 2k22/amd64`): the
/// build that serves it when its own folder is missing (windows-offline.md §5b).
pub fn os_aliases(os: &str) -> Vec<String> {
    let alias = match os {
        "2k16" | "2k19" | "2k22" => Some("w10"),
        "2k25" => Some("w11"),
        "2k8R2" => Some("w7"),
        "2k12" => Some("w8"),
        "2k12R2" => Some("w8.1"),
        "xp" => Some("2k3"),
        _ => None,
    };
    std::iter::once(os.to_owned())
        .chain(alias.map(str::to_owned))
        .collect()
}

/// The `<Driver>/<os>/<arch>` folders of a virtio-win ISO.
pub fn driver_folders(entries: &[iso::Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.is_dir && e.path.split('/').count() == 3)
        .map(|e| e.path.clone())
        .collect()
}
