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
mod refusal;
pub mod registry;
pub use crate::guest::files::{FileAction, HashGuest, NameFold, ReadGuest, STAGING};
mod state;

pub use refusal::Refusal;
pub use state::{state, ServiceState, State};

use crate::guest::Windows;
use crate::hive::View;
use crate::reg::Edits;
use crate::reg::HiveName;
use crate::reg::RegEdit;
use crate::virtio::{drivers as folders, iso};
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

/// Computes the plan; every refusal is bad input with one line naming the cause.
/// `system` and `software` are the current hive bytes.
pub fn plan(
    w: &Windows,
    req: &Request,
    system: &[u8],
    software: &[u8],
    read_guest: &ReadGuest,
    hash_guest: &HashGuest,
    fold: &NameFold,
) -> anyhow::Result<Plan> {
    if w.arch == "arm64" {
        return Err(Refusal::Arm64 {
            product: w.product_name.clone(),
        }
        .into());
    }
    let image = iso::Iso::open(&req.iso)?;
    let entries = image.list()?;
    let folder_list = crate::virtio::driver_folders(&entries);
    let os = folders::os_folders(&target_of(w));
    let arch = folders::arch_folder(w.arch);
    let boot = req.boot.driver();
    let mut wanted: Vec<String> = vec![boot.folder.to_owned()];
    wanted.extend(DEFAULT_DRIVERS.iter().map(|s| s.to_string()));
    for x in &req.extra {
        if !wanted.iter().any(|d| d.eq_ignore_ascii_case(x)) {
            wanted.push(x.clone());
        }
    }
    let iso_name = req.iso.display().to_string();
    let picks = folders::pick(&folder_list, &os, arch);
    let mut chosen = Vec::new();
    for name in &wanted {
        let known = folder_list.iter().any(|f| {
            f.split('/')
                .next()
                .is_some_and(|d| d.eq_ignore_ascii_case(name))
        });
        if !known {
            let mut has: Vec<String> = folder_list
                .iter()
                .filter_map(|f| f.split('/').next().map(str::to_owned))
                .collect();
            has.dedup();
            return Err(Refusal::UnknownDriver {
                iso: iso_name,
                name: name.clone(),
                has,
            }
            .into());
        }
        let Some(p) = picks.iter().find(|p| p.driver.eq_ignore_ascii_case(name)) else {
            return Err(Refusal::NoFolder {
                iso: iso_name,
                name: name.clone(),
                product: w.product_name.clone(),
                arch: w.arch.to_owned(),
                tried: os.iter().map(|o| format!("{name}/{o}/{arch}")).collect(),
            }
            .into());
        };
        chosen.push(p.clone());
    }
    let mut notes = Vec::new();
    // fwcfg and qemufwcfg drive the same device and conflict (RHBZ#2151752).
    if chosen
        .iter()
        .any(|p| p.driver.eq_ignore_ascii_case("fwcfg"))
        && chosen
            .iter()
            .any(|p| p.driver.eq_ignore_ascii_case("qemufwcfg"))
    {
        chosen.retain(|p| !p.driver.eq_ignore_ascii_case("qemufwcfg"));
        notes.push("qemufwcfg left out: it conflicts with fwcfg".into());
    }

    let root = w.system_root.trim_start_matches('\\').to_owned();
    let staging = format!("{root}\\{STAGING}");
    let machine = pe::machine_for(w.arch);
    let nt6_x64 = w.major_version >= 6 && w.arch == "x64";
    let sha = |b: &[u8]| crate::fsutil::sha256_hex(b);

    // Hives: which registration this Windows uses, and whether Windows installed
    // the boot driver itself (the temporary-disk install).
    let sys = View::open(HiveName::System.name(), system)?;
    let has_ddb = sys.has_key("DriverDatabase")?;
    let wants_ddb = (w.major_version, w.minor_version) >= (6, 2);
    if has_ddb != wants_ddb {
        return Err(Refusal::Registration {
            hive: w.hive_path(HiveName::System),
            has_ddb,
            version: w.version.clone(),
            product: w.product_name.clone(),
        }
        .into());
    }
    let pnp = installed_by_windows(&sys, w, boot)?;
    let registration = if pnp.is_some() {
        Registration::InstalledByWindows
    } else if has_ddb {
        Registration::DriverDatabase
    } else {
        Registration::CriticalDeviceDatabase
    };
    if let Some(instance) = &pnp {
        notes.push(format!(
            "{} is installed by Windows already ({instance}): its service, files and \
             registration are left as they are; the new files are only staged",
            boot.service
        ));
    }

    let mut files: Vec<FileCopy> = Vec::new();
    let mut drivers = Vec::new();
    let mut boot_parameters = Vec::new();
    let mut devices: Vec<&'static str> = Vec::new();
    for p in &chosen {
        let is_boot = p.driver.eq_ignore_ascii_case(boot.folder);
        let prefix = format!("{}/", p.folder.to_ascii_lowercase());
        let mut inf_seen: Option<(String, inf::Inf)> = None;
        for e in entries
            .iter()
            .filter(|e| !e.is_dir && e.path.to_ascii_lowercase().starts_with(&prefix))
        {
            let rel = &e.path[prefix.len()..];
            let lower = rel.to_ascii_lowercase();
            let base = lower.rsplit('/').next().unwrap_or(&lower).to_owned();
            if lower.split('/').any(|c| c == "sriov")
                || base.ends_with(".pdb")
                || base.starts_with("vioprot.")
            {
                continue;
            }
            let held = e.size <= HELD_MAX;
            let data = if held {
                image.read(e)?
            } else {
                image.read_head(e, PE_HEAD)?
            };
            if base.ends_with(".sys") {
                check_sys(&data, &e.path, machine, w, is_boot && nt6_x64, &iso_name)?;
            }
            if base.ends_with(".inf") && !held {
                return Err(Refusal::InfEntry {
                    iso: iso_name,
                    inf: e.path.clone(),
                    problem: format!("{} bytes, more than an INF file can be", e.size),
                }
                .into());
            }
            if base.ends_with(".inf") {
                inf_seen = Some((e.path.clone(), inf::parse(&inf::decode(&data))));
            }
            if let Some(problem) = crate::guest::names::problem(&base) {
                return Err(Refusal::FileName {
                    iso: iso_name,
                    path: e.path.escape_debug().to_string(),
                    problem,
                }
                .into());
            }
            let to = format!("{staging}\\{base}");
            // One name to NTFS when equal through its $UpCase (É.dll and é.dll),
            // never ß and SS.
            let folded = fold(&to);
            if files.iter().any(|f| fold(&f.to) == folded) {
                notes.push(format!(
                    "{} skipped: another driver has a file of that name",
                    e.path
                ));
                continue;
            }
            let (sha256, data, iso_range) = if held {
                (sha(&data), data, None)
            } else {
                (image.sha256(e)?, Vec::new(), Some((e.offset, e.size)))
            };
            files.push(FileCopy {
                driver: p.driver.clone(),
                from: e.path.clone(),
                to,
                size: e.size,
                sha256,
                action: FileAction::New,
                data,
                iso_range,
            });
        }
        let Some((inf_path, parsed)) = inf_seen else {
            return Err(Refusal::NoInf {
                iso: iso_name,
                folder: p.folder.clone(),
            }
            .into());
        };
        if is_boot {
            devices = boot.claimed_by(&parsed);
            if devices.is_empty() {
                return Err(Refusal::InfLacksId {
                    iso: iso_name,
                    inf: inf_path,
                    legacy: boot.legacy,
                    modern: boot.modern,
                    service: boot.service.to_owned(),
                }
                .into());
            }
            if let Some(problem) = parsed.problem.clone() {
                return Err(Refusal::InfEntry {
                    iso: iso_name,
                    inf: inf_path,
                    problem,
                }
                .into());
            }
            if parsed.class_guid.as_deref() != Some(registry::SCSI_ADAPTER_CLASS) {
                return Err(Refusal::NotStorage {
                    iso: iso_name,
                    inf: inf_path,
                    class: parsed.class_guid,
                }
                .into());
            }
            let sys_name = format!("{}.sys", boot.service);
            let Some(sys_file) = files
                .iter()
                .find(|f| {
                    f.driver == p.driver
                        && f.to
                            .to_ascii_lowercase()
                            .ends_with(&format!("\\{sys_name}"))
                })
                .cloned()
            else {
                return Err(Refusal::NoSys {
                    iso: iso_name,
                    folder: p.folder.clone(),
                    sys: sys_name,
                }
                .into());
            };
            if pnp.is_none() {
                files.push(FileCopy {
                    to: format!("{root}\\System32\\drivers\\{sys_name}"),
                    ..sys_file
                });
            }
            boot_parameters = parsed.parameters.clone();
            if !devices.contains(&boot.modern) {
                notes.push(format!(
                    "{}: this build claims only the transitional device PCI\\{} (not the \
                     modern {}): give the VM a transitional virtio disk (QEMU's \
                     virtio-blk-pci on pc, or on the q35 root bus; not behind a PCIe root port)",
                    boot.service, boot.legacy, boot.modern
                ));
            }
        }
        // The guest's copy of this INF, when an earlier injection staged one.
        let staged_inf = format!(
            "{staging}\\{}",
            inf_path
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        );
        let previous = read_guest(&staged_inf)?
            .map(|b| inf::parse(&inf::decode(&b)).driver_ver)
            .unwrap_or(None);
        drivers.push(DriverReport {
            name: p.driver.clone(),
            folder: p.folder.clone(),
            alias: p.alias,
            inf: Some(
                inf_path
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase(),
            ),
            replaces_driver_ver: previous.filter(|v| Some(v) != parsed.driver_ver.as_ref()),
            driver_ver: parsed.driver_ver.clone(),
            role: if is_boot && pnp.is_none() {
                Role::Boot
            } else {
                Role::Staged
            },
        });
    }

    // Idempotence: what is there with the same bytes is left alone.
    let mut bytes_needed = 0u64;
    for f in &mut files {
        f.action = match hash_guest(&f.to)? {
            None => FileAction::New,
            Some(old) if old == f.sha256 => FileAction::Unchanged,
            Some(_) => FileAction::Replaced,
        };
        if f.action != FileAction::Unchanged {
            bytes_needed += f.size.div_ceil(4096) * 4096;
        }
    }
    for d in &drivers {
        if let (Some(old), Some(new)) = (&d.replaces_driver_ver, &d.driver_ver) {
            notes.push(format!("{}: replacing {old} with {new}", d.name));
        }
    }

    let mut edits = Edits::new(format!("virtio-win {}", boot_folder(&chosen, boot)));
    if pnp.is_none() {
        registry::service(&mut edits, boot, &boot_parameters);
        match registration {
            Registration::CriticalDeviceDatabase => {
                registry::critical_device_database(&mut edits, boot, &devices)
            }
            Registration::DriverDatabase => {
                registry::driver_database(&mut edits, boot, w.arch, &devices)
            }
            Registration::InstalledByWindows => {}
        }
    }
    let soft = View::open(HiveName::Software.name(), software)?;
    if let Some(v) = soft.value("Microsoft\\Windows\\CurrentVersion", "DevicePath")? {
        if let Some(data) = registry::extended_device_path(&v.data) {
            edits.set(registry::DEVICE_PATH_KEY, "DevicePath", v.kind, data);
        }
    } else {
        notes.push(
            "SOFTWARE has no DevicePath value: not created (Windows uses its default)".into(),
        );
    }

    Ok(Plan {
        report: Report {
            iso: req.iso.clone(),
            iso_volume_id: image.volume_id.clone(),
            boot: req.boot,
            registration,
            drivers,
            files,
            folders: vec![format!("{root}\\Drivers"), staging.clone()],
            bytes_needed,
            pci_ids: if pnp.is_none() {
                boot.ids(&devices)
            } else {
                Vec::new()
            },
            notes,
            file_time: image.created.unwrap_or(0),
        },
        edits: edits.list,
    })
}

