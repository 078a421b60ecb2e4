//! `wingold build` and `wingold clone`.

use super::Invalid;
use crate::golden::build;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build configuration (see assets/wingold.example.toml).
    #[arg(short, long, default_value = "wingold.toml")]
    config: PathBuf,
    /// Rebuild even when no input changed.
    #[arg(long)]
    force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `build --json`: the build's outcome and what `[publish]` published.
#[derive(serde::Serialize)]
struct BuildReport<'a> {
    #[serde(flatten)]
    build: &'a build::Outcome,
    published: Vec<crate::publish::Outcome>,
}

pub fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let cfg = build::load(&args.config)?;
    // `[publish]` is checked with the rest of the config, before anything is written.
    let p = &cfg.config.publish;
    for to in &p.to {
        crate::publish::registry::parse_reference(to).map_err(|reason| Invalid::PublishTo {
            config: args.config.clone(),
            reason,
        })?;
    }
    if let Some(t) = p
        .tags
        .iter()
        .find(|t| !crate::publish::registry::valid_tag(t))
    {
        return Err(Invalid::PublishTag {
            config: args.config.clone(),
            tag: t.clone(),
        }
        .into());
    }
    let progress = std::io::stderr().is_terminal() && !args.json;
    let outcome = build::build(&cfg, args.force, progress)?;
    // An up-to-date build publishes too: only what a registry lacks is sent.
    let mut published = Vec::new();
    for to in &p.to {
        published.push(crate::publish::publish(&crate::publish::Options {
            golden: outcome.output.clone(),
            to: Some(to.clone()),
            tags: p.tags.clone(),
            insecure: p.insecure,
            ca_cert: p.ca_cert.clone(),
            credentials: None,
            oci_layout: None,
            created: None,
            preference: "auto".into(),
            chunked: false,
            timeout: None,
            dry_run: false,
        })?);
    }
    if args.json {
        return super::print_json(&BuildReport {
            build: &outcome,
            published,
        });
    }
    if outcome.up_to_date {
        println!(
            "{} -> {}: up to date (virtio-win {})",
            outcome.output.display(),
            outcome.version.display(),
            outcome.virtio_win_version
        );
    } else {
        println!(
            "{} -> {}: built with virtio-win {}, {} registry change(s), sha256 {}; manifest {}",
            outcome.output.display(),
            outcome.version.display(),
            outcome.virtio_win_version,
            outcome.changes,
            outcome.sha256,
            outcome.manifest.display()
        );
    }
    for p in &published {
        println!(
            "published {} ({} bytes uploaded)",
            p.reference.as_deref().unwrap_or(&p.digest),
            p.bytes_uploaded
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The golden image.
    golden: PathBuf,
    /// The new VM's id: vm_N.qcow2, its MAC, tap and VNC display.
    #[arg(long)]
    id: u32,
    /// Where to create vm_N.qcow2 and vm_N.sh.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[command(flatten)]
    vm: super::launch::VmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_clone(args: CloneArgs) -> anyhow::Result<()> {
    let (disk, script) = crate::golden::vm::clone_paths(&args.dir, args.id);
    // The recipe is checked (MAC, paths) before anything is written.
    let vm = super::launch::vm(args.id, &disk, None, &args.vm)?;
    let c = crate::golden::vm::clone(&args.golden, &disk, &script, &vm)?;
    if args.json {
        return super::print_json(&c);
    }
    println!(
        "{}: VM {} (an overlay on the golden version {})",
        c.image.display(),
        args.id,
        c.backing.display()
    );
    println!("{}: start it with this script", c.script.display());
    Ok(())
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// The golden image's stable name (`[golden] output`), e.g. golden/win2k22.qcow2.
    golden: PathBuf,
    /// How many of the newest versions to keep besides those in use.
    #[arg(long, default_value_t = 1)]
    keep: usize,
    /// A folder of clones (searched recursively); versions they rest on are kept.
    #[arg(long = "clones", value_name = "DIR")]
    clones: Vec<PathBuf>,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_gc(args: GcArgs) -> anyhow::Result<()> {
    let entries = crate::golden::versions::gc(&args.golden, args.keep, &args.clones, args.dry_run)?;
    if args.json {
        return super::print_json(&entries);
    }
    for e in &entries {
        println!("{}: {} ({} bytes)", e.path.display(), e.verdict, e.size);
    }
    let freed: u64 = entries.iter().filter(|e| e.removed).map(|e| e.size).sum();
    if !args.dry_run {
        println!(
            "{} version(s) removed, {freed} bytes freed",
            entries.iter().filter(|e| e.removed).count()
        );
    }
    Ok(())
}
