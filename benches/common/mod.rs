//! What every benchmark needs: running a tool, timing, medians.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `cmd`, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Seconds `f` took.
pub fn secs<T>(f: impl FnOnce() -> T) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn median_duration(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Fills `block` with the xorshift64 stream that `x` carries on (random, cannot be
/// compressed).
pub fn fill_random(block: &mut [u8], x: &mut u64) {
    for w in block.chunks_exact_mut(8) {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// Peak RSS in KiB from a command run under `/usr/bin/time -f "peak-kb %M"`.
pub fn peak_kib(out: &std::process::Output) -> u64 {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("peak-kb "))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A fresh, empty folder `name` under cargo's temporary folder for benches.
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
