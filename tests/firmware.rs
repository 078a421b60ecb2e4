//! How a disk boots, as `inspect` tells it, and BitLocker: phony MBR and GPT disks
//! (an EFI system partition made by mkfs.vfat and filled by mtools, not wingold),
//! and a partition whose boot sector says BitLocker.

mod support;

use std::path::Path;
use support::fixtures::{self, Part, Table, MIB, WIN2K22_X64, WIN2K3R2_X86};
use support::*;

/// A FAT32 EFI system partition image, with Windows' loader in it when `loader`.
fn esp(path: &Path, loader: bool) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(40 * MIB).unwrap();
    drop(f);
    std::process::Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "SYSTEM", s(path)])
        .output()
        .expect("TEST CANNOT RUN: mkfs.vfat missing (Debian dosfstools)");
    let img = format!("{}", path.display());
    for dir in [
        "::EFI",
        "::EFI/Microsoft",
        "::EFI/Microsoft/Boot",
        "::EFI/Boot",
    ] {
        run("mmd", &["-i", &img, dir]);
    }
    let file = path.with_extension("efi");
    std::fs::write(&file, b"MZ phony loader").unwrap();
    run("mcopy", &["-i", &img, s(&file), "::EFI/Boot/bootx64.efi"]);
    if loader {
        run(
            "mcopy",
            &["-i", &img, s(&file), "::EFI/Microsoft/Boot/bootmgfw.efi"],
        );
    }
}

fn gpt_disk(dir: &Path, loader: bool) -> std::path::PathBuf {
    let esp_img = dir.join("esp.img");
    esp(&esp_img, loader);
    let data = dir.join("data.ntfs");
    fixtures::ntfs_volume(&data, 16 * MIB, "Data", &[]);
    let raw = dir.join("uefi.raw");
    fixtures::disk(
        &raw,
        64 * MIB,
        Table::Gpt,
        &[
            Part {
                size: 40 * MIB,
                volume: Some(esp_img),
                kind: "EF00",
            },
            Part {
                size: 16 * MIB,
                volume: Some(data),
                kind: "0700",
            },
        ],
    );
    raw
}

#[test]
fn a_uefi_disk_is_told_by_its_efi_system_partition_and_loader() {
    let dir = tempdir();
    for loader in [true, false] {
        let raw = gpt_disk(dir.path(), loader);
        let (code, j, err) = wingold_json("inspect", &[s(&raw)]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(j["boot"]["firmware"], "uefi", "{}", j["boot"]);
        assert_eq!(j["boot"]["esp"], 1);
        assert_eq!(j["boot"]["uefi_loader"], loader, "{}", j["boot"]);
        assert_eq!(j["partitions"][0]["filesystem"], "vfat");
        let text = succeeds(wingold().args(["inspect", s(&raw)]));
        let text = String::from_utf8_lossy(&text.stdout);
        let want = if loader { "present" } else { "MISSING" };
        assert!(text.contains(&format!("bootmgfw.efi {want}")), "{text}");
    }
}

#[test]
fn a_bios_disk_is_told_by_its_active_partition_and_loader() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K3R2_X86, vec![]);
    let (code, j, err) = wingold_json("inspect", &[s(&phony.image)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["boot"]["firmware"], "bios", "{}", j["boot"]);
    assert_eq!(j["boot"]["active"], 1);
    assert_eq!(j["boot"]["bios_loader"], "bootmgr");
}

#[test]
fn a_bitlocker_partition_is_named_and_never_written() {
    let dir = tempdir();
    // The Windows volume's boot sector as BitLocker leaves it: -FVE-FS- where
    // NTFS says NTFS.
    let phony = fixtures::phony_windows_with(dir.path(), &WIN2K22_X64, vec![], |vol| {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(vol).unwrap();
        f.seek(SeekFrom::Start(3)).unwrap();
        f.write_all(b"-FVE-FS-").unwrap();
    });
    let (code, j, err) = wingold_json("inspect", &[s(&phony.image)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["partitions"][1]["filesystem"], "bitlocker");
    let why = j["no_windows_reason"].as_str().unwrap();
    assert!(
        why.contains("BitLocker") && why.contains("manage-bde"),
        "{why}"
    );
    let before = sha256_file(&phony.image);
    let out = dir.path().join("never.qcow2");
    for extra in [vec![], vec!["--partition", "2"]] {
        let o = wingold()
            .args([
                "inject",
                s(&phony.image),
                "--profile",
                "all",
                "--output",
                s(&out),
            ])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("BitLocker"), "{err}");
        assert!(!out.exists());
    }
    assert_eq!(sha256_file(&phony.image), before);
}
