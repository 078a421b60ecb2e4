//! `make bench`: `wingold inject --copy-in` of 1 GiB in 1,000 files (nested
//! folders) into a 2 GiB phony Windows Server 2022 qcow2, whole process, time and
//! peak memory, beside `virt-copy-in` (libguestfs: it boots a helper VM, under TCG
//! here) of the same tree into a copy of the same image — target ≥ 20× faster,
//! peak RSS under 64 MiB plus the largest hive.
//!
//! Then like for like with what an administrator with root would do: 200 MiB in
//! 200 files copied into the same Windows partition by ntfs-3g's FUSE driver
//! (mount the partition's bytes, `cp -r`, unmount — which waits for every write)
//! beside `wingold inject --in-place --copy-in` on the raw disk holding that
//! partition (which also finds Windows, plans, checks room, stamps descriptors
//! and reads everything back) — target ≤ 1.0×.

mod common;
use common::*;

use wingold_test_support as support;

use std::path::Path;
use std::process::Command;
use support::fixtures;

const ROUNDS: usize = 3;

fn main() {
    let dir = fresh_dir("bench-copy-in");
    eprintln!("bench: building a 2 GiB phony Windows Server 2022 disk and a 1 GiB tree");
    let w = fixtures::phony_2k22_2gib(&dir);
    let tree = dir.join("Tools");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..1000 {
        let sub = tree
            .join(format!("d{:02}", i % 20))
            .join(format!("e{}", i % 5));
        std::fs::create_dir_all(&sub).unwrap();
        fill_random(&mut block, &mut x);
        std::fs::write(sub.join(format!("file-{i:04}.bin")), &block).unwrap();
    }
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));
    let spec = format!("{}:C:\\Tools", tree.display());
    let (mut times, mut peak) = (Vec::new(), 0);
    for round in 0..ROUNDS {
        let out = dir.join(format!("out{round}.qcow2"));
        times.push(secs(|| {
            let o = run(Command::new("/usr/bin/time")
                .args(["-f", "peak-kb %M"])
                .arg(&wingold)
                .arg("inject")
                .arg(&w.image)
                .args(["--copy-in", &spec, "--output"])
                .arg(&out));
            peak = peak.max(peak_kib(&o));
        }));
        std::fs::remove_file(&out).unwrap();
    }
    let ours = median(times);
    let hive_mib = 11.2;
    println!("copy-in of 1 GiB in 1,000 files into a 2 GiB phony qcow2 (median of {ROUNDS}):");
    println!(
        "  wingold inject --copy-in (whole process, overlay, NTFS, verify)  {:>8.1} ms, peak {} MiB  (target < 64 MiB + the {hive_mib} MiB SYSTEM hive)",
        ours * 1000.0,
        peak / 1024
    );
    let tool = Path::new("/usr/bin/virt-copy-in");
    if !tool.exists() {
        println!("  virt-copy-in: not installed, not measured (Debian libguestfs-tools)");
        return;
    }
    let copy = dir.join("vci.qcow2");
    std::fs::copy(&w.image, &copy).unwrap();
    let t = secs(|| {
        run(Command::new(tool)
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
            .arg("-a")
            .arg(&copy)
            .arg(&tree)
            .arg("/"));
    });
    println!(
        "  virt-copy-in on a copy (one run, TCG)                            {:>8.1} ms",
        t * 1000.0
    );
    println!(
        "  ratio virt-copy-in / wingold: {:.1}x   (target >= 20x)",
        t / ours
    );
    versus_fuse(&dir, &w, &wingold);
    let _ = std::fs::remove_dir_all(&dir);
}

/// 200 MiB in 200 files: wingold in place on a raw disk beside ntfs-3g's FUSE
/// driver on the same partition's bytes.
fn versus_fuse(dir: &Path, w: &fixtures::PhonyWindows, wingold: &Path) {
    let tree = dir.join("Small");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for i in 0..200 {
        let sub = tree.join(format!("d{:02}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        fill_random(&mut block, &mut x);
        std::fs::write(sub.join(format!("file-{i:03}.bin")), &block).unwrap();
    }
    let raw = dir.join("disk.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&w.image)
        .arg(&raw));
    let vol = dir.join("windows.ntfs");
    fixtures::extract_partition(&w.image, w.win_offset, w.win_size, &vol);
    let spec = format!("{}:C:\\Small", tree.display());
    let fresh = |from: &Path, to: &Path| {
        run(Command::new("cp").arg("--sparse=always").arg(from).arg(to));
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let disk = dir.join("round.raw");
        fresh(&raw, &disk);
        ours.push(secs(|| {
            run(Command::new(wingold).arg("inject").arg(&disk).args([
                "--in-place",
                "--copy-in",
                &spec,
            ]));
        }));
        std::fs::remove_file(&disk).unwrap();
        let v = dir.join("round.ntfs");
        fresh(&vol, &v);
        theirs.push(secs(|| {
            fixtures::with_fuse_mount(&v, |mnt| {
                run(Command::new("cp").arg("-r").arg(&tree).arg(mnt));
            });
        }));
        std::fs::remove_file(&v).unwrap();
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("copy-in of 200 MiB in 200 files into the same partition (median of {ROUNDS}):");
    println!(
        "  wingold inject --in-place --copy-in (raw disk, whole process)    {:>8.1} ms",
        ours * 1000.0
    );
    println!(
        "  ntfs-3g FUSE mount + cp -r + unmount (the partition's bytes)     {:>8.1} ms",
        theirs * 1000.0
    );
    println!(
        "  ratio wingold / FUSE: {:.2}x   (target <= 1.0x)",
        ours / theirs
    );
}
