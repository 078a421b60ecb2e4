//! How a disk boots, as `inspect` tells it, and BitLocker: phony MBR and GPT disks
//! (an EFI system partition made by mkfs.vfat and filled by mtools, not wingold),
//! and a partition whose boot sector says BitLocker.

use wingold_test_support as support;

use std::path::Path;
use support::fixtures::{self, Part, Table, MIB, WIN2K22_X64, WIN2K3R2_X86};
use support::*;

/// A FAT32 EFI system partition image, with Windows' loader in it when `loader`.
fn esp(path: &Path, loader: bool) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(40 * MIB).unwrap();
    drop(f);
    std::process::Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "SYSTEM", s(path)])
        .output()
        .expect("TEST CANNOT RUN: mkfs.vfat missing (Debian dosfstools)");
    let img = format!("{}", path.display());
    for dir in [
        "::EFI",
        "::EFI/Microsoft",
        "::EFI/Microsoft/Boot",
        "::EFI/Boot",
    ] {
        run("mmd", &["-i", &img, dir]);
    }
    let file = path.with_extension("efi");
    std::fs::write(&file, b"MZ phony loader").unwrap();
    run("mcopy", &["-i", &img, s(&file), "::EFI/Boot/bootx64.efi"]);
    if loader {
        run(
            "mcopy",
            &["-i", &img, s(&file), "::EFI/Microsoft/Boot/bootmgfw.efi"],
        );
    }
}

fn gpt_disk(dir: &Path, loader: bool) -> std::path::PathBuf {
    let esp_img = dir.join("esp.img");
    esp(&esp_img, loader);
    let data = dir.join("data.ntfs");
    fixtures::ntfs_volume(&data, 16 * MIB, "Data", &[]);
    let raw = dir.join("uefi.raw");
    fixtures::disk(
        &raw,
        64 * MIB,
        Table::Gpt,
        &[
            Part {
                size: 40 * MIB,
                volume: Some(esp_img),
                kind: "EF00",
            },
            Part {
                size: 16 * MIB,
                volume: Some(data),
                kind: "0700",
            },
        ],
    );
    raw
}

#[test]
fn a_uefi_disk_is_told_by_its_efi_system_partition_and_loader() {
    let dir = tempdir();
    for loader in [true, false] {
        let raw = gpt_disk(dir.path(), loader);
        let (code, j, err) = wingold_json("inspect", &[s(&raw)]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(j["boot"]["firmware"], "uefi", "{}", j["boot"]);
        assert_eq!(j["boot"]["esp"], 1);
        assert_eq!(j["boot"]["uefi_loader"], loader, "{}", j["boot"]);
        assert_eq!(j["partitions"][0]["filesystem"], "vfat");
        let text = succeeds(wingold().args(["inspect", s(&raw)]));
        let text = String::from_utf8_lossy(&text.stdout);
        let want = if loader { "present" } else { "MISSING" };
        assert!(text.contains(&format!("bootmgfw.efi {want}")), "{text}");
    }
}

#[test]
fn a_bios_disk_is_told_by_its_active_partition_and_loader() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K3R2_X86, vec![]);
    let (code, j, err) = wingold_json("inspect", &[s(&phony.image)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["boot"]["firmware"], "bios", "{}", j["boot"]);
    assert_eq!(j["boot"]["active"], 1);
    assert_eq!(j["boot"]["bios_loader"], "bootmgr");
}

