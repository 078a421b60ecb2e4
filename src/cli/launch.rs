//! `wingold launch`: the QEMU command line (sh, argv JSON) or libvirt XML for a VM.

use super::Invalid;
use crate::image;
use crate::launch::{self, Accel, DiskBus, Install, Net, Vm};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// clap's view of a choice the launch layer defines (that layer knows no clap).
macro_rules! value_enum {
    ($ty:ident { $($variant:ident => $name:literal, $help:literal;)+ }) => {
        impl ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($ty::$variant),+]
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(match self {
                    $($ty::$variant => clap::builder::PossibleValue::new($name).help($help)),+
                })
            }
        }
    };
}

value_enum!(Net {
    Tap => "tap", "a host tap interface tap<ID> (made beforehand, no scripts run)";
    User => "user", "QEMU's user-mode network (no setup, outbound only)";
    None => "none", "no network";
});
value_enum!(Accel {
    Kvm => "kvm", "KVM";
    Tcg => "tcg", "TCG (emulation)";
    Auto => "auto", "KVM, falling back to TCG where KVM is unavailable";
});
value_enum!(DiskBus {
    Virtio => "virtio", "virtio-blk (boot driver viostor)";
    Scsi => "scsi", "virtio-scsi (boot driver vioscsi)";
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Sh,
    Argv,
    Libvirt,
}

/// What both `launch` and `disks` take to describe a VM.
#[derive(Debug, Args, Clone)]
pub struct VmArgs {
    /// Guest memory; K, M, G, T are powers of 1024.
    #[arg(long, default_value = "1G", value_parser = image::parse_size)]
    pub memory: u64,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub cpus: u32,
    /// First five octets of the MAC; the VM id is the sixth (VM 10 → …:0a).
    #[arg(long, default_value = launch::DEFAULT_MAC_BASE)]
    pub mac_base: String,
    /// Network: a host tap interface tap<ID>, QEMU user networking, or none.
    #[arg(long, value_enum, default_value = "tap")]
    pub net: Net,
    /// VNC listen address; the display number is the VM id. `none` for no VNC.
    #[arg(long, default_value = "127.0.0.1")]
    pub vnc: String,
    /// Accelerator: kvm, tcg, or auto (KVM, else TCG).
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// The system disk's controller for everyday runs: virtio (virtio-blk, boot
    /// driver viostor) or scsi (virtio-scsi, boot driver vioscsi: inject with
    /// --boot vioscsi). The installer recipe keeps HDA on IDE.
    #[arg(long, value_enum, default_value = "virtio")]
    pub disk_bus: DiskBus,
    /// Firmware: uefi (q35, OVMF with Secure Boot, the VM's own variable store
    /// vm_N.vars.fd and a TPM 2.0 through swtpm in vm_N.tpm/, as Windows 11
    /// requires), bios (pc), or auto: what the disk boots with (an EFI system
    /// partition: uefi), else bios.
    #[arg(long, value_enum, default_value = "auto")]
    pub firmware: FirmwareArg,
}

/// `--firmware`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirmwareArg {
    Auto,
    Bios,
    Uefi,
}

/// Whether the disk `image` boots with UEFI (it has an EFI system partition).
/// A disk that is not there yet (a clone about to be made) or holds no
/// partition table yet (the installer's blank disk) boots with BIOS. An image
/// that cannot be opened (a running VM holds it) is taken as BIOS too, and said,
/// so that a recipe can still be printed for a running VM.
pub fn boots_uefi(image: &Path) -> bool {
    if !image.exists() {
        return false;
    }
    match crate::image::open(image, crate::image::Access::ReadOnly) {
        Ok(img) => crate::guest::boot(&img, image).is_ok_and(|b| b.firmware == "uefi"),
        Err(e) => {
            crate::note::say(format!(
                "{e}: cannot tell its firmware, so the recipe is for BIOS; give --firmware uefi if it boots with UEFI"
            ));
            false
        }
    }
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The system disk (HDA).
    image: PathBuf,
    /// The VM's id: last MAC octet, tap<ID>, VNC display.
    #[arg(long)]
    id: u32,
    /// The installer recipe: boot the Windows ISO, HDA on IDE, HDB on virtio.
    #[arg(long, requires_all = ["windows_iso", "virtio_iso"])]
    install: bool,
    /// The Windows installation ISO (with --install).
    #[arg(long, requires = "install")]
    windows_iso: Option<PathBuf>,
    /// The virtio-win ISO (with --install).
    #[arg(long, requires = "install")]
    virtio_iso: Option<PathBuf>,
    /// The temporary virtio disk (with --install).
    #[arg(long, requires = "install")]
    hdb: Option<PathBuf>,
    #[command(flatten)]
    vm: VmArgs,
    /// Output: a runnable sh script, a JSON argv array, or libvirt domain XML.
    #[arg(long, value_enum, default_value = "sh")]
    format: Format,
}

fn format_of(path: &Path) -> anyhow::Result<String> {
    // A disk that does not exist yet is taken for qcow2 (what `wingold disks` makes).
    if !path.exists() {
        return Ok("qcow2".into());
    }
    Ok(image::sniff(path)?.to_string())
}

/// Absolute paths, so the recipe works from any directory.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// Builds the VM from the common arguments.
pub fn vm(
    id: u32,
    hda: &Path,
    install: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    a: &VmArgs,
) -> anyhow::Result<Vm> {
    let mac = launch::mac_for(&a.mac_base, id)?;
    let install = match install {
        None => None,
        Some((windows_iso, virtio_iso, hdb)) => Some(Install {
            hdb: match hdb {
                Some(h) => Some((absolute(&h)?, format_of(&h)?)),
                None => None,
            },
            windows_iso: absolute(&windows_iso)?,
            virtio_iso: absolute(&virtio_iso)?,
            // What `disks --unattended` wrote beside the system disk.
            answer: Some(crate::golden::vm::answer_path(hda))
                .filter(|a| a.is_file())
                .map(|a| absolute(&a))
                .transpose()?,
        }),
    };
    Ok(Vm {
        id,
        name: format!("wingold-vm{id}"),
        hda_format: format_of(hda)?,
        hda: absolute(hda)?,
        memory_mib: (a.memory / (1 << 20)).max(1),
        cpus: a.cpus,
        mac,
        net: a.net,
        vnc: (a.vnc != "none").then(|| a.vnc.clone()),
        accel: a.accel,
        disk_bus: a.disk_bus,
        install,
        seed: None,
        uefi: match a.firmware {
            FirmwareArg::Uefi => true,
            FirmwareArg::Bios => false,
            FirmwareArg::Auto => boots_uefi(hda),
        }
        .then(|| absolute(hda).map(|h| launch::Uefi::beside(&h)))
        .transpose()?,
    })
}

fn render(vm: &Vm, format: Format) -> anyhow::Result<String> {
    Ok(match format {
        Format::Sh => vm.sh(),
        Format::Argv => serde_json::to_string_pretty(&vm.argv())? + "\n",
        Format::Libvirt => vm.libvirt(),
    })
}

pub fn run(args: LaunchArgs) -> anyhow::Result<()> {
    let install = match (args.install, args.windows_iso, args.virtio_iso, args.hdb) {
        (true, Some(w), Some(v), h) => Some((w, v, h)),
        (false, ..) => None,
        _ => return Err(Invalid::InstallIsos.into()),
    };
    let vm = vm(args.id, &args.image, install, &args.vm)?;
    print!("{}", render(&vm, args.format)?);
    Ok(())
}
