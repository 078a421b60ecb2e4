//! What wingold reads from a driver's INF file: its version line, its class, the
//! PCI hardware ids its models list, and the `Parameters` DWORDs its service adds.
//! INF files are ASCII/UTF-8 or UTF-16LE with a byte-order mark; `;` starts a
//! comment outside quotes; `%name%` tokens resolve through `[Strings]`.

use std::collections::BTreeMap;

/// The parts of an INF wingold uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inf {
    /// `[Version] DriverVer`: `date,version`, e.g. `10/14/2024,100.100.104.26600`.
    pub driver_ver: Option<String>,
    /// `[Version] ClassGUID`, upper-cased, with braces.
    pub class_guid: Option<String>,
    /// Every `PCI\VEN_…` hardware or compatible id of the models sections that
    /// `[Manufacturer]` names (`%strkey%` resolved), upper-cased, without `PCI\`.
    pub pci_ids: Vec<String>,
    /// `HKR, "Parameters…", "name", REG_DWORD, value` lines of `[pnpsafe_pci_addreg]`:
    /// (subkey under the service key, value name, data).
    pub parameters: Vec<(String, String, u32)>,
    /// The first `[pnpsafe_pci_addreg]` entry Windows would not write as wingold
    /// would (a subkey with `..`, flags other than a DWORD's), said plainly.
    pub problem: Option<String>,
}

/// Text of an INF file: UTF-16LE when it starts with a byte-order mark.
pub fn decode(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    let bytes = bytes.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

/// A line without its comment (a `;` outside double quotes), trimmed.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return line[..i].trim(),
            _ => {}
        }
    }
    line.trim()
}

/// A comma-separated field without its quotes.
fn unquote(field: &str) -> String {
    field.trim().trim_matches('"').to_owned()
}

/// Parses INF text. Never fails: what is missing stays empty, for the caller to
/// refuse with a message that says what the driver needed.
pub fn parse(text: &str) -> Inf {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = strip_comment(raw);
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_ascii_lowercase();
            sections.entry(current.clone()).or_default();
            continue;
        }
        sections
            .entry(current.clone())
            .or_default()
            .push(line.to_owned());
    }
    let strings: BTreeMap<String, String> = sections
        .get("strings")
        .into_iter()
        .flatten()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), unquote(v)))
        .collect();
    let resolve = |field: &str| -> String {
        let f = field.trim();
        match f.strip_prefix('%').and_then(|f| f.strip_suffix('%')) {
            Some(name) => strings
                .get(&name.to_ascii_lowercase())
                .cloned()
                .unwrap_or_else(|| unquote(f)),
            None => unquote(f),
        }
    };
    let version_value = |key: &str| {
        sections.get("version").and_then(|lines| {
            lines.iter().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                k.trim().eq_ignore_ascii_case(key).then(|| resolve(v))
            })
        })
    };
    let mut inf = Inf {
        driver_ver: version_value("DriverVer").map(|v| v.replace(' ', "")),
        class_guid: version_value("ClassGUID").map(|v| v.to_ascii_uppercase()),
        ..Inf::default()
    };
    // Ids count only where Windows matches them: the models sections that
    // [Manufacturer] names, with each of their target decorations (`VioStor,NTamd64`
    // names [VioStor] and [VioStor.NTamd64]); never [ControlFlags] or comments.
    let mut models: Vec<String> = Vec::new();
    for line in sections.get("manufacturer").into_iter().flatten() {
        let value = line.split_once('=').map_or(line.as_str(), |(_, v)| v);
        let mut fields = value.split(',').map(|f| resolve(f).to_ascii_lowercase());
        let Some(base) = fields.next().filter(|b| !b.is_empty()) else {
            continue;
        };
        for decoration in fields.filter(|d| !d.is_empty()) {
            models.push(format!("{base}.{decoration}"));
        }
        models.push(base);
    }
    for lines in models.iter().filter_map(|m| sections.get(m)) {
        for line in lines {
            let Some((_, value)) = line.split_once('=') else {
                continue;
            };
            // install-section, hardware id, compatible ids…
            for field in value.split(',').skip(1) {
                let id = resolve(field).to_ascii_uppercase();
                if let Some(id) = id.strip_prefix("PCI\\") {
                    if id.starts_with("VEN_") && !inf.pci_ids.iter().any(|i| i == id) {
                        inf.pci_ids.push(id.to_owned());
                    }
                }
            }
        }
    }
    for (at, line) in sections
        .get("pnpsafe_pci_addreg")
        .into_iter()
        .flatten()
        .enumerate()
    {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 5 || !fields[0].trim().eq_ignore_ascii_case("HKR") {
            continue;
        }
        let subkey = resolve(fields[1]);
        let name = resolve(fields[2]);
        let flags = parse_number(&resolve(fields[3]));
        let data = parse_number(&resolve(fields[4]));
        let problem = match (flags, data) {
            _ if subkey
                .split('\\')
                .any(|p| p == ".." || p == "." || p.is_empty())
                || subkey.chars().count() > 255 =>
            {
                Some(format!("subkey {subkey:?} is no registry key name"))
            }
            _ if name.chars().count() > 16383 || name.contains('\0') => {
                Some(format!("value name {name:?} is no registry value name"))
            }
            // FLG_ADDREG_TYPE_DWORD, alone or with FLG_ADDREG_NOCLOBBER (the
            // service key is new, so both set the value).
            (Some(0x0001_0001 | 0x0001_0003), Some(data)) => {
                inf.parameters.push((subkey, name, data));
                None
            }
            (Some(f), _) => Some(format!(
                "AddReg flags {f:#010x} (wingold writes REG_DWORD parameters: 0x00010001)"
            )),
            (None, _) => Some(format!("AddReg flags {:?} are no number", fields[3].trim())),
        };
        if let (Some(problem), None) = (problem, &inf.problem) {
            inf.problem = Some(format!("[pnpsafe_pci_addreg] entry {}: {problem}", at + 1));
        }
    }
    inf
}

