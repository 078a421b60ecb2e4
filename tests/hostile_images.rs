//! Images that qemu made or damaged, as qemu's own checks see them: wingold never
//! writes a wrong byte into them and refuses what qemu refuses.

use wingold_test_support as support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;
use support::fixtures::{self, WIN2K22_X64};
use support::*;

fn message(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// `inject --in-place` into a zlib-compressed qcow2 (what `qemu-img convert -c`,
/// cloud images and wingold's compressed golden images are) is refused before
/// anything is written, at every cluster size; `--output` over the same image works
/// and gives the same disk as qemu's own view of the edit.
#[test]
fn in_place_inject_into_a_compressed_image_is_refused_and_leaves_it_untouched() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    for cluster in ["4k", "64k", "2M"] {
        let c = dir.path().join(format!("c-{cluster}.qcow2"));
        run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                "-o",
                &format!("cluster_size={cluster}"),
                s(&phony.image),
                s(&c),
            ],
        );
        let before = sha256_file(&c);
        let out = wingold()
            .args(["inject", s(&c), "--in-place", "--profile", "all"])
            .output()
            .unwrap();
        let err = message(&out);
        assert_eq!(out.status.code(), Some(2), "{cluster}: {err}");
        assert!(
            err.contains("compressed clusters") && err.contains("--output"),
            "{cluster}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{cluster}: {err}");
        assert_eq!(sha256_file(&c), before, "{cluster}: the image changed");
        assert_qemu_check_clean(&c);

        // The overlay route reads the compressed clusters and writes none of them.
        let ov = dir.path().join(format!("ov-{cluster}.qcow2"));
        let out = wingold()
            .args(["inject", s(&c), "--output", s(&ov), "--profile", "all"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cluster}: {}", message(&out));
        assert_eq!(sha256_file(&c), before, "{cluster}: the base changed");
        assert_qemu_check_clean(&ov);
    }
}

/// Builds a small qcow2 with data in its first clusters and returns it with the
/// file offset of its first L2 entry (qemu's iotest 060 edits the same field).
fn image_with_data(dir: &Path, name: &str) -> (std::path::PathBuf, u64) {
    let img = dir.join(name);
    run("qemu-img", &["create", "-f", "qcow2", s(&img), "8M"]);
    run("qemu-io", &["-c", "write -P 0x5a 0 128k", s(&img)]);
    let bytes = std::fs::read(&img).unwrap();
    let l1_offset = be64(&bytes, 40) as usize;
    let l2_offset = (be64(&bytes, l1_offset) & 0x00ff_ffff_ffff_fe00) as usize;
    assert_ne!(l2_offset, 0, "qemu-io wrote no L2 table");
    (img, l2_offset as u64)
}

/// An L2 entry whose host offset is not cluster-aligned: qemu reports the image
/// corrupt and refuses the read; wingold must not read 512 bytes further on and
/// blame the guest, but call the image damaged (exit 2) and leave it as it was.
#[test]
fn an_unaligned_l2_entry_is_a_damaged_image() {
    let dir = tempdir();
    let (img, l2) = image_with_data(dir.path(), "unaligned.qcow2");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&img)
        .unwrap();
    let mut entry = [0u8; 8];
    f.read_exact_at(&mut entry, l2).unwrap();
    let moved = u64::from_be_bytes(entry) + 512;
    f.write_all_at(&moved.to_be_bytes(), l2).unwrap();
    drop(f);
    // qemu agrees that it is damaged.
    let q = std::process::Command::new("qemu-io")
        .args(["-r", "-c", "read 0 512", s(&img)])
        .output()
        .unwrap();
    let q_text = format!("{}{}", message(&q), String::from_utf8_lossy(&q.stdout));
    assert!(
        q_text.contains("unaligned") || q_text.contains("corrupt"),
        "{q_text}"
    );

    let before = sha256_file(&img);
    for cmd in [
        vec!["inspect", s(&img)],
        vec!["inject", s(&img), "--in-place", "--profile", "all"],
    ] {
        let out = wingold().args(&cmd).output().unwrap();
        let err = message(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(
            err.contains("damaged") && err.contains("unaligned"),
            "{cmd:?}: {err}"
        );
        assert!(!err.contains("Windows"), "{cmd:?} blamed the guest: {err}");
        assert_eq!(sha256_file(&img), before, "{cmd:?} changed the image");
    }
}

