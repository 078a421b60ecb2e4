//! The hive files an edit may reach, by the names Windows gives them in
//! `%SystemRoot%\System32\config`.

use serde::Serialize;

/// A hive file an edit may touch. Ordered as their names sort, the order they are
/// applied, written and reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HiveName {
    /// `HKEY_USERS\.DEFAULT`.
    Default,
    Sam,
    Security,
    Software,
    System,
}

impl HiveName {
    pub const ALL: [HiveName; 5] = [
        HiveName::Default,
        HiveName::Sam,
        HiveName::Security,
        HiveName::Software,
        HiveName::System,
    ];

    /// The file's name, e.g. `SYSTEM`.
    pub fn name(self) -> &'static str {
        match self {
            HiveName::Default => "DEFAULT",
            HiveName::Sam => "SAM",
            HiveName::Security => "SECURITY",
            HiveName::Software => "SOFTWARE",
            HiveName::System => "SYSTEM",
        }
    }

    /// The hive named `name` below `HKEY_LOCAL_MACHINE` (any case), if wingold edits it.
    pub fn under_machine(name: &str) -> Option<HiveName> {
        [
            HiveName::Sam,
            HiveName::Security,
            HiveName::Software,
            HiveName::System,
        ]
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
    }
}

impl<'de> serde::Deserialize<'de> for HiveName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        HiveName::ALL
            .into_iter()
            .find(|h| h.name() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("no hive {name:?}")))
    }
}

impl std::fmt::Display for HiveName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AsRef<str> for HiveName {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl Serialize for HiveName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
