//! `make bench`: replay + inject of a dirty SYSTEM hive beside an inject of the
//! same hive already recovered (issue target: at most 1.5x the time; memory at
//! most hive + logs + 64 MiB).
//!
//! The dirty disk holds the real 11 MiB SYSTEM hive with its header marked dirty
//! and a new-format SYSTEM.LOG1 whose one entry carries every page of the hive
//! (the worst case: a log as large as the hive, all of it replayed); the clean
//! disk holds the hive as that replay leaves it. Both are 2 GiB phony Windows
//! Server 2022 disks; `wingold inject --profile all --output` on each, whole
//! process, median of several rounds, peak memory by GNU time.

mod common;
use common::*;

use wingold_test_support as support;

use std::path::Path;
use std::process::Command;
use support::fixtures::{self, Entry, WIN2K22_X64};
use wingold::hive::marvin::{marvin32, LOG_ENTRY_SEED};

const ROUNDS: usize = 7;

fn checksum(block: &mut [u8]) {
    let x = block[..508]
        .chunks_exact(4)
        .fold(0u32, |a, d| a ^ u32::from_le_bytes(d.try_into().unwrap()));
    let x = match x {
        0 => 1,
        0xffff_ffff => 0xffff_fffe,
        x => x,
    };
    block[508..512].copy_from_slice(&x.to_le_bytes());
}

/// The hive with its header dirty (primary one past secondary), and a
/// new-format log whose one entry rewrites every page of its bins.
fn dirty_with_log(clean: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let seq = u32_at(clean, 8);
    let bins = u32_at(clean, 40);
    let mut dirty = clean.to_vec();
    dirty[4..8].copy_from_slice(&(seq + 1).to_le_bytes());
    checksum(&mut dirty[..4096]);
    let mut log = clean[..512].to_vec();
    log[28..32].copy_from_slice(&6u32.to_le_bytes());
    checksum(&mut log);
    let pages = &clean[4096..4096 + bins as usize];
    let size = (40 + 8 + pages.len()).div_ceil(512) * 512;
    let mut entry = vec![0u8; size];
    entry[0..4].copy_from_slice(b"HvLE");
    entry[4..8].copy_from_slice(&(size as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&seq.to_le_bytes());
    entry[16..20].copy_from_slice(&bins.to_le_bytes());
    entry[20..24].copy_from_slice(&1u32.to_le_bytes());
    entry[44..48].copy_from_slice(&bins.to_le_bytes());
    entry[48..48 + pages.len()].copy_from_slice(pages);
    let h1 = marvin32(&entry[40..], LOG_ENTRY_SEED);
    entry[24..32].copy_from_slice(&h1.to_le_bytes());
    let h2 = marvin32(&entry[..32], LOG_ENTRY_SEED);
    entry[32..40].copy_from_slice(&h2.to_le_bytes());
    log.extend(entry);
    (dirty, log)
}

fn main() {
    let dir = fresh_dir("bench-replay");
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));
    let clean = std::fs::read(support::corpus_hive(&dir, "SYSTEM")).unwrap();
    let (dirty, log) = dirty_with_log(&clean);
    eprintln!("bench: building two 2 GiB phony Windows Server 2022 disks");
    let disk = |name: &str, extra: Vec<Entry>| {
        let at = dir.join(name);
        std::fs::create_dir_all(&at).unwrap();
        fixtures::phony_windows_sized(&at, &WIN2K22_X64, extra, |_| {}, 2032 * fixtures::MIB)
    };
    let dirty_disk = disk(
        "dirty",
        vec![
            Entry::File("Windows/System32/config/SYSTEM", dirty.clone()),
            Entry::File("Windows/System32/config/SYSTEM.LOG1", log.clone()),
        ],
    );
    // What the replay leaves: the clean hive (its one entry carries the hive's own
    // pages and sequence number).
    let clean_disk = disk("clean", vec![]);
    let mut times = [vec![], vec![]];
    let mut peaks = [0u64, 0];
    for round in 0..ROUNDS {
        for (i, img) in [&dirty_disk.image, &clean_disk.image]
            .into_iter()
            .enumerate()
        {
            let out = dir.join(format!("out{i}-{round}.qcow2"));
            times[i].push(secs(|| {
                let o = run(Command::new("/usr/bin/time")
                    .args(["-f", "peak-kb %M"])
                    .arg(&wingold)
                    .args(["inject", "--profile", "all", "--output"])
                    .arg(&out)
                    .arg(img));
                peaks[i] = peaks[i].max(peak_kib(&o));
            }));
            std::fs::remove_file(&out).unwrap();
        }
    }
    let [d, c] = times.map(median);
    let inputs_mib = (dirty.len() + log.len()) as f64 / 1048576.0;
    println!(
        "inject --profile all, dirty 11 MiB SYSTEM + an {:.1} MiB log replayed, beside the \
         recovered hive (median of {ROUNDS}):",
        log.len() as f64 / 1048576.0
    );
    println!(
        "  replay + inject   {:>7.1} ms, peak {} MiB",
        d * 1000.0,
        peaks[0] / 1024
    );
    println!(
        "  inject (recovered) {:>6.1} ms, peak {} MiB",
        c * 1000.0,
        peaks[1] / 1024
    );
    println!("  ratio: {:.2}x   (target <= 1.5x)", d / c);
    println!(
        "  peak memory {} MiB against hive + logs + 64 MiB = {:.0} MiB",
        peaks[0] / 1024,
        inputs_mib + 64.0
    );
}
