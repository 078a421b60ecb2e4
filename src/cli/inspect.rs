//! `wingold inspect`: what an image holds.

use crate::guest::{self, Windows};
use crate::image::{
    self, probe_filesystem, scan_partitions, Access, BlockDev, Image, PartitionView,
};
use crate::ntfs::Volume;
use crate::reg::HiveName;
use crate::reg::{self, profiles};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The disk image (qcow2 or raw).
    image: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `inspect --json` output. Field names are part of the CLI contract (README).
#[derive(Debug, Serialize)]
struct Report {
    image: PathBuf,
    format: image::Format,
    virtual_size: u64,
    /// The backing chain below the image, nearest first.
    backing_chain: Vec<Layer>,
    partition_table: image::TableKind,
    disk_id: String,
    partitions: Vec<PartitionReport>,
    /// How the disk boots: UEFI (its EFI system partition, Windows' loader on
    /// it) or BIOS (its active partition, bootmgr or NTLDR).
    boot: Option<guest::Boot>,
    windows: Option<Windows>,
    /// Why no Windows was found, when `windows` is null.
    no_windows_reason: Option<String>,
    /// What the Windows found holds: settings, drivers, first-boot queue.
    #[serde(flatten)]
    sections: Sections,
    /// `<IMAGE>.manifest.json`, when the image is a golden image wingold built.
    manifest: Option<crate::golden::manifest::Manifest>,
    /// The golden version the image is or rests on (a clone's), when wingold built it.
    golden: Option<GoldenRef>,
    /// A clone's record beside it (`vm_N.identity.json`): what `clone` made it
    /// (name, MachineGuid, answer file, seed media).
    clone: Option<crate::golden::vm::Record>,
}

#[derive(Debug, Serialize)]
struct GoldenRef {
    /// The versioned golden file.
    version: PathBuf,
    /// Its stable name, and the version that name points at now.
    stable: Option<PathBuf>,
    current: Option<PathBuf>,
    /// The stable name points at another (newer) version than this one.
    newer_available: bool,
}

