//! How to start a Windows guest: QEMU argument vectors, runnable sh scripts and
//! libvirt domain XML, for the installer (HDA on IDE, the temporary HDB on virtio so
//! that Windows installs the virtio storage driver, both ISOs as CD-ROMs) and for
//! everyday runs (HDA alone, on virtio).
//!
//! Plain data in, text out: nothing here starts a process or touches an image.

#![deny(unsafe_code)]

use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The QEMU binary the recipes call.
pub const QEMU: &str = "qemu-system-x86_64";
/// Default MAC prefix: Xen's OUI 00:16:3e, as the seed script used, then ff:ff.
pub const DEFAULT_MAC_BASE: &str = "00:16:3e:ff:ff";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid MAC base {0:?}: expected five hex octets like 00:16:3e:ff:ff")]
    MacBase(String),
    #[error("invalid MAC base {0:?}: the first octet has the multicast bit set")]
    Multicast(String),
    #[error("VM id {0} does not fit the last octet of a MAC address (0-255)")]
    IdTooLarge(u32),
}

crate::error::classify! {
    impl Classify for Error {
        /// Every launch error is a value the user gave.
        fn kind(&self) -> crate::error::Kind {
            crate::error::Kind::BadInput
        }
    }
}

/// How the guest is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// A host tap interface `tap<id>` (made beforehand by the admin, no scripts run).
    Tap,
    /// QEMU's user-mode network (no setup, outbound only).
    User,
    /// No network.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
    /// KVM, falling back to TCG where KVM is unavailable.
    Auto,
}

/// The controller the system disk sits on in everyday runs: it decides the boot
/// driver Windows needs (`viostor` for virtio-blk, `vioscsi` for virtio-scsi).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    #[default]
    Virtio,
    Scsi,
}

/// What the installer needs beside HDA.
#[derive(Debug, Clone, Serialize)]
pub struct Install {
    pub windows_iso: PathBuf,
    pub virtio_iso: PathBuf,
    /// The temporary virtio disk (HDB) and its format; None installs without one
    /// (the drivers are injected offline by `wingold build` / `inject --drivers`).
    pub hdb: Option<(PathBuf, String)>,
    /// The answer medium of an unattended install (`vm_N.unattend.iso`), a third
    /// CD-ROM Setup reads `autounattend.xml` from.
    pub answer: Option<PathBuf>,
}

/// UEFI with Secure Boot and a TPM 2.0, as Windows 11 requires: OVMF's
/// secure-boot code (read-only), the VM's own variable store (a copy of the
/// Microsoft-keys template: Secure Boot on), and the TPM state folder `swtpm`
/// keeps for this VM.
#[derive(Debug, Clone, Serialize)]
pub struct Uefi {
    pub code: PathBuf,
    pub vars: PathBuf,
    pub tpm: PathBuf,
}

/// OVMF's secure-boot firmware code and its variable-store template with
/// Microsoft's keys enrolled (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// The TPM emulator the UEFI recipes start.
pub const SWTPM: &str = "swtpm";

impl Uefi {
    /// The firmware files of the VM whose system disk is `hda`: `vm_N.vars.fd`
    /// and the folder `vm_N.tpm` beside it.
    pub fn beside(hda: &Path) -> Uefi {
        Uefi {
            code: PathBuf::from(OVMF_CODE),
            vars: hda.with_extension("vars.fd"),
            tpm: hda.with_extension("tpm"),
        }
    }

    /// The socket swtpm serves the TPM on.
    pub fn socket(&self) -> PathBuf {
        self.tpm.join("swtpm.sock")
    }
}

