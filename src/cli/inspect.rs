//! `wingold inspect`: what an image holds.

use crate::golden::inspect::{report, Report};
use crate::guest;
use crate::image;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The disk image (qcow2 or raw).
    image: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Inspects in a confined worker (`confine`): it may read the image, the files
/// it rests on and the folders they are in (manifests and clone records lie
/// beside them), write nothing, and reach no network. Which files those are
/// comes from the qcow2 headers alone (`image::backing_files`).
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let read = super::image_reads(&args.image);
    let policy = crate::confine::Policy::reading(read);
    match crate::confine::in_worker(&policy, || super::finish(show(args)))? {
        0 => Ok(()),
        code => Err(super::Reported(code).into()),
    }
}

fn show(args: InspectArgs) -> anyhow::Result<()> {
    let r = report(&args.image)?;
    if args.json {
        return super::print_json(&r);
    }
    print_image(&r);
    print_partitions(&r);
    print_boot(&r);
    print_windows(&r);
    print_settings(&r);
    print_manifest(&r);
    print_errors(&r);
    print_identity(&r);
    print_first_boot(&r);
    print_drivers(&r);
    Ok(())
}

/// The image, its backing chain, the clone record and the golden version it is or rests on.
fn print_image(r: &Report) {
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
}

/// The partition table and each partition with its file system, label and state.
fn print_partitions(r: &Report) {
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
}

/// How the disk boots.
fn print_boot(r: &Report) {
    if let Some(b) = &r.boot {
        let line = match b.firmware.as_str() {
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
}

/// BitLocker partitions, the Windows found (or why none was) and its hives.
fn print_windows(r: &Report) {
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
}

/// Every setting of the built-in profiles, as the image holds it.
fn print_settings(r: &Report) {
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
}

/// The manifest beside a golden image.
fn print_manifest(r: &Report) {
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
            m.edits.len(),
            m.output.sha256
        );
    }
}

/// The sections that could not be read, and why.
fn print_errors(r: &Report) {
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
}

/// Sealed or not, and the names and ids a clone gets.
fn print_identity(r: &Report) {
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
}

/// The first-boot queue.
fn print_first_boot(r: &Report) {
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
}

/// The virtio drivers in the image.
fn print_drivers(r: &Report) {
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
