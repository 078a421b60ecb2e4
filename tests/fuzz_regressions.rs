//! Every input the fuzzer (`make fuzz`, scripts/fuzz.sh) found crashing or
//! hanging a parser, replayed through the same target (fuzz/targets.rs) on the
//! plain build: each must now end — an error is fine — within its time. The
//! inputs live in tests/fixtures/fuzz/TARGET/, one file each, named by what
//! they did (crash-…, hang-…) and their SHA-256.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

/// How long one input may take on the plain build (the fuzzer's limit was 2 s
/// on an instrumented one).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

#[test]
fn every_fuzz_finding_now_ends_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).expect("tests/fixtures/fuzz") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let target = targets::target(&name)
            .unwrap_or_else(|| panic!("{}: no fuzz target is called {name}", dir.display()));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let started = std::time::Instant::now();
            target(&data);
            let took = started.elapsed();
            assert!(took < LIMIT, "{}: took {took:?}", f.display());
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no finding under {}: the fuzzer's findings are kept there",
        root.display()
    );
    eprintln!("{replayed} fuzz finding(s) replayed, each ending cleanly");
}

/// The replay target's framing (`len32 hive len32 log1 log2`) gives back the
/// parts it was made of, and a short input is parts cut short, not a panic.
#[test]
fn replay_inputs_are_framed_and_unframed_alike() {
    let parts: [&[u8]; 3] = [b"regf hive", b"", b"DIRT log two"];
    let framed = targets::frame(&parts);
    let (hive, rest) = targets::take_framed(&framed);
    let (log1, log2) = targets::take_framed(rest);
    assert_eq!([hive, log1, log2], parts);
    for cut in 0..framed.len() {
        let (a, rest) = targets::take_framed(&framed[..cut]);
        let (b, c) = targets::take_framed(rest);
        assert!(a.len() + b.len() + c.len() <= cut);
    }
}
