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

/// Runs wingold with `args` (in `dir`) under `strace -f`; returns the trace of
/// the process that restricted itself (the worker) and of the others (the
/// parent), each as lines.
fn traced(dir: &Path, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let trace = dir.join("trace");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=openat,close,pread64,landlock_restrict_self,seccomp",
            "-o",
        ])
        .arg(&trace)
        .arg(support::profile_dir().join("wingold"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("TEST CANNOT RUN: strace (Debian package strace, make setup)");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&trace).unwrap();
    let worker = trace
        .lines()
        .find(|l| l.contains("landlock_restrict_self(") && l.ends_with("= 0"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{args:?}: no process called landlock_restrict_self"))
        .to_owned();
    let (mine, parent): (Vec<String>, Vec<String>) = trace
        .lines()
        .map(str::to_owned)
        .partition(|l| l.starts_with(&format!("{worker} ")));
    (mine, parent)
}

/// In `mine` (a worker's trace): Landlock, then seccomp, then the first open
/// of `name` for reading.
fn restricted_before_reading(args: &[&str], mine: &[String], name: &str) {
    let at = |pred: &dyn Fn(&str) -> bool| mine.iter().position(|l| pred(l));
    let landlock = at(&|l| l.contains("landlock_restrict_self(")).unwrap();
    let seccomp = at(&|l| l.contains("seccomp(SECCOMP_SET_MODE_FILTER"))
        .unwrap_or_else(|| panic!("{args:?}: no seccomp filter"));
    let first_read = at(&|l| l.contains("openat(") && l.contains(name) && !l.contains("O_PATH"))
        .unwrap_or_else(|| panic!("{args:?}: the worker never opens {name}"));
    assert!(
        landlock < seccomp && seccomp < first_read,
        "{args:?}: {mine:#?}"
    );
}

/// What the parent read of `name`: (offset, length) of each pread64 on a file
/// descriptor it opened on `name`.
fn parent_reads(parent: &[String], name: &str) -> Vec<(u64, u64)> {
    let mut fds = std::collections::BTreeSet::new();
    let mut reads = Vec::new();
    for l in parent {
        let call = l.split_once(' ').map_or("", |(_, c)| c.trim_start());
        let result = call.rsplit_once("= ").map(|(_, r)| r.trim());
        if call.starts_with("openat(") && call.contains(name) && !call.contains("O_PATH") {
            if let Some(fd) = result.and_then(|r| r.parse::<i32>().ok()) {
                fds.insert(fd);
            }
        } else if let Some(args) = call.strip_prefix("close(") {
            if let Some(fd) = args.split(')').next().and_then(|f| f.parse().ok()) {
                fds.remove(&fd);
            }
        } else if let Some(args) = call.strip_prefix("pread64(") {
            let fd: i32 = args.split(',').next().unwrap().parse().unwrap();
            if fds.contains(&fd) {
                // pread64(fd, "…", len, offset) = n
                let mut nums = args[..args.rfind(')').unwrap()]
                    .rsplit(", ")
                    .take(2)
                    .map(|n| n.trim().parse::<u64>().unwrap());
                let (offset, len) = (nums.next().unwrap(), nums.next().unwrap());
                reads.push((offset, len));
            }
        }
    }
    reads
}

/// The parent reads nothing of `name` but its header (4 KiB at offset 0, to
/// find the files it rests on), once or twice.
fn parent_reads_the_header_only(args: &[&str], parent: &[String], name: &str) {
    let reads = parent_reads(parent, name);
    assert!(
        reads.len() <= 2
            && reads
                .iter()
                .all(|&(offset, len)| offset == 0 && len <= 4096),
        "{args:?}: the parent read {name} at (offset, length) {reads:?}"
    );
}

#[test]
fn inspect_confines_its_worker_before_it_reads_the_image() {
    landlock_abi();
    let tmp = tempdir();
    let image = phony(tmp.path());
    let args = ["inspect", "--json", s(&image)];
    let (mine, parent) = traced(tmp.path(), &args);
    let name = image.file_name().unwrap().to_str().unwrap();
    restricted_before_reading(&args, &mine, name);
    // The parent reads the image's header only (to find its backing files).
    parent_reads_the_header_only(&args, &parent, name);
}

/// `inject`, to an overlay and in place, `build` and `clone`: the process that
/// reads the image (and the ISO) restricted itself first; the parent reads no
/// more than the image's header.
#[test]
fn inject_build_and_clone_confine_their_worker_before_they_read_the_image() {
    landlock_abi();
    let tmp = tempdir();
    let dir = tmp.path();
    let w = fixtures::phony_windows(dir, &fixtures::WIN2K22_X64, vec![]);
    fixtures::virtio_iso(dir, "0.1.999", 0);
    let iso = "virtio-win-0.1.999.iso";
    let name = w.image.file_name().unwrap().to_str().unwrap().to_owned();
    let overlay: &[&str] = &["inject", &name, "-o", "out.qcow2", "--profile", "all"];
    let drivers: &[&str] = &[
        "inject",
        &name,
        "-o",
        "drivers.qcow2",
        "--drivers",
        iso,
        "--profile",
        "all",
    ];
    let in_place: &[&str] = &["inject", &name, "--in-place", "--profile", "all"];
    for args in [overlay, drivers, in_place] {
        let (mine, parent) = traced(dir, args);
        restricted_before_reading(args, &mine, &name);
        parent_reads_the_header_only(args, &parent, &name);
        if args.contains(&iso) {
            restricted_before_reading(args, &mine, iso);
            assert!(
                !parent
                    .iter()
                    .any(|l| l.contains("openat(") && l.contains(iso)),
                "{args:?}: the parent opened the ISO"
            );
        }
    }
    build_config(dir, &w.image, iso);
    let args: &[&str] = &["build", "-c", "wingold.toml"];
    let (mine, parent) = traced(dir, args);
    restricted_before_reading(args, &mine, "phony.qcow2");
    parent_reads_the_header_only(args, &parent, "phony.qcow2");
    assert!(dir.join("golden/win.qcow2").exists());
    let args: &[&str] = &["clone", "golden/win.qcow2", "--id", "1", "--dir", "vms"];
    let (mine, parent) = traced(dir, args);
    restricted_before_reading(args, &mine, "win.qcow2");
    parent_reads_the_header_only(args, &parent, "win.qcow2");
    assert!(dir.join("vms/vm_1.qcow2").exists());
}

/// `wingold.toml` in `dir`: the base `image` (copied to base/), the ISO `iso`
/// beside it, the golden at golden/win.qcow2.
fn build_config(dir: &Path, image: &Path, iso: &str) {
    std::fs::create_dir(dir.join("base")).unwrap();
    std::fs::copy(image, dir.join("base/phony.qcow2")).unwrap();
    std::fs::write(
        dir.join("wingold.toml"),
        format!(
            "[virtio_win]\niso = \"{iso}\"\ncache = \"cache\"\n\n\
             [base]\nimage = \"base/phony.qcow2\"\n\n\
             [golden]\noutput = \"golden/win.qcow2\"\nprofiles = [\"all\"]\n"
        ),
    )
    .unwrap();
}

/// A build whose worker panics (test hook): the panic's one line, exit 1, no
/// version linked and no temporary file left in the output folder.
#[test]
fn a_worker_that_panics_is_one_line_and_leaves_nothing() {
    landlock_abi();
    let tmp = tempdir();
    let dir = tmp.path();
    let w = fixtures::phony_windows(dir, &fixtures::WIN2K22_X64, vec![]);
    fixtures::virtio_iso(dir, "0.1.999", 0);
    build_config(dir, &w.image, "virtio-win-0.1.999.iso");
    let out = wingold()
        .env("WINGOLD_TEST_WORKER", "panic")
        .args(["build", "-c", "wingold.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("no known checksum"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("internal error") && lines[0].contains("WINGOLD_TEST_WORKER"),
        "{err}"
    );
    let left: Vec<String> = listing(&dir.join("golden"))
        .into_iter()
        .filter(|n| !n.ends_with(".wingold-lock"))
        .collect();
    assert!(left.is_empty(), "left in golden/: {left:?}");
}

/// A worker that crashes while it writes the output (SIGABRT, delivered by
/// strace at its fifth pwrite): the parent says so in one line, exits 1, and
/// leaves neither the output nor its temporary file.
#[test]
fn a_worker_that_crashes_leaves_one_line_and_no_output() {
    landlock_abi();
    let tmp = tempdir();
    let dir = tmp.path();
    let image = phony(dir);
    let before: Vec<_> = listing(dir);
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64"])
        .args(["-e", "inject=pwrite64:signal=SIGABRT:when=5"])
        .arg(support::profile_dir().join("wingold"))
        .args(["inject", s(&image), "-o", "out.qcow2", "--profile", "all"])
        .current_dir(dir)
        .output()
        .expect("TEST CANNOT RUN: strace (Debian package strace, make setup)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("out.qcow2: not written: the worker reading the image was killed by SIGABRT"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(listing(dir), before, "the crash left files behind");
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `kill PID` (SIGTERM) to the wingold a user started: it reaches the worker,
/// which ends by it, and wingold itself ends by SIGTERM, as it would have
/// without a worker.
#[test]
fn a_signal_to_wingold_reaches_its_worker() {
    use std::os::unix::process::ExitStatusExt;
    landlock_abi();
    let tmp = tempdir();
    let image = phony(tmp.path());
    let (mut parent, worker) = sleeping_inspect(&image);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(parent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let status = parent.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "wingold waited out its sleeping worker instead of passing the signal on"
    );
    assert!(gone(&worker), "the worker {worker} outlived the signal");
}

/// `wingold inspect IMAGE` whose worker sleeps a minute (test hook) before it
/// reads: the running wingold and its worker's pid.
fn sleeping_inspect(image: &Path) -> (std::process::Child, String) {
    let parent = wingold()
        .env("WINGOLD_TEST_WORKER", "sleep")
        .args(["inspect"])
        .arg(image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let worker = worker_of(parent.id());
    (parent, worker)
}

/// The pid of `parent`'s first child, waited for up to 10 s.
fn worker_of(parent: u32) -> String {
    let children = format!("/proc/{parent}/task/{parent}/children");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            return pid.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no worker started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether process `pid` is gone (or a zombie waiting for init), waited for up
/// to 5 s.
fn gone(pid: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
    {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
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
    let (mut parent, worker) = sleeping_inspect(&image);
    parent.kill().unwrap();
    parent.wait().unwrap();
    assert!(gone(&worker), "the worker {worker} outlived its parent");
}

/// `WINGOLD_UNCONFINED=1` (for measuring what confinement costs, or a
/// debugger): the work runs in wingold's own process, no worker restricts
/// itself, and wingold says so once.
#[test]
fn unconfined_on_request_and_said_once() {
    let tmp = tempdir();
    let image = phony(tmp.path());
    let trace = tmp.path().join("trace");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=fork,clone,clone3,landlock_restrict_self,seccomp",
            "-o",
        ])
        .arg(&trace)
        .arg(support::profile_dir().join("wingold"))
        .env("WINGOLD_UNCONFINED", "1")
        .args(["inject", "--profile", "all", "-o", "out.qcow2"])
        .arg(&image)
        .current_dir(tmp.path())
        .output()
        .expect("TEST CANNOT RUN: strace (Debian package strace, make setup)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("WINGOLD_UNCONFINED is set").count(), 1, "{err}");
    let trace = std::fs::read_to_string(&trace).unwrap();
    assert!(!trace.contains("landlock_restrict_self("), "{trace}");
    assert!(!trace.contains("SECCOMP_SET_MODE_FILTER"), "{trace}");
    assert!(tmp.path().join("out.qcow2").exists());
}
