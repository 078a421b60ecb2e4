//! The .reg engine: parser details, byte-exact round trips through hivexregedit's
//! export, UTF-16 files as regedit saves them, a differential test against
//! `hivexregedit --merge`, and a bounded mutation fuzz run.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use support::*;
use wingold::reg::ControlSets;
use wingold::reg::{self, Op};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reg")
            .join(name),
    )
    .unwrap()
}

fn sets() -> ControlSets {
    ControlSets {
        current: "ControlSet001".into(),
        default: Some("ControlSet001".into()),
        last_known_good: None,
        failed: None,
    }
}

/// Thousands of values in one key, set, deleted, set again and changed, in two
/// blocks of the same key: what the value buffer must get exactly right.
fn many_values_reg() -> Vec<u8> {
    let key = "[HKEY_LOCAL_MACHINE\\SOFTWARE\\wingold-test\\Many]";
    let mut text = format!("Windows Registry Editor Version 5.00\r\n\r\n{key}\r\n");
    for i in 0..3000 {
        text += &format!("\"v{i:04}\"=dword:{i:08x}\r\n");
    }
    text += &format!(
        "\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\wingold-test\\Other]\r\n\"x\"=\"y\"\r\n\r\n{key}\r\n"
    );
    for i in (0..3000).step_by(3) {
        text += &format!("\"v{i:04}\"=-\r\n");
    }
    for i in (0..3000).step_by(7) {
        text += &format!("\"v{i:04}\"=\"again {i}\"\r\n");
    }
    text += "\"v0001\"=dword:ffffffff\r\n";
    text.into_bytes()
}

/// Thousands of new subkeys, nested, one deleted and made again below: the keys
/// wingold lays out at once (`hive::index`) and the ones a delete leaves to
/// libhivex, in mixed case.
fn many_keys_reg() -> Vec<u8> {
    let base = "HKEY_LOCAL_MACHINE\\SOFTWARE\\wingold-test\\Keys";
    let mut text = format!("Windows Registry Editor Version 5.00\r\n\r\n[{base}]\r\n\r\n");
    for i in 0..2000 {
        let name = if i % 2 == 0 {
            format!("K{i:04}")
        } else {
            format!("k_{i:04}")
        };
        text += &format!(
            "[{base}\\{name}]\r\n\r\n[{base}\\{name}\\Sub]\r\n\"v\"=dword:{i:08x}\r\n\r\n"
        );
    }
    text += &format!(
        "[-{base}\\K0006]\r\n\r\n[{base}\\K0006]\r\n\r\n[{base}\\K0006\\Again]\r\n\"w\"=\"x\"\r\n"
    );
    text.into_bytes()
}

