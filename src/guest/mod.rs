//! Finding Windows on a disk: the system volume, version, edition, architecture,
//! control sets, and the state of every hive file.
//!
//! Everything here reads: volumes are mounted read-only, hives are read on
//! temporary copies. Version naming follows libguestfs' inspection
//! (`inspect-fs-windows.c`, `inspect-osinfo.c`).

#![deny(unsafe_code)]

mod boot;
pub mod files;
mod hives;
pub mod names;

pub use boot::{boot, Boot, UEFI_LOADER};
use hives::{hive_files, known_or_read, read_through_logs};
pub use hives::{read_hive, read_hive_to_edit, to_edit};

use crate::hive::replay::{LogSummary, Replay};
use crate::hive::{self, HeaderState, View};
use crate::image::{self, probe_filesystem, Access, BlockDev, PartitionView, Role};
use crate::ntfs::{self, Volume};
use crate::reg::ControlSets;
use crate::reg::HiveName;
use serde::Serialize;
use std::path::Path;
use Error::Ntfs;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Ntfs(#[from] ntfs::Error),
    #[error(transparent)]
    Hive(#[from] hive::Error),
    #[error("{}: no Windows installation found ({reason})", path.display())]
    NoWindows {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{}: partition {partition}: {}", path.display(), BITLOCKER_ADVICE)]
    BitLocker {
        path: std::path::PathBuf,
        partition: u32,
    },
    #[error("{hive}: {what} is missing, so this is no usable Windows hive")]
    Missing { hive: String, what: String },
    #[error("{path}: {what} is missing, so the Windows architecture cannot be told")]
    NoArch { path: String, what: String },
}

crate::error::classify! {
    impl Classify for Error {
        fn kind(&self) -> crate::error::Kind {
            match self {
                Error::Image(e) => e.kind(),
                Error::Ntfs(e) => e.kind(),
                Error::Hive(e) => e.kind(),
                Error::NoWindows { .. }
                | Error::Missing { .. }
                | Error::NoArch { .. }
                | Error::BitLocker { .. } => crate::error::Kind::BadInput,
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a BitLocker-encrypted partition is, and what to do about it.
pub const BITLOCKER_ADVICE: &str = "is encrypted with BitLocker (its boot sector says \
     -FVE-FS-), so nothing on it can be read offline: in Windows, decrypt it \
     (`manage-bde -off C:`, or turn device encryption off) and shut down fully, then \
     try again";

/// Folders a Windows system root may have (`WINNT` for NT 4 and 2000).
const SYSTEM_ROOTS: [&str; 2] = ["Windows", "WINNT"];
const CURRENT_VERSION: &str = "Microsoft\\Windows NT\\CurrentVersion";
/// PE machine types (winnt.h `IMAGE_FILE_MACHINE_*`).
const MACHINE_I386: u16 = 0x014c;
const MACHINE_AMD64: u16 = 0x8664;
const MACHINE_ARM64: u16 = 0xaa64;
/// Windows 11 is Windows 10.0 with build 22000 or later (§0).
const WINDOWS_11_FIRST_BUILD: u32 = 22000;

/// One hive file and the state of its header and logs.
#[derive(Debug, Clone, Serialize)]
pub struct HiveFile {
    pub name: String,
    /// Path on the volume, e.g. `Windows\System32\config\SYSTEM`.
    pub path: String,
    pub size: u64,
    #[serde(flatten)]
    pub header: HeaderState,
    pub clean: bool,
    /// Transaction logs beside it (`SYSTEM.LOG1`, …): `.LOG1`, `.LOG2`, `.LOG`.
    pub logs: Vec<String>,
    /// What its logs mean for it.
    pub log_state: LogState,
    /// A dirty hive's bytes as its logs bring them up to date, kept for the
    /// run: it is replayed once, not by each reader.
    #[serde(skip)]
    pub read: ReadOnce,
}

/// A hive read once, shared by whoever reads it next in the same run.
#[derive(Clone, Default)]
pub struct ReadOnce(Option<std::sync::Arc<HiveBytes>>);

impl std::fmt::Debug for ReadOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(h) => write!(f, "ReadOnce({} bytes)", h.bytes.len()),
            None => f.write_str("ReadOnce(none)"),
        }
    }
}

/// What a hive's transaction logs mean for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LogState {
    /// The header is clean: Windows ignores the logs, and so does wingold.
    Clean,
    /// Dirty, and its logs bring it up to date: wingold reads and edits the hive
    /// as it is after the replay.
    Replayable(Replay),
    /// Dirty, and nothing in its logs applies: read as it is, never written.
    Dirty { why: String, logs: Vec<LogSummary> },
}

/// A hive's bytes as Windows would load them (its logs replayed when it is
/// dirty), and what the logs did.
#[derive(Clone)]
pub struct HiveBytes {
    pub bytes: Vec<u8>,
    pub state: LogState,
}

/// A Windows installation found on a disk.
#[derive(Debug, Clone, Serialize)]
pub struct Windows {
    /// The partition holding it (Linux numbering), its offset and size.
    pub partition: u32,
    #[serde(skip)]
    pub partition_start: u64,
    #[serde(skip)]
    pub partition_size: u64,
    /// `\Windows` (or `\WINNT`), as spelled on the volume.
    pub system_root: String,
    pub product_name: String,
    /// `major.minor`: from CurrentMajor/MinorVersionNumber on 10+, else CurrentVersion.
    pub version: String,
    pub major_version: u32,
    pub minor_version: u32,
    pub build: Option<u32>,
    pub edition_id: Option<String>,
    pub installation_type: Option<String>,
    /// `client` or `server`.
    pub variant: &'static str,
    /// libosinfo short id, e.g. `win2k3r2`, `win2k22`, `win10`.
    pub osinfo: String,
    /// `x86`, `x64` or `arm64`.
    pub arch: &'static str,
    pub control_sets: ControlSets,
    pub hives: Vec<HiveFile>,
}

/// Windows 11 is Windows 10.0 from build 22000 on (§0); servers are told apart
/// by their product name, not by this.
fn is_windows_11(major: u32, minor: u32, build: Option<u32>) -> bool {
    (major, minor) == (10, 0) && build.is_some_and(|b| b >= WINDOWS_11_FIRST_BUILD)
}

impl Windows {
    /// Whether this is Windows 11 (a client: servers are named by their year).
    pub fn is_windows_11(&self) -> bool {
        self.variant != "server"
            && is_windows_11(self.major_version, self.minor_version, self.build)
    }

    /// The hive file `name` names, as found (`None` when there is none).
    pub fn hive_file(&self, name: HiveName) -> Option<&HiveFile> {
        self.hives.iter().find(|h| h.name == name.name())
    }

    /// Path of a hive file on the volume, e.g. `hive_path(HiveName::System)`.
    pub fn hive_path(&self, name: impl std::fmt::Display) -> String {
        format!(
            "{}\\System32\\config\\{name}",
            self.system_root.trim_start_matches('\\')
        )
    }
}

/// Looks for Windows on every NTFS partition of `img` (`path` names it in errors).
pub fn find_windows(img: &dyn BlockDev, path: &Path) -> Result<Windows> {
    find_windows_on(img, path, None)
}

/// As [`find_windows`], but only on partition `only` when given; that partition
/// must exist and hold NTFS.
pub fn find_windows_on(img: &dyn BlockDev, path: &Path, only: Option<u32>) -> Result<Windows> {
    with_windows(img, path, only, |found| Ok(found.windows))
}

/// Windows as [`with_windows`] found it: its volume, still mounted read-only,
/// and the two hives detection read (through their logs), for the caller to
/// use rather than read again.
pub struct Found<'v, 'd> {
    pub windows: Windows,
    pub vol: &'v Volume<'d>,
    pub system: HiveBytes,
    pub software: HiveBytes,
}

/// Finds Windows as [`find_windows_on`] does and hands `f` what it found while
/// the volume is still mounted: one mount and one read of SYSTEM and SOFTWARE
/// serve detection and whatever the caller plans from them.
///
/// NTFS partitions are looked at largest first (Windows' own partition is
/// larger than System Reserved, recovery and EFI ones, so it is usually the
/// only one mounted); with two Windows installations on one disk the larger
/// is taken, and `only` picks another.
pub fn with_windows<R, E: From<Error>>(
    img: &dyn BlockDev,
    path: &Path,
    only: Option<u32>,
    f: impl FnOnce(Found<'_, '_>) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    let table = image::scan_partitions(img, path).map_err(Error::from)?;
    let mut seen: Vec<(u32, String)> = Vec::new();
    if let Some(n) = only {
        let Some(p) = table.partitions.iter().find(|p| p.number == n) else {
            return Err(Error::NoWindows {
                path: path.to_owned(),
                reason: format!("there is no partition {n}"),
            }
            .into());
        };
        let fs = if p.role == Role::Extended {
            "extended"
        } else {
            let view = PartitionView::new(img, p.start, p.size).map_err(Error::from)?;
            probe_filesystem(&view).map_err(Error::from)?
        };
        if fs == "bitlocker" {
            return Err(Error::BitLocker {
                path: path.to_owned(),
                partition: n,
            }
            .into());
        }
        if fs != "ntfs" {
            return Err(Ntfs(ntfs::Error::NotNtfs {
                volume: format!("{}: partition {n}", path.display()),
                reason: format!("it holds {fs}"),
            })
            .into());
        }
    }
    let mut order: Vec<&image::Partition> = table
        .partitions
        .iter()
        .filter(|p| p.role != Role::Extended && only.is_none_or(|n| n == p.number))
        .collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.size));
    for p in order {
        let view = PartitionView::new(img, p.start, p.size).map_err(Error::from)?;
        match probe_filesystem(&view).map_err(Error::from)? {
            "ntfs" => {}
            "bitlocker" => {
                seen.push((p.number, BITLOCKER_ADVICE.to_owned()));
                continue;
            }
            _ => continue,
        }
        let name = format!("{}: partition {}", path.display(), p.number);
        // Looking everywhere: a partition that cannot be read is skipped, with why,
        // so that it cannot hide the Windows on the next one.
        let vol = match Volume::open(&view, &name, Access::ReadOnly) {
            Ok(v) => v,
            Err(e) if only.is_none() => {
                seen.push((p.number, e.to_string()));
                continue;
            }
            Err(e) => return Err(Error::from(e).into()),
        };
        let mut found = None;
        let mut failed = false;
        for root in SYSTEM_ROOTS {
            let sys = format!("{root}\\System32\\config\\SYSTEM");
            let soft = format!("{root}\\System32\\config\\SOFTWARE");
            match (vol.lookup(&sys), vol.lookup(&soft)) {
                (Ok(Some(_)), Ok(Some(_))) => {
                    found = Some(root);
                    break;
                }
                (Err(e), _) | (_, Err(e)) if only.is_none() => {
                    seen.push((p.number, e.to_string()));
                    failed = true;
                    break;
                }
                (Err(e), _) | (_, Err(e)) => return Err(Error::from(e).into()),
                _ => {}
            }
        }
        match found {
            Some(root) => {
                let (windows, system, software) =
                    inspect_volume(&vol, p.number, p.start, p.size, root, Known::default())?;
                let read = |h: Option<HiveBytes>| h.expect("read when not known");
                return f(Found {
                    windows,
                    vol: &vol,
                    system: read(system),
                    software: read(software),
                });
            }
            None if failed => {}
            None => seen.push((
                p.number,
                "no Windows\\System32\\config\\SYSTEM and SOFTWARE".into(),
            )),
        }
    }
    seen.sort_by_key(|(n, _)| *n);
    Err(Error::NoWindows {
        path: path.to_owned(),
        reason: if seen.is_empty() {
            "no NTFS partition".into()
        } else {
            seen.iter()
                .map(|(n, why)| format!("partition {n}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
    }
    .into())
}

/// Windows looked for again on `vol`, a fresh mount of `w`'s partition (the
/// verification of a written image), from the hives `known` already read back
/// and whatever else detection needs read.
pub fn detect_again(vol: &Volume, w: &Windows, known: Known<'_>) -> Result<Windows> {
    let root = w.system_root.trim_start_matches('\\');
    let (again, _, _) = inspect_volume(
        vol,
        w.partition,
        w.partition_start,
        w.partition_size,
        root,
        known,
    )?;
    Ok(again)
}

/// Hive bytes already read, so that detection need not read them again.
#[derive(Default, Clone, Copy)]
pub struct Known<'b> {
    pub system: Option<&'b [u8]>,
    pub software: Option<&'b [u8]>,
}

fn inspect_volume(
    vol: &Volume,
    number: u32,
    start: u64,
    size: u64,
    root: &str,
    known: Known<'_>,
) -> Result<(Windows, Option<HiveBytes>, Option<HiveBytes>)> {
    // The system root as the volume spells it.
    let system_root = vol
        .list("")?
        .into_iter()
        .find(|e| e.name.eq_ignore_ascii_case(root))
        .map(|e| format!("\\{}", e.name))
        .unwrap_or_else(|| format!("\\{root}"));
    let config = format!("{root}\\System32\\config");
    let hives = hive_files(vol, &config)?;
    let through_logs = |name: HiveName, known: Option<&[u8]>| -> Result<Option<HiveBytes>> {
        if known.is_some() {
            return Ok(None);
        }
        let Some(h) = hives.iter().find(|h| h.name == name.name()) else {
            return read_through_logs(vol, &config, name.name(), &[]).map(Some);
        };
        // A dirty hive was replayed by hive_files; a clean one is read here.
        match &h.read.0 {
            Some(r) => Ok(Some((**r).clone())),
            None => {
                let file = h.path.rsplit('\\').next().unwrap_or(name.name());
                read_through_logs(vol, &config, file, &h.logs).map(Some)
            }
        }
    };
    let software_read = through_logs(HiveName::Software, known.software)?;
    let system_read = through_logs(HiveName::System, known.system)?;
    let software = View::open(
        HiveName::Software.name(),
        known_or_read(known.software, &software_read),
    )?;
    let system = View::open(
        HiveName::System.name(),
        known_or_read(known.system, &system_read),
    )?;

    let text = |h: &View, key: &str, name: &str| -> Result<Option<String>> {
        Ok(h.value(key, name)?.and_then(|v| v.as_string()))
    };
    let dword = |h: &View, key: &str, name: &str| -> Result<Option<u32>> {
        Ok(h.value(key, name)?.and_then(|v| v.as_dword()))
    };
    let product_name =
        text(&software, CURRENT_VERSION, "ProductName")?.ok_or_else(|| Error::Missing {
            hive: HiveName::Software.name().into(),
            what: format!("{CURRENT_VERSION}\\ProductName"),
        })?;
    let (major_version, minor_version) = match (
        dword(&software, CURRENT_VERSION, "CurrentMajorVersionNumber")?,
        dword(&software, CURRENT_VERSION, "CurrentMinorVersionNumber")?,
    ) {
        (Some(major), minor) => (major, minor.unwrap_or(0)),
        _ => {
            let cv = text(&software, CURRENT_VERSION, "CurrentVersion")?.unwrap_or_default();
            let mut parts = cv.split('.').map(|p| p.trim().parse::<u32>().ok());
            match (parts.next().flatten(), parts.next().flatten()) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(Error::Missing {
                        hive: HiveName::Software.name().into(),
                        what: format!("{CURRENT_VERSION}\\CurrentVersion (a version number)"),
                    })
                }
            }
        }
    };
    let build = match text(&software, CURRENT_VERSION, "CurrentBuildNumber")? {
        Some(b) => b.trim().parse().ok(),
        None => {
            text(&software, CURRENT_VERSION, "CurrentBuild")?.and_then(|b| b.trim().parse().ok())
        }
    };
    let edition_id = text(&software, CURRENT_VERSION, "EditionID")?;
    let installation_type = text(&software, CURRENT_VERSION, "InstallationType")?;
    let control_sets = control_sets(&system)?;
    let variant = variant(
        &system,
        &control_sets,
        installation_type.as_deref(),
        &product_name,
    )?;
    let osinfo = osinfo(major_version, minor_version, build, variant, &product_name);
    let arch = arch(vol, root)?;
    drop((software, system));
    let windows = Windows {
        partition: number,
        partition_start: start,
        partition_size: size,
        system_root,
        product_name,
        version: format!("{major_version}.{minor_version}"),
        major_version,
        minor_version,
        build,
        edition_id,
        installation_type,
        variant,
        osinfo,
        arch,
        control_sets,
        hives,
    };
    Ok((windows, system_read, software_read))
}

