//! The confined worker, watched from outside: `strace -f` shows the process that
//! parses the image restrict itself (Landlock, then a seccomp filter) before it
//! opens the image to read it; inside, a read outside its policy is refused
//! (EACCES) and a system call outside its allow-list kills it (SIGSYS), which the
//! parent reports in one line with exit 1. Test hooks (feature `test-hooks`)
//! make the worker try both.

use wingold_test_support as support;

use std::path::Path;
use support::*;

fn phony(dir: &Path) -> std::path::PathBuf {
    fixtures::phony_windows(dir, &fixtures::WIN2K22_X64, vec![]).image
}

/// Landlock is in this kernel (the machines tests run on have it since 5.13).
fn landlock_abi() -> i64 {
    // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    #[allow(unsafe_code)]
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) };
    assert!(
        abi > 0,
        "TEST CANNOT RUN: this kernel has no Landlock (landlock_create_ruleset says {abi})"
    );
    abi
}

#[test]
fn inspect_confines_its_worker_before_it_reads_the_image() {
    landlock_abi();
    let tmp = tempdir();
    let image = phony(tmp.path());
    let trace = tmp.path().join("trace");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=openat,pread64,landlock_restrict_self,seccomp",
            "-o",
        ])
        .arg(&trace)
        .arg(support::profile_dir().join("wingold"))
        .args(["inspect", "--json"])
        .arg(&image)
        .output()
        .expect("TEST CANNOT RUN: strace (Debian package strace, make setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["windows"]["product_name"].is_string(), "{json}");
    let trace = std::fs::read_to_string(&trace).unwrap();
    let name = image.file_name().unwrap().to_str().unwrap();
    // The worker: the process that restricted itself.
    let worker = trace
        .lines()
        .find(|l| l.contains("landlock_restrict_self(") && l.ends_with("= 0"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a process called landlock_restrict_self")
        .to_owned();
    let mine: Vec<&str> = trace
        .lines()
        .filter(|l| l.starts_with(&format!("{worker} ")))
        .collect();
    let at = |pred: &dyn Fn(&str) -> bool| mine.iter().position(|l| pred(l));
    let landlock = at(&|l| l.contains("landlock_restrict_self(")).unwrap();
    let seccomp = at(&|l| l.contains("seccomp(SECCOMP_SET_MODE_FILTER")).expect("a seccomp filter");
    let first_read = at(&|l| l.contains("openat(") && l.contains(name) && !l.contains("O_PATH"))
        .expect("the worker opens the image");
    assert!(landlock < seccomp && seccomp < first_read, "{mine:#?}");
    // The parent reads the image's header only (to find its backing files).
    let parent: Vec<&str> = trace
        .lines()
        .filter(|l| !l.starts_with(&format!("{worker} ")))
        .collect();
    let opened = parent
        .iter()
        .position(|l| l.contains("openat(") && l.contains(name))
        .expect("the parent opens the image for its header");
    let parent_reads = parent[opened..]
        .iter()
        .filter(|l| l.contains("pread64("))
        .count();
    assert!(
        parent_reads <= 2,
        "the parent read the image {parent_reads} times"
    );
}

#[test]
fn the_worker_may_not_read_what_its_policy_leaves_out() {
    landlock_abi();
    let tmp = tempdir();
    let image = phony(tmp.path());
    let secret = tempdir();
    std::fs::write(secret.path().join("credentials"), "s3cret").unwrap();
    for (path, allowed) in [
        (secret.path().join("credentials"), false),
        (Path::new("/etc/passwd").to_owned(), false),
        // Beside the image: where manifests and clone records are.
        (image.clone(), true),
    ] {
        let out = wingold()
            .env("WINGOLD_TEST_WORKER", format!("read:{}", path.display()))
            .args(["inspect"])
            .arg(&image)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let said = format!("worker: {}: ", path.display());
        let line = err.lines().find(|l| l.contains(&said)).expect(&err);
        if allowed {
            assert!(line.ends_with(": read"), "{line}");
        } else {
            assert!(line.contains("Permission denied"), "{line}");
        }
    }
}

#[test]
fn a_call_outside_the_allow_list_kills_the_worker_and_the_parent_says_so() {
    landlock_abi();
    let tmp = tempdir();
    let image = phony(tmp.path());
    let out = wingold()
        .env("WINGOLD_TEST_WORKER", "connect")
        .args(["inspect"])
        .arg(&image)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(!err.contains("connect returned"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("killed by SIGSYS"), "{err}");
}

/// A worker whose parent is killed stops too, instead of reading on with no one
/// to report to.
#[test]
fn a_worker_dies_with_its_parent() {
    landlock_abi();
    let tmp = tempdir();
    let image = phony(tmp.path());
    let mut parent = wingold()
        .env("WINGOLD_TEST_WORKER", "sleep")
        .args(["inspect"])
        .arg(&image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", parent.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let worker = loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            break pid.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no worker started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // Gone, or a zombie waiting for init to reap it.
    while std::fs::read_to_string(format!("/proc/{worker}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker {worker} outlived its parent"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
