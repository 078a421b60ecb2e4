//! Golden builds end to end: the golden image checked by qemu-img, ntfscat and
//! hivexget; byte-identical across builds; "up to date" without writing; rebuilt
//! when the ISO changes; never half-written when killed; cloned in constant time.

use wingold_test_support as support;

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
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("[base]\n", "[base]\nhash = true\n")).unwrap();
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
    // How the golden boots, as inspect tells it of the base (the phony GPT disk
    // has no EFI system partition and no active partition).
    let (_, base, _) = wingold_json("inspect", &[s(&site.phony.image)]);
    assert_eq!(manifest["boot"], base["boot"], "{}", manifest["boot"]);
    assert!(manifest["boot"]["firmware"].is_string());
    // The drivers went in ([drivers] inject defaults to true): each with its ISO
    // folder and DriverVer, every file with its guest path and sha256, and the
    // registry edits among the manifest's edits.
    assert_eq!(manifest["virtio_win"]["drivers_injected"], true);
    let drivers = &manifest["drivers"];
    assert_eq!(drivers["drivers"][0]["folder"], "viostor/2k22/amd64");
    assert_eq!(
        drivers["drivers"][0]["driver_ver"],
        "01/01/2025,100.95.104.999"
    );
    let files = drivers["files"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f["to"] == "Windows\\System32\\drivers\\viostor.sys"
            && f["sha256"].as_str().is_some_and(|h| h.len() == 64)));
    assert!(manifest["edits"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == "ControlSet001\\Services\\viostor" && e["value"] == "ImagePath"));
    // The first-boot queue: the SAN policy (disks added later come online, as
    // virt-v2v sets it with the drivers), PnP install of the staged drivers, the
    // balloon service and the netsh tuning, behind the rhsrvany service (binary
    // and hash recorded).
    let queue: Vec<&str> = manifest["first_boot"]["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        queue,
        [
            "1000-san-policy.cmd",
            "2000-pnp-drivers.cmd",
            "5000-balloon-service.cmd",
            "5100-tcpip-netsh.cmd"
        ]
    );
    assert_eq!(
        manifest["first_boot"]["service"]["binary"],
        "/usr/share/virt-tools/rhsrvany.exe"
    );
    assert_eq!(
        manifest["first_boot"]["service"]["binary_sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
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
    // And the same ISO bytes (xorriso stamps each ISO with its creation time, which
    // the injected driver files carry).
    let iso = "virtio-win-0.1.999.iso";
    std::fs::copy(a.dir.join(iso), b.dir.join(iso)).unwrap();
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
    // The base copied over itself (new inode and mtime, same bytes): without a
    // recorded hash it rebuilds — into the same version, untouched.
    let version = std::fs::canonicalize(&site.golden).unwrap();
    let copy = site.dir.join("base/copy.qcow2");
    std::fs::copy(&site.phony.image, &copy).unwrap();
    std::fs::rename(&copy, &site.phony.image).unwrap();
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(j["up_to_date"], false);
    assert_eq!(j["version"], s(&version));
    let same = std::fs::metadata(&version).unwrap();
    assert_eq!((same.ino(), same.mtime()), (meta.ino(), meta.mtime()));
    assert!(manifest_of(&site.golden)["base"]["sha256"].is_null());
    // With `[base] hash = true` the hash is recorded, and a copied base with the
    // same bytes is then up to date.
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("[base]\n", "[base]\nhash = true\n")).unwrap();
    ok(&build(&site, &[]).0);
    assert_eq!(
        manifest_of(&site.golden)["base"]["sha256"],
        sha256_file(&site.phony.image)
    );
    std::fs::copy(&site.phony.image, &copy).unwrap();
    std::fs::rename(&copy, &site.phony.image).unwrap();
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(
        j["up_to_date"], true,
        "a copied base with the same bytes rebuilt"
    );
    // The ISO behind the config changes: the next build rebuilds.
    let newer = fixtures::virtio_iso(&site.dir.join("new"), "0.1.1000", 0);
    std::fs::rename(newer, site.dir.join("virtio-win-0.1.999.iso")).unwrap();
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(j["up_to_date"], false);
    assert_eq!(j["virtio_win_version"], "0.1.1000");
}

