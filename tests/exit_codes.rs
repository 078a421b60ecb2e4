//! The exit code of each kind of error, from each layer: one table. Bad usage and
//! bad input exit 2, a failure on good input 1 — whatever layer it comes from and
//! however deep in a chain of wrappers and contexts.

use wingold_test_support as support;

use anyhow::Context;
use std::io;
use std::path::PathBuf;
use support::*;
use wingold::cli::exit_code;
use wingold::{cli, drivers, error, firstboot, golden, publish};
use wingold::{guest, hive, image, launch, media, ntfs, reg, registry, virtio};

fn path() -> PathBuf {
    PathBuf::from("disk.qcow2")
}

fn corrupt() -> image::Error {
    image::Error::Corrupt {
        path: path(),
        reason: "an L2 table outside the file".into(),
    }
}

fn image_io() -> image::Error {
    image::Error::Io {
        path: path(),
        op: "read",
        source: io::Error::from_raw_os_error(libc::EIO),
    }
}

fn open(errno: i32) -> image::Error {
    image::Error::Open {
        path: path(),
        source: io::Error::from_raw_os_error(errno),
    }
}

fn unreadable(errno: i32) -> error::Unreadable {
    error::unreadable(&path())(io::Error::from_raw_os_error(errno))
}

fn not_ntfs() -> ntfs::Error {
    ntfs::Error::NotNtfs {
        volume: "p2".into(),
        reason: "no boot sector".into(),
    }
}

