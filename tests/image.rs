//! The image layer against QEMU's own tools: what we write, qemu reads; what qemu
//! writes, we read; overlays never touch their base.

use wingold_test_support as support;

use support::*;
use wingold::image::{self, create_overlay, Access, BlockDev};

const MIB: u64 = 1 << 20;

fn make_disks(dir: &tempfile::TempDir, id: u32, hda: &str, hdb: &str) {
    succeeds(
        wingold()
            .args(["disks", "--id", &id.to_string(), "--dir", s(dir.path())])
            .args(["--hda-size", hda, "--hdb-size", hdb]),
    );
}

/// Writes that exercise every alignment case: single bytes, sector-straddling runs,
/// 4 KiB at a mid-sector offset, cluster-straddling runs, a large unaligned run.
fn write_unaligned_cases(dev: &dyn BlockDev, model: &mut [u8], base_offset: u64) {
    let cases: &[(u64, usize)] = &[
        (0, 1),
        (511, 2),
        (1000, 3),
        (4096 + 256, 4096),
        (65536 - 100, 300),
        (3 * MIB - 7, 200 * 1024 + 13),
        (5 * MIB, 64 * 1024),
        (7 * MIB + 1, 1),
    ];
    for (i, &(off, len)) in cases.iter().enumerate() {
        let off = base_offset + off;
        let data = pattern(1000 + i as u64, len);
        dev.write_at(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
}

#[test]
fn disks_are_accepted_by_qemu_img_with_the_requested_sizes() {
    let dir = tempdir();
    make_disks(&dir, 7, "3G", "100M");
    for (name, size) in [("vm_7.qcow2", 3u64 << 30), ("temp_7.qcow2", 100 << 20)] {
        let path = path_in(&dir, name);
        assert_qemu_check_clean(&path);
        let info = run_json("qemu-img", &["info", "--output=json", s(&path)]);
        assert_eq!(info["format"], "qcow2", "{name}");
        assert_eq!(info["virtual-size"], size, "{name}");
        assert!(info.get("backing-filename").is_none(), "{name}");
    }
}

#[test]
fn disks_refuses_to_overwrite_and_creates_nothing() {
    let dir = tempdir();
    std::fs::write(path_in(&dir, "temp_4.qcow2"), b"precious").unwrap();
    let out = wingold()
        .args(["disks", "--id", "4", "--dir", s(dir.path())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("temp_4.qcow2") && err.contains("already exists"),
        "{err}"
    );
    assert!(!path_in(&dir, "vm_4.qcow2").exists());
    assert_eq!(
        std::fs::read(path_in(&dir, "temp_4.qcow2")).unwrap(),
        b"precious"
    );
}

#[test]
fn data_written_by_qemu_reads_back_identically_through_blockdev() {
    let dir = tempdir();
    make_disks(&dir, 1, "48M", "16M");
    let hda = path_in(&dir, "vm_1.qcow2");
    // Random data over most of the disk, then qemu-io's own patterned writes.
    let src = path_in(&dir, "src.raw");
    let mut expected = write_pattern_file(&src, 1, 40 * MIB as usize);
    expected.resize(48 * MIB as usize, 0);
    run(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&src),
            s(&hda),
        ],
    );
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0xab 41M 64k",
            "-c",
            "write -P 0x5c 1536 4096",
            s(&hda),
        ],
    );
    expected[41 * MIB as usize..41 * MIB as usize + 65536].fill(0xab);
    expected[1536..1536 + 4096].fill(0x5c);

    let img = image::open(&hda, Access::ReadOnly).unwrap();
    assert_eq!(img.len(), 48 * MIB);
    let mut got = vec![0u8; expected.len()];
    img.read_at(0, &mut got).unwrap();
    assert!(
        got == expected,
        "whole-disk read differs from what qemu wrote"
    );
    // Unaligned reads too.
    for (off, len) in [(1u64, 1usize), (1535, 4098), (41 * MIB - 3, 70_000)] {
        let mut part = vec![0u8; len];
        img.read_at(off, &mut part).unwrap();
        assert_eq!(
            part,
            expected[off as usize..off as usize + len],
            "read at {off}"
        );
    }
}

#[test]
fn blockdev_writes_aligned_and_unaligned_are_what_qemu_reads() {
    let dir = tempdir();
    make_disks(&dir, 2, "32M", "16M");
    let hda = path_in(&dir, "vm_2.qcow2");
    let mut model = vec![0u8; 32 * MIB as usize];
    {
        let img = image::open(&hda, Access::ReadWrite).unwrap();
        let big = pattern(2, 8 * MIB as usize);
        img.write_at(16 * MIB, &big).unwrap();
        model[16 * MIB as usize..24 * MIB as usize].copy_from_slice(&big);
        write_unaligned_cases(&img, &mut model, 0);
        // Unaligned writes into clusters that already hold data.
        write_unaligned_cases(&img, &mut model, 16 * MIB + 12345);
        img.flush().unwrap();
    }
    assert_qemu_check_clean(&hda);
    assert!(
        qemu_view(&hda, dir.path()) == model,
        "qemu reads other bytes than we wrote"
    );
}

