//! The files a plan writes into the guest — virtio drivers, the first-boot queue,
//! copied-in trees — each with its security descriptor and its time, planned
//! against the read-only volume and written into the output's.

use crate::drivers;
use crate::error::unreadable;
use crate::firstboot;
use crate::golden::Refusal;
use crate::guest::Windows;
use crate::ntfs::Volume;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One file written into the guest.
pub struct GuestWrite {
    /// Path on the Windows volume.
    pub to: String,
    pub data: Vec<u8>,
    pub sha256: String,
    pub action: drivers::FileAction,
    /// Index into `FilePlan::descriptors`.
    pub security: usize,
    /// Seconds since 1970 it is stamped with; the plan's time when None.
    pub time: Option<i64>,
    /// A local file streamed in when written (copy-in), instead of `data`.
    pub local: Option<PathBuf>,
    /// The part of `local` to copy, (offset, length): a large driver file inside
    /// the virtio-win ISO. The whole file when None.
    pub range: Option<(u64, u64)>,
    pub size: u64,
}

/// Files and folders written into the guest, each with a security descriptor
/// (a driver file takes its neighbours'; first-boot files and copied-in trees
/// the restricted one), never libntfs-3g's everyone-writable default.
pub struct FilePlan {
    pub writes: Vec<GuestWrite>,
    /// Folders to create, parents first, with their descriptor.
    pub folders: Vec<(String, usize)>,
    pub descriptors: Vec<Vec<u8>>,
    /// Seconds since 1970 that libntfs-3g stamps what it creates with.
    pub time: i64,
}

impl FilePlan {
    pub(super) fn empty() -> FilePlan {
        FilePlan {
            writes: Vec::new(),
            folders: Vec::new(),
            descriptors: Vec::new(),
            time: 0,
        }
    }

    fn descriptor(&mut self, sd: Vec<u8>) -> usize {
        self.descriptors.push(sd);
        self.descriptors.len() - 1
    }

    fn folder(&mut self, path: String, security: usize) {
        let key = crate::hive::fold_name(&path);
        if !self
            .folders
            .iter()
            .any(|(p, _)| crate::hive::fold_name(p) == key)
        {
            self.folders.push((path, security));
        }
    }

    pub(super) fn bytes_needed(&self) -> u64 {
        self.writes
            .iter()
            .filter(|w| w.action != drivers::FileAction::Unchanged)
            .map(|w| w.size.div_ceil(4096) * 4096)
            .sum()
    }
}

/// The SYSTEM and SOFTWARE hives as they are, read once for every planner.
pub(super) struct Hives {
    pub system: Vec<u8>,
    pub software: Vec<u8>,
}

/// The driver plan; its files and folders go into `f` (the file bytes move
/// there), with the security descriptors of `System32\drivers\disk.sys` and
/// `System32\drivers`.
pub(super) fn plan_drivers(
    vol: &Volume,
    w: &Windows,
    hives: &Hives,
    req: &drivers::Request,
    f: &mut FilePlan,
) -> anyhow::Result<drivers::Plan> {
    let read = guest_reader(vol);
    let hash = guest_hasher(vol);
    let fold = |name: &str| vol.upcase(name);
    let mut p = drivers::plan(w, req, &hives.system, &hives.software, &read, &hash, &fold)?;
    if vol.lookup(&w.hive_path("DRIVERS"))?.is_some() {
        // Windows 10+ also keeps a DRIVERS hive; virt-v2v registers the boot driver
        // in SYSTEM\DriverDatabase only, boot-tested on 2016-2025: so does wingold.
        p.report.notes.push(
            "this Windows has a DRIVERS hive; the boot driver is registered in \
             SYSTEM\\DriverDatabase, as virt-v2v does"
                .into(),
        );
    }
    let root = w.system_root.trim_start_matches('\\');
    let drivers_dir = format!("{root}\\System32\\drivers");
    let sibling = ["disk.sys", "pci.sys", "atapi.sys"]
        .iter()
        .map(|n| format!("{drivers_dir}\\{n}"))
        .find(|f| vol.lookup(f).ok().flatten().is_some())
        .ok_or_else(|| Refusal::NoSecuritySource {
            iso: req.iso.clone(),
            drivers_dir: drivers_dir.clone(),
        })?;
    let file_sd = f.descriptor(vol.security(&sibling)?);
    let folder_sd = f.descriptor(vol.security(&drivers_dir)?);
    f.time = p.report.file_time;
    // Only missing folders are made (and given a descriptor); the report says so.
    let mut missing = Vec::new();
    for dir in &p.report.folders {
        if vol.lookup(dir)?.is_none() {
            missing.push(dir.clone());
            f.folder(dir.clone(), folder_sd);
        }
    }
    p.report.folders = missing;
    for c in &mut p.report.files {
        f.writes.push(GuestWrite {
            to: c.to.clone(),
            data: std::mem::take(&mut c.data),
            sha256: c.sha256.clone(),
            action: c.action,
            security: file_sd,
            time: None,
            local: c.iso_range.map(|_| req.iso.clone()),
            range: c.iso_range,
            size: c.size,
        });
    }
    Ok(p)
}

