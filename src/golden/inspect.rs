//! What an image holds, as `wingold inspect` shows it: the image and its
//! backing chain, partitions and their file systems, how it boots, the Windows
//! found, and what that Windows holds (settings, virtio drivers, first-boot
//! queue, clone identity), each section said or its error; the golden version
//! and clone record beside it. Read-only: one mount per NTFS partition for its
//! state, and the Windows partition's settings, drivers, queue and identity
//! from the one mount Windows is found on.

use crate::guest::{self, Windows};
use crate::image::{
    self, probe_filesystem, scan_partitions, Access, BlockDev, Image, PartitionView,
};
use crate::ntfs::Volume;
use crate::reg::HiveName;
use crate::reg::{self, profiles};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `inspect --json` output. Field names are part of the CLI contract (README).
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub format: image::Format,
    pub virtual_size: u64,
    /// The backing chain below the image, nearest first.
    pub backing_chain: Vec<Layer>,
    pub partition_table: image::TableKind,
    pub disk_id: String,
    pub partitions: Vec<PartitionReport>,
    /// How the disk boots: UEFI (its EFI system partition, Windows' loader on
    /// it) or BIOS (its active partition, bootmgr or NTLDR).
    pub boot: Option<guest::Boot>,
    pub windows: Option<Windows>,
    /// Why no Windows was found, when `windows` is null.
    pub no_windows_reason: Option<String>,
    /// What the Windows found holds: settings, drivers, first-boot queue.
    #[serde(flatten)]
    pub sections: Sections,
    /// `<IMAGE>.manifest.json`, when the image is a golden image wingold built.
    pub manifest: Option<crate::golden::manifest::Manifest>,
    /// The golden version the image is or rests on (a clone's), when wingold built it.
    pub golden: Option<GoldenRef>,
    /// A clone's record beside it (`vm_N.identity.json`): what `clone` made it
    /// (name, MachineGuid, answer file, seed media).
    pub clone: Option<crate::golden::vm::Record>,
}

#[derive(Debug, Serialize)]
pub struct GoldenRef {
    /// The versioned golden file.
    pub version: PathBuf,
    /// Its stable name, and the version that name points at now.
    pub stable: Option<PathBuf>,
    pub current: Option<PathBuf>,
    /// The stable name points at another (newer) version than this one.
    pub newer_available: bool,
}

/// The first layer of the chain (the image itself included) that is a golden version.
pub fn golden_ref(img: &Image) -> Option<GoldenRef> {
    std::iter::once(img)
        .chain(img.backing_chain())
        .find_map(|layer| {
            let version = std::fs::canonicalize(layer.path()).ok()?;
            let m = crate::golden::manifest::read_manifest(&version)?;
            let stable = m.output.stable;
            let current = stable
                .as_deref()
                .and_then(|s| std::fs::canonicalize(s).ok());
            Some(GoldenRef {
                newer_available: current.as_ref().is_some_and(|c| *c != version),
                version,
                stable,
                current,
            })
        })
}

#[derive(Debug, Serialize)]
pub struct Layer {
    pub path: PathBuf,
    pub format: image::Format,
}

#[derive(Debug, Serialize)]
pub struct PartitionReport {
    #[serde(flatten)]
    pub partition: image::Partition,
    pub filesystem: &'static str,
    /// NTFS only: the volume label.
    pub label: Option<String>,
    /// NTFS only: `clean`, `dirty`, `hibernated`, `needs repair: why` (its two
    /// copies of the first MFT records disagree), or `unreadable: why`.
    pub ntfs_state: Option<String>,
}

pub fn backing_chain(img: &Image) -> Vec<Layer> {
    img.backing_chain()
        .into_iter()
        .map(|layer| Layer {
            path: layer.path().to_owned(),
            format: layer.format(),
        })
        .collect()
}

/// Label and state of an NTFS partition; a volume that will not mount is reported,
/// not fatal: inspect shows what it can.
pub fn ntfs_state(view: &dyn BlockDev, name: &str) -> (Option<String>, String) {
    let state = Volume::open(view, name, Access::ReadOnly).and_then(|v| v.state());
    match state {
        Ok(s) if s.hibernated.is_some() => (Some(s.label), "hibernated".into()),
        Ok(s) if s.dirty => (Some(s.label), "dirty".into()),
        Ok(s) => (Some(s.label), "clean".into()),
        Err(crate::ntfs::Error::NeedsRepair { reason, .. }) => {
            (None, format!("needs repair: {reason}"))
        }
        Err(e) => (None, format!("unreadable: {e}")),
    }
}

/// What inspect reads of the Windows found, each part said or its error.
#[derive(Debug, Default, Serialize)]
pub struct Sections {
    /// Every value the built-in profiles set, and what the image holds now.
    pub settings: Vec<reg::Setting>,
    /// Why the settings could not be read, if they could not.
    pub settings_error: Option<String>,
    /// virtio drivers in the image, whoever put them there: staged files, services,
    /// boot registration, versions.
    pub virtio_drivers: Option<crate::drivers::State>,
    /// Why the driver state could not be read, if it could not.
    pub virtio_drivers_error: Option<String>,
    /// The first-boot queue: pending, done and failed scripts, the log's tail, the
    /// service's start type (4 = disabled, the queue has finished).
    pub first_boot: Option<crate::firstboot::QueueState>,
    /// Why the queue could not be read, if it could not.
    pub first_boot_error: Option<String>,
    /// Sealed or not, what a clone gets, the names and ids it holds.
    pub identity: Option<crate::golden::identity::State>,
    /// Why the identity could not be read, if it could not.
    pub identity_error: Option<String>,
}