/// The same for an L1 entry pointing to an unaligned L2 table.
#[test]
fn an_unaligned_l2_table_is_a_damaged_image() {
    let dir = tempdir();
    let (img, _) = image_with_data(dir.path(), "unaligned-l1.qcow2");
    let bytes = std::fs::read(&img).unwrap();
    let l1_offset = be64(&bytes, 40);
    let moved = be64(&bytes, l1_offset as usize) + 512;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&moved.to_be_bytes(), l1_offset).unwrap();
    drop(f);
    let out = wingold().args(["inspect", s(&img)]).output().unwrap();
    let err = message(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("damaged") && err.contains("unaligned L2"),
        "{err}"
    );
}

/// A disk with an MBR, as a qcow2 of the given compat level.
fn mbr_disk(dir: &Path, name: &str, compat: &str) -> std::path::PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    run("truncate", &["-s", "8M", s(&raw)]);
    fixtures::sfdisk(&raw, "label: dos\n,4M,7\n");
    let img = dir.join(name);
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            &format!("compat={compat}"),
            s(&raw),
            s(&img),
        ],
    );
    img
}

fn inspect(image: &Path) -> (Option<i32>, String, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wingold"))
        .args(["inspect", "--json", s(image)])
        .output()
        .unwrap();
    (
        out.status.code(),
        message(&out),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
    )
}

/// Images qemu opens, wingold opens: a version 2 (compat=0.10) overlay with a
/// backing file, a chain of 20 overlays, an image QEMU left marked dirty.
#[test]
fn images_qemu_opens_are_read() {
    let dir = tempdir();
    let base = mbr_disk(dir.path(), "v2.qcow2", "0.10");
    let top = dir.path().join("v2-top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    let (code, err, j) = inspect(&top);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["partition_table"], "mbr");
    assert_eq!(j["backing_chain"][0]["path"], s(&base));

    let mut prev = mbr_disk(dir.path(), "deep-0.qcow2", "1.1");
    for i in 1..=20 {
        let next = dir.path().join(format!("deep-{i}.qcow2"));
        run(
            "qemu-img",
            &[
                "create",
                "-f",
                "qcow2",
                "-b",
                s(&prev),
                "-F",
                "qcow2",
                s(&next),
            ],
        );
        prev = next;
    }
    let (code, err, j) = inspect(&prev);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["backing_chain"].as_array().unwrap().len(), 20);

    // The dirty bit (incompatible feature bit 0, byte 79) as a killed QEMU leaves it.
    let dirty = mbr_disk(dir.path(), "dirty.qcow2", "1.1");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&dirty)
        .unwrap();
    f.write_all_at(&[1], 79).unwrap();
    drop(f);
    let before = sha256_file(&dirty);
    let (code, err, j) = inspect(&dirty);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["partition_table"], "mbr");
    let out = wingold()
        .args(["inject", s(&dirty), "--in-place", "--profile", "all"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", message(&out));
    assert_eq!(sha256_file(&dirty), before);
}

/// A backing-file offset with a size of 0: QEMU reads no backing file (an empty
/// name is none), and so does wingold — no "damaged" for what qemu opens.
#[test]
fn a_backing_name_of_size_zero_is_no_backing_file() {
    let dir = tempdir();
    let img = mbr_disk(dir.path(), "zero-name.qcow2", "1.1");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    // backing_file_offset (bytes 8..16) inside the header cluster, size (16..20) 0.
    f.write_all_at(&512u64.to_be_bytes(), 8).unwrap();
    f.write_all_at(&0u32.to_be_bytes(), 16).unwrap();
    drop(f);
    let info: serde_json::Value =
        serde_json::from_slice(&run("qemu-img", &["info", "--output=json", s(&img)]).stdout)
            .unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");
    let (code, err, j) = inspect(&img);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["partition_table"], "mbr");
    assert!(
        j["backing_chain"].as_array().is_none_or(|c| c.is_empty()),
        "{j}"
    );
}

