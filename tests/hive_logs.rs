//! Transaction-log replay against what Windows itself made of the same files:
//! yarp's dirty hives (shared corpus `logs/`) and the hives Windows 10 and
//! Windows 7 wrote after recovering them.

use wingold_test_support as support;

use std::path::Path;
use support::*;
use wingold::hive::marvin::{marvin32, LOG_ENTRY_SEED};
use wingold::hive::replay::{recover, LogFile, LogFormat, Outcome, Replay};
use wingold::hive::{HeaderState, Hive};

fn corpus(dir: &Path, path: &str) -> Vec<u8> {
    corpus_log(dir, path)
}

fn replayed(name: &str, bytes: &mut Vec<u8>, logs: &[LogFile]) -> Replay {
    match recover(name, bytes, logs).unwrap() {
        Outcome::Replayed(r) => r,
        other => panic!("{name}: expected a replay, got {other:?}"),
    }
}

fn log<'a>(name: &'a str, bytes: &'a [u8]) -> LogFile<'a> {
    LogFile { name, bytes }
}

/// Rewrites every sequence number of a new-format log (base block and entries)
/// by `shift`, re-signing what it changes.
fn shift_new_log(bytes: &[u8], shift: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for at in [4, 8] {
        let v = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()).wrapping_add(shift);
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    resum(&mut b[..4096]);
    let mut at = 512;
    while at + 40 <= b.len() && &b[at..at + 4] == b"HvLE" {
        let size = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        let seq = u32::from_le_bytes(b[at + 12..at + 16].try_into().unwrap()).wrapping_add(shift);
        b[at + 12..at + 16].copy_from_slice(&seq.to_le_bytes());
        let h1 = marvin32(&b[at + 40..at + size], LOG_ENTRY_SEED);
        b[at + 24..at + 32].copy_from_slice(&h1.to_le_bytes());
        let h2 = marvin32(&b[at..at + 32], LOG_ENTRY_SEED);
        b[at + 32..at + 40].copy_from_slice(&h2.to_le_bytes());
        at += size;
    }
    b
}

fn resum(block: &mut [u8]) {
    let mut x = 0u32;
    for d in block[..508].chunks_exact(4) {
        x ^= u32::from_le_bytes(d.try_into().unwrap());
    }
    let x = match x {
        0 => 1,
        0xffff_ffff => 0xffff_fffe,
        x => x,
    };
    block[508..512].copy_from_slice(&x.to_le_bytes());
}

fn set_seqs(block: &mut [u8], primary: u32, secondary: u32) {
    block[4..8].copy_from_slice(&primary.to_le_bytes());
    block[8..12].copy_from_slice(&secondary.to_le_bytes());
    resum(block);
}

#[test]
fn new_format_logs_give_what_windows_10_gave() {
    let dir = tempdir();
    let primary = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    let windows = corpus(dir.path(), "NewDirtyHive1/RecoveredHive_Windows10");
    assert!(!HeaderState::parse("NewDirtyHive", &primary)
        .unwrap()
        .is_clean());

    // The order the logs are given in does not matter: their sequence numbers do.
    for logs in [
        [
            log("NewDirtyHive.LOG1", &log1),
            log("NewDirtyHive.LOG2", &log2),
        ],
        [
            log("NewDirtyHive.LOG2", &log2),
            log("NewDirtyHive.LOG1", &log1),
        ],
    ] {
        let mut bytes = primary.clone();
        let r = replayed("NewDirtyHive", &mut bytes, &logs);
        assert_eq!(r.applied, 4, "{r:?}");
        assert_eq!((r.first_sequence, r.last_sequence), (Some(2), Some(5)));
        assert!(r.logs.iter().all(|l| l.format == LogFormat::New));
        assert_eq!(bytes.len(), windows.len());
        assert!(
            bytes[4096..] == windows[4096..],
            "the recovered hive bins differ from Windows 10's"
        );
        let h = HeaderState::parse("NewDirtyHive", &bytes).unwrap();
        assert!(h.is_clean(), "{h:?}");
        // The header fields a replay sets as Windows did: version, root cell,
        // hive-bins size, flags.
        for (at, len) in [(20, 8), (36, 8), (144, 4)] {
            assert_eq!(
                bytes[at..at + len],
                windows[at..at + len],
                "base block at {at}"
            );
        }
        // The recovered hive opens for writing and reads what Windows read.
        let hive = Hive::open_write("NewDirtyHive", &bytes).unwrap();
        assert!(hive.has_key("Key3\\Key3_2").unwrap());
        assert!(!hive.has_key("Key1").unwrap());
    }
}

