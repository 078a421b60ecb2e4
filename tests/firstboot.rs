//! The first-boot queue: the runner's logic executed by a `cmd` that is not ours
//! (Wine's), and what `inject` writes for it read back with ntfs-3g's tools and
//! hivexget: service, runner, steps, scripts, copied-in trees and their security.

use wingold_test_support as support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::fixtures::{self, PhonyWindows, WIN2K22_X64};
use support::*;

const RUNNER: &str = include_str!("../assets/firstboot/firstboot.cmd");

fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// Runs `firstboot.cmd` in `dir` under Wine's cmd (a throwaway prefix), with the
/// reboot and service-disable commands replaced by echoes into the log.
fn wine_boot(dir: &Path, prefix: &Path) {
    let wine = Path::new("/usr/lib/wine/wine64");
    assert!(
        wine.exists(),
        "TEST CANNOT RUN: Wine is missing (/usr/lib/wine/wine64); make setup installs Debian's wine64"
    );
    let script = format!("Z:{}", dir.join("firstboot.cmd").display()).replace('/', "\\");
    let out = Command::new(wine)
        .args(["cmd", "/c", &script])
        .env("WINEPREFIX", prefix)
        .env("WINEDEBUG", "-all")
        .env("WINGOLD_REBOOT", "echo REBOOT-REQUESTED")
        .env("WINGOLD_DISABLE", "echo SERVICE-DISABLED")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the runner exited {:?} under Wine: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn runner_runs_each_script_once_in_order_retries_three_times_and_never_loops() {
    let tmp = tempdir();
    let fb = tmp.path().join("firstboot");
    let queue = fb.join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::write(fb.join("firstboot.cmd"), crlf(RUNNER)).unwrap();
    let stub = |name: &str, body: &str| {
        std::fs::write(queue.join(name), crlf(&format!("@echo off\n{body}\n"))).unwrap();
    };
    stub("1000-succeeds.cmd", "echo STEP-SUCCEEDS\nexit /b 0");
    stub("2000-fails.cmd", "echo STEP-FAILS\nexit /b 5");
    // `exit` without /b would end the runner's own cmd if it were called in-process.
    stub("3000-asks-reboot.cmd", "echo STEP-REBOOT\nexit 3010");
    stub("4000-last.cmd", "echo STEP-LAST\nexit /b 0");
    let prefix = tmp.path().join("wineprefix");
    let log = fb.join("log.txt");
    let read_log = || std::fs::read_to_string(&log).unwrap();

    // Boot 1: the first script runs, the second fails and stops the queue.
    wine_boot(&fb, &prefix);
    assert_eq!(names(&fb.join("done")), ["1000-succeeds.cmd"]);
    assert!(names(&queue).contains(&"2000-fails.cmd".to_owned()));
    let text = read_log();
    assert!(
        text.contains("start 1000-succeeds.cmd (attempt 1 of 3)"),
        "{text}"
    );
    assert!(text.contains("end 2000-fails.cmd: exit code 5"), "{text}");
    assert!(!text.contains("STEP-REBOOT") && !text.contains("REBOOT-REQUESTED"));
    // Boots 2 and 3: the failing script again, then moved to failed\ on its third
    // failure; the queue goes on to the script that asks for a reboot.
    wine_boot(&fb, &prefix);
    assert!(read_log().contains("start 2000-fails.cmd (attempt 2 of 3)"));
    assert!(!read_log().contains("STEP-REBOOT"));
    wine_boot(&fb, &prefix);
    let text = read_log();
    assert!(
        text.contains("2000-fails.cmd failed 3 times: moved to failed"),
        "{text}"
    );
    assert_eq!(
        names(&fb.join("failed")),
        ["2000-fails.cmd", "2000-fails.cmd.tries"]
    );
    assert!(
        text.contains("end 3000-asks-reboot.cmd: exit code 3010"),
        "{text}"
    );
    assert_eq!(text.matches("REBOOT-REQUESTED").count(), 1, "{text}");
    assert!(!text.contains("STEP-LAST"), "ran on past a reboot request");
    // Boot 4: the last script, then the service disables itself.
    wine_boot(&fb, &prefix);
    let text = read_log();
    assert!(text.contains("STEP-LAST"));
    assert!(text.contains("SERVICE-DISABLED"));
    assert_eq!(
        names(&fb.join("done")),
        ["1000-succeeds.cmd", "3000-asks-reboot.cmd", "4000-last.cmd"]
    );
    assert!(names(&queue).is_empty(), "{:?}", names(&queue));
    // Order: each script started after the one before it ended.
    let order: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(" start ").nth(1))
        .collect();
    assert_eq!(
        order,
        [
            "1000-succeeds.cmd (attempt 1 of 3)",
            "2000-fails.cmd (attempt 1 of 3)",
            "2000-fails.cmd (attempt 2 of 3)",
            "2000-fails.cmd (attempt 3 of 3)",
            "3000-asks-reboot.cmd (attempt 1 of 3)",
            "4000-last.cmd (attempt 1 of 3)",
        ]
    );
    // Boot 5 (should the service still start): nothing runs, nothing reboots.
    let before = read_log();
    wine_boot(&fb, &prefix);
    let after = read_log();
    let new = &after[before.len()..];
    assert!(!new.contains(" start ") && !new.contains("REBOOT"), "{new}");
    assert!(new.contains("queue empty"), "{new}");
}

