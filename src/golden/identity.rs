//! Each clone its own Windows machine. From a golden's SYSTEM and SOFTWARE
//! hives, what a clone must change to be one, as plain data the inject plan
//! carries out in the clone's overlay only:
//!
//! - an unsealed golden (Windows not generalized) gets registry edits: the
//!   computer name and TCP/IP host name in every control set `Select` names, a
//!   new `MachineGuid`, the WSUS client id deleted;
//! - a sealed golden (`sysprep /generalize /oobe`) gets the answer file Windows
//!   reads at its next boot, `Windows\Panther\unattend.xml`: the name and time
//!   zone in the specialize pass, the administrator password (encoded as
//!   Windows encodes it) and the OOBE pages skipped in oobeSystem.

#![deny(unsafe_code)]

mod answer;

pub use answer::{encode_admin_password, set_ini};

use super::Refusal;
use crate::error::Setting;
use crate::guest::Windows;
use crate::hive::{types, View};
use crate::reg::{Op, RegEdit};
use answer::unattend;
use serde::Serialize;
use std::sync::Arc;

/// The longest computer name Windows takes (its NetBIOS name).
pub const MAX_NAME: usize = 15;
/// Characters Windows refuses in a computer name (besides control characters).
const FORBIDDEN: &str = " \"/\\[]:|<>+=;,?*.";
/// Where Windows reads an answer file left for its next boot (the specialize and
/// oobeSystem passes of a generalized image look there first).
pub const ANSWER_FILE: &str = "Panther\\unattend.xml";
/// NT 5's mini-setup answer file, on the system volume.
pub const SYSPREP_INF: &str = "sysprep\\sysprep.inf";
/// What stays shared by clones of an unsealed golden, said with every such clone.
pub const SHARED_NOTE: &str = "the machine SID and the KMS client machine id stay those of \
     the golden: domain joins and KMS activation of several clones can clash; a golden \
     sealed with `sysprep /generalize /oobe` is Microsoft's supported route to distinct \
     machines";

/// What the user asks a clone to be.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The host name as given (the computer name is its upper case).
    pub hostname: String,
    /// A Windows time zone id (`W. Europe Standard Time`), sealed goldens only.
    pub timezone: Option<String>,
    /// The administrator password, read from a file; sealed goldens only. Never
    /// printed: `Debug` of a request shows its length only.
    pub admin_password: Option<Secret>,
    /// An offline domain-join blob (`djoin /provision ... /savefile`), read from
    /// a file; sealed NT 6+ goldens only.
    pub domain_join: Option<Secret>,
}

/// A secret read from a file: the one type every answer file takes.
pub use crate::unattend::Secret;

/// Reads a secret from `path` (`-`: standard input), up to its cap: UTF-8, one
/// line (a final newline dropped), not empty. The message of a refusal names the
/// file, never its content.
pub fn read_secret(path: &std::path::Path) -> anyhow::Result<Secret> {
    use std::io::Read;
    let bytes = if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .take(crate::input::SECRET.bytes + 1)
            .read_to_end(&mut b)?;
        if b.len() as u64 > crate::input::SECRET.bytes {
            return Err(Refusal::Secret {
                file: path.to_owned(),
                why: "it is larger than a password file may be (64 KiB)",
            }
            .into());
        }
        b
    } else {
        crate::input::read(path, crate::input::SECRET)?
    };
    let bad = |why| Refusal::Secret {
        file: path.to_owned(),
        why,
    };
    let text = String::from_utf8(bytes).map_err(|_| bad("it is not UTF-8 text"))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(bad("it is empty").into());
    }
    if text.contains(['\n', '\r', '\0']) {
        return Err(bad("it holds more than one line").into());
    }
    Ok(Secret(text.to_owned()))
}

