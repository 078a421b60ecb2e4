//! Hive reading against hivexget, on real hives from the shared corpus.

mod support;

use support::*;
use wingold::hive::{HeaderState, Hive};

#[test]
fn header_state_of_real_hives() {
    let dir = tempdir();
    let clean = std::fs::read(corpus_hive(dir.path(), "SYSTEM")).unwrap();
    let h = HeaderState::parse("SYSTEM", &clean).unwrap();
    assert!(h.is_clean(), "{h:?}");
    assert_eq!((h.primary_sequence, h.secondary_sequence), (13983, 13983));
    assert_eq!(h.major_version, 1);

    let dirty = std::fs::read(corpus_hive(dir.path(), "SYSTEM_2")).unwrap();
    let h = HeaderState::parse("SYSTEM_2", &dirty).unwrap();
    assert!(!h.is_clean());
    assert_eq!((h.primary_sequence, h.secondary_sequence), (205, 204));

    let mut broken = clean.clone();
    broken[100] ^= 1;
    assert!(
        !HeaderState::parse("SYSTEM", &broken)
            .unwrap()
            .checksum_valid
    );
    assert!(HeaderState::parse("x", b"not a hive at all").is_err());
}

#[test]
fn values_match_hivexget() {
    let dir = tempdir();
    let path = corpus_hive(dir.path(), "SYSTEM");
    let hive = Hive::open_read("SYSTEM", &std::fs::read(&path).unwrap()).unwrap();
    let current = hive.value("Select", "Current").unwrap().unwrap();
    let expected = run("hivexget", &[s(&path), "\\Select", "Current"]).stdout;
    assert_eq!(
        current.as_dword().unwrap().to_string(),
        String::from_utf8_lossy(&expected).trim()
    );
    // Keys and value names are case-insensitive.
    let again = hive.value("SELECT", "current").unwrap().unwrap();
    assert_eq!(again, current);
    let set = format!("ControlSet{:03}", current.as_dword().unwrap());
    let key = format!("{set}\\Control\\ComputerName\\ComputerName");
    let name = hive.value(&key, "ComputerName").unwrap().unwrap();
    let expected = run("hivexget", &[s(&path), &format!("\\{key}"), "ComputerName"]).stdout;
    assert_eq!(
        name.as_string().unwrap(),
        String::from_utf8_lossy(&expected).trim()
    );
    assert!(hive.value("Select", "NoSuchValue").unwrap().is_none());
    assert!(hive.value("No\\Such\\Key", "x").unwrap().is_none());
}