#[test]
fn raw_images_take_unaligned_writes() {
    let dir = tempdir();
    let path = path_in(&dir, "disk.raw");
    let mut model = write_pattern_file(&path, 3, 16 * MIB as usize);
    {
        let img = image::open(&path, Access::ReadWrite).unwrap();
        assert_eq!(img.format(), image::Format::Raw);
        write_unaligned_cases(&img, &mut model, 0);
        img.flush().unwrap();
    }
    assert!(std::fs::read(&path).unwrap() == model);
}

fn overlay_round_trip(base_format: &str) {
    let dir = tempdir();
    let src = path_in(&dir, "src.raw");
    let base_data = write_pattern_file(&src, 4, 24 * MIB as usize);
    let base = path_in(&dir, &format!("base.{base_format}"));
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", base_format, s(&src), s(&base)],
    );
    let base_sha = sha256_file(&base);

    let top = path_in(&dir, "top.qcow2");
    create_overlay(&top, &base).unwrap();
    let mut model = base_data.clone();
    {
        let img = image::open(&top, Access::ReadWrite).unwrap();
        let mut got = vec![0u8; model.len()];
        img.read_at(0, &mut got).unwrap();
        assert!(got == model, "overlay does not read through to its base");
        write_unaligned_cases(&img, &mut model, 0);
        write_unaligned_cases(&img, &mut model, 9 * MIB + 777);
        img.flush().unwrap();
    }
    assert_eq!(sha256_file(&base), base_sha, "the base was written");
    assert_qemu_check_clean(&top);
    let chain = run_json(
        "qemu-img",
        &["info", "--backing-chain", "--output=json", s(&top)],
    );
    let canonical_base = std::fs::canonicalize(&base).unwrap();
    assert_eq!(chain[0]["backing-filename"], s(&canonical_base));
    assert_eq!(chain[1]["format"], base_format);
    // qemu flattens the chain: it must see exactly our model.
    assert!(
        qemu_view(&top, dir.path()) == model,
        "qemu's flattened view differs"
    );
    // And we read the same after reopening.
    let img = image::open(&top, Access::ReadOnly).unwrap();
    let mut got = vec![0u8; model.len()];
    img.read_at(0, &mut got).unwrap();
    assert!(got == model, "our view after reopening differs");
}

#[test]
fn overlay_over_qcow2_base_reads_through_and_leaves_base_untouched() {
    overlay_round_trip("qcow2");
}

#[test]
fn overlay_over_raw_base_reads_through_and_leaves_base_untouched() {
    overlay_round_trip("raw");
}

#[test]
fn overlay_written_by_qemu_io_reads_back_through_our_chain() {
    let dir = tempdir();
    let src = path_in(&dir, "src.raw");
    let mut model = write_pattern_file(&src, 5, 8 * MIB as usize);
    let base = path_in(&dir, "base.qcow2");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", s(&src), s(&base)],
    );
    let top = path_in(&dir, "top.qcow2");
    create_overlay(&top, &base).unwrap();
    // A partial-cluster write (qemu copies the rest up) and a zero-flagged cluster.
    run(
        "qemu-io",
        &[
            "-c",
            "write -P 0x11 70000 1000",
            "-c",
            "write -z 1M 64k",
            s(&top),
        ],
    );
    model[70000..71000].fill(0x11);
    model[MIB as usize..MIB as usize + 65536].fill(0);
    {
        let img = image::open(&top, Access::ReadWrite).unwrap();
        let mut got = vec![0u8; model.len()];
        img.read_at(0, &mut got).unwrap();
        assert!(
            got == model,
            "qemu-io's writes do not read back through our chain"
        );
        // Partial writes into the zero-flagged cluster and into qemu's copied-up one.
        write_unaligned_cases(&img, &mut model, MIB - 5000);
        img.flush().unwrap();
    }
    assert_qemu_check_clean(&top);
    assert!(qemu_view(&top, dir.path()) == model);
}

#[test]
fn images_made_by_qemu_img_take_writes() {
    let dir = tempdir();
    let plain = path_in(&dir, "plain.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", s(&plain), "24M"],
    );
    let src = path_in(&dir, "src.raw");
    write_pattern_file(&src, 6, 24 * MIB as usize);
    let packed = path_in(&dir, "packed.qcow2");
    run(
        "qemu-img",
        &["convert", "-c", "-O", "qcow2", s(&src), s(&packed)],
    );
    for path in [plain, packed] {
        let mut model = qemu_view(&path, dir.path());
        {
            let img = image::open(&path, Access::ReadWrite).unwrap();
            write_unaligned_cases(&img, &mut model, 0);
            write_unaligned_cases(&img, &mut model, 10 * MIB + 3);
            img.flush().unwrap();
        }
        assert_qemu_check_clean(&path);
        assert!(qemu_view(&path, dir.path()) == model, "{}", path.display());
    }
}
