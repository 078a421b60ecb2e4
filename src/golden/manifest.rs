//! The manifest beside each golden version: what went into it (base, ISO,
//! drivers, first boot, every edit) and what came out.

use super::inject::WindowsSummary;
use crate::reg::{Action, Change, HiveName, ValueView};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a golden image was built from. When it is unchanged, nothing is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub wingold_version: String,
    /// None when the base was not hashed (see `[base] hash`).
    pub base_sha256: Option<String>,
    pub virtio_win_version: String,
    pub virtio_win_sha256: String,
    pub config_sha256: String,
    /// [`Config::settings_sha256`](super::config::Config::settings_sha256): what
    /// of the config decides the image, without paths (empty in manifests older
    /// than it).
    #[serde(default)]
    pub settings_sha256: String,
    pub regfiles: Vec<(String, String)>,
    /// The first boot's inputs: each script and the service binary by SHA-256,
    /// each copied-in tree by a digest of its files' paths, sizes and mtimes.
    #[serde(default)]
    pub first_boot_inputs: Vec<(String, String)>,
}

/// The base image as the manifest records it. Size, mtime and inode are the cheap
/// identity: when all three match the last build, its SHA-256 is taken as still
/// true; when any differs, the base is hashed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    /// None when the base was not hashed (see `[base] hash`).
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The versioned file (`NAME-<12 hex of sha256>.EXT`), never rewritten.
    pub path: PathBuf,
    /// The stable name that pointed at it when it was built (a symlink).
    #[serde(default)]
    pub stable: Option<PathBuf>,
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub virtual_size: u64,
    pub compressed: bool,
}

/// `<golden>.manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub wingold_version: String,
    pub identity: Identity,
    pub base: BaseRecord,
    pub virtio_win: VirtioRecord,
    pub config: ConfigRecord,
    pub windows: WindowsSummary,
    pub edits: Vec<EditRecord>,
    pub first_boot_commands: Vec<String>,
    /// The virtio drivers put into the image: per driver its ISO folder and
    /// DriverVer, every file (guest path, sha256); the registry edits are in `edits`.
    #[serde(default)]
    pub drivers: Option<crate::drivers::Report>,
    /// The first-boot queue: the service (binary and its sha256), every queued
    /// script, every file written (guest path, sha256), copied-in trees included.
    #[serde(default)]
    pub first_boot: Option<crate::firstboot::Report>,
    /// How the golden boots (UEFI with its EFI system partition, or BIOS):
    /// clones and their recipes follow it.
    #[serde(default)]
    pub boot: Option<crate::guest::Boot>,
    pub output: OutputRecord,
    pub timings_ms: Timings,
}

/// The config a golden image was built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigRecord {
    pub path: PathBuf,
    pub sha256: String,
    pub profiles: Vec<String>,
    /// Each .reg file and its SHA-256.
    pub regfiles: Vec<(String, String)>,
    pub compress: bool,
}

/// One registry change, as `inject --json` shows it (`reg::Change`, its values
/// rendered, its source as `file:line`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditRecord {
    pub hive: HiveName,
    pub key: String,
    pub value: Option<String>,
    pub action: Action,
    pub old: Option<ValueView>,
    pub new: Option<ValueView>,
    pub source: String,
}

impl From<&Change> for EditRecord {
    fn from(c: &Change) -> EditRecord {
        EditRecord {
            hive: c.hive,
            key: c.key.clone(),
            value: c.value.clone(),
            action: c.action,
            old: c.old.as_ref().map(ValueView::from),
            new: c.new.as_ref().map(ValueView::from),
            source: c.source.to_string(),
        }
    }
}

/// How long each phase of the build took, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timings {
    pub fetch: u64,
    pub inject: u64,
    pub finalize: u64,
    pub verify: u64,
    pub total: u64,
}

/// The virtio-win ISO a build used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VirtioRecord {
    pub version: String,
    pub url: String,
    pub final_url: String,
    pub sha256: String,
    pub size: u64,
    pub pinned_by: crate::virtio::fetch::PinnedBy,
    pub path: PathBuf,
    pub drivers_injected: bool,
}

pub fn manifest_path(golden: &Path) -> PathBuf {
    let mut name = golden.file_name().unwrap_or_default().to_owned();
    name.push(".manifest.json");
    golden.with_file_name(name)
}

/// Why the manifest beside a golden version could not be had.
#[derive(Debug)]
pub enum Unloadable {
    /// No manifest there (or none that can be read).
    Missing(std::io::Error),
    /// One that does not parse as a manifest.
    Malformed(serde_json::Error),
}

/// The manifest beside the golden version file `version` (its real path).
pub fn load(version: &Path) -> Result<Manifest, Unloadable> {
    let bytes = std::fs::read(manifest_path(version)).map_err(Unloadable::Missing)?;
    serde_json::from_slice(&bytes).map_err(Unloadable::Malformed)
}

/// The manifest of a golden version; the stable name is followed to its version.
pub fn read_manifest(golden: &Path) -> Option<Manifest> {
    load(&std::fs::canonicalize(golden).ok()?).ok()
}
