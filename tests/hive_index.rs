//! Subkey indexes wingold writes itself (`hive::index`), checked against the
//! indexes Windows wrote in the corpus hives and read back with libhivex's own
//! tools (hivexsh, hivexget, hivexregedit), which are not ours.

use wingold_test_support as support;

use std::path::Path;
use support::*;
use wingold::hive::{index, Hive};

/// `hivexsh` commands run on `hive`; stdout.
fn hivexsh(hive: &Path, script: &str) -> String {
    let out = std::process::Command::new("hivexsh")
        .arg(hive)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .expect("TEST CANNOT RUN: hivexsh (Debian libhivex-bin) is not runnable");
    assert!(
        out.status.success(),
        "hivexsh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The file offset of the first allocated hash leaf with two entries or more.
fn hash_leaf(bytes: &[u8]) -> usize {
    (4096..bytes.len() - 24)
        .step_by(8)
        .find(|&c| {
            let size = i32::from_le_bytes(bytes[c..c + 4].try_into().unwrap());
            size < 0 && &bytes[c + 4..c + 6] == b"lh" && bytes[c + 6] >= 2
        })
        .expect("a hash leaf in SYSTEM")
}

/// The rules the writer follows (Windows order of upper-cased UTF-16 names, the
/// ×37 hash of hash leaves) hold for every index Windows itself wrote. (hivexsh
/// lists subkeys sorted by its own rule, so order is checked here, against
/// Windows, and by `audit` on what wingold writes.)
#[test]
fn windows_written_indexes_follow_the_order_and_hash_wingold_writes() {
    let dir = tempdir();
    let mut total = (0, 0);
    for name in ["SYSTEM", "SAM", "NTUSER.DAT"] {
        let bytes = std::fs::read(corpus_hive(dir.path(), name)).unwrap();
        let audit = index::audit(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        total.0 += audit.keys;
        total.1 += audit.hash_leaves;
    }
    assert!(
        total.0 > 10_000 && total.1 > 1_000,
        "too little walked: {total:?}"
    );

    // The audit can fail: two entries of a hash leaf swapped, or one hash off.
    let bytes = std::fs::read(corpus_hive(dir.path(), "SYSTEM")).unwrap();
    let leaf = hash_leaf(&bytes);
    let mut swapped = bytes.clone();
    swapped.copy_within(leaf + 8..leaf + 16, leaf + 16);
    swapped[leaf + 8..leaf + 16].copy_from_slice(&bytes[leaf + 16..leaf + 24]);
    let err = index::audit(&swapped).expect_err("swapped entries pass");
    assert!(matches!(err, index::Error::OutOfOrder { .. }), "{err}");
    let mut off = bytes.clone();
    off[leaf + 12] ^= 1;
    let err = index::audit(&off).expect_err("a wrong hash passes");
    assert!(matches!(err, index::Error::WrongHash { .. }), "{err}");
}

/// A cell cut shorter than its record (a damaged hive) is an error naming the cell,
/// in the audit and in laying out new keys: never a read past the record.
#[test]
fn cells_cut_short_are_errors_not_panics() {
    let dir = tempdir();
    let bytes = std::fs::read(corpus_hive(dir.path(), "SYSTEM")).unwrap();
    let leaf = hash_leaf(&bytes);
    let first_key =
        4096 + u32::from_le_bytes(bytes[leaf + 8..leaf + 12].try_into().unwrap()) as usize;
    for (what, cell) in [("a hash leaf", leaf), ("a key", first_key)] {
        let mut cut = bytes.clone();
        cut[cell..cell + 4].copy_from_slice(&(-6i32).to_le_bytes());
        let err = index::audit(&cut).expect_err(what);
        assert!(matches!(err, index::Error::Short { .. }), "{what}: {err}");
    }
    // Laying out a key named outside ASCII reads every index on its way: refused.
    let mut cut = bytes.clone();
    let root = 4096 + u32::from_le_bytes(bytes[0x24..0x28].try_into().unwrap()) as usize;
    cut[root..root + 4].copy_from_slice(&(-6i32).to_le_bytes());
    let err = index::lay_out_new_keys(&cut, ["\u{c4}rger"], 64)
        .err()
        .expect("a cut root key is read");
    assert!(matches!(err, index::Error::Short { .. }), "{err}");
}

/// Writes `names` as new subkeys of `parent` in a copy of the corpus SYSTEM hive,
/// through wingold; returns the hive's path.
fn add_keys(dir: &Path, parent: &str, names: &[String]) -> std::path::PathBuf {
    let base = corpus_hive(dir, "SYSTEM");
    let paths: Vec<String> = names.iter().map(|n| format!("{parent}\\{n}")).collect();
    let bytes = std::fs::read(&base).unwrap();
    let mut h =
        Hive::open_write_with_keys("SYSTEM", &bytes, paths.iter().map(String::as_str)).unwrap();
    for p in &paths {
        let added = h.create_key(p).unwrap();
        assert_eq!(
            added,
            vec![p.clone()],
            "reported as added once, by its edit"
        );
    }
    let out = dir.join("SYSTEM.new");
    std::fs::write(&out, h.commit().unwrap()).unwrap();
    out
}

/// `names` added as subkeys of `Select` in a copy of the corpus SYSTEM hive by
/// libhivex itself (hivexregedit, one key at a time); returns the hive's path.
fn added_by_libhivex(dir: &Path, names: &[String]) -> std::path::PathBuf {
    let theirs = dir.join("SYSTEM.hivex");
    std::fs::copy(corpus_hive(dir, "SYSTEM"), &theirs).unwrap();
    let mut reg = String::from("Windows Registry Editor Version 5.00\n\n");
    for n in names {
        reg += &format!("[HKEY_LOCAL_MACHINE\\SYSTEM\\Select\\{n}]\n\n");
    }
    let reg_path = dir.join("keys.reg");
    std::fs::write(&reg_path, reg).unwrap();
    let prefix = "HKEY_LOCAL_MACHINE\\SYSTEM";
    run(
        "hivexregedit",
        &["--merge", "--prefix", prefix, s(&theirs), s(&reg_path)],
    );
    theirs
}

/// 20,000 new keys under a key Windows already filled (ControlSet001\Services):
/// one pass, a hive that grows by kilobytes per key (libhivex's one-at-a-time
/// adds grew a hive to 1.6 GB), every old and new key readable by hivexsh and
/// hivexget, the index split under an index root as Windows splits it.
#[test]
fn twenty_thousand_subkeys_under_an_existing_key_are_one_index() {
    let dir = tempdir();
    let names: Vec<String> = (0..20_000)
        .map(|i| format!("wg{:05}", i * 7919 % 20_000))
        .collect();
    let base = corpus_hive(dir.path(), "SYSTEM");
    let before = hivexsh(&base, "cd \\ControlSet001\\Services\nls\n");
    let out = add_keys(dir.path(), "ControlSet001\\Services", &names);

    let grown = std::fs::metadata(&out).unwrap().len() - std::fs::metadata(&base).unwrap().len();
    assert!(
        grown < 4 << 20,
        "the hive grew by {grown} bytes for 20,000 keys"
    );

    let after = hivexsh(&out, "cd \\ControlSet001\\Services\nls\n");
    let listed: std::collections::BTreeSet<&str> = after.lines().collect();
    assert_eq!(listed.len(), before.lines().count() + 20_000);
    let gone: Vec<&str> = before.lines().filter(|l| !listed.contains(l)).collect();
    assert!(gone.is_empty(), "old keys gone: {gone:?}");
    let missing = names
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .count();
    assert_eq!(missing, 0, "new keys hivexsh does not list");
    // An old key's values and a new key both read through libhivex.
    let tcpip = run(
        "hivexget",
        &[s(&out), "\\ControlSet001\\Services\\Tcpip", "ImagePath"],
    );
    let tcpip_before = run(
        "hivexget",
        &[s(&base), "\\ControlSet001\\Services\\Tcpip", "ImagePath"],
    );
    assert_eq!(tcpip.stdout, tcpip_before.stdout);
    let new = hivexsh(&out, "cd \\ControlSet001\\Services\\WG12345\nlsval\n");
    assert_eq!(new.trim(), "", "a new key holds no values");

    let audit = index::audit(&std::fs::read(&out).unwrap()).unwrap();
    assert!(audit.index_roots >= 1, "{audit:?}");
    assert!(audit.largest_leaf <= 507, "{audit:?}");
}

/// The same ASCII names added by libhivex (hivexregedit, one key at a time) and by
/// wingold (all at once) list in the same order; names outside ASCII are stored
/// compressed (Latin-1) or as UTF-16 and read back by name.
#[test]
fn new_keys_list_as_libhivex_orders_them_and_read_back_by_name() {
    let dir = tempdir();
    let names: Vec<String> = (0..300)
        .map(|i| match i % 4 {
            0 => format!("Key{i}"),
            1 => format!("key_{i}"),
            2 => format!("A{}", 300 - i),
            _ => format!("zz[{i}]"),
        })
        .collect();
    let ours = add_keys(dir.path(), "Select", &names);

    let theirs = added_by_libhivex(dir.path(), &names);
    let ls = "cd \\Select\nls\n";
    assert_eq!(hivexsh(&ours, ls), hivexsh(&theirs, ls));

    let odd = ["Ärger", "straße", "日本語", "Ω-key"].map(String::from);
    let ours = add_keys(dir.path(), "Select", &odd);
    let listed = hivexsh(&ours, ls);
    for n in &odd {
        assert!(listed.lines().any(|l| l == n), "{n} not listed: {listed}");
        hivexsh(&ours, &format!("cd \\Select\\{n}\n"));
    }
    index::audit(&std::fs::read(&ours).unwrap()).unwrap();
}

/// libhivex hashes a new key's name over its UTF-8 bytes, upper-casing ASCII only,
/// where Windows hashes the upper-cased UTF-16 name: a key `Ärger` that
/// hivexregedit adds carries a hash Windows would not find it by. wingold lays out
/// any new key with such a name itself, even a single one.
#[test]
fn non_ascii_key_names_get_the_hash_windows_computes_not_libhivex_s() {
    let dir = tempdir();
    let theirs = added_by_libhivex(dir.path(), &["\u{c4}rger".to_string()]);
    let err = index::audit(&std::fs::read(&theirs).unwrap())
        .expect_err("libhivex's hash of a non-ASCII name now matches Windows's: revisit");
    assert!(matches!(err, index::Error::WrongHash { .. }), "{err}");

    let ours = add_keys(dir.path(), "Select", &["\u{c4}rger".to_string()]);
    index::audit(&std::fs::read(&ours).unwrap()).unwrap();
    let listed = hivexsh(&ours, "cd \\Select\nls\n");
    assert!(listed.lines().any(|l| l == "\u{c4}rger"), "{listed}");
}