fn control_sets(system: &View) -> Result<ControlSets> {
    let name = |n: Option<u32>| n.filter(|&n| n > 0).map(|n| format!("ControlSet{n:03}"));
    let get = |v: &str| -> Result<Option<u32>> {
        Ok(system.value("Select", v)?.and_then(|v| v.as_dword()))
    };
    let current = name(get("Current")?).ok_or_else(|| Error::Missing {
        hive: HiveName::System.name().into(),
        what: "Select\\Current".into(),
    })?;
    Ok(ControlSets {
        current,
        default: name(get("Default")?),
        last_known_good: name(get("LastKnownGood")?),
        failed: name(get("Failed")?),
    })
}

/// Client or server: InstallationType (Vista+), else the product name, else
/// `ProductOptions\ProductType` (WinNT is a client; ServerNT and LanmanNT servers).
fn variant(
    system: &View,
    sets: &ControlSets,
    installation_type: Option<&str>,
    product: &str,
) -> Result<&'static str> {
    if let Some(t) = installation_type {
        return Ok(if t.to_ascii_lowercase().contains("server") {
            "server"
        } else {
            "client"
        });
    }
    if product.contains("Server") {
        return Ok("server");
    }
    let key = format!("{}\\Control\\ProductOptions", sets.current);
    let product_type = system
        .value(&key, "ProductType")?
        .and_then(|v| v.as_string());
    Ok(match product_type.as_deref() {
        Some("ServerNT") | Some("LanmanNT") => "server",
        _ => "client",
    })
}

