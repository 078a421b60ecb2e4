//! `wingold inject`: arguments and output; the work is `golden::inject`.

use super::Invalid;
use crate::drivers::registry::Registration;
use crate::golden::inject::{self, Mode, Report, SourceSpec};
use crate::reg::{self, profiles};
use clap::{ArgMatches, Args};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// The Windows disk image (qcow2 or raw). Never written unless --in-place.
    #[arg(required_unless_present = "list_profiles")]
    image: Option<PathBuf>,
    /// Where to write the result: a qcow2 overlay backed by IMAGE.
    #[arg(long, short, conflicts_with = "in_place")]
    output: Option<PathBuf>,
    /// Write IMAGE itself instead of an overlay.
    #[arg(long)]
    in_place: bool,
    /// A built-in profile to apply (repeatable; `all` = every profile). See --list-profiles.
    #[arg(long, value_name = "NAME")]
    profile: Vec<String>,
    /// A .reg file to apply (repeatable). Profiles and files apply in the order given.
    #[arg(long = "reg", value_name = "FILE")]
    reg: Vec<PathBuf>,
    /// Show what would change; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The partition holding Windows (Linux numbering); found by looking when omitted.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// Apply edits that would leave Windows unbootable (deleting `Select` or the
    /// control set it names, pointing it at a missing set).
    #[arg(long)]
    force: bool,
    /// Put the virtio drivers of this virtio-win ISO into the image: the boot
    /// driver registered to start with Windows, NetKVM and Balloon staged for PnP.
    #[arg(long, value_name = "ISO")]
    drivers: Option<PathBuf>,
    /// One more driver folder of the ISO to stage (repeatable): vioserial, pvpanic, …
    #[arg(long = "driver", value_name = "NAME", requires = "drivers")]
    driver: Vec<String>,
    /// The boot driver: viostor (virtio-blk) or vioscsi (virtio-scsi).
    #[arg(long, value_enum, default_value_t = BootArg::Viostor, requires = "drivers")]
    boot: BootArg,
    /// A script (.cmd, .bat or .ps1) to run once at the first boot, after the
    /// built-in steps (repeatable, run in the order given).
    #[arg(long = "firstboot", value_name = "SCRIPT")]
    firstboot: Vec<PathBuf>,
    /// Copy a local file or folder tree into the guest: LOCAL:GUEST_PATH, e.g.
    /// payload/:C:\Tools (repeatable).
    #[arg(long = "copy-in", value_name = "LOCAL:GUEST_PATH")]
    copy_in: Vec<String>,
    /// Install the NIC watchdog at first boot (Windows XP / 2003 and later): a
    /// task that pings the default gateway (or --watchdog-target) every minute and
    /// resets the virtio NIC after --watchdog-failures failures in a row.
    #[arg(long)]
    nic_watchdog: bool,
    /// Install the QEMU guest agent from the --drivers ISO at first boot
    /// (guest-agent/qemu-ga-*.msi, silently; Windows 8 / 2012 and later). The
    /// vioserial driver it talks through is staged with it.
    #[arg(long, requires = "drivers", conflicts_with = "no_firstboot")]
    guest_agent: bool,
    /// The address the NIC watchdog pings (default: the default gateway).
    #[arg(long, value_name = "ADDRESS", requires = "nic_watchdog")]
    watchdog_target: Option<String>,
    /// Failures in a row before the NIC watchdog resets the NIC.
    #[arg(long, value_name = "N", default_value_t = 3, requires = "nic_watchdog")]
    watchdog_failures: u32,
    /// No first-boot queue: the built-in steps (PnP install of the staged drivers,
    /// the balloon service, netsh tuning) are left out.
    #[arg(long, conflicts_with_all = ["firstboot", "copy_in", "nic_watchdog"])]
    no_firstboot: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// List the built-in profiles and exit.
    #[arg(long)]
    list_profiles: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BootArg {
    Viostor,
    Vioscsi,
}