/// `0x1A`, `26`.
fn parse_number(text: &str) -> Option<u32> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

impl Inf {
    /// Whether the INF names a device `VEN_xxxx&DEV_yyyy` (any subsystem, any
    /// revision).
    pub fn lists_device(&self, ven_dev: &str) -> bool {
        let want = ven_dev.to_ascii_uppercase();
        self.pci_ids
            .iter()
            .any(|id| *id == want || id.starts_with(&format!("{want}&")))
    }

    /// The version part of DriverVer (`100.100.104.26600`).
    pub fn version(&self) -> Option<&str> {
        self.driver_ver
            .as_deref()
            .and_then(|v| v.split(',').nth(1))
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIOSTOR: &str = "; comment\r\n[Version]\r\nSignature=\"$WINDOWS NT$\"\r\n\
        Class=SCSIAdapter\r\nClassGUID={4d36e97b-e325-11ce-bfc1-08002be10318}\r\n\
        DriverVer = 10/14/2024,100.100.104.26600\r\n\r\n[ControlFlags]\r\n\
        ExcludeFromSelect = PCI\\VEN_1AF4&DEV_1004\r\n\
        [Manufacturer]\r\n%VENDOR% = VioStor,NTamd64\r\n[VioStor.NTamd64]\r\n\
        %Desc% = inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_1001\r\n\
        %Desc% = inst, PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01 ; modern\r\n\
        %Desc% = inst, %ALT_ID%\r\n\
        [Unnamed.NTamd64]\r\n%Desc% = inst, PCI\\VEN_1AF4&DEV_1003\r\n\
        [pnpsafe_pci_addreg]\r\nHKR, \"Parameters\\PnpInterface\", \"5\", %REG_DWORD%, 0x00000001\r\n\
        HKR, \"Parameters\", \"BusType\", %REG_DWORD%, 0x00000001\r\n\
        HKR, \"Parameters\", DmaRemappingCompatible,0x00010003,0\r\n\
        [Strings]\r\nVENDOR = \"Red Hat, Inc.\"\r\nALT_ID = \"PCI\\VEN_1AF4&DEV_1050\"\r\nDesc = \"Red Hat VirtIO SCSI controller; with a semicolon\"\r\nREG_DWORD = 0x00010001\r\n";

    #[test]
    fn reads_version_class_ids_and_parameters() {
        let inf = parse(VIOSTOR);
        assert_eq!(
            inf.driver_ver.as_deref(),
            Some("10/14/2024,100.100.104.26600")
        );
        assert_eq!(inf.version(), Some("100.100.104.26600"));
        assert_eq!(
            inf.class_guid.as_deref(),
            Some("{4D36E97B-E325-11CE-BFC1-08002BE10318}")
        );
        assert!(inf.lists_device("VEN_1AF4&DEV_1001"));
        assert!(inf.lists_device("ven_1af4&dev_1042"));
        // Through [Strings]; not in [ControlFlags] nor in a section no
        // manufacturer names.
        assert!(inf.lists_device("VEN_1AF4&DEV_1050"));
        assert!(!inf.lists_device("VEN_1AF4&DEV_1004"));
        assert!(!inf.lists_device("VEN_1AF4&DEV_1003"));
        assert!(!inf.lists_device("VEN_1AF4&DEV_10"));
        assert_eq!(
            inf.parameters,
            vec![
                ("Parameters\\PnpInterface".into(), "5".into(), 1),
                ("Parameters".into(), "BusType".into(), 1),
                ("Parameters".into(), "DmaRemappingCompatible".into(), 0)
            ]
        );
        assert_eq!(inf.problem, None);
    }

    /// The last Windows 2003 build (virtio-win-pkg-scripts
    /// data/old-drivers/Wnet/x86/viostor.inf, 52.64.104.4800): the legacy device
    /// only, under three subsystems, and no modern one.
    #[test]
    fn the_2003_viostor_lists_the_legacy_device_only() {
        let text = "[Version]\r\nSignature=\"$Windows NT$\"\r\nClass=SCSIAdapter\r\n\
            [ControlFlags]\r\n;ExcludeFromSelect = *\r\n\
            [Manufacturer]\r\n%RHEL%   = RHEL,NTx86\r\n[RHEL.NTx86]\r\n\
            %D% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00000000\r\n\
            %D% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00020000\r\n\
            %D% = rhelscsi_inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4\r\n";
        let inf = parse(text);
        assert!(inf.lists_device("VEN_1AF4&DEV_1001"));
        assert!(!inf.lists_device("VEN_1AF4&DEV_1042"));
        assert_eq!(inf.pci_ids.len(), 3);
    }

    #[test]
    fn says_which_parameter_entry_windows_would_not_write_as_wingold_would() {
        for (entry, said) in [
            (
                "HKR, \"Parameters\\..\\..\\x\", \"v\", 0x00010001, 1",
                "no registry key name",
            ),
            (
                "HKR, \"Parameters\", \"v\", 0x00010005, 1",
                "AddReg flags 0x00010005",
            ),
            (
                "HKR, \"Parameters\", \"v\", 0x00000000, 1",
                "AddReg flags 0x00000000",
            ),
            ("HKR, \"Parameters\", \"v\", dword, 1", "no number"),
        ] {
            let long = format!("HKR, \"{}\", \"v\", 0x00010001, 1", "k".repeat(256));
            for e in [entry, long.as_str()] {
                let inf = parse(&format!(
                    "[pnpsafe_pci_addreg]\r\nHKR, \"Parameters\", \"ok\", 0x00010001, 1\r\n{e}\r\n"
                ));
                let problem = inf.problem.expect(e);
                assert!(
                    problem.starts_with("[pnpsafe_pci_addreg] entry 2: "),
                    "{problem}"
                );
                if e == entry {
                    assert!(problem.contains(said), "{problem}");
                }
            }
        }
    }

    #[test]
    fn reads_utf16_with_bom() {
        let mut bytes = vec![0xff, 0xfe];
        for u in VIOSTOR.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(parse(&decode(&bytes)), parse(VIOSTOR));
    }
}
