//! A dirty hive with its transaction logs, end to end, on a phony Windows whose
//! DEFAULT hive is yarp's NewDirtyHive with its .LOG1 and .LOG2 (what Windows 10
//! made of them is in the corpus): `inspect` says what the logs hold; `inject`
//! replays them into what it writes, to a new image and in place, and empties the
//! logs after; a kill at any write of an in-place run leaves the hive as it was
//! (still brought up to date by its logs), as it should be, or visibly dirty —
//! never logs that would replay over a half-written body.

use wingold_test_support as support;

use std::path::Path;
use support::fixtures::{self, Entry, PhonyWindows, WIN2K22_X64};
use support::*;
use wingold::hive::replay::{recover, LogFile, Outcome};

const CONFIG: &str = "Windows/System32/config";
const REG: &str = "Windows Registry Editor Version 5.00\r\n\r\n\
                   [HKEY_USERS\\.DEFAULT\\Key3\\Key3_1]\r\n\
                   \"wingold\"=dword:00000001\r\n";

struct Dirty {
    phony: PhonyWindows,
    primary: Vec<u8>,
    windows: Vec<u8>,
}

fn dirty_default(dir: &Path) -> Dirty {
    let primary = corpus_log(dir, "NewDirtyHive1/NewDirtyHive");
    let log1 = corpus_log(dir, "NewDirtyHive1/NewDirtyHive.LOG1");
    let log2 = corpus_log(dir, "NewDirtyHive1/NewDirtyHive.LOG2");
    let windows = corpus_log(dir, "NewDirtyHive1/RecoveredHive_Windows10");
    let phony = fixtures::phony_windows(
        dir,
        &WIN2K22_X64,
        vec![
            Entry::File("Windows/System32/config/DEFAULT", primary.clone()),
            Entry::File("Windows/System32/config/DEFAULT.LOG1", log1),
            Entry::File("Windows/System32/config/DEFAULT.LOG2", log2),
        ],
    );
    Dirty {
        phony,
        primary,
        windows,
    }
}

