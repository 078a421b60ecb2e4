//! Helpers shared by the integration tests: running the external tools that build
//! fixtures and check our output, and deterministic test data.
//!
//! A missing tool is a loud failure that names the package to install (`make test`
//! installs them all), never a silent pass.
//!
//! A dev-only crate (`wingold-test-support`), built once for every test, bench
//! and example that uses it.

pub mod fixtures;
pub mod golden;
pub mod http;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian package that provides each external tool the tests use.
const TOOL_PACKAGES: &[(&str, &str)] = &[
    ("qemu-img", "qemu-utils"),
    ("qemu-io", "qemu-utils"),
    ("sfdisk", "fdisk"),
    ("sgdisk", "gdisk"),
    ("mkntfs", "ntfs-3g"),
    ("genisoimage", "genisoimage"),
    ("wimcapture", "wimtools"),
    ("wimappend", "wimtools"),
    ("wiminfo", "wimtools"),
    ("wimexport", "wimtools"),
    ("osinfo-install-script", "libosinfo-bin"),
];

/// The file `inside` (e.g. `/autounattend.xml`) of the ISO `iso`, extracted by
/// xorriso beside it as `iso` with the extension `xml`, as text.
pub fn text_in_iso(iso: &Path, inside: &str) -> String {
    let out = iso.with_extension("xml");
    let (iso_arg, out_arg) = (iso.to_str().unwrap(), out.to_str().unwrap());
    run(
        "xorriso",
        &[
            "-osirrox", "on", "-indev", iso_arg, "-extract", inside, out_arg,
        ],
    );
    std::fs::read_to_string(out).unwrap()
}

/// Runs `tool args…`, panicking with its stderr when it fails.
pub fn run(tool: &str, args: &[&str]) -> Output {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        let pkg = TOOL_PACKAGES
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, p)| *p)
            .unwrap_or("?");
        panic!("TEST CANNOT RUN: `{tool}` is not runnable ({e}); install Debian package {pkg} (make setup)")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run_json(tool: &str, args: &[&str]) -> serde_json::Value {
    let out = run(tool, args);
    serde_json::from_slice(&out.stdout).expect("tool printed JSON")
}

/// The repository's top folder.
pub fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

/// The folder of the cargo profile this process was built in (`target/release`):
/// tests and benches run from its `deps/`, examples from its `examples/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test binary lives two folders below the target folder")
        .to_owned()
}

/// The wingold binary cargo built beside this test (cargo builds a package's
/// binaries before its integration tests and benches).
pub fn wingold() -> Command {
    let bin = profile_dir().join("wingold");
    assert!(
        bin.is_file(),
        "TEST CANNOT RUN: {} is missing; run the tests through cargo (make test)",
        bin.display()
    );
    Command::new(bin)
}

/// Runs `cmd`, failing the test with its stderr unless it succeeds.
pub fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?} does not start: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` (stdin closed, stdout dropped) for at most `limit`: its exit code
/// (None when it had to be killed: it hung), its stderr, the time it took.
pub fn run_bounded(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> (Option<i32>, String, std::time::Duration) {
    use std::io::Read;
    use std::process::Stdio;
    let start = std::time::Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err, start.elapsed())
}

/// `wingold SUB ARGS… --json`: its exit code, its JSON output (Null when stdout is
/// not JSON) and its stderr.
pub fn wingold_json(sub: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = wingold()
        .arg(sub)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read file to hash");
    format!("{:x}", Sha256::digest(&bytes))
}

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A raw file of `size` bytes filled with `pattern(seed)`.
pub fn write_pattern_file(path: &Path, seed: u64, size: usize) -> Vec<u8> {
    let data = pattern(seed, size);
    std::fs::write(path, &data).expect("write pattern file");
    data
}

/// Converts any image to raw with qemu-img (flattening its backing chain) and returns
/// the bytes: qemu's own view of the disk.
pub fn qemu_view(image: &Path, dir: &Path) -> Vec<u8> {
    let raw = dir.join(format!(
        "{}.qemu-view.raw",
        image.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&raw);
    run("qemu-img", &["convert", "-O", "raw", s(image), s(&raw)]);
    let bytes = std::fs::read(&raw).expect("read converted image");
    std::fs::remove_file(&raw).unwrap();
    bytes
}

/// `qemu-img check` must find nothing wrong.
pub fn assert_qemu_check_clean(image: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", s(image)])
        .output()
        .expect("TEST CANNOT RUN: qemu-img missing (Debian qemu-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("No errors were found"),
        "qemu-img check {}: {text}{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wingold-test")
        .tempdir()
        .expect("create temp dir")
}

pub fn path_in(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

/// A file of the corpus's `logs/` folder (e.g. `NewDirtyHive1/NewDirtyHive.LOG1`),
/// decompressed.
pub fn corpus_log(dir: &Path, path: &str) -> Vec<u8> {
    std::fs::create_dir_all(dir.join("logs").join(path).parent().unwrap()).unwrap();
    let out = corpus_hive(dir, &format!("logs/{path}"));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(out).unwrap();
    bytes
}

/// A hive from the shared corpus (`../shared/corpus` or `$WINGOLD_CORPUS`),
/// decompressed into `dir`. Missing corpus: a loud failure naming where to put it.
pub fn corpus_hive(dir: &Path, name: &str) -> PathBuf {
    let root = std::env::var_os("WINGOLD_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/corpus"));
    let xz = root.join(format!("{name}.xz"));
    assert!(
        xz.exists(),
        "TEST CANNOT RUN: the hive corpus is missing ({}); set WINGOLD_CORPUS to the folder holding {name}.xz",
        xz.display()
    );
    let out = dir.join(name);
    let data = run("xz", &["-dc", s(&xz)]).stdout;
    std::fs::write(&out, data).unwrap();
    out
}
