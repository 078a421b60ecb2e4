//! `wingold disks`: the system disk (HDA) and the temporary virtio disk (HDB).

use crate::image::{self, create_qcow2, CreateOptions};
use anyhow::Context;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DisksArgs {
    /// The VM's id: the disks are named vm_N.qcow2 and temp_N.qcow2.
    #[arg(long)]
    id: u32,
    /// Where to create them.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Size of the system disk (HDA); K, M, G, T are powers of 1024.
    #[arg(long, default_value = "20G", value_parser = image::parse_size)]
    hda_size: u64,
    /// Size of the temporary virtio disk (HDB) that makes Windows install the
    /// virtio storage driver.
    #[arg(long, default_value = "1G", value_parser = image::parse_size)]
    hdb_size: u64,
    /// No temporary virtio disk: Windows installs on IDE alone, and `wingold build`
    /// (or `inject --drivers`) puts the virtio drivers into the image offline.
    #[arg(long, conflicts_with = "hdb_size")]
    no_hdb: bool,
    /// The Windows installation ISO: with --virtio-iso, the install recipe is printed.
    #[arg(long, requires = "virtio_iso")]
    iso: Option<PathBuf>,
    /// The virtio-win ISO.
    #[arg(long, requires = "iso")]
    virtio_iso: Option<PathBuf>,
    /// Write the install recipe to this sh script instead of printing it.
    #[arg(long, requires = "iso")]
    script: Option<PathBuf>,
    #[command(flatten)]
    vm: super::launch::VmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `disks --json`.
#[derive(Debug, Serialize)]
struct Made<'a> {
    disks: &'a [Disk],
    /// The installer's QEMU argv, with --iso and --virtio-iso.
    install_recipe: Option<Vec<String>>,
    script: Option<&'a std::path::Path>,
}

#[derive(Debug, Serialize)]
struct Disk {
    role: &'static str,
    path: PathBuf,
    format: &'static str,
    virtual_size: u64,
}

pub fn run(args: DisksArgs) -> anyhow::Result<()> {
    let hda = args.dir.join(format!("vm_{}.qcow2", args.id));
    let hdb = args.dir.join(format!("temp_{}.qcow2", args.id));
    // Refuse before creating anything, so that a refusal writes nothing.
    let hdb = (!args.no_hdb).then_some(hdb);
    let mut outputs = vec![&hda];
    outputs.extend(hdb.as_ref());
    outputs.extend(args.script.as_ref());
    for path in outputs {
        if path.exists() {
            return Err(image::Error::Exists { path: path.clone() }.into());
        }
    }
    let recipe = match (&args.iso, &args.virtio_iso) {
        (Some(iso), Some(virtio)) => Some(super::launch::vm(
            args.id,
            &hda,
            Some((iso.clone(), virtio.clone(), hdb.clone())),
            &args.vm,
        )?),
        _ => None,
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("{}: cannot create the folder", args.dir.display()))?;
    create_qcow2(&hda, &CreateOptions::new(args.hda_size)).context("creating the system disk")?;
    if let Some(hdb) = &hdb {
        if let Err(e) = create_qcow2(hdb, &CreateOptions::new(args.hdb_size)) {
            let _ = std::fs::remove_file(&hda);
            return Err(e).context("creating the temporary virtio disk");
        }
    }
    let mut disks = vec![Disk {
        role: "hda",
        path: hda,
        format: "qcow2",
        virtual_size: args.hda_size.div_ceil(512) * 512,
    }];
    disks.extend(hdb.map(|path| Disk {
        role: "hdb",
        path,
        format: "qcow2",
        virtual_size: args.hdb_size.div_ceil(512) * 512,
    }));
    if let (Some(script), Some(vm)) = (&args.script, &recipe) {
        // All or nothing: without its recipe, the disks go too.
        if let Err(e) = write_script(script, &vm.sh()) {
            for d in &disks {
                let _ = std::fs::remove_file(&d.path);
            }
            return Err(e);
        }
    }
    if args.json {
        return super::print_json(&Made {
            disks: &disks,
            install_recipe: recipe.as_ref().map(|vm| vm.argv()),
            script: args.script.as_deref(),
        });
    }
    for d in &disks {
        let what = if d.role == "hda" {
            "system disk (HDA)"
        } else {
            "temporary virtio disk (HDB)"
        };
        println!(
            "{}: {what}, qcow2, {} bytes",
            d.path.display(),
            d.virtual_size
        );
    }
    match (&recipe, &args.script) {
        (Some(_), Some(script)) => println!("install recipe: {}", script.display()),
        (Some(vm), None) => print!("{}", vm.sh()),
        (None, _) => println!("(give --iso and --virtio-iso for the install recipe)"),
    }
    Ok(())
}

/// Writes an executable script under a temporary name, then moves it into place;
/// an existing file is never replaced.
pub(super) fn write_script(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use crate::fsutil::{self, Place};
    fsutil::write_file(path, text.as_bytes(), 0o755, Place::NoReplace).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => image::Error::Exists {
            path: path.to_owned(),
        }
        .into(),
        _ => anyhow::Error::new(e).context(format!("{}: cannot write", path.display())),
    })
}
