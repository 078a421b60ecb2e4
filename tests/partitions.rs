//! Partition scanning against sfdisk's own reading of disks laid out by sfdisk and sgdisk.

use wingold_test_support as support;

use serde_json::Value;
use support::fixtures;
use support::*;
use wingold::image::{self, scan_partitions, Access, Role, TableKind};

/// (number, start sector, sectors, type, name): what `sfdisk --json` tells of a partition.
type Row = (u32, u64, u64, String, Option<String>);

/// Our table, reduced to what `sfdisk --json` reports, for comparison.
fn ours(path: &std::path::Path) -> (TableKind, Vec<Row>) {
    let img = image::open(path, Access::ReadOnly).unwrap();
    let table = scan_partitions(&img, path).unwrap();
    let parts = table
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                p.start / 512,
                p.size / 512,
                p.type_id.clone(),
                p.name.clone().filter(|n| !n.is_empty()),
            )
        })
        .collect();
    (table.kind, parts)
}

fn sfdisk_view(raw: &std::path::Path) -> Vec<Row> {
    let json = run_json("sfdisk", &["--json", s(raw)]);
    let node_prefix = s(raw).to_owned();
    json["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p: &Value| {
            let node = p["node"].as_str().unwrap();
            (
                node[node_prefix.len()..].parse().unwrap(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_owned(),
                p["name"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn mbr_with_logical_partitions_matches_sfdisk() {
    let dir = tempdir();
    let raw = path_in(&dir, "mbr.raw");
    run("truncate", &["-s", "200M", s(&raw)]);
    let layout = "label: dos\n,20M,7,*\n,30M,83\n,,5\n,10M,83\n,15M,7\n,,b\n";
    fixtures::sfdisk(&raw, layout);

    let expected = sfdisk_view(&raw);
    assert_eq!(
        expected.len(),
        6,
        "the fixture has 3 primaries + 3 logicals"
    );
    let (kind, got) = ours(&raw);
    assert_eq!(kind, TableKind::Mbr);
    assert_eq!(got, expected);

    // The same through qcow2.
    let qcow = path_in(&dir, "mbr.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&qcow)]);
    assert_eq!(ours(&qcow).1, expected);

    let img = image::open(&raw, Access::ReadOnly).unwrap();
    let table = scan_partitions(&img, &raw).unwrap();
    let roles: Vec<Role> = table.partitions.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [
            Role::Primary,
            Role::Primary,
            Role::Extended,
            Role::Logical,
            Role::Logical,
            Role::Logical
        ]
    );
    assert!(table.partitions[0].bootable && !table.partitions[1].bootable);
}

#[test]
fn gpt_matches_sfdisk() {
    let dir = tempdir();
    let raw = path_in(&dir, "gpt.raw");
    run("truncate", &["-s", "300M", s(&raw)]);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+100M",
            "-t",
            "1:EF00",
            "-c",
            "1:EFI system partition",
            "-n",
            "2:0:+16M",
            "-t",
            "2:0C01",
            "-c",
            "2:Microsoft reserved partition",
            "-n",
            "4:0:+120M",
            "-t",
            "4:0700",
            "-c",
            "4:Basic data partition",
            s(&raw),
        ],
    );
    let expected = sfdisk_view(&raw);
    assert_eq!(expected.len(), 3);
    let (kind, got) = ours(&raw);
    assert_eq!(kind, TableKind::Gpt);
    assert_eq!(got, expected);

    let json = run_json("sfdisk", &["--json", s(&raw)]);
    let img = image::open(&raw, Access::ReadOnly).unwrap();
    let table = scan_partitions(&img, &raw).unwrap();
    assert_eq!(json["partitiontable"]["id"], table.disk_id.as_str());
    for (p, j) in table
        .partitions
        .iter()
        .zip(json["partitiontable"]["partitions"].as_array().unwrap())
    {
        assert_eq!(p.uuid.as_deref(), j["uuid"].as_str());
    }
}

#[test]
fn gpt_with_a_damaged_header_is_refused() {
    let dir = tempdir();
    let raw = path_in(&dir, "gpt.raw");
    run("truncate", &["-s", "64M", s(&raw)]);
    run("sgdisk", &["-n", "1:2048:+10M", s(&raw)]);
    // Flip a byte inside the primary GPT header (sector 1, the disk GUID).
    let mut bytes = std::fs::read(&raw).unwrap();
    bytes[512 + 60] ^= 0xff;
    std::fs::write(&raw, &bytes).unwrap();
    let img = image::open(&raw, Access::ReadOnly).unwrap();
    let err = scan_partitions(&img, &raw).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}