/// What is no image is named at once, one line, exit 2: a FIFO (as the image or as
/// a backing file: opening it would block), a backing chain that loops, and the
/// formats qemu knows that wingold does not read, with the conversion to use.
#[test]
fn special_files_loops_and_foreign_formats_are_named() {
    let dir = tempdir();
    let d = dir.path();
    let fifo = d.join("pipe");
    run("mkfifo", &[s(&fifo)]);
    let raw = d.join("r.raw");
    run("truncate", &["-s", "1M", s(&raw)]);
    let over_fifo = d.join("over-fifo.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            s(&raw),
            "-F",
            "raw",
            s(&over_fifo),
            "8M",
        ],
    );
    std::fs::remove_file(&raw).unwrap();
    run("mkfifo", &[s(&raw)]);
    let (a, b) = (d.join("a.qcow2"), d.join("b.qcow2"));
    run("qemu-img", &["create", "-f", "qcow2", s(&a), "8M"]);
    run(
        "qemu-img",
        &["create", "-f", "qcow2", "-b", s(&a), "-F", "qcow2", s(&b)],
    );
    run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            s(&b),
            "-F",
            "qcow2",
            s(&a),
        ],
    );
    let mut cases = vec![
        (fifo.clone(), "FIFO"),
        (over_fifo, "FIFO"),
        (b.clone(), "loop"),
    ];
    for (fmt, opts, what) in [
        ("vdi", "", "VDI"),
        ("vmdk", "subformat=monolithicFlat", "VMDK descriptor"),
        ("vmdk", "", "VMDK"),
        ("parallels", "", "Parallels"),
    ] {
        let img = d.join(format!("x-{fmt}-{}.img", opts.len()));
        let mut args = vec!["create", "-f", fmt];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
        }
        args.extend([s(&img), "8M"]);
        run("qemu-img", &args);
        cases.push((img, what));
    }
    for (image, what) in cases {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wingold"))
            .args(["inspect", s(&image)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{}: wingold hangs", image.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{}: {err}", image.display());
        assert!(err.contains(what), "{}: {err}", image.display());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("{ "), "Debug text reached the user: {err}");
        if what != "FIFO" && what != "loop" {
            assert!(err.contains("qemu-img convert"), "{err}");
        }
    }
}

#[test]
fn a_hive_that_is_a_folder_is_bad_input() {
    let dir = tempdir();
    let w = fixtures::phony_windows_with(dir.path(), &fixtures::WIN2K22_X64, vec![], |vol| {
        fixtures::with_fuse_mount(vol, |mnt| {
            let system = mnt.join("Windows/System32/config/SYSTEM");
            std::fs::remove_file(&system).unwrap();
            std::fs::create_dir(&system).unwrap();
        });
    });
    let out = wingold()
        .args([
            "inject",
            s(&w.image),
            "--dry-run",
            "--profile",
            "crash-dump",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("SYSTEM"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

#[test]
fn a_block_device_is_a_disk() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let raw = dir.path().join("disk.raw");
    run("qemu-img", &["convert", "-O", "raw", s(&w.image), s(&raw)]);
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show", "--read-only", s(&raw)])
        .output()
        .expect("TEST CANNOT RUN: losetup is missing");
    assert!(
        out.status.success(),
        "TEST CANNOT RUN: no loop device here ({}); block devices need one",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let r = succeeds(wingold().args(["inspect", "--json", &dev.0]));
    let j: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(j["format"], "raw");
    assert_eq!(j["virtual_size"], std::fs::metadata(&raw).unwrap().len());
    assert_eq!(j["windows"]["osinfo"], "win2k22");
    // And an overlay over it: the device is the backing file, never written.
    let before = sha256_file(&raw);
    let ov = dir.path().join("over.qcow2");
    succeeds(wingold().args([
        "inject",
        &dev.0,
        "--output",
        s(&ov),
        "--profile",
        "crash-dump",
    ]));
    assert_qemu_check_clean(&ov);
    assert_eq!(sha256_file(&raw), before);
}

/// The host refuses a write (here the file size limit, as a full disk would):
/// one line with the host's own words, exit 1, no output and no temporary file
/// left — never qcow2-rs's Debug form of the error.
#[test]
fn a_write_the_host_refuses_is_said_plainly() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let big = dir.path().join("big.bin");
    std::fs::write(&big, pattern(7, 40 << 20)).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("out.qcow2");
    // 30 MB: room for the hives' temporary copies, not for the 40 MB copied in.
    let res = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 30000; trap '' XFSZ; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_wingold"))
        .args(["inject", s(&w.image), "--output", s(&out), "--copy-in"])
        .arg(format!("{}:C:\\big.bin", big.display()))
        .output()
        .unwrap();
    let err = message(&res);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(
        !err.contains("Os {") && !err.contains("Qcow2Error"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "left behind"
    );
}
