//! `wingold inject`: registry settings written offline into a Windows disk image.
//!
//! Order of work, so that a refusal writes nothing: parse every .reg file; find
//! Windows on the input (read-only); map every key to a hive; check the NTFS volume
//! is safe to write; run the edits on copies of the hives (a dirty hive is refused);
//! only then create the output (a qcow2 overlay under a temporary name), write the
//! changed hives, verify them by reading the output back, and move it into place.

use super::BadInput;
use crate::guest::{self, Windows};
use crate::image::{self, Access, BlockDev, PartitionView};
use crate::ntfs::{self, Volume};
use crate::reg::{self, profiles, Change, RegEdit};
use anyhow::Context;
use clap::{ArgMatches, Args};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// List the built-in profiles and exit.
    #[arg(long)]
    list_profiles: bool,
}

/// One source of edits, in command-line order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Profile { name: String, file: String },
    Reg { file: PathBuf },
}

/// `inject --json` output. Field names are part of the CLI contract (README).
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub output: Option<PathBuf>,
    pub in_place: bool,
    pub dry_run: bool,
    pub windows: WindowsSummary,
    pub sources: Vec<Source>,
    pub changes: Vec<Change>,
    pub hives_written: Vec<HiveWritten>,
    pub logs_truncated: Vec<String>,
    pub first_boot_commands: Vec<String>,
    pub verified: bool,
}

