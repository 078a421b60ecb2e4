//! `wingold inject` end to end: every setting reads back with hivexget from the hive
//! that ntfscat extracts from the output; the input is never written.

use wingold_test_support as support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::fixtures::{self, PhonyWindows, WIN2K22_X64, WIN2K3R2_X86};
use support::*;

fn inject(args: &[&str]) -> (Option<i32>, Value, String) {
    wingold_json("inject", args)
}

/// The hive `name` as ntfscat reads it from the Windows partition of `image`.
fn extract_hive(image: &Path, w: &PhonyWindows, root: &str, name: &str, dir: &Path) -> PathBuf {
    let part = dir.join(format!("{name}.part.raw"));
    fixtures::extract_partition(image, w.win_offset, w.win_size, &part);
    let hive = dir.join(format!("{name}.extracted"));
    let data = run(
        "ntfscat",
        &[s(&part), &format!("/{root}/System32/config/{name}")],
    )
    .stdout;
    std::fs::write(&hive, data).unwrap();
    let fix = run("ntfsfix", &["-n", s(&part)]);
    assert!(String::from_utf8_lossy(&fix.stdout).contains("processed successfully"));
    std::fs::remove_file(part).unwrap();
    hive
}

fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    let out = run("hivexget", &[s(hive), key, value]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// (key under the hive root, value, expected hivexget output)
type Expect = (&'static str, &'static str, &'static str);

const SYSTEM_COMMON: &[Expect] = &[
    (
        "\\ControlSet001\\Control\\CrashControl",
        "CrashDumpEnabled",
        "3",
    ),
    ("\\ControlSet001\\Control\\CrashControl", "AutoReboot", "1"),
    ("\\ControlSet001\\Control\\CrashControl", "Overwrite", "1"),
    ("\\ControlSet001\\Control\\CrashControl", "LogEvent", "1"),
];

const SOFTWARE_COMMON: &[Expect] = &[
    (
        "\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU",
        "NoAutoUpdate",
        "1",
    ),
    (
        "\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU",
        "AUOptions",
        "1",
    ),
    (
        "\\Microsoft\\Windows\\CurrentVersion\\Policies\\System",
        "ShutdownWithoutLogon",
        "1",
    ),
    (
        "\\Microsoft\\Windows\\CurrentVersion\\Policies\\System",
        "DisableCAD",
        "1",
    ),
    (
        "\\Microsoft\\Windows NT\\CurrentVersion\\Windows",
        "ShutdownWarningDialogTimeout",
        "3",
    ),
    (
        "\\Policies\\Microsoft\\Windows NT\\Reliability",
        "ShutdownReasonOn",
        "0",
    ),
    (
        "\\Policies\\Microsoft\\Windows NT\\Reliability",
        "ShutdownReasonUI",
        "0",
    ),
];

fn check_all(
    image: &Path,
    w: &PhonyWindows,
    root: &str,
    dir: &Path,
    system: &[Expect],
    software: &[Expect],
) {
    let sys = extract_hive(image, w, root, "SYSTEM", dir);
    for (k, v, want) in SYSTEM_COMMON.iter().chain(system) {
        assert_eq!(hivexget(&sys, k, v), *want, "SYSTEM {k}\\{v}");
    }
    let soft = extract_hive(image, w, root, "SOFTWARE", dir);
    for (k, v, want) in SOFTWARE_COMMON.iter().chain(software) {
        assert_eq!(hivexget(&soft, k, v), *want, "SOFTWARE {k}\\{v}");
    }
}

#[test]
fn all_profiles_on_server_2003_r2() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K3R2_X86, vec![]);
    let before = sha256_file(&w.image);
    let out = dir.path().join("golden.qcow2");
    let (code, json, err) = inject(&[s(&w.image), "--output", s(&out), "--profile", "all"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["windows"]["family"], "nt5");
    assert_eq!(json["verified"], true);
    assert_eq!(sha256_file(&w.image), before, "the input image was written");
    assert_qemu_check_clean(&out);
    check_all(
        &out,
        &w,
        "WINDOWS",
        dir.path(),
        &[
            ("\\ControlSet001\\Control\\CrashControl", "SendAlert", "0"),
            (
                "\\ControlSet001\\Services\\AFD\\Parameters",
                "DefaultSendWindow",
                "1048576",
            ),
            (
                "\\ControlSet001\\Services\\AFD\\Parameters",
                "DefaultReceiveWindow",
                "1048576",
            ),
            (
                "\\ControlSet001\\Services\\AFD\\Parameters",
                "FastSendDatagramThreshold",
                "16384",
            ),
            (
                "\\ControlSet001\\Services\\Tcpip\\Parameters",
                "Tcp1323Opts",
                "1",
            ),
            (
                "\\ControlSet001\\Services\\Tcpip\\Parameters",
                "TcpWindowSize",
                "1048576",
            ),
        ],
        &[(
            "\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update",
            "AUOptions",
            "1",
        )],
    );
}

#[test]
fn all_profiles_on_server_2022_with_the_real_system_hive() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let before = sha256_file(&w.image);
    let out = dir.path().join("golden.qcow2");
    let (code, json, err) = inject(&[s(&w.image), "--output", s(&out), "--profile", "all"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["windows"]["family"], "nt6");
    assert_eq!(sha256_file(&w.image), before);
    assert_qemu_check_clean(&out);
    check_all(
        &out,
        &w,
        "Windows",
        dir.path(),
        &[(
            "\\ControlSet001\\Services\\Tcpip\\Parameters",
            "EnableWsd",
            "0",
        )],
        &[],
    );
    // NT 6 gets no NT 5-only values, and the netsh-only parts are first-boot commands.
    let sys = extract_hive(&out, &w, "Windows", "SYSTEM", dir.path());
    let r = std::process::Command::new("hivexget")
        .args([
            s(&sys),
            "\\ControlSet001\\Control\\CrashControl",
            "SendAlert",
        ])
        .output()
        .unwrap();
    assert!(!r.status.success(), "SendAlert was written on NT 6");
    assert!(json["first_boot_commands"].as_array().unwrap().len() == 2);
    // The stale transaction log beside SYSTEM was emptied.
    assert!(json["logs_truncated"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().ends_with("SYSTEM.LOG1")));
}

#[test]
fn second_inject_changes_nothing() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let first = dir.path().join("first.qcow2");
    let (code, json, err) = inject(&[s(&w.image), "--output", s(&first), "--profile", "all"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!json["changes"].as_array().unwrap().is_empty());
    let second = dir.path().join("second.qcow2");
    let (code, json, err) = inject(&[s(&first), "--output", s(&second), "--profile", "all"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["changes"].as_array().unwrap().len(), 0, "{json}");
    assert_eq!(json["hives_written"].as_array().unwrap().len(), 0);
    for hive in ["SYSTEM", "SOFTWARE"] {
        let a = extract_hive(&first, &w, "Windows", hive, dir.path());
        let a = std::fs::read(a).unwrap();
        let b = extract_hive(&second, &w, "Windows", hive, dir.path());
        assert!(
            a == std::fs::read(b).unwrap(),
            "{hive} changed on the second run"
        );
    }
}

#[test]
fn dry_run_writes_nothing_and_shows_the_plan() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let before = sha256_file(&w.image);
    let out = dir.path().join("never.qcow2");
    let (code, json, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--profile",
        "crash-dump",
        "--dry-run",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.exists());
    assert_eq!(sha256_file(&w.image), before);
    let changes = json["changes"].as_array().unwrap();
    let c = changes
        .iter()
        .find(|c| c["value"] == "CrashDumpEnabled")
        .unwrap();
    assert_eq!(c["hive"], "SYSTEM");
    assert_eq!(c["key"], "ControlSet001\\Control\\CrashControl");
    assert_eq!(c["new"]["type"], "REG_DWORD");
    assert_eq!(c["new"]["data"], "03000000");
    // The corpus SYSTEM hive has its own CrashDumpEnabled: the plan shows the old value.
    assert!(c["old"].is_object(), "{c}");
    assert_eq!(c["action"], "value_changed");
}

#[test]
fn in_place_writes_the_image_itself() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let (code, json, err) = inject(&[s(&w.image), "--in-place", "--profile", "auto-update"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("in place"), "{err}");
    assert_eq!(json["verified"], true);
    let soft = extract_hive(&w.image, &w, "Windows", "SOFTWARE", dir.path());
    assert_eq!(
        hivexget(
            &soft,
            "\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU",
            "NoAutoUpdate"
        ),
        "1"
    );
}

#[test]
fn inspect_shows_each_profile_setting_before_and_after() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let settings = |image: &Path| -> Vec<Value> {
        let out = wingold()
            .args(["inspect", "--json", s(image)])
            .output()
            .unwrap();
        assert!(out.status.success());
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        r["settings"].as_array().unwrap().clone()
    };
    let before = settings(&w.image);
    let policy = before
        .iter()
        .find(|s| s["value"] == "NoAutoUpdate")
        .unwrap();
    assert!(
        policy["current"].is_null(),
        "absent shows as absent: {policy}"
    );
    assert_eq!(policy["matches"], false);
    let out = dir.path().join("golden.qcow2");
    let (code, _, err) = inject(&[s(&w.image), "--output", s(&out), "--profile", "all"]);
    assert_eq!(code, Some(0), "{err}");
    let after = settings(&out);
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|s| s["matches"] == true), "{after:?}");
}
