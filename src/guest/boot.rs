//! How a disk boots, as far as its partitions tell: UEFI by its EFI system
//! partition and Windows' loader there, BIOS by its active partition and the
//! loader at its root.

use super::Result;
use crate::image::{self, probe_filesystem, BlockDev, PartitionView};
use crate::ntfs::Volume;
use serde::Serialize;
use std::path::Path;

/// The GPT type of an EFI system partition.
const ESP_GUID: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Where Windows keeps its UEFI boot loader on the EFI system partition.
pub const UEFI_LOADER: &str = "EFI\\Microsoft\\Boot\\bootmgfw.efi";

/// How a disk boots, as far as its partitions tell.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Boot {
    /// `uefi` (an EFI system partition), `bios` (an MBR partition marked active)
    /// or `unknown`.
    pub firmware: String,
    /// The EFI system partition's number.
    pub esp: Option<u32>,
    /// Whether Windows' UEFI loader (`\EFI\Microsoft\Boot\bootmgfw.efi`) is on it.
    pub uefi_loader: Option<bool>,
    /// The MBR partition marked active.
    pub active: Option<u32>,
    /// The BIOS loader at the active partition's root: `bootmgr` (NT 6 and
    /// later) or `NTLDR` (NT 5), when there.
    pub bios_loader: Option<String>,
}

/// How the disk `img` boots: its EFI system partition and Windows' loader on it,
/// or its active partition and the loader at its root.
pub fn boot(img: &dyn BlockDev, path: &Path) -> Result<Boot> {
    let table = image::scan_partitions(img, path)?;
    let esp = table.partitions.iter().find(|p| {
        p.type_id.eq_ignore_ascii_case(ESP_GUID)
            || (table.kind == image::TableKind::Mbr && p.type_id == "ef")
    });
    let active = table
        .partitions
        .iter()
        .find(|p| table.kind == image::TableKind::Mbr && p.bootable);
    let mut out = Boot {
        firmware: "unknown".into(),
        esp: esp.map(|p| p.number),
        uefi_loader: None,
        active: active.map(|p| p.number),
        bios_loader: None,
    };
    if let Some(p) = esp {
        out.firmware = "uefi".into();
        let view = PartitionView::new(img, p.start, p.size)?;
        out.uefi_loader = image::fat::file_exists(&view, UEFI_LOADER)?;
    } else if let Some(p) = active {
        out.firmware = "bios".into();
        let view = PartitionView::new(img, p.start, p.size)?;
        if probe_filesystem(&view)? == "ntfs" {
            let name = format!("{}: partition {}", path.display(), p.number);
            if let Ok(vol) = Volume::open(&view, &name, image::Access::ReadOnly) {
                for loader in ["bootmgr", "NTLDR"] {
                    if vol.lookup(loader).ok().flatten().is_some() {
                        out.bios_loader = Some(loader.to_owned());
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}
