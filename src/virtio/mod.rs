//! virtio-win: fetching, verifying, caching and pinning the driver ISO, reading it
//! without mounting, and picking driver folders for a Windows version.
//!
//! Knows nothing of disk images or NTFS.

#![deny(unsafe_code)]

pub mod drivers;
mod error;
pub mod fetch;

/// The ISO 9660 reader (`media`'s), under the name the drivers know it by.
pub mod iso {
    pub use crate::media::iso9660::{volume_id, Entry, Iso};
}

pub use error::Error;
pub use fetch::{fetch, Fetched, Options, PinnedBy, Source};

/// The `<Driver>/<os>/<arch>` folders of a virtio-win ISO.
pub fn driver_folders(entries: &[iso::Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.is_dir && e.path.split('/').count() == 3)
        .map(|e| e.path.clone())
        .collect()
}