/// The libosinfo short id, as libguestfs' `inspect-osinfo.c` gives it.
fn osinfo(major: u32, minor: u32, build: Option<u32>, variant: &str, product: &str) -> String {
    let server = variant == "server";
    let id = match (major, minor) {
        (5, 1) => "winxp",
        (5, 2) if product.contains("XP") => "winxp",
        (5, 2) if product.contains("R2") => "win2k3r2",
        (5, 2) => "win2k3",
        (6, 0) if server => "win2k8",
        (6, 0) => "winvista",
        (6, 1) if server => "win2k8r2",
        (6, 1) => "win7",
        (6, 2) if server => "win2k12",
        (6, 2) => "win8",
        (6, 3) if server => "win2k12r2",
        (6, 3) => "win8.1",
        (10, 0) if server => {
            return ["2025", "2022", "2019", "2016"]
                .iter()
                .find(|year| product.contains(*year))
                .map(|year| format!("win2k{}", &year[2..]))
                .unwrap_or_else(|| "win2k16".into());
        }
        (10, 0) if is_windows_11(major, minor, build) => "win11",
        (10, 0) => "win10",
        _ => return format!("windows-{major}.{minor}"),
    };
    id.to_owned()
}

/// The architecture, from the PE header of System32\cmd.exe (as libguestfs does).
fn arch(vol: &Volume, root: &str) -> Result<&'static str> {
    let path = format!("{root}\\System32\\cmd.exe");
    let missing = |what: &str| Error::NoArch {
        path: path.clone(),
        what: what.into(),
    };
    let head = vol.read_range(&path, 0, 4096).map_err(|e| match e {
        ntfs::Error::NotFound { .. } => missing("the file"),
        e => e.into(),
    })?;
    if head.len() < 0x40 || &head[0..2] != b"MZ" {
        return Err(missing("an MZ header"));
    }
    let pe = u32::from_le_bytes(head[0x3c..0x40].try_into().expect("4")) as usize;
    if head.len() < pe + 6 || &head[pe..pe + 4] != b"PE\0\0" {
        return Err(missing("a PE header"));
    }
    Ok(match u16::from_le_bytes([head[pe + 4], head[pe + 5]]) {
        MACHINE_I386 => "x86",
        MACHINE_AMD64 => "x64",
        MACHINE_ARM64 => "arm64",
        _ => return Err(missing("a known PE machine type")),
    })
}
