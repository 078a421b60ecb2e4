//! `wingold build` and `wingold clone`.

use super::Invalid;
use crate::golden::{build, identity, seed, vm, Refusal};
use anyhow::Context;
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
    let targets =
        p.to.iter()
            .map(|to| {
                crate::registry::parse_reference(to).map_err(|reason| Invalid::PublishTo {
                    config: args.config.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
    if let Some(t) = p.tags.iter().find(|t| !crate::registry::valid_tag(t)) {
        return Err(Invalid::PublishTag {
            config: args.config.clone(),
            tag: t.clone(),
        }
        .into());
    }
    let progress = std::io::stderr().is_terminal() && !args.json;
    let outcome = confined_build(&cfg, args.force, progress)?;
    // An up-to-date build publishes too: only what a registry lacks is sent.
    let mut published = Vec::new();
    for to in targets {
        published.push(crate::publish::publish(&crate::publish::Options {
            golden: outcome.output.clone(),
            to: Some(to),
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

/// Locks the output and fetches virtio-win here; the rest (the base's bytes,
/// the ISO's, hives, NTFS, the new image) in a confined worker that may read
/// the inputs the config names, write in the output's folder and the temporary
/// folder, and reach no network. A worker that dies leaves no temporary file.
fn confined_build(
    cfg: &build::Loaded,
    force: bool,
    progress: bool,
) -> anyhow::Result<build::Outcome> {
    let started = build::start(cfg, force, progress)?;
    let mut write = started.writes();
    write.push(std::env::temp_dir());
    let policy = crate::confine::Policy {
        read: started.reads(),
        write,
        // A build's processor time grows with the image (deflate, SHA-256):
        // hours only for a spinning worker.
        cpu_seconds: 6 * 3600,
        ..crate::confine::Policy::reading(Vec::new())
    };
    let made = crate::confine::returning(&policy, || {
        started.rest().map_err(|e| match super::finish(Err(e)) {
            0 => crate::error::Kind::Failure.exit_code(),
            code => code,
        })
    });
    match made {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(code)) => {
            started.clear_leftovers();
            Err(super::Reported(code).into())
        }
        Err(e) => {
            started.clear_leftovers();
            let out = &cfg.config.golden.output;
            Err(anyhow::Error::from(e).context(format!("{}: not changed", out.display())))
        }
    }
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The golden image.
    golden: PathBuf,
    /// The new VM's id: vm_N.qcow2, its MAC, tap and VNC display.
    #[arg(long, required_unless_present = "spec", conflicts_with = "spec")]
    id: Option<u32>,
    /// The clone's host name; its computer name is the upper case (at most 15
    /// letters, digits and hyphens). Default: VM-N.
    #[arg(long, conflicts_with = "spec")]
    hostname: Option<String>,
    /// A Windows time zone id for a sealed golden's clone, e.g. "UTC" or
    /// "W. Europe Standard Time" (checked against the golden's own list).
    #[arg(long, value_name = "TZ", conflicts_with = "spec")]
    timezone: Option<String>,
    /// A file holding the administrator password for a sealed golden's clone
    /// (`-`: standard input); never given on the command line.
    #[arg(long, value_name = "FILE", conflicts_with = "spec")]
    admin_password_file: Option<PathBuf>,
    /// An offline domain-join blob for a sealed golden's clone (the file
    /// `djoin /provision ... /savefile` writes): the clone joins the domain at
    /// its first boot, without network access to a domain controller.
    #[arg(long, value_name = "FILE", conflicts_with = "spec")]
    domain_join_blob: Option<PathBuf>,
    /// Make a plain overlay with the golden's identity (its name, machine id and
    /// WSUS id shared with every such clone).
    #[arg(
        long,
        conflicts_with_all = ["hostname", "timezone", "admin_password_file", "domain_join_blob", "spec"]
    )]
    keep_identity: bool,
    /// Many clones from one TOML file: one [[clone]] table each (id, hostname,
    /// timezone, admin_password_file, keep_identity).
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,
    /// Seed media for an in-guest agent beside the clone (vm_N.seed.iso, attached
    /// as a CD-ROM by its recipe): cloud-init's NoCloud or an OpenStack config
    /// drive (cloudbase-init).
    #[arg(long, value_enum, conflicts_with = "spec")]
    seed: Option<SeedArg>,
    /// A user-data file for the seed (cloud-config or a script).
    #[arg(long, value_name = "FILE", requires = "seed", conflicts_with = "spec")]
    user_data: Option<PathBuf>,
    /// A network configuration for the seed (NoCloud network-config YAML, or a
    /// config drive's network_data.json).
    #[arg(long, value_name = "FILE", requires = "seed", conflicts_with = "spec")]
    network_config: Option<PathBuf>,
    /// `files` (default): the overlay, its recipe and record in DIR. `kubevirt`:
    /// print a KubeVirt VirtualMachine booting the golden's containerDisk, with
    /// a sysprep volume from a Secret holding the answer file (a sealed golden
    /// only); nothing is written.
    #[arg(long, value_enum, default_value = "files")]
    format: CloneFormat,
    /// The containerDisk for `--format kubevirt` (default: where `publish` last
    /// put this golden version).
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Allow a host name another clone in the folder already has.
    #[arg(long)]
    force: bool,
    /// Where to create vm_N.qcow2, vm_N.sh and vm_N.identity.json.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[command(flatten)]
    vm: super::launch::VmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What `clone` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloneFormat {
    Files,
    Kubevirt,
}

/// Seed media kinds, as `--seed` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeedArg {
    Nocloud,
    Configdrive,
}

/// One clone to make: its id and, unless it keeps the golden's identity, what it
/// is to be; its seed media.
struct Wanted {
    id: u32,
    identity: Option<identity::Request>,
    seed: Option<seed::Request>,
}

/// A seed request from its kind and the user's files (read now, capped).
fn seed_request(
    kind: Option<seed::SeedKind>,
    user_data: Option<&PathBuf>,
    network: Option<&PathBuf>,
) -> anyhow::Result<Option<seed::Request>> {
    let Some(kind) = kind else {
        return Ok(None);
    };
    let read = |p: Option<&PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        Ok(match p {
            Some(p) => Some(crate::input::read(p, crate::input::SCRIPT)?),
            None => None,
        })
    };
    Ok(Some(seed::Request {
        kind,
        user_data: read(user_data)?,
        network: read(network)?,
    }))
}

/// What clone `id` makes in `dir`: its disk, run recipe, record and seed media.
fn files_of(dir: &std::path::Path, id: u32) -> [PathBuf; 4] {
    let (disk, script) = vm::clone_paths(dir, id);
    let (record, seed) = (vm::record_path(&disk), vm::seed_path(&disk));
    [disk, script, record, seed]
}

fn wanted(args: &CloneArgs) -> anyhow::Result<Vec<Wanted>> {
    let request = |id: u32,
                   hostname: Option<&String>,
                   timezone: Option<&String>,
                   password: Option<&PathBuf>,
                   join: Option<&PathBuf>|
     -> anyhow::Result<identity::Request> {
        let hostname = hostname.cloned().unwrap_or_else(|| format!("VM-{id}"));
        identity::check_hostname(&hostname).map_err(|why| Refusal::Hostname {
            name: hostname.clone(),
            why,
        })?;
        Ok(identity::Request {
            hostname,
            timezone: timezone.cloned(),
            admin_password: password.map(|p| identity::read_secret(p)).transpose()?,
            domain_join: join.map(|p| identity::read_domain_join(p)).transpose()?,
        })
    };
    let list = match &args.spec {
        Some(spec) => vm::load_spec(spec)?
            .into_iter()
            .map(|e| {
                let identity = (!e.keep_identity)
                    .then(|| {
                        request(
                            e.id,
                            e.hostname.as_ref(),
                            e.timezone.as_ref(),
                            e.admin_password_file.as_ref(),
                            e.domain_join_blob.as_ref(),
                        )
                    })
                    .transpose()?;
                let seed = seed_request(e.seed, e.user_data.as_ref(), e.network_config.as_ref())?;
                anyhow::Ok(Wanted {
                    id: e.id,
                    identity,
                    seed,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => {
            let id = args.id.expect("clap requires --id without --spec");
            let identity = (!args.keep_identity)
                .then(|| {
                    request(
                        id,
                        args.hostname.as_ref(),
                        args.timezone.as_ref(),
                        args.admin_password_file.as_ref(),
                        args.domain_join_blob.as_ref(),
                    )
                })
                .transpose()?;
            let kind = args.seed.map(|s| match s {
                SeedArg::Nocloud => seed::SeedKind::NoCloud,
                SeedArg::Configdrive => seed::SeedKind::ConfigDrive,
            });
            let seed = seed_request(kind, args.user_data.as_ref(), args.network_config.as_ref())?;
            vec![Wanted { id, identity, seed }]
        }
    };
    // Every clone checked before the first is made: paths free, names not taken
    // (a KubeVirt VM writes nothing here).
    for w in list.iter().filter(|_| args.format == CloneFormat::Files) {
        for p in files_of(&args.dir, w.id) {
            if p.exists() {
                return Err(crate::image::Error::Exists { path: p }.into());
            }
        }
        if let (Some(req), false) = (&w.identity, args.force) {
            vm::refuse_taken_name(&args.dir, &req.hostname)?;
        }
    }
    Ok(list)
}

/// Clones in a confined worker (`confine`), once the user's own files (spec,
/// secrets, seed data) are read here: it may read the golden, the files it
/// rests on and their folders, the UEFI variable template and /dev/urandom; write only DIR
/// and the temporary folder; and reach no network.
pub fn run_clone(args: CloneArgs) -> anyhow::Result<()> {
    if args.format == CloneFormat::Kubevirt {
        return kubevirt(&args);
    }
    let list = wanted(&args)?;
    // Made here: a worker may write only in a folder that is there.
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("{}: cannot create", args.dir.display()))?;
    let mut read = super::image_reads(&args.golden);
    read.push(PathBuf::from(crate::launch::OVMF_VARS_TEMPLATE));
    // New MachineGuids and the like.
    read.push(PathBuf::from("/dev/urandom"));
    let policy = crate::confine::Policy {
        write: vec![args.dir.clone(), std::env::temp_dir()],
        ..crate::confine::Policy::reading(read)
    };
    match crate::confine::in_worker(&policy, || super::finish(clone_all(&args, &list))) {
        Ok(0) => Ok(()),
        Ok(code) => Err(super::Reported(code).into()),
        Err(e) => {
            for w in &list {
                for made in files_of(&args.dir, w.id) {
                    crate::fsutil::clear_dead_temps(&args.dir, Some(&made));
                }
            }
            let what = format!("{}: cloning stopped", args.dir.display());
            Err(anyhow::Error::from(e).context(what))
        }
    }
}

/// Every wanted clone, made and reported (in the worker).
fn clone_all(args: &CloneArgs, list: &[Wanted]) -> anyhow::Result<()> {
    // The recipes are checked (MAC, paths) before anything is written.
    // A clone boots as its golden does, unless told: the golden is looked at once.
    let golden_uefi = args.vm.firmware == super::launch::FirmwareArg::Auto
        && super::launch::boots_uefi(&args.golden);
    let vms = list
        .iter()
        .map(|w| {
            let (disk, script) = vm::clone_paths(&args.dir, w.id);
            let mut recipe = super::launch::vm(w.id, &disk, None, &args.vm)?;
            if golden_uefi {
                let abs = std::path::absolute(&disk)?;
                recipe.uefi = Some(crate::launch::Uefi::beside(&abs));
            }
            if w.seed.is_some() {
                recipe.seed = Some(std::path::absolute(vm::seed_path(&disk))?);
            }
            Ok((recipe, disk, script))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut made = Vec::new();
    for (w, (recipe, disk, script)) in list.iter().zip(&vms) {
        let c = vm::clone(
            &args.golden,
            disk,
            script,
            recipe,
            w.identity.as_ref(),
            w.seed.as_ref(),
        )?;
        if !args.json {
            print_clone(w.id, &c);
        }
        made.push(c);
    }
    if args.json {
        return match (args.spec.is_some(), made.len()) {
            (false, 1) => super::print_json(&made[0]),
            _ => super::print_json(&made),
        };
    }
    Ok(())
}

fn print_clone(id: u32, c: &vm::Cloned) {
    println!(
        "{}: VM {id} (an overlay on the golden version {})",
        super::terminal_safe(&c.image.display().to_string()),
        super::terminal_safe(&c.backing.display().to_string())
    );
    match &c.identity {
        None => println!(
            "  identity: the golden's own (name, MachineGuid and WSUS id shared with every \
             clone made so)"
        ),
        Some(r) => {
            match &r.answer_file {
                Some(f) => println!(
                    "  identity: {} from the answer file {f} (the golden is sealed){}{}",
                    r.computer_name,
                    r.timezone
                        .as_deref()
                        .map(|t| format!(", time zone {t}"))
                        .unwrap_or_default(),
                    if r.admin_password {
                        ", administrator password set"
                    } else {
                        ""
                    }
                ),
                None => println!(
                    "  identity: computer name {}, host name {} in {}; MachineGuid {}; WSUS id \
                     cleared",
                    r.computer_name,
                    r.hostname,
                    r.control_sets.join(", "),
                    r.machine_guid.as_deref().unwrap_or("-")
                ),
            }
            if let Some(shared) = &r.shared {
                println!("  note: {shared}");
            }
        }
    }
    if let Some(seed) = &c.seed {
        println!(
            "  seed: {} (attached as a CD-ROM by its recipe)",
            super::terminal_safe(&seed.display().to_string())
        );
    }
    println!(
        "{}: start it with this script",
        super::terminal_safe(&c.script.display().to_string())
    );
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

/// `clone --format kubevirt`: a Secret and a VirtualMachine per clone, printed.
fn kubevirt(args: &CloneArgs) -> anyhow::Result<()> {
    let image = match &args.image {
        Some(i) => i.clone(),
        None => crate::publish::published(&args.golden)
            .pop()
            .ok_or_else(|| Refusal::NotPublished {
                record: crate::publish::published_path(&args.golden)
                    .unwrap_or_else(|| args.golden.clone()),
            })?,
    };
    let mut out = String::new();
    for w in wanted(args)? {
        let req = w.identity.as_ref().ok_or(Refusal::KubevirtUnsealed)?;
        let (_, xml) = vm::answer_for(&args.golden, req)?;
        // A Kubernetes name: lower case, hyphens for what DNS labels lack.
        let name = req.hostname.to_ascii_lowercase().replace('_', "-");
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&crate::publish::kubevirt_vm(
            &name,
            &image,
            (args.vm.memory / (1 << 20)).max(1),
            args.vm.cpus,
            &xml,
        ));
    }
    print!("{out}");
    Ok(())
}
