//! finalize against QEMU: the flattened qcow2 (plain and compressed) passes
//! `qemu-img check`, has no backing file, and holds exactly the chain's data.

use wingold_test_support as support;

use support::*;
use wingold::golden::finalize::write_qcow2;
use wingold::image::{self, create_overlay, Access, BlockDev};

const MIB: usize = 1 << 20;

/// A qcow2 base with random, zero and compressible regions, and an overlay with
/// unaligned writes on top.
fn chain(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = pattern(1, 24 * MIB);
    data[4 * MIB..8 * MIB].fill(0);
    for (i, b) in data[10 * MIB..14 * MIB].iter_mut().enumerate() {
        *b = (i / 4096) as u8; // compressible
    }
    let raw = dir.join("base.raw");
    std::fs::write(&raw, &data).unwrap();
    let base = dir.join("base.qcow2");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&base)],
    );
    let top = dir.join("top.qcow2");
    create_overlay(&top, &base).unwrap();
    {
        let img = image::open(&top, Access::ReadWrite).unwrap();
        for (off, len) in [
            (5 * MIB + 3, 70_000usize),
            (20 * MIB - 1, 2),
            (23 * MIB, MIB),
        ] {
            let p = pattern(off as u64, len);
            img.write_at(off as u64, &p).unwrap();
            data[off..off + len].copy_from_slice(&p);
        }
        img.flush().unwrap();
    }
    (top, data)
}

#[test]
fn flattened_images_hold_the_chain_and_pass_qemu_img_check() {
    let dir = tempdir();
    let (top, data) = chain(dir.path());
    for compress in [false, true] {
        let out = dir.path().join(format!("golden-{compress}.qcow2"));
        let img = image::open(&top, Access::ReadOnly).unwrap();
        // Progress only moves forward and ends at the disk's size.
        let done = std::cell::Cell::new(0);
        let stats = write_qcow2(&img, &out, compress, &|n| {
            assert!(
                n >= done.get(),
                "progress went back from {} to {n}",
                done.get()
            );
            done.set(n);
        })
        .unwrap();
        assert_eq!(stats.virtual_size, img.len());
        assert_eq!(done.get(), img.len(), "progress did not reach the end");
        assert!(
            stats.skipped_clusters >= 60,
            "zero clusters were stored: {stats:?}"
        );
        if compress {
            assert!(stats.compressed_clusters > 0, "{stats:?}");
        } else {
            // Hashed while written: the file's own SHA-256.
            assert_eq!(stats.sha256.as_deref(), Some(sha256_file(&out).as_str()));
        }
        assert_qemu_check_clean(&out);
        let info = run_json("qemu-img", &["info", "--output=json", s(&out)]);
        assert!(info.get("backing-filename").is_none());
        assert!(
            qemu_view(&out, dir.path()) == data,
            "compress={compress}: data differs"
        );
    }
    // The data slots go out with direct I/O where the file system takes it, and
    // through the page cache where it does not: the same bytes either way.
    std::env::set_var("WINGOLD_TEST_NO_DIRECT_IO", "1");
    let buffered = dir.path().join("buffered.qcow2");
    let stats = write_qcow2(
        &image::open(&top, Access::ReadOnly).unwrap(),
        &buffered,
        false,
        &|_| {},
    );
    std::env::remove_var("WINGOLD_TEST_NO_DIRECT_IO");
    assert_eq!(
        stats.unwrap().sha256.as_deref(),
        Some(sha256_file(&dir.path().join("golden-false.qcow2")).as_str())
    );
    assert_eq!(
        sha256_file(&buffered),
        sha256_file(&dir.path().join("golden-false.qcow2"))
    );
    // Deterministic: the same input gives the same bytes.
    let again = dir.path().join("again.qcow2");
    write_qcow2(
        &image::open(&top, Access::ReadOnly).unwrap(),
        &again,
        true,
        &|_| {},
    )
    .unwrap();
    assert_eq!(
        sha256_file(&again),
        sha256_file(&dir.path().join("golden-true.qcow2"))
    );
}

/// Compressible and random clusters interleaved (every cluster, then in runs):
/// compressed data shares host clusters across the raw clusters between them, as
/// QEMU packs it, so the output is no bigger than `qemu-img convert -c` of the same
/// disk, and QEMU reads it back exactly.
#[test]
fn interleaved_compressed_clusters_pack_as_tightly_as_qemu() {
    let dir = tempdir();
    const CLUSTER: usize = 64 << 10;
    let mut data = pattern(9, 16 * MIB);
    for c in 0..data.len() / CLUSTER {
        let runs = if c < 64 { c % 2 == 0 } else { (c / 3) % 2 == 0 };
        if runs {
            for (i, b) in data[c * CLUSTER..(c + 1) * CLUSTER].iter_mut().enumerate() {
                *b = b"wingold packs compressed clusters "[(i + c) % 34];
            }
        }
    }
    let raw = dir.path().join("mixed.raw");
    std::fs::write(&raw, &data).unwrap();
    let base = dir.path().join("mixed.qcow2");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&base)],
    );
    let ours = dir.path().join("ours.qcow2");
    let stats = write_qcow2(
        &image::open(&base, Access::ReadOnly).unwrap(),
        &ours,
        true,
        &|_| {},
    )
    .unwrap();
    assert!(stats.compressed_clusters >= 120, "{stats:?}");
    assert_qemu_check_clean(&ours);
    assert!(qemu_view(&ours, dir.path()) == data, "data differs");
    let theirs = dir.path().join("theirs.qcow2");
    run(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", s(&raw), s(&theirs)],
    );
    let (a, b) = (
        std::fs::metadata(&ours).unwrap().len(),
        std::fs::metadata(&theirs).unwrap().len(),
    );
    assert!(a <= b, "wingold {a} bytes, qemu-img convert -c {b} bytes");
}