/// The built-in first-boot steps this plan calls for: PnP install of the staged
/// drivers (NT 6.0+), the balloon service (Balloon staged), the netsh TCP tuning
/// (the tcpip profile among the sources, NT 6.0+).
pub(super) fn builtin_steps(
    w: &Windows,
    tcpip_profile: bool,
    drivers: Option<&drivers::Report>,
) -> Vec<firstboot::Step> {
    let nt6 = w.major_version >= 6;
    let mut steps = Vec::new();
    if let Some(d) = drivers {
        if nt6 && !d.drivers.is_empty() {
            steps.push(firstboot::Step::PnpDrivers);
        }
        if d.files
            .iter()
            .any(|f| f.to.to_ascii_lowercase().ends_with("\\blnsvr.exe"))
        {
            steps.push(firstboot::Step::BalloonService);
        }
    }
    if nt6 && tcpip_profile {
        steps.push(firstboot::Step::TcpipNetsh);
    }
    // Disks added later come online, as virt-v2v sets it when it converts a
    // guest to virtio: with the drivers, on NT 6.1 and later.
    if drivers.is_some() && (w.major_version, w.minor_version) >= (6, 1) {
        steps.push(firstboot::Step::SanPolicy);
    }
    steps
}

/// The first-boot plan; its files and folders go into `f` with the restricted
/// descriptor.
pub(super) fn plan_first_boot(
    vol: &Volume,
    w: &Windows,
    hives: &Hives,
    req: &firstboot::Request,
    f: &mut FilePlan,
) -> anyhow::Result<firstboot::Plan> {
    let read = guest_reader(vol);
    let hash = guest_hasher(vol);
    let fold = |name: &str| vol.upcase(name);
    let agent = match &req.guest_agent_iso {
        Some(iso) => Some(agent_msi(iso, w)?),
        None => None,
    };
    let mut p = firstboot::plan(w, req, agent, &hives.software, &read, &hash, &fold)?;
    if f.time == 0 {
        // No ISO to take a date from: the newest of the user's files, else the
        // time Windows last wrote its SYSTEM hive (base block, FILETIME at 12).
        f.time = match p.report.files.iter().filter_map(|g| g.time).max() {
            Some(t) => t,
            None => hive_time(&hives.system),
        };
    }
    let file_sd = f.descriptor(firstboot::security::restricted(false));
    let folder_sd = f.descriptor(firstboot::security::restricted(true));
    for dir in &p.report.folders {
        // Folders that exist (the user's C:\Tools on a second run) keep theirs.
        if vol.lookup(dir)?.is_none() {
            f.folder(dir.clone(), folder_sd);
        }
    }
    for g in &mut p.report.files {
        f.writes.push(GuestWrite {
            to: g.to.clone(),
            data: std::mem::take(&mut g.data),
            sha256: g.sha256.clone(),
            action: g.action,
            security: file_sd,
            time: g.time,
            local: g.local.clone(),
            range: None,
            size: g.size,
        });
    }
    Ok(p)
}

/// The QEMU guest agent's installer for `w`'s architecture, read from the
/// virtio-win ISO byte for byte.
fn agent_msi(iso_path: &std::path::Path, w: &Windows) -> anyhow::Result<firstboot::AgentMsi> {
    let refuse = || firstboot::Refusal::NoAgentMsi {
        arch: w.arch.to_owned(),
    };
    let path = firstboot::agent_msi_path(w.arch).ok_or_else(refuse)?;
    let iso = crate::virtio::iso::Iso::open(iso_path)?;
    let entry = iso
        .list()?
        .into_iter()
        .find(|e| !e.is_dir && e.path.eq_ignore_ascii_case(path))
        .ok_or_else(refuse)?;
    Ok(firstboot::AgentMsi {
        name: path.rsplit('/').next().unwrap_or(path).to_owned(),
        from: format!("{}:{path}", iso_path.display()),
        data: iso.read(&entry)?,
    })
}

