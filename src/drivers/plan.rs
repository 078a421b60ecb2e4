//! The plan, step by step: the folders to take off the ISO, how this Windows
//! registers a boot driver, each folder's files checked and staged, the boot
//! driver's INF checked, what is already in the guest, and the registry edits.

use super::registry::{self, BootDriver, Registration};
use super::{
    inf, pe, DriverReport, FileAction, FileCopy, HashGuest, NameFold, Plan, ReadGuest, Refusal,
    Report, Request, Role, DEFAULT_DRIVERS, HELD_MAX, PE_HEAD, STAGING,
};
use crate::guest::Windows;
use crate::hive::View;
use crate::reg::{Edits, HiveName};
use crate::virtio::{drivers as folders, iso};

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
    let boot = req.boot.driver();
    let mut notes = Vec::new();
    let chosen = choose(w, req, &entries, &mut notes)?;

    let sys = View::open(HiveName::System.name(), system)?;
    let (registration, pnp) = registration(w, &sys, boot)?;
    if let Some(instance) = &pnp {
        notes.push(format!(
            "{} is installed by Windows already ({instance}): its service, files and \
             registration are left as they are; the new files are only staged",
            boot.service
        ));
    }

    let root = w.system_root.trim_start_matches('\\').to_owned();
    let ctx = Staging {
        w,
        image: &image,
        entries: &entries,
        iso_name: req.iso.display().to_string(),
        staging: format!("{root}\\{STAGING}"),
        machine: pe::machine_for(w.arch),
        fold,
    };
    let mut files: Vec<FileCopy> = Vec::new();
    let mut drivers = Vec::new();
    // The boot folder is always among the chosen (`choose` refuses otherwise).
    let mut claim = None;
    for p in &chosen {
        let is_boot = p.driver.eq_ignore_ascii_case(boot.folder);
        let (inf_path, parsed) = ctx.stage(p, is_boot, &mut files, &mut notes)?;
        if is_boot {
            let c = ctx.check_boot(boot, p, &inf_path, &parsed, &files, &mut notes)?;
            if pnp.is_none() {
                files.push(c.installed_copy(&root, boot));
            }
            claim = Some(c);
        }
        drivers.push(ctx.report(p, &inf_path, parsed, is_boot && pnp.is_none(), read_guest)?);
    }

    let bytes_needed = mark_actions(&mut files, hash_guest)?;
    for d in &drivers {
        if let (Some(old), Some(new)) = (&d.replaces_driver_ver, &d.driver_ver) {
            notes.push(format!("{}: replacing {old} with {new}", d.name));
        }
    }
    let (devices, parameters) = claim.map(|c| (c.devices, c.parameters)).unwrap_or_default();
    let mut edits = Edits::new(format!("virtio-win {}", boot_folder(&chosen, boot)));
    if pnp.is_none() {
        registry::service(&mut edits, boot, &parameters);
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
    device_path(&mut edits, software, &mut notes)?;

    Ok(Plan {
        report: Report {
            iso: req.iso.clone(),
            iso_volume_id: image.volume_id.clone(),
            boot: req.boot,
            registration,
            drivers,
            files,
            folders: vec![format!("{root}\\Drivers"), ctx.staging.clone()],
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

/// The ISO's folders for this Windows: the boot driver's, the defaults and the
/// extras asked for, each refused by name when the ISO lacks it.
fn choose(
    w: &Windows,
    req: &Request,
    entries: &[iso::Entry],
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<folders::Pick>> {
    let iso_name = req.iso.display().to_string();
    let folder_list = crate::virtio::driver_folders(entries);
    let os = folders::os_folders(&super::target_of(w));
    let arch = folders::arch_folder(w.arch);
    let mut wanted: Vec<String> = vec![req.boot.driver().folder.to_owned()];
    wanted.extend(DEFAULT_DRIVERS.iter().map(|s| s.to_string()));
    for x in &req.extra {
        if !wanted.iter().any(|d| d.eq_ignore_ascii_case(x)) {
            wanted.push(x.clone());
        }
    }
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
    // fwcfg and qemufwcfg drive the same device and conflict (RHBZ#2151752).
    let has = |d: &str| chosen.iter().any(|p| p.driver.eq_ignore_ascii_case(d));
    if has("fwcfg") && has("qemufwcfg") {
        chosen.retain(|p| !p.driver.eq_ignore_ascii_case("qemufwcfg"));
        notes.push("qemufwcfg left out: it conflicts with fwcfg".into());
    }
    Ok(chosen)
}

/// How this Windows registers a boot driver, checked against its SYSTEM hive,
/// and the PnP instance through which Windows installed the driver itself (the
/// temporary-disk install), if it did.
fn registration(
    w: &Windows,
    sys: &View,
    boot: &BootDriver,
) -> anyhow::Result<(Registration, Option<String>)> {
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
    let pnp = super::installed_by_windows(sys, w, boot)?;
    let registration = if pnp.is_some() {
        Registration::InstalledByWindows
    } else if has_ddb {
        Registration::DriverDatabase
    } else {
        Registration::CriticalDeviceDatabase
    };
    Ok((registration, pnp))
}

/// What staging a folder needs to know: the guest, the ISO, where files go.
struct Staging<'a> {
    w: &'a Windows,
    image: &'a iso::Iso,
    entries: &'a [iso::Entry],
    iso_name: String,
    staging: String,
    machine: u16,
    fold: &'a NameFold<'a>,
}

/// What the boot driver's INF claims, and its driver file.
struct BootClaim {
    devices: Vec<&'static str>,
    parameters: Vec<(String, String, u32)>,
    sys_file: FileCopy,
}

impl BootClaim {
    /// The boot driver's copy in `System32\drivers`, where the service loads it.
    fn installed_copy(&self, root: &str, boot: &BootDriver) -> FileCopy {
        FileCopy {
            to: format!("{root}\\System32\\drivers\\{}.sys", boot.service),
            ..self.sys_file.clone()
        }
    }
}

impl Staging<'_> {
    /// Adds the files of one folder to `files` (checked: PE machine, signature
    /// of a boot driver, INF size, names Windows can hold; a name another driver
    /// has already staged is skipped) and returns its INF, parsed.
    fn stage(
        &self,
        p: &folders::Pick,
        is_boot: bool,
        files: &mut Vec<FileCopy>,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<(String, inf::Inf)> {
        let w = self.w;
        let nt6_x64 = w.major_version >= 6 && w.arch == "x64";
        let prefix = format!("{}/", p.folder.to_ascii_lowercase());
        let mut inf_seen: Option<(String, inf::Inf)> = None;
        for e in self
            .entries
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
                self.image.read(e)?
            } else {
                self.image.read_head(e, PE_HEAD)?
            };
            if base.ends_with(".sys") {
                self.check_sys(&data, &e.path, is_boot && nt6_x64)?;
            }
            if base.ends_with(".inf") && !held {
                return Err(Refusal::InfEntry {
                    iso: self.iso_name.clone(),
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
                    iso: self.iso_name.clone(),
                    path: e.path.escape_debug().to_string(),
                    problem,
                }
                .into());
            }
            let to = format!("{}\\{base}", self.staging);
            // One name to NTFS when equal through its $UpCase (É.dll and é.dll),
            // never ß and SS.
            let folded = (self.fold)(&to);
            if files.iter().any(|f| (self.fold)(&f.to) == folded) {
                notes.push(format!(
                    "{} skipped: another driver has a file of that name",
                    e.path
                ));
                continue;
            }
            let (sha256, data, iso_range) = if held {
                (crate::fsutil::sha256_hex(&data), data, None)
            } else {
                (self.image.sha256(e)?, Vec::new(), Some((e.offset, e.size)))
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
        inf_seen.ok_or_else(|| {
            Refusal::NoInf {
                iso: self.iso_name.clone(),
                folder: p.folder.clone(),
            }
            .into()
        })
    }

    /// The boot driver's INF claims the controller's PCI id, parses, is a
    /// storage class INF, and its folder has the driver file.
    fn check_boot(
        &self,
        boot: &BootDriver,
        p: &folders::Pick,
        inf_path: &str,
        parsed: &inf::Inf,
        files: &[FileCopy],
        notes: &mut Vec<String>,
    ) -> anyhow::Result<BootClaim> {
        let iso = self.iso_name.clone();
        let inf = inf_path.to_owned();
        let devices = boot.claimed_by(parsed);
        if devices.is_empty() {
            return Err(Refusal::InfLacksId {
                iso,
                inf,
                legacy: boot.legacy,
                modern: boot.modern,
                service: boot.service.to_owned(),
            }
            .into());
        }
        if let Some(problem) = parsed.problem.clone() {
            return Err(Refusal::InfEntry { iso, inf, problem }.into());
        }
        if parsed.class_guid.as_deref() != Some(registry::SCSI_ADAPTER_CLASS) {
            return Err(Refusal::NotStorage {
                iso,
                inf,
                class: parsed.class_guid.clone(),
            }
            .into());
        }
        let sys_name = format!("{}.sys", boot.service);
        let suffix = format!("\\{sys_name}");
        let Some(sys_file) = files
            .iter()
            .find(|f| f.driver == p.driver && f.to.to_ascii_lowercase().ends_with(&suffix))
        else {
            return Err(Refusal::NoSys {
                iso,
                folder: p.folder.clone(),
                sys: sys_name,
            }
            .into());
        };
        if !devices.contains(&boot.modern) {
            notes.push(format!(
                "{}: this build claims only the transitional device PCI\\{} (not the \
                 modern {}): give the VM a transitional virtio disk (QEMU's \
                 virtio-blk-pci on pc, or on the q35 root bus; not behind a PCIe root port)",
                boot.service, boot.legacy, boot.modern
            ));
        }
        Ok(BootClaim {
            devices,
            parameters: parsed.parameters.clone(),
            sys_file: sys_file.clone(),
        })
    }

    /// One driver's line in the report, with the DriverVer of the INF an earlier
    /// injection staged in the guest, when it differs.
    fn report(
        &self,
        p: &folders::Pick,
        inf_path: &str,
        parsed: inf::Inf,
        boots: bool,
        read_guest: &ReadGuest,
    ) -> anyhow::Result<DriverReport> {
        let inf_name = inf_path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let previous = read_guest(&format!("{}\\{inf_name}", self.staging))?
            .map(|b| inf::parse(&inf::decode(&b)).driver_ver)
            .unwrap_or(None);
        Ok(DriverReport {
            name: p.driver.clone(),
            folder: p.folder.clone(),
            alias: p.alias,
            inf: Some(inf_name),
            replaces_driver_ver: previous.filter(|v| Some(v) != parsed.driver_ver.as_ref()),
            driver_ver: parsed.driver_ver,
            role: if boots { Role::Boot } else { Role::Staged },
        })
    }

    /// A driver binary: a PE image for the guest's machine, and, for a boot
    /// driver on 64-bit Windows Vista and later, an embedded signature.
    fn check_sys(&self, data: &[u8], path: &str, must_be_signed: bool) -> anyhow::Result<()> {
        let (iso, path) = (self.iso_name.clone(), path.to_owned());
        let Some(p) = pe::parse(data) else {
            return Err(Refusal::NotPe { iso, path }.into());
        };
        if p.machine != self.machine {
            return Err(Refusal::WrongMachine {
                iso,
                path,
                built: pe::machine_name(p.machine).to_owned(),
                arch: self.w.arch.to_owned(),
            }
            .into());
        }
        if must_be_signed && !p.signed {
            return Err(Refusal::Unsigned {
                iso,
                path,
                version: self.w.version.clone(),
            }
            .into());
        }
        Ok(())
    }
}

/// Idempotence: what the guest has with the same bytes is left alone. Returns
/// the bytes the new and replaced files need, in 4 KiB clusters.
fn mark_actions(files: &mut [FileCopy], hash_guest: &HashGuest) -> anyhow::Result<u64> {
    let mut bytes_needed = 0u64;
    for f in files {
        f.action = match hash_guest(&f.to)? {
            None => FileAction::New,
            Some(old) if old == f.sha256 => FileAction::Unchanged,
            Some(_) => FileAction::Replaced,
        };
        if f.action != FileAction::Unchanged {
            bytes_needed += f.size.div_ceil(4096) * 4096;
        }
    }
    Ok(bytes_needed)
}

/// `DevicePath` extended with the staging folder, as the hive has it typed.
fn device_path(edits: &mut Edits, software: &[u8], notes: &mut Vec<String>) -> anyhow::Result<()> {
    let soft = View::open(HiveName::Software.name(), software)?;
    match soft.value("Microsoft\\Windows\\CurrentVersion", "DevicePath")? {
        Some(v) => {
            if let Some(data) = registry::extended_device_path(&v.data) {
                edits.set(registry::DEVICE_PATH_KEY, "DevicePath", v.kind, data);
            }
        }
        None => notes.push(
            "SOFTWARE has no DevicePath value: not created (Windows uses its default)".into(),
        ),
    }
    Ok(())
}

fn boot_folder(chosen: &[folders::Pick], boot: &BootDriver) -> String {
    chosen
        .iter()
        .find(|p| p.driver.eq_ignore_ascii_case(boot.folder))
        .map(|p| p.folder.clone())
        .unwrap_or_else(|| boot.folder.to_owned())
}