/// The profiles and .reg files of the command line, in the order given.
fn ordered_sources(args: &InjectArgs, matches: Option<&ArgMatches>) -> Vec<SourceSpec> {
    let idx = |id: &str, n: usize| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_else(|| (0..n).collect())
    };
    let mut v: Vec<(usize, SourceSpec)> = idx("profile", args.profile.len())
        .into_iter()
        .zip(args.profile.iter().cloned().map(SourceSpec::Profile))
        .chain(
            idx("reg", args.reg.len())
                .into_iter()
                .zip(args.reg.iter().cloned().map(SourceSpec::Reg)),
        )
        .collect();
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, s)| s).collect()
}

fn list_profiles(json: bool) -> anyhow::Result<()> {
    if json {
        /// `inject --list-profiles --json`: each profile and its .reg file per family.
        #[derive(serde::Serialize)]
        struct Listed {
            name: &'static str,
            description: &'static str,
            nt5: &'static str,
            nt6: &'static str,
        }
        let list: Vec<Listed> = profiles::PROFILES
            .iter()
            .map(|p| Listed {
                name: p.name,
                description: p.description,
                nt5: p.regfile(profiles::Family::Nt5).0,
                nt6: p.regfile(profiles::Family::Nt6).0,
            })
            .collect();
        return super::print_json(&list);
    }
    for p in profiles::PROFILES {
        println!("{:<14} {}", p.name, p.description);
    }
    println!("{:<14} all of the above", profiles::ALL);
    Ok(())
}

/// Injects in a confined worker (`confine`): it may read the image and the
/// files it rests on, the .reg files, the ISO, the scripts and trees named, and
/// the service binary; write only the output's folder (or, in place, the image
/// itself) and the temporary folder; and reach no network. A worker that dies
/// leaves no output.
pub fn run(args: InjectArgs, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
    if args.list_profiles {
        return list_profiles(args.json);
    }
    let image_path = args.image.clone().expect("clap requires IMAGE");
    let mode = match (&args.output, args.in_place, args.dry_run) {
        (_, _, true) => Mode::DryRun,
        (Some(out), false, false) => Mode::Overlay(out.clone()),
        (None, true, false) => Mode::InPlace,
        _ => return Err(Invalid::InjectMode.into()),
    };
    let specs = ordered_sources(&args, matches);
    let copy_in = copy_in_specs(&args.copy_in)?;
    let policy = policy(&args, &image_path, &mode, &specs, &copy_in);
    let code = crate::confine::in_worker(&policy, || {
        super::finish(inject(&args, &image_path, &mode, &specs, copy_in))
    });
    match code {
        Ok(0) => Ok(()),
        Ok(code) => Err(super::Reported(code).into()),
        Err(e) => Err(match &mode {
            Mode::Overlay(out) => {
                crate::fsutil::clear_dead_temps(&crate::fsutil::folder_of(out), Some(out));
                anyhow::Error::from(e).context(format!("{}: not written", out.display()))
            }
            Mode::InPlace => anyhow::Error::from(e).context(format!(
                "{}: the write in place was cut short (wingold inspect tells what it left)",
                image_path.display()
            )),
            Mode::DryRun | Mode::WorkOverlay(_) => e.into(),
        }),
    }
}

/// What an inject's worker may read and write.
fn policy(
    args: &InjectArgs,
    image: &std::path::Path,
    mode: &Mode,
    specs: &[SourceSpec],
    copy_in: &[(PathBuf, String)],
) -> crate::confine::Policy {
    let mut read = super::image_reads(image);
    read.extend(specs.iter().filter_map(|s| match s {
        SourceSpec::Reg(r) => Some(r.clone()),
        SourceSpec::Profile(_) => None,
    }));
    read.extend(args.drivers.iter().cloned());
    read.extend(args.firstboot.iter().cloned());
    read.extend(copy_in.iter().map(|(local, _)| local.clone()));
    read.push(PathBuf::from(crate::firstboot::RHSRVANY));
    let mut write = vec![std::env::temp_dir()];
    match mode {
        Mode::Overlay(out) => write.push(crate::fsutil::folder_of(out)),
        Mode::InPlace => write.push(image.to_owned()),
        Mode::DryRun | Mode::WorkOverlay(_) => {}
    }
    crate::confine::Policy {
        write,
        ..crate::confine::Policy::reading(read)
    }
}

