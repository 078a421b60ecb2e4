//! Golden builds end to end: the golden image checked by qemu-img, ntfscat and
//! hivexget; byte-identical across builds; "up to date" without writing; rebuilt
//! when the ISO changes; never half-written when killed; cloned in constant time.

mod support;

use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::fixtures::{self, PhonyWindows, WIN2K22_X64};
use support::*;

struct Site {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    phony: PhonyWindows,
    golden: PathBuf,
}

/// A folder with a phony Windows disk, a fixture virtio-win ISO and wingold.toml.
fn site(compress: bool) -> Site {
    let tmp = tempdir();
    let dir = tmp.path().to_owned();
    std::fs::create_dir_all(dir.join("base")).unwrap();
    let phony = fixtures::phony_windows(&dir.join("base"), &WIN2K22_X64, vec![]);
    fixtures::virtio_iso(&dir, "0.1.999", 0);
    let cfg = format!(
        "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\ncache = \"cache\"\n\n\
         [base]\nimage = \"base/phony.qcow2\"\n\n\
         [golden]\noutput = \"golden/win.qcow2\"\nprofiles = [\"all\"]\ncompress = {compress}\n"
    );
    std::fs::write(dir.join("wingold.toml"), cfg).unwrap();
    Site {
        golden: dir.join("golden/win.qcow2"),
        phony,
        dir,
        _dir: tmp,
    }
}

fn build(site: &Site, extra: &[&str]) -> (Output, Value) {
    let out = wingold()
        .args(["build", "-c", s(&site.dir.join("wingold.toml")), "--json"])
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The manifest beside the version that `golden` (a stable name or a version) is.
fn manifest_of(golden: &Path) -> Value {
    let version = std::fs::canonicalize(golden).unwrap();
    let mut name = version.file_name().unwrap().to_owned();
    name.push(".manifest.json");
    serde_json::from_slice(&std::fs::read(version.with_file_name(name)).unwrap()).unwrap()
}

fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    String::from_utf8_lossy(&run("hivexget", &[s(hive), key, value]).stdout)
        .trim()
        .to_owned()
}

#[test]
fn golden_image_is_standalone_and_holds_every_setting() {
    let site = site(true);
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(j["up_to_date"], false);
    assert_qemu_check_clean(&site.golden);
    let info = run_json("qemu-img", &["info", "--output=json", s(&site.golden)]);
    assert!(info.get("backing-filename").is_none(), "{info}");
    // The stable name is a symlink to a read-only version named by its sha256.
    let target = std::fs::read_link(&site.golden).unwrap();
    let sha = sha256_file(&site.golden);
    assert_eq!(target, Path::new(&format!("win-{}.qcow2", &sha[..12])));
    assert_eq!(j["version"], s(&site.dir.join("golden").join(&target)));
    let mode = std::fs::metadata(&site.golden).unwrap().mode();
    assert_eq!(mode & 0o222, 0, "a version is writable: {mode:o}");
    let manifest = manifest_of(&site.golden);
    assert_eq!(manifest["output"]["stable"], s(&site.golden));
    assert_eq!(manifest["output"]["sha256"], sha256_file(&site.golden));
    assert_eq!(manifest["virtio_win"]["version"], "0.1.999");
    assert_eq!(manifest["virtio_win"]["drivers_injected"], false);
    assert_eq!(manifest["base"]["sha256"], sha256_file(&site.phony.image));
    assert!(!manifest["edits"].as_array().unwrap().is_empty());
    // Independent extraction: the Windows partition, then each hive, then values.
    let part = site.dir.join("part.raw");
    fixtures::extract_partition(
        &site.golden,
        site.phony.win_offset,
        site.phony.win_size,
        &part,
    );
    let get = |hive: &str| {
        let p = site.dir.join(hive);
        std::fs::write(
            &p,
            run(
                "ntfscat",
                &[s(&part), &format!("/Windows/System32/config/{hive}")],
            )
            .stdout,
        )
        .unwrap();
        p
    };
    let (system, software) = (get("SYSTEM"), get("SOFTWARE"));
    assert_eq!(
        hivexget(
            &system,
            "\\ControlSet001\\Control\\CrashControl",
            "CrashDumpEnabled"
        ),
        "3"
    );
    assert_eq!(
        hivexget(
            &system,
            "\\ControlSet001\\Services\\Tcpip\\Parameters",
            "EnableWsd"
        ),
        "0"
    );
    assert_eq!(
        hivexget(
            &software,
            "\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU",
            "NoAutoUpdate"
        ),
        "1"
    );
    assert_eq!(
        hivexget(
            &software,
            "\\Microsoft\\Windows\\CurrentVersion\\Policies\\System",
            "ShutdownWithoutLogon"
        ),
        "1"
    );
    // inspect shows the manifest.
    let r = wingold()
        .args(["inspect", "--json", s(&site.golden)])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(r["manifest"]["output"]["sha256"], sha256_file(&site.golden));
}

