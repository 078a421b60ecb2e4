//! Offline virtio driver injection as data: from the Windows found and the
//! virtio-win ISO's folders for it, a plan of file copies (ISO path → guest path,
//! size, sha256) and registry edits (the boot driver's service and its
//! CriticalDeviceDatabase or DriverDatabase registration, `DevicePath`), checked
//! before anything is written. `golden` applies the plan through the NTFS and
//! registry engines, in the same overlay and the same hive commits as the profiles.
//!
//! What is written and why: as virt-v2v writes it (libguestfs-common
//! `mlcustomize/inject_virtio_win.ml`), per family in `registry.rs`. Knows nothing of images
//! or NTFS: guest files are read through a closure.

#![deny(unsafe_code)]

pub mod inf;
pub mod pe;
mod plan;
mod refusal;
pub mod registry;
pub use crate::guest::files::{FileAction, HashGuest, NameFold, ReadGuest, STAGING};
mod state;

pub use plan::plan;
pub use refusal::Refusal;
pub use state::{state, ServiceState, State};

use crate::guest::Windows;
use crate::hive::View;
use crate::reg::RegEdit;
use crate::virtio::drivers as folders;
use registry::{BootDriver, Registration};
use serde::Serialize;
use std::path::PathBuf;

/// Which storage driver Windows boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Boot {
    /// virtio-blk (the run recipe's default disk).
    #[default]
    Viostor,
    /// virtio-scsi (`launch --disk-bus scsi`).
    Vioscsi,
}

impl Boot {
    pub fn driver(self) -> &'static BootDriver {
        match self {
            Boot::Viostor => &registry::VIOSTOR,
            Boot::Vioscsi => &registry::VIOSCSI,
        }
    }

    pub fn parse(text: &str) -> Option<Boot> {
        match text.to_ascii_lowercase().as_str() {
            "viostor" => Some(Boot::Viostor),
            "vioscsi" => Some(Boot::Vioscsi),
            _ => None,
        }
    }
}

/// What to inject.
#[derive(Debug, Clone)]
pub struct Request {
    pub iso: PathBuf,
    pub boot: Boot,
    /// More driver folders by name (`vioserial`, `pvpanic`, …), beyond the boot
    /// driver, NetKVM and Balloon.
    pub extra: Vec<String>,
}

/// The drivers always injected besides the boot driver.
const DEFAULT_DRIVERS: [&str; 2] = ["NetKVM", "Balloon"];

/// One file copied from the ISO into the guest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FileCopy {
    pub driver: String,
    /// Path on the ISO.
    pub from: String,
    /// Path on the Windows volume, e.g. `Windows\Drivers\VirtIO\viostor.sys`.
    pub to: String,
    pub size: u64,
    pub sha256: String,
    pub action: FileAction,
    /// The bytes, for a file of at most [`HELD_MAX`]; empty for a larger one,
    /// which is streamed from `iso_range` of the ISO when written.
    #[serde(skip)]
    pub data: Vec<u8>,
    /// (offset, length) of a file larger than [`HELD_MAX`] in the ISO file.
    #[serde(skip)]
    pub iso_range: Option<(u64, u64)>,
}

/// Files up to this size are read into memory; larger ones (no real driver file
/// comes near it) are hashed and later copied in pieces.
pub const HELD_MAX: u64 = 4 << 20;

/// What a PE check reads of a larger file: its headers.
const PE_HEAD: u64 = 64 << 10;

/// One driver and where it came from.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DriverReport {
    pub name: String,
    /// ISO folder, e.g. `viostor/2k22/amd64`.
    pub folder: String,
    /// True when the folder is an alias (the build that serves this Windows).
    pub alias: bool,
    pub inf: Option<String>,
    /// The INF's DriverVer.
    pub driver_ver: Option<String>,
    /// DriverVer of the INF this replaces, when the guest had another one.
    pub replaces_driver_ver: Option<String>,
    /// `boot` (registered to start with Windows) or `staged` (left for PnP).
    pub role: Role,
}

/// A driver's part in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Registered to start with Windows.
    Boot,
    /// Left for PnP to install.
    Staged,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Boot => "boot",
            Role::Staged => "staged",
        })
    }
}

/// The plan, minus the edits (which go into the registry engine).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    pub iso: PathBuf,
    pub iso_volume_id: String,
    pub boot: Boot,
    pub registration: Registration,
    pub drivers: Vec<DriverReport>,
    pub files: Vec<FileCopy>,
    /// The folders the files go in, parents first, on the Windows volume (the
    /// writer creates those that are missing).
    pub folders: Vec<String>,
    /// Bytes the new and replaced files need on the volume.
    pub bytes_needed: u64,
    /// The boot controller's PCI ids registered (`VEN_1AF4&DEV_…&REV_…`): those of
    /// the devices its INF claims, none when Windows installed the driver itself.
    pub pci_ids: Vec<String>,
    pub notes: Vec<String>,
    /// The time new files and folders are stamped with: the ISO's creation date
    /// (seconds since 1970), so that the same inputs give the same image.
    pub file_time: i64,
}

/// A driver-injection plan: what the registry engine and the file writer do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub report: Report,
    pub edits: Vec<RegEdit>,
}

/// The PnP instance through which Windows installed `boot` itself, if any:
/// `Enum\PCI\VEN_1AF4&DEV_…\<instance>` with `Service` = the driver, in the
/// current control set.
pub fn installed_by_windows(
    sys: &View,
    w: &Windows,
    boot: &BootDriver,
) -> anyhow::Result<Option<String>> {
    let pci = format!("{}\\Enum\\PCI", w.control_sets.current);
    if !sys.has_key(&pci)? {
        return Ok(None);
    }
    for dev in sys.subkeys(&pci)? {
        let upper = dev.to_ascii_uppercase();
        if !upper.starts_with(boot.legacy) && !upper.starts_with(boot.modern) {
            continue;
        }
        let dev_key = format!("{pci}\\{dev}");
        for inst in sys.subkeys(&dev_key)? {
            let key = format!("{dev_key}\\{inst}");
            if let Some(v) = sys.value(&key, "Service")? {
                if v.as_string()
                    .is_some_and(|s| s.eq_ignore_ascii_case(boot.service))
                {
                    return Ok(Some(format!("Enum\\PCI\\{dev}\\{inst}")));
                }
            }
        }
    }
    Ok(None)
}

/// What the ISO's folder names depend on, for the Windows found.
pub fn target_of(w: &crate::guest::Windows) -> folders::Target {
    folders::Target {
        major: w.major_version,
        minor: w.minor_version,
        windows11: w.is_windows_11(),
        server: w.variant == "server",
        product_name: w.product_name.clone(),
        arch: w.arch.to_owned(),
    }
}
