//! The editions of a Windows installer ISO, read without mounting it: test WIMs
//! made by wimlib's `wimcapture`/`wimappend` (their Windows properties set by
//! `wiminfo --image-property`, as Microsoft's images carry them), put on an ISO by
//! `genisoimage -udf` with install.wim hidden from the ISO 9660 tree, as Windows
//! ISOs have it (their ISO 9660 side holds only a README). `wiminfo` is the oracle
//! for what each image is; xorriso shows the ISO 9660 tree has no install.wim.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use support::*;

const PASSWORD: &str = "Kx9!editions-pw";

/// The images the fixture WIM holds: name, ARCH, EDITIONID, DISPLAYNAME.
const IMAGES: &[(&str, u32, &str, &str)] = &[
    (
        "Windows Server 2022 SERVERSTANDARD",
        9,
        "ServerStandard",
        "Windows Server 2022 Standard",
    ),
    (
        "Windows Server 2022 SERVERDATACENTER",
        9,
        "ServerDatacenter",
        "Windows Server 2022 Datacenter",
    ),
    ("Windows 10 Pro x86", 0, "Professional", "Windows 10 Pro"),
    ("Windows & <Arm>", 12, "Professional", "Windows on ARM"),
];

/// A WIM with `IMAGES`, as `name` (install.wim, or a solid install.esd).
fn wim(dir: &Path, name: &str) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("Windows/System32")).unwrap();
    std::fs::write(
        tree.join("Windows/System32/payload.bin"),
        pattern(7, 3 << 20),
    )
    .unwrap();
    let wim = dir.join("install.wim");
    for (i, (image, arch, edition, display)) in IMAGES.iter().enumerate() {
        let tool = if i == 0 { "wimcapture" } else { "wimappend" };
        run(tool, &[s(&tree), s(&wim), image]);
        let index = (i + 1).to_string();
        run(
            "wiminfo",
            &[
                s(&wim),
                &index,
                "--image-property",
                &format!("WINDOWS/ARCH={arch}"),
                "--image-property",
                &format!("WINDOWS/EDITIONID={edition}"),
                "--image-property",
                &format!("DISPLAYNAME={display}"),
                "--image-property",
                "WINDOWS/VERSION/MAJOR=10",
                "--image-property",
                "WINDOWS/VERSION/MINOR=0",
                "--image-property",
                "WINDOWS/VERSION/BUILD=20348",
            ],
        );
    }
    if name == "install.wim" {
        return wim;
    }
    let esd = dir.join(name);
    run("wimexport", &[s(&wim), "all", s(&esd), "--solid"]);
    esd
}

/// An installer-like ISO: UDF and ISO 9660, `sources/NAME` in UDF only.
fn installer_iso(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join("iso");
    std::fs::create_dir_all(root.join("sources")).unwrap();
    std::fs::write(
        root.join("README.TXT"),
        "This disc contains a \"UDF\" file system and requires an operating system that \
         supports the ISO-13346 \"UDF\" file system specification.\r\n",
    )
    .unwrap();
    std::fs::rename(wim(dir, name), root.join("sources").join(name)).unwrap();
    std::fs::write(root.join("sources/boot.wim"), pattern(3, 70_000)).unwrap();
    let iso = dir.join("win.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-udf",
            "-V",
            "SSS_X64FREE_EN-US_DV9",
            "-hide",
            name,
            "-o",
            s(&iso),
            s(&root),
        ],
    );
    iso
}