/// Reads an offline domain-join blob from `path`: what `djoin /provision ...
/// /savefile` writes (UTF-16LE with its byte-order mark, or plain text), one
/// base64 string; kept as a secret (it holds the machine account's password).
pub fn read_domain_join(path: &std::path::Path) -> anyhow::Result<Secret> {
    let bytes = crate::input::read(path, crate::input::SECRET)?;
    let bad = |why| Refusal::DomainJoin {
        file: path.to_owned(),
        why,
    };
    let text = match bytes.strip_prefix(&[0xff, 0xfe]) {
        Some(utf16) => {
            let units: Vec<u16> = utf16
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| bad("it is not UTF-16 text"))?
        }
        None => String::from_utf8(bytes).map_err(|_| bad("it is not text"))?,
    };
    let blob: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\0')
        .collect();
    if blob.is_empty() {
        return Err(bad("it is empty").into());
    }
    if !blob
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    {
        return Err(bad("it is not one base64 string, as djoin /savefile writes").into());
    }
    Ok(Secret(blob))
}

/// Whether a golden was generalized, and so how a clone gets its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seal {
    /// Windows was not generalized: the identity is written into the registry.
    Unsealed,
    /// `sysprep /generalize /oobe` (NT 6 and later): an unattend.xml answers.
    Sealed,
    /// Sysprep mini-setup of NT 5 (`C:\sysprep`, `MiniSetupInProgress`).
    SealedNt5,
}

/// What a clone gets, for its report (`--json` `identity`) and its record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub hostname: String,
    pub computer_name: String,
    pub seal: Seal,
    /// The new `MachineGuid` (unsealed goldens; a sealed one makes its own).
    pub machine_guid: Option<String>,
    /// The answer file written (sealed goldens).
    pub answer_file: Option<String>,
    pub timezone: Option<String>,
    /// Whether an administrator password went into the answer file (never the
    /// password itself).
    pub admin_password: bool,
    /// Whether an offline domain join went into the answer file.
    pub domain_join: bool,
    /// The control sets the names were written into.
    pub control_sets: Vec<String>,
    /// What stays shared with the golden and its other clones.
    pub shared: Option<String>,
}

/// What the inject plan carries out for a clone's identity.
pub struct Plan {
    pub edits: Vec<RegEdit>,
    /// (path on the volume, bytes): the answer file of a sealed golden.
    pub answer_file: Option<(String, Vec<u8>)>,
    pub report: Report,
}

/// Checks a host name as Windows checks a computer name; the reason when refused.
pub fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.chars().count() > MAX_NAME {
        return Err("it is longer than 15 characters (the NetBIOS limit)");
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err("it is only digits");
    }
    if name.chars().any(|c| FORBIDDEN.contains(c)) {
        return Err("it holds a space, a dot or one of \"/\\[]:|<>+=;,?*");
    }
    if name.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(
            "it holds a character outside printable ASCII, on which NetBIOS and DNS disagree",
        );
    }
    Ok(())
}

/// A Windows image's identity as `inspect` shows it: whether it is sealed and
/// what a clone of it gets, or what a clone already holds.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    pub seal: Seal,
    /// What a clone gets: `registry` (names and ids written) or `answer_file`.
    pub clones_get: &'static str,
    /// The computer name of the current control set.
    pub computer_name: Option<String>,
    pub hostname: Option<String>,
    pub machine_guid: Option<String>,
    /// Whether a WSUS client id is set (shared by every clone of a golden).
    pub wsus_client_id: bool,
    /// The answer file waiting for the next boot, when there is one.
    pub answer_file: Option<String>,
}