#[test]
fn a_bitlocker_partition_is_named_and_never_written() {
    let dir = tempdir();
    // The Windows volume's boot sector as BitLocker leaves it: -FVE-FS- where
    // NTFS says NTFS.
    let phony = fixtures::phony_windows_with(dir.path(), &WIN2K22_X64, vec![], |vol| {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(vol).unwrap();
        f.seek(SeekFrom::Start(3)).unwrap();
        f.write_all(b"-FVE-FS-").unwrap();
    });
    let (code, j, err) = wingold_json("inspect", &[s(&phony.image)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["partitions"][1]["filesystem"], "bitlocker");
    let why = j["no_windows_reason"].as_str().unwrap();
    assert!(
        why.contains("BitLocker") && why.contains("manage-bde"),
        "{why}"
    );
    let before = sha256_file(&phony.image);
    let out = dir.path().join("never.qcow2");
    for extra in [vec![], vec!["--partition", "2"]] {
        let o = wingold()
            .args([
                "inject",
                s(&phony.image),
                "--profile",
                "all",
                "--output",
                s(&out),
            ])
            .args(&extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("BitLocker"), "{err}");
        assert!(!out.exists());
    }
    assert_eq!(sha256_file(&phony.image), before);
}

/// What virt-fw-vars (python3-virt-firmware) prints of a variable store.
fn vars_print(vars: &Path) -> String {
    let out = std::process::Command::new("virt-fw-vars")
        .args(["--input", s(vars), "--print", "-v"])
        .output()
        .expect("TEST CANNOT RUN: virt-fw-vars missing (Debian python3-virt-firmware)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn uefi_clones_get_their_own_variable_store_and_tpm() {
    let dir = tempdir();
    let phony = fixtures::phony_windows(dir.path(), &WIN2K22_X64, vec![]);
    let vms = dir.path().join("vms");
    let mut stores = Vec::new();
    for id in [71, 72] {
        let (code, j, err) = wingold_json(
            "clone",
            &[
                s(&phony.image),
                "--id",
                &id.to_string(),
                "--firmware",
                "uefi",
                "--dir",
                s(&vms),
                "--net",
                "none",
                "--vnc",
                "none",
                // KVM is not usable for guests on these machines.
                "--accel",
                "tcg",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let vars = vms.join(format!("vm_{id}.vars.fd"));
        let tpm = vms.join(format!("vm_{id}.tpm"));
        assert!(tpm.is_dir());
        let meta = std::fs::symlink_metadata(&vars).unwrap();
        assert!(meta.file_type().is_file(), "a copy, never a link");
        let printed = vars_print(&vars);
        assert!(printed.contains("KEK"), "{printed}");
        assert!(printed.contains("Microsoft"), "no Microsoft key: {printed}");
        assert!(printed.contains("SecureBootEnable"), "{printed}");
        let argv: Vec<&str> = j["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(argv.contains(&"q35,smm=on"), "{argv:?}");
        assert!(argv.iter().any(|a| a.contains(&format!("vm_{id}.vars.fd"))));
        assert!(argv.contains(&"tpm-crb,tpmdev=tpm0"));
        stores.push(std::fs::canonicalize(&vars).unwrap());
    }
    assert_ne!(stores[0], stores[1]);

    // The libvirt form validates against libvirt's schema.
    let xml = succeeds(wingold().args([
        "launch",
        s(&vms.join("vm_71.qcow2")),
        "--id",
        "71",
        "--firmware",
        "uefi",
        "--format",
        "libvirt",
    ]));
    let file = dir.path().join("vm71.xml");
    std::fs::write(&file, &xml.stdout).unwrap();
    let text = String::from_utf8_lossy(&xml.stdout);
    assert!(
        text.contains("<os firmware='efi'>") && text.contains("secure='yes'"),
        "{text}"
    );
    assert!(text.contains("<tpm model='tpm-crb'>") && text.contains("<smm state='on'/>"));
    let v = std::process::Command::new("virt-xml-validate")
        .args([s(&file), "domain"])
        .output()
        .expect("TEST CANNOT RUN: virt-xml-validate missing (Debian libvirt-clients)");
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // The run recipe starts swtpm and QEMU with the firmware and the TPM: QMP
    // sees the TPM, and the VM is still running seconds later.
    let qmp = dir.path().join("qmp.sock");
    let mut child = std::process::Command::new("sh")
        .arg(vms.join("vm_72.sh"))
        .args(["-qmp", &format!("unix:{},server=on,wait=off", s(&qmp))])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("TEST CANNOT RUN: sh");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !qmp.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the UEFI recipe ended ({status}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "QEMU never opened its QMP socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = qmp_query(&qmp, "query-tpm");
    assert!(
        answer.contains("tpm-crb") && answer.contains("emulator"),
        "{answer}"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "the VM stopped");
    let _ = child.kill();
    let _ = child.wait();
}

/// One QMP command's answer, over the monitor's Unix socket.
fn qmp_query(socket: &Path, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    // The socket file comes before QEMU listens on it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let stream = loop {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => panic!("QMP: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // greeting
    let mut w = stream;
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    w.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
        .unwrap();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.contains("\"return\"") || line.contains("\"error\"") {
            return line;
        }
    }
}

#[test]
fn a_clone_of_a_uefi_disk_boots_uefi_without_being_told() {
    let dir = tempdir();
    let raw = gpt_disk(dir.path(), true);
    let vms = dir.path().join("vms");
    let (code, j, err) = wingold_json(
        "clone",
        &[
            s(&raw),
            "--id",
            "73",
            "--keep-identity",
            "--dir",
            s(&vms),
            "--net",
            "none",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        j["argv"].to_string().contains("q35,smm=on"),
        "{}",
        j["argv"]
    );
    assert!(vms.join("vm_73.vars.fd").is_file());
}

#[test]
fn inspect_inject_and_clone_work_on_the_layout_of_a_uefi_install() {
    // EFI system partition 1, Microsoft reserved 2, Windows 3: partition
    // numbers as a UEFI install leaves them.
    let dir = tempdir();
    let phony = fixtures::phony_windows_uefi(dir.path(), &WIN2K22_X64);
    let (code, j, err) = wingold_json("inspect", &[s(&phony.image)]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["windows"]["partition"], 3, "{}", j["no_windows_reason"]);
    assert_eq!(j["boot"]["firmware"], "uefi");
    assert_eq!(j["boot"]["esp"], 1);
    assert_eq!(j["boot"]["uefi_loader"], true);
    let out = dir.path().join("golden.qcow2");
    let (code, j, err) = wingold_json(
        "inject",
        &[s(&phony.image), "--profile", "all", "--output", s(&out)],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(j["verified"], true);
    assert_qemu_check_clean(&out);
    // A clone of it boots UEFI without being told, and gets its own name.
    let vms = dir.path().join("vms");
    let (code, j, err) = wingold_json(
        "clone",
        &[
            s(&out),
            "--id",
            "74",
            "--hostname",
            "efi-74",
            "--dir",
            s(&vms),
            "--net",
            "none",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(j["argv"].to_string().contains("q35,smm=on"));
    assert_eq!(j["identity"]["computer_name"], "EFI-74");
    assert!(vms.join("vm_74.vars.fd").is_file() && vms.join("vm_74.tpm").is_dir());
}

#[test]
fn a_windows_11_installer_recipe_has_secure_boot_and_a_tpm() {
    let dir = tempdir();
    let iso = fixtures::virtio_iso(dir.path(), "0.1.999", 0);
    let script = dir.path().join("install.sh");
    let out = wingold()
        .args(["disks", "--id", "12", "--no-hdb", "--dir", s(dir.path())])
        .args([
            "--iso",
            s(&iso),
            "--virtio-iso",
            s(&iso),
            "--script",
            s(&script),
        ])
        .args([
            "--firmware",
            "uefi",
            "--accel",
            "tcg",
            "--vnc",
            "none",
            "--net",
            "none",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    for want in [
        "q35,smm=on",
        "OVMF_CODE_4M.ms.fd",
        "OVMF_VARS_4M.ms.fd",
        "vm_12.vars.fd",
        "swtpm socket --tpm2",
        "tpm-crb,tpmdev=tpm0",
        "ide-cd,drive=cd0,bus=ide.2,unit=0,bootindex=0",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // It starts: the variable store made from the template, swtpm serving, QEMU
    // still running after seconds (killed here).
    let mut child = std::process::Command::new("sh")
        .arg(&script)
        .args(["-display", "none"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(alive, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("vm_12.vars.fd").is_file());
}
