//! `wingold disks`: the system disk (HDA) and the temporary virtio disk (HDB).

use crate::golden::vm;
use crate::image;
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
    disks: &'a [vm::Disk],
    /// The installer's QEMU argv, with --iso and --virtio-iso.
    install_recipe: Option<Vec<String>>,
    script: Option<&'a std::path::Path>,
}

pub fn run(args: DisksArgs) -> anyhow::Result<()> {
    let (hda, hdb) = vm::disk_paths(&args.dir, args.id);
    let hdb = (!args.no_hdb).then_some(hdb);
    let recipe = match (&args.iso, &args.virtio_iso) {
        (Some(iso), Some(virtio)) => Some(super::launch::vm(
            args.id,
            &hda,
            Some((iso.clone(), virtio.clone(), hdb.clone())),
            &args.vm,
        )?),
        _ => None,
    };
    let sh = recipe.as_ref().map(|vm| vm.sh());
    let script = args.script.as_deref().zip(sh.as_deref());
    let disks = vm::create_disks(
        (&hda, args.hda_size),
        hdb.as_deref().map(|h| (h, args.hdb_size)),
        script,
    )?;
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