#[test]
fn the_logs_in_the_wrong_order_would_differ_from_windows() {
    // Why the order matters: LOG2 applied before LOG1 (what regipy does) leaves
    // LOG1's older pages on top. Checked here by hand, so that the test above
    // could fail if the replay ignored sequence numbers.
    let dir = tempdir();
    let mut bytes = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let windows = corpus(dir.path(), "NewDirtyHive1/RecoveredHive_Windows10");
    let log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    // LOG2's entries (3, 4, 5) applied first, then LOG1's (2): pages by hand.
    for (log, first) in [(&log2, 512usize), (&log1, 512)] {
        let mut at = first;
        while at + 40 <= log.len() && &log[at..at + 4] == b"HvLE" {
            let size = u32::from_le_bytes(log[at + 4..at + 8].try_into().unwrap()) as usize;
            let count = u32::from_le_bytes(log[at + 20..at + 24].try_into().unwrap()) as usize;
            let mut data = at + 40 + 8 * count;
            for i in 0..count {
                let r = at + 40 + 8 * i;
                let off = u32::from_le_bytes(log[r..r + 4].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(log[r + 4..r + 8].try_into().unwrap()) as usize;
                bytes[4096 + off..4096 + off + len].copy_from_slice(&log[data..data + len]);
                data += len;
            }
            at += size;
        }
    }
    assert!(bytes[4096..] != windows[4096..]);
}

#[test]
fn a_damaged_entry_ends_the_replay_before_it() {
    let dir = tempdir();
    let primary = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let mut log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    // LOG2's second entry (sequence 4, at byte 8192): one byte of its page data.
    log2[8192 + 1000] ^= 0x40;
    let mut bytes = primary.clone();
    let r = replayed(
        "NewDirtyHive",
        &mut bytes,
        &[log("a.LOG1", &log1), log("a.LOG2", &log2)],
    );
    assert_eq!((r.applied, r.last_sequence), (2, Some(3)), "{r:?}");
    let l2 = &r.logs[1];
    assert_eq!((l2.entries, l2.applied), (1, 1));
    assert!(l2.note.as_deref().unwrap().contains("Hash-1"), "{l2:?}");
    assert!(HeaderState::parse("a", &bytes).unwrap().is_clean());

    // Its header instead: Hash-2 fails.
    let mut log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    log2[8192 + 16] ^= 1;
    let mut bytes = primary.clone();
    let r = replayed(
        "NewDirtyHive",
        &mut bytes,
        &[log("a.LOG1", &log1), log("a.LOG2", &log2)],
    );
    assert_eq!(r.applied, 2);
    assert!(r.logs[1].note.as_deref().unwrap().contains("Hash-2"));
}

#[test]
fn sequence_numbers_that_wrap_keep_their_order() {
    let dir = tempdir();
    let mut primary = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    let windows = corpus(dir.path(), "NewDirtyHive1/RecoveredHive_Windows10");
    // Shifted so that LOG1's entry is u32::MAX and LOG2's wrap to 0, 1, 2.
    let shift = u32::MAX - 2;
    let (log1, log2) = (shift_new_log(&log1, shift), shift_new_log(&log2, shift));
    set_seqs(
        &mut primary[..4096],
        3u32.wrapping_add(shift),
        2u32.wrapping_add(shift),
    );
    let r = replayed(
        "Wrapped",
        &mut primary,
        &[log("w.LOG2", &log2), log("w.LOG1", &log1)],
    );
    assert_eq!(
        (r.applied, r.first_sequence, r.last_sequence),
        (4, Some(u32::MAX), Some(2))
    );
    assert!(primary[4096..] == windows[4096..]);
}

#[test]
fn entries_older_than_the_hive_do_not_apply() {
    // The hive says entries up to 4 are in it already (secondary 5): LOG1's entry
    // 2 and LOG2's run from 3 are both too old, so nothing applies.
    let dir = tempdir();
    let mut primary = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    set_seqs(&mut primary[..4096], 6, 5);
    let before = primary.clone();
    let out = recover(
        "Old",
        &mut primary,
        &[log("o.LOG1", &log1), log("o.LOG2", &log2)],
    )
    .unwrap();
    assert!(matches!(out, Outcome::NothingApplies { .. }), "{out:?}");
    assert!(primary == before, "bytes changed though nothing applied");
}

#[test]
fn old_format_log_gives_what_windows_7_gave() {
    let dir = tempdir();
    let mut bytes = corpus(dir.path(), "OldDirtyHive/OldDirtyHive");
    let log1 = corpus(dir.path(), "OldDirtyHive/OldDirtyHive.LOG1");
    let windows = corpus(dir.path(), "OldDirtyHive/RecoveredHive_Windows7");
    let r = replayed(
        "OldDirtyHive",
        &mut bytes,
        &[log("OldDirtyHive.LOG1", &log1)],
    );
    assert_eq!(r.applied, 1);
    assert_eq!(r.logs[0].format, LogFormat::Old);
    assert_eq!(bytes.len(), windows.len());
    // Windows wrote twice after recovering: the first bin's timestamp (0x1014,
    // 8 bytes) and one byte at 0x6bdc8 (corpus README). Everything else matches.
    let differ: Vec<usize> = (4096..bytes.len())
        .filter(|&i| bytes[i] != windows[i])
        .collect();
    assert!(
        differ
            .iter()
            .all(|&i| (0x1014..0x101c).contains(&i) || i == 0x6bdc8),
        "differs at {:x?}",
        &differ[..differ.len().min(16)]
    );
    assert!(differ.contains(&0x6bdc8), "the replay cannot be a no-op");
    let hive = Hive::open_write("OldDirtyHive", &bytes).unwrap();
    assert!(hive
        .has_key("key_with_many_subkeys\\5000\\find_me_in_log")
        .unwrap());
    assert!(!hive.has_key("key_with_many_subkeys\\1").unwrap());
}

#[test]
fn a_damaged_base_block_is_taken_from_the_log() {
    let dir = tempdir();
    let mut bytes = corpus(dir.path(), "BadBaseBlockHive/BadBaseBlockHive");
    let log1 = corpus(dir.path(), "BadBaseBlockHive/BadBaseBlockHive.LOG1");
    assert!(!HeaderState::parse("b", &bytes).unwrap().checksum_valid);
    let r = replayed(
        "BadBaseBlockHive",
        &mut bytes,
        &[log("BadBaseBlockHive.LOG1", &log1)],
    );
    assert_eq!(r.base_block_from.as_deref(), Some("BadBaseBlockHive.LOG1"));
    let h = HeaderState::parse("b", &bytes).unwrap();
    assert!(h.is_clean());
    assert_eq!((h.major_version, h.minor_version), (1, 3), "{h:?}");
    // The same log over the same bins as OldDirtyHive: the same result.
    let mut old = corpus(dir.path(), "OldDirtyHive/OldDirtyHive");
    let old_log = corpus(dir.path(), "OldDirtyHive/OldDirtyHive.LOG1");
    replayed(
        "OldDirtyHive",
        &mut old,
        &[log("OldDirtyHive.LOG1", &old_log)],
    );
    assert!(bytes[4096..] == old[4096..]);
    assert!(Hive::open_write("BadBaseBlockHive", &bytes).is_ok());
}

#[test]
fn logs_that_fail_their_checks_apply_nothing() {
    let dir = tempdir();
    for (case, logs) in [
        ("BadLogHive1", &["BadLogHive.LOG1"][..]),
        ("BadLogHive2", &["BadLogHive.LOG1"][..]),
        ("BadLogHive3", &["BadLogHive.LOG1", "BadLogHive.LOG2"][..]),
    ] {
        let mut bytes = corpus(dir.path(), &format!("{case}/BadLogHive"));
        let before = bytes.clone();
        let data: Vec<Vec<u8>> = logs
            .iter()
            .map(|l| corpus(dir.path(), &format!("{case}/{l}")))
            .collect();
        let files: Vec<LogFile> = logs.iter().zip(&data).map(|(n, b)| log(n, b)).collect();
        match recover(case, &mut bytes, &files).unwrap() {
            Outcome::NothingApplies { why, logs } => {
                assert!(!why.is_empty());
                assert!(
                    logs.iter().all(|l| l.applied == 0 && l.note.is_some()),
                    "{logs:?}"
                );
            }
            other => panic!("{case}: {other:?}"),
        }
        assert!(bytes == before, "{case}: bytes changed");
        // And a write into it is refused, naming the hive.
        let err = Hive::open_write(case, &bytes).err().expect("refused");
        assert!(err.to_string().starts_with(case), "{err}");
    }
}

#[test]
fn a_dirty_hive_without_logs_is_refused() {
    let dir = tempdir();
    let mut bytes = corpus(dir.path(), "TruncatedDirtyHive");
    let before = bytes.clone();
    match recover("TruncatedDirtyHive", &mut bytes, &[]).unwrap() {
        Outcome::NothingApplies { why, .. } => {
            assert!(why.contains("no transaction logs"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(bytes == before);
    let err = Hive::open_write("TruncatedDirtyHive", &bytes)
        .err()
        .unwrap();
    assert!(err.to_string().contains("dirty"), "{err}");
    // Empty logs say so.
    let mut bytes = before.clone();
    match recover("T", &mut bytes, &[log("T.LOG1", &[]), log("T.LOG2", &[])]).unwrap() {
        Outcome::NothingApplies { why, .. } => assert!(why.contains("empty"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_clean_hive_is_left_alone() {
    let dir = tempdir();
    let mut bytes = corpus(dir.path(), "OldDirtyHive/RecoveredHive_Windows7");
    let log1 = corpus(dir.path(), "OldDirtyHive/OldDirtyHive.LOG1");
    let before = bytes.clone();
    let out = recover("clean", &mut bytes, &[log("x.LOG1", &log1)]).unwrap();
    assert_eq!(out, Outcome::Clean);
    assert!(bytes == before);
}

#[test]
fn cut_and_flipped_logs_never_panic() {
    // Every prefix length on a 512-byte grid and a flipped byte in each sector of
    // both logs: the replay returns (replayed, nothing applies, or an error) and
    // never panics or writes outside the hive.
    let dir = tempdir();
    let primary = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    let old = corpus(dir.path(), "OldDirtyHive/OldDirtyHive");
    let old_log = corpus(dir.path(), "OldDirtyHive/OldDirtyHive.LOG1");
    let mut runs = 0;
    for cut in (0..=log2.len()).step_by(512) {
        let mut b = primary.clone();
        let _ = recover(
            "cut",
            &mut b,
            &[log("c.LOG1", &log1), log("c.LOG2", &log2[..cut])],
        );
        runs += 1;
    }
    for at in (0..log2.len())
        .step_by(512)
        .flat_map(|s| [s + 4, s + 20, s + 44])
    {
        let mut l = log2.clone();
        l[at] ^= 0xff;
        let mut b = primary.clone();
        let _ = recover("flip", &mut b, &[log("c.LOG1", &log1), log("c.LOG2", &l)]);
        runs += 1;
    }
    for cut in (0..=old_log.len()).step_by(512) {
        let mut b = old.clone();
        let _ = recover("old", &mut b, &[log("o.LOG1", &old_log[..cut])]);
        runs += 1;
    }
    for at in (0..old_log.len())
        .step_by(512)
        .flat_map(|s| [s + 4, s + 40, s + 516])
    {
        let mut l = old_log.clone();
        if at < l.len() {
            l[at] ^= 0xff;
        }
        let mut b = old.clone();
        let _ = recover("old", &mut b, &[log("o.LOG1", &l)]);
        runs += 1;
    }
    assert!(runs > 200, "{runs}");
}

#[test]
fn odd_hives_made_dirty_never_panic_the_replay() {
    // Each damaged or odd hive of the corpus, its header marked dirty, replayed
    // with no logs, with NewDirtyHive's logs (written for another hive), and with
    // its own bytes posing as a log: an outcome or an error naming it, never a panic.
    let dir = tempdir();
    let log1 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG1");
    let log2 = corpus(dir.path(), "NewDirtyHive1/NewDirtyHive.LOG2");
    let root = std::env::var_os("WINGOLD_CORPUS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let mut seen = 0;
    for e in std::fs::read_dir(root.join("odd")).expect("TEST CANNOT RUN: corpus odd/ missing") {
        let name = e.unwrap().file_name().to_string_lossy().replace(".xz", "");
        std::fs::create_dir_all(dir.path().join("odd")).unwrap();
        let bytes = std::fs::read(corpus_hive(dir.path(), &format!("odd/{name}"))).unwrap();
        let mut dirty = bytes.clone();
        if dirty.len() >= 4096 {
            let seq = u32::from_le_bytes(dirty[4..8].try_into().unwrap());
            set_seqs(&mut dirty[..4096], seq.wrapping_add(1), seq);
        }
        let own = bytes.clone();
        for logs in [
            vec![],
            vec![log("x.LOG1", &log1), log("x.LOG2", &log2)],
            vec![log("x.LOG1", &own)],
        ] {
            let mut b = dirty.clone();
            match recover(&name, &mut b, &logs) {
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with(&name) && !msg.contains('\n'), "{msg}");
                }
            }
        }
        seen += 1;
    }
    assert!(seen >= 10, "{seen} odd hives");
}