/// A clone's answer file (a sealed golden's `Windows\Panther\unattend.xml`):
/// written with the restricted descriptor (it holds the encoded administrator
/// password), its folder made when the golden lacks it.
pub(super) fn plan_answer_file(
    vol: &Volume,
    path: &str,
    data: Vec<u8>,
    f: &mut FilePlan,
) -> anyhow::Result<()> {
    if let Some((dir, _)) = path.rsplit_once('\\') {
        if vol.lookup(dir)?.is_none() {
            let sd = f.descriptor(firstboot::security::restricted(true));
            f.folder(dir.to_owned(), sd);
        }
    }
    let action = if vol.lookup(path)?.is_some() {
        drivers::FileAction::Replaced
    } else {
        drivers::FileAction::New
    };
    let sd = f.descriptor(firstboot::security::restricted(false));
    f.writes.push(GuestWrite {
        to: path.to_owned(),
        sha256: crate::fsutil::sha256_hex(&data),
        size: data.len() as u64,
        data,
        action,
        security: sd,
        time: None,
        local: None,
        range: None,
    });
    Ok(())
}

/// The time Windows last wrote a SYSTEM hive (its base block's FILETIME), in
/// seconds since 1970: what files a plan creates are stamped with when nothing
/// else gives a time.
pub(super) fn hive_time(system: &[u8]) -> i64 {
    let ft = system
        .get(12..20)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0);
    (ft / 10_000_000).saturating_sub(11_644_473_600) as i64
}

/// The SHA-256 of a file on the volume, read in 1 MiB pieces.
pub(super) fn guest_sha256(vol: &Volume, path: &str) -> anyhow::Result<String> {
    let mut h = Sha256::new();
    let size = vol.file_size(path)?;
    let mut at = 0u64;
    while at < size {
        let piece = vol.read_range(path, at, 1 << 20)?;
        if piece.is_empty() {
            break;
        }
        at += piece.len() as u64;
        h.update(&piece);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The SHA-256 of files on the volume as the planners compare them: None when
/// missing; a folder where a file would go is said as such, before anything is
/// written.
pub(super) fn guest_hasher<'v, 'd>(
    vol: &'v Volume<'d>,
) -> impl Fn(&str) -> anyhow::Result<Option<String>> + use<'v, 'd> {
    move |path: &str| -> anyhow::Result<Option<String>> {
        match vol.is_folder(path)? {
            None => Ok(None),
            Some(false) => Ok(Some(guest_sha256(vol, path)?)),
            Some(true) => Err(crate::ntfs::Error::NotAFile {
                volume: vol.name().to_owned(),
                path: path.to_owned(),
            }
            .into()),
        }
    }
}

/// Files on the volume as the planners read them: None when missing.
pub(super) fn guest_reader<'v, 'd>(
    vol: &'v Volume<'d>,
) -> impl Fn(&str) -> anyhow::Result<Option<Vec<u8>>> + use<'v, 'd> {
    move |path: &str| -> anyhow::Result<Option<Vec<u8>>> {
        match vol.lookup(path)? {
            None => Ok(None),
            Some(_) => Ok(Some(vol.read_file(path)?)),
        }
    }
}

/// Refuses a volume without room for the files (plus slack for NTFS metadata and
/// the hives' growth).
pub(super) fn refuse_full_volume(
    vol: &Volume,
    w: &Windows,
    image_path: &Path,
    bytes_needed: u64,
) -> anyhow::Result<()> {
    let free = vol.free_bytes()?;
    let needed = bytes_needed + (4 << 20);
    if bytes_needed > 0 && free < needed {
        return Err(Refusal::NoRoom {
            image: image_path.to_owned(),
            partition: w.partition,
            free_mib: free >> 20,
            needed_mib: needed.div_ceil(1 << 20),
        }
        .into());
    }
    Ok(())
}

/// Creates the folders and writes the new and changed files, each with its
/// security descriptor and its time.
pub(super) fn write_files(vol: &Volume, f: &FilePlan) -> anyhow::Result<()> {
    for (dir, sd) in &f.folders {
        if vol.lookup(dir)?.is_none() {
            vol.mkdir_p(dir)?;
        }
        vol.set_security(dir, &f.descriptors[*sd])?;
    }
    for c in &f.writes {
        if c.action == drivers::FileAction::Unchanged {
            continue;
        }
        crate::ntfs::with_frozen_clock(c.time.unwrap_or(f.time), || -> anyhow::Result<()> {
            match &c.local {
                Some(local) => {
                    use std::io::{Read, Seek};
                    let mut src = std::fs::File::open(local).map_err(unreadable(local))?;
                    if let Some((offset, _)) = c.range {
                        src.seek(std::io::SeekFrom::Start(offset))
                            .map_err(unreadable(local))?;
                    }
                    vol.write_file_from(&c.to, c.size, &mut src.take(c.size))?;
                }
                None => vol.write_file(&c.to, &c.data)?,
            }
            vol.set_security(&c.to, &f.descriptors[c.security])?;
            Ok(())
        })?;
    }
    Ok(())
}
