//! `make bench`: finalize (flattening an overlay chain into a standalone qcow2)
//! beside `qemu-img convert -O qcow2` of the same chain (then `sync`, then
//! `sha256sum`: wingold's output is durable and hashed when it returns), plain and
//! compressed (`-c`), and 100 clones of a 2 GiB and of a 20 GiB golden image. Median of several
//! rounds, side by side; ratios reported (wingold time / qemu-img time: below 1.0
//! means wingold is faster).
//! Size: WINGOLD_BENCH_MIB (default 2048).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use wingold::golden::finalize::write_qcow2;
use wingold::image::{self, create_overlay, create_qcow2, Access, BlockDev, CreateOptions};

const ROUNDS: usize = 3;

/// A base of `mib` MiB: a quarter random, a quarter text-like (compressible), half
/// zeros (as a fresh Windows disk is); an overlay with scattered writes on top.
fn chain(dir: &Path, mib: u64) -> PathBuf {
    let raw = dir.join("base.raw");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&raw).unwrap());
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let words = b"HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services viostor netkvm balloon ";
        let mut block = vec![0u8; 1 << 20];
        for m in 0..mib {
            match m % 4 {
                0 => {
                    fill_random(&mut block, &mut x);
                }
                1 => {
                    for (i, b) in block.iter_mut().enumerate() {
                        *b = words[(i * 7 + m as usize) % words.len()];
                    }
                }
                _ => block.fill(0),
            }
            f.write_all(&block).unwrap();
        }
    }
    let base = dir.join("base.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&base));
    std::fs::remove_file(&raw).unwrap();
    let top = dir.join("top.qcow2");
    create_overlay(&top, &base).unwrap();
    let img = image::open(&top, Access::ReadWrite).unwrap();
    for i in 0..64u64 {
        img.write_at(i * (mib << 20) / 64 + 4096 + i, &vec![i as u8; 100_000])
            .unwrap();
    }
    img.flush().unwrap();
    top
}

fn main() {
    let mib: u64 = std::env::var("WINGOLD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-finalize");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("bench: building a {mib} MiB overlay chain");
    let top = chain(&dir, mib);
    let ours_out = dir.join("ours.qcow2");
    let theirs_out = dir.join("theirs.qcow2");
    let mut report = Vec::new();
    for (label, compress) in [("uncompressed", false), ("compressed", true)] {
        let (mut o, mut t, mut ts, mut th) = (vec![], vec![], vec![], vec![]);
        let (mut o_size, mut t_size) = (0, 0);
        for _ in 0..ROUNDS {
            let _ = std::fs::remove_file(&ours_out);
            o.push(secs(|| {
                let src = image::open(&top, Access::ReadOnly).unwrap();
                write_qcow2(&src, &ours_out, compress, &|_| {}).unwrap();
            }));
            o_size = std::fs::metadata(&ours_out).unwrap().len();
            let _ = std::fs::remove_file(&theirs_out);
            let mut cmd = Command::new("qemu-img");
            cmd.args(["convert", "-O", "qcow2"]);
            if compress {
                cmd.arg("-c");
            }
            let convert = secs(|| run(cmd.arg(&top).arg(&theirs_out)));
            t.push(convert);
            // qemu-img leaves its output in the page cache; wingold fsyncs (a golden
            // image must survive a crash). The same durability for qemu-img:
            let synced = convert + secs(|| run(Command::new("sync").arg(&theirs_out)));
            ts.push(synced);
            // wingold also hashes what it writes, in the same pass (the manifest
            // records the image's SHA-256); qemu-img's user hashes afterwards.
            th.push(synced + secs(|| run(Command::new("sha256sum").arg(&theirs_out))));
            t_size = std::fs::metadata(&theirs_out).unwrap().len();
        }
        report.push((
            label,
            [median(o), median(t), median(ts), median(th)],
            o_size,
            t_size,
        ));
    }
    // Clones: constant time, whatever the golden image's size.
    let mut clone_times = Vec::new();
    for gib in [2u64, 20] {
        let golden = dir.join(format!("golden-{gib}G.qcow2"));
        create_qcow2(&golden, &CreateOptions::new(gib << 30)).unwrap();
        let vms = dir.join(format!("vms-{gib}"));
        std::fs::create_dir_all(&vms).unwrap();
        let t = secs(|| {
            for n in 0..100 {
                create_overlay(&vms.join(format!("vm_{n}.qcow2")), &golden).unwrap();
            }
        });
        clone_times.push((gib, t));
    }
    println!("finalize a {mib} MiB overlay chain into a standalone qcow2 (median of {ROUNDS}):");
    for (label, [o, t, t_sync, t_hash], os, ts) in &report {
        println!(
            "  {label:<13} wingold {o:>6.2} s ({:>5} MiB)   qemu-img convert {t:>6.2} s, + sync {t_sync:>6.2} s, + sha256sum {t_hash:>6.2} s ({:>5} MiB)",
            os >> 20,
            ts >> 20,
        );
        println!(
            "  {:<13} ratio wingold/qemu-img {:.2}x, against qemu-img + sync {:.2}x (target {}), + sha256sum {:.2}x",
            "",
            o / t,
            o / t_sync,
            if *label == "compressed" {
                "<= 0.6x"
            } else {
                "<= 1.0x"
            },
            o / t_hash,
        );
    }
    println!(
        "100 clones: 2 GiB golden {:.3} s, 20 GiB golden {:.3} s (ratio {:.2})",
        clone_times[0].1,
        clone_times[1].1,
        clone_times[1].1 / clone_times[0].1
    );
    let _ = image::open(&top, Access::ReadOnly).unwrap().len();
}
