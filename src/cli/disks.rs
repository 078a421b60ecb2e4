//! `wingold disks`: the system disk (HDA) and the temporary virtio disk (HDB).

use crate::golden::vm;
use crate::image;
use crate::media::wim::Image;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DisksArgs {
    /// The VM's id: the disks are named vm_N.qcow2 and temp_N.qcow2.
    #[arg(long, required_unless_present = "list_editions")]
    id: Option<u32>,
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
    /// The Windows installation ISO: with --virtio-iso, the install recipe is
    /// printed; with --unattended, the edition and architecture are checked
    /// against the images its install.wim holds.
    #[arg(long, visible_alias = "windows-iso")]
    iso: Option<PathBuf>,
    /// The virtio-win ISO.
    #[arg(long, requires = "iso")]
    virtio_iso: Option<PathBuf>,
    /// Write the install recipe to this sh script instead of printing it.
    #[arg(long, requires_all = ["iso", "virtio_iso"])]
    script: Option<PathBuf>,
    /// List the images (editions) the Windows ISO's install.wim holds, read
    /// without mounting it, and write nothing.
    #[arg(
        long,
        requires = "iso",
        conflicts_with_all = ["unattended", "virtio_iso", "script", "id"]
    )]
    list_editions: bool,
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

/// The answer medium the arguments ask for, and the image of the Windows ISO it
/// installs (when the ISO is given), refused before anything is written.
fn answer_medium(
    a: &UnattendedArgs,
    vm: &super::launch::VmArgs,
    iso: Option<&std::path::Path>,
) -> anyhow::Result<Option<(Vec<u8>, Option<Image>)>> {
    use crate::unattend::{self, Arch, Edition, Firmware, Refusal};
    if !a.unattended {
        return Ok(None);
    }
    let os = a.os.as_deref().unwrap_or_default();
    let mut arch = match a.arch.as_deref() {
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
    // With the ISO, the edition must be one of its images, and the
    // architecture is the image's.
    let image = match iso {
        None => None,
        Some(iso) => {
            let (file, images) = crate::media::installer_images(iso)?;
            let (image, found) = unattend::pick_image(iso, file, &images, &edition, arch)?;
            arch = found;
            Some(image.clone())
        }
    };
    let (os, arch) = unattend::check(os, arch, firmware)?;
    unattend::check_locale(&a.locale)?;
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
    Ok(Some((unattend::medium(&req), image)))
}

/// `disks --list-editions --json`.
#[derive(Debug, Serialize)]
struct Editions<'a> {
    iso: &'a std::path::Path,
    /// `sources/install.wim` or `sources/install.esd`.
    file: &'a str,
    images: &'a [Image],
}

fn list_editions(iso: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let (file, images) = crate::media::installer_images(iso)?;
    if json {
        return super::print_json(&Editions {
            iso,
            file,
            images: &images,
        });
    }
    println!("{}: {file}, {} images", iso.display(), images.len());
    for i in &images {
        let arch = match i.arch {
            Some(a) => crate::unattend::wim_arch(a)
                .map(|a| a.name().to_owned())
                .unwrap_or_else(|| format!("arch {a}")),
            None => "-".into(),
        };
        let shown = i.display_name.as_deref().unwrap_or(&i.name);
        println!(
            "{:>3}  {arch:<6}  {:<24}  {:?}{}",
            i.index,
            i.edition_id.as_deref().unwrap_or("-"),
            i.name,
            if shown != i.name {
                format!("  ({shown})")
            } else {
                String::new()
            }
        );
    }
    Ok(())
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
    /// The image of the Windows ISO it installs, with --unattended --iso.
    image: Option<&'a Image>,
}

pub fn run(args: DisksArgs) -> anyhow::Result<()> {
    let id = match (args.list_editions, args.iso.as_deref(), args.id) {
        (true, Some(iso), _) => return list_editions(iso, args.json),
        (false, _, Some(id)) => id,
        // clap requires --iso with --list-editions and --id without it.
        _ => anyhow::bail!("give --id N, or --list-editions with --iso"),
    };
    let (hda, hdb) = vm::disk_paths(&args.dir, id);
    let hdb = (!args.no_hdb).then_some(hdb);
    let (medium, image) = answer_medium(&args.unattended, &args.vm, args.iso.as_deref())?
        .map_or((None, None), |(m, i)| (Some(m), i));
    let answer = medium.as_ref().map(|_| vm::answer_path(&hda));
    let mut recipe = match (&args.iso, &args.virtio_iso) {
        (Some(iso), Some(virtio)) => Some(super::launch::vm(
            id,
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
            image: image.as_ref(),
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
        let installs = image
            .as_ref()
            .map(|i| format!(", installs image {} {:?}", i.index, i.name))
            .unwrap_or_default();
        println!(
            "{}: answer medium (autounattend.xml{installs}; the VM powers off when Windows is \
             installed)",
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