/// A 64 KiB binary value written as regedit wraps hex data (`\` + two-space indent).
fn large_reg() -> Vec<u8> {
    let data = pattern(77, 65536);
    let mut text = String::from(
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\wingold-test\\Large]\r\n\"large\"=hex:",
    );
    let mut col = text.lines().last().unwrap().len();
    for (i, b) in data.iter().enumerate() {
        let piece = format!("{b:02x}{}", if i + 1 < data.len() { "," } else { "" });
        if col + piece.len() > 76 {
            text.push_str("\\\r\n  ");
            col = 2;
        }
        text.push_str(&piece);
        col += piece.len();
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// Our merge of `reg` into an empty hive; returns the hive file.
fn ours(dir: &Path, name: &str, reg: &[u8]) -> PathBuf {
    let (_, edits) = reg::parse(reg, name).unwrap();
    let empty = hivex::EMPTY_HIVE_TEMPLATE.to_vec();
    let results = reg::apply(&edits, &sets(), |_| Ok(empty.clone())).unwrap();
    let bytes = results.into_iter().find_map(|r| r.bytes).unwrap_or(empty);
    let out = dir.join(format!("{name}.ours.hive"));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// hivexregedit's merge of `reg` (UTF-8 text) into an empty hive, with every
/// missing parent key spelled out first, which hivexregedit needs.
fn theirs(dir: &Path, name: &str, reg: &[u8]) -> PathBuf {
    let text = String::from_utf8(reg.to_vec())
        .unwrap()
        .replace("\r\n", "\n");
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(key) = line.strip_prefix("[HKEY_LOCAL_MACHINE\\SOFTWARE\\") {
            let key = key.trim_end_matches(']');
            let parts: Vec<&str> = key.split('\\').collect();
            for i in 1..parts.len() {
                let parent = parts[..i].join("\\");
                if seen.insert(parent.to_uppercase()) {
                    out += &format!("[HKEY_LOCAL_MACHINE\\SOFTWARE\\{parent}]\n\n");
                }
            }
            seen.insert(key.to_uppercase());
        }
        // hivexregedit takes exactly 8 hex digits after dword:.
        match line.split_once("=dword:") {
            Some((name, digits)) => out += &format!("{name}=dword:{:0>8}", digits.trim()),
            None => out += line,
        }
        out.push('\n');
    }
    let reg_path = dir.join(format!("{name}.parents.reg"));
    std::fs::write(&reg_path, out).unwrap();
    let hive = dir.join(format!("{name}.theirs.hive"));
    std::fs::write(&hive, hivex::EMPTY_HIVE_TEMPLATE).unwrap();
    run(
        "hivexregedit",
        &[
            "--merge",
            "--prefix",
            "HKEY_LOCAL_MACHINE\\SOFTWARE",
            s(&hive),
            s(&reg_path),
        ],
    );
    hive
}

fn export(hive: &Path) -> String {
    let out = run(
        "hivexregedit",
        &[
            "--export",
            "--prefix",
            "HKEY_LOCAL_MACHINE\\SOFTWARE",
            s(hive),
            "\\",
        ],
    );
    // hivexregedit prints Latin-1 key names as raw bytes: compare bytes, shown lossily.
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// UTF-16LE with a BOM and CRLF line ends, as regedit saves .reg files.
fn as_regedit_saves(reg: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(reg.to_vec())
        .unwrap()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let mut out = vec![0xff, 0xfe];
    out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    out
}

#[test]
fn every_value_type_round_trips_byte_exact() {
    let dir = tempdir();
    let input = fixture("types.reg");
    let hive = ours(dir.path(), "types", &input);
    // hivexregedit exports every value as raw hex(N) bytes: parse that back.
    // (Its line for the hive root ends in `\]`, which is no key to us: skip it.)
    let exported: String = export(&hive)
        .lines()
        .filter(|l| !l.ends_with("\\]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (_, back) = reg::parse(exported.as_bytes(), "export").unwrap();
    let (_, want) = reg::parse(&input, "types.reg").unwrap();
    let values = |edits: &[reg::RegEdit]| -> Vec<(String, u32, Vec<u8>)> {
        let mut v: Vec<_> = edits
            .iter()
            .filter_map(|e| match &e.op {
                Op::SetValue {
                    name, kind, data, ..
                } => Some((name.clone(), *kind, data.clone())),
                _ => None,
            })
            .collect();
        v.sort();
        v
    };
    let want = values(&want);
    assert_eq!(want.len(), 15);
    assert_eq!(values(&back), want);
    // Strings carry the terminating NUL Windows writes; hivex alone would omit it.
    let sz = want.iter().find(|(n, _, _)| n == "empty-sz").unwrap();
    assert_eq!(sz.2, vec![0, 0]);
}

#[test]
fn regedit_utf16_file_gives_the_same_hive_as_utf8() {
    let dir = tempdir();
    for (name, reg) in [
        ("types", fixture("types.reg")),
        ("nasty", fixture("nasty.reg")),
        ("large", large_reg()),
        ("many", many_values_reg()),
    ] {
        let utf8 = std::fs::read(ours(dir.path(), &format!("{name}-utf8"), &reg)).unwrap();
        let utf16 = std::fs::read(ours(
            dir.path(),
            &format!("{name}-utf16"),
            &as_regedit_saves(&reg),
        ))
        .unwrap();
        assert!(utf8 == utf16, "{name}: the UTF-16 file gave another hive");
    }
}

#[test]
fn merge_matches_hivexregedit() {
    let dir = tempdir();
    for (name, reg) in [
        ("types", fixture("types.reg")),
        ("nasty", fixture("nasty.reg")),
        ("large", large_reg()),
        ("many", many_values_reg()),
        ("keys", many_keys_reg()),
    ] {
        let o = ours(dir.path(), name, &reg);
        wingold::hive::index::audit(&std::fs::read(&o).unwrap())
            .unwrap_or_else(|e| panic!("{name}: subkey indexes: {e}"));
        let a = export(&o);
        let b = export(&theirs(dir.path(), name, &reg));
        assert!(
            a == b,
            "{name}: exports differ\n--- ours\n{a}\n--- hivexregedit\n{b}"
        );
    }
}

#[test]
fn syntax_errors_name_line_and_column() {
    let cases: &[(&str, usize, usize, &str)] = &[
        ("", 1, 1, "empty file"),
        ("REGEDIT5\n", 1, 1, "header"),
        ("REGEDIT4\n\"a\"=\"b\"\n", 2, 1, "before any `[KEY]`"),
        ("REGEDIT4\n[HKLM\\X\n", 2, 8, "`]`"),
        ("REGEDIT4\n[]\n", 2, 2, "key path"),
        ("REGEDIT4\n[HKLM\\\\X]\n", 2, 2, "empty key name"),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=dword:\n",
            3,
            11,
            "1 to 8 hex digits",
        ),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=dword:xyz\n",
            3,
            11,
            "1 to 8 hex digits",
        ),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=hex:1,2,345\n",
            3,
            13,
            "one or two hex digits",
        ),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=hex:01 02\n",
            3,
            12,
            "`,` between",
        ),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=hex(zz):01\n",
            3,
            9,
            "type in hex",
        ),
        ("REGEDIT4\n[HKLM\\X]\n\"a\"=hex(2)01\n", 3, 11, "`:` after"),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=\"unterminated\n",
            3,
            5,
            "closing",
        ),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=\"b\" junk\n",
            3,
            9,
            "after the value",
        ),
        ("REGEDIT4\n[HKLM\\X]\n\"a\" \"b\"\n", 3, 5, "`=`"),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=banana\n",
            3,
            5,
            "expected a value",
        ),
        ("REGEDIT4\n[HKLM\\X]\nfoo=bar\n", 3, 1, "expected `[KEY]`"),
        (
            "REGEDIT4\n[HKLM\\X]\n\"a\"=hex:01,\\\n  02,zz\n",
            4,
            6,
            "one or two hex digits",
        ),
    ];
    for (text, line, col, needle) in cases {
        let err = reg::parse(text.as_bytes(), "t.reg").expect_err(text);
        let at = err.syntax().expect("a syntax error");
        assert_eq!((at.line, at.column), (*line, *col), "{text:?}: {err}");
        assert!(at.message.contains(needle), "{text:?}: {err}");
        assert!(err
            .to_string()
            .starts_with(&format!("t.reg:{line}:{col}: ")));
    }
}

