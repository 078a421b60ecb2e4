//! `wingold inspect` on phony Windows disks built from .reg text and the corpus.

use wingold_test_support as support;

use serde_json::Value;
use support::fixtures::{self, Entry, WIN2K22_X64, WIN2K3R2_X86};
use support::*;

fn inspect_json(image: &std::path::Path) -> Value {
    let out = succeeds(wingold().args(["inspect", "--json", s(image)]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn detects_windows_server_2003_r2_x86() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K3R2_X86, vec![]);
    let r = inspect_json(&w.image);
    let win = &r["windows"];
    assert_eq!(win["product_name"], "Microsoft Windows Server 2003 R2");
    assert_eq!(win["version"], "5.2");
    assert_eq!(win["build"], 3790);
    assert_eq!(win["arch"], "x86");
    assert_eq!(win["variant"], "server");
    assert_eq!(win["osinfo"], "win2k3r2");
    assert_eq!(win["system_root"], "\\WINDOWS");
    assert_eq!(win["partition"], 2);
    // The corpus SYSTEM hive says Select\Current = 1.
    assert_eq!(win["control_sets"]["current"], "ControlSet001");
    assert_eq!(r["partition_table"], "mbr");
}

#[test]
fn detects_windows_server_2022_x64_and_hive_states() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let r = inspect_json(&w.image);
    let win = &r["windows"];
    assert_eq!(win["product_name"], "Windows Server 2022 Datacenter");
    // CurrentMajor/MinorVersionNumber win over CurrentVersion ("6.3").
    assert_eq!(win["version"], "10.0");
    assert_eq!(win["build"], 20348);
    assert_eq!(win["arch"], "x64");
    assert_eq!(win["edition_id"], "ServerDatacenter");
    assert_eq!(win["osinfo"], "win2k22");
    assert_eq!(r["partition_table"], "gpt");
    let hives = win["hives"].as_array().unwrap();
    let system = hives.iter().find(|h| h["name"] == "SYSTEM").unwrap();
    assert_eq!(system["clean"], true);
    // The corpus hive's 13983, plus the one commit of the fixture's DriverDatabase
    // merge (hivexregedit).
    assert_eq!(system["primary_sequence"], 13984);
    assert_eq!(system["secondary_sequence"], 13984);
    assert_eq!(
        system["logs"],
        serde_json::json!(["SYSTEM.LOG1", "SYSTEM.LOG2"])
    );
    let parts = r["partitions"].as_array().unwrap();
    assert_eq!(parts[1]["label"], "Windows");
    assert_eq!(parts[1]["ntfs_state"], "clean");
    assert_eq!(parts[0]["label"], "System Reserved");
}

#[test]
fn reports_a_dirty_hive_and_a_hibernated_volume() {
    let dir = tempdir();
    let mut hiber = b"hibr".to_vec();
    hiber.resize(8192, 0);
    let spec = fixtures::WindowsSpec {
        system_hive: "SYSTEM_2",
        system_reg: None,
        ..WIN2K22_X64
    };
    let w = fixtures::phony_windows(dir.path(), &spec, vec![Entry::File("hiberfil.sys", hiber)]);
    let r = inspect_json(&w.image);
    assert_eq!(r["partitions"][1]["ntfs_state"], "hibernated");
    let hives = r["windows"]["hives"].as_array().unwrap();
    let system = hives.iter().find(|h| h["name"] == "SYSTEM").unwrap();
    assert_eq!(system["clean"], false);
    assert_eq!(
        (
            system["primary_sequence"].as_u64(),
            system["secondary_sequence"].as_u64()
        ),
        (Some(205), Some(204))
    );
}

#[test]
fn says_clearly_when_there_is_no_windows() {
    let dir = tempdir();
    let raw = fixtures::data_disk(dir.path());
    let r = inspect_json(&raw);
    assert!(r["windows"].is_null());
    let reason = r["no_windows_reason"].as_str().unwrap();
    assert!(reason.contains("no Windows installation found"), "{reason}");
    let human = wingold().args(["inspect", s(&raw)]).output().unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("Windows: none found"));
}

/// An NTFS partition that cannot be mounted before the Windows one does not hide
/// Windows: detection goes on to the next partition; asked for that partition
/// alone (`--partition 1`), the reason is given; with nothing found, every
/// partition's reason is.
#[test]
fn an_unreadable_ntfs_partition_does_not_hide_windows() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let raw = dir.path().join("damaged.raw");
    run("qemu-img", &["convert", "-O", "raw", s(&w.image), s(&raw)]);
    // Partition 1 ("System Reserved", 8 MiB at 1 MiB): keep its boot sector, so it
    // still says NTFS, and overwrite everything after it.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
        f.write_all_at(&pattern(5, 8 * (1 << 20) - 512), (1 << 20) + 512)
            .unwrap();
    }
    let img = dir.path().join("damaged.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&img)]);
    let r = inspect_json(&img);
    assert_eq!(r["windows"]["partition"], 2, "{r}");
    assert!(r["partitions"][0]["ntfs_state"]
        .as_str()
        .unwrap()
        .starts_with("unreadable"));
    let out = wingold()
        .args([
            "inject",
            s(&img),
            "--partition",
            "1",
            "--dry-run",
            "--profile",
            "all",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("partition 1"), "{err}");
    // Without Windows anywhere, each partition says why it was passed over.
    let bare = dir.path().join("bare.raw");
    std::fs::copy(&raw, &bare).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&bare).unwrap();
        f.write_all_at(&pattern(6, 96 * (1 << 20) - 512), w.win_offset + 512)
            .unwrap();
    }
    let out = wingold()
        .args(["inspect", "--json", s(&bare)])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let why = r["no_windows_reason"].as_str().unwrap_or("");
    assert!(
        why.contains("partition 1:") && why.contains("partition 2:"),
        "{r}"
    );
}

/// A bare NTFS volume (no partition table, the filesystem from sector 0) is one
/// partition: inspected with `windows: null` when it holds none, and Windows on it
/// is found and written like any other.
#[test]
fn bare_volumes_are_inspected_and_written() {
    let dir = tempdir();
    let empty = dir.path().join("empty.ntfs");
    fixtures::ntfs_volume(&empty, 16 * fixtures::MIB, "Data", &[]);
    let r = inspect_json(&empty);
    assert_eq!(r["partition_table"], "none");
    assert!(r["windows"].is_null());
    assert!(r["no_windows_reason"]
        .as_str()
        .unwrap()
        .contains("partition 1"));

    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let vol = dir.path().join("windows.ntfs");
    fixtures::extract_partition(&w.image, w.win_offset, w.win_size, &vol);
    let r = inspect_json(&vol);
    assert_eq!(r["partition_table"], "none");
    assert_eq!(r["windows"]["partition"], 1);
    let out = dir.path().join("windows.qcow2");
    succeeds(wingold().args(["inject", s(&vol), "--output", s(&out), "--profile", "all"]));
    let r = inspect_json(&out);
    assert!(r["settings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["matches"] == true));
}
