//! `make bench`: sequential read of a 2 GiB qcow2 filled with data, through our
//! `BlockDev`, side by side with what a user would otherwise run:
//! - `qemu-img convert -O raw` of the same image (to a file in /dev/shm, or the
//!   bench folder when there is no /dev/shm), the issue's yardstick;
//! - `qemu-io -r` reading the same bytes in 64 MiB requests (qemu's read path alone).
//!
//! Each contender runs several times, alternating, after a warm-up that puts the
//! image in the page cache; the median is reported, and the ratio of throughputs
//! (ours / theirs: above 1.0 means wingold is faster).
//! Size: WINGOLD_BENCH_MIB (default 2048).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use wingold::image::{self, Access, BlockDev};

const ROUNDS: usize = 3;
const CHUNK: usize = 4 << 20;

fn build_image(dir: &Path, mib: u64) -> PathBuf {
    let img = dir.join(format!("bench-{mib}M.qcow2"));
    if img.exists() {
        return img;
    }
    let raw = dir.join("bench-src.raw");
    eprintln!("bench: writing {mib} MiB of data into {}", img.display());
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&raw).unwrap());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..mib {
            fill_random(&mut block, &mut x);
            f.write_all(&block).unwrap();
        }
    }
    let tmp = dir.join("bench.tmp.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&tmp));
    std::fs::remove_file(&raw).unwrap();
    std::fs::rename(&tmp, &img).unwrap();
    img
}

fn ours(img: &Path) -> Duration {
    let t = Instant::now();
    let dev = image::open(img, Access::ReadOnly).unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0;
    let mut acc = 0u8;
    while off < dev.len() {
        let n = CHUNK.min((dev.len() - off) as usize);
        dev.read_at(off, &mut buf[..n]).unwrap();
        acc ^= buf[n - 1];
        off += n as u64;
    }
    std::hint::black_box(acc);
    t.elapsed()
}

fn qemu_img_convert(img: &Path, out: &Path) -> Duration {
    let _ = std::fs::remove_file(out);
    let t = Instant::now();
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(img)
        .arg(out));
    let d = t.elapsed();
    std::fs::remove_file(out).unwrap();
    d
}

fn qemu_io_read(img: &Path, mib: u64) -> Duration {
    let mut cmd = Command::new("qemu-io");
    cmd.arg("-r");
    for i in (0..mib).step_by(64) {
        cmd.arg("-c")
            .arg(format!("read -q {}M {}M", i, 64.min(mib - i)));
    }
    cmd.arg(img);
    let t = Instant::now();
    run(&mut cmd);
    t.elapsed()
}

fn main() {
    let mib: u64 = std::env::var("WINGOLD_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let img = build_image(&dir, mib);
    let out_dir = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        dir.clone()
    };
    let out = out_dir.join(format!("wingold-bench-{}.raw", std::process::id()));

    // Warm-up: every contender reads the whole image once.
    ours(&img);
    qemu_io_read(&img, mib);

    let (mut a, mut b, mut c) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        a.push(ours(&img));
        b.push(qemu_img_convert(&img, &out));
        c.push(qemu_io_read(&img, mib));
    }
    let (a, b, c) = (median_duration(a), median_duration(b), median_duration(c));
    let mibs = |d: Duration| mib as f64 / d.as_secs_f64();
    println!("sequential read of a {mib} MiB qcow2 (data in every cluster), median of {ROUNDS}:");
    println!(
        "  wingold BlockDev (4 MiB reads)      {:>8.3} s  {:>7.0} MiB/s",
        a.as_secs_f64(),
        mibs(a)
    );
    println!(
        "  qemu-img convert -O raw (to {})  {:>8.3} s  {:>7.0} MiB/s",
        out_dir.display(),
        b.as_secs_f64(),
        mibs(b)
    );
    println!(
        "  qemu-io -r read (64 MiB requests)   {:>8.3} s  {:>7.0} MiB/s",
        c.as_secs_f64(),
        mibs(c)
    );
    println!(
        "  ratio vs qemu-img convert: {:.2}x   (target >= 1.0x)",
        b.as_secs_f64() / a.as_secs_f64()
    );
    println!(
        "  ratio vs qemu-io read:     {:.2}x",
        c.as_secs_f64() / a.as_secs_f64()
    );
}
