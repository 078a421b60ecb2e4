//! Test disks built from reviewable inputs, as libguestfs builds its phony guests:
//! NTFS volumes made by `mkntfs` and filled through ntfs-3g's own FUSE driver (an
//! independent writer), spliced into MBR or GPT disks laid out by sfdisk / sgdisk,
//! converted with qemu-img.

use super::{run, s};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

/// A file or directory to put into a volume.
pub enum Entry {
    File(&'static str, Vec<u8>),
    Dir(&'static str),
}

/// Makes an NTFS volume image of `size` bytes holding `entries`.
pub fn ntfs_volume(path: &Path, size: u64, label: &str, entries: &[Entry]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run(
        "mkntfs",
        &[
            "-q",
            "-F",
            "-f",
            "-L",
            label,
            "-s",
            "512",
            "-p",
            "2048",
            "-H",
            "255",
            "-S",
            "63",
            s(path),
        ],
    );
    if entries.is_empty() {
        return;
    }
    with_fuse_mount(path, |mnt| {
        for e in entries {
            match e {
                Entry::Dir(d) => std::fs::create_dir_all(mnt.join(d)).unwrap(),
                Entry::File(p, data) => {
                    let dest = mnt.join(p);
                    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                    std::fs::write(dest, data).unwrap();
                }
            }
        }
    });
}

/// Mounts `volume` with ntfs-3g's FUSE driver (in the foreground, so that unmounting
/// waits for every write), runs `f`, unmounts.
pub fn with_fuse_mount(volume: &Path, f: impl FnOnce(&Path)) {
    let mnt = volume.with_extension("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new("ntfs-3g")
        .args([s(volume), s(&mnt), "-o", "no_detach"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("TEST CANNOT RUN: ntfs-3g missing (Debian ntfs-3g)");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        if mounts.contains(s(&std::fs::canonicalize(&mnt).unwrap())) {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("TEST CANNOT RUN: ntfs-3g FUSE mount failed ({st}); fixtures need /dev/fuse and root");
        }
        assert!(Instant::now() < deadline, "ntfs-3g did not mount in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    f(&mnt);
    run("umount", &[s(&mnt)]);
    assert!(child.wait().unwrap().success(), "ntfs-3g failed");
    std::fs::remove_dir(&mnt).unwrap();
}

#[derive(Clone, Copy, PartialEq)]
pub enum Table {
    Mbr,
    Gpt,
}

/// One partition: its size and, for an NTFS one, the volume image to splice in.
pub struct Part {
    pub size: u64,
    pub volume: Option<PathBuf>,
    /// MBR type byte or sgdisk type code.
    pub kind: &'static str,
}

/// A raw disk of `size` bytes with `parts` laid out from sector 2048 on; returns
/// each partition's byte offset.
pub fn disk(path: &Path, size: u64, table: Table, parts: &[Part]) -> Vec<u64> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    match table {
        Table::Mbr => {
            let mut script = String::from("label: dos\n");
            for (i, p) in parts.iter().enumerate() {
                let boot = if i == 0 { ",*" } else { "" };
                script += &format!(",{}KiB,{}{boot}\n", p.size / 1024, p.kind);
            }
            let mut child = Command::new("sfdisk")
                .args(["-q", s(path)])
                .stdin(Stdio::piped())
                .spawn()
                .expect("TEST CANNOT RUN: sfdisk missing (Debian fdisk)");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success());
        }
        Table::Gpt => {
            let mut args: Vec<String> = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let n = i + 1;
                args.push(format!("-n{n}:0:+{}K", p.size / 1024));
                args.push(format!("-t{n}:{}", p.kind));
            }
            args.push(s(path).to_owned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("sgdisk", &args);
        }
    }
    let json = super::run_json("sfdisk", &["--json", s(path)]);
    let offsets: Vec<u64> = json["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start"].as_u64().unwrap() * 512)
        .collect();
    for (p, off) in parts.iter().zip(&offsets) {
        if let Some(vol) = &p.volume {
            splice(vol, path, *off);
        }
    }
    offsets
}

/// Copies `volume` into `disk` at byte `offset`.
pub fn splice(volume: &Path, disk: &Path, offset: u64) {
    run(
        "dd",
        &[
            &format!("if={}", s(volume)),
            &format!("of={}", s(disk)),
            "bs=1M",
            &format!("seek={}", offset),
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

/// Copies `len` bytes at `offset` of a (possibly qcow2) image into a raw file, as a
/// user would with `qemu-img convert` + `dd`, for ntfs-3g's tools to read.
pub fn extract_partition(image: &Path, offset: u64, len: u64, out: &Path) {
    let raw = out.with_extension("whole.raw");
    run("qemu-img", &["convert", "-O", "raw", s(image), s(&raw)]);
    run(
        "dd",
        &[
            &format!("if={}", s(&raw)),
            &format!("of={}", s(out)),
            "bs=1M",
            &format!("skip={offset}"),
            &format!("count={len}"),
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ],
    );
    std::fs::remove_file(&raw).unwrap();
}