/// The name the QEMU guest agent's virtio-serial port carries, which
/// qemu-guest-agent in the guest and `virsh qemu-agent-command` both look for.
pub const GUEST_AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// One VM's recipe.
#[derive(Debug, Clone, Serialize)]
pub struct Vm {
    pub id: u32,
    pub name: String,
    pub hda: PathBuf,
    pub hda_format: String,
    pub memory_mib: u64,
    pub cpus: u32,
    pub mac: String,
    pub net: Net,
    /// VNC listen address; the display number is the VM id.
    pub vnc: Option<String>,
    pub accel: Accel,
    /// The system disk's controller in everyday runs (the installer keeps IDE).
    pub disk_bus: DiskBus,
    pub install: Option<Install>,
    /// Seed media for an in-guest agent (a clone's `vm_N.seed.iso`), attached
    /// as a CD-ROM.
    pub seed: Option<PathBuf>,
    /// UEFI, Secure Boot and a TPM (the q35 machine); None: BIOS (pc machine).
    pub uefi: Option<Uefi>,
}

/// The MAC for VM `id`: the five octets of `base`, then `id` as the last octet
/// (VM 10 gets `…:0a`: the id's value, not its decimal digits read as hex as the old
/// seed script did, so every id 0-255 maps to a distinct address).
pub fn mac_for(base: &str, id: u32) -> Result<String, Error> {
    let octets: Vec<&str> = base.split(':').collect();
    let valid = octets.len() == 5
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    if !valid {
        return Err(Error::MacBase(base.to_owned()));
    }
    let first = u8::from_str_radix(octets[0], 16).expect("checked");
    if first & 1 != 0 {
        return Err(Error::Multicast(base.to_owned()));
    }
    if id > 255 {
        return Err(Error::IdTooLarge(id));
    }
    Ok(format!("{}:{id:02x}", base.to_ascii_lowercase()))
}

/// A QEMU option value with its commas doubled, as QEMU's option parser requires.
fn qv(value: &str) -> String {
    value.replace(',', ",,")
}

fn qp(path: &Path) -> String {
    qv(&path.to_string_lossy())
}

impl Vm {
    /// The guest agent's socket in everyday runs: `vm_N.qga.sock` beside HDA.
    pub fn agent_socket(&self) -> PathBuf {
        self.hda.with_extension("qga.sock")
    }

    /// The QMP monitor's socket in everyday runs: `vm_N.qmp.sock` beside HDA,
    /// for a host-side service (e.g. `set_link` to reset the NIC's link).
    pub fn qmp_socket(&self) -> PathBuf {
        self.hda.with_extension("qmp.sock")
    }

