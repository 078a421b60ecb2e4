//! `make bench`: open the NTFS volume inside a 2 GiB qcow2, read the real 11 MiB
//! SYSTEM hive and write it back 1 MiB larger, as one whole process, beside
//! ntfs-3g's own tools doing the same on a raw copy of the partition
//! (`ntfscat` to read, `ntfscp` to write). Reports wall time and peak RSS (GNU
//! time), median of several rounds, each on fresh copies, and the ratios.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const ROUNDS: usize = 9;
const MIB: u64 = 1 << 20;
const VOLUME: u64 = 2047 * MIB;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The worker: what `wingold inject` will do to a hive, as a process of its own.
fn worker(image: &str, offset: u64, grown: &str) {
    use wingold::image::{self, Access, BlockDev, PartitionView};
    use wingold::ntfs::Volume;
    let t = std::time::Instant::now();
    let trace = |what: &str| {
        if std::env::var_os("WINGOLD_BENCH_TRACE").is_some() {
            eprintln!("{:>8.2} ms  {what}", t.elapsed().as_secs_f64() * 1000.0);
        }
    };
    let img = image::open(Path::new(image), Access::ReadWrite).unwrap();
    trace("image open");
    let part = PartitionView::new(&img, offset, VOLUME).unwrap();
    let vol = Volume::open(&part, "bench", Access::ReadWrite).unwrap();
    trace("volume open (checks + read-write mount)");
    let hive = vol.read_file("SYSTEM").unwrap();
    trace("hive read");
    let grown = std::fs::read(grown).unwrap();
    assert_eq!(grown.len(), hive.len() + MIB as usize);
    trace("new content loaded");
    vol.write_file("SYSTEM", &grown).unwrap();
    trace("hive written");
    vol.close().unwrap();
    trace("unmounted");
    img.flush().unwrap();
    trace("flushed");
}

/// Runs `cmd` under GNU time: (wall seconds measured here, peak RSS in KiB from
/// GNU time, whose own clock has only 10 ms resolution).
fn timed(args: &[&str]) -> (f64, u64) {
    let t = std::time::Instant::now();
    let out = run(Command::new("/usr/bin/time")
        .args(["-f", "%M", "--"])
        .args(args));
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    (secs, last.trim().parse().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        worker(&args[i + 1], args[i + 2].parse().unwrap(), &args[i + 3]);
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-ntfs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = std::env::var_os("WINGOLD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let hive = dir.join("SYSTEM");
    let data = run(Command::new("xz").arg("-dc").arg(corpus.join("SYSTEM.xz"))).stdout;
    std::fs::write(&hive, &data).unwrap();
    let mut grown_data = data.clone();
    grown_data.extend(std::iter::repeat_n(0x42u8, MIB as usize));
    let grown = dir.join("SYSTEM.grown");
    std::fs::write(&grown, &grown_data).unwrap();

    // The partition: a 2047 MiB NTFS volume holding the hive at its root.
    let part = dir.join("part.raw");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(VOLUME)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-q", "-F", "-f", "-s", "512", "-H", "255", "-S", "63"])
        .arg(&part));
    run(Command::new("ntfscp")
        .arg("-f")
        .arg(&part)
        .arg(&hive)
        .arg("/SYSTEM"));
    // The disk: GPT, the partition at 1 MiB, 2 GiB in all, as qcow2.
    let raw = dir.join("disk.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(2048 * MIB + 2 * MIB)
        .unwrap();
    run(Command::new("sgdisk")
        .args(["-n", "1:2048:+2047M", "-t", "1:0700"])
        .arg(&raw));
    run(Command::new("dd")
        .arg(format!("if={}", s(&part)))
        .arg(format!("of={}", s(&raw)))
        .args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));
    let qcow = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow));
    std::fs::remove_file(&raw).unwrap();

    let me = std::env::current_exe().unwrap();
    let (mut ours_t, mut ours_m, mut theirs_t, mut theirs_m) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let q = dir.join(format!("round{round}.qcow2"));
        let p = dir.join(format!("round{round}.raw"));
        run(Command::new("cp").arg("--sparse=always").arg(&qcow).arg(&q));
        run(Command::new("cp").arg("--sparse=always").arg(&part).arg(&p));

        let (t, m) = timed(&[s(&me), "--worker", s(&q), &MIB.to_string(), s(&grown)]);
        ours_t.push(t);
        ours_m.push(m as f64);

        let out = dir.join("cat.out");
        let (t1, m1) = timed(&[
            "sh",
            "-c",
            &format!("ntfscat {} /SYSTEM > {}", s(&p), s(&out)),
        ]);
        let (t2, m2) = timed(&["ntfscp", "-f", s(&p), s(&grown), "/SYSTEM"]);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            data,
            "ntfscat read something else"
        );
        theirs_t.push(t1 + t2);
        theirs_m.push(m1.max(m2) as f64);
        for f in [q, p, out] {
            std::fs::remove_file(f).unwrap();
        }
    }
    let (ot, om, tt, tm) = (
        median(ours_t),
        median(ours_m),
        median(theirs_t),
        median(theirs_m),
    );
    println!("open NTFS in a 2 GiB image, read the 11 MiB SYSTEM hive, write it back 1 MiB larger (median of {ROUNDS}):");
    println!(
        "  wingold (qcow2, one process)    {ot:>6.3} s   peak RSS {:>6.1} MiB",
        om / 1024.0
    );
    println!(
        "  ntfscat + ntfscp (raw copy)     {tt:>6.3} s   peak RSS {:>6.1} MiB",
        tm / 1024.0
    );
    println!(
        "  time ratio (theirs / ours): {:.2}x   (target > 1.0x)",
        tt / ot.max(0.001)
    );
    println!(
        "  peak RSS: {:.1} MiB = file size ({:.1} MiB) + {:.1} MiB   (target: under 64 MiB + file size)",
        om / 1024.0,
        (data.len() + MIB as usize) as f64 / MIB as f64,
        om / 1024.0 - (data.len() + MIB as usize) as f64 / MIB as f64
    );
}