#[test]
fn regedit4_text_values_become_utf16() {
    let text = b"REGEDIT4\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\r\n\"e\"=hex(2):25,41,25,00\r\n\"m\"=hex(7):61,00,62,00,00\r\n\"s\"=\"caf\xe9\"\r\n";
    let (version, edits) = reg::parse(text, "old.reg").unwrap();
    assert_eq!(version, reg::Version::V4);
    let data: Vec<&Vec<u8>> = edits
        .iter()
        .filter_map(|e| match &e.op {
            Op::SetValue { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(data[0], &vec![0x25, 0, 0x41, 0, 0x25, 0, 0, 0]);
    assert_eq!(data[1], &vec![0x61, 0, 0, 0, 0x62, 0, 0, 0, 0, 0]);
    // An ANSI (Latin-1) é becomes U+00E9 in UTF-16LE, with the NUL.
    assert_eq!(data[2], &reg::utf16z("café"));
}

#[test]
fn continuation_keeps_escaped_backslashes_apart() {
    let text = "Windows Registry Editor Version 5.00\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n\"path\"=\"C:\\\\\"\n\"next\"=dword:1\n";
    let (_, edits) = reg::parse(text.as_bytes(), "t.reg").unwrap();
    assert_eq!(
        edits.len(),
        3,
        "a string ending in an escaped backslash swallowed the next line"
    );
}

/// Mutations of real .reg inputs: flipped, inserted, deleted and spliced bytes.
/// The parser must return Ok or an error for every one, never panic.
/// WINGOLD_FUZZ_ITERS sets the count (default 20000, a few seconds).
#[test]
fn parser_survives_mutated_inputs() {
    let iters: usize = std::env::var("WINGOLD_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seeds = [
        fixture("types.reg"),
        fixture("nasty.reg"),
        as_regedit_saves(&fixture("nasty.reg")),
        large_reg()[..3000].to_vec(),
    ];
    let dict: &[&[u8]] = &[
        b"\\",
        b"\"",
        b"[",
        b"]",
        b"[-",
        b"=",
        b"=-",
        b"@",
        b"hex(",
        b"):",
        b"dword:",
        b",",
        b"\r\n",
        b"\n",
        b";",
        b"\\\n",
        b"\xff\xfe",
        b"\x00",
        b"\xc3",
    ];
    let mut rng = pattern(4242, iters * 16);
    let mut next = {
        let mut i = 0;
        move || {
            i = (i + 8) % (rng.len() - 8);
            let v = u64::from_le_bytes(rng[i..i + 8].try_into().unwrap());
            rng[i] = rng[i].wrapping_add(1);
            v as usize
        }
    };
    let mut errors = 0usize;
    for n in 0..iters {
        let mut input = seeds[n % seeds.len()].clone();
        for _ in 0..1 + next() % 6 {
            let len = input.len().max(1);
            match next() % 5 {
                0 if !input.is_empty() => {
                    let p = next() % input.len();
                    input[p] ^= 1 << (next() % 8);
                }
                1 => {
                    let p = next() % (input.len() + 1);
                    input.splice(p..p, dict[next() % dict.len()].iter().copied());
                }
                2 if !input.is_empty() => {
                    let p = next() % input.len();
                    let q = (p + next() % 16).min(input.len());
                    input.drain(p..q);
                }
                3 => {
                    let p = next() % len.min(input.len() + 1);
                    input.truncate(p);
                }
                _ => {
                    let other = &seeds[next() % seeds.len()];
                    let a = next() % other.len();
                    let b = (a + next() % 64).min(other.len());
                    let p = next() % (input.len() + 1);
                    input.splice(p..p, other[a..b].iter().copied());
                }
            }
        }
        if reg::parse(&input, "fuzz.reg").is_err() {
            errors += 1;
        }
    }
    // Both outcomes must occur, or the mutations are too tame (or too wild).
    assert!(
        errors > iters / 20 && errors < iters,
        "{errors} errors in {iters} runs"
    );
}

#[test]
fn where_hivexregedit_differs_wingold_follows_regedit() {
    let dir = tempdir();
    let hive = ours(dir.path(), "semantics", &fixture("regedit-semantics.reg"));
    let h = wingold::hive::Hive::open_read("SOFTWARE", &std::fs::read(&hive).unwrap()).unwrap();
    let key = "wingold-test\\Semantics";
    assert!(
        h.value(key, "drop").unwrap().is_none(),
        "set then deleted: gone"
    );
    assert!(
        h.value(key, "").unwrap().is_none(),
        "default set then deleted: gone"
    );
    let names: Vec<String> = h.values(key).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("mixed case"))
            .count(),
        1,
        "{names:?}"
    );
    assert!(
        names.contains(&"Mixed Case".to_owned()),
        "first spelling kept: {names:?}"
    );
    assert_eq!(
        h.value(key, "MIXED CASE").unwrap().unwrap().as_dword(),
        Some(3)
    );
    assert_eq!(
        h.value(key, "unicode")
            .unwrap()
            .unwrap()
            .as_string()
            .unwrap(),
        "värde ✓ 值"
    );
    // And hivexget, an independent reader, agrees on the Unicode text.
    let got = run(
        "hivexget",
        &[s(&hive), "\\wingold-test\\Semantics", "unicode"],
    )
    .stdout;
    assert_eq!(String::from_utf8_lossy(&got).trim(), "värde ✓ 值");
}

/// Names as long as Windows allows pass; one character more, or a NUL anywhere in
/// a name, is refused with its line: a 70,000-character key name once panicked,
/// and libhivex truncates long value names and compares names as C strings.
#[test]
fn names_windows_cannot_hold_are_refused_with_their_line() {
    let key = |n: usize| format!("REGEDIT4\n[HKLM\\{}]\n\"a\"=dword:1\n", "k".repeat(n));
    let value = |n: usize| format!("REGEDIT4\n[HKLM\\K]\n\"{}\"=dword:1\n", "v".repeat(n));
    assert!(reg::parse(key(255).as_bytes(), "t.reg").is_ok());
    assert!(reg::parse(value(16_383).as_bytes(), "t.reg").is_ok());
    // UTF-16 units count, as Windows counts them: 128 characters outside the BMP
    // are 256 units.
    let astral = format!("REGEDIT4\n[HKLM\\{}]\n", "\u{1F600}".repeat(128));
    for (text, line, needle) in [
        (key(256), 2, "key name of 256 characters"),
        (key(70_000), 2, "Windows allows 255"),
        (astral, 2, "key name of 256 characters"),
        (value(16_384), 3, "Windows allows 16383"),
        ("REGEDIT4\n[HKLM\\zero\0key]\n".to_owned(), 2, "NUL"),
        (
            "REGEDIT4\n[HKLM\\K]\n\"zero\0val\"=dword:1\n".to_owned(),
            3,
            "NUL",
        ),
    ] {
        let err = reg::parse(text.as_bytes(), "t.reg").expect_err(needle);
        let at = err.syntax().expect("a syntax error");
        assert_eq!(at.line, line, "{err}");
        assert!(at.message.contains(needle), "{err}");
    }
}

/// Names compare as Windows compares them, one UTF-16 unit at a time: `ß` has no
/// upper case of its own there, so `"ß"` and `"SS"` are two values (and two keys),
/// while `"é"` and `"É"` are one.
#[test]
fn names_compare_as_windows_upper_cases_them() {
    let dir = tempdir();
    let text = "Windows Registry Editor Version 5.00\n\n\
                [HKEY_LOCAL_MACHINE\\SOFTWARE\\K]\n\"SS\"=dword:2\n\"\u{df}\"=dword:1\n\
                \"\u{e9}\"=dword:3\n\"\u{c9}\"=dword:4\n\"\u{df}\"=dword:5\n\n\
                [HKEY_LOCAL_MACHINE\\SOFTWARE\\K\\STRASSE]\n\n\
                [HKEY_LOCAL_MACHINE\\SOFTWARE\\K\\stra\u{df}e]\n";
    let hive = ours(dir.path(), "fold", text.as_bytes());
    let h = wingold::hive::Hive::open_read("SOFTWARE", &std::fs::read(&hive).unwrap()).unwrap();
    let mut values: Vec<(String, u32)> = h
        .values("K")
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n, u32::from_le_bytes(v.data[..4].try_into().unwrap())))
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            ("SS".to_owned(), 2),
            ("\u{df}".to_owned(), 5),
            ("\u{e9}".to_owned(), 4),
        ]
    );
    let mut keys = h.subkeys("K").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["STRASSE".to_owned(), "stra\u{df}e".to_owned()]);
}
