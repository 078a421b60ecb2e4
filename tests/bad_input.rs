//! Bad input: every case is one line on stderr naming the file and the reason,
//! exit code 2, no panic, and nothing written.

use wingold_test_support as support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::*;
use wingold::error::{Classify, Kind};
use wingold::image::{self, Access, Error};

/// Snapshot of a folder: every file's name and sha256.
fn folder_state(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let h = sha256_file(&p);
            (p, h)
        })
        .collect();
    v.sort();
    v
}

/// Runs `wingold inspect IMAGE` and checks the bad-input contract; returns stderr.
fn inspect_refuses(image: &Path) -> String {
    let dir = image.parent().unwrap();
    let before = folder_state(dir);
    let out = wingold().args(["inspect", s(image)]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {}: {err}",
        image.display()
    );
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("wingold: "), "{err}");
    assert!(err.contains(s(image)), "the file is not named: {err}");
    assert!(out.stdout.is_empty(), "printed a result anyway");
    assert_eq!(folder_state(dir), before, "something was written");
    err
}

fn qcow2(dir: &tempfile::TempDir, name: &str, opts: &[&str]) -> PathBuf {
    let p = path_in(dir, name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[s(&p), "64M"]);
    run("qemu-img", &args);
    p
}

/// Sets bits in the qcow2 header's incompatible-features field (offset 72).
fn set_incompatible_bits(path: &Path, bits: u64) {
    let mut b = std::fs::read(path).unwrap();
    let cur = u64::from_be_bytes(b[72..80].try_into().unwrap());
    b[72..80].copy_from_slice(&(cur | bits).to_be_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn missing_file_is_bad_input() {
    let dir = tempdir();
    let err = inspect_refuses(&path_in(&dir, "nope.qcow2"));
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn empty_file_is_refused() {
    let dir = tempdir();
    let p = path_in(&dir, "empty.img");
    std::fs::write(&p, b"").unwrap();
    assert!(inspect_refuses(&p).contains("empty"));
}

#[test]
fn non_image_file_is_refused() {
    let dir = tempdir();
    let p = path_in(&dir, "notes.txt");
    std::fs::write(&p, "these are not the sectors you are looking for\n").unwrap();
    assert!(inspect_refuses(&p).contains("not a qcow2 image"));
}

#[test]
fn foreign_format_is_named() {
    let dir = tempdir();
    let p = path_in(&dir, "disk.vmdk");
    run("qemu-img", &["create", "-q", "-f", "vmdk", s(&p), "16M"]);
    assert!(inspect_refuses(&p).contains("VMDK"));
}

#[test]
fn disk_without_partition_table_is_refused() {
    let dir = tempdir();
    let p = path_in(&dir, "blank.raw");
    run("truncate", &["-s", "8M", s(&p)]);
    assert!(inspect_refuses(&p).contains("no partition table"));
}

#[test]
fn qcow2_truncated_before_its_tables_is_damaged() {
    let dir = tempdir();
    let src = path_in(&dir, "src.raw");
    write_pattern_file(&src, 9, 4 << 20);
    let p = path_in(&dir, "cut.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&src), s(&p)]);
    std::fs::remove_file(&src).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(100_000).unwrap();
    assert!(inspect_refuses(&p).contains("truncated"));
}

#[test]
fn qcow2_truncated_inside_its_data_is_damaged() {
    let dir = tempdir();
    let raw = path_in(&dir, "parts.raw");
    run("truncate", &["-s", "64M", s(&raw)]);
    run("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+8M", s(&raw)]);
    // Data in both partitions, so the second partition's clusters lie late in the file.
    let data = pattern(10, 8 << 20);
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&data, 1 << 20).unwrap();
    f.write_all_at(&data, 9 << 20).unwrap();
    drop(f);
    let p = path_in(&dir, "cut.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&p)]);
    std::fs::remove_file(&raw).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len / 2).unwrap();
    assert!(inspect_refuses(&p).contains("truncated"));
}

#[test]
fn qcow2_with_small_clusters_is_refused() {
    let dir = tempdir();
    let p = qcow2(&dir, "small.qcow2", &["-o", "cluster_size=2048"]);
    assert!(inspect_refuses(&p).contains("cluster size of 2048 bytes"));
}

#[test]
fn qcow2_with_unknown_incompatible_feature_is_refused() {
    let dir = tempdir();
    let p = qcow2(&dir, "future.qcow2", &[]);
    set_incompatible_bits(&p, 1 << 40);
    assert!(inspect_refuses(&p).contains("unknown incompatible feature"));
}

#[test]
fn qcow2_with_zstd_compression_is_refused() {
    let dir = tempdir();
    let p = qcow2(&dir, "zstd.qcow2", &["-o", "compression_type=zstd"]);
    assert!(inspect_refuses(&p).contains("zstd"));
}

#[test]
fn qcow2_with_extended_l2_is_refused() {
    let dir = tempdir();
    let p = qcow2(&dir, "extl2.qcow2", &["-o", "extended_l2=on"]);
    assert!(inspect_refuses(&p).contains("extended L2"));
}

#[test]
fn qcow2_encrypted_is_refused() {
    let dir = tempdir();
    let p = qcow2(
        &dir,
        "luks.qcow2",
        &[
            "--object",
            "secret,id=s0,data=x",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=s0",
        ],
    );
    assert!(inspect_refuses(&p).contains("encrypted"));
}

#[test]
fn qcow2_marked_corrupt_is_refused() {
    let dir = tempdir();
    let p = qcow2(&dir, "corrupt.qcow2", &[]);
    set_incompatible_bits(&p, 1 << 1);
    assert!(inspect_refuses(&p).contains("corrupt"));
}

/// Writing is refused for what qcow2-rs would damage; the file stays byte-identical.
fn write_open_refused(path: &Path, needle: &str) {
    let before = sha256_file(path);
    let err = match image::open(path, Access::ReadWrite) {
        Ok(_) => panic!("{} opened for writing", path.display()),
        Err(e) => e,
    };
    assert_eq!(err.kind(), Kind::BadInput, "{err}");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(needle) && text.contains(s(path)), "{text}");
    assert_eq!(sha256_file(path), before);
}

#[test]
fn qcow2_with_internal_snapshot_is_not_written() {
    let dir = tempdir();
    let p = qcow2(&dir, "snap.qcow2", &[]);
    run("qemu-io", &["-c", "write -P 0x33 0 64k", s(&p)]);
    run("qemu-img", &["snapshot", "-c", "before-sysprep", s(&p)]);
    write_open_refused(&p, "internal snapshot");
    // Reading the active layer stays possible (inspect works on it).
    let img = image::open(&p, Access::ReadOnly).unwrap();
    let mut b = [0u8; 4];
    wingold::image::BlockDev::read_at(&img, 0, &mut b).unwrap();
    assert_eq!(b, [0x33; 4]);
}

#[test]
fn qcow2_marked_dirty_is_not_written() {
    let dir = tempdir();
    let p = qcow2(&dir, "dirty.qcow2", &[]);
    set_incompatible_bits(&p, 1);
    write_open_refused(&p, "dirty");
}

/// A `qemu-io` holding an image open read-write, as a running VM would.
struct QemuIo(Child);

impl QemuIo {
    fn hold(path: &Path) -> QemuIo {
        let mut child = Command::new("qemu-io")
            .arg(s(path))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("TEST CANNOT RUN: qemu-io missing (Debian qemu-utils)");
        // Once it answers a read, it has the image open and locked.
        writeln!(child.stdin.as_mut().unwrap(), "read 0 512").unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !line.contains("512/512") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "qemu-io exited early"
            );
        }
        QemuIo(child)
    }
}

