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
    /// Every `PCI\VEN_…` id named anywhere, upper-cased, without the `PCI\` prefix.
    pub pci_ids: Vec<String>,
    /// `HKR, "Parameters…", "name", REG_DWORD, value` lines of `[pnpsafe_pci_addreg]`:
    /// (subkey under the service key, value name, data).
    pub parameters: Vec<(String, String, u32)>,
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
    for (name, lines) in &sections {
        if name == "strings" {
            continue;
        }
        for line in lines {
            let upper = line.to_ascii_uppercase();
            let mut rest = upper.as_str();
            while let Some(at) = rest.find("PCI\\VEN_") {
                let id: String = rest[at + 4..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '&' || *c == '_')
                    .collect();
                rest = &rest[at + 4 + id.len()..];
                if !inf.pci_ids.contains(&id) {
                    inf.pci_ids.push(id);
                }
            }
        }
    }
    for line in sections.get("pnpsafe_pci_addreg").into_iter().flatten() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 5 || !fields[0].trim().eq_ignore_ascii_case("HKR") {
            continue;
        }
        let subkey = resolve(fields[1]);
        let kind = parse_number(&resolve(fields[3]));
        let data = parse_number(&resolve(fields[4]));
        if let (Some(0x0001_0001), Some(data)) = (kind, data) {
            inf.parameters.push((subkey, resolve(fields[2]), data));
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
        DriverVer = 10/14/2024,100.100.104.26600\r\n\r\n[Standard.NTamd64]\r\n\
        %Desc% = inst, PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_1001\r\n\
        %Desc% = inst, PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01 ; modern\r\n\
        [pnpsafe_pci_addreg]\r\nHKR, \"Parameters\\PnpInterface\", \"5\", %REG_DWORD%, 0x00000001\r\n\
        HKR, \"Parameters\", \"BusType\", %REG_DWORD%, 0x00000001\r\n\
        [Strings]\r\nDesc = \"Red Hat VirtIO SCSI controller; with a semicolon\"\r\nREG_DWORD = 0x00010001\r\n";

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
        assert!(!inf.lists_device("VEN_1AF4&DEV_1004"));
        assert!(!inf.lists_device("VEN_1AF4&DEV_10"));
        assert_eq!(
            inf.parameters,
            vec![
                ("Parameters\\PnpInterface".into(), "5".into(), 1),
                ("Parameters".into(), "BusType".into(), 1)
            ]
        );
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
