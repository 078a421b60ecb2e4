//! `inject --in-place` interrupted at random moments. Ctrl-C and `kill` wait for the
//! write to finish: the image is as it was or as it should be, and clean. SIGKILL
//! cannot wait: every hive is left as it was, as it should be, or marked dirty —
//! never a clean header over a torn body —, an NTFS volume whose two copies of its
//! first MFT records were cut apart is marked dirty (or complete) and repairable, and
//! qemu-img finds no corruption.

use wingold_test_support as support;

use serde_json::Value;
use std::path::Path;
use support::fixtures::{self, WIN2K22_X64};
use support::*;

const HIVES: [&str; 2] = ["SYSTEM", "SOFTWARE"];

/// What ntfs-3g's own tools find on the Windows volume of an image.
struct Seen {
    /// The hives' bytes, as ntfscat reads them (after ntfsfix, when torn).
    hives: Vec<Vec<u8>>,
    /// Whether the volume is marked dirty, as `$MFT` (what Windows reads) says.
    dirty: bool,
    /// `$MFTMirr` disagreed with `$MFT`: ntfs-3g would not mount the volume until
    /// ntfsfix repaired it (done here on a copy of the partition).
    torn: bool,
}

fn seen_in(image: &Path, phony: &fixtures::PhonyWindows, dir: &Path) -> Seen {
    let part = dir.join("part.raw");
    fixtures::extract_partition(image, phony.win_offset, phony.win_size, &part);
    let raw = std::fs::read(&part).unwrap();
    let dirty = fixtures::volume_is_dirty(&raw);
    let cat = |h: &str| {
        std::process::Command::new("ntfscat")
            .args(["-f", s(&part), &format!("/Windows/System32/config/{h}")])
            .output()
            .unwrap()
    };
    let first = cat(HIVES[0]);
    let why = String::from_utf8_lossy(&first.stderr).into_owned();
    let torn = !first.status.success();
    if torn {
        assert!(
            why.contains("$MFTMirr does not match $MFT"),
            "ntfs-3g cannot read the volume, and not for a cut-off mirror write: {why}"
        );
        run("ntfsfix", &[s(&part)]);
    }
    let hives = HIVES
        .iter()
        .map(|h| {
            let out = cat(h);
            assert!(
                out.status.success(),
                "ntfscat {h}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        })
        .collect();
    std::fs::remove_file(&part).unwrap();
    Seen { hives, dirty, torn }
}

/// What the regf base block says: (sequence numbers equal, checksum right).
fn header_is_clean(hive: &[u8]) -> bool {
    if hive.len() < 4096 || &hive[..4] != b"regf" {
        return false;
    }
    let dw = |at: usize| u32::from_le_bytes(hive[at..at + 4].try_into().unwrap());
    let xor = (0..508).step_by(4).fold(0u32, |a, at| a ^ dw(at));
    let sum = match xor {
        0 => 1,
        0xffff_ffff => 0xffff_fffe,
        x => x,
    };
    dw(4) == dw(8) && dw(508) == sum
}

/// `wingold inject --in-place --profile all` on `img` under strace, tracing its
/// pwrites into `trace` (a file, or /dev/null), with strace's `extra` options.
fn inject_under_strace(img: &Path, trace: &Path, extra: &[String]) -> std::process::Output {
    let wingold = wingold();
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", s(trace), "-e", "trace=pwrite64"])
        .args(extra)
        .arg(wingold.get_program())
        .args(["inject", s(img), "--in-place", "--profile", "all"])
        .output();
    out.unwrap_or_else(|e| panic!("TEST CANNOT RUN: strace ({e}); install Debian package strace"))
}

/// `wingold inject` under strace, which delivers `signal` as the run enters its
/// `when`-th pwrite (the writes before it done, that one not yet).
fn inject_signalled(img: &Path, signal: &str, when: usize) -> std::process::Output {
    let inject = format!("inject=pwrite64:signal={signal}:when={when}");
    inject_under_strace(img, Path::new("/dev/null"), &["-e".into(), inject])
}

/// One pwrite of a run: its length and its first bytes, as strace prints them.
#[derive(PartialEq)]
struct Write {
    len: usize,
    head: String,
}

/// Every pwrite a whole in-place run makes, in order (the run is done on `img`).
fn writes_of_a_run(img: &Path, dir: &Path) -> Vec<Write> {
    let trace = dir.join("trace.txt");
    let out = inject_under_strace(img, &trace, &[]);
    assert!(
        out.status.success(),
        "the traced run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut pids = std::collections::BTreeSet::new();
    let writes = text
        .lines()
        .filter_map(|line| {
            // `PID  call(…)`, the PID padded to a width.
            let (pid, call) = line.split_once(' ')?;
            let call = call.trim_start();
            let args = call.strip_prefix("pwrite64(")?;
            pids.insert(pid.to_owned());
            // fd, "bytes"[...], len, offset) = n — the bytes may hold \" and commas.
            let quoted = &args[args.find('"')? + 1..];
            let mut escaped = false;
            let close = quoted.char_indices().find_map(|(i, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end.then_some(i)
            })?;
            let rest = quoted[close + 1..].trim_start_matches("...");
            let len = rest.trim_start_matches(", ").split(',').next()?.trim();
            Some(Write {
                len: len.parse().ok()?,
                head: quoted[..close].to_owned(),
            })
        })
        .collect::<Vec<_>>();
    assert!(
        pids.len() == 1 && !writes.is_empty(),
        "expected the writes of one thread, found {} writes from {pids:?}",
        writes.len()
    );
    writes
}

/// Where a kill cuts NTFS's two copies of an MFT record apart: the 1-based number of
/// each write that repeats the 1 KiB `FILE` record the write before it made (the
/// `$MFTMirr` copy of a record just written to `$MFT`).
fn mirror_writes(writes: &[Write]) -> Vec<usize> {
    (1..writes.len())
        .filter(|&i| {
            writes[i].len == 1024
                && writes[i].head.starts_with("FILE")
                && writes[i] == writes[i - 1]
        })
        .map(|i| i + 1)
        .collect()
}

/// The phony Windows, its hives before and after a whole run, and that run's writes.
struct Baseline {
    phony: fixtures::PhonyWindows,
    old: Vec<Vec<u8>>,
    new: Vec<Vec<u8>>,
    writes: Vec<Write>,
}

fn baseline(dir: &Path) -> Baseline {
    let phony = fixtures::phony_windows(dir, &WIN2K22_X64, vec![]);
    let old = seen_in(&phony.image, &phony, dir).hives;
    let done = dir.join("done.qcow2");
    std::fs::copy(&phony.image, &done).unwrap();
    let writes = writes_of_a_run(&done, dir);
    let new = seen_in(&done, &phony, dir).hives;
    for i in 0..HIVES.len() {
        assert_ne!(old[i], new[i], "{} did not change", HIVES[i]);
    }
    Baseline {
        phony,
        old,
        new,
        writes,
    }
}

fn qemu_img_check_passes(image: &Path, at: &str) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", s(image)])
        .output()
        .unwrap();
    // 0: clean; 3: leaked clusters only (allocated, not yet referenced).
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{at}: qemu-img check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGKILL before every fourth write of a whole run, before the last, after it, and
/// between each pair of MFT record copies.
#[test]
fn killed_in_place_injects_never_leave_a_clean_looking_torn_hive() {
    let dir = tempdir();
    let Baseline {
        phony,
        old,
        new,
        writes,
    } = baseline(dir.path());
    let mirrors = mirror_writes(&writes);
    assert!(
        !mirrors.is_empty(),
        "no $MFT/$MFTMirr pair of writes in the trace: this test no longer cuts one"
    );
    let total = writes.len();
    let mut points: std::collections::BTreeSet<usize> = (1..=total).step_by(4).collect();
    points.extend([total, total + 1]);
    points.extend(&mirrors);
    let img = dir.path().join("victim.qcow2");
    let (mut as_was, mut as_new, mut dirty, mut torn) = (0, 0, 0, 0);
    for &when in &points {
        std::fs::copy(&phony.image, &img).unwrap();
        let at = format!("killed before write {when} of {total}");
        let out = inject_signalled(&img, "SIGKILL", when);
        assert_eq!(
            out.status.success(),
            when > total,
            "{at}: {:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        qemu_img_check_passes(&img, &at);
        let now = seen_in(&img, &phony, dir.path());
        let report = wingold()
            .args(["inspect", "--json", s(&img)])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&report.stdout).unwrap_or(Value::Null);
        if now.torn {
            // Cut between the two copies of an MFT record. Windows mounts by $MFT:
            // either it says dirty (chkdsk runs at boot and settles the mirror), or
            // the cut came after the last write, in clearing the flag.
            assert!(
                now.dirty || now.hives == new,
                "{at}: the mirror is torn, $MFT says clean, and the hives are not complete"
            );
            let state = report["partitions"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["start"] == phony.win_offset))
                .map(|p| p["ntfs_state"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            assert!(
                state.starts_with("needs repair"),
                "{at}: the volume is torn but inspect says {state:?}"
            );
            torn += 1;
        } else if mirrors.contains(&when) {
            panic!("{at}: cut between $MFT and $MFTMirr, yet ntfs-3g mounts the volume");
        }
        for (i, name) in HIVES.iter().enumerate() {
            if header_is_clean(&now.hives[i]) {
                assert!(
                    now.hives[i] == old[i] || now.hives[i] == new[i],
                    "{at}: {name} has a clean header over a body that is neither the old \
                     nor the new hive"
                );
                if now.hives[i] == old[i] {
                    as_was += 1;
                } else {
                    as_new += 1;
                }
            } else {
                // Said so: by inspect, in the hive's state, or, when the torn hive
                // keeps Windows from being read at all, in why no Windows was found;
                // or by the volume, which then needs repair before anything reads it.
                let seen = report["windows"]["hives"]
                    .as_array()
                    .and_then(|hs| hs.iter().find(|h| h["name"] == *name))
                    .cloned()
                    .unwrap_or(Value::Null);
                let why = report["no_windows_reason"].as_str().unwrap_or("");
                assert!(
                    seen["clean"] == false
                        || (why.starts_with(name) && why.contains("needs repair"))
                        || (now.torn && now.dirty),
                    "{at}: {name} is torn but inspect does not say so: {report}"
                );
                dirty += 1;
            }
        }
    }
    eprintln!(
        "{} kills over {total} writes: hives as they were {as_was}, as they should be \
         {as_new}, marked dirty {dirty}; volumes cut between $MFT and $MFTMirr {torn}",
        points.len()
    );
    assert!(
        as_was > 0 && as_new > 0 && dirty > 0,
        "the kills did not land before, inside and after the hive writes"
    );
}

/// Ctrl-C, `kill` or a closed terminal during an in-place inject: at whatever write
/// the signal comes, the write finishes first, so the image is exactly as it should
/// be, with a clean volume, and the process still ends by the signal it was sent.
#[test]
fn interrupted_in_place_injects_finish_their_write_first() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempdir();
    let Baseline {
        phony, new, writes, ..
    } = baseline(dir.path());
    let total = writes.len();
    let img = dir.path().join("victim.qcow2");
    let signals = [("SIGINT", 2), ("SIGTERM", 15), ("SIGHUP", 1)];
    let points: Vec<usize> = (1..=total).step_by(9).chain([total]).collect();
    for (round, &when) in points.iter().enumerate() {
        std::fs::copy(&phony.image, &img).unwrap();
        let (name, number) = signals[round % signals.len()];
        let at = format!("{name} at write {when} of {total}");
        let out = inject_signalled(&img, name, when);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(number),
            "{at}: the run did not end by its signal: {stderr}"
        );
        assert!(
            stderr.contains("finishing the write in place first"),
            "{at}: no word of the wait: {stderr}"
        );
        qemu_img_check_passes(&img, &at);
        let now = seen_in(&img, &phony, dir.path());
        assert!(
            !now.torn && !now.dirty,
            "{at}: the volume is left torn or dirty: {stderr}"
        );
        assert!(now.hives == new, "{at}: the hives are not the new ones");
    }
    eprintln!(
        "{} signals over {total} writes: every image as it should be",
        points.len()
    );
}

/// The next run clears what a killed one left: its temporary output beside the
/// target, and its hive copies in the temporary folder — and nothing of a live run.
#[test]
fn stale_temporary_files_of_killed_runs_are_cleared() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // A pid that is certainly gone: a child that ran and was reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let live = std::process::id();
    let out = dir.path().join("out.qcow2");
    let stale = [
        dir.path().join(format!(".out.qcow2.wingold-tmp.{dead}")),
        tmp.join(format!("wingold-hive-{dead}-Ab12Cd")),
    ];
    let kept = [
        dir.path().join(format!(".out.qcow2.wingold-tmp.{live}")),
        tmp.join(format!("wingold-hive-{live}-Ef34Gh")),
        dir.path().join(format!(".other.qcow2.wingold-tmp.{dead}")),
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(f, b"left over").unwrap();
    }
    succeeds(wingold().env("TMPDIR", &tmp).args([
        "inject",
        s(&phony.image),
        "--output",
        s(&out),
        "--profile",
        "all",
    ]));
    for f in &stale {
        assert!(!f.exists(), "{} is still there", f.display());
    }
    for f in &kept {
        assert!(f.exists(), "{} was removed", f.display());
    }
    // And the run itself leaves no hive copy behind.
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(&live.to_string()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