impl Drop for QemuIo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn image_held_by_running_qemu_is_refused() {
    let dir = tempdir();
    let raw = path_in(&dir, "gpt.raw");
    run("truncate", &["-s", "16M", s(&raw)]);
    run("sgdisk", &["-n", "1:2048:+4M", s(&raw)]);
    let p = path_in(&dir, "busy.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&p)]);
    let holder = QemuIo::hold(&p);
    assert!(inspect_refuses(&p).contains("in use"));
    assert!(matches!(
        image::open(&p, Access::ReadWrite),
        Err(Error::Locked { .. })
    ));
    drop(holder);
    succeeds(wingold().args(["inspect", s(&p)]));
}

#[test]
fn qemu_refuses_an_image_wingold_is_writing() {
    let dir = tempdir();
    let p = qcow2(&dir, "ours.qcow2", &[]);
    let img = image::open(&p, Access::ReadWrite).unwrap();
    let out = Command::new("qemu-img")
        .args(["info", s(&p)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock"));
    drop(img);
    run("qemu-img", &["info", s(&p)]);
}

#[test]
fn a_panic_is_one_internal_error_line_and_exit_1() {
    if !cfg!(feature = "test-hooks") {
        panic!("TEST CANNOT RUN: it needs the panic hook; run it with --features test-hooks (make test does)");
    }
    let out = wingold()
        .args(["inject", "--list-profiles"])
        .env("WINGOLD_TEST_PANIC", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("wingold: internal error (a bug, please report it):"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
