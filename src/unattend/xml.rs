//! `autounattend.xml`: what Setup reads from the root of a removable medium
//! (Microsoft's "Unattended Windows Setup Reference"; component and setting
//! names as there, `publicKeyToken` 31bf3856ad364e35, `language` neutral).
//!
//! - windowsPE: Setup's language; disk 0 wiped and partitioned for the firmware
//!   (MBR: System Reserved, active, and Windows; GPT: EFI system partition,
//!   MSR and Windows); the edition installed to the Windows partition; the
//!   licence terms accepted; the product key when given.
//! - specialize: the computer name (`*`: Setup makes one up) and time zone.
//! - oobeSystem: the locales; the administrator password, encoded; one
//!   automatic logon as Administrator (which also enables that account on
//!   client Windows), whose first-logon commands turn hibernation off and shut
//!   the VM down — the install ends with the VM off and `wingold build` can
//!   follow; the OOBE pages hidden.

use super::{Edition, Firmware, Request};

/// A password as answer files hold it with `PlainText` false: base64 of
/// UTF-16LE(password + the setting's name, `AdministratorPassword` or
/// `Password`). An encoding, not encryption: anyone who reads the file can undo
/// it.
pub fn encode_password(password: &str, setting: &str) -> String {
    let units: Vec<u8> = format!("{password}{setting}")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    base64(&units)
}

/// RFC 4648 base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Text for an XML element or attribute.
pub fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An answer file's lines, indented as they nest.
struct Doc {
    out: String,
    depth: usize,
}

impl Doc {
    fn open(&mut self, tag: &str) {
        self.line(&format!("<{tag}>"));
        self.depth += 1;
    }

    fn close(&mut self, name: &str) {
        self.depth -= 1;
        self.line(&format!("</{name}>"));
    }

    fn line(&mut self, text: &str) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// `<name>text</name>`, the text escaped.
    fn leaf(&mut self, name: &str, text: &str) {
        self.line(&format!("<{name}>{}</{name}>", xml_text(text)));
    }

    fn component(&mut self, name: &str, arch: &str, body: impl FnOnce(&mut Doc)) {
        self.open(&format!(
            "component name=\"{name}\" processorArchitecture=\"{arch}\" \
             publicKeyToken=\"31bf3856ad364e35\" language=\"neutral\" versionScope=\"nonSxS\""
        ));
        body(self);
        self.close("component");
    }

    /// One `<Name wcm:action="add">` list entry.
    fn add(&mut self, name: &str, body: impl FnOnce(&mut Doc)) {
        self.open(&format!("{name} wcm:action=\"add\""));
        body(self);
        self.close(name);
    }
}

/// One partition Setup creates on disk 0.
struct Partition {
    kind: &'static str,
    /// MiB; None fills the disk.
    size: Option<u32>,
    /// Empty: not formatted (the MSR).
    format: &'static str,
    label: &'static str,
    letter: Option<&'static str>,
    active: bool,
}

const fn part(
    kind: &'static str,
    size: Option<u32>,
    format: &'static str,
    label: &'static str,
    letter: Option<&'static str>,
    active: bool,
) -> Partition {
    Partition {
        kind,
        size,
        format,
        label,
        letter,
        active,
    }
}

/// The partitions of disk 0 by firmware, Windows last: MBR with an active System
/// Reserved; GPT with an EFI system partition and the MSR.
fn partitions(firmware: Firmware) -> &'static [Partition] {
    const BIOS: &[Partition] = &[
        part("Primary", Some(500), "NTFS", "System Reserved", None, true),
        part("Primary", None, "NTFS", "Windows", Some("C"), false),
    ];
    const UEFI: &[Partition] = &[
        part("EFI", Some(100), "FAT32", "System", None, false),
        part("MSR", Some(16), "", "", None, false),
        part("Primary", None, "NTFS", "Windows", Some("C"), false),
    ];
    match firmware {
        Firmware::Bios => BIOS,
        Firmware::Uefi => UEFI,
    }
}

