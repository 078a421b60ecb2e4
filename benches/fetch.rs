//! `make bench`: fetching a ~700 MiB virtio-win ISO from a loopback server, wingold
//! (hashing while it downloads, then verifying, caching and fsyncing) beside
//! `curl -o` followed by `sha256sum` (which reads the file a second time). Median of
//! several rounds, side by side; the ratio is curl+sha256sum time / wingold time.
//! Size: WINGOLD_BENCH_ISO_MIB (default 700).

mod common;
use common::*;

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use support::{fixtures, http};

const ROUNDS: usize = 5;

fn main() {
    let mib: usize = std::env::var("WINGOLD_BENCH_ISO_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(700);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-fetch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("bench: building a {mib} MiB virtio-win ISO");
    let iso = fixtures::virtio_iso(&dir, "0.1.999", mib << 20);
    let bytes = std::fs::read(&iso).unwrap();
    std::fs::remove_file(&iso).unwrap();
    let size = bytes.len();
    let srv = http::Server::start(bytes, "\"bench\"", http::Mode::Normal);
    let url = srv.url("/virtio-win-0.1.999.iso");
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));

    let (mut ours, mut theirs) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let cache = dir.join(format!("cache{round}"));
        let lock = dir.join(format!("lock{round}"));
        let t = Instant::now();
        run(Command::new(&wingold)
            .args(["fetch", "--url", &url, "--cache"])
            .arg(&cache)
            .arg("--lock")
            .arg(&lock));
        ours.push(t.elapsed().as_secs_f64());
        std::fs::remove_dir_all(&cache).unwrap();

        let out = dir.join("curl.iso");
        let t = Instant::now();
        run(Command::new("curl")
            .args(["-s", "-f", "-o"])
            .arg(&out)
            .arg(&url));
        run(Command::new("sha256sum").arg(&out));
        theirs.push(t.elapsed().as_secs_f64());
        std::fs::remove_file(&out).unwrap();
    }
    let (o, t) = (median(ours), median(theirs));
    let mb = size as f64 / (1 << 20) as f64;
    println!("fetch a {mb:.0} MiB ISO from a loopback server (median of {ROUNDS}):");
    println!(
        "  wingold fetch (hash while downloading, verify, cache, fsync)  {:>6.2} s  {:>6.0} MiB/s",
        o,
        mb / o
    );
    println!(
        "  curl -o + sha256sum                                           {:>6.2} s  {:>6.0} MiB/s",
        t,
        mb / t
    );
    println!(
        "  ratio (curl+sha256sum time / wingold time): {:.2}x   (target >= 1.0x)",
        t / o
    );
}