/// The Windows volume's files `names` (in the config folder), read by ntfscat;
/// a volume whose MFT mirror a kill cut is repaired by ntfsfix first (on a copy).
fn guest_files(image: &Path, phony: &PhonyWindows, dir: &Path, names: &[&str]) -> Vec<Vec<u8>> {
    let part = dir.join("part.raw");
    fixtures::extract_partition(image, phony.win_offset, phony.win_size, &part);
    let cat = |name: &str| {
        std::process::Command::new("ntfscat")
            .args(["-f", s(&part), &format!("/{CONFIG}/{name}")])
            .output()
            .unwrap()
    };
    if !cat(names[0]).status.success() {
        run("ntfsfix", &[s(&part)]);
    }
    let out = names
        .iter()
        .map(|n| {
            let o = cat(n);
            assert!(
                o.status.success(),
                "ntfscat {n}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o.stdout
        })
        .collect();
    std::fs::remove_file(&part).unwrap();
    out
}

/// `hivexregedit --export` of a hive's whole tree, as lines.
fn export(dir: &Path, hive: &[u8]) -> Vec<String> {
    let path = dir.join("export.hive");
    std::fs::write(&path, hive).unwrap();
    let out = run("hivexregedit", &["--export", s(&path), "\\"]);
    std::fs::remove_file(&path).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What the written DEFAULT must be: Windows 10's recovery of it plus the one
/// value, and nothing else (read by hivexregedit, not by wingold).
fn assert_is_windows_recovery_plus_edit(dir: &Path, written: &[u8], windows: &[u8]) {
    let got = export(dir, written);
    let want = export(dir, windows);
    let added: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    let lost: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    assert!(
        lost.is_empty(),
        "lines of Windows' recovery missing: {lost:?}"
    );
    assert_eq!(added, ["\"wingold\"=dword:00000001"], "{got:#?}");
    assert!(got.iter().any(|l| l == "[\\Key3\\Key3_1]"));
}

fn reg_file(dir: &Path) -> std::path::PathBuf {
    let reg = dir.join("edit.reg");
    std::fs::write(&reg, REG).unwrap();
    reg
}

#[test]
fn inspect_says_what_the_logs_hold() {
    let dir = tempdir();
    let d = dirty_default(dir.path());
    let (code, json, err) = wingold_json("inspect", &[s(&d.phony.image)]);
    assert_eq!(code, Some(0), "{err}");
    let hives = json["windows"]["hives"].as_array().unwrap();
    let default = hives.iter().find(|h| h["name"] == "DEFAULT").unwrap();
    assert_eq!(default["clean"], false);
    let state = &default["log_state"];
    assert_eq!(state["state"], "replayable", "{state}");
    assert_eq!(state["applied"], 4);
    assert_eq!(
        (
            state["first_sequence"].as_u64(),
            state["last_sequence"].as_u64()
        ),
        (Some(2), Some(5))
    );
    let logs = state["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0]["name"], "DEFAULT.LOG1");
    assert_eq!(logs[1]["entries"], 3);
    // SYSTEM's fixture logs (zeros) are not read: SYSTEM is clean.
    let system = hives.iter().find(|h| h["name"] == "SYSTEM").unwrap();
    assert_eq!(system["log_state"]["state"], "clean");

    let text = succeeds(wingold().args(["inspect", s(&d.phony.image)]));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("dirty, brought up to date by its logs: 4 entries applied (sequence 2-5)"),
        "{text}"
    );
}

#[test]
fn inject_replays_the_logs_into_the_new_image() {
    let dir = tempdir();
    let d = dirty_default(dir.path());
    let before = sha256_file(&d.phony.image);
    let out = dir.path().join("out.qcow2");
    let reg = reg_file(dir.path());
    let (code, json, err) = wingold_json(
        "inject",
        &[s(&d.phony.image), "--output", s(&out), "--reg", s(&reg)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sha256_file(&d.phony.image), before, "the input changed");
    let truncated: Vec<&str> = json["logs_truncated"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        truncated.iter().any(|l| l.ends_with("DEFAULT.LOG2")),
        "{json}"
    );
    let replayed = &json["logs_replayed"][0];
    assert_eq!(replayed["entries"], 4, "{json}");
    assert_eq!(
        replayed["logs"],
        serde_json::json!(["DEFAULT.LOG1", "DEFAULT.LOG2"])
    );
    let files = guest_files(
        &out,
        &d.phony,
        dir.path(),
        &["DEFAULT", "DEFAULT.LOG1", "DEFAULT.LOG2"],
    );
    assert_is_windows_recovery_plus_edit(dir.path(), &files[0], &d.windows);
    assert!(
        files[1].is_empty() && files[2].is_empty(),
        "the logs were not emptied"
    );
    assert_qemu_check_clean(&out);
}

#[test]
fn inject_in_place_replays_then_empties_the_logs() {
    let dir = tempdir();
    let d = dirty_default(dir.path());
    let reg = reg_file(dir.path());
    let (code, _, err) = wingold_json(
        "inject",
        &[s(&d.phony.image), "--in-place", "--reg", s(&reg)],
    );
    assert_eq!(code, Some(0), "{err}");
    let files = guest_files(
        &d.phony.image,
        &d.phony,
        dir.path(),
        &["DEFAULT", "DEFAULT.LOG1", "DEFAULT.LOG2"],
    );
    assert_is_windows_recovery_plus_edit(dir.path(), &files[0], &d.windows);
    assert!(files[1].is_empty() && files[2].is_empty());
    // Run again: the hive is clean now, the value already there, nothing written.
    let (code, json, err) = wingold_json(
        "inject",
        &[s(&d.phony.image), "--in-place", "--reg", s(&reg)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["nothing_written"], true, "{json}");
}

#[test]
fn a_dirty_hive_whose_logs_are_gone_is_refused() {
    let dir = tempdir();
    let primary = corpus_log(dir.path(), "NewDirtyHive1/NewDirtyHive");
    let phony = fixtures::phony_windows(
        dir.path(),
        &WIN2K22_X64,
        vec![Entry::File("Windows/System32/config/DEFAULT", primary)],
    );
    let before = sha256_file(&phony.image);
    let out = dir.path().join("never.qcow2");
    let reg = reg_file(dir.path());
    let o = wingold()
        .args([
            "inject",
            s(&phony.image),
            "--output",
            s(&out),
            "--reg",
            s(&reg),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("DEFAULT") && err.contains("no transaction logs"),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(sha256_file(&phony.image), before);
}

/// `inject --in-place --reg` under strace: every pwrite traced into `trace`, or a
/// SIGKILL delivered as the run enters its `kill_at`-th pwrite.
fn traced_inject(
    img: &Path,
    reg: &Path,
    trace: &Path,
    kill_at: Option<usize>,
) -> std::process::Output {
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-o", s(trace), "-e", "trace=pwrite64"]);
    if let Some(n) = kill_at {
        cmd.args(["-e", &format!("inject=pwrite64:signal=SIGKILL:when={n}")]);
    }
    cmd.arg(wingold().get_program())
        .args(["inject", s(img), "--in-place", "--reg", s(reg)]);
    cmd.output()
        .unwrap_or_else(|e| panic!("TEST CANNOT RUN: strace ({e}); install Debian package strace"))
}

#[test]
fn a_kill_never_leaves_logs_that_replay_over_a_half_written_hive() {
    let dir = tempdir();
    let d = dirty_default(dir.path());
    let reg = reg_file(dir.path());
    let trace = dir.path().join("trace.txt");
    let done = dir.path().join("done.qcow2");
    std::fs::copy(&d.phony.image, &done).unwrap();
    let o = traced_inject(&done, &reg, &trace, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let total = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("pwrite64("))
        .count();
    assert!(total > 10, "{total} writes");
    let new = guest_files(&done, &d.phony, dir.path(), &["DEFAULT"]).remove(0);
    let img = dir.path().join("victim.qcow2");
    let (mut as_was, mut as_new, mut visibly_dirty) = (0, 0, 0);
    let points: std::collections::BTreeSet<usize> =
        (1..=total).step_by(3).chain([total, total + 1]).collect();
    for &when in &points {
        std::fs::copy(&d.phony.image, &img).unwrap();
        let at = format!("killed before write {when} of {total}");
        traced_inject(&img, &reg, Path::new("/dev/null"), Some(when));
        let f = guest_files(
            &img,
            &d.phony,
            dir.path(),
            &["DEFAULT", "DEFAULT.LOG1", "DEFAULT.LOG2"],
        );
        let mut hive = f[0].clone();
        let logs = [
            LogFile {
                name: "DEFAULT.LOG1",
                bytes: &f[1],
            },
            LogFile {
                name: "DEFAULT.LOG2",
                bytes: &f[2],
            },
        ];
        match recover("DEFAULT", &mut hive, &logs).unwrap_or_else(|e| panic!("{at}: {e}")) {
            Outcome::Clean => {
                assert!(
                    f[0] == new,
                    "{at}: a clean header over a body that is not the new hive"
                );
                as_new += 1;
            }
            Outcome::Replayed(_) => {
                // Only the untouched original may replay, and then to Windows' own result.
                assert!(
                    f[0] == d.primary,
                    "{at}: the logs replay over a changed body"
                );
                assert!(hive[4096..] == d.windows[4096..], "{at}");
                as_was += 1;
            }
            Outcome::NothingApplies { .. } => {
                let (_, json, _) = wingold_json("inspect", &[s(&img)]);
                let h = json["windows"]["hives"]
                    .as_array()
                    .and_then(|hs| hs.iter().find(|h| h["name"] == "DEFAULT").cloned())
                    .unwrap_or_default();
                assert_eq!(h["log_state"]["state"], "dirty", "{at}: {h}");
                visibly_dirty += 1;
            }
        }
    }
    eprintln!(
        "{} kills over {total} writes: DEFAULT as it was {as_was}, as it should be {as_new}, \
         visibly dirty {visibly_dirty}",
        points.len()
    );
    assert!(
        as_was > 0 && as_new > 0,
        "the kills did not land before and after the hive write"
    );
}