/// The phases a build goes through, as its test hook names them.
use wingold::golden::build::PHASES;

/// A build killed in each phase (by the build's test hook, so every phase is hit
/// on purpose) and at random moments leaves the stable name on the previous
/// version or on the new one whole — never on a partial image — and the next run
/// clears what it left.
#[test]
fn killed_builds_leave_the_previous_version_or_the_new_one_whole() {
    if !cfg!(feature = "test-hooks") {
        panic!("TEST CANNOT RUN: it kills builds through WINGOLD_TEST_KILL_AT; run it with --features test-hooks (make test does)");
    }
    let site = site(true);
    let golden_dir = site.dir.join("golden");
    let base_sha = sha256_file(&site.phony.image);
    ok(&build(&site, &[]).0);
    let mut previous = sha256_file(&site.golden);
    let mut hits = std::collections::BTreeMap::<&str, (u32, u32)>::new();
    let delays = pattern(99, 8);
    let rounds = PHASES.len() * 2 + delays.len();
    for round in 0..rounds {
        // Each round changes an input, so a finished build makes a new version.
        let reg = site.dir.join("round.reg");
        std::fs::write(
            &reg,
            format!(
                "Windows Registry Editor Version 5.00\r\n\r\n\
                 [HKEY_LOCAL_MACHINE\\SOFTWARE\\Wingold]\r\n\"Round\"=dword:{round:08x}\r\n"
            ),
        )
        .unwrap();
        if round == 0 {
            add_regfile_path(&site, "round.reg");
        }
        let mut cmd = wingold();
        cmd.args(["build", "-c", s(&site.dir.join("wingold.toml"))])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let phase = PHASES.get(round % (PHASES.len() + 1)).copied();
        let status = match phase.filter(|_| round < PHASES.len() * 2) {
            Some(p) => cmd.env("WINGOLD_TEST_KILL_AT", p).status().unwrap(),
            None => {
                let mut child = cmd.spawn().unwrap();
                let d = delays[round % delays.len()] as u64;
                std::thread::sleep(std::time::Duration::from_millis(20 + d % 400));
                let _ = child.kill();
                child.wait().unwrap()
            }
        };
        let now = sha256_file(&site.golden);
        assert_qemu_check_clean(&site.golden);
        let whole_new = now != previous;
        if whole_new {
            // Only a finished image is ever linked: its manifest names its bytes.
            assert_eq!(manifest_of(&site.golden)["output"]["sha256"], now.as_str());
        }
        let label = match (phase, status.code()) {
            (_, Some(0)) => "finished",
            (Some(p), _) if round < PHASES.len() * 2 => p,
            _ => "random",
        };
        let h = hits.entry(label).or_default();
        if whole_new {
            h.1 += 1;
        } else {
            h.0 += 1;
        }
        previous = now;
        assert_eq!(sha256_file(&site.phony.image), base_sha, "the base changed");
    }
    // Every phase was hit; the ones before the link left the previous version,
    // the link itself the new one.
    for (i, p) in PHASES.iter().enumerate() {
        let (old, new) = hits.get(p).copied().unwrap_or_default();
        assert!(old + new > 0, "phase {p} never hit: {hits:?}");
        if i + 1 < PHASES.len() {
            assert_eq!(
                new, 0,
                "killed in {p}, the new version was linked: {hits:?}"
            );
        } else {
            assert_eq!(
                old, 0,
                "killed after linking, the old version stayed: {hits:?}"
            );
        }
    }
    eprintln!("kills per phase (previous kept, new linked): {hits:?}");
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
    // The folder is made when missing.
    let vms = site.dir.join("vms/rack1");
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

/// Adds a regfile to the site's config, so that the next build makes a new version.
fn add_regfile(site: &Site, name: &str, value: u32) {
    let reg = site.dir.join(name);
    std::fs::write(
        &reg,
        format!(
            "Windows Registry Editor Version 5.00\r\n\r\n\
             [HKEY_LOCAL_MACHINE\\SOFTWARE\\Wingold\\Test]\r\n\"{name}\"=dword:{value:08x}\r\n"
        ),
    )
    .unwrap();
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = match text.find("regfiles = [") {
        Some(_) => text.replace("regfiles = [", &format!("regfiles = [\"{name}\", ")),
        None => text.replace(
            "[golden]\n",
            &format!("[golden]\nregfiles = [\"{name}\"]\n"),
        ),
    };
    std::fs::write(&cfg, text).unwrap();
}

/// Lists an existing file as a regfile of the site's config.
fn add_regfile_path(site: &Site, name: &str) {
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "[golden]\n",
        &format!("[golden]\nregfiles = [\"{name}\"]\n"),
    );
    std::fs::write(&cfg, text).unwrap();
}

