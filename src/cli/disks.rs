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
    unattended: UnattendedArgs,
    #[command(flatten)]
    vm: super::launch::VmArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// An unattended install: the answer medium `vm_N.unattend.iso` beside the
/// disks, which the install recipe attaches.
#[derive(Debug, Args)]
pub struct UnattendedArgs {
    /// Write the answer medium for an install with no one at the console: Setup
    /// partitions the system disk, installs the edition, and the VM powers off
    /// when Windows is installed.
    #[arg(long, requires_all = ["os", "admin_password_file"])]
    unattended: bool,
    /// The Windows release, as osinfo-db names it: win2k8r2, win10, win11,
    /// win2k16, win2k19, win2k22, win2k25, …
    #[arg(long, requires = "unattended")]
    os: Option<String>,
    /// The media's architecture: amd64 or x86 (taken as amd64 for x64-only releases).
    #[arg(long, requires = "unattended")]
    arch: Option<String>,
    /// The edition to install, by its name in install.wim (/IMAGE/NAME).
    #[arg(long, requires = "unattended", conflicts_with = "image_index")]
    edition: Option<String>,
    /// The edition to install, by its index in install.wim (/IMAGE/INDEX, from 1).
    #[arg(long, requires = "unattended")]
    image_index: Option<u32>,
    /// The computer name (else Setup makes one up).
    #[arg(long, requires = "unattended")]
    hostname: Option<String>,
    /// A file holding the administrator password (never given on the command line).
    #[arg(long, requires = "unattended")]
    admin_password_file: Option<PathBuf>,
    /// A file holding the product key.
    #[arg(long, requires = "unattended")]
    product_key_file: Option<PathBuf>,
    /// A Windows time zone id, e.g. "UTC" or "W. Europe Standard Time".
    #[arg(long, requires = "unattended")]
    timezone: Option<String>,
    /// Setup's, the system's and the user's language.
    #[arg(long, requires = "unattended", default_value = "en-US")]
    locale: String,
}

/// The answer medium the arguments ask for, refused before anything is written.
fn answer_medium(
    a: &UnattendedArgs,
    vm: &super::launch::VmArgs,
) -> anyhow::Result<Option<Vec<u8>>> {
    use crate::unattend::{self, Arch, Edition, Firmware, Refusal};
    if !a.unattended {
        return Ok(None);
    }
    let os = a.os.as_deref().unwrap_or_default();
    let arch = match a.arch.as_deref() {
        None => None,
        Some(text) => Some(Arch::parse(text).ok_or_else(|| Refusal::Value {
            what: "--arch",
            value: text.to_owned(),
            why: "give amd64 or x86",
        })?),
    };
    // The blank system disk boots as the recipe says; auto is BIOS.
    let firmware = match vm.firmware {
        super::launch::FirmwareArg::Uefi => Firmware::Uefi,
        _ => Firmware::Bios,
    };
    let (os, arch) = unattend::check(os, arch, firmware)?;
    unattend::check_locale(&a.locale)?;
    let edition = match (&a.edition, a.image_index) {
        (Some(name), _) => Edition::Name(name.clone()),
        (None, Some(0)) => {
            return Err(Refusal::Value {
                what: "--image-index",
                value: "0".into(),
                why: "install.wim counts its images from 1",
            }
            .into())
        }
        (None, Some(n)) => Edition::Index(n),
        (None, None) => Edition::Index(1),
    };
    if let Some(name) = &a.hostname {
        crate::golden::identity::check_hostname(name).map_err(|why| {
            crate::golden::Refusal::Hostname {
                name: name.clone(),
                why,
            }
        })?;
    }
    let secret = |p: &Option<PathBuf>| {
        p.as_deref()
            .map(crate::golden::identity::read_secret)
            .transpose()
    };
    let req = unattend::Request {
        os,
        arch,
        firmware,
        edition,
        hostname: a.hostname.clone(),
        admin_password: secret(&a.admin_password_file)?,
        product_key: secret(&a.product_key_file)?,
        timezone: a.timezone.clone(),
        locale: a.locale.clone(),
    };
    Ok(Some(unattend::medium(&req)))
}

/// `disks --json`.
#[derive(Debug, Serialize)]
struct Made<'a> {
    disks: &'a [vm::Disk],
    /// The installer's QEMU argv, with --iso and --virtio-iso.
    install_recipe: Option<Vec<String>>,
    script: Option<&'a std::path::Path>,
    /// The answer medium, with --unattended.
    answer: Option<&'a std::path::Path>,
}

pub fn run(args: DisksArgs) -> anyhow::Result<()> {
    let (hda, hdb) = vm::disk_paths(&args.dir, args.id);
    let hdb = (!args.no_hdb).then_some(hdb);
    let medium = answer_medium(&args.unattended, &args.vm)?;
    let answer = medium.as_ref().map(|_| vm::answer_path(&hda));
    let mut recipe = match (&args.iso, &args.virtio_iso) {
        (Some(iso), Some(virtio)) => Some(super::launch::vm(
            args.id,
            &hda,
            Some((iso.clone(), virtio.clone(), hdb.clone())),
            &args.vm,
        )?),
        _ => None,
    };
    // The recipe attaches this run's medium (written only below), and no other:
    // a `vm_N.unattend.iso` left from an earlier VM N would wipe this one's disk.
    if let Some(install) = recipe.as_mut().and_then(|r| r.install.as_mut()) {
        install.answer = answer.as_deref().map(std::path::absolute).transpose()?;
    }
    let sh = recipe.as_ref().map(|vm| vm.sh());
    let script = args.script.as_deref().zip(sh.as_deref());
    let disks = vm::create_disks(
        (&hda, args.hda_size),
        hdb.as_deref().map(|h| (h, args.hdb_size)),
        answer.as_deref().zip(medium.as_deref()),
        script,
    )?;
    if args.json {
        return super::print_json(&Made {
            disks: &disks,
            install_recipe: recipe.as_ref().map(|vm| vm.argv()),
            script: args.script.as_deref(),
            answer: answer.as_deref(),
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
    if let Some(a) = &answer {
        println!(
            "{}: answer medium (autounattend.xml; the VM powers off when Windows is installed)",
            a.display()
        );
    }
    match (&recipe, &args.script) {
        (Some(_), Some(script)) => println!("install recipe: {}", script.display()),
        (Some(vm), None) => print!("{}", vm.sh()),
        (None, _) => println!("(give --iso and --virtio-iso for the install recipe)"),
    }
    Ok(())
}
