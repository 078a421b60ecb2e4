//! What the planners (drivers, first boot, clone identity) need of the guest's
//! files, without opening a volume themselves: the caller hands them closures
//! over its mount.

use serde::Serialize;

/// Where staged drivers go, under the system root.
pub const STAGING: &str = "Drivers\\VirtIO";

/// What happens to one guest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAction {
    /// Not there yet.
    New,
    /// There with other bytes (an older or other virtio-win): replaced.
    Replaced,
    /// There with the same bytes: left alone.
    Unchanged,
}

/// A file on the guest's volume, as the planner needs it.
pub type ReadGuest<'a> = dyn Fn(&str) -> anyhow::Result<Option<Vec<u8>>> + 'a;

/// The SHA-256 of a file on the guest's volume, None when it is not there.
pub type HashGuest<'a> = dyn Fn(&str) -> anyhow::Result<Option<String>> + 'a;

/// A file name as the guest's volume compares names: upper-cased per UTF-16 unit
/// through its own `$UpCase` table. Two names are one file exactly when these
/// are equal (`É.dll` and `é.dll` are; `Straße` and `STRASSE` are not).
pub type NameFold<'a> = dyn Fn(&str) -> Vec<u16> + 'a;