fn clone(site: &Site, id: u32, dir: &Path) -> Value {
    std::fs::create_dir_all(dir).unwrap();
    let out = wingold()
        .args(["clone", s(&site.golden), "--id", &id.to_string()])
        .args([
            "--dir",
            s(dir),
            "--net",
            "none",
            "--vnc",
            "none",
            "--accel",
            "tcg",
        ])
        .arg("--json")
        .output()
        .unwrap();
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn inspect_json(image: &Path) -> Value {
    let out = wingold()
        .args(["inspect", "--json", s(image)])
        .output()
        .unwrap();
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_rebuild_never_changes_an_existing_clone() {
    let site = site(false);
    ok(&build(&site, &[]).0);
    let v1 = std::fs::canonicalize(&site.golden).unwrap();
    let vms = site.dir.join("vms");
    clone(&site, 12, &vms);
    let vm12 = vms.join("vm_12.qcow2");
    let chain = run_json(
        "qemu-img",
        &["info", "--backing-chain", "--output=json", s(&vm12)],
    );
    assert_eq!(chain[0]["backing-filename"], s(&v1), "{chain}");
    let before = qemu_view(&vm12, &site.dir);

    add_regfile(&site, "second.reg", 2);
    let (out, j) = build(&site, &[]);
    ok(&out);
    assert_eq!(j["up_to_date"], false);
    let v2 = std::fs::canonicalize(&site.golden).unwrap();
    assert_ne!(v1, v2, "the rebuild did not make a new version");
    assert!(v1.exists(), "the old version went away under its clone");
    assert!(
        qemu_view(&vm12, &site.dir) == before,
        "the clone's disk changed under it"
    );
    assert_qemu_check_clean(&vm12);

    // A clone made now rests on the new version; inspect tells them apart.
    let j13 = clone(&site, 13, &vms);
    assert_eq!(j13["backing"], s(&v2));
    let old = inspect_json(&vm12);
    assert_eq!(old["golden"]["version"], s(&v1), "{}", old["golden"]);
    assert_eq!(old["golden"]["newer_available"], true);
    assert_eq!(old["golden"]["current"], s(&v2));
    let new = inspect_json(&vms.join("vm_13.qcow2"));
    assert_eq!(new["golden"]["version"], s(&v2));
    assert_eq!(new["golden"]["newer_available"], false);
    let human = wingold().args(["inspect", s(&vm12)]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("a newer version exists"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
}

/// A paused QEMU (TCG) started by a clone's run recipe, holding the clone open.
struct RunningVm(std::process::Child);

impl RunningVm {
    fn start(script: &Path, golden_version: &Path) -> RunningVm {
        let child = std::process::Command::new("sh")
            .arg(script)
            .args(["-S", "-display", "none"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("TEST CANNOT RUN: sh");
        let vm = RunningVm(child);
        // QEMU has the chain open once it holds the golden version's locks.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !lock_held(golden_version) {
            assert!(
                std::time::Instant::now() < deadline,
                "TEST CANNOT RUN: QEMU did not open {} (is qemu-system-x86 installed? make setup)",
                golden_version.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        vm
    }
}

impl Drop for RunningVm {
    fn drop(&mut self) {
        // sh execs QEMU, so this is QEMU's pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether qemu-img refuses to open the image for writing because it is held.
fn lock_held(image: &Path) -> bool {
    let out = std::process::Command::new("qemu-io")
        .args(["-c", "quit", s(image)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).contains("lock")
}

#[test]
fn gc_keeps_what_clones_use_and_running_vms_hold() {
    let site = site(false);
    let gc = |extra: &[&str]| -> Value {
        let out = wingold()
            .args(["gc", s(&site.golden), "--json"])
            .args(extra)
            .output()
            .unwrap();
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let verdicts = |j: &Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = j
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().to_owned(),
                    e["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    // v1: a clone in vms/ uses it.
    ok(&build(&site, &[]).0);
    let v1 = std::fs::canonicalize(&site.golden).unwrap();
    clone(&site, 1, &site.dir.join("vms"));
    // v2: a VM runs on a clone kept elsewhere; the rebuild after it still succeeds.
    add_regfile(&site, "two.reg", 2);
    ok(&build(&site, &[]).0);
    let v2 = std::fs::canonicalize(&site.golden).unwrap();
    let elsewhere = site.dir.join("elsewhere");
    clone(&site, 2, &elsewhere);
    let _vm = RunningVm::start(&elsewhere.join("vm_2.sh"), &v2);
    // v3: nobody uses it.
    add_regfile(&site, "three.reg", 3);
    ok(&build(&site, &[]).0);
    let v3 = std::fs::canonicalize(&site.golden).unwrap();
    // v4: the current one.
    add_regfile(&site, "four.reg", 4);
    let (out, _) = build(&site, &[]);
    ok(&out);
    let v4 = std::fs::canonicalize(&site.golden).unwrap();
    assert_eq!(
        [&v1, &v2, &v3, &v4]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        4
    );

    let vms = s(&site.dir.join("vms")).to_owned();
    let dry = gc(&["--keep", "0", "--clones", &vms, "--dry-run"]);
    let expect = |v3_verdict: &str| {
        let mut e = vec![
            (
                s(&v1).to_owned(),
                format!("used by {}", s(&site.dir.join("vms/vm_1.qcow2"))),
            ),
            (s(&v2).to_owned(), "held by a running VM".to_owned()),
            (s(&v3).to_owned(), v3_verdict.to_owned()),
            (s(&v4).to_owned(), "current".to_owned()),
        ];
        e.sort();
        e
    };
    assert_eq!(verdicts(&dry), expect("would be removed"));
    assert!(v3.exists(), "--dry-run removed something");
    let done = gc(&["--keep", "0", "--clones", &vms]);
    assert_eq!(verdicts(&done), expect("removed"));
    assert!(!v3.exists() && v1.exists() && v2.exists() && v4.exists());
    let mut v3_manifest = v3.file_name().unwrap().to_owned();
    v3_manifest.push(".manifest.json");
    assert!(!v3.with_file_name(v3_manifest).exists());
    // --keep 1 keeps the newest besides the current one (they are the same here).
    drop(_vm);
    let after = gc(&["--keep", "1"]);
    let removed: Vec<_> = verdicts(&after)
        .into_iter()
        .filter(|(_, v)| v == "removed")
        .map(|(p, _)| p)
        .collect();
    assert_eq!(removed, {
        let mut r = vec![s(&v1).to_owned(), s(&v2).to_owned()];
        r.sort();
        r
    });
    assert!(v4.exists() && std::fs::canonicalize(&site.golden).unwrap() == v4);
}

/// gc reads clone folders as an administrator lays them out: a folder that is a
/// symbolic link (with a loop beside it), a clone whose backing name is QEMU's
/// `json:{…}` form; and while one backing name cannot be followed (a FIFO here)
/// it removes nothing, says which, and does not hang on it.
#[test]
fn gc_follows_links_and_json_names_and_removes_nothing_it_cannot_account_for() {
    let site = site(false);
    ok(&build(&site, &[]).0);
    let v1 = std::fs::canonicalize(&site.golden).unwrap();
    let real = site.dir.join("srv/vms/prod");
    clone(&site, 1, &real);
    let vms = site.dir.join("vms");
    std::fs::create_dir_all(&vms).unwrap();
    std::os::unix::fs::symlink(&real, vms.join("prod")).unwrap();
    std::os::unix::fs::symlink(&vms, vms.join("loop")).unwrap();
    add_regfile(&site, "two.reg", 2);
    ok(&build(&site, &[]).0);
    let v2 = std::fs::canonicalize(&site.golden).unwrap();
    clone(&site, 2, &vms);
    let json = format!(
        "json:{{\"driver\":\"qcow2\",\"file\":{{\"driver\":\"file\",\"filename\":\"{}\"}}}}",
        v2.display()
    );
    run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-F",
            "qcow2",
            "-b",
            &json,
            s(&vms.join("vm_2.qcow2")),
        ],
    );
    add_regfile(&site, "three.reg", 3);
    ok(&build(&site, &[]).0);
    let v3 = std::fs::canonicalize(&site.golden).unwrap();
    add_regfile(&site, "four.reg", 4);
    ok(&build(&site, &[]).0);

    let gc = |extra: &[&str]| -> std::collections::BTreeMap<PathBuf, String> {
        let start = std::time::Instant::now();
        let out = wingold()
            .args([
                "gc",
                s(&site.golden),
                "--json",
                "--keep",
                "0",
                "--clones",
                s(&vms),
            ])
            .args(extra)
            .output()
            .unwrap();
        ok(&out);
        assert!(
            start.elapsed().as_secs() < 60,
            "gc took {:?}",
            start.elapsed()
        );
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        j.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    PathBuf::from(e["path"].as_str().unwrap()),
                    e["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let dry = gc(&["--dry-run"]);
    assert!(
        dry[&v1].starts_with("used by ") && dry[&v1].contains("vm_1.qcow2"),
        "{dry:?}"
    );
    assert!(
        dry[&v2].starts_with("used by ") && dry[&v2].contains("vm_2.qcow2"),
        "{dry:?}"
    );
    assert_eq!(dry[&v3], "would be removed", "{dry:?}");

    // A clone whose backing file is a FIFO: nothing removed, and it is named.
    let fifo = vms.join("stray-base");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-u",
            "-F",
            "raw",
            "-b",
            s(&fifo),
            s(&vms.join("stray.qcow2")),
            "1G",
        ],
    );
    let kept = gc(&[]);
    assert!(
        kept[&v3].starts_with("kept: ") && kept[&v3].contains("stray.qcow2"),
        "{kept:?}"
    );
    assert!(v1.exists() && v2.exists() && v3.exists());

    std::fs::remove_file(vms.join("stray.qcow2")).unwrap();
    let done = gc(&[]);
    assert_eq!(done[&v3], "removed", "{done:?}");
    assert!(!v3.exists() && v1.exists() && v2.exists());
}

/// Every way of naming an input as the output: refused before anything is written,
/// one line naming both, every input byte-identical afterwards.
#[test]
fn an_output_that_is_an_input_is_refused() {
    let site = site(false);
    // The base as an overlay over a second file, so its backing file is an input too.
    let top = site.dir.join("base/top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            s(&site.phony.image),
            s(&top),
        ],
    );
    let reg = site.dir.join("extra.reg");
    std::fs::write(
        &reg,
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\r\n",
    )
    .unwrap();
    std::fs::create_dir_all(site.dir.join("golden")).unwrap();
    let cfg_path = site.dir.join("wingold.toml");
    let iso = site.dir.join("virtio-win-0.1.999.iso");
    // Every input, under every spelling: its own path, a `./…/../` spelling, a
    // symlink and a hard link in the output folder.
    let named: [(&str, &Path, &str); 5] = [
        ("base/top.qcow2", &top, "the base image"),
        (
            "base/phony.qcow2",
            &site.phony.image,
            "a backing file of the base image",
        ),
        ("wingold.toml", &cfg_path, "the config"),
        ("extra.reg", &reg, "a regfile"),
        ("virtio-win-0.1.999.iso", &iso, "the virtio-win ISO"),
    ];
    let mut cases: Vec<(String, &str)> = Vec::new();
    for (i, (rel, path, what)) in named.iter().enumerate() {
        std::os::unix::fs::symlink(path, site.dir.join(format!("golden/sym-{i}"))).unwrap();
        std::fs::hard_link(path, site.dir.join(format!("golden/hard-{i}"))).unwrap();
        let dir = Path::new(rel).parent().unwrap().to_str().unwrap();
        let dotted = match dir {
            "" => format!("./{rel}"),
            d => format!("./{d}/../{rel}"),
        };
        cases.push((rel.to_string(), what));
        cases.push((dotted, what));
        cases.push((format!("golden/sym-{i}"), what));
        cases.push((format!("golden/hard-{i}"), what));
    }
    let inputs = [&top, &site.phony.image, &reg, &iso];
    let hashes: Vec<String> = inputs.iter().map(|p| sha256_file(p)).collect();
    for (output, what) in &cases {
        let cfg = format!(
            "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\ncache = \"cache\"\n\n\
             [base]\nimage = \"base/top.qcow2\"\n\n\
             [golden]\noutput = \"{output}\"\nregfiles = [\"extra.reg\"]\n"
        );
        std::fs::write(&cfg_path, &cfg).unwrap();
        let (out, _) = build(&site, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{output}: {err}");
        assert!(
            err.contains(what) && err.contains("can never be an input"),
            "{output}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{output}: {err}");
        assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), cfg, "{output}");
        for (p, h) in inputs.iter().zip(&hashes) {
            assert_eq!(&sha256_file(p), h, "{output}: {} changed", p.display());
        }
        assert!(!site.dir.join("cache").exists(), "{output}: fetched first");
    }
    // An output inside a tree copied into the guest: refused before the lock
    // file or anything else is made in that tree.
    std::fs::create_dir_all(site.dir.join("payload/sub")).unwrap();
    std::fs::write(site.dir.join("payload/readme.txt"), "x").unwrap();
    let tree_before: Vec<_> = walkdir::WalkDir::new(site.dir.join("payload"))
        .into_iter()
        .map(|e| e.unwrap().path().to_owned())
        .collect();
    for output in ["payload/win.qcow2", "payload/sub/win.qcow2"] {
        let cfg = format!(
            "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\ncache = \"cache\"\n\n\
             [base]\nimage = \"base/top.qcow2\"\n\n[golden]\noutput = \"{output}\"\n\n\
             [[files]]\nfrom = \"payload\"\nto = \"C:\\\\Payload\"\n"
        );
        std::fs::write(&cfg_path, &cfg).unwrap();
        let (out, _) = build(&site, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{output}: {err}");
        assert!(
            err.contains("inside") && err.contains("payload"),
            "{output}: {err}"
        );
        let tree_after: Vec<_> = walkdir::WalkDir::new(site.dir.join("payload"))
            .into_iter()
            .map(|e| e.unwrap().path().to_owned())
            .collect();
        assert_eq!(
            tree_after, tree_before,
            "{output}: something was left in the tree"
        );
    }
    // inject: the image, its backing file, a .reg file, also through a symlink.
    for (output, what) in [
        (top.clone(), "the image"),
        (site.dir.join("golden/sym-0"), "the image"),
        (site.dir.join("golden/hard-0"), "the image"),
        (site.phony.image.clone(), "a backing file of the image"),
        (reg.clone(), "a .reg file"),
    ] {
        let out = wingold()
            .args(["inject", s(&top), "--output", s(&output), "--reg", s(&reg)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", output.display());
        assert!(err.contains(what), "{}: {err}", output.display());
        for (p, h) in inputs.iter().zip(&hashes) {
            assert_eq!(&sha256_file(p), h, "{} changed", p.display());
        }
    }
}

#[test]
fn golden_versions_and_older_golden_files_are_never_written() {
    let site = site(false);
    ok(&build(&site, &[]).0);
    let version = std::fs::canonicalize(&site.golden).unwrap();
    let before = sha256_file(&version);
    for target in [&site.golden, &version] {
        let out = wingold()
            .args(["inject", s(target), "--in-place", "--profile", "all"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("golden version"), "{err}");
        assert_eq!(sha256_file(&version), before);
    }
    // A golden image from before versions (a plain file at the stable name) is
    // not replaced: its clones rest on it.
    std::fs::remove_file(&site.golden).unwrap();
    std::fs::copy(&version, &site.golden).unwrap();
    let legacy = sha256_file(&site.golden);
    let (out, _) = build(&site, &["--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("clones may rest on it"), "{err}");
    assert!(!std::fs::symlink_metadata(&site.golden)
        .unwrap()
        .is_symlink());
    assert_eq!(sha256_file(&site.golden), legacy);
}

#[test]
fn a_changed_first_boot_script_or_copied_in_tree_rebuilds() {
    let site = site(false);
    std::fs::write(site.dir.join("setup.cmd"), "@echo off\r\necho one\r\n").unwrap();
    std::fs::create_dir_all(site.dir.join("payload")).unwrap();
    std::fs::write(site.dir.join("payload/tool.txt"), "v1").unwrap();
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg).unwrap()
        + "\n[firstboot]\nscripts = [\"setup.cmd\"]\n\n[[files]]\nfrom = \"payload\"\nto = 'C:\\Tools'\n";
    std::fs::write(&cfg, text).unwrap();
    let (out, first) = build(&site, &[]);
    ok(&out);
    let m = manifest_of(&site.golden);
    assert!(m["first_boot"]["queue"]
        .to_string()
        .contains("6000-setup.cmd"));
    let (_, again) = build(&site, &[]);
    assert_eq!(again["up_to_date"], true);
    std::fs::write(site.dir.join("setup.cmd"), "@echo off\r\necho two\r\n").unwrap();
    let (out, changed) = build(&site, &[]);
    ok(&out);
    assert_eq!(
        changed["up_to_date"], false,
        "a changed script must rebuild"
    );
    assert_ne!(changed["version"], first["version"]);
    std::fs::write(site.dir.join("payload/tool.txt"), "v2 longer").unwrap();
    let (out, tree) = build(&site, &[]);
    ok(&out);
    assert_eq!(tree["up_to_date"], false, "a changed tree must rebuild");
}

/// Temporary files a killed run left — of any name: a manifest's, an image's, an
/// OCI layout's `index.json` or blob — are cleared by the next run that writes
/// there; a live process's are kept.
#[test]
fn temporary_files_of_killed_runs_are_cleared_by_the_next_run() {
    let site = site(false);
    ok(&build(&site, &[]).0);
    let golden_dir = site.golden.parent().unwrap().to_owned();
    let layout = site.dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let inject_dir = site.dir.join("injected");
    std::fs::create_dir_all(&inject_dir).unwrap();
    // 4194399 is above Linux's largest pid_max: no process has it.
    let dead = 4_194_399;
    let live = std::process::id();
    let plant = |dir: &Path, name: &str| -> (PathBuf, PathBuf) {
        let d = dir.join(format!(".{name}.wingold-tmp.{dead}"));
        let l = dir.join(format!(".{name}.wingold-tmp.{live}"));
        std::fs::write(&d, "left by a killed run").unwrap();
        std::fs::write(&l, "a live run's").unwrap();
        // Left alone for an hour (a dead pid's fresh file is kept: another PID
        // namespace may be writing it).
        for f in [&d, &l] {
            run("touch", &["-d", "1 hour ago", s(f)]);
        }
        (d, l)
    };
    let planted = [
        plant(&golden_dir, "win-000000000000.qcow2.manifest.json"),
        plant(&golden_dir, "other.qcow2"),
        plant(&layout, "index.json"),
        plant(&layout.join("blobs/sha256"), "0123abcd"),
        plant(&inject_dir, "someone-else.qcow2"),
    ];
    add_regfile(&site, "two.reg", 2);
    ok(&build(&site, &[]).0);
    let out = wingold()
        .args(["publish", s(&site.golden), "--oci-layout", s(&layout)])
        .output()
        .unwrap();
    ok(&out);
    let out = wingold()
        .args(["inject", s(&site.phony.image), "--output"])
        .arg(inject_dir.join("out.qcow2"))
        .args(["--profile", "all"])
        .output()
        .unwrap();
    ok(&out);
    for (d, l) in &planted {
        assert!(!d.exists(), "{} was left", d.display());
        assert!(l.exists(), "{} (a live run's) was removed", l.display());
    }
}

/// A NUL in a path the config names is bad input (exit 2), not an I/O failure.
#[test]
fn a_nul_in_a_config_path_is_refused() {
    let site = site(false);
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("golden/win.qcow2", "golden/w\\u0000in.qcow2");
    std::fs::write(&cfg, text).unwrap();
    let (out, _) = build(&site, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("NUL"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!site.dir.join("golden").exists());
}

/// `[firstboot] guest_agent = true`: the fetched ISO's agent is in the golden
/// image and its manifest, turning it on changes the build's identity (a
/// rebuild), and the NIC watchdog's settings too.
#[test]
fn the_guest_agent_and_the_watchdog_are_part_of_the_build() {
    let site = site(false);
    let (out, first) = build(&site, &[]);
    ok(&out);
    let cfg = site.dir.join("wingold.toml");
    let text = std::fs::read_to_string(&cfg).unwrap()
        + "\n[firstboot]\nguest_agent = true\nnic_watchdog = true\n";
    std::fs::write(&cfg, text).unwrap();
    let (out, second) = build(&site, &[]);
    ok(&out);
    assert_eq!(second["up_to_date"], false, "the agent changes the build");
    assert_ne!(second["version"], first["version"]);
    let m = manifest_of(&site.golden);
    let queue = m["first_boot"]["queue"].to_string();
    assert!(
        queue.contains("3000-guest-agent.cmd") && queue.contains("5200-nic-watchdog.cmd"),
        "{queue}"
    );
    let msi = m["first_boot"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["to"] == "Windows\\wingold\\qemu-ga-x86_64.msi")
        .cloned()
        .expect("the agent's MSI in the manifest");
    // The same bytes as the ISO holds, as xorriso extracts them.
    let extracted = site.dir.join("qemu-ga.msi");
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            s(&site.dir.join("virtio-win-0.1.999.iso")),
            "-extract",
            "/guest-agent/qemu-ga-x86_64.msi",
            s(&extracted),
        ],
    );
    assert_eq!(
        msi["sha256"],
        wingold::fsutil::sha256_hex(&std::fs::read(&extracted).unwrap()),
        "{msi}"
    );
    assert!(m["drivers"]["drivers"]
        .to_string()
        .to_ascii_lowercase()
        .contains("vioserial"));
}
