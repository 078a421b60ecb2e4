//! Every clone its own Windows machine: `wingold clone` on a phony Windows Server
//! 2022, each clone's hives read back with qemu-img + ntfscat + hivexget (not
//! wingold), its answer file checked with `xmllint --schema` against the unattend
//! envelope schema (tests/fixtures/unattend, MIT), the golden's bytes unchanged.

use wingold_test_support as support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::fixtures::{self, PhonyWindows, WIN2K22_X64};
use support::*;

const PASSWORD: &str = "Tr0ub4dor&3-clone";

fn clone(golden: &Path, dir: &Path, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec![s(golden), "--dir", s(dir), "--net", "none", "--vnc", "none"];
    all.extend(args);
    wingold_json("clone", &all)
}

/// Files of the Windows volume of `image`, by ntfs-3g's ntfscat.
fn guest_file(image: &Path, phony: &PhonyWindows, dir: &Path, path: &str) -> Vec<u8> {
    let part = dir.join("part.raw");
    fixtures::extract_partition(image, phony.win_offset, phony.win_size, &part);
    let out = run("ntfscat", &["-f", s(&part), path]).stdout;
    std::fs::remove_file(&part).unwrap();
    out
}

/// A hive of `image` extracted to a file, for hivexget.
fn hive_of(image: &Path, phony: &PhonyWindows, dir: &Path, hive: &str) -> PathBuf {
    let bytes = guest_file(
        image,
        phony,
        dir,
        &format!("/Windows/System32/config/{hive}"),
    );
    let path = dir.join(format!("{hive}.extracted"));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn hivexget(hive: &Path, key: &str, value: &str) -> Option<String> {
    let out = std::process::Command::new("hivexget")
        .args([s(hive), key, value])
        .output()
        .expect("TEST CANNOT RUN: hivexget missing (Debian libhivex-bin)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn an_unsealed_golden_gives_each_clone_its_own_names_and_ids() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let golden_sha = sha256_file(&phony.image);
    let vms = dir.path().join("vms");
    let mut guids = Vec::new();
    for (id, name) in [(1, "web-01"), (2, "web-02")] {
        let (code, json, err) = clone(
            &phony.image,
            &vms,
            &["--id", &id.to_string(), "--hostname", name],
        );
        assert_eq!(code, Some(0), "{err}");
        let identity = &json["identity"];
        assert_eq!(identity["seal"], "unsealed");
        assert_eq!(identity["computer_name"], name.to_ascii_uppercase());
        assert!(identity["shared"].as_str().unwrap().contains("SID"));
        let image = vms.join(format!("vm_{id}.qcow2"));
        assert_qemu_check_clean(&image);
        // Only the hive pages the names changed are in the overlay, not the
        // hives' 11 MiB.
        let size = std::fs::metadata(&image).unwrap().len();
        assert!(size < 4 << 20, "the overlay holds {size} bytes");
        let system = hive_of(&image, &phony, dir.path(), "SYSTEM");
        let software = hive_of(&image, &phony, dir.path(), "SOFTWARE");
        let sets: Vec<&str> = identity["control_sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(sets.contains(&"ControlSet001"), "{sets:?}");
        for set in &sets {
            let cn = format!("\\{set}\\Control\\ComputerName\\ComputerName");
            assert_eq!(
                hivexget(&system, &cn, "ComputerName").as_deref(),
                Some(&*name.to_ascii_uppercase())
            );
            let tcpip = format!("\\{set}\\Services\\Tcpip\\Parameters");
            assert_eq!(hivexget(&system, &tcpip, "Hostname").as_deref(), Some(name));
            assert_eq!(
                hivexget(&system, &tcpip, "NV Hostname").as_deref(),
                Some(name)
            );
        }
        let guid = hivexget(&software, "\\Microsoft\\Cryptography", "MachineGuid").unwrap();
        assert_eq!(Some(guid.as_str()), identity["machine_guid"].as_str());
        assert_ne!(
            guid, "9f0c4b6a-1d2e-4f3a-8b7c-5d6e7f8a9b0c",
            "the golden's MachineGuid"
        );
        guids.push(guid);
        let wu = "\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate";
        for v in [
            "SusClientId",
            "SusClientIDValidation",
            "AccountDomainSid",
            "PingID",
        ] {
            assert_eq!(hivexget(&software, wu, v), None, "{v} survived");
        }
        // The record beside the clone.
        let record: Value = serde_json::from_slice(
            &std::fs::read(vms.join(format!("vm_{id}.identity.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(record["computer_name"], name.to_ascii_uppercase());
    }
    assert_ne!(guids[0], guids[1]);
    assert_eq!(sha256_file(&phony.image), golden_sha, "the golden changed");
}

#[test]
fn names_windows_refuses_and_names_taken_are_refused_before_anything_is_made() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let vms = dir.path().join("vms");
    for bad in ["", "1234", "two words", "web.01", "sixteen-chars-xx", "a*b"] {
        let (code, _, err) = clone(&phony.image, &vms, &["--id", "3", "--hostname", bad]);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!vms.join("vm_3.qcow2").exists());
    }
    let (code, _, err) = clone(&phony.image, &vms, &["--id", "3", "--hostname", "app"]);
    assert_eq!(code, Some(0), "{err}");
    // The same name again (any case) in the same folder: refused, unless forced.
    let (code, _, err) = clone(&phony.image, &vms, &["--id", "4", "--hostname", "APP"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("vm_3.qcow2"), "{err}");
    assert!(!vms.join("vm_4.qcow2").exists() && !vms.join("vm_4.sh").exists());
    let (code, _, err) = clone(
        &phony.image,
        &vms,
        &["--id", "4", "--hostname", "APP", "--force"],
    );
    assert_eq!(code, Some(0), "{err}");
    // Without --hostname a clone is VM-N.
    let (code, json, err) = clone(&phony.image, &vms, &["--id", "5"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["identity"]["computer_name"], "VM-5");
    // An unsealed golden reads no answer file: a password is refused, not dropped.
    let pw = dir.path().join("pw.txt");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let (code, _, err) = clone(
        &phony.image,
        &vms,
        &[
            "--id",
            "6",
            "--hostname",
            "db",
            "--admin-password-file",
            s(&pw),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sealed"), "{err}");
    assert!(!err.contains(PASSWORD));
    assert!(!vms.join("vm_6.qcow2").exists());
}

/// The phony Windows, sealed as `sysprep /generalize /oobe` leaves Windows: an
/// overlay written by `wingold inject` with the two values Windows sets.
fn sealed_golden(dir: &Path, phony: &PhonyWindows) -> PathBuf {
    let reg = dir.join("sealed.reg");
    std::fs::write(
        &reg,
        "Windows Registry Editor Version 5.00\r\n\r\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\Setup]\r\n\"CmdLine\"=\"oobe\\\\windeploy.exe\"\r\n\r\n\
         [HKEY_LOCAL_MACHINE\\SYSTEM\\Setup\\Status\\SysprepStatus]\r\n\
         \"GeneralizationState\"=dword:00000007\r\n",
    )
    .unwrap();
    let sealed = dir.join("sealed.qcow2");
    succeeds(wingold().args([
        "inject",
        s(&phony.image),
        "--reg",
        s(&reg),
        "--output",
        s(&sealed),
    ]));
    sealed
}

#[test]
fn a_sealed_golden_gets_an_answer_file_with_the_password_encoded() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let golden = sealed_golden(dir.path(), &phony);
    let golden_sha = sha256_file(&golden);
    let (code, json, _) = wingold_json("inspect", &[s(&golden)]);
    assert_eq!(code, Some(0));
    assert_eq!(json["identity"]["seal"], "sealed", "{}", json["identity"]);
    let pw = dir.path().join("pw.txt");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let vms = dir.path().join("vms");
    // An offline domain-join blob as djoin /savefile writes it: UTF-16LE, BOM.
    let blob_text = "ARAIAMzMzMyIBwAAAAAAAAAAAgABAAAA";
    let blob = dir.path().join("join.txt");
    let mut utf16 = vec![0xff, 0xfe];
    utf16.extend(
        format!("{blob_text}\r\n")
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes()),
    );
    std::fs::write(&blob, utf16).unwrap();
    let o = wingold()
        .args([
            "clone",
            s(&golden),
            "--dir",
            s(&vms),
            "--net",
            "none",
            "--vnc",
            "none",
        ])
        .args([
            "--id",
            "7",
            "--hostname",
            "kiosk-7",
            "--timezone",
            "W. Europe Standard Time",
        ])
        .args(["--admin-password-file", s(&pw), "--json"])
        .args(["--domain-join-blob", s(&blob)])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["identity"]["seal"], "sealed");
    assert_eq!(json["identity"]["admin_password"], true);
    assert_eq!(
        json["identity"]["answer_file"],
        "Windows\\Panther\\unattend.xml"
    );
    let image = vms.join("vm_7.qcow2");
    let xml = guest_file(&image, &phony, dir.path(), "/Windows/Panther/unattend.xml");
    let text = String::from_utf8(xml.clone()).unwrap();
    assert!(
        text.contains("<ComputerName>KIOSK-7</ComputerName>"),
        "{text}"
    );
    assert!(text.contains("<TimeZone>W. Europe Standard Time</TimeZone>"));
    assert!(text.contains("<PlainText>false</PlainText>"));
    // Per pass: the name, time zone and join in specialize, the password in
    // oobeSystem, each once.
    let pass = |name: &str| -> &str {
        let start = text
            .find(&format!("<settings pass=\"{name}\">"))
            .unwrap_or_else(|| panic!("no {name} pass"));
        let end = start + text[start..].find("</settings>").unwrap();
        &text[start..end]
    };
    let (spec, oobe) = (pass("specialize"), pass("oobeSystem"));
    for (block, wants, not) in [
        (
            spec,
            ["<ComputerName>", "<TimeZone>", "<AccountData>"],
            "<AdministratorPassword>",
        ),
        (
            oobe,
            ["<AdministratorPassword>", "<OOBE>", "<UserAccounts>"],
            "<ComputerName>",
        ),
    ] {
        for w in wants {
            assert_eq!(block.matches(w).count(), 1, "{w} in:\n{block}");
        }
        assert!(!block.contains(not), "{not} in the wrong pass");
    }
    assert!(
        text.contains(&format!("<AccountData>{blob_text}</AccountData>")),
        "{text}"
    );
    assert_eq!(json["identity"]["domain_join"], true);
    assert!(!stdout.contains(blob_text) && !stderr.contains(blob_text));
    // The envelope as Windows' schema has it.
    let file = dir.path().join("unattend.xml");
    std::fs::write(&file, &xml).unwrap();
    let xsd =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unattend/autounattend.xsd");
    let check = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", s(&xsd), s(&file)])
        .output()
        .expect("TEST CANNOT RUN: xmllint missing (Debian libxml2-utils)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The password, decoded by hand from what Windows reads.
    let value = text
        .split("<Value>")
        .nth(1)
        .and_then(|v| v.split("</Value>").next())
        .unwrap();
    let b64 = dir.path().join("pw.b64");
    std::fs::write(&b64, value).unwrap();
    let raw = run("base64", &["-d", s(&b64)]).stdout;
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        String::from_utf16(&units).unwrap(),
        format!("{PASSWORD}AdministratorPassword")
    );
    // Nowhere in plain text: not in the overlay (UTF-8 or UTF-16LE), the record,
    // the recipe, the output.
    let overlay = std::fs::read(&image).unwrap();
    let utf16: Vec<u8> = PASSWORD
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    for (what, bytes) in [
        ("the overlay", overlay),
        (
            "the record",
            std::fs::read(vms.join("vm_7.identity.json")).unwrap(),
        ),
        ("the recipe", std::fs::read(vms.join("vm_7.sh")).unwrap()),
        ("the output", o.stdout.clone()),
        ("the messages", o.stderr.clone()),
    ] {
        for needle in [PASSWORD.as_bytes(), &utf16] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "the password is in {what}"
            );
        }
    }
    // A sealed golden's registry is left to Windows' specialize pass.
    let system = hive_of(&image, &phony, dir.path(), "SYSTEM");
    let cn = hivexget(
        &system,
        "\\ControlSet001\\Control\\ComputerName\\ComputerName",
        "ComputerName",
    );
    assert_ne!(cn.as_deref(), Some("KIOSK-7"));
    assert_eq!(sha256_file(&golden), golden_sha);
    // KubeVirt: the VM boots the containerDisk; its name reaches Windows through
    // the answer file in a sysprep Secret. Nothing is written.
    let image_ref = "registry.example:5000/win2022@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let before: Vec<_> = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let o = wingold()
        .args([
            "clone",
            s(&golden),
            "--id",
            "9",
            "--hostname",
            "kube_9",
            "--format",
            "kubevirt",
        ])
        .args(["--image", image_ref, "--dir", s(&vms)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let yaml = String::from_utf8(o.stdout).unwrap();
    assert!(
        yaml.contains("kind: VirtualMachine") && yaml.contains("name: kube-9"),
        "{yaml}"
    );
    assert!(yaml.contains(&format!("image: {image_ref}")));
    assert!(
        yaml.contains("secret:\n            name: kube-9-sysprep"),
        "{yaml}"
    );
    let b64 = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("Unattend.xml: "))
        .unwrap();
    let enc = dir.path().join("kube.b64");
    std::fs::write(&enc, b64).unwrap();
    let xml = run("base64", &["-d", s(&enc)]).stdout;
    let kube = dir.path().join("kube-unattend.xml");
    std::fs::write(&kube, &xml).unwrap();
    let check = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", s(&xsd), s(&kube)])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&xml).contains("<ComputerName>KUBE_9</ComputerName>"));
    let after: Vec<_> = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "--format kubevirt wrote files");
    // Never published and no --image: said, exit 2.
    let (code, _, err) = clone(&golden, &vms, &["--id", "10", "--format", "kubevirt"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("publish"), "{err}");
    // An unsealed golden reads no answer file: refused.
    let (code, _, err) = clone(
        &phony.image,
        &vms,
        &["--id", "10", "--format", "kubevirt", "--image", image_ref],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sealed"), "{err}");
    // A time zone the golden does not know is refused.
    let (code, _, err) = clone(
        &golden,
        &vms,
        &["--id", "8", "--timezone", "Mars Standard Time"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Mars Standard Time"), "{err}");
}

#[test]
fn many_clones_from_a_spec_file() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let spec = dir.path().join("clones.toml");
    std::fs::write(
        &spec,
        "[[clone]]\nid = 21\nhostname = \"app-21\"\n\n\
         [[clone]]\nid = 22\nhostname = \"app-22\"\n\n\
         [[clone]]\nid = 23\nkeep_identity = true\n",
    )
    .unwrap();
    let vms = dir.path().join("vms");
    let (code, json, err) = clone(&phony.image, &vms, &["--spec", s(&spec)]);
    assert_eq!(code, Some(0), "{err}");
    let made = json.as_array().unwrap();
    assert_eq!(made.len(), 3);
    assert_eq!(made[0]["identity"]["computer_name"], "APP-21");
    assert!(made[2]["identity"].is_null());
    assert!(!vms.join("vm_23.identity.json").exists());
    // A spec naming one host twice, or with an unknown key, makes nothing.
    let bad = dir.path().join("bad.toml");
    for text in [
        "[[clone]]\nid = 31\nhostname = \"x1\"\n[[clone]]\nid = 32\nhostname = \"X1\"\n",
        "[[clone]]\nid = 31\nhostnme = \"x1\"\n",
    ] {
        std::fs::write(&bad, text).unwrap();
        let (code, _, err) = clone(&phony.image, &vms, &["--spec", s(&bad)]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("bad.toml"), "{err}");
        assert!(!vms.join("vm_31.qcow2").exists());
    }
}

/// The files of an ISO image as xorriso (libisofs, not wingold) reads them, and
/// its volume id as blkid reads it.
fn iso_contents(iso: &Path, dir: &Path) -> (String, Vec<(String, Vec<u8>)>) {
    let out = dir.join("iso-out");
    let _ = std::fs::remove_dir_all(&out);
    let x = std::process::Command::new("xorriso")
        .args(["-osirrox", "on", "-indev", s(iso), "-extract", "/", s(&out)])
        .output()
        .expect("TEST CANNOT RUN: xorriso missing (Debian xorriso)");
    assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
    let label = run("blkid", &["-o", "value", "-s", "LABEL", s(iso)]).stdout;
    let mut files: Vec<(String, Vec<u8>)> = walk(&out)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&out).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    (String::from_utf8_lossy(&label).trim().to_owned(), files)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn seeds_for_in_guest_agents_beside_the_clone() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let vms = dir.path().join("vms");
    let user = dir.path().join("user-data");
    std::fs::write(&user, "#cloud-config\nruncmd:\n  - echo hello\n").unwrap();
    let net = dir.path().join("net.yaml");
    std::fs::write(&net, "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n").unwrap();
    let (code, json, err) = clone(
        &phony.image,
        &vms,
        &[
            "--id",
            "41",
            "--hostname",
            "agent-41",
            "--seed",
            "nocloud",
            "--user-data",
            s(&user),
            "--network-config",
            s(&net),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let iso = vms.join("vm_41.seed.iso");
    assert_eq!(json["seed"], s(&iso));
    let (label, files) = iso_contents(&iso, dir.path());
    assert_eq!(label, "cidata");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    let meta = String::from_utf8(files[0].1.clone()).unwrap();
    let guid = json["identity"]["machine_guid"].as_str().unwrap();
    assert_eq!(
        meta,
        format!("instance-id: iid-{guid}\nlocal-hostname: agent-41\n")
    );
    assert_eq!(files[1].1, std::fs::read(&net).unwrap());
    assert_eq!(files[2].1, std::fs::read(&user).unwrap());
    // inspect of the clone names what it was made as, its seed and its golden.
    let (code, j, err) = wingold_json("inspect", &[s(&vms.join("vm_41.qcow2"))]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["clone"]["computer_name"], "AGENT-41");
    assert_eq!(j["clone"]["seed"], s(&iso));
    assert_eq!(
        j["identity"]["machine_guid"],
        json["identity"]["machine_guid"]
    );
    assert_eq!(
        j["backing_chain"][0]["path"]
            .as_str()
            .map(|p| p.ends_with("phony.qcow2")),
        Some(true),
        "{}",
        j["backing_chain"]
    );
    let script = std::fs::read_to_string(vms.join("vm_41.sh")).unwrap();
    assert!(
        script.contains("media=cdrom") && script.contains("vm_41.seed.iso"),
        "{script}"
    );

    // A config drive, for cloudbase-init.
    let (code, json, err) = clone(
        &phony.image,
        &vms,
        &[
            "--id",
            "42",
            "--hostname",
            "agent-42",
            "--seed",
            "configdrive",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let (label, files) = iso_contents(&vms.join("vm_42.seed.iso"), dir.path());
    assert_eq!(label, "config-2");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "openstack/latest/meta_data.json",
            "openstack/latest/network_data.json"
        ]
    );
    let meta: Value = serde_json::from_slice(&files[0].1).unwrap();
    assert_eq!(meta["hostname"], "agent-42");
    assert_eq!(meta["uuid"], json["identity"]["machine_guid"]);
    // --user-data needs a seed to go on.
    let (code, _, err) = clone(&phony.image, &vms, &["--id", "43", "--user-data", s(&user)]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn an_nt5_sysprep_golden_gets_its_name_in_sysprep_inf() {
    let dir = tempdir();
    let inf = "[Unattended]\r\nOemSkipEula=Yes\r\n\r\n[UserData]\r\nFullName=\"Ops\"\r\n\
               ComputerName=GOLDEN\r\nOrgName=\"Example\"\r\n\r\n[GuiUnattended]\r\n\
               TimeZone=85\r\n";
    let phony = fixtures::phony_windows(
        dir.path(),
        &fixtures::WIN2K3R2_X86,
        vec![fixtures::Entry::File(
            "sysprep/sysprep.inf",
            inf.as_bytes().to_vec(),
        )],
    );
    let reg = dir.path().join("minisetup.reg");
    std::fs::write(
        &reg,
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SYSTEM\\Setup]\r\n\
         \"MiniSetupInProgress\"=dword:00000001\r\n",
    )
    .unwrap();
    let golden = dir.path().join("nt5-sealed.qcow2");
    succeeds(wingold().args([
        "inject",
        s(&phony.image),
        "--reg",
        s(&reg),
        "--output",
        s(&golden),
    ]));
    let vms = dir.path().join("vms");
    let (code, json, err) = clone(&golden, &vms, &["--id", "51", "--hostname", "till-51"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["identity"]["seal"], "sealed_nt5");
    let part = dir.path().join("p.raw");
    fixtures::extract_partition(
        &vms.join("vm_51.qcow2"),
        phony.win_offset,
        phony.win_size,
        &part,
    );
    let got = run("ntfscat", &["-f", s(&part), "/sysprep/sysprep.inf"]).stdout;
    let got = String::from_utf8(got).unwrap();
    assert_eq!(
        got,
        inf.replace("ComputerName=GOLDEN", "ComputerName=TILL-51")
    );
    // What NT 5 takes only in forms wingold does not write: refused, not dropped.
    let pw = dir.path().join("pw.txt");
    std::fs::write(&pw, "secret\n").unwrap();
    let (code, _, err) = clone(
        &golden,
        &vms,
        &[
            "--id",
            "52",
            "--hostname",
            "till-52",
            "--admin-password-file",
            s(&pw),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("NT 5"), "{err}");
}

#[test]
fn an_unsealed_server_2003_clone_gets_its_names_too() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &fixtures::WIN2K3R2_X86, vec![]);
    let vms = dir.path().join("vms");
    let (code, json, err) = clone(
        &phony.image,
        &vms,
        &["--id", "61", "--hostname", "legacy-61"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(json["identity"]["seal"], "unsealed");
    let bytes = guest_file(
        &vms.join("vm_61.qcow2"),
        &phony,
        dir.path(),
        "/WINDOWS/System32/config/SYSTEM",
    );
    let system = dir.path().join("SYSTEM.2003");
    std::fs::write(&system, bytes).unwrap();
    for set in json["identity"]["control_sets"].as_array().unwrap() {
        let set = set.as_str().unwrap();
        assert_eq!(
            hivexget(
                &system,
                &format!("\\{set}\\Control\\ComputerName\\ComputerName"),
                "ComputerName"
            )
            .as_deref(),
            Some("LEGACY-61")
        );
    }
}

#[test]
fn a_hundred_clones_are_a_hundred_machines() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let golden_sha = sha256_file(&phony.image);
    let spec = dir.path().join("clones.toml");
    let text: String = (1..=100)
        .map(|i| format!("[[clone]]\nid = {i}\nhostname = \"node-{i:03}\"\n\n"))
        .collect();
    std::fs::write(&spec, text).unwrap();
    let vms = dir.path().join("vms");
    let (code, json, err) = clone(&phony.image, &vms, &["--spec", s(&spec)]);
    assert_eq!(code, Some(0), "{err}");
    let made = json.as_array().unwrap();
    assert_eq!(made.len(), 100);
    let names: std::collections::BTreeSet<&str> = made
        .iter()
        .map(|c| c["identity"]["computer_name"].as_str().unwrap())
        .collect();
    let guids: std::collections::BTreeSet<&str> = made
        .iter()
        .map(|c| c["identity"]["machine_guid"].as_str().unwrap())
        .collect();
    assert_eq!((names.len(), guids.len()), (100, 100));
    assert_eq!(sha256_file(&phony.image), golden_sha, "the golden changed");
    // One of them read back by hivexget.
    let system = hive_of(&vms.join("vm_57.qcow2"), &phony, dir.path(), "SYSTEM");
    assert_eq!(
        hivexget(
            &system,
            "\\ControlSet001\\Control\\ComputerName\\ComputerName",
            "ComputerName"
        )
        .as_deref(),
        Some("NODE-057")
    );
}
