//! The built-in profiles: the mission's four concerns as real `.reg` files under
//! `regfiles/`, one per concern and Windows family, embedded in the binary. The CLI
//! lists them from this table, so `--help`, `--list-profiles` and the files can't
//! drift apart.

use super::{parse, Error, RegEdit};

/// Windows families whose settings differ (NT 5.x against NT 6 and later: the
/// values each profile's .reg files set, with the sources named in them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// NT 5.x: XP, Server 2003 / 2003 R2.
    Nt5,
    /// NT 6.0 and later: Vista / Server 2008 up to Windows 11 / Server 2025.
    Nt6,
}

impl Family {
    pub fn of(major_version: u32) -> Family {
        if major_version < 6 {
            Family::Nt5
        } else {
            Family::Nt6
        }
    }
}

/// One built-in profile.
pub struct Profile {
    pub name: &'static str,
    pub description: &'static str,
    nt5: (&'static str, &'static str),
    nt6: (&'static str, &'static str),
    /// Settings with no registry form, to run once at first boot.
    pub first_boot: (&'static [&'static str], &'static [&'static str]),
}

macro_rules! regfile {
    ($name:literal) => {
        (
            concat!("regfiles/", $name),
            include_str!(concat!("../../regfiles/", $name)),
        )
    };
}

pub const PROFILES: &[Profile] = &[
    Profile {
        name: "crash-dump",
        description: "small memory dump on a crash instead of a full one; reboot, overwrite, log",
        nt5: regfile!("crash-dump.nt5.reg"),
        nt6: regfile!("crash-dump.nt6.reg"),
        first_boot: (&[], &[]),
    },
    Profile {
        name: "auto-update",
        description: "automatic updates off (policy key; on NT 5.x the Control Panel key too)",
        nt5: regfile!("auto-update.nt5.reg"),
        nt6: regfile!("auto-update.nt6.reg"),
        first_boot: (&[], &[]),
    },
    Profile {
        name: "tcpip",
        description:
            "TCP/IP tuned for virtio-net (linux-kvm.org values on NT 5.x; EnableWsd on 6.x+)",
        nt5: regfile!("tcpip.nt5.reg"),
        nt6: regfile!("tcpip.nt6.reg"),
        first_boot: (
            &[],
            &[
                "netsh int tcp set heuristics wsh=disabled forcews=enabled",
                "netsh int tcp set global autotuninglevel=disabled",
            ],
        ),
    },
    Profile {
        name: "acpi-shutdown",
        description:
            "ACPI power button shuts down with nobody logged on; no Shutdown Event Tracker",
        nt5: regfile!("acpi-shutdown.nt5.reg"),
        nt6: regfile!("acpi-shutdown.nt6.reg"),
        first_boot: (&[], &[]),
    },
];

/// `all` stands for every profile.
pub const ALL: &str = "all";

impl Profile {
    /// The `.reg` file (name, text) for a family.
    pub fn regfile(&self, family: Family) -> (&'static str, &'static str) {
        match family {
            Family::Nt5 => self.nt5,
            Family::Nt6 => self.nt6,
        }
    }

    /// The edits for a family.
    pub fn edits(&self, family: Family) -> Result<Vec<RegEdit>, Error> {
        let (name, text) = self.regfile(family);
        Ok(parse(text.as_bytes(), name)?.1)
    }

    pub fn first_boot(&self, family: Family) -> &'static [&'static str] {
        match family {
            Family::Nt5 => self.first_boot.0,
            Family::Nt6 => self.first_boot.1,
        }
    }
}

/// Looks a profile up by name (`all` is expanded by the caller).
pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_regfile_parses_and_sets_values() {
        for p in PROFILES {
            for family in [Family::Nt5, Family::Nt6] {
                let edits = p.edits(family).unwrap();
                assert!(
                    edits
                        .iter()
                        .any(|e| matches!(e.op, super::super::Op::SetValue { .. })),
                    "{} {family:?} sets nothing",
                    p.name
                );
            }
        }
    }
}