#[derive(Debug, Serialize)]
pub struct WindowsSummary {
    pub product_name: String,
    pub version: String,
    pub osinfo: String,
    pub arch: &'static str,
    pub family: profiles::Family,
    pub control_sets: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HiveWritten {
    pub hive: &'static str,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The profiles and .reg files of the command line, in the order given.
fn ordered_sources(
    args: &InjectArgs,
    matches: Option<&ArgMatches>,
) -> Vec<(usize, Result<String, PathBuf>)> {
    let idx = |id: &str, n: usize| -> Vec<usize> {
        matches
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_else(|| (0..n).collect())
    };
    let mut v: Vec<(usize, Result<String, PathBuf>)> = idx("profile", args.profile.len())
        .into_iter()
        .zip(args.profile.iter().cloned().map(Ok))
        .chain(
            idx("reg", args.reg.len())
                .into_iter()
                .zip(args.reg.iter().cloned().map(Err)),
        )
        .collect();
    v.sort_by_key(|(i, _)| *i);
    v
}

fn list_profiles(json: bool) -> anyhow::Result<()> {
    if json {
        let list: Vec<_> = profiles::PROFILES
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "description": p.description,
                    "nt5": p.regfile(profiles::Family::Nt5).0,
                    "nt6": p.regfile(profiles::Family::Nt6).0,
                })
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

/// Reads the edits of every source; a bad .reg file or profile name is bad input.
fn load_sources(
    order: &[(usize, Result<String, PathBuf>)],
    family: profiles::Family,
) -> anyhow::Result<(Vec<Source>, Vec<RegEdit>, Vec<String>)> {
    let mut sources = Vec::new();
    let mut edits = Vec::new();
    let mut first_boot = Vec::new();
    for (_, src) in order {
        match src {
            Ok(name) => {
                let chosen: Vec<&profiles::Profile> = if name == profiles::ALL {
                    profiles::PROFILES.iter().collect()
                } else {
                    vec![profiles::find(name).ok_or_else(|| {
                        BadInput(format!(
                            "unknown profile {name:?}; known: {}, all (see --list-profiles)",
                            profiles::PROFILES
                                .iter()
                                .map(|p| p.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?]
                };
                for p in chosen {
                    edits.extend(
                        p.edits(family)
                            .context("a built-in profile does not parse")?,
                    );
                    first_boot.extend(p.first_boot(family).iter().map(|s| s.to_string()));
                    sources.push(Source::Profile {
                        name: p.name.to_owned(),
                        file: p.regfile(family).0.to_owned(),
                    });
                }
            }
            Err(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
                let (_, e) = reg::parse(&bytes, &path.display().to_string())
                    .map_err(|e| BadInput(e.to_string()))?;
                edits.extend(e);
                sources.push(Source::Reg { file: path.clone() });
            }
        }
    }
    Ok((sources, edits, first_boot))
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Refuses, on the read-only input, a Windows volume that is unsafe to write.
fn check_volume(img: &dyn BlockDev, w: &Windows, image: &Path) -> anyhow::Result<()> {
    let part = PartitionView::new(img, w.partition_start, w.partition_size)?;
    let name = format!("{}: partition {}", image.display(), w.partition);
    let state = Volume::open(&part, &name, Access::ReadOnly)?.state()?;
    if let Some(evidence) = state.hibernated {
        return Err(ntfs::Error::Hibernated {
            volume: name,
            evidence,
        }
        .into());
    }
    if state.dirty {
        return Err(ntfs::Error::Dirty { volume: name }.into());
    }
    Ok(())
}

/// Writes the changed hives into the Windows volume of `img`, truncates their
/// transaction logs, and returns what it wrote.
fn write_hives(
    img: &dyn BlockDev,
    w: &Windows,
    label: &str,
    results: &[reg::HiveResult],
) -> anyhow::Result<(Vec<HiveWritten>, Vec<String>)> {
    let part = PartitionView::new(img, w.partition_start, w.partition_size)?;
    let vol = Volume::open(&part, label, Access::ReadWrite)?;
    let mut written = Vec::new();
    let mut truncated = Vec::new();
    let config = w.hive_path("").trim_end_matches('\\').to_owned();
    let listing = vol.list(&config)?;
    for r in results {
        let Some(bytes) = &r.bytes else { continue };
        let path = w.hive_path(r.hive);
        vol.write_file(&path, bytes)?;
        // Stale transaction logs must not replay old data over our edits: the hive
        // is now clean, and emptied logs hold nothing (windows-offline.md §4b).
        for log in listing.iter().filter(|e| {
            let upper = e.name.to_ascii_uppercase();
            !e.is_dir
                && ["LOG", "LOG1", "LOG2"]
                    .iter()
                    .any(|x| upper == format!("{}.{x}", r.hive))
        }) {
            let log_path = format!("{config}\\{}", log.name);
            if vol.file_size(&log_path)? > 0 {
                vol.write_file(&log_path, &[])?;
                truncated.push(log_path);
            }
        }
        written.push(HiveWritten {
            hive: r.hive,
            path,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        });
    }
    vol.close()?;
    img.flush()?;
    Ok((written, truncated))
}

/// Reads every written hive back from the finished image and checks its bytes and
/// every value the edits set.
fn verify(image: &Path, w: &Windows, results: &[reg::HiveResult]) -> anyhow::Result<()> {
    let img = image::open(image, Access::ReadOnly)?;
    let part = PartitionView::new(&img, w.partition_start, w.partition_size)?;
    let vol = Volume::open(&part, "verification", Access::ReadOnly)?;
    for r in results {
        let Some(bytes) = &r.bytes else { continue };
        let back = vol.read_file(&w.hive_path(r.hive))?;
        anyhow::ensure!(
            &back == bytes,
            "verification failed: hive {} reads back different bytes",
            r.hive
        );
        reg::verify(r, &back).map_err(|e| anyhow::anyhow!("verification failed: {e}"))?;
    }
    Ok(())
}

pub fn run(args: InjectArgs, matches: Option<&ArgMatches>) -> anyhow::Result<()> {
    if args.list_profiles {
        return list_profiles(args.json);
    }
    let image_path = args.image.clone().expect("clap requires IMAGE");
    if args.output.is_none() && !args.in_place && !args.dry_run {
        return Err(BadInput(
            "give --output OUT (an overlay backed by IMAGE) or --in-place".into(),
        )
        .into());
    }
    if let Some(out) = &args.output {
        if out.exists() {
            return Err(image::Error::Exists { path: out.clone() }.into());
        }
    }
    let order = ordered_sources(&args, matches);
    if order.is_empty() {
        return Err(
            BadInput("nothing to apply: give --profile NAME and/or --reg FILE".into()).into(),
        );
    }
    // Syntax first, before touching any image (the family only picks profile variants).
    for (_, src) in &order {
        if let Err(path) = src {
            let bytes = std::fs::read(path)
                .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
            reg::parse(&bytes, &path.display().to_string()).map_err(|e| BadInput(e.to_string()))?;
        }
    }

    let input = image::open(&image_path, Access::ReadOnly)?;
    let w = guest::find_windows_on(&input, &image_path, args.partition)?;
    let family = profiles::Family::of(w.major_version);
    let (sources, edits, first_boot) = load_sources(&order, family)?;
    reg::check_roots(&edits, &w.control_sets)?;
    check_volume(&input, &w, &image_path)?;

    // Run the edits on copies of the hives read from the input.
    let results = {
        let part = PartitionView::new(&input, w.partition_start, w.partition_size)?;
        let vol = Volume::open(
            &part,
            &format!("{}: partition {}", image_path.display(), w.partition),
            Access::ReadOnly,
        )?;
        reg::apply(&edits, &w.control_sets, |hive| {
            vol.read_file(&w.hive_path(hive))
                .map_err(|e| reg::Error::Load {
                    hive,
                    bad_input: e.is_bad_input(),
                    reason: e.to_string(),
                })
        })?
    };
    drop(input);
    let changes: Vec<Change> = results.iter().flat_map(|r| r.changes.clone()).collect();
    let mut report = Report {
        image: image_path.clone(),
        output: args.output.clone(),
        in_place: args.in_place,
        dry_run: args.dry_run,
        windows: WindowsSummary {
            product_name: w.product_name.clone(),
            version: w.version.clone(),
            osinfo: w.osinfo.clone(),
            arch: w.arch,
            family,
            control_sets: {
                let mut v = vec![w.control_sets.current.clone()];
                v.extend(
                    w.control_sets
                        .default
                        .clone()
                        .filter(|d| *d != w.control_sets.current),
                );
                v
            },
        },
        sources,
        changes,
        hives_written: Vec::new(),
        logs_truncated: Vec::new(),
        first_boot_commands: first_boot,
        verified: false,
    };

    if !args.dry_run {
        if args.in_place {
            eprintln!(
                "wingold: writing {} in place, as asked",
                image_path.display()
            );
            let img = image::open(&image_path, Access::ReadWrite)?;
            let (written, logs) =
                write_hives(&img, &w, &image_path.display().to_string(), &results)?;
            drop(img);
            report.hives_written = written;
            report.logs_truncated = logs;
            verify(&image_path, &w, &results)?;
        } else {
            let out = args.output.clone().expect("checked above");
            let tmp = image::temp_name(&out);
            let done = (|| -> anyhow::Result<(Vec<HiveWritten>, Vec<String>)> {
                image::create_overlay(&tmp, &image_path)?;
                let img = image::open(&tmp, Access::ReadWrite)?;
                let r = write_hives(&img, &w, &out.display().to_string(), &results)?;
                drop(img);
                verify(&tmp, &w, &results)?;
                image::publish(&tmp, &out)?;
                Ok(r)
            })();
            match done {
                Ok((written, logs)) => {
                    report.hives_written = written;
                    report.logs_truncated = logs;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
        }
        report.verified = true;
    }
    print_report(&report, args.json)
}

fn print_report(r: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(r);
    }
    println!(
        "{}: {} ({}), control set(s) {}",
        r.image.display(),
        r.windows.product_name,
        r.windows.osinfo,
        r.windows.control_sets.join(", ")
    );
    let show = |v: &Option<reg::ValueView>| {
        v.as_ref()
            .map(|v| {
                let shown = v
                    .display
                    .clone()
                    .unwrap_or_else(|| format!("hex:{}", v.data));
                format!("{} {shown}", v.kind)
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
            reg::Action::KeyAdded => println!("  + {key}"),
            reg::Action::KeyDeleted => println!("  - {key}"),
            reg::Action::ValueAdded => println!("  + {key}: {name} = {}", show(&c.new)),
            reg::Action::ValueChanged => {
                println!(
                    "  ~ {key}: {name} = {} (was {})",
                    show(&c.new),
                    show(&c.old)
                )
            }
            reg::Action::ValueDeleted => println!("  - {key}: {name} (was {})", show(&c.old)),
        }
    }
    let hives: std::collections::BTreeSet<&str> = r.changes.iter().map(|c| c.hive).collect();
    println!("{} change(s) in {} hive(s)", r.changes.len(), hives.len());
    for log in &r.logs_truncated {
        println!("  emptied the stale transaction log {log}");
    }
    for cmd in &r.first_boot_commands {
        println!("  first boot (no registry form): {cmd}");
    }
    if r.dry_run {
        println!("dry run: nothing written");
    } else if r.in_place {
        println!("written in place into {}; verified", r.image.display());
    } else if let Some(out) = &r.output {
        println!(
            "written to {} (an overlay on {}); verified",
            out.display(),
            r.image.display()
        );
    }
    Ok(())
}