/// Reads the identity of Windows `w` from its hives; `answer_file`: whether
/// `Windows\Panther\unattend.xml` exists.
pub fn state(
    w: &Windows,
    system: &View,
    software: &View,
    sysprep_folder: bool,
    answer_file: bool,
) -> crate::hive::Result<State> {
    let seal = seal_of(system, sysprep_folder)?;
    let cs = &w.control_sets.current;
    let text = |h: &View, key: &str, name: &str| -> crate::hive::Result<Option<String>> {
        Ok(h.value(key, name)?.and_then(|v| v.as_string()))
    };
    Ok(State {
        seal,
        clones_get: match seal {
            Seal::Unsealed => "registry",
            Seal::Sealed => "answer_file",
            Seal::SealedNt5 => "answer_file",
        },
        computer_name: text(
            system,
            &format!("{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName",
        )?,
        hostname: text(
            system,
            &format!("{cs}\\Services\\Tcpip\\Parameters"),
            "Hostname",
        )?,
        machine_guid: text(software, "Microsoft\\Cryptography", "MachineGuid")?,
        wsus_client_id: software
            .value(
                "Microsoft\\Windows\\CurrentVersion\\WindowsUpdate",
                "SusClientId",
            )?
            .is_some(),
        answer_file: answer_file
            .then(|| format!("{}\\{ANSWER_FILE}", w.system_root.trim_start_matches('\\'))),
    })
}

/// Reads how `system` (the SYSTEM hive) says Windows was left: generalized or
/// not. `sysprep_folder`: whether `C:\sysprep` exists (NT 5's mini-setup).
pub fn seal_of(system: &View, sysprep_folder: bool) -> crate::hive::Result<Seal> {
    let text = |v: Option<crate::hive::RegValue>| v.and_then(|v| v.as_string());
    let cmdline = text(system.value("Setup", "CmdLine")?).unwrap_or_default();
    let state = system
        .value("Setup\\Status\\SysprepStatus", "GeneralizationState")?
        .and_then(|v| v.as_dword());
    if cmdline.trim().eq_ignore_ascii_case("oobe\\windeploy.exe") && state == Some(7) {
        return Ok(Seal::Sealed);
    }
    let mini = system
        .value("Setup", "MiniSetupInProgress")?
        .and_then(|v| v.as_dword());
    if mini == Some(1) && sysprep_folder {
        return Ok(Seal::SealedNt5);
    }
    Ok(Seal::Unsealed)
}

/// A new random GUID (version 4), lower case as Windows writes `MachineGuid`.
pub fn random_guid() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn sz(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// What clone `req` of the Windows `w` (its SYSTEM and SOFTWARE hives open) must
/// change, and how. Refused: a request an unsealed golden cannot take (a password
/// or time zone needs an answer file), a time zone the golden does not know, a
/// sealed NT 5 golden.
pub fn plan(
    w: &Windows,
    system: &View,
    software: &View,
    sysprep_inf: Option<&[u8]>,
    req: &Request,
) -> anyhow::Result<Plan> {
    let sysprep_folder = sysprep_inf.is_some();
    check_hostname(&req.hostname).map_err(|why| Refusal::Hostname {
        name: req.hostname.clone(),
        why,
    })?;
    let seal = seal_of(system, sysprep_folder)?;
    let computer_name = req.hostname.to_ascii_uppercase();
    if let Some(tz) = &req.timezone {
        let key = format!("Microsoft\\Windows NT\\CurrentVersion\\Time Zones\\{tz}");
        if tz.contains('\\') || !software.has_key(&key)? {
            return Err(Refusal::TimeZone { zone: tz.clone() }.into());
        }
    }
    let mut report = Report {
        hostname: req.hostname.clone(),
        computer_name: computer_name.clone(),
        seal,
        machine_guid: None,
        answer_file: None,
        timezone: req.timezone.clone(),
        admin_password: req.admin_password.is_some(),
        domain_join: req.domain_join.is_some(),
        control_sets: Vec::new(),
        shared: None,
    };
    match seal {
        Seal::SealedNt5 => {
            // NT 5's sysprep.inf takes a password only as LM/NT hashes and a time
            // zone only as an index: those stay as the golden's sysprep.inf has them.
            let not_here = [
                req.admin_password.as_ref().map(|_| Setting::AdminPassword),
                req.timezone.as_ref().map(|_| Setting::Timezone),
                req.domain_join.as_ref().map(|_| Setting::DomainJoin),
            ];
            if let Some(what) = not_here.into_iter().flatten().next() {
                return Err(Refusal::Nt5Answer { what }.into());
            }
            let old = String::from_utf8_lossy(sysprep_inf.unwrap_or_default()).into_owned();
            let text = set_ini(&old, "UserData", "ComputerName", &computer_name);
            let path = SYSPREP_INF.to_owned();
            report.answer_file = Some(path.clone());
            Ok(Plan {
                edits: Vec::new(),
                answer_file: Some((path, text.into_bytes())),
                report,
            })
        }
        Seal::Unsealed => {
            let needs_answer = [
                req.admin_password.as_ref().map(|_| Setting::AdminPassword),
                req.timezone.as_ref().map(|_| Setting::Timezone),
                req.domain_join.as_ref().map(|_| Setting::DomainJoin),
            ];
            if let Some(what) = needs_answer.into_iter().flatten().next() {
                return Err(Refusal::NeedsSealedGolden { what }.into());
            }
            let guid = random_guid().map_err(|e| anyhow::anyhow!("/dev/urandom: {e}"))?;
            // Every control set Select names and the hive holds.
            let cs = &w.control_sets;
            let mut sets: Vec<String> = Vec::new();
            for s in [
                Some(&cs.current),
                cs.default.as_ref(),
                cs.last_known_good.as_ref(),
                cs.failed.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                if !sets.contains(s) && system.has_key(s)? {
                    sets.push(s.clone());
                }
            }
            let file: Arc<str> = Arc::from("(clone identity)");
            let set = |key: String, name: &str, text: &str| RegEdit {
                file: file.clone(),
                line: 0,
                op: Op::SetValue {
                    key,
                    name: name.to_owned(),
                    kind: types::REG_SZ,
                    data: sz(text),
                },
            };
            let mut edits = Vec::new();
            for s in &sets {
                let sys = format!("HKEY_LOCAL_MACHINE\\SYSTEM\\{s}");
                edits.push(set(
                    format!("{sys}\\Control\\ComputerName\\ComputerName"),
                    "ComputerName",
                    &computer_name,
                ));
                let tcpip = format!("{sys}\\Services\\Tcpip\\Parameters");
                edits.push(set(tcpip.clone(), "Hostname", &req.hostname));
                edits.push(set(tcpip, "NV Hostname", &req.hostname));
            }
            edits.push(set(
                "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Cryptography".into(),
                "MachineGuid",
                &guid,
            ));
            // WSUS tells machines apart by these (Microsoft's reset deletes them
            // and AccountDomainSid, PingID with them); Windows makes new ones.
            let wu =
                "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate";
            if software.has_key(&wu["HKEY_LOCAL_MACHINE\\SOFTWARE\\".len()..])? {
                for name in [
                    "SusClientId",
                    "SusClientIDValidation",
                    "AccountDomainSid",
                    "PingID",
                ] {
                    edits.push(RegEdit {
                        file: file.clone(),
                        line: 0,
                        op: Op::DeleteValue {
                            key: wu.into(),
                            name: name.into(),
                        },
                    });
                }
            }
            report.machine_guid = Some(guid);
            report.control_sets = sets;
            report.shared = Some(SHARED_NOTE.into());
            Ok(Plan {
                edits,
                answer_file: None,
                report,
            })
        }
        Seal::Sealed => {
            let path = format!("{}\\{ANSWER_FILE}", w.system_root.trim_start_matches('\\'));
            let xml = unattend(w.arch, &computer_name, req);
            report.answer_file = Some(path.clone());
            Ok(Plan {
                edits: Vec::new(),
                answer_file: Some((path, xml.into_bytes())),
                report,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unattend::base64;

    #[test]
    fn names_windows_refuses() {
        for bad in [
            "",
            "1234",
            "a b",
            "web.01",
            "x*",
            "ABCDEFGHIJKLMNOP",
            "é1",
            "tab\t",
        ] {
            assert!(check_hostname(bad).is_err(), "{bad:?}");
        }
        for good in ["web-01", "SQL_2", "a", "ABCDEFGHIJKLMNO"] {
            assert!(check_hostname(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn password_encoding_as_windows_writes_it() {
        // "Passw0rd!" + "AdministratorPassword" in UTF-16LE, base64: decoded back
        // by hand here, so a wrong alphabet or padding would show.
        let enc = encode_admin_password("Passw0rd!");
        let dec = {
            let a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut bits = Vec::new();
            for c in enc.trim_end_matches('=').chars() {
                let v = a.find(c).unwrap();
                bits.extend((0..6).rev().map(|i| (v >> i) & 1));
            }
            bits.chunks_exact(8)
                .map(|b| b.iter().fold(0u8, |a, &x| (a << 1) | x as u8))
                .collect::<Vec<u8>>()
        };
        let units: Vec<u16> = dec
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&units).unwrap(),
            "Passw0rd!AdministratorPassword"
        );
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