/// `--copy-in LOCAL:GUEST` — the guest part starts at the first ':' followed
/// by a drive path or a backslash; a local path may hold ':' itself.
fn copy_in_specs(specs: &[String]) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut copy_in = Vec::new();
    for spec in specs {
        let split = spec
            .match_indices(':')
            .map(|(i, _)| i)
            .find(|&i| {
                let rest = &spec[i + 1..];
                rest.starts_with('\\') || (rest.len() >= 2 && rest.as_bytes()[1] == b':')
            })
            .ok_or_else(|| Invalid::CopyInSpec(spec.clone()))?;
        copy_in.push((PathBuf::from(&spec[..split]), spec[split + 1..].to_owned()));
    }
    Ok(copy_in)
}

/// The inject itself (in the worker).
fn inject(
    args: &InjectArgs,
    image_path: &std::path::Path,
    mode: &Mode,
    specs: &[SourceSpec],
    copy_in: Vec<(PathBuf, String)>,
) -> anyhow::Result<()> {
    if let Some(out) = &args.output {
        let mut inputs = vec![("the image", image_path.to_owned())];
        for layer in crate::image::backing_files(image_path) {
            inputs.push(("a backing file of the image", layer));
        }
        for spec in specs {
            if let inject::SourceSpec::Reg(r) = spec {
                inputs.push(("a .reg file", r.clone()));
            }
        }
        crate::golden::build::refuse_output_among(out, &inputs)?;
        if out.exists() {
            return Err(crate::image::Error::Exists { path: out.clone() }.into());
        }
    }
    if args.in_place && !args.dry_run {
        inject::refuse_golden_version(image_path)?;
    }
    let driver_request = args.drivers.as_ref().map(|iso| crate::drivers::Request {
        iso: iso.clone(),
        boot: match args.boot {
            BootArg::Viostor => crate::drivers::Boot::Viostor,
            BootArg::Vioscsi => crate::drivers::Boot::Vioscsi,
        },
        extra: args.driver.clone(),
    });
    let first_boot_request = (!args.no_firstboot).then(|| crate::firstboot::Request {
        steps: Vec::new(),
        scripts: args.firstboot.clone(),
        copy_in,
        service_binary: None,
        nic_watchdog: args.nic_watchdog.then(|| crate::firstboot::Watchdog {
            target: args.watchdog_target.clone(),
            failures: args.watchdog_failures,
        }),
        guest_agent_iso: args.guest_agent.then(|| args.drivers.clone()).flatten(),
    });
    let mut plan = inject::plan(
        image_path,
        specs,
        args.partition,
        args.force,
        driver_request.as_ref(),
        first_boot_request.as_ref(),
        None,
    )?;
    inject::write(&mut plan, mode)?;
    print_report(&plan.report, args.json)
}

/// A value as a plan line shows it: long ones cut, with the size of their data
/// (the JSON output keeps them whole).
fn shorten(shown: &str, bytes: usize) -> String {
    const MAX: usize = 72;
    match shown.char_indices().nth(MAX) {
        None => shown.to_owned(),
        Some((cut, _)) => format!("{}… ({bytes} bytes)", &shown[..cut]),
    }
}