/// `wiminfo`'s list of a WIM's images: index → (name, Architecture, Edition ID,
/// Display Name).
fn wiminfo(wim: &Path) -> Vec<(u32, [String; 4])> {
    let out = run("wiminfo", &[s(wim)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut images = Vec::new();
    for block in text
        .split("\n\n")
        .filter(|b| b.lines().any(|l| l.starts_with("Index:")))
    {
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        images.push((
            field("Index:").parse().unwrap(),
            [
                field("Name:"),
                field("Architecture:"),
                field("Edition ID:"),
                field("Display Name:"),
            ],
        ));
    }
    images
}

/// wiminfo's architecture names for the ARCH numbers wingold reports.
fn arch_name(arch: u64) -> &'static str {
    match arch {
        0 => "x86",
        9 => "x86_64",
        12 => "ARM64",
        _ => "?",
    }
}

fn listed(iso: &Path) -> serde_json::Value {
    let (code, json, err) = wingold_json("disks", &["--list-editions", "--windows-iso", s(iso)]);
    assert_eq!(code, Some(0), "{err}");
    json
}

#[test]
fn editions_are_listed_as_wiminfo_lists_them() {
    let tmp = tempdir();
    let iso = installer_iso(tmp.path(), "install.wim");
    // The ISO 9660 tree has no install.wim: only UDF leads to it.
    let iso9660 = run("xorriso", &["-indev", s(&iso), "-find", "/", "-type", "f"]);
    let iso9660 = String::from_utf8_lossy(&iso9660.stdout).to_lowercase();
    assert!(iso9660.contains("readme.txt"), "{iso9660}");
    assert!(!iso9660.contains("install"), "{iso9660}");

    let json = listed(&iso);
    assert_eq!(json["file"], "sources/install.wim");
    let ours = json["images"].as_array().unwrap();
    let theirs = wiminfo(&tmp.path().join("iso/sources/install.wim"));
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(theirs.len(), IMAGES.len());
    for (mine, (index, [name, arch, edition, display])) in ours.iter().zip(&theirs) {
        assert_eq!(mine["index"], *index);
        assert_eq!(mine["name"], *name);
        assert_eq!(arch_name(mine["arch"].as_u64().unwrap()), arch);
        assert_eq!(mine["edition_id"], *edition);
        assert_eq!(mine["display_name"], *display);
        assert_eq!(mine["version"], serde_json::json!([10, 0, 20348]));
    }

    // The text listing names each image, and nothing is written anywhere.
    let dir = tmp.path().join("cwd");
    std::fs::create_dir(&dir).unwrap();
    let out = succeeds(
        wingold()
            .current_dir(&dir)
            .args(["disks", "--list-editions", "--iso"])
            .arg(&iso),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, ..) in IMAGES {
        assert!(text.contains(&format!("{name:?}")), "{text}");
    }
    assert!(text.contains("ServerDatacenter"), "{text}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_solid_esd_is_read_like_a_wim() {
    let tmp = tempdir();
    let iso = installer_iso(tmp.path(), "install.esd");
    let json = listed(&iso);
    assert_eq!(json["file"], "sources/install.esd");
    let names: Vec<&str> = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = IMAGES.iter().map(|i| i.0).collect();
    assert_eq!(names, want);
}

/// `disks --unattended` for VM 3 with the ISO and `extra`, in a fresh folder.
fn unattended(iso: &Path, extra: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let tmp = tempdir();
    std::fs::write(tmp.path().join("pw"), PASSWORD).unwrap();
    let out = wingold()
        .args([
            "disks",
            "--id",
            "3",
            "--no-hdb",
            "--hda-size",
            "64M",
            "--dir",
        ])
        .arg(tmp.path())
        .args(["--unattended", "--admin-password-file"])
        .arg(tmp.path().join("pw"))
        .arg("--windows-iso")
        .arg(iso)
        .args(extra)
        .output()
        .unwrap();
    (tmp, out)
}

/// The answer file on a medium, extracted by xorriso.
fn answer(medium: &Path) -> String {
    text_in_iso(medium, "/autounattend.xml")
}

#[test]
fn the_chosen_image_gives_the_architecture() {
    let tmp = tempdir();
    let iso = installer_iso(tmp.path(), "install.wim");
    // win10 had x86 and x64 media: without --arch, the image says which.
    for (edition, arch) in [("Windows 10 Pro x86", "x86"), ("2", "amd64")] {
        let pick: Vec<&str> = if edition.len() == 1 {
            vec!["--image-index", edition]
        } else {
            vec!["--edition", edition]
        };
        let (dir, out) = unattended(&iso, &[&["--os", "win10"][..], &pick].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let xml = answer(&dir.path().join("vm_3.unattend.iso"));
        assert!(
            xml.contains(&format!("processorArchitecture=\"{arch}\"")),
            "{edition}: {xml}"
        );
        assert!(
            !xml.contains(&format!(
                "processorArchitecture=\"{}\"",
                if arch == "x86" { "amd64" } else { "x86" }
            )),
            "{edition}: {xml}"
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("installs image"), "{said}");
    }
}

#[test]
fn wrong_editions_and_media_are_refused_before_anything_is_written() {
    let tmp = tempdir();
    let iso = installer_iso(tmp.path(), "install.wim");
    // UDF, but no install image; and an install.wim that is no WIM.
    let empty_root = tmp.path().join("empty");
    std::fs::create_dir_all(empty_root.join("sources")).unwrap();
    std::fs::write(empty_root.join("sources/boot.wim"), b"x").unwrap();
    let empty = tmp.path().join("empty.iso");
    run(
        "genisoimage",
        &["-quiet", "-udf", "-o", s(&empty), s(&empty_root)],
    );
    let bogus_root = tmp.path().join("bogus");
    std::fs::create_dir_all(bogus_root.join("sources")).unwrap();
    std::fs::write(bogus_root.join("sources/install.wim"), pattern(9, 4096)).unwrap();
    let bogus = tmp.path().join("bogus.iso");
    run(
        "genisoimage",
        &["-quiet", "-udf", "-o", s(&bogus), s(&bogus_root)],
    );

    // A file that is no disc image at all.
    let junk = tmp.path().join("junk.iso");
    std::fs::write(&junk, pattern(5, 600 * 1024)).unwrap();

    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        (
            &iso,
            vec![
                "--os",
                "win2k22",
                "--edition",
                "Windows Server 2022 SERVERWEB",
            ],
            "no image \"Windows Server 2022 SERVERWEB\"",
        ),
        (
            &iso,
            vec!["--os", "win2k22", "--image-index", "9"],
            "no image with index 9",
        ),
        (
            &iso,
            vec!["--os", "win10", "--arch", "x86", "--image-index", "2"],
            "is amd64 media, not x86",
        ),
        (
            &iso,
            vec!["--os", "win2k22", "--image-index", "3"],
            "win2k22: no x86 media",
        ),
        (
            &iso,
            vec!["--os", "win10", "--image-index", "4"],
            "processor architecture 12",
        ),
        (&junk, vec!["--os", "win2k22"], "not an ISO 9660 image"),
        (&empty, vec!["--os", "win2k22"], "no sources/install.wim"),
        (
            &bogus,
            vec!["--os", "win2k22"],
            "not a Windows imaging file",
        ),
    ];
    for (medium, extra, needle) in cases {
        let (dir, out) = unattended(medium, &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "pw")
            .collect();
        assert!(left.is_empty(), "{extra:?}: written {left:?}");
    }
    // The listing refuses the same media with the same words.
    for (medium, needle) in [
        (&junk, "not an ISO 9660"),
        (&empty, "no sources/install.wim"),
    ] {
        let out = wingold()
            .args(["disks", "--list-editions", "--iso"])
            .arg(medium)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
}

/// A Windows ISO repacked by xorriso (ISO 9660 with Rock Ridge, no UDF, as Linux
/// users make one to add files) is read through its ISO 9660 tree; so is one
/// without Rock Ridge (8.3 names, upper case).
#[test]
fn a_repacked_iso_without_udf_is_read_through_iso9660() {
    let tmp = tempdir();
    let wim = wim(tmp.path(), "install.wim");
    let want: Vec<String> = wiminfo(&wim)
        .into_iter()
        .map(|(_, f)| f[0].clone())
        .collect();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("sources")).unwrap();
    std::fs::copy(&wim, root.join("sources/install.wim")).unwrap();
    for rock_ridge in [true, false] {
        let iso = tmp.path().join(format!("repacked-{rock_ridge}.iso"));
        let mut args = vec!["-as", "mkisofs", "-quiet"];
        if rock_ridge {
            args.push("-r");
        }
        args.extend(["-o", s(&iso), s(&root)]);
        run("xorriso", &args);
        let json = listed(&iso);
        assert_eq!(json["file"], "sources/install.wim");
        let names: Vec<String> = json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, want, "rock ridge {rock_ridge}");
    }
}

/// Damaged ISOs: every single-byte change in the UDF descriptors and the WIM
/// header, and truncations, give an answer or an error — never a panic or a hang.
#[test]
fn damaged_isos_are_errors_not_panics() {
    let tmp = tempdir();
    let iso = installer_iso(tmp.path(), "install.wim");
    let good = std::fs::read(&iso).unwrap();
    let (file, images) = wingold::media::installer_images(&iso).unwrap();
    assert_eq!((file, images.len()), ("sources/install.wim", IMAGES.len()));
    // Where the structures are: every sector starting with a UDF descriptor tag
    // (its checksum holds, its id is one ECMA-167 defines), and the WIM's header
    // (found by its magic).
    let wim_at = good
        .windows(8)
        .position(|w| w == b"MSWIM\0\0\0")
        .expect("the WIM is in the image");
    let tagged: Vec<usize> = (16..good.len() / 2048)
        .map(|n| n * 2048)
        .filter(|&at| {
            let t = &good[at..at + 16];
            let id = u16::from_le_bytes([t[0], t[1]]);
            let sum = t
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != 4)
                .fold(0u8, |a, (_, &b)| a.wrapping_add(b));
            sum == t[4] && ((1..=9).contains(&id) || (256..=266).contains(&id))
        })
        .collect();
    assert!(tagged.len() >= 5, "{} descriptors found", tagged.len());
    let mut spots: Vec<usize> = tagged
        .iter()
        .flat_map(|&at| (at..at + 256).step_by(3))
        .collect();
    spots.extend(wim_at..wim_at + 208);
    // Each change made in place in a copy and undone after.
    use std::os::unix::fs::FileExt;
    let bad = tmp.path().join("bad.iso");
    std::fs::write(&bad, &good).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
    let (mut errors, mut answers) = (0, 0);
    for (n, &at) in spots.iter().enumerate() {
        f.write_all_at(&[good[at] ^ (1 << (n % 8))], at as u64)
            .unwrap();
        let failed = wingold::media::installer_images(&bad).is_err();
        f.write_all_at(&good[at..at + 1], at as u64).unwrap();
        if failed {
            errors += 1;
        } else {
            answers += 1;
        }
        // The anchor's tag is checksummed: any change to it is refused.
        if (256 * 2048..256 * 2048 + 16).contains(&at) {
            assert!(failed, "anchor byte {at} changed, still read");
        }
    }
    drop(f);
    // Cut in the descriptors, in the WIM header, before the WIM's XML.
    for len in [0, 2048, 256 * 2048 + 100, wim_at + 100, wim_at + 300] {
        std::fs::write(&bad, &good[..len]).unwrap();
        assert!(
            wingold::media::installer_images(&bad).is_err(),
            "truncated to {len}"
        );
    }
    // Some changes are caught, and some land in bytes nothing reads.
    assert!(
        errors > 0 && answers > 0,
        "{errors} errors, {answers} answers"
    );
}