fn inject(args: &[&str]) -> (Option<i32>, Value, String) {
    wingold_json("inject", args)
}

fn partition(image: &Path, w: &PhonyWindows, dir: &Path) -> PathBuf {
    let part = dir.join("win.part.raw");
    fixtures::extract_partition(image, w.win_offset, w.win_size, &part);
    let fix = run("ntfsfix", &["-n", s(&part)]);
    assert!(String::from_utf8_lossy(&fix.stdout).contains("processed successfully"));
    part
}

fn ntfscat(part: &Path, path: &str) -> Vec<u8> {
    run("ntfscat", &[s(part), path]).stdout
}

/// A self-relative security descriptor as (control, owner, group, DACL entries
/// as (type, flags, mask, SID)), whatever order its parts are stored in.
type Parsed = (u16, Vec<u8>, Vec<u8>, Vec<(u8, u8, u32, Vec<u8>)>);

fn parse_sd(b: &[u8]) -> Parsed {
    let u16_at = |at: usize| u16::from_le_bytes(b[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let sid = |at: usize| b[at..at + 8 + 4 * b[at + 1] as usize].to_vec();
    let dacl = u32_at(16) as usize;
    let mut aces = Vec::new();
    let mut at = dacl + 8;
    for _ in 0..u16_at(dacl + 4) {
        aces.push((b[at], b[at + 1], u32_at(at + 4), sid(at + 8)));
        at += u16_at(at + 2) as usize;
    }
    (
        u16_at(2),
        sid(u32_at(4) as usize),
        sid(u32_at(8) as usize),
        aces,
    )
}

/// The descriptor bytes ntfssecaudit dumps for `path` (its hex lines).
fn descriptor(part: &Path, path: &str) -> (Vec<u8>, String) {
    let out = run("ntfssecaudit", &["-v", s(part), path]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut bytes = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.len() == 6 && first.chars().all(|c| c.is_ascii_hexdigit()) {
            for w in words {
                for i in (0..w.len()).step_by(2) {
                    bytes.push(u8::from_str_radix(&w[i..i + 2], 16).unwrap());
                }
            }
        }
    }
    (bytes, text)
}

#[test]
fn inject_queues_steps_and_scripts_behind_a_service_with_restricted_files() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let iso = fixtures::virtio_iso(dir.path(), "0.1.999", 0);
    let script = dir.path().join("join domain.cmd");
    std::fs::write(&script, "@echo off\r\necho joining\r\n").unwrap();
    let tree = dir.path().join("payload");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("bin/agent.exe"), b"agent").unwrap();
    std::fs::write(tree.join("Ünïcode ✓.txt"), "unicode").unwrap();
    let out = dir.path().join("out.qcow2");
    let (code, j, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--profile",
        "all",
        "--drivers",
        s(&iso),
        "--firstboot",
        s(&script),
        "--copy-in",
        &format!("{}:C:\\Tools", tree.display()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let fb = &j["first_boot"];
    let queue: Vec<&str> = fb["queue"]
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
            "5100-tcpip-netsh.cmd",
            "6000-join_domain.cmd"
        ]
    );
    assert_eq!(fb["folder"], "C:\\Windows\\wingold\\firstboot");
    let binary = std::fs::read(fixtures_rhsrvany()).unwrap();
    assert_eq!(fb["service"]["binary_sha256"], sha256_hex(&binary));
    assert_qemu_check_clean(&out);
    let part = partition(&out, &w, dir.path());
    let fbdir = "/Windows/wingold/firstboot";
    assert_eq!(
        ntfscat(&part, &format!("{fbdir}/firstboot.cmd")),
        crlf(RUNNER).into_bytes()
    );
    assert_eq!(ntfscat(&part, &format!("{fbdir}/rhsrvany.exe")), binary);
    assert_eq!(
        ntfscat(&part, &format!("{fbdir}/queue/6000-join_domain.cmd")),
        std::fs::read(&script).unwrap()
    );
    let step = ntfscat(&part, &format!("{fbdir}/queue/2000-pnp-drivers.cmd"));
    assert!(
        step.windows(2).any(|w| w == b"\r\n")
            && !step.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
    );
    assert_eq!(ntfscat(&part, "/Tools/bin/agent.exe"), b"agent");
    assert_eq!(ntfscat(&part, "/Tools/Ünïcode ✓.txt"), b"unicode");
    // Security: SYSTEM and Administrators full, Users read and execute; the
    // folder's entries inherited by what the runner creates.
    for (path, folder) in [
        (fbdir.to_owned(), true),
        (format!("{fbdir}/queue"), true),
        (format!("{fbdir}/firstboot.cmd"), false),
        (format!("{fbdir}/queue/6000-join_domain.cmd"), false),
        ("/Tools/bin/agent.exe".to_owned(), false),
    ] {
        let (bytes, text) = descriptor(&part, &path);
        assert_eq!(
            parse_sd(&bytes),
            parse_sd(&wingold::firstboot::security::restricted(folder)),
            "{path}: {text}"
        );
        assert!(
            text.contains("Windows owner S-1-5-32-544"),
            "{path}: {text}"
        );
    }
    // The service, read by hivexget from the hive ntfscat extracts.
    let system = dir.path().join("SYSTEM");
    std::fs::write(&system, ntfscat(&part, "/Windows/System32/config/SYSTEM")).unwrap();
    let get = |key: &str, value: &str| {
        let out = run("hivexget", &[s(&system), key, value]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let svc = "\\ControlSet001\\Services\\wingold-firstboot";
    assert_eq!(get(svc, "Type"), "16");
    assert_eq!(get(svc, "Start"), "2");
    assert_eq!(get(svc, "ObjectName"), "LocalSystem");
    assert_eq!(
        get(svc, "ImagePath"),
        "\"C:\\Windows\\wingold\\firstboot\\rhsrvany.exe\" -s wingold-firstboot"
    );
    assert_eq!(
        get(&format!("{svc}\\Parameters"), "CommandLine"),
        "cmd /c \"C:\\Windows\\wingold\\firstboot\\firstboot.cmd\""
    );
    assert_eq!(
        get(&format!("{svc}\\Parameters"), "PWD"),
        "C:\\Windows\\wingold\\firstboot"
    );
    // inspect shows the queue.
    let r = wingold()
        .args(["inspect", "--json", s(&out)])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(
        r["first_boot"]["pending"].as_array().unwrap().len(),
        queue.len(),
        "{}",
        r["first_boot"]
    );
    // The SAN policy step, read back: diskpart told OnlineAll.
    let san = String::from_utf8(ntfscat(
        &part,
        "/Windows/wingold/firstboot/queue/1000-san-policy.cmd",
    ))
    .unwrap();
    assert!(
        san.contains("echo san policy=OnlineAll") && san.contains("diskpart /s"),
        "{san}"
    );
    assert_eq!(r["first_boot"]["service_start"], 2);
}

fn fixtures_rhsrvany() -> PathBuf {
    let p = PathBuf::from("/usr/share/virt-tools/rhsrvany.exe");
    assert!(
        p.exists(),
        "TEST CANNOT RUN: {} is missing; make setup installs Debian's rhsrvany",
        p.display()
    );
    p
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// `inject --copy-in TREE:C:\Tools` must be refused: exit 2, `want` in the one
/// line, no output.
fn copy_in_refused(tree: &Path, want: &str) {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let out = dir.path().join("out.qcow2");
    let before = sha256_file(&w.image);
    let (code, _, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--copy-in",
        &format!("{}:C:\\Tools", tree.display()),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(want), "wanted {want:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
    assert_eq!(sha256_file(&w.image), before);
}

#[test]
fn copy_in_refuses_names_windows_cannot_hold() {
    for (bad, want) in [
        ("what?.txt", "what?.txt"),
        ("a<b", "a<b"),
        ("pipe|name", "pipe|name"),
        ("trailing.", "trailing."),
        ("trailing ", "trailing "),
        ("CON", "device name"),
        ("nul.txt", "device name"),
        ("tab\tname", "control character"),
    ] {
        let tmp = tempdir();
        let tree = tmp.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub").join(bad), "x").unwrap();
        copy_in_refused(&tree, want);
    }
    let tmp = tempdir();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("Readme.txt"), "a").unwrap();
    std::fs::write(tree.join("README.TXT"), "b").unwrap();
    copy_in_refused(&tree, "differ only in case");
    let tmp = tempdir();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
    copy_in_refused(&tree, "a symbolic link");
}

#[test]
fn a_powershell_script_needs_powershell_in_the_guest() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let ps1 = dir.path().join("agent.ps1");
    std::fs::write(&ps1, "Write-Output hi").unwrap();
    let out = dir.path().join("out.qcow2");
    let (code, _, err) = inject(&[s(&w.image), "--output", s(&out), "--firstboot", s(&ps1)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("agent.ps1") && err.contains("no PowerShell"),
        "{err}"
    );
    assert!(!out.exists());
    // With PowerShell present it is queued through a .cmd that bypasses the
    // execution policy for this script only.
    let dir = tempdir();
    let w = fixtures::phony_windows(
        dir.path(),
        &WIN2K22_X64,
        vec![fixtures::Entry::File(
            "Windows/System32/WindowsPowerShell/v1.0/powershell.exe",
            fixtures::minimal_pe(fixtures::MACHINE_AMD64),
        )],
    );
    let out = dir.path().join("out.qcow2");
    let (code, j, err) = inject(&[s(&w.image), "--output", s(&out), "--firstboot", s(&ps1)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["first_boot"]["queue"][0]["name"], "6000-agent.cmd");
    let part = partition(&out, &w, dir.path());
    let wrapper = String::from_utf8(ntfscat(
        &part,
        "/Windows/wingold/firstboot/queue/6000-agent.cmd",
    ))
    .unwrap();
    assert!(
        wrapper.contains("-ExecutionPolicy Bypass -File \"%~dp0..\\scripts\\6000-agent.ps1\""),
        "{wrapper}"
    );
    assert_eq!(
        ntfscat(&part, "/Windows/wingold/firstboot/scripts/6000-agent.ps1"),
        b"Write-Output hi"
    );
}

#[test]
fn copy_in_of_a_thousand_files_in_nested_folders() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let tree = dir.path().join("tree");
    let mut expected = Vec::new();
    for i in 0..1000 {
        let sub = format!("d{:02}/é{:02}", i % 25, i % 7);
        let name = format!("файл-{i:04}.bin");
        std::fs::create_dir_all(tree.join(&sub)).unwrap();
        let data = pattern(i as u64, 100 + i * 37);
        std::fs::write(tree.join(&sub).join(&name), &data).unwrap();
        expected.push((format!("/Tools/{sub}/{name}"), data));
    }
    let out = dir.path().join("out.qcow2");
    let (code, j, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--copy-in",
        &format!("{}:C:\\Tools", tree.display()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    // A tree alone queues nothing: no service.
    assert!(j["first_boot"]["service"].is_null(), "{}", j["first_boot"]);
    let part = partition(&out, &w, dir.path());
    for (path, data) in &expected {
        assert!(&ntfscat(&part, path) == data, "{path} differs");
    }
}

#[test]
fn nic_watchdog_is_queued_on_nt6_and_refused_where_windows_cannot_reset_a_nic() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let out = dir.path().join("out.qcow2");
    let (code, j, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--nic-watchdog",
        "--watchdog-target",
        "10.1.2.3",
        "--watchdog-failures",
        "5",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["first_boot"]["queue"][0]["name"], "5200-nic-watchdog.cmd");
    let part = partition(&out, &w, dir.path());
    let script = String::from_utf8(ntfscat(&part, "/Windows/wingold/nic-watchdog.cmd")).unwrap();
    assert!(script.contains("set \"TARGET=10.1.2.3\"\r\n"), "{script}");
    assert!(script.contains("set \"LIMIT=5\"\r\n"), "{script}");
    assert!(script.contains("Restart-NetAdapter") && script.contains("eventcreate"));
    let task = String::from_utf8(ntfscat(
        &part,
        "/Windows/wingold/firstboot/queue/5200-nic-watchdog.cmd",
    ))
    .unwrap();
    assert!(
        task.contains("schtasks /create /tn \"wingold NIC watchdog\" /sc minute /mo 1 /ru SYSTEM"),
        "{task}"
    );
    let (bytes, text) = descriptor(&part, "/Windows/wingold/nic-watchdog.cmd");
    assert_eq!(
        parse_sd(&bytes),
        parse_sd(&wingold::firstboot::security::restricted(false)),
        "{text}"
    );
    // A target that is no address could run commands as SYSTEM: refused.
    let out2 = dir.path().join("out2.qcow2");
    let (code, _, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out2),
        "--nic-watchdog",
        "--watchdog-target",
        "1.2.3.4&del",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("give an IP address or a host name"), "{err}");
    assert!(!out2.exists());
}

/// Windows Server 2003: the watchdog resets the NIC through Windows Script Host
/// (nic-reset.vbs drives the Network Connections folder), its task made the NT 5
/// way. Under Wine's cmd and cscript the whole chain runs: the unreachable
/// target counts as a failure, the reset script is started, parses, and says
/// why it cannot go on there (Wine has no virtio NIC), with its exit code.
#[test]
fn nic_watchdog_on_windows_2003_resets_through_windows_script_host() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &fixtures::WIN2K3R2_X86, vec![]);
    let out = dir.path().join("out.qcow2");
    let (code, j, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--nic-watchdog",
        "--watchdog-target",
        // A name that never resolves (RFC 2606): unreachable on any network.
        "wingold-unreachable.invalid",
        "--watchdog-failures",
        "1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["first_boot"]["queue"][0]["name"], "5200-nic-watchdog.cmd");
    let part = partition(&out, &w, dir.path());
    let task = String::from_utf8(ntfscat(
        &part,
        "/WINDOWS/wingold/firstboot/queue/5200-nic-watchdog.cmd",
    ))
    .unwrap();
    assert!(
        task.contains("schtasks /create /tn \"wingold NIC watchdog\" /sc minute /mo 1 /st 00:00:00 /ru SYSTEM"),
        "{task}"
    );
    assert!(
        !task.contains(" /f\r\n") && task.contains("schtasks /delete"),
        "{task}"
    );
    let vbs = ntfscat(&part, "/WINDOWS/wingold/nic-reset.vbs");
    assert_eq!(
        vbs,
        crlf(include_str!("../assets/firstboot/nic-reset.vbs")).into_bytes()
    );
    let (bytes, text) = descriptor(&part, "/WINDOWS/wingold/nic-reset.vbs");
    assert_eq!(
        parse_sd(&bytes),
        parse_sd(&wingold::firstboot::security::restricted(false)),
        "{text}"
    );

    // The watchdog and the reset script as the image holds them, under Wine.
    let run = dir.path().join("wingold");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("nic-reset.vbs"), &vbs).unwrap();
    std::fs::write(
        run.join("nic-watchdog.cmd"),
        ntfscat(&part, "/WINDOWS/wingold/nic-watchdog.cmd"),
    )
    .unwrap();
    let wine = Path::new("/usr/lib/wine/wine64");
    assert!(
        wine.exists(),
        "TEST CANNOT RUN: Wine is missing (/usr/lib/wine/wine64); make setup installs Debian's wine64"
    );
    let script = format!("Z:{}", run.join("nic-watchdog.cmd").display()).replace('/', "\\");
    let status = Command::new(wine)
        .args(["cmd", "/c", &script])
        .env("WINEPREFIX", dir.path().join("wineprefix"))
        .env("WINEDEBUG", "-all")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(run.join("nic-watchdog.log")).unwrap_or_else(|e| {
        panic!(
            "the watchdog never started the reset script ({e}): {}",
            String::from_utf8_lossy(&status.stderr)
        )
    });
    assert!(
        log.contains("wingold nic-reset: no virtio NIC (netkvm) with a connection"),
        "{log}"
    );
    assert_eq!(status.status.code(), Some(2), "{log}");
    assert_eq!(
        std::fs::read_to_string(run.join("nic-watchdog.failures"))
            .unwrap()
            .trim(),
        "0",
        "the count starts again after a reset"
    );
}

/// A script that ran (in done\) is not queued again with the same bytes; one
/// changed since, under the same name, is queued again and said so.
#[test]
fn a_script_that_ran_is_queued_again_only_when_it_changed() {
    let ran = b"@echo off\r\necho first version\r\n".to_vec();
    let dir = tempdir();
    let w = fixtures::phony_windows(
        dir.path(),
        &WIN2K22_X64,
        vec![fixtures::Entry::File(
            "Windows/wingold/firstboot/done/6000-setup.cmd",
            ran.clone(),
        )],
    );
    let script = dir.path().join("setup.cmd");
    for (bytes, queued, said) in [
        (ran.clone(), false, "already ran"),
        (
            b"@echo off\r\necho second version\r\n".to_vec(),
            true,
            "changed since",
        ),
    ] {
        std::fs::write(&script, &bytes).unwrap();
        let out = dir.path().join("out.qcow2");
        let _ = std::fs::remove_file(&out);
        let (code, j, err) = inject(&[s(&w.image), "--output", s(&out), "--firstboot", s(&script)]);
        assert_eq!(code, Some(0), "{err}");
        let fb = &j["first_boot"];
        let names: Vec<&str> = fb["queue"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.contains(&"6000-setup.cmd"), queued, "{fb}");
        assert!(fb["notes"].to_string().contains(said), "{fb}");
    }
}

/// `--guest-agent`: the ISO's qemu-ga MSI for the guest's architecture staged
/// byte for byte (compared with what xorriso extracts), its silent install
/// queued, vioserial staged for its channel; refused on Windows 2003 with a
/// reason and nothing written.
#[test]
fn guest_agent_is_staged_from_the_iso_and_installed_at_first_boot() {
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let iso = fixtures::virtio_iso(dir.path(), "0.1.999", 0);
    let out = dir.path().join("out.qcow2");
    let (code, j, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--drivers",
        s(&iso),
        "--guest-agent",
    ]);
    assert_eq!(code, Some(0), "{err}");
    let queue: Vec<&str> = j["first_boot"]["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(queue.contains(&"3000-guest-agent.cmd"), "{queue:?}");
    assert!(
        j["drivers"]["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("vioserial"))),
        "vioserial staged with the agent: {}",
        j["drivers"]["drivers"]
    );
    let part = partition(&out, &w, dir.path());
    let staged = ntfscat(&part, "/Windows/wingold/qemu-ga-x86_64.msi");
    let extracted = dir.path().join("qemu-ga.msi");
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            s(&iso),
            "-extract",
            "/guest-agent/qemu-ga-x86_64.msi",
            s(&extracted),
        ],
    );
    assert_eq!(staged, std::fs::read(&extracted).unwrap(), "byte for byte");
    let step = String::from_utf8(ntfscat(
        &part,
        "/Windows/wingold/firstboot/queue/3000-guest-agent.cmd",
    ))
    .unwrap();
    assert!(
        step.contains("msiexec /i \"%SystemRoot%\\wingold\\qemu-ga-x86_64.msi\" /qn /norestart"),
        "{step}"
    );
    // Listed with its origin and digest, as every first-boot file is.
    let listed = j["first_boot"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["to"] == "Windows\\wingold\\qemu-ga-x86_64.msi")
        .cloned()
        .expect("the MSI in the report");
    assert!(
        listed["from"]
            .as_str()
            .unwrap()
            .ends_with(":guest-agent/qemu-ga-x86_64.msi"),
        "{listed}"
    );
    assert_eq!(
        listed["sha256"],
        wingold::fsutil::sha256_hex(&staged),
        "{listed}"
    );
    // inspect sees the queued install.
    let inspected = succeeds(wingold().args(["inspect", "--json", s(&out)]));
    let v: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert!(
        v["first_boot"].to_string().contains("3000-guest-agent.cmd"),
        "{}",
        v["first_boot"]
    );

    // Windows Server 2003: the agent does not support it.
    let dir = tempdir();
    let w = fixtures::phony_windows(dir.path(), &fixtures::WIN2K3R2_X86, vec![]);
    let iso = fixtures::virtio_iso(dir.path(), "0.1.999", 0);
    let out = dir.path().join("out.qcow2");
    let (code, _, err) = inject(&[
        s(&w.image),
        "--output",
        s(&out),
        "--drivers",
        s(&iso),
        "--guest-agent",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Windows 8 / Server 2012 and later"), "{err}");
    assert!(!out.exists());
}