fn print_report(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(r);
    }
    // Names come from the guest, the ISO and the user's files: control
    // characters in them are shown escaped, never sent to the terminal. Tens of
    // thousands of lines: one write per buffer, not per line.
    let mut out = super::Safe(std::io::BufWriter::new(std::io::stdout().lock()));
    macro_rules! say {
        ($($t:tt)*) => { writeln!(out, $($t)*)? };
    }
    say!(
        "{}: {} ({}), control set(s) {}",
        r.image.display(),
        r.windows.product_name,
        r.windows.osinfo,
        r.windows.control_sets.join(", ")
    );
    let show = |v: &Option<crate::hive::RegValue>| {
        v.as_ref()
            .map(reg::ValueView::from)
            .map(|v| {
                let shown = v
                    .display
                    .clone()
                    .unwrap_or_else(|| format!("hex:{}", v.data));
                format!("{} {}", v.kind, shorten(&shown, v.data.len() / 2))
            })
            .unwrap_or_default()
    };
    for c in &r.changes {
        let key = format!("{}\\{}", c.hive, c.key);
        let name = match c.value.as_deref() {
            Some("") => "@".to_owned(),
            Some(v) => v.to_owned(),
            None => String::new(),
        };
        match c.action {
            reg::Action::KeyAdded => writeln!(out, "  + {key}"),
            reg::Action::KeyDeleted => writeln!(out, "  - {key}"),
            reg::Action::ValueAdded => writeln!(out, "  + {key}: {name} = {}", show(&c.new)),
            reg::Action::ValueChanged => {
                writeln!(
                    out,
                    "  ~ {key}: {name} = {} (was {})",
                    show(&c.new),
                    show(&c.old)
                )
            }
            reg::Action::ValueDeleted => {
                writeln!(out, "  - {key}: {name} (was {})", show(&c.old))
            }
        }?;
    }
    if let Some(d) = &r.drivers {
        say!(
            "virtio drivers from {} ({}), boot driver {}, {}:",
            d.iso.display(),
            d.iso_volume_id,
            d.boot.driver().service,
            match d.registration {
                Registration::CriticalDeviceDatabase => "registered in the CriticalDeviceDatabase",
                Registration::DriverDatabase => "registered in the DriverDatabase",
                Registration::InstalledByWindows => "installed by Windows already",
            }
        );
        for drv in &d.drivers {
            say!(
                "  {} ({}): {}, DriverVer {}{}",
                drv.name,
                drv.role,
                drv.folder,
                drv.driver_ver.as_deref().unwrap_or("?"),
                if drv.alias { " (alias folder)" } else { "" }
            );
        }
        for f in &d.files {
            let mark = match f.action {
                crate::drivers::FileAction::New => "+",
                crate::drivers::FileAction::Replaced => "~",
                crate::drivers::FileAction::Unchanged => "=",
            };
            say!("  {mark} {} ({} bytes) from {}", f.to, f.size, f.from);
        }
        for n in &d.notes {
            say!("  note: {n}");
        }
    }
    let hives: std::collections::BTreeSet<_> = r.changes.iter().map(|c| c.hive).collect();
    say!("{} change(s) in {} hive(s)", r.changes.len(), hives.len());
    for l in &r.logs_replayed {
        say!(
            "  replayed {} into {} first ({} entries, sequence {}-{}), as Windows would on boot",
            l.logs.join(" and "),
            l.hive,
            l.entries,
            l.first_sequence.unwrap_or_default(),
            l.last_sequence.unwrap_or_default()
        );
    }
    for log in &r.logs_truncated {
        say!("  emptied the transaction log {log} (its hive is clean now)");
    }
    for cmd in &r.first_boot_commands {
        say!("  first boot (no registry form): {cmd}");
    }
    if r.dry_run {
        say!("dry run: nothing written");
    } else if r.nothing_written {
        say!(
            "{} already holds every edit and file: nothing written; verified",
            r.image.display()
        );
    } else if r.in_place {
        say!("written in place into {}; verified", r.image.display());
    } else if let Some(output) = &r.output {
        say!(
            "written to {} (an overlay on {}); verified",
            output.display(),
            r.image.display()
        );
    }
    out.flush()?;
    Ok(())
}
