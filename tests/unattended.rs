//! `wingold disks --unattended`: the answer medium, read back with tools that are
//! not ours — xorriso lists and extracts the ISO, xmllint checks the answer file
//! against the answer-file envelope (tests/fixtures/unattend-envelope.xsd) and
//! reads each pass's settings by XPath; mtools and fsck.fat read the FAT12
//! floppy writer the NT 5 path will use. What Windows Setup does with the file
//! cannot be tried here (no Windows ISO): README says so.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const PASSWORD: &str = "Kx9!unattended-pw";

fn envelope() -> PathBuf {
    repo().join("tests/fixtures/unattend-envelope.xsd")
}

/// `disks --unattended ARGS…` for VM 5 in a fresh folder, with the password file.
fn disks(extra: &[&str]) -> (tempfile::TempDir, PathBuf, std::process::Output) {
    let tmp = tempdir();
    let dir = tmp.path().to_owned();
    std::fs::write(dir.join("admin.pw"), format!("{PASSWORD}\n")).unwrap();
    let out = wingold()
        .args([
            "disks",
            "--id",
            "5",
            "--no-hdb",
            "--hda-size",
            "64M",
            "--dir",
        ])
        .arg(&dir)
        .args(["--unattended", "--admin-password-file"])
        .arg(dir.join("admin.pw"))
        .args(extra)
        .output()
        .unwrap();
    (tmp, dir, out)
}

/// The answer file on the medium, extracted by xorriso, and the medium's list.
fn answer_file(iso: &Path) -> (String, String) {
    let list = run("xorriso", &["-indev", s(iso), "-find", "/", "-type", "f"]);
    (
        String::from_utf8_lossy(&list.stdout).into_owned(),
        text_in_iso(iso, "/autounattend.xml"),
    )
}

