//! `make bench`: `wingold inject --drivers` (the default set: viostor, NetKVM,
//! Balloon) into a 2 GiB phony Windows Server 2022 qcow2, whole process, beside:
//! - `virt-v2v-in-place` on a copy of the same image with the same ISO (what a user
//!   would otherwise run; it boots a helper VM, under TCG here) — target ≥ 500×;
//! - a registry-only inject (`--profile all`) and the same with `--drivers`: what
//!   the driver files cost — target ≤ 2× the registry-only time.
//!
//! The fixture ISO's driver binaries are padded to 256 KiB each (real virtio-win
//! drivers are 50–500 KiB), so that the copy is not free.

mod common;
use common::*;

use wingold_test_support as support;

use std::path::Path;
use std::process::Command;
use support::fixtures;

const ROUNDS: usize = 5;

fn main() {
    let dir = fresh_dir("bench-drivers");
    eprintln!("bench: building a 2 GiB phony Windows Server 2022 disk and a virtio-win ISO");
    let w = fixtures::phony_2k22_2gib(&dir);
    let iso = fixtures::virtio_iso_with(&dir, "0.1.999", 0, |path, data| {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".sys") || lower.ends_with(".exe") {
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ data.len() as u64;
            let mut pad = vec![0u8; 256 * 1024 - data.len().min(256 * 1024)];
            fill_random(&mut pad, &mut x);
            data.extend_from_slice(&pad);
        }
        true
    });
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));

    let time_inject = |args: &[&str], tag: &str| -> f64 {
        let mut t = Vec::new();
        for round in 0..ROUNDS {
            let out = dir.join(format!("{tag}{round}.qcow2"));
            t.push(secs(|| {
                run(Command::new(&wingold)
                    .arg("inject")
                    .arg(&w.image)
                    .args(args)
                    .arg("--output")
                    .arg(&out));
            }));
            std::fs::remove_file(&out).unwrap();
        }
        median(t)
    };
    let iso_s = iso.to_str().unwrap();
    let drivers = time_inject(&["--drivers", iso_s], "drivers");
    let registry = time_inject(&["--profile", "all"], "registry");
    let both = time_inject(&["--profile", "all", "--drivers", iso_s], "both");
    println!("inject --drivers into a 2 GiB phony Windows Server 2022 qcow2 (median of {ROUNDS}):");
    println!(
        "  wingold inject --drivers (viostor, NetKVM, Balloon)      {:>8.1} ms",
        drivers * 1000.0
    );
    println!(
        "  wingold inject --profile all (registry only)              {:>8.1} ms",
        registry * 1000.0
    );
    println!(
        "  wingold inject --profile all --drivers                    {:>8.1} ms",
        both * 1000.0
    );
    println!(
        "  driver files and registration cost {:.2}x the registry-only inject   (target <= 2x)",
        both / registry
    );

    let tool = Path::new("/usr/bin/virt-v2v-in-place");
    if !tool.exists() {
        println!("  virt-v2v-in-place: not installed, not measured (make setup installs it)");
        return;
    }
    let copy = dir.join("v2v.qcow2");
    std::fs::copy(&w.image, &copy).unwrap();
    let t = secs(|| {
        run(Command::new(tool)
            .args(["-i", "disk", "-if", "qcow2"])
            .arg(&copy)
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
            .env("VIRTIO_WIN", &iso)
            .env("VIRT_TOOLS_DATA_DIR", "/usr/share/virt-tools"));
    });
    println!(
        "  virt-v2v-in-place on a copy (one run, TCG)               {:>8.1} ms",
        t * 1000.0
    );
    println!(
        "  ratio virt-v2v-in-place / wingold inject --drivers: {:.0}x   (target >= 500x)",
        t / drivers
    );
    let _ = std::fs::remove_dir_all(&dir);
}