/// The sections of the Windows found, on the mount it was found on, from the
/// SYSTEM and SOFTWARE detection read (through their logs).
fn sections(found: guest::Found<'_, '_>) -> Sections {
    let guest::Found {
        windows,
        vol,
        system,
        software,
    } = found;
    let w = &windows;
    let (system, software) = (system.bytes, software.bytes);
    let said = |e: anyhow::Error| Some(format!("{e:#}"));
    let mut out = Sections::default();
    let family = profiles::Family::of(w.major_version);
    match reg::settings(family, &w.control_sets, |hive| match hive {
        HiveName::System => Ok(system.clone()),
        HiveName::Software => Ok(software.clone()),
        _ => guest::read_hive(vol, w, hive)
            .map(|r| r.bytes)
            .map_err(|e| reg::Error::load(hive, e)),
    }) {
        Ok(s) => out.settings = s,
        Err(e) => out.settings_error = said(e.into()),
    }
    // A guest file: None when it is not there; one that is there but cannot be
    // read is an error, said like the rest.
    let read = |path: &str| -> anyhow::Result<Option<Vec<u8>>> {
        match vol.lookup(path)? {
            None => Ok(None),
            Some(_) => Ok(Some(vol.read_file(path)?)),
        }
    };
    // The files (not folders) in a guest folder; None when it is not there.
    let list = |path: &str| -> anyhow::Result<Option<Vec<String>>> {
        Ok(match vol.lookup(path)? {
            None => None,
            Some(_) => Some(
                vol.list(path)?
                    .into_iter()
                    .filter(|e| !e.is_dir)
                    .map(|e| e.name)
                    .collect(),
            ),
        })
    };
    let staging = format!(
        "{}\\{}",
        w.system_root.trim_start_matches('\\'),
        crate::drivers::STAGING
    );
    let staged = || Ok(list(&staging)?.unwrap_or_default());
    match crate::drivers::state(w, &system, &software, &read, &staged) {
        Ok(s) => out.virtio_drivers = Some(s),
        Err(e) => out.virtio_drivers_error = said(e),
    }
    match crate::firstboot::queue_state(w, &system, &read, &list) {
        Ok(q) => out.first_boot = q,
        Err(e) => out.first_boot_error = said(e),
    }
    let identity = || -> anyhow::Result<_> {
        let sys = crate::hive::View::open(HiveName::System.name(), &system)?;
        let soft = crate::hive::View::open(HiveName::Software.name(), &software)?;
        let answer = format!(
            "{}\\{}",
            w.system_root.trim_start_matches('\\'),
            crate::golden::identity::ANSWER_FILE
        );
        Ok(crate::golden::identity::state(
            w,
            &sys,
            &soft,
            vol.lookup("sysprep")?.is_some(),
            vol.lookup(&answer)?.is_some(),
        )?)
    };
    match identity() {
        Ok(i) => out.identity = Some(i),
        Err(e) => out.identity_error = said(e),
    }
    out
}

pub fn report(path: &Path) -> anyhow::Result<Report> {
    let img = image::open(path, Access::ReadOnly)?;
    let table = scan_partitions(&img, path)?;
    let mut partitions = Vec::new();
    for p in table.partitions {
        let (filesystem, label, state) = if p.role == image::Role::Extended {
            ("extended", None, None)
        } else {
            let view = PartitionView::new(&img, p.start, p.size)?;
            match probe_filesystem(&view)? {
                "ntfs" => {
                    let (label, state) = ntfs_state(&view, &format!("partition {}", p.number));
                    ("ntfs", label, Some(state))
                }
                fs => (fs, None, None),
            }
        };
        partitions.push(PartitionReport {
            partition: p,
            filesystem,
            label,
            ntfs_state: state,
        });
    }
    // What cannot be read is said, like the settings, never silently left out.
    let found = guest::with_windows(&img, path, None, |found| {
        let w = found.windows.clone();
        Ok::<_, guest::Error>((w, sections(found)))
    });
    let (windows, no_windows_reason, sections) = match found {
        Ok((w, s)) => (Some(w), None, s),
        Err(e) => (None, Some(e.to_string()), Sections::default()),
    };
    let manifest = crate::golden::manifest::read_manifest(path);
    Ok(Report {
        golden: golden_ref(&img),
        clone: clone_record(path),
        manifest,
        sections,
        image: path.to_owned(),
        format: img.format(),
        virtual_size: img.len(),
        backing_chain: backing_chain(&img),
        partition_table: table.kind,
        disk_id: table.disk_id,
        partitions,
        boot: guest::boot(&img, path).ok(),
        windows,
        no_windows_reason,
    })
}

/// The record `clone` left beside `path`, when there is one that reads.
pub fn clone_record(path: &Path) -> Option<crate::golden::vm::Record> {
    let record = crate::golden::vm::record_path(path);
    let bytes = crate::input::read(&record, crate::input::SMALL).ok()?;
    serde_json::from_slice(&bytes).ok()
}
