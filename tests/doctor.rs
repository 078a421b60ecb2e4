//! `wingold doctor`: the host's tools found as the test machine has them
//! (`make setup` installs QEMU, OVMF, swtpm and rhsrvany), and the confinement
//! proven live: a worker reading /etc/passwd is refused, one opening a socket is
//! killed by its filter.

use wingold_test_support as support;

use support::*;

#[test]
fn doctor_finds_the_tools_and_proves_the_confinement() {
    let (code, json, err) = wingold_json("doctor", &[]);
    assert_eq!(code, Some(0), "{err}\n{json:#}");
    assert_eq!(json["ready"], true);
    let check = |name: &str| {
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {json:#}"))
            .clone()
    };
    // What make setup installs is found, with the version the tool itself gives.
    let qemu = check("QEMU");
    assert_eq!(qemu["ok"], true, "{qemu}");
    let theirs = run("qemu-system-x86_64", &["--version"]);
    let first = String::from_utf8_lossy(&theirs.stdout)
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(qemu["detail"], first);
    for name in [
        "OVMF",
        "swtpm",
        "rhsrvany",
        "libntfs-3g",
        "libhivex",
        "cache",
    ] {
        assert_eq!(check(name)["ok"], true, "{name}: {json:#}");
    }
    let p = &json["confinement"];
    assert!(
        p["landlock_abi"].as_i64().unwrap_or(0) >= 1,
        "TEST CANNOT RUN: no Landlock in this kernel: {p}"
    );
    assert_eq!(p["read_refused"], true, "{p}");
    assert_eq!(p["socket_killed"], true, "{p}");

    // The text report says the same, one line per check.
    let out = succeeds(wingold().arg("doctor"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/etc/passwd: refused (EACCES)"), "{text}");
    assert!(text.contains("killed by its filter (SIGSYS)"), "{text}");
    assert!(text.contains("wingold build can run here"), "{text}");
}

#[test]
fn doctor_fails_when_the_cache_cannot_be_written() {
    // A cache folder under a regular file can be neither made nor written.
    let tmp = tempdir();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let (code, json, _) = wingold_json("doctor", &["--cache", s(&blocker.join("cache"))]);
    assert_eq!(code, Some(1), "{json:#}");
    assert_eq!(json["ready"], false);
}

#[test]
fn a_relative_cache_folder_is_looked_for_from_the_current_one() {
    // `--cache not-yet/cache` where neither exists: the nearest folder is `.`.
    let tmp = tempdir();
    let out = wingold()
        .current_dir(tmp.path())
        .args(["doctor", "--json", "--cache", "not-yet/cache"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cache = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cache")
        .unwrap()
        .clone();
    assert_eq!(cache["ok"], true, "{cache}");
    assert_eq!(out.status.code(), Some(0));
}
