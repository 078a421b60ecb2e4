//! No panic on any input: qcow2 images with random bytes flipped in their metadata
//! (header, refcount table and block, L1, L2) and MBR/GPT sectors with random damage
//! must give a clean exit (0, 1 or 2) with a one-line message, never a panic.

use wingold_test_support as support;

use std::path::Path;
use support::fixtures;
use support::*;

fn assert_no_panic(image: &Path, what: &str) {
    let out = wingold().args(["inspect", s(image)]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{what}: exit {:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

/// The xorshift stream from support::pattern, read as positions and values.
fn mutations(seed: u64, n: usize, span: usize) -> Vec<(usize, u8)> {
    pattern(seed, n * 9)
        .chunks_exact(9)
        .map(|c| {
            let pos = u64::from_le_bytes(c[..8].try_into().unwrap()) as usize % span;
            (pos, c[8])
        })
        .collect()
}

#[test]
fn qcow2_with_damaged_metadata_never_panics() {
    let dir = tempdir();
    let raw = path_in(&dir, "disk.raw");
    run("truncate", &["-s", "32M", s(&raw)]);
    run("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+8M", s(&raw)]);
    let data = pattern(20, 4 << 20);
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .write_all_at(&data, 1 << 20)
        .unwrap();
    let good = path_in(&dir, "good.qcow2");
    // Small clusters keep the metadata dense: header, refcount table and block, L1, L2.
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=4096",
            s(&raw),
            s(&good),
        ],
    );
    let pristine = std::fs::read(&good).unwrap();
    let meta_span = 6 * 4096;
    let bad = path_in(&dir, "bad.qcow2");
    for round in 0..150u64 {
        let mut bytes = pristine.clone();
        for (pos, val) in mutations(round, 1 + (round % 4) as usize, meta_span) {
            bytes[pos] = val;
        }
        std::fs::write(&bad, &bytes).unwrap();
        assert_no_panic(&bad, &format!("round {round}"));
    }
}

#[test]
fn damaged_partition_tables_never_panic() {
    let dir = tempdir();
    let mbr = path_in(&dir, "mbr.raw");
    run("truncate", &["-s", "16M", s(&mbr)]);
    fixtures::sfdisk(&mbr, "label: dos\n,4M,7\n,,5\n,2M,83\n,,7\n");
    let pristine = std::fs::read(&mbr).unwrap();
    // Damage sector 0 and the first EBR (at the start of the extended partition).
    let ebr = 2048 * 512 + (4 << 20);
    let bad = path_in(&dir, "bad.raw");
    for round in 0..100u64 {
        let mut bytes = pristine.clone();
        for (i, (pos, val)) in mutations(500 + round, 3, 66).into_iter().enumerate() {
            let base = if i % 2 == 0 { 446 } else { ebr + 446 };
            bytes[base + pos] = val;
        }
        std::fs::write(&bad, &bytes).unwrap();
        assert_no_panic(&bad, &format!("mbr round {round}"));
    }
}

/// Runs wingold with a deadline: a hang is a failure like a panic.
fn bounded(args: &[&str], what: &str) {
    let (status, err, _) = run_bounded(wingold().args(args), std::time::Duration::from_secs(30));
    assert!(status.is_some(), "{what}: wingold hung (killed after 30 s)");
    assert!(
        matches!(status, Some(0..=2)),
        "{what}: exit {status:?}: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{what}: {err}"
    );
}

#[test]
fn iso_with_damaged_descriptors_and_directories_never_panics_or_hangs() {
    let dir = tempdir();
    let iso = fixtures::virtio_iso(dir.path(), "0.1.999", 0);
    let good = std::fs::read(&iso).unwrap();
    // The primary volume descriptor (sector 16) and the directory records after it.
    let span = (good.len()).min(200 * 2048) - 16 * 2048;
    let w = fixtures::phony_windows(dir.path(), &fixtures::WIN2K22_X64, vec![]);
    for round in 0..40u64 {
        let mut bytes = good.clone();
        for (pos, value) in mutations(1000 + round, 1 + round as usize % 8, span) {
            bytes[16 * 2048 + pos] = value;
        }
        let bad = dir.path().join(format!("virtio-win-0.1.{round}.iso"));
        std::fs::write(&bad, &bytes).unwrap();
        let cache = dir.path().join(format!("cache{round}"));
        let lock = dir.path().join(format!("lock{round}"));
        bounded(
            &[
                "fetch",
                "--url",
                &format!("file://{}", bad.display()),
                "--cache",
                s(&cache),
                "--lock",
                s(&lock),
                "--list-drivers",
            ],
            &format!("fetch --list-drivers, round {round}"),
        );
        if round % 4 == 0 {
            bounded(
                &["inject", s(&w.image), "--drivers", s(&bad), "--dry-run"],
                &format!("inject --drivers, round {round}"),
            );
        }
        let _ = std::fs::remove_file(&bad);
        let _ = std::fs::remove_dir_all(&cache);
    }
}
