//! FIFOs and device files named as inputs, everywhere wingold takes a file: each
//! is refused (exit 2, one line naming it) before it is opened — nothing hangs on a
//! FIFO, nothing reads `/dev/zero` until memory or the disk runs out — and nothing
//! is written. The cases are data; each run is killed if it outlives its bound.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::fixtures::{self, WIN2K22_X64};
use support::*;

/// Runs `cmd` for at most 30 s: exit code (None when it hung), stderr, time.
fn bounded(cmd: &mut Command) -> (Option<i32>, String, Duration) {
    run_bounded(cmd, Duration::from_secs(30))
}

fn fifo(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::S_IRWXU).unwrap();
    p
}

/// Every file under `dir` (names only), to see that nothing was left behind.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().display().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn fifos_and_devices_are_refused_unopened_everywhere() {
    let dir = tempdir();
    let d = dir.path();
    let w = fixtures::phony_windows(d, &WIN2K22_X64, vec![]);
    let iso = fixtures::virtio_iso(d, "0.1.999", 0);
    let f = |name: &str| fifo(d, name);
    let out = d.join("out.qcow2");
    let (img, o) = (s(&w.image).to_owned(), s(&out).to_owned());
    let inject = |extra: Vec<String>| -> Vec<String> {
        let mut a = vec![
            "inject".to_owned(),
            img.clone(),
            "--output".into(),
            o.clone(),
        ];
        a.extend(extra);
        a
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "inject".into(),
                s(&f("image.qcow2")).into(),
                "--output".into(),
                o.clone(),
                "--profile".into(),
                "all".into(),
            ],
            "FIFO",
        ),
        (
            inject(vec!["--drivers".into(), s(&f("d.iso")).into()]),
            "FIFO",
        ),
        (
            inject(vec!["--drivers".into(), "/dev/zero".into()]),
            "character device",
        ),
        (
            inject(vec!["--firstboot".into(), s(&f("x.cmd")).into()]),
            "FIFO",
        ),
        (inject(vec!["--reg".into(), s(&f("x.reg")).into()]), "FIFO"),
        (
            inject(vec!["--reg".into(), "/dev/zero".into()]),
            "character device",
        ),
        (
            inject(vec![
                "--copy-in".into(),
                format!("{}:C:\\x", s(&f("payload"))),
            ]),
            "not a file or folder",
        ),
        (
            inject(vec!["--copy-in".into(), "/dev/zero:C:\\x".into()]),
            "not a file or folder",
        ),
        (
            vec!["build".into(), "-c".into(), s(&f("wingold.toml")).into()],
            "FIFO",
        ),
        (
            vec!["build".into(), "-c".into(), "/dev/zero".into()],
            "character device",
        ),
    ];
    // Build configs naming a FIFO or a device for each of their files.
    let base = d.join("base.qcow2");
    std::fs::copy(&w.image, &base).unwrap();
    let config = |name: &str, iso: &str, base: &str, extra: &str| -> PathBuf {
        let p = d.join(name);
        std::fs::write(
            &p,
            format!(
                "[virtio_win]\niso = \"{iso}\"\ncache = \"cache\"\n\n[base]\nimage = \"{base}\"\n\n\
                 [golden]\noutput = \"golden/win.qcow2\"\n{extra}"
            ),
        )
        .unwrap();
        p
    };
    let (iso_s, base_s) = (s(&iso).to_owned(), s(&base).to_owned());
    let fifo_base = s(&f("base-fifo.qcow2")).to_owned();
    let fifo_reg = s(&f("r.reg")).to_owned();
    let configs = [
        (config("c1.toml", &iso_s, &fifo_base, ""), "FIFO"),
        (
            config("c2.toml", "/dev/zero", &base_s, ""),
            "character device",
        ),
        (config("c3.toml", s(&f("v.iso")), &base_s, ""), "FIFO"),
        (
            config(
                "c4.toml",
                &iso_s,
                &base_s,
                &format!("regfiles = [\"{fifo_reg}\"]\n"),
            ),
            "FIFO",
        ),
        (
            config("c5.toml", &iso_s, &base_s, "regfiles = [\"/dev/zero\"]\n"),
            "character device",
        ),
        (
            config(
                "c6.toml",
                &iso_s,
                &base_s,
                "\n[firstboot]\nservice_binary = \"/dev/zero\"\nscripts = [\"s.cmd\"]\n",
            ),
            "character device",
        ),
    ];
    std::fs::write(d.join("s.cmd"), "@echo off\r\n").unwrap();
    let mut all = cases;
    for (c, want) in &configs {
        all.push((vec!["build".into(), "-c".into(), s(c).into()], want));
    }
    let before = sha256_file(&w.image);
    for (args, want) in &all {
        let (code, err, took) = bounded(wingold().args(args));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(took < Duration::from_secs(10), "{args:?}: took {took:?}");
        assert!(!out.exists(), "{args:?}: an output was written");
        assert!(!d.join("golden").join("win.qcow2").exists(), "{args:?}");
    }
    assert_eq!(sha256_file(&w.image), before);
    // Nothing left in the cache's partial folder (a /dev/zero ISO once left GBs).
    let cache = d.join("cache");
    if cache.exists() {
        let left: Vec<String> = files_under(&cache)
            .into_iter()
            .filter(|p| p.contains("partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn an_auth_file_that_is_a_fifo_or_broken_is_named() {
    let g = support::golden::golden();
    let dir = tempdir();
    let d = dir.path();
    let cases: Vec<(PathBuf, &str)> = vec![
        (fifo(d, "auth-fifo.json"), "FIFO"),
        (PathBuf::from("/dev/zero"), "character device"),
        (
            {
                let p = d.join("bad.json");
                std::fs::write(&p, "{\"auths\": ").unwrap();
                p
            },
            "not JSON",
        ),
        (
            {
                let p = d.join("nocolon.json");
                // base64 of "userpassword": no ':'.
                std::fs::write(
                    &p,
                    "{\"auths\":{\"https://127.0.0.1:9/v2/\":{\"auth\":\"dXNlcnBhc3N3b3Jk\"}}}",
                )
                .unwrap();
                p
            },
            "not user:password",
        ),
        (
            {
                let p = d.join("notb64.json");
                std::fs::write(&p, "{\"auths\":{\"127.0.0.1:9\":{\"auth\":\"!!!\"}}}").unwrap();
                p
            },
            "not base64",
        ),
    ];
    for (file, want) in &cases {
        let (code, err, took) = bounded(
            wingold()
                .args(["publish", s(&g.path), "docker://127.0.0.1:9/win/x:v1"])
                .env("REGISTRY_AUTH_FILE", file)
                .env("HOME", d)
                .env_remove("XDG_RUNTIME_DIR"),
        );
        assert_eq!(code, Some(2), "{}: {err}", file.display());
        assert!(
            err.contains(want) && err.contains(s(file)),
            "{}: {err}",
            file.display()
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(took < Duration::from_secs(10));
    }
}