/// XPath over the answer file, namespaces ignored.
fn xpath(xml: &Path, path: &str) -> String {
    let expr = path
        .split('/')
        .map(|step| match step {
            "" => String::new(),
            s if s.starts_with('@') || s.starts_with("text()") => s.to_owned(),
            s => {
                let (name, pred) = s.split_once('[').map_or((s, ""), |(n, p)| (n, p));
                let pred = if pred.is_empty() {
                    String::new()
                } else {
                    format!("[{pred}")
                };
                format!("*[local-name()='{name}']{pred}")
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let out = run("xmllint", &["--xpath", &format!("string({expr})"), s(xml)]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn decode_utf16_base64(text: &str) -> String {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let units: Vec<u16> = out
        .stdout
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).unwrap()
}

#[test]
fn a_bios_server_install_answers_every_pass() {
    let (_t, dir, out) = disks(&[
        "--os",
        "win2k22",
        "--edition",
        "Windows Server 2022 SERVERSTANDARD",
        "--hostname",
        "web-01",
        "--timezone",
        "W. Europe Standard Time",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let iso = dir.join("vm_5.unattend.iso");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["answer"], s(&iso));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&iso).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the medium holds the encoded password");

    let (list, xml) = answer_file(&iso);
    assert_eq!(
        list.trim(),
        "'/autounattend.xml'",
        "the medium holds one file"
    );
    let file = dir.join("vm_5.unattend.xml");
    let valid = Command::new("xmllint")
        .args(["--noout", "--schema", s(&envelope()), s(&file)])
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "xmllint: {}",
        String::from_utf8_lossy(&valid.stderr)
    );

    let pe = "/unattend/settings[@pass='windowsPE']";
    let setup = format!("{pe}/component[@name='Microsoft-Windows-Setup']");
    let disk = format!("{setup}/DiskConfiguration/Disk");
    assert_eq!(xpath(&file, &format!("{disk}/WillWipeDisk")), "true");
    let parts = run(
        "xmllint",
        &[
            "--xpath",
            "count(//*[local-name()='CreatePartition'])",
            s(&file),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&parts.stdout).trim(),
        "2",
        "MBR: System Reserved + Windows"
    );
    assert_eq!(
        xpath(
            &file,
            &format!("{disk}/ModifyPartitions/ModifyPartition[1]/Active")
        ),
        "true"
    );
    assert_eq!(
        xpath(
            &file,
            &format!("{setup}/ImageInstall/OSImage/InstallFrom/MetaData/Key")
        ),
        "/IMAGE/NAME"
    );
    assert_eq!(
        xpath(
            &file,
            &format!("{setup}/ImageInstall/OSImage/InstallFrom/MetaData/Value")
        ),
        "Windows Server 2022 SERVERSTANDARD"
    );
    assert_eq!(
        xpath(
            &file,
            &format!("{setup}/ImageInstall/OSImage/InstallTo/PartitionID")
        ),
        "2"
    );
    assert_eq!(
        xpath(&file, &format!("{setup}/UserData/AcceptEula")),
        "true"
    );
    let spec =
        "/unattend/settings[@pass='specialize']/component[@name='Microsoft-Windows-Shell-Setup']";
    assert_eq!(xpath(&file, &format!("{spec}/ComputerName")), "web-01");
    assert_eq!(
        xpath(&file, &format!("{spec}/TimeZone")),
        "W. Europe Standard Time"
    );
    let oobe =
        "/unattend/settings[@pass='oobeSystem']/component[@name='Microsoft-Windows-Shell-Setup']";
    let admin = format!("{oobe}/UserAccounts/AdministratorPassword");
    assert_eq!(xpath(&file, &format!("{admin}/PlainText")), "false");
    assert_eq!(
        decode_utf16_base64(&xpath(&file, &format!("{admin}/Value"))),
        format!("{PASSWORD}AdministratorPassword")
    );
    assert_eq!(
        xpath(&file, &format!("{oobe}/AutoLogon/Username")),
        "Administrator"
    );
    assert_eq!(xpath(&file, &format!("{oobe}/AutoLogon/LogonCount")), "1");
    assert_eq!(
        decode_utf16_base64(&xpath(&file, &format!("{oobe}/AutoLogon/Password/Value"))),
        format!("{PASSWORD}Password")
    );
    let last = xpath(
        &file,
        &format!("{oobe}/FirstLogonCommands/SynchronousCommand[last()]/CommandLine"),
    );
    assert!(last.starts_with("shutdown.exe /s"), "{last}");
    assert!(xml.contains("processorArchitecture=\"amd64\""));
    // The secret in the clear: nowhere.
    assert!(!xml.contains(PASSWORD));
    let medium = std::fs::read(&iso).unwrap();
    assert!(!medium
        .windows(PASSWORD.len())
        .any(|w| w == PASSWORD.as_bytes()));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
}

#[test]
fn a_uefi_install_partitions_gpt_and_the_recipe_attaches_the_medium() {
    let tmp = tempdir();
    // A Windows ISO as xorriso repacks one (ISO 9660 and Rock Ridge, no UDF),
    // its install.wim holding one x64 image.
    let iso = tmp.path().join("win.iso");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sources")).unwrap();
    std::fs::create_dir_all(tmp.path().join("tree")).unwrap();
    std::fs::write(tmp.path().join("tree/setup.exe"), "x").unwrap();
    let wim = src.join("sources/install.wim");
    run(
        "wimcapture",
        &[s(&tmp.path().join("tree")), s(&wim), "Windows 11 Pro"],
    );
    run(
        "wiminfo",
        &[s(&wim), "1", "--image-property", "WINDOWS/ARCH=9"],
    );
    run(
        "xorriso",
        &["-as", "mkisofs", "-quiet", "-r", "-o", s(&iso), s(&src)],
    );
    let (_t, dir, out) = disks(&[
        "--os",
        "win11",
        "--image-index",
        "1",
        "--firmware",
        "uefi",
        "--accel",
        "tcg",
        "--net",
        "user",
        "--iso",
        s(&iso),
        "--virtio-iso",
        s(&iso),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let medium = dir.join("vm_5.unattend.iso");
    let argv: Vec<String> = json["install_recipe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert!(
        argv.iter()
            .any(|a| a.contains(s(&medium)) && a.contains("media=cdrom")),
        "{argv:?}"
    );
    let (_, _) = answer_file(&medium);
    let file = dir.join("vm_5.unattend.xml");
    let types = run(
        "xmllint",
        &[
            "--xpath",
            "//*[local-name()='CreatePartition']/*[local-name()='Type']/text()",
            s(&file),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&types.stdout)
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["EFI", "MSR", "Primary"]
    );
    let key = run(
        "xmllint",
        &[
            "--xpath",
            "string(//*[local-name()='MetaData']/*[local-name()='Key'])",
            s(&file),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&key.stdout).trim(), "/IMAGE/INDEX");
    let install_to = run(
        "xmllint",
        &[
            "--xpath",
            "string(//*[local-name()='InstallTo']/*[local-name()='PartitionID'])",
            s(&file),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&install_to.stdout).trim(), "3");
    // `launch --install` later finds the medium beside the disk.
    let later = wingold()
        .args(["launch"])
        .arg(dir.join("vm_5.qcow2"))
        .args([
            "--id",
            "5",
            "--format",
            "argv",
            "--firmware",
            "uefi",
            "--install",
        ])
        .args(["--windows-iso", s(&iso), "--virtio-iso", s(&iso)])
        .output()
        .unwrap();
    assert!(
        later.status.success(),
        "{}",
        String::from_utf8_lossy(&later.stderr)
    );
    assert!(String::from_utf8_lossy(&later.stdout).contains("vm_5.unattend.iso"));
}

#[test]
fn the_same_request_gives_the_same_medium() {
    let args = [
        "--os",
        "win10",
        "--arch",
        "x86",
        "--edition",
        "Windows 10 Pro",
    ];
    let (_a, dir_a, out_a) = disks(&args);
    let (_b, dir_b, out_b) = disks(&args);
    assert!(out_a.status.success() && out_b.status.success());
    let a = std::fs::read(dir_a.join("vm_5.unattend.iso")).unwrap();
    let b = std::fs::read(dir_b.join("vm_5.unattend.iso")).unwrap();
    assert!(a == b, "two runs, two different media");
    let (_, xml) = answer_file(&dir_a.join("vm_5.unattend.iso"));
    assert!(xml.contains("processorArchitecture=\"x86\""));
    assert!(!xml.contains("processorArchitecture=\"amd64\""));
}

#[test]
fn wrong_requests_are_refused_before_anything_is_written() {
    let cases: &[(&[&str], &str)] = &[
        (&["--os", "win10"], "--arch"),
        (&["--os", "win11"], "--firmware uefi"),
        (&["--os", "win2k22", "--arch", "x86"], "no x86 media"),
        (&["--os", "win2k3r2", "--arch", "x86"], "WINNT.SIF"),
        (&["--os", "win95"], "unknown Windows"),
        (&["--os", "win2k22", "--locale", "english"], "language tag"),
        (&["--os", "win2k22", "--image-index", "0"], "from 1"),
        (
            &["--os", "win2k22", "--hostname", "name-far-too-long-for-it"],
            "computer name",
        ),
        (
            &["--os", "win2k22", "--product-key-file", "/nonexistent/key"],
            "/nonexistent/key",
        ),
    ];
    for (args, says) in cases {
        let (_t, dir, out) = disks(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "admin.pw")
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
    // No password file: a usage error from the command line itself.
    let out = wingold()
        .args([
            "disks",
            "--id",
            "5",
            "--dir",
            "/nonexistent",
            "--unattended",
            "--os",
            "win2k22",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin-password-file"));
}

#[test]
fn the_floppy_writer_makes_a_fat12_floppy_mtools_and_fsck_read() {
    let tmp = tempdir();
    let sif = b"[Data]\r\nUnattendedInstall=Yes\r\n".repeat(40);
    let img = wingold::media::fat12::floppy(
        "wingold",
        &[
            ("WINNT.SIF", &sif),
            ("EMPTY.TXT", b""),
            ("NOTE.TXT", b"note"),
        ],
    )
    .unwrap();
    let path = tmp.path().join("a.img");
    std::fs::write(&path, &img).unwrap();
    let fsck = Command::new("fsck.fat")
        .args(["-n", s(&path)])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck.fat: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let dir = run("mdir", &["-i", s(&path), "::"]);
    let listing = String::from_utf8_lossy(&dir.stdout);
    assert!(listing.contains("WINGOLD"), "{listing}");
    assert!(listing.contains("WINNT    SIF"), "{listing}");
    let back = run("mtype", &["-i", s(&path), "::WINNT.SIF"]);
    assert_eq!(back.stdout, sif, "mtype reads back the bytes written");
    let empty = run("mtype", &["-i", s(&path), "::EMPTY.TXT"]);
    assert!(empty.stdout.is_empty());
    let note = run("mtype", &["-i", s(&path), "::NOTE.TXT"]);
    assert_eq!(note.stdout, b"note");
}

#[test]
fn a_medium_left_from_an_earlier_vm_is_not_attached_to_a_new_install() {
    // `disks` without --unattended next to a stale vm_N.unattend.iso: the
    // recipe must not attach it (Setup would wipe the new VM's disk by it).
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::write(dir.join("vm_6.unattend.iso"), b"stale").unwrap();
    let iso = dir.join("win.iso");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.TXT"), "x").unwrap();
    run(
        "xorriso",
        &["-as", "mkisofs", "-quiet", "-o", s(&iso), s(&src)],
    );
    let out = succeeds(
        wingold()
            .args([
                "disks",
                "--id",
                "6",
                "--no-hdb",
                "--hda-size",
                "64M",
                "--dir",
            ])
            .arg(dir)
            .args(["--iso", s(&iso), "--virtio-iso", s(&iso), "--json"]),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let argv = json["install_recipe"].to_string();
    assert!(!argv.contains("unattend.iso"), "{argv}");
    assert!(json["answer"].is_null());
}

/// Each element that holds a value, as a path of element names (namespace
/// prefixes dropped), `settings` and `component` named by their pass and name:
/// `settings[oobeSystem]/component[Microsoft-Windows-Shell-Setup]/…/Value`.
fn leaf_paths(xml: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml;
    while let Some(lt) = rest.find('<') {
        let text = &rest[..lt];
        if !text.trim().is_empty() && !stack.is_empty() {
            out.insert(stack.join("/"));
        }
        let end = rest[lt..].find('>').expect("a closed tag") + lt;
        let tag = &rest[lt + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if tag.starts_with('/') {
            stack.pop();
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag.split_whitespace().next().unwrap();
        let name = name.rsplit(':').next().unwrap();
        let attr = |key: &str| {
            tag.split(&format!(" {key}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .map(str::to_owned)
        };
        let segment = match (name, attr("pass"), attr("name")) {
            ("settings", Some(pass), _) => format!("settings[{pass}]"),
            ("component", _, Some(c)) => format!("component[{c}]"),
            _ => name.to_owned(),
        };
        stack.push(segment);
        if empty {
            out.insert(stack.join("/"));
            stack.pop();
        }
    }
    out
}

/// libosinfo's own answer file for the same request (`osinfo-install-script`,
/// osinfo-db's jeos template) as a reference for where Windows reads each
/// setting: every setting both files write sits in the same pass, component
/// and element path in ours. (Values differ on purpose: osinfo writes the
/// password in plain text, wingold encoded.)
#[test]
fn settings_sit_where_osinfo_puts_them() {
    let keys = tempdir();
    let key = keys.path().join("key");
    std::fs::write(&key, "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE\n").unwrap();
    let (_t, dir, out) = disks(&[
        "--os",
        "win10",
        "--arch",
        "amd64",
        "--product-key-file",
        s(&key),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, ours) = answer_file(&dir.join("vm_5.unattend.iso"));
    let osinfo_dir = dir.join("osinfo");
    std::fs::create_dir(&osinfo_dir).unwrap();
    run(
        "osinfo-install-script",
        &[
            "--profile=jeos",
            "--config=admin-password=not-a-secret",
            "--config=reg-product-key=AAAAA-BBBBB-CCCCC-DDDDD-EEEEE",
            "--config=hardware-arch=x86_64",
            "--config=l10n-language=en-US",
            &format!("--output-dir={}", s(&osinfo_dir)),
            "win10",
        ],
    );
    let theirs = std::fs::read_to_string(osinfo_dir.join("autounattend.xml")).unwrap();
    let (ours, theirs) = (leaf_paths(&ours), leaf_paths(&theirs));
    // A setting both write: the same last two path segments.
    let tail = |p: &str| {
        let parts: Vec<&str> = p.rsplitn(3, '/').collect();
        format!("{}/{}", parts[1], parts[0])
    };
    let theirs_tails: std::collections::BTreeSet<String> = theirs.iter().map(|p| tail(p)).collect();
    let shared: Vec<&String> = ours
        .iter()
        .filter(|p| theirs_tails.contains(&tail(p)))
        .collect();
    assert!(
        shared.len() >= 8,
        "too few settings in common to compare: {shared:?}"
    );
    let misplaced: Vec<&&String> = shared.iter().filter(|p| !theirs.contains(**p)).collect();
    assert!(
        misplaced.is_empty(),
        "placed unlike osinfo: {misplaced:?}\nosinfo's: {theirs:#?}"
    );
}