/// The answer file of `req`.
pub fn autounattend(req: &Request) -> String {
    let arch = req.arch.name();
    let mut d = Doc {
        out: String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"),
        depth: 0,
    };
    d.open(
        "unattend xmlns=\"urn:schemas-microsoft-com:unattend\" \
         xmlns:wcm=\"http://schemas.microsoft.com/WMIConfig/2002/State\"",
    );
    let locales = |d: &mut Doc, setup: bool| {
        if setup {
            d.open("SetupUILanguage");
            d.leaf("UILanguage", &req.locale);
            d.close("SetupUILanguage");
        }
        for name in ["InputLocale", "SystemLocale", "UILanguage", "UserLocale"] {
            d.leaf(name, &req.locale);
        }
    };

    d.open("settings pass=\"windowsPE\"");
    d.component("Microsoft-Windows-International-Core-WinPE", arch, |d| {
        locales(d, true)
    });
    d.component("Microsoft-Windows-Setup", arch, |d| {
        let parts = partitions(req.firmware);
        d.open("DiskConfiguration");
        d.add("Disk", |d| {
            d.leaf("DiskID", "0");
            d.leaf("WillWipeDisk", "true");
            d.open("CreatePartitions");
            for (i, p) in parts.iter().enumerate() {
                d.add("CreatePartition", |d| {
                    d.leaf("Order", &(i + 1).to_string());
                    d.leaf("Type", p.kind);
                    match p.size {
                        Some(mib) => d.leaf("Size", &mib.to_string()),
                        None => d.leaf("Extend", "true"),
                    }
                });
            }
            d.close("CreatePartitions");
            d.open("ModifyPartitions");
            let mut order = 0;
            for (i, p) in parts.iter().enumerate() {
                if p.format.is_empty() {
                    continue; // the MSR is not formatted
                }
                order += 1;
                d.add("ModifyPartition", |d| {
                    d.leaf("Order", &order.to_string());
                    d.leaf("PartitionID", &(i + 1).to_string());
                    d.leaf("Format", p.format);
                    d.leaf("Label", p.label);
                    if let Some(l) = p.letter {
                        d.leaf("Letter", l);
                    }
                    if p.active {
                        d.leaf("Active", "true");
                    }
                });
            }
            d.close("ModifyPartitions");
        });
        d.leaf("WillShowUI", "OnError");
        d.close("DiskConfiguration");
        d.open("ImageInstall");
        d.open("OSImage");
        d.open("InstallFrom");
        d.add("MetaData", |d| match &req.edition {
            Edition::Name(name) => {
                d.leaf("Key", "/IMAGE/NAME");
                d.leaf("Value", name);
            }
            Edition::Index(n) => {
                d.leaf("Key", "/IMAGE/INDEX");
                d.leaf("Value", &n.to_string());
            }
        });
        d.close("InstallFrom");
        d.open("InstallTo");
        d.leaf("DiskID", "0");
        d.leaf("PartitionID", &parts.len().to_string());
        d.close("InstallTo");
        d.leaf("WillShowUI", "OnError");
        d.close("OSImage");
        d.close("ImageInstall");
        d.open("UserData");
        d.leaf("AcceptEula", "true");
        if let Some(key) = &req.product_key {
            d.open("ProductKey");
            d.leaf("Key", &key.0);
            d.leaf("WillShowUI", "OnError");
            d.close("ProductKey");
        }
        d.close("UserData");
    });
    d.close("settings");

    d.open("settings pass=\"specialize\"");
    d.component("Microsoft-Windows-Shell-Setup", arch, |d| {
        d.leaf("ComputerName", req.hostname.as_deref().unwrap_or("*"));
        if let Some(tz) = &req.timezone {
            d.leaf("TimeZone", tz);
        }
    });
    d.close("settings");

    d.open("settings pass=\"oobeSystem\"");
    d.component("Microsoft-Windows-International-Core", arch, |d| {
        locales(d, false)
    });
    d.component("Microsoft-Windows-Shell-Setup", arch, |d| {
        let password = req
            .admin_password
            .as_ref()
            .map(|p| p.0.as_str())
            .unwrap_or("");
        d.open("UserAccounts");
        d.open("AdministratorPassword");
        d.leaf("Value", &encode_password(password, "AdministratorPassword"));
        d.leaf("PlainText", "false");
        d.close("AdministratorPassword");
        d.close("UserAccounts");
        d.open("AutoLogon");
        d.open("Password");
        d.leaf("Value", &encode_password(password, "Password"));
        d.leaf("PlainText", "false");
        d.close("Password");
        d.leaf("Enabled", "true");
        d.leaf("LogonCount", "1");
        d.leaf("Username", "Administrator");
        d.close("AutoLogon");
        d.open("FirstLogonCommands");
        let commands = [
            (
                "powercfg.exe /hibernate off",
                "wingold: no hibernation file",
            ),
            (
                "shutdown.exe /s /t 10 /c \"wingold: Windows is installed\"",
                "wingold: power off when Setup is done",
            ),
        ];
        for (i, (line, what)) in commands.iter().enumerate() {
            d.add("SynchronousCommand", |d| {
                d.leaf("Order", &(i + 1).to_string());
                d.leaf("CommandLine", line);
                d.leaf("Description", what);
            });
        }
        d.close("FirstLogonCommands");
        d.open("OOBE");
        for (name, value) in [
            ("HideEULAPage", "true"),
            ("HideOEMRegistrationScreen", "true"),
            ("HideOnlineAccountScreens", "true"),
            ("HideWirelessSetupInOOBE", "true"),
            ("NetworkLocation", "Work"),
            ("ProtectYourPC", "3"),
        ] {
            d.leaf(name, value);
        }
        d.close("OOBE");
        if let Some(tz) = &req.timezone {
            d.leaf("TimeZone", tz);
        }
    });
    d.close("settings");
    d.close("unattend");
    d.out
}
