//! Launch recipes against the real thing: QEMU accepts them and builds the devices
//! they ask for (checked over QMP), virt-xml-validate accepts the libvirt XML, and
//! the sh recipe passes hostile file names through intact.

use wingold_test_support as support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

struct Files {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    hda: PathBuf,
    hdb: PathBuf,
    win_iso: PathBuf,
    virtio_iso: PathBuf,
}

/// Disks by `wingold disks`, two small ISOs by xorriso, in a folder named `sub`.
fn files(sub: &str) -> Files {
    let tmp = tempdir();
    let dir = tmp.path().join(sub);
    std::fs::create_dir_all(&dir).unwrap();
    succeeds(wingold().args([
        "disks",
        "--id",
        "7",
        "--dir",
        s(&dir),
        "--hda-size",
        "64M",
        "--hdb-size",
        "16M",
    ]));
    let iso = |name: &str, label: &str| {
        let src = dir.join(format!("{label}-src"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("README.TXT"), label).unwrap();
        let p = dir.join(name);
        run(
            "xorriso",
            &[
                "-as",
                "mkisofs",
                "-quiet",
                "-V",
                label,
                "-o",
                s(&p),
                s(&src),
            ],
        );
        p
    };
    Files {
        win_iso: iso("win, 2022.iso", "WIN2022"),
        virtio_iso: iso("virtio-win.iso", "virtio-win-0.1.285"),
        hda: dir.join("vm_7.qcow2"),
        hdb: dir.join("temp_7.qcow2"),
        dir,
        _dir: tmp,
    }
}

fn launch(f: &Files, install: bool, format: &str) -> String {
    let mut cmd = wingold();
    cmd.args([
        "launch",
        s(&f.hda),
        "--id",
        "7",
        "--net",
        "user",
        "--accel",
        "tcg",
        "--vnc",
        "none",
        "--format",
        format,
    ]);
    if install {
        cmd.args([
            "--install",
            "--windows-iso",
            s(&f.win_iso),
            "--virtio-iso",
            s(&f.virtio_iso),
            "--hdb",
            s(&f.hdb),
        ]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Qemu {
    /// None for a second monitor on a QEMU another `Qemu` started.
    child: Option<Child>,
    qmp: BufReader<UnixStream>,
}

impl Qemu {
    /// Runs the sh recipe paused, with a QMP socket.
    fn start(script: &Path, sock: &Path) -> Qemu {
        let qmp_arg = format!("unix:{},server=on,wait=off", s(sock));
        let child = Command::new("sh")
            .arg(script)
            .args(["-S", "-qmp", &qmp_arg])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("TEST CANNOT RUN: sh");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            if let Ok(st) = UnixStream::connect(sock) {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU did not open its QMP socket (is qemu-system-x86 installed? make setup)"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Qemu::greet(Some(child), stream)
    }

    /// A second monitor of a QEMU already running (the recipe's own socket).
    fn attach(sock: &Path) -> Qemu {
        let stream = UnixStream::connect(sock)
            .unwrap_or_else(|e| panic!("the recipe's QMP socket {}: {e}", sock.display()));
        Qemu::greet(None, stream)
    }

    fn greet(child: Option<Child>, stream: UnixStream) -> Qemu {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut q = Qemu {
            child,
            qmp: BufReader::new(stream),
        };
        let greeting = q.read();
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        q.cmd("qmp_capabilities");
        q
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        assert!(self.qmp.read_line(&mut line).unwrap() > 0, "QMP closed");
        serde_json::from_str(&line).unwrap()
    }

    fn cmd(&mut self, name: &str) -> Value {
        self.send(json!({ "execute": name }))
    }

    fn cmd_with(&mut self, name: &str, arguments: Value) -> Value {
        self.send(json!({ "execute": name, "arguments": arguments }))
    }

    fn send(&mut self, command: Value) -> Value {
        let name = command["execute"].clone();
        let msg = command.to_string() + "\n";
        self.qmp.get_mut().write_all(msg.as_bytes()).unwrap();
        loop {
            let v = self.read();
            if v.get("event").is_some() {
                continue;
            }
            assert!(v.get("error").is_none(), "{name}: {v}");
            return v["return"].clone();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn script(f: &Files, install: bool) -> PathBuf {
    let p = f.dir.join(if install { "install.sh" } else { "run.sh" });
    std::fs::write(&p, launch(f, install, "sh")).unwrap();
    p
}

const VIRTIO_VENDOR: u64 = 0x1af4;

fn pci_devices(q: &mut Qemu) -> Vec<Value> {
    q.cmd("query-pci")[0]["devices"].as_array().unwrap().clone()
}

#[test]
fn qemu_builds_the_install_vm() {
    let f = files("install");
    let mut q = Qemu::start(&script(&f, true), &f.dir.join("qmp.sock"));
    let filters = q.cmd("query-rx-filter");
    assert_eq!(filters[0]["main-mac"], "00:16:3e:ff:ff:07", "{filters}");
    let devices = pci_devices(&mut q);
    let virtio: Vec<&str> = devices
        .iter()
        .filter(|d| d["id"]["vendor"] == VIRTIO_VENDOR)
        .map(|d| d["class_info"]["desc"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(virtio.len(), 3, "virtio NIC, balloon and HDB: {devices:?}");
    assert!(q.cmd("query-balloon")["actual"].as_u64().unwrap() > 0);
    let blocks = q.cmd("query-block");
    let by_id = |id: &str| {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["device"] == id)
            .cloned()
            .unwrap()
    };
    let hda = by_id("hda");
    assert!(
        hda["qdev"].as_str().unwrap().contains("peripheral-anon"),
        "{hda}"
    );
    assert_eq!(hda["inserted"]["file"], s(&f.hda));
    assert_eq!(hda["inserted"]["cache"]["writeback"], true);
    let hdb = by_id("hdb");
    assert!(
        hdb["qdev"].as_str().unwrap().contains("virtio-backend"),
        "HDB not on virtio: {hdb}"
    );
    for (id, iso) in [("cd0", &f.win_iso), ("cd1", &f.virtio_iso)] {
        let cd = by_id(id);
        assert_eq!(cd["removable"], true, "{cd}");
        assert_eq!(cd["inserted"]["file"], s(iso), "{cd}");
        assert_eq!(cd["inserted"]["ro"], true);
    }
    // HDA is on IDE: no virtio backend.
    assert!(!hda["qdev"].as_str().unwrap().contains("virtio"));
}

#[test]
fn qemu_builds_the_run_vm() {
    let f = files("run");
    let mut q = Qemu::start(&script(&f, false), &f.dir.join("qmp.sock"));
    let blocks = q.cmd("query-block");
    let disks: Vec<&Value> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["inserted"].is_object())
        .collect();
    assert_eq!(disks.len(), 1, "HDA alone: {blocks}");
    assert!(
        disks[0]["qdev"]
            .as_str()
            .unwrap()
            .contains("virtio-backend"),
        "HDA on virtio"
    );
    assert_eq!(q.cmd("query-rx-filter")[0]["main-mac"], "00:16:3e:ff:ff:07");
    // The guest agent's channel: a virtio-serial port named as qemu-ga looks
    // for it, on the socket beside HDA.
    let agent = f.hda.with_extension("qga.sock");
    let chardevs = q.cmd("query-chardev");
    let qga = chardevs
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == "qga0")
        .unwrap_or_else(|| panic!("no qga0 chardev: {chardevs}"));
    assert!(
        qga["filename"].as_str().unwrap().contains(s(&agent)),
        "{qga}"
    );
    assert!(agent.exists(), "QEMU listens on {}", agent.display());
    // The host's own monitor beside HDA: a host service can take the NIC's link
    // down and up (what a hung virtio NIC needs from outside).
    let mut host = Qemu::attach(&f.hda.with_extension("qmp.sock"));
    assert_eq!(
        host.cmd_with("set_link", json!({"name": "net0", "up": false})),
        json!({})
    );
    assert_eq!(
        host.cmd_with("set_link", json!({"name": "net0", "up": true})),
        json!({})
    );
}

#[test]
fn libvirt_xml_validates() {
    let f = files("xml & 'quotes'");
    for install in [true, false] {
        let xml = f.dir.join(format!("domain-{install}.xml"));
        std::fs::write(&xml, launch(&f, install, "libvirt")).unwrap();
        validate_domain(&xml);
    }
}

#[test]
fn sh_recipe_passes_hostile_names_intact() {
    let f = files("a dir $(touch pwned) `touch pwned2`; echo 'x' \"y\", z");
    let script = script(&f, true);
    let check = Command::new("sh").arg("-n").arg(&script).output().unwrap();
    assert!(
        check.status.success(),
        "sh -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // A recorder in place of QEMU writes its argv, NUL-separated.
    let bin = f.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = f.dir.join("argv.bin");
    let recorder = bin.join("qemu-system-x86_64");
    std::fs::write(
        &recorder,
        format!(
            "#!/bin/sh\nprintf '%s\\0' \"$0\" \"$@\" > '{}'\n",
            s(&record).replace('\'', "'\\''")
        ),
    )
    .unwrap();
    run("chmod", &["+x", s(&recorder)]);
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .arg(&script)
        .env("PATH", path)
        .current_dir(&f.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = std::fs::read(&record)
        .unwrap()
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    let want: Vec<String> = serde_json::from_str(&launch(&f, true, "argv")).unwrap();
    assert_eq!(
        got[1..],
        want[1..],
        "the sh recipe passed other arguments than the argv recipe"
    );
    assert!(got[0].ends_with("qemu-system-x86_64"));
    // Commas in file names are doubled for QEMU; nothing ran.
    assert!(
        want.iter().any(|a| a.contains("win,, 2022.iso")),
        "{want:?}"
    );
    assert!(!f.dir.join("pwned").exists() && !f.dir.join("pwned2").exists());
    assert!(!Path::new("pwned").exists());
}

#[test]
fn bad_mac_base_and_id_are_refused() {
    let f = files("mac");
    for (base, id, needle) in [
        ("00:16:3e:ff", "7", "expected five hex octets"),
        ("01:16:3e:ff:ff", "7", "multicast bit"),
        ("00:16:3e:ff:ff", "300", "VM id 300 does not fit"),
    ] {
        let out = wingold()
            .args(["launch", s(&f.hda), "--id", id, "--mac-base", base])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{base} {id}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{base} {id}: {err}");
    }
}

/// Shell completions come from the clap definitions: bash's script is valid bash
/// and offers every subcommand.
#[test]
fn completions_cover_every_subcommand() {
    let out = wingold().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "fetch", "disks", "inspect", "inject", "launch", "build", "clone", "gc",
    ] {
        assert!(script.contains(cmd), "{cmd} missing");
    }
    let path = std::env::temp_dir().join(format!("wingold-completion-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    for shell in ["zsh", "fish"] {
        let out = wingold().args(["completions", shell]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("gc"));
    }
}

/// `wingold launch` for `f.hda` with `extra` arguments, in `format`.
fn launch_with(f: &Files, extra: &[&str], format: &str) -> String {
    let out = succeeds(
        wingold()
            .args(["launch", s(&f.hda), "--id", "7", "--net", "user"])
            .args(["--accel", "tcg", "--vnc", "none", "--format", format])
            .args(extra),
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn disks_without_hdb_give_an_ide_only_install_vm() {
    let tmp = tempdir();
    let dir = tmp.path().join("nohdb");
    let out = succeeds(
        wingold()
            .args([
                "disks",
                "--id",
                "8",
                "--dir",
                s(&dir),
                "--hda-size",
                "64M",
                "--no-hdb",
            ])
            .args(["--json"]),
    );
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["disks"].as_array().unwrap().len(), 1, "{j}");
    assert!(dir.join("vm_8.qcow2").exists());
    assert!(!dir.join("temp_8.qcow2").exists());
    let f = files("install-nohdb");
    let recipe = f.dir.join("install-nohdb.sh");
    let text = launch_with(
        &f,
        &[
            "--install",
            "--windows-iso",
            s(&f.win_iso),
            "--virtio-iso",
            s(&f.virtio_iso),
        ],
        "sh",
    );
    std::fs::write(&recipe, text).unwrap();
    let mut q = Qemu::start(&recipe, &f.dir.join("qmp.sock"));
    let virtio = pci_devices(&mut q)
        .iter()
        .filter(|d| d["id"]["vendor"] == VIRTIO_VENDOR)
        .count();
    assert_eq!(virtio, 2, "virtio NIC and balloon only");
    let blocks = q.cmd("query-block");
    assert!(
        !blocks.to_string().contains("\"hdb\""),
        "an HDB in the recipe: {blocks}"
    );
}

#[test]
fn run_vm_on_virtio_scsi() {
    let f = files("scsi");
    let recipe = f.dir.join("run-scsi.sh");
    std::fs::write(&recipe, launch_with(&f, &["--disk-bus", "scsi"], "sh")).unwrap();
    let mut q = Qemu::start(&recipe, &f.dir.join("qmp.sock"));
    let devices = pci_devices(&mut q);
    // The virtio-scsi controller (transitional id 0x1004 on the pc machine).
    assert!(
        devices
            .iter()
            .any(|d| d["id"]["vendor"] == VIRTIO_VENDOR && d["id"]["device"] == 0x1004),
        "no virtio-scsi controller: {devices:?}"
    );
    let blocks = q.cmd("query-block");
    let hda = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["device"] == "hda")
        .unwrap();
    assert_eq!(hda["inserted"]["file"], s(&f.hda));
    let xml = f.dir.join("domain-scsi.xml");
    std::fs::write(&xml, launch_with(&f, &["--disk-bus", "scsi"], "libvirt")).unwrap();
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(text.contains("bus='scsi'") && text.contains("model='virtio-scsi'"));
    let out = Command::new("virt-xml-validate")
        .args([s(&xml), "domain"])
        .output()
        .expect("TEST CANNOT RUN: virt-xml-validate missing (Debian libvirt-clients)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unattended_install_attaches_its_answer_medium() {
    // The answer medium beside the disk (written by `disks --unattended`) is the
    // install VM's third CD-ROM, in QEMU and in the libvirt XML.
    let f = files("unattended");
    std::fs::write(f.dir.join("pw"), "Pw-for-the-medium-1\n").unwrap();
    let medium = f.dir.join("vm_9.unattend.iso");
    succeeds(
        wingold()
            .args([
                "disks",
                "--id",
                "9",
                "--dir",
                s(&f.dir),
                "--hda-size",
                "64M",
            ])
            .args(["--no-hdb", "--unattended", "--os", "win2k22"])
            .args(["--admin-password-file", s(&f.dir.join("pw"))]),
    );
    let hda = f.dir.join("vm_9.qcow2");
    let install = |format: &str| {
        let out = succeeds(
            wingold()
                .args(["launch", s(&hda), "--id", "9", "--net", "user"])
                .args(["--accel", "tcg", "--vnc", "none", "--format", format])
                .args(["--install", "--windows-iso", s(&f.win_iso)])
                .args(["--virtio-iso", s(&f.virtio_iso)]),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let recipe = f.dir.join("install-9.sh");
    std::fs::write(&recipe, install("sh")).unwrap();
    let mut q = Qemu::start(&recipe, &f.dir.join("qmp.sock"));
    let blocks = q.cmd("query-block");
    let cds: Vec<&Value> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["removable"] == true && b["inserted"].is_object())
        .collect();
    assert_eq!(cds.len(), 3, "Windows, virtio-win and the answer: {blocks}");
    let answer = cds
        .iter()
        .find(|b| b["inserted"]["file"] == s(&medium))
        .unwrap_or_else(|| panic!("no CD-ROM holds {}: {blocks}", medium.display()));
    assert_eq!(answer["inserted"]["ro"], true);
    drop(q);
    let xml = f.dir.join("install-9.xml");
    std::fs::write(&xml, install("libvirt")).unwrap();
    assert!(std::fs::read_to_string(&xml).unwrap().contains(s(&medium)));
    validate_domain(&xml);
}

/// libvirt's own schema check of a domain XML file.
fn validate_domain(xml: &Path) {
    let out = Command::new("virt-xml-validate")
        .args([s(xml), "domain"])
        .output()
        .expect("TEST CANNOT RUN: virt-xml-validate missing (Debian libvirt-clients)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
