//! `make bench`: `wingold inject --copy-in` of 1 GiB in 1,000 files (nested
//! folders) into a 2 GiB phony Windows Server 2022 qcow2, whole process, time and
//! peak memory, beside `virt-copy-in` (libguestfs: it boots a helper VM, under TCG
//! here) of the same tree into a copy of the same image — target ≥ 20× faster,
//! peak RSS under 64 MiB plus the largest hive.

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
    let _ = std::fs::remove_dir_all(&dir);
}