/// The first layer of the chain (the image itself included) that is a golden version.
fn golden_ref(img: &Image) -> Option<GoldenRef> {
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
struct Layer {
    path: PathBuf,
    format: image::Format,
}

#[derive(Debug, Serialize)]
struct PartitionReport {
    #[serde(flatten)]
    partition: image::Partition,
    filesystem: &'static str,
    /// NTFS only: the volume label.
    label: Option<String>,
    /// NTFS only: `clean`, `dirty`, `hibernated`, `needs repair: why` (its two
    /// copies of the first MFT records disagree), or `unreadable: why`.
    ntfs_state: Option<String>,
}

fn backing_chain(img: &Image) -> Vec<Layer> {
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
fn ntfs_state(view: &dyn BlockDev, name: &str) -> (Option<String>, String) {
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
struct Sections {
    /// Every value the built-in profiles set, and what the image holds now.
    settings: Vec<reg::Setting>,
    /// Why the settings could not be read, if they could not.
    settings_error: Option<String>,
    /// virtio drivers in the image, whoever put them there: staged files, services,
    /// boot registration, versions.
    virtio_drivers: Option<crate::drivers::State>,
    /// Why the driver state could not be read, if it could not.
    virtio_drivers_error: Option<String>,
    /// The first-boot queue: pending, done and failed scripts, the log's tail, the
    /// service's start type (4 = disabled, the queue has finished).
    first_boot: Option<crate::firstboot::QueueState>,
    /// Why the queue could not be read, if it could not.
    first_boot_error: Option<String>,
    /// Sealed or not, what a clone gets, the names and ids it holds.
    identity: Option<crate::golden::identity::State>,
    /// Why the identity could not be read, if it could not.
    identity_error: Option<String>,
}

impl Sections {
    /// Every part fails alike: the volume or its hives could not be read.
    fn unreadable(e: &anyhow::Error) -> Sections {
        let why = || Some(format!("{e:#}"));
        Sections {
            settings_error: why(),
            virtio_drivers_error: why(),
            first_boot_error: why(),
            identity_error: why(),
            ..Sections::default()
        }
    }
}

/// The sections of `w`, from one read-only mount and one read of each hive.
fn sections(img: &dyn BlockDev, w: &Windows) -> Sections {
    let part = match PartitionView::new(img, w.partition_start, w.partition_size) {
        Ok(p) => p,
        Err(e) => return Sections::unreadable(&e.into()),
    };
    let read = || -> anyhow::Result<_> {
        let vol = Volume::open(&part, "inspect", Access::ReadOnly)?;
        // Read as Windows would load them: through their transaction logs.
        let system = guest::read_hive(&vol, w, HiveName::System)?.bytes;
        let software = guest::read_hive(&vol, w, HiveName::Software)?.bytes;
        Ok((vol, system, software))
    };
    let (vol, system, software) = match read() {
        Ok(r) => r,
        Err(e) => return Sections::unreadable(&e),
    };
    let said = |e: anyhow::Error| Some(format!("{e:#}"));
    let mut out = Sections::default();
    let family = profiles::Family::of(w.major_version);
    match reg::settings(family, &w.control_sets, |hive| match hive {
        HiveName::System => Ok(system.clone()),
        HiveName::Software => Ok(software.clone()),
        _ => guest::read_hive(&vol, w, hive)
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

fn report(path: &Path) -> anyhow::Result<Report> {
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
    let (windows, no_windows_reason) = match guest::find_windows(&img, path) {
        Ok(w) => (Some(w), None),
        Err(e) => (None, Some(e.to_string())),
    };
    // What cannot be read is said, like the settings, never silently left out.
    let sections = windows
        .as_ref()
        .map(|w| sections(&img, w))
        .unwrap_or_default();
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
fn clone_record(path: &Path) -> Option<crate::golden::vm::Record> {
    let record = crate::golden::vm::record_path(path);
    let bytes = crate::input::read(&record, crate::input::SMALL).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let r = report(&args.image)?;
    if args.json {
        return super::print_json(&r);
    }
    println!(
        "{}: {}, {} bytes",
        r.image.display(),
        r.format,
        r.virtual_size
    );
    for layer in &r.backing_chain {
        println!("  backed by {} ({})", layer.path.display(), layer.format);
    }
    if let Some(c) = &r.clone {
        let line = format!(
            "clone: made as {} ({}){}{}",
            c.computer_name,
            c.machine_guid
                .as_deref()
                .map(|g| format!("MachineGuid {g}"))
                .unwrap_or_else(|| "answer file".into()),
            c.answer_file
                .as_deref()
                .map(|f| format!(", answer file {f}"))
                .unwrap_or_default(),
            c.seed
                .as_deref()
                .map(|s| format!(", seed {}", s.display()))
                .unwrap_or_default()
        );
        println!("{}", super::terminal_safe(&line));
    }
    if let Some(g) = &r.golden {
        println!("golden version: {}", g.version.display());
        match (&g.stable, &g.current) {
            (Some(stable), Some(cur)) if g.newer_available => println!(
                "  a newer version exists: {} now points at {}",
                stable.display(),
                cur.display()
            ),
            (Some(stable), Some(_)) => {
                println!("  the newest: {} points at it", stable.display())
            }
            (Some(stable), None) => println!("  {} points nowhere now", stable.display()),
            (None, _) => {}
        }
    }
    println!(
        "partition table: {} ({})",
        match r.partition_table {
            image::TableKind::Mbr => "MBR",
            image::TableKind::Gpt => "GPT",
            image::TableKind::None => "none, a bare volume",
        },
        r.disk_id
    );
    for p in &r.partitions {
        let q = &p.partition;
        let mut extra = String::new();
        if let Some(label) = p.label.as_deref().filter(|l| !l.is_empty()) {
            extra += &format!("  \"{label}\"");
        }
        if let Some(state) = &p.ntfs_state {
            extra += &format!("  {state}");
        }
        println!(
            "  {:>2}  start {:>12}  size {:>12}  type {:<36}  {}{extra}",
            q.number, q.start, q.size, q.type_id, p.filesystem
        );
    }
    if let Some(b) = &r.boot {
        let line = match b.firmware {
            "uefi" => format!(
                "boots with UEFI: EFI system partition {}, Windows' loader \\{} {}",
                b.esp.unwrap_or_default(),
                guest::UEFI_LOADER,
                match b.uefi_loader {
                    Some(true) => "present",
                    Some(false) => "MISSING",
                    None => "not read (no FAT volume there)",
                }
            ),
            "bios" => format!(
                "boots with BIOS: active partition {}, {}",
                b.active.unwrap_or_default(),
                b.bios_loader
                    .as_deref()
                    .map(|l| format!("{l} at its root"))
                    .unwrap_or_else(|| "no bootmgr or NTLDR at its root".into())
            ),
            _ => "boots with: unknown (no EFI system partition, no active partition)".into(),
        };
        println!("{line}");
    }
    for p in r.partitions.iter().filter(|p| p.filesystem == "bitlocker") {
        println!(
            "  partition {} {}",
            p.partition.number,
            guest::BITLOCKER_ADVICE
        );
    }
    match (&r.windows, &r.no_windows_reason) {
        (Some(w), _) => {
            println!(
                "Windows: {} ({}, {} {}, version {}, build {}), on partition {} at {}",
                w.product_name,
                w.osinfo,
                w.variant,
                w.arch,
                w.version,
                w.build.map(|b| b.to_string()).unwrap_or_else(|| "?".into()),
                w.partition,
                w.system_root
            );
            if let Some(ed) = &w.edition_id {
                println!("  edition: {ed}");
            }
            let cs = &w.control_sets;
            println!(
                "  control sets: current {}, default {}, last known good {}",
                cs.current,
                cs.default.as_deref().unwrap_or("-"),
                cs.last_known_good.as_deref().unwrap_or("-")
            );
            for h in &w.hives {
                println!(
                    "  hive {:<9} {:>10} bytes  {}  (sequence {}/{}, checksum {}){}",
                    h.name,
                    h.size,
                    if h.clean { "clean" } else { "DIRTY" },
                    h.header.primary_sequence,
                    h.header.secondary_sequence,
                    if h.header.checksum_valid { "ok" } else { "BAD" },
                    if h.logs.is_empty() {
                        String::new()
                    } else {
                        format!(", logs: {}", h.logs.join(" "))
                    }
                );
                if let Some(line) = log_state_line(&h.log_state) {
                    println!("    {}", super::terminal_safe(&line));
                }
            }
        }
        (None, Some(reason)) => println!("Windows: none found: {reason}"),
        (None, None) => {}
    }
    if !r.sections.settings.is_empty() {
        println!("settings of the built-in profiles:");
    }
    for st in &r.sections.settings {
        let now = st
            .current
            .as_ref()
            .map(|v| {
                v.display
                    .clone()
                    .unwrap_or_else(|| format!("hex:{}", v.data))
            })
            .unwrap_or_else(|| "absent".into());
        let want = st
            .wanted
            .display
            .clone()
            .unwrap_or_else(|| format!("hex:{}", st.wanted.data));
        println!(
            "  {} {:<13} {}\\{}\\{} = {now}{}",
            if st.matches { "ok" } else { "--" },
            st.profile,
            st.hive,
            st.key,
            st.value,
            if st.matches {
                String::new()
            } else {
                format!("  (profile sets {want})")
            }
        );
    }
    if let Some(m) = &r.manifest {
        println!(
            "golden image manifest ({}):",
            crate::golden::manifest::manifest_path(
                &std::fs::canonicalize(&r.image).unwrap_or_else(|_| r.image.clone())
            )
            .display()
        );
        println!("  built by wingold {}", m.wingold_version);
        println!(
            "  base {} (sha256 {})",
            m.base.path.display(),
            m.base.sha256.as_deref().unwrap_or("not recorded")
        );
        println!(
            "  virtio-win {} (sha256 {}), drivers injected: {}",
            m.virtio_win.version, m.virtio_win.sha256, m.virtio_win.drivers_injected
        );
        println!(
            "  {} registry change(s); output sha256 {}",
            m.edits.as_array().map(|a| a.len()).unwrap_or(0),
            m.output.sha256
        );
    }
    if let Some(e) = &r.sections.settings_error {
        println!("settings: cannot read them: {e}");
    }
    if let Some(e) = &r.sections.virtio_drivers_error {
        println!("virtio drivers: cannot read them: {e}");
    }
    if let Some(e) = &r.sections.first_boot_error {
        println!("first boot: cannot read the queue: {e}");
    }
    if let Some(e) = &r.sections.identity_error {
        println!("identity: cannot read it: {e}");
    }
    if let Some(i) = &r.sections.identity {
        let line = format!(
            "identity: {}; a clone gets {}; computer name {}, host name {}, MachineGuid {}{}{}",
            match i.seal {
                crate::golden::identity::Seal::Unsealed => "not sealed",
                crate::golden::identity::Seal::Sealed => "sealed (sysprep /generalize /oobe)",
                crate::golden::identity::Seal::SealedNt5 => "sealed (NT 5 sysprep)",
            },
            match i.clones_get {
                "registry" => "its own names and ids in the registry",
                "answer_file" => "an answer file",
                other => other,
            },
            i.computer_name.as_deref().unwrap_or("-"),
            i.hostname.as_deref().unwrap_or("-"),
            i.machine_guid.as_deref().unwrap_or("-"),
            if i.wsus_client_id {
                ", a WSUS client id"
            } else {
                ""
            },
            i.answer_file
                .as_deref()
                .map(|f| format!("; answer file {f} waits for the next boot"))
                .unwrap_or_default()
        );
        println!("{}", super::terminal_safe(&line));
    }
    if let Some(q) = &r.sections.first_boot {
        println!(
            "first boot: {} pending, {} done, {} failed; service {}",
            q.pending.len(),
            q.done.len(),
            q.failed.len(),
            match q.service_start {
                Some(4) => "disabled (the queue has finished)".to_owned(),
                Some(2) => "starts at boot".to_owned(),
                Some(n) => format!("start type {n}"),
                None => "absent".to_owned(),
            }
        );
        for (what, list) in [
            ("pending", &q.pending),
            ("done", &q.done),
            ("failed", &q.failed),
        ] {
            for n in list {
                println!("  {what:<7} {n}");
            }
        }
        for l in &q.log_tail {
            println!("  log: {l}");
        }
    }
    if let Some(d) = &r.sections.virtio_drivers {
        println!("virtio drivers:");
        if d.services.is_empty() && d.staged.is_empty() {
            println!("  none");
        }
        for svc in &d.services {
            println!(
                "  service {}: start {}, {} ({})",
                svc.name,
                svc.start
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "?".into()),
                svc.image_path.as_deref().unwrap_or("no ImagePath"),
                if svc.file_present {
                    "file present"
                } else {
                    "file missing"
                }
            );
        }
        for b in &d.boot_registration {
            println!("  boot: {b}");
        }
        if !d.staged.is_empty() {
            println!(
                "  staged in %SystemRoot%\\{}: {} file(s){}",
                crate::drivers::STAGING,
                d.staged.len(),
                if d.device_path_has_virtio {
                    ", on DevicePath"
                } else {
                    ""
                }
            );
        }
        for (inf, ver) in &d.staged_versions {
            println!("  {inf}: DriverVer {ver}");
        }
    }
    Ok(())
}

/// What a dirty hive's logs hold, in one line (`None` for a clean hive).
fn log_state_line(state: &guest::LogState) -> Option<String> {
    let logs = |l: &[crate::hive::replay::LogSummary]| {
        l.iter()
            .map(|l| {
                let seq = match (l.first_sequence, l.last_sequence) {
                    (Some(a), Some(b)) if a != b => format!(" {a}-{b}"),
                    (Some(a), _) => format!(" {a}"),
                    _ => String::new(),
                };
                format!(
                    "{} {:?} {} entries{seq}, {} of {} bytes valid{}",
                    l.name,
                    l.format,
                    l.entries,
                    l.valid_bytes,
                    l.size,
                    l.note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match state {
        guest::LogState::Clean => None,
        guest::LogState::Replayable(r) => Some(format!(
            "dirty, brought up to date by its logs: {} entries applied (sequence {}-{}){}; {}",
            r.applied,
            r.first_sequence.unwrap_or_default(),
            r.last_sequence.unwrap_or_default(),
            r.base_block_from
                .as_deref()
                .map(|l| format!(", base block from {l}"))
                .unwrap_or_default(),
            logs(&r.logs)
        )),
        guest::LogState::Dirty { why, logs: l } if l.is_empty() => Some(format!(
            "dirty, and nothing replays it: {why}; never written"
        )),
        guest::LogState::Dirty { why, logs: l } => Some(format!(
            "dirty, and nothing replays it: {why}; never written; {}",
            logs(l)
        )),
    }
}