#[test]
fn each_kind_of_error_has_one_exit_code_whatever_its_layer() {
    let table: Vec<(&str, anyhow::Error, i32)> = vec![
        // image
        ("image: damaged qcow2", corrupt().into(), 2),
        (
            "image: a path that leads nowhere",
            open(libc::ENOENT).into(),
            2,
        ),
        ("image: a folder for an image", open(libc::EISDIR).into(), 2),
        ("image: a symlink loop", open(libc::ELOOP).into(), 2),
        ("image: open fails with EIO", open(libc::EIO).into(), 1),
        (
            "image: open fails with EACCES",
            open(libc::EACCES).into(),
            1,
        ),
        ("image: a read fails", image_io().into(), 1),
        (
            "image: written through a read-only handle",
            image::Error::ReadOnly { path: path() }.into(),
            1,
        ),
        (
            "image: a damaged backing file",
            image::Error::Backing {
                path: path(),
                backing: "base.qcow2".into(),
                source: Box::new(corrupt()),
            }
            .into(),
            2,
        ),
        (
            "image: a backing file that fails to read",
            image::Error::Backing {
                path: path(),
                backing: "base.qcow2".into(),
                source: Box::new(image_io()),
            }
            .into(),
            1,
        ),
        (
            "image: an output that exists",
            image::Error::Exists { path: path() }.into(),
            2,
        ),
        // ntfs
        ("ntfs: no NTFS here", not_ntfs().into(), 2),
        (
            "ntfs: $MFT and $MFTMirr disagree",
            ntfs::Error::NeedsRepair {
                volume: "p2".into(),
                reason: "$MFTMirr does not match $MFT (record 0)".into(),
            }
            .into(),
            2,
        ),
        (
            "ntfs: written through a read-only volume",
            ntfs::Error::ReadOnly.into(),
            1,
        ),
        (
            "ntfs: over a damaged image",
            ntfs::Error::Image(corrupt()).into(),
            2,
        ),
        (
            "ntfs: over a failing image",
            ntfs::Error::Image(image_io()).into(),
            1,
        ),
        // hive
        (
            "hive: not a hive",
            hive::Error::NotAHive {
                name: "SYSTEM".into(),
                reason: "no regf".into(),
            }
            .into(),
            2,
        ),
        (
            "hive: written through a read-only hive",
            hive::Error::ReadOnly {
                name: "SYSTEM".into(),
            }
            .into(),
            1,
        ),
        // guest
        (
            "guest: no Windows",
            guest::Error::NoWindows {
                path: path(),
                reason: "no \\Windows".into(),
            }
            .into(),
            2,
        ),
        (
            "guest: a failing image below",
            guest::Error::Image(image_io()).into(),
            1,
        ),
        // reg
        (
            "reg: a hive that is a folder",
            reg::Error::load(reg::HiveName::System, not_ntfs()).into(),
            2,
        ),
        (
            "reg: a hive that cannot be read",
            reg::Error::load(reg::HiveName::System, ntfs::Error::ReadOnly).into(),
            1,
        ),
        // virtio
        (
            "virtio: not an ISO",
            virtio::Error::from(media::Error::NotIso {
                path: path(),
                reason: "no volume descriptor".into(),
            })
            .into(),
            2,
        ),
        (
            "virtio: an ISO read fails",
            virtio::Error::from(media::Error::Io {
                path: path(),
                source: io::Error::from_raw_os_error(libc::EIO),
            })
            .into(),
            1,
        ),
        (
            "virtio: a download refused (wrong pin)",
            virtio::Error::Refused {
                url: "https://x/y.iso".into(),
                reason: "sha256 differs".into(),
            }
            .into(),
            2,
        ),
        (
            "virtio: the network fails",
            virtio::Error::Network {
                url: "https://x/y.iso".into(),
                reason: "reset".into(),
            }
            .into(),
            1,
        ),
        // launch and the rest
        (
            "launch: a VM id too large",
            launch::Error::IdTooLarge(300).into(),
            2,
        ),
        (
            "a file the user named is missing",
            unreadable(libc::ENOENT).into(),
            2,
        ),
        (
            "reading a file the user named fails with EIO",
            unreadable(libc::EIO).into(),
            1,
        ),
        (
            "drivers: an unsigned boot driver",
            drivers::Refusal::Unsigned {
                iso: "virtio-win.iso".into(),
                path: "viostor/2k22/amd64/viostor.sys".into(),
                version: "10.0".into(),
            }
            .into(),
            2,
        ),
        (
            "golden: a bad channel in the config",
            golden::Refusal::Channel {
                config: "wingold.toml".into(),
                channel: "nightly".into(),
            }
            .into(),
            2,
        ),
        (
            "firstboot: rhsrvany cannot be read (EACCES)",
            firstboot::Refusal::NoServiceBinary {
                binary: "/usr/share/virt-tools/rhsrvany.exe".into(),
                source: io::Error::from_raw_os_error(libc::EACCES),
            }
            .into(),
            1,
        ),
        (
            "firstboot: rhsrvany is not installed",
            firstboot::Refusal::NoServiceBinary {
                binary: "/usr/share/virt-tools/rhsrvany.exe".into(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            }
            .into(),
            2,
        ),
        (
            "publish: a reference that does not parse",
            registry::Error::from(registry::parse_reference("http://x/y").unwrap_err()).into(),
            2,
        ),
        (
            "publish: no destination given",
            publish::Refusal::NoDestination.into(),
            2,
        ),
        (
            "publish: credentials the registry refuses",
            registry::Error::CredentialsRefused {
                host: "registry.example".into(),
            }
            .into(),
            2,
        ),
        (
            "publish: a registry that cannot be reached",
            registry::Error::Connection {
                host: "registry.example".into(),
                what: "asking /v2/".into(),
                reason: "connection refused".into(),
            }
            .into(),
            1,
        ),
        (
            "reg: a .reg syntax error",
            reg::parse(b"REGEDIT4\n[HKLM\\x", "x.reg")
                .unwrap_err()
                .into(),
            2,
        ),
        (
            "reg: a value does not read back (wingold's own fault)",
            reg::Error::Mismatch(Box::new(reg::Mismatch {
                hive: reg::HiveName::System,
                path: "Select".into(),
                name: "Current".into(),
                got: None,
                want: None,
            }))
            .into(),
            1,
        ),
        ("cli: two outputs", cli::Invalid::InjectMode.into(), 2),
        (
            "hive: indexes that do not read, with a key named outside ASCII",
            hive::Error::Index {
                name: "SYSTEM".into(),
                source: hive::index::Error::BinsSize,
            }
            .into(),
            2,
        ),
        (
            "cli: [publish] tags in the config",
            cli::Invalid::PublishTag {
                config: "wingold.toml".into(),
                tag: "-x".into(),
            }
            .into(),
            2,
        ),
        ("no layer knows it", anyhow::anyhow!("something broke"), 1),
    ];
    let mut wrong = Vec::new();
    for (what, err, want) in table {
        // Context on top must not change the answer.
        let wrapped = Err::<(), _>(err).context("while building").unwrap_err();
        let got = exit_code(&wrapped);
        if got != want {
            wrong.push(format!("{what}: exit {got}, want {want} ({wrapped:#})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Bad usage (clap's refusal) exits 2 like bad input, with nothing written.
#[test]
fn bad_usage_exits_2() {
    let dir = tempdir();
    let out = wingold()
        .args(["disks", "--id", "not-a-number", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A reader that stops reading (`wingold … | head`) ends the output quietly:
/// exit 0 and nothing on stderr, for text and for `--json` alike — output far
/// larger than a pipe's buffer, so that the write does meet the closed pipe.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &fixtures::WIN2K22_X64, vec![]);
    let reg = dir.path().join("big.reg");
    let mut text = String::from(
        "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Big]\n",
    );
    for i in 0..20_000 {
        text += &format!("\"v{i}\"=dword:{i:08x}\n");
    }
    std::fs::write(&reg, text).unwrap();
    for json in [false, true] {
        let mut cmd = wingold();
        cmd.arg("inject")
            .arg(&w.image)
            .arg("--reg")
            .arg(&reg)
            .arg("--dry-run");
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "json {json}: {err}");
        assert_eq!(err, "", "json {json}: the closed pipe is not an error");
    }
}
