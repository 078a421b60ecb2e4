//! `inject --in-place` killed with SIGKILL at random moments: every hive is left as
//! it was, as it should be, or marked dirty (inspect says it needs repair) — never a
//! clean header over a torn body — and qemu-img finds no corruption.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Instant;
use support::fixtures::{self, WIN2K22_X64};
use support::*;

const HIVES: [&str; 2] = ["SYSTEM", "SOFTWARE"];

/// The hives' bytes as ntfs-3g's own ntfscat reads them from the image.
fn hives_of(image: &Path, phony: &fixtures::PhonyWindows, dir: &Path) -> Vec<Vec<u8>> {
    let part = dir.join("part.raw");
    fixtures::extract_partition(image, phony.win_offset, phony.win_size, &part);
    let out = HIVES
        .iter()
        .map(|h| {
            run(
                "ntfscat",
                &["-f", s(&part), &format!("/Windows/System32/config/{h}")],
            )
            .stdout
        })
        .collect();
    std::fs::remove_file(&part).unwrap();
    out
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

fn qemu_check_code(image: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", s(image)])
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn killed_in_place_injects_never_leave_a_clean_looking_torn_hive() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let inject = |img: &Path| {
        let mut c = wingold();
        c.args(["inject", s(img), "--in-place", "--profile", "all"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let old = hives_of(&phony.image, &phony, dir.path());
    // The finished result, and how long a whole run takes.
    let done = dir.path().join("done.qcow2");
    std::fs::copy(&phony.image, &done).unwrap();
    let t = Instant::now();
    assert!(inject(&done).status().unwrap().success());
    let span = t.elapsed();
    let new = hives_of(&done, &phony, dir.path());
    for i in 0..HIVES.len() {
        assert_ne!(old[i], new[i], "{} did not change", HIVES[i]);
    }

    let img = dir.path().join("victim.qcow2");
    let rounds = 50;
    let delays = pattern(7, rounds);
    let (mut as_was, mut as_new, mut dirty, mut finished) = (0, 0, 0, 0);
    for (round, delay) in delays.iter().enumerate() {
        std::fs::copy(&phony.image, &img).unwrap();
        // Spread the kills over the whole run, and a little past it.
        let at = span.mul_f64((*delay as f64) / 255.0 * 1.1);
        let mut child = inject(&img).spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        if child.wait().unwrap().success() {
            finished += 1;
        }
        let (code, text) = qemu_check_code(&img);
        // 0: clean; 3: leaked clusters only (allocated, not yet referenced).
        assert!(
            matches!(code, Some(0) | Some(3)),
            "round {round} (killed after {at:?}): qemu-img check: {text}"
        );
        let now = hives_of(&img, &phony, dir.path());
        let report = wingold()
            .args(["inspect", "--json", s(&img)])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&report.stdout).unwrap_or(Value::Null);
        for (i, name) in HIVES.iter().enumerate() {
            if header_is_clean(&now[i]) {
                assert!(
                    now[i] == old[i] || now[i] == new[i],
                    "round {round} (killed after {at:?}): {name} has a clean header over \
                     a body that is neither the old nor the new hive"
                );
                if now[i] == old[i] {
                    as_was += 1;
                } else {
                    as_new += 1;
                }
            } else {
                // inspect says so: in the hive's state, or, when the torn hive keeps
                // Windows from being read at all, in why no Windows was found.
                let seen = report["windows"]["hives"]
                    .as_array()
                    .and_then(|hs| hs.iter().find(|h| h["name"] == *name))
                    .cloned()
                    .unwrap_or(Value::Null);
                let why = report["no_windows_reason"].as_str().unwrap_or("");
                assert!(
                    seen["clean"] == false
                        || (why.starts_with(name) && why.contains("needs repair")),
                    "round {round}: {name} is torn but inspect does not say so: {report}"
                );
                dirty += 1;
            }
        }
    }
    eprintln!(
        "{rounds} kills over {span:?}: hives as they were {as_was}, as they should be \
         {as_new}, marked dirty {dirty}; runs that finished first {finished}"
    );
    assert!(
        as_was > 0 && as_new > 0,
        "the kills did not land both before and after the writes"
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
