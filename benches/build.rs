//! `make bench`: `wingold build` of a large base (default: a 16 GiB disk holding a
//! phony Windows and 8 GiB of mixed data, half random, half text-like) beside
//! `qemu-img convert` + `sync` of the same base, plain and compressed (`-c`): the
//! time a user spends either way to get a standalone image, and the output sizes.
//! Sizes: WINGOLD_BENCH_BUILD_GIB (disk, default 16), WINGOLD_BENCH_BUILD_DATA_GIB
//! (data, default 8).

mod common;
use common::*;

use wingold_test_support as support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::fixtures;

const ROUNDS: usize = 3;

fn env_gib(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The phony Windows disk grown to `gib` GiB, with `data_gib` GiB of mixed data
/// after its partitions, as a standalone qcow2.
fn base(dir: &Path, gib: u64, data_gib: u64) -> PathBuf {
    let phony = fixtures::phony_windows(dir, &fixtures::WIN2K22_X64, vec![]);
    let raw = dir.join("big.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&phony.image)
        .arg(&raw));
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(gib << 30).unwrap();
    let mut w = std::io::BufWriter::with_capacity(4 << 20, &f);
    use std::io::Seek;
    w.seek(std::io::SeekFrom::Start(1 << 30)).unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let words = b"HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion drivers ";
    let mut block = vec![0u8; 1 << 20];
    for m in 0..(data_gib << 10) {
        if m % 2 == 0 {
            fill_random(&mut block, &mut x);
        } else {
            for (i, b) in block.iter_mut().enumerate() {
                *b = words[(i * 7 + m as usize) % words.len()];
            }
        }
        w.write_all(&block).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let base = dir.join("base.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&base));
    std::fs::remove_file(&raw).unwrap();
    base
}

fn main() {
    let (gib, data_gib) = (
        env_gib("WINGOLD_BENCH_BUILD_GIB", 16),
        env_gib("WINGOLD_BENCH_BUILD_DATA_GIB", 8),
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-build");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("bench: a {gib} GiB base holding a phony Windows and {data_gib} GiB of mixed data");
    let base = base(&dir, gib, data_gib);
    fixtures::virtio_iso(&dir, "0.1.999", 0);
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));

    println!(
        "build of a {gib} GiB base with {data_gib} GiB of mixed data ({} MiB qcow2), whole \
         process, output fsynced either way, median of {ROUNDS}:",
        std::fs::metadata(&base).unwrap().len() >> 20
    );
    for compress in [false, true] {
        let cfg = dir.join(format!("wingold-{compress}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\ncache = \"cache\"\n\n\
                 [base]\nimage = \"base.qcow2\"\n\n\
                 [golden]\noutput = \"golden-{compress}/win.qcow2\"\ncompress = {compress}\n"
            ),
        )
        .unwrap();
        let theirs_out = dir.join(format!("qemu-{compress}.qcow2"));
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            // Each side starts with nothing of the other's left to write back.
            run(&mut Command::new("sync"));
            ours.push(secs(|| {
                run(Command::new(&wingold)
                    .args(["build", "--force", "-c"])
                    .arg(&cfg));
            }));
            let _ = std::fs::remove_file(&theirs_out);
            run(&mut Command::new("sync"));
            theirs.push(secs(|| {
                let mut c = Command::new("qemu-img");
                c.args(["convert", "-O", "qcow2"]);
                if compress {
                    c.arg("-c");
                }
                run(c.arg(&base).arg(&theirs_out));
                run(Command::new("sync").arg(&theirs_out));
            }));
        }
        let (ours, theirs) = (median(ours), median(theirs));
        let golden =
            std::fs::canonicalize(dir.join(format!("golden-{compress}/win.qcow2"))).unwrap();
        let ours_size = std::fs::metadata(&golden).unwrap().len();
        let mut manifest_name = golden.file_name().unwrap().to_owned();
        manifest_name.push(".manifest.json");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(golden.with_file_name(manifest_name)).unwrap())
                .unwrap();
        let theirs_size = std::fs::metadata(&theirs_out).unwrap().len();
        let kind = if compress { "compressed" } else { "plain" };
        println!(
            "  {kind:<10}  wingold build {ours:>7.1} s, {:>6} MiB   qemu-img convert{} + sync \
             {theirs:>7.1} s, {:>6} MiB   time ratio {:.2}x, size ratio {:.4} ({:+} bytes)",
            ours_size >> 20,
            if compress { " -c" } else { "" },
            theirs_size >> 20,
            ours / theirs,
            ours_size as f64 / theirs_size as f64,
            ours_size as i64 - theirs_size as i64
        );
        println!(
            "              wingold phases (ms): {}",
            manifest["timings_ms"]
        );
        std::fs::remove_file(&theirs_out).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