/// A real install.wim is 4-5 GiB, more than one UDF extent holds (2^30 bytes):
/// its XML, at the end, is found through the file's later extents. The WIM here
/// is a wimlib WIM's header and XML with the XML moved past 1.3 GiB (the rest a
/// hole: nothing between is read), which genisoimage records as two extents.
#[test]
fn an_install_image_past_the_first_gibibyte_is_read() {
    let tmp = tempdir();
    let small = wim(tmp.path(), "install.wim");
    let bytes = std::fs::read(&small).unwrap();
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let (offset, len) = (u64_at(0x50) as usize, u64_at(0x58) as usize);
    let mut header = bytes[..208].to_vec();
    let far: u64 = (1 << 30) + (300 << 20) + 12_345;
    header[0x50..0x58].copy_from_slice(&far.to_le_bytes());
    let root = tmp.path().join("big");
    std::fs::create_dir_all(root.join("sources")).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(root.join("sources/install.wim")).unwrap();
        f.write_all_at(&header, 0).unwrap();
        f.write_all_at(&bytes[offset..offset + len], far).unwrap();
    }
    let iso = tmp.path().join("big.iso");
    run(
        "genisoimage",
        &[
            "-quiet",
            "-udf",
            "-hide",
            "install.wim",
            "-o",
            s(&iso),
            s(&root),
        ],
    );
    let names: Vec<String> = listed(&iso)["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    let want: Vec<String> = wiminfo(&small)
        .into_iter()
        .map(|(_, f)| f[0].clone())
        .collect();
    assert_eq!(names, want);
}