fn boot_folder(chosen: &[folders::Pick], boot: &BootDriver) -> String {
    chosen
        .iter()
        .find(|p| p.driver.eq_ignore_ascii_case(boot.folder))
        .map(|p| p.folder.clone())
        .unwrap_or_else(|| boot.folder.to_owned())
}

/// Checks a driver binary: a PE image for the guest's machine, and, for a boot
/// driver on 64-bit Windows Vista and later, an embedded signature.
fn check_sys(
    data: &[u8],
    path: &str,
    machine: u16,
    w: &Windows,
    must_be_signed: bool,
    iso_name: &str,
) -> anyhow::Result<()> {
    let Some(p) = pe::parse(data) else {
        return Err(Refusal::NotPe {
            iso: iso_name.to_owned(),
            path: path.to_owned(),
        }
        .into());
    };
    if p.machine != machine {
        return Err(Refusal::WrongMachine {
            iso: iso_name.to_owned(),
            path: path.to_owned(),
            built: pe::machine_name(p.machine).to_owned(),
            arch: w.arch.to_owned(),
        }
        .into());
    }
    if must_be_signed && !p.signed {
        return Err(Refusal::Unsigned {
            iso: iso_name.to_owned(),
            path: path.to_owned(),
            version: w.version.clone(),
        }
        .into());
    }
    Ok(())
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