    /// The argument vector, program first.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![QEMU.into(), "-name".into(), qv(&self.name)];
        match self.accel {
            Accel::Kvm => a.extend(["-accel".into(), "kvm".into()]),
            Accel::Tcg => a.extend(["-accel".into(), "tcg".into()]),
            Accel::Auto => a.extend(["-accel".into(), "kvm".into(), "-accel".into(), "tcg".into()]),
        }
        let machine = if self.uefi.is_some() {
            "q35,smm=on"
        } else {
            "pc"
        };
        a.extend([
            "-machine".into(),
            machine.into(),
            "-m".into(),
            format!("{}M", self.memory_mib),
            "-smp".into(),
            self.cpus.to_string(),
            // Windows keeps the hardware clock in local time.
            "-rtc".into(),
            "base=localtime".into(),
        ]);
        if let Some(u) = &self.uefi {
            a.extend([
                "-global".into(),
                "driver=cfi.pflash01,property=secure,value=on".into(),
                "-drive".into(),
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    qp(&u.code)
                ),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", qp(&u.vars)),
                "-chardev".into(),
                format!("socket,id=chrtpm,path={}", qp(&u.socket())),
                "-tpmdev".into(),
                "emulator,id=tpm0,chardev=chrtpm".into(),
                "-device".into(),
                "tpm-crb,tpmdev=tpm0".into(),
            ]);
        }
        // IDE slots: the pc machine's two buses of two units; q35's AHCI ports,
        // one unit each.
        let q35 = self.uefi.is_some();
        let slot = |n: usize| {
            if q35 {
                format!("bus=ide.{n},unit=0")
            } else {
                format!("bus=ide.{},unit={}", n / 2, n % 2)
            }
        };
        let drive = |id: &str, path: &Path, format: &str| {
            format!(
                "if=none,id={id},file={},format={format},cache=writeback",
                qp(path)
            )
        };
        match &self.install {
            Some(inst) => {
                // Boot menu, CD first; HDA on IDE (Windows' own driver), HDB on
                // virtio so that Windows installs the virtio storage driver.
                a.extend(["-boot".into(), "menu=on,order=d".into()]);
                a.extend(["-drive".into(), drive("hda", &self.hda, &self.hda_format)]);
                a.extend([
                    "-device".into(),
                    if q35 {
                        format!("ide-hd,drive=hda,{},bootindex=1", slot(0))
                    } else {
                        format!("ide-hd,drive=hda,{}", slot(0))
                    },
                ]);
                if let Some((hdb, format)) = &inst.hdb {
                    a.extend(["-drive".into(), drive("hdb", hdb, format)]);
                    a.extend(["-device".into(), "virtio-blk-pci,drive=hdb".into()]);
                }
                let answer = inst.answer.as_ref().map(|a| ("cd2", 1, a));
                let cds = [("cd0", 2, &inst.windows_iso), ("cd1", 3, &inst.virtio_iso)];
                for (id, n, iso) in cds.into_iter().chain(answer) {
                    a.extend([
                        "-drive".into(),
                        format!(
                            "if=none,id={id},file={},format=raw,media=cdrom,readonly=on",
                            qp(iso)
                        ),
                        "-device".into(),
                        // OVMF boots by bootindex (the -boot order is the BIOS's).
                        if q35 && id == "cd0" {
                            format!("ide-cd,drive={id},{},bootindex=0", slot(n))
                        } else {
                            format!("ide-cd,drive={id},{}", slot(n))
                        },
                    ]);
                }
            }
            None => {
                a.extend(["-drive".into(), drive("hda", &self.hda, &self.hda_format)]);
                match self.disk_bus {
                    DiskBus::Virtio => a.extend([
                        "-device".into(),
                        "virtio-blk-pci,drive=hda,bootindex=0".into(),
                    ]),
                    DiskBus::Scsi => a.extend([
                        "-device".into(),
                        "virtio-scsi-pci,id=scsi0".into(),
                        "-device".into(),
                        "scsi-hd,drive=hda,bus=scsi0.0,bootindex=0".into(),
                    ]),
                }
            }
        }
        if let Some(seed) = &self.seed {
            a.extend([
                "-drive".into(),
                format!(
                    "if=none,id=seed,file={},format=raw,media=cdrom,readonly=on",
                    qp(seed)
                ),
                "-device".into(),
                format!("ide-cd,drive=seed,{}", slot(2)),
            ]);
        }
        a.extend(["-device".into(), "virtio-balloon-pci,id=balloon0".into()]);
        if self.install.is_none() {
            // The guest agent's channel (a virtio-serial port the agent opens once
            // Windows is up) and a QMP monitor for the host, both on sockets
            // beside HDA that nothing else needs to know about.
            a.extend([
                "-device".into(),
                "virtio-serial-pci,id=vser0".into(),
                "-chardev".into(),
                format!(
                    "socket,id=qga0,path={},server=on,wait=off",
                    qp(&self.agent_socket())
                ),
                "-device".into(),
                format!("virtserialport,bus=vser0.0,chardev=qga0,name={GUEST_AGENT_PORT}"),
                "-qmp".into(),
                format!("unix:{},server=on,wait=off", qp(&self.qmp_socket())),
            ]);
        }
        match self.net {
            Net::Tap => a.extend([
                "-netdev".into(),
                format!("tap,id=net0,ifname=tap{},script=no,downscript=no", self.id),
            ]),
            Net::User => a.extend(["-netdev".into(), "user,id=net0".into()]),
            Net::None => {}
        }
        if self.net != Net::None {
            a.extend([
                "-device".into(),
                format!("virtio-net-pci,netdev=net0,mac={}", self.mac),
            ]);
        }
        // A tablet keeps the VNC pointer in step with Windows'.
        a.extend(["-usb".into(), "-device".into(), "usb-tablet".into()]);
        match &self.vnc {
            Some(addr) => a.extend(["-vnc".into(), format!("{}:{}", qv(addr), self.id)]),
            None => a.extend(["-display".into(), "none".into()]),
        }
        a
    }

    /// A runnable sh script: every argument single-quoted, so no path can run a
    /// command; extra arguments to the script are passed on to QEMU.
    pub fn sh(&self) -> String {
        let mut s = String::from("#!/bin/sh\n");
        let kind = if self.install.is_some() {
            "install"
        } else {
            "run"
        };
        let _ = writeln!(
            s,
            "# wingold launch recipe: {kind} VM {} ({})",
            self.id,
            self.name.replace('\n', " ")
        );
        s.push_str("# Extra arguments are passed on to QEMU (e.g. -S -display none).\n");
        if let Some(u) = &self.uefi {
            // The VM's own variable store (made by disks/clone; from the template
            // when missing), and its TPM: swtpm serves the state folder and ends
            // when QEMU closes the connection.
            let _ = writeln!(
                s,
                "[ -e {vars} ] || cp -- {tmpl} {vars}",
                vars = sh_quote(&u.vars.to_string_lossy()),
                tmpl = sh_quote(OVMF_VARS_TEMPLATE)
            );
            let tpm = sh_quote(&u.tpm.to_string_lossy());
            let _ = writeln!(s, "mkdir -p -- {tpm}");
            let _ = writeln!(
                s,
                "{SWTPM} socket --tpm2 --tpmstate dir={tpm} --ctrl type=unixio,path={} \\\n  --terminate --daemon",
                sh_quote(&u.socket().to_string_lossy())
            );
        }
        s.push_str("exec");
        // One option and its value per line.
        let argv = self.argv();
        let mut i = 0;
        while i < argv.len() {
            let _ = write!(s, " \\\n  {}", sh_quote(&argv[i]));
            if argv[i].starts_with('-') && argv.get(i + 1).is_some_and(|v| !v.starts_with('-')) {
                let _ = write!(s, " {}", sh_quote(&argv[i + 1]));
                i += 1;
            }
            i += 1;
        }
        s.push_str(" \\\n  \"$@\"\n");
        s
    }

    /// A libvirt domain for the same VM.
    pub fn libvirt(&self) -> String {
        let kvm = self.accel != Accel::Tcg;
        let mut x = String::new();
        let _ = writeln!(x, "<domain type='{}'>", if kvm { "kvm" } else { "qemu" });
        let _ = writeln!(x, "  <name>{}</name>", xml(&self.name));
        let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", self.memory_mib);
        let _ = writeln!(
            x,
            "  <currentMemory unit='MiB'>{}</currentMemory>",
            self.memory_mib
        );
        let _ = writeln!(x, "  <vcpu>{}</vcpu>", self.cpus);
        match &self.uefi {
            Some(u) => {
                x.push_str(
                    "  <os firmware='efi'>\n    <type arch='x86_64' machine='q35'>hvm</type>\n",
                );
                let _ = writeln!(
                    x,
                    "    <loader readonly='yes' secure='yes' type='pflash'>{}</loader>",
                    xml(&u.code.to_string_lossy())
                );
                let _ = writeln!(
                    x,
                    "    <nvram template='{}'>{}</nvram>",
                    xml(OVMF_VARS_TEMPLATE),
                    xml(&u.vars.to_string_lossy())
                );
            }
            None => x.push_str("  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n"),
        }
        if self.install.is_some() {
            x.push_str(
                "    <boot dev='cdrom'/>\n    <boot dev='hd'/>\n    <bootmenu enable='yes'/>\n",
            );
        } else {
            x.push_str("    <boot dev='hd'/>\n");
        }
        x.push_str("  </os>\n  <features>\n    <acpi/>\n    <apic/>\n");
        if self.uefi.is_some() {
            x.push_str("    <smm state='on'/>\n");
        }
        x.push_str("  </features>\n");
        x.push_str("  <clock offset='localtime'/>\n");
        x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n");
        x.push_str("  <devices>\n");
        let _ = writeln!(x, "    <emulator>/usr/bin/{QEMU}</emulator>");
        let disk = |x: &mut String, path: &Path, format: &str, dev: &str, bus: &str| {
            let _ = write!(
                x,
                "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{format}' cache='writeback'/>\n      <source file='{}'/>\n      <target dev='{dev}' bus='{bus}'/>\n    </disk>\n",
                xml(&path.to_string_lossy())
            );
        };
        // IDE on the pc machine, SATA (AHCI) on q35.
        let (legacy, [hd, cd0, cd1, cd2]) = if self.uefi.is_some() {
            ("sata", ["sda", "sdc", "sdd", "sdb"])
        } else {
            ("ide", ["hda", "hdc", "hdd", "hdb"])
        };
        match &self.install {
            Some(inst) => {
                disk(&mut x, &self.hda, &self.hda_format, hd, legacy);
                if let Some((hdb, format)) = &inst.hdb {
                    disk(&mut x, hdb, format, "vda", "virtio");
                }
                let answer = inst.answer.as_ref().map(|a| (cd2, a));
                let cds = [(cd0, &inst.windows_iso), (cd1, &inst.virtio_iso)];
                for (dev, iso) in cds.into_iter().chain(answer) {
                    let _ = write!(
                        x,
                        "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='{dev}' bus='{legacy}'/>\n      <readonly/>\n    </disk>\n",
                        xml(&iso.to_string_lossy())
                    );
                }
            }
            None if self.disk_bus == DiskBus::Scsi => {
                x.push_str("    <controller type='scsi' index='0' model='virtio-scsi'/>\n");
                disk(&mut x, &self.hda, &self.hda_format, "sda", "scsi")
            }
            None => disk(&mut x, &self.hda, &self.hda_format, "vda", "virtio"),
        }
        if let Some(seed) = &self.seed {
            let _ = write!(
                x,
                "    <disk type='file' device='cdrom'>\n      <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='{cd0}' bus='{legacy}'/>\n      <readonly/>\n    </disk>\n",
                xml(&seed.to_string_lossy())
            );
        }
        match self.net {
            Net::Tap => {
                let _ = write!(
                    x,
                    "    <interface type='ethernet'>\n      <mac address='{}'/>\n      <target dev='tap{}' managed='no'/>\n      <model type='virtio'/>\n    </interface>\n",
                    self.mac, self.id
                );
            }
            Net::User => {
                let _ = write!(
                    x,
                    "    <interface type='user'>\n      <mac address='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
                    self.mac
                );
            }
            Net::None => {}
        }
        if self.install.is_none() {
            let _ = write!(
                x,
                "    <channel type='unix'>\n      <source mode='bind' path='{}'/>\n      <target type='virtio' name='{GUEST_AGENT_PORT}'/>\n    </channel>\n",
                xml(&self.agent_socket().to_string_lossy())
            );
        }
        x.push_str("    <input type='tablet' bus='usb'/>\n");
        if let Some(addr) = &self.vnc {
            let _ = writeln!(
                x,
                "    <graphics type='vnc' port='{}' autoport='no' listen='{}'/>",
                5900 + self.id,
                xml(addr)
            );
        }
        if self.uefi.is_some() {
            x.push_str(
                "    <tpm model='tpm-crb'>\n      <backend type='emulator' version='2.0'/>\n    </tpm>\n",
            );
        }
        x.push_str("    <memballoon model='virtio'/>\n  </devices>\n</domain>\n");
        x
    }
}

/// Single-quotes `s` for sh: only `'` needs care, as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_takes_the_id_value_as_last_octet() {
        assert_eq!(mac_for("00:16:3e:ff:ff", 10).unwrap(), "00:16:3e:ff:ff:0a");
        assert_eq!(mac_for("52:54:00:AB:cd", 255).unwrap(), "52:54:00:ab:cd:ff");
        assert!(mac_for("00:16:3e:ff:ff", 256).is_err());
        assert!(mac_for("00:16:3e:ff", 1).is_err());
        assert!(mac_for("00:16:3e:ff:zz", 1).is_err());
        assert!(mac_for("01:16:3e:ff:ff", 1).is_err(), "multicast");
    }

    #[test]
    fn commas_in_option_values_are_doubled() {
        assert_eq!(qv("/a,b/c.qcow2"), "/a,,b/c.qcow2");
    }

    #[test]
    fn sh_quoting_survives_quotes() {
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