#[test]
fn two_builds_of_the_same_inputs_are_byte_identical() {
    let a = site(false);
    ok(&build(&a, &[]).0);
    let b = site(false);
    // The same base bytes: copy a's base into b (fixtures differ in NTFS serials).
    std::fs::copy(&a.phony.image, &b.phony.image).unwrap();
    ok(&build(&b, &[]).0);
    assert_eq!(sha256_file(&a.golden), sha256_file(&b.golden));
    // And compressed too.
    ok(&build(&a, &["--force"]).0);
    let before = sha256_file(&a.golden);
    ok(&build(&a, &["--force"]).0);
    assert_eq!(
        sha256_file(&a.golden),
        before,
        "a forced rebuild of the same inputs differs"
    );
}

#[test]
fn second_build_is_up_to_date_and_a_new_iso_rebuilds() {
    let site = site(false);
    ok(&build(&site, &[]).0);
    let meta = std::fs::metadata(&site.golden).unwrap();
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(j["up_to_date"], true);
    let again = std::fs::metadata(&site.golden).unwrap();
    assert_eq!(
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
        (again.ino(), again.mtime(), again.mtime_nsec())
    );
    let human = wingold()
        .args(["build", "-c", s(&site.dir.join("wingold.toml"))])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&human.stdout).contains("up to date"));
    // The ISO behind the config changes: the next build rebuilds.
    let newer = fixtures::virtio_iso(&site.dir.join("new"), "0.1.1000", 0);
    std::fs::rename(newer, site.dir.join("virtio-win-0.1.999.iso")).unwrap();
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(j["up_to_date"], false);
    assert_eq!(j["virtio_win_version"], "0.1.1000");
}

#[test]
fn killed_builds_leave_the_previous_image_or_nothing() {
    let site = site(true);
    let golden_dir = site.dir.join("golden");
    let base_sha = sha256_file(&site.phony.image);
    let mut previous: Option<String> = None;
    let delays = pattern(99, 20);
    for (round, d) in delays.iter().enumerate() {
        let mut child = wingold()
            .args(["build", "--force", "-c", s(&site.dir.join("wingold.toml"))])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20 + (*d as u64 % 250)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        match std::fs::metadata(&site.golden) {
            Ok(_) => {
                assert_qemu_check_clean(&site.golden);
                let now = sha256_file(&site.golden);
                if let Some(p) = &previous {
                    // Deterministic builds: a completed build writes the same bytes.
                    assert_eq!(&now, p, "round {round}: a different image appeared");
                }
                previous = Some(now);
            }
            Err(_) => assert!(
                previous.is_none(),
                "round {round}: the previous image vanished"
            ),
        }
        let _ = status;
        assert_eq!(sha256_file(&site.phony.image), base_sha, "the base changed");
    }
    // The next run succeeds and leaves nothing behind.
    ok(&build(&site, &["--force"]).0);
    let stray: Vec<String> = std::fs::read_dir(&golden_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("wingold-tmp") || n.contains("wingold-work"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    assert_qemu_check_clean(&site.golden);
}

#[test]
fn clone_is_an_overlay_with_its_run_recipe() {
    let site = site(false);
    ok(&build(&site, &[]).0);
    let vms = site.dir.join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    let out = wingold()
        .args([
            "clone",
            s(&site.golden),
            "--id",
            "11",
            "--dir",
            s(&vms),
            "--json",
        ])
        .output()
        .unwrap();
    ok(&out);
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let disk = vms.join("vm_11.qcow2");
    let chain = run_json(
        "qemu-img",
        &["info", "--backing-chain", "--output=json", s(&disk)],
    );
    assert_eq!(
        chain[0]["backing-filename"],
        s(&std::fs::canonicalize(&site.golden).unwrap())
    );
    assert_qemu_check_clean(&disk);
    assert!(j["argv"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a.as_str().unwrap().contains("mac=00:16:3e:ff:ff:0b")));
    let script = std::fs::read_to_string(vms.join("vm_11.sh")).unwrap();
    assert!(script.contains("virtio-blk-pci,drive=hda"));
    // A second clone with the same id is refused, nothing overwritten.
    let again = wingold()
        .args(["clone", s(&site.golden), "--id", "11", "--dir", s(&vms)])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn unknown_config_keys_are_refused_with_their_line() {
    let site = site(false);
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("compress = false", "compress = false\ncompres = true");
    std::fs::write(&cfg, text).unwrap();
    let (out, _) = build(&site, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wingold.toml:") && err.contains("compres"),
        "{err}"
    );
    assert!(!site.golden.exists());
}
