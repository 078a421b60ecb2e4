//! Registry edits as data: `.reg` files parse to [`RegEdit`]s, registry paths map
//! to hive files, and [`apply`] runs the edits on the hives, recording every change.
//! A dry run is the same call whose results are not written back.
//!
//! This module sees hives as bytes (through `hive`); it knows nothing of NTFS or
//! images.

#![deny(unsafe_code)]

mod change;
mod edits;
mod hive_name;
mod parse;
pub mod profiles;

pub use change::{type_name, Action, Change, Source, ValueView};
pub use edits::Edits;
pub use hive_name::HiveName;
pub use parse::{parse, utf16z, Syntax, Version};

use crate::hive::{self, Hive, RegValue, View};
use serde::Serialize;
use std::collections::BTreeMap;

/// One edit, with the file and line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegEdit {
    /// The file (or built-in source) it came from, shared by all its edits.
    pub file: std::sync::Arc<str>,
    pub line: usize,
    pub op: Op,
}

/// What an edit does. Keys are full registry paths as written (`HKEY_LOCAL_MACHINE\…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateKey {
        key: String,
    },
    DeleteKey {
        key: String,
    },
    SetValue {
        key: String,
        name: String,
        kind: u32,
        data: Vec<u8>,
    },
    DeleteValue {
        key: String,
        name: String,
    },
}

impl Op {
    /// The key the edit works on, as written.
    pub fn key(&self) -> &str {
        match self {
            Op::CreateKey { key } | Op::DeleteKey { key } => key,
            Op::SetValue { key, .. } | Op::DeleteValue { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text is no `.reg` file regedit would take.
    #[error("{0}")]
    Syntax(Syntax),
    #[error("{file}:{line}: {key}: {reason}")]
    Root {
        file: String,
        line: usize,
        key: String,
        reason: Unmapped,
    },
    #[error("{file}:{line}")]
    Hive {
        file: String,
        line: usize,
        #[source]
        source: hive::Error,
    },
    #[error(transparent)]
    Open(#[from] hive::Error),
    /// A hive as written does not read back as the edits left it.
    #[error("verification failed: hive {hive} does not read back")]
    Unreadable {
        hive: HiveName,
        #[source]
        source: hive::Error,
    },
    #[error("verification failed: {0}")]
    Mismatch(Box<Mismatch>),
    /// The hive file could not be read; whoever read it says why and whose move it is.
    #[error("hive {hive}")]
    Load {
        hive: HiveName,
        kind: crate::error::Kind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Where the syntax goes wrong, when that is the error.
    pub fn syntax(&self) -> Option<&Syntax> {
        match self {
            Error::Syntax(s) => Some(s),
            _ => None,
        }
    }

    /// A hive that could not be read, for the loaders `apply` and `settings` take.
    pub fn load<E>(hive: HiveName, source: E) -> Error
    where
        E: crate::error::Classify + std::error::Error + Send + Sync + 'static,
    {
        Error::Load {
            hive,
            kind: source.kind(),
            source: Box::new(source),
        }
    }
}

crate::error::classify! {
    impl Classify for Error {
        fn kind(&self) -> crate::error::Kind {
            match self {
                Error::Syntax(_) | Error::Root { .. } => crate::error::Kind::BadInput,
                // What wingold wrote is wrong, whatever the hive layer thinks of it.
                Error::Unreadable { .. } | Error::Mismatch(_) => crate::error::Kind::Failure,
                Error::Hive { source, .. } | Error::Open(source) => source.kind(),
                Error::Load { kind, .. } => *kind,
            }
        }
    }
}

/// `HKLM\SYSTEM\Select`: which `ControlSet00N` is which. Found by `guest`;
/// kept here because mapping `CurrentControlSet` is this module's job.
#[derive(Debug, Clone, Serialize)]
pub struct ControlSets {
    pub current: String,
    pub default: Option<String>,
    pub last_known_good: Option<String>,
    pub failed: Option<String>,
}

impl ControlSets {
    /// The sets an edit of `CurrentControlSet` goes to: the current one, and the
    /// default one when it differs (`Select\Current` is the set Windows boots;
    /// libguestfs' `inspect-fs-windows.c` and virt-win-reg read it so).
    pub fn edited(&self) -> Vec<&str> {
        let mut sets = vec![self.current.as_str()];
        sets.extend(self.default.as_deref().filter(|d| *d != self.current));
        sets
    }
}

/// Where a registry key lives: a hive file and the path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub hive: HiveName,
    pub path: String,
}

/// Why a registry key is not one an offline edit can reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    #[error("HKEY_LOCAL_MACHINE itself is not a hive; name one below it")]
    MachineRoot,
    #[error(
        "HKEY_LOCAL_MACHINE\\{0} is not a hive file wingold edits \
         (SYSTEM, SOFTWARE, SAM, SECURITY)"
    )]
    NotAHiveFile(String),
    #[error("only HKEY_USERS\\.DEFAULT is supported (user profiles are not edited offline)")]
    UserProfile,
    #[error(
        "HKEY_CURRENT_USER has no meaning offline (there is no current user); \
         use HKEY_USERS\\.DEFAULT for the logon screen's settings"
    )]
    CurrentUser,
    #[error("HKEY_CLASSES_ROOT is a merged view; write to HKEY_LOCAL_MACHINE\\SOFTWARE\\Classes")]
    ClassesRoot,
    #[error(
        "unknown root {0:?}: expected HKEY_LOCAL_MACHINE\\SYSTEM, \\SOFTWARE, \\SAM, \
         \\SECURITY or HKEY_USERS\\.DEFAULT"
    )]
    UnknownRoot(String),
}

/// Maps a full registry key to the hive(s) holding it. `CurrentControlSet` becomes
/// the control set `Select\Current` names, and also `Select\Default` when that one
/// differs (as virt-win-reg's "CurrentControlSet etc." describes).
fn map_key(key: &str, sets: &ControlSets) -> Result<Vec<Target>, Unmapped> {
    let parts: Vec<&str> = key.split('\\').collect();
    let root = parts[0].to_ascii_uppercase();
    let rest = &parts[1..];
    let first = rest
        .first()
        .map(|s| s.to_ascii_uppercase())
        .unwrap_or_default();
    let join = |p: &[&str]| p.join("\\");
    match root.as_str() {
        "HKEY_LOCAL_MACHINE" | "HKLM" => {
            let hive = match HiveName::under_machine(&first) {
                Some(h) => h,
                None if first.is_empty() => return Err(Unmapped::MachineRoot),
                None => return Err(Unmapped::NotAHiveFile(rest[0].to_owned())),
            };
            let inner = &rest[1..];
            if hive == HiveName::System
                && inner
                    .first()
                    .is_some_and(|p| p.eq_ignore_ascii_case("CurrentControlSet"))
            {
                return Ok(sets
                    .edited()
                    .into_iter()
                    .map(|set| Target {
                        hive,
                        path: std::iter::once(set)
                            .chain(inner[1..].iter().copied())
                            .collect::<Vec<_>>()
                            .join("\\"),
                    })
                    .collect());
            }
            Ok(vec![Target {
                hive,
                path: join(inner),
            }])
        }
        "HKEY_USERS" | "HKU" if first == ".DEFAULT" => Ok(vec![Target {
            hive: HiveName::Default,
            path: join(&rest[1..]),
        }]),
        "HKEY_USERS" | "HKU" => Err(Unmapped::UserProfile),
        "HKEY_CURRENT_USER" | "HKCU" => Err(Unmapped::CurrentUser),
        "HKEY_CLASSES_ROOT" | "HKCR" => Err(Unmapped::ClassesRoot),
        _ => Err(Unmapped::UnknownRoot(parts[0].to_owned())),
    }
}

/// Where edit `e` lands; a key out of reach is an error naming the edit's line.
fn targets_of(e: &RegEdit, sets: &ControlSets) -> Result<Vec<Target>, Error> {
    map_key(e.op.key(), sets).map_err(|reason| Error::Root {
        file: e.file.to_string(),
        line: e.line,
        key: e.op.key().to_owned(),
        reason,
    })
}

/// Checks that every edit's key maps to a hive, before anything is read or written.
pub fn check_roots(edits: &[RegEdit], sets: &ControlSets) -> Result<(), Error> {
    for e in edits {
        targets_of(e, sets)?;
    }
    Ok(())
}

/// What the edits leave behind: (key path, upper-cased value name) → value, or
/// None where the value was deleted.
pub type Expected = BTreeMap<(String, String), Option<RegValue>>;

/// The result of running edits on one hive.
#[derive(Debug)]
pub struct HiveResult {
    pub hive: HiveName,
    pub changes: Vec<Change>,
    /// The hive's new bytes, when anything changed.
    pub bytes: Option<Vec<u8>>,
    /// Every value the edits leave set or deleted, for verification.
    pub expected: Expected,
}

/// Runs `edits` in order on the hives `load` provides (by file name), recording
/// each change. Hives are opened for writing (a dirty one is refused); only hives
/// with changes are committed. Nothing is written anywhere: the caller decides.
pub fn apply(
    edits: &[RegEdit],
    sets: &ControlSets,
    mut load: impl FnMut(HiveName) -> Result<Vec<u8>, Error>,
) -> Result<Vec<HiveResult>, Error> {
    let targets = edits
        .iter()
        .map(|e| targets_of(e, sets))
        .collect::<Result<Vec<_>, _>>()?;
    let mut made = keys_made(edits, &targets);
    let mut open: BTreeMap<HiveName, (Hive, Vec<Change>, Expected)> = BTreeMap::new();
    for (e, targets) in edits.iter().zip(targets) {
        let at = |source: hive::Error| Error::Hive {
            file: e.file.to_string(),
            line: e.line,
            source,
        };
        let src = Source {
            file: e.file.clone(),
            line: e.line,
        };
        for t in targets {
            let (h, changes, expected) = match open.entry(t.hive) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let bytes = load(t.hive)?;
                    let paths = made.remove(&t.hive).unwrap_or_default();
                    let h = Hive::open_write_with_keys(
                        t.hive.name(),
                        &bytes,
                        paths.iter().map(String::as_str),
                    )?;
                    v.insert((h, Vec::new(), BTreeMap::new()))
                }
            };
            let change = |key: String,
                          value: Option<String>,
                          action,
                          old: Option<&RegValue>,
                          new: Option<&RegValue>| Change {
                hive: t.hive,
                key,
                value,
                action,
                old: old.cloned(),
                new: new.cloned(),
                source: src.clone(),
            };
            match &e.op {
                Op::CreateKey { .. } => {
                    for k in h.create_key(&t.path).map_err(at)? {
                        changes.push(change(k, None, Action::KeyAdded, None, None));
                    }
                }
                Op::DeleteKey { .. } => {
                    if h.delete_key(&t.path).map_err(at)? {
                        changes.push(change(t.path.clone(), None, Action::KeyDeleted, None, None));
                        let prefix = format!("{}\\", crate::hive::fold_name(&t.path));
                        expected.retain(|(k, _), _| {
                            let k = crate::hive::fold_name(k);
                            k != crate::hive::fold_name(&t.path) && !k.starts_with(&prefix)
                        });
                    }
                }
                Op::SetValue {
                    name, kind, data, ..
                } => {
                    for k in h.create_key(&t.path).map_err(at)? {
                        changes.push(change(k, None, Action::KeyAdded, None, None));
                    }
                    let new = RegValue {
                        kind: *kind,
                        data: data.clone(),
                    };
                    let old = h.value(&t.path, name).map_err(at)?;
                    if old.as_ref() != Some(&new) {
                        h.set_value(&t.path, name, *kind, data).map_err(at)?;
                        let action = if old.is_some() {
                            Action::ValueChanged
                        } else {
                            Action::ValueAdded
                        };
                        changes.push(change(
                            t.path.clone(),
                            Some(name.clone()),
                            action,
                            old.as_ref(),
                            Some(&new),
                        ));
                    }
                    expected.insert((t.path.clone(), crate::hive::fold_name(name)), Some(new));
                }
                Op::DeleteValue { name, .. } => {
                    if let Some(old) = h.delete_value(&t.path, name).map_err(at)? {
                        changes.push(change(
                            t.path.clone(),
                            Some(name.clone()),
                            Action::ValueDeleted,
                            Some(&old),
                            None,
                        ));
                    }
                    expected.insert((t.path.clone(), crate::hive::fold_name(name)), None);
                }
            }
        }
    }
    let mut out = Vec::new();
    for (name, (h, changes, expected)) in open {
        let bytes = if changes.is_empty() {
            None
        } else {
            Some(h.commit()?)
        };
        out.push(HiveResult {
            hive: name,
            changes,
            bytes,
            expected,
        });
    }
    Ok(out)
}

/// Per hive, the keys the edits create or set values in, all made at once when
/// the hive is opened ([`Hive::open_write_with_keys`]) — except keys at or below a key
/// some edit deletes, whose existence depends on the order of the edits.
fn keys_made(edits: &[RegEdit], targets: &[Vec<Target>]) -> BTreeMap<HiveName, Vec<String>> {
    // Keys as `HIVE\FOLDED\PATH`, so that every prefix of one is a plain &str.
    let full = |t: &Target| format!("{}\\{}", t.hive, hive::fold_name(&t.path));
    let mut deleted = std::collections::HashSet::new();
    for (e, ts) in edits.iter().zip(targets) {
        if let Op::DeleteKey { .. } = e.op {
            deleted.extend(ts.iter().map(full));
        }
    }
    let mut made: BTreeMap<HiveName, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (e, ts) in edits.iter().zip(targets) {
        if !matches!(e.op, Op::CreateKey { .. } | Op::SetValue { .. }) {
            continue;
        }
        for t in ts {
            let key = full(t);
            let under_deleted = !deleted.is_empty()
                && key
                    .match_indices('\\')
                    .skip(1)
                    .map(|(i, _)| &key[..i])
                    .chain([key.as_str()])
                    .any(|prefix| deleted.contains(prefix));
            if !under_deleted && seen.insert(key) {
                made.entry(t.hive).or_default().push(t.path.clone());
            }
        }
    }
    made
}

/// A value that does not read back as the edits left it.
#[derive(Debug, thiserror::Error)]
#[error("{hive}\\{path}\\{name}: read back {}, expected {}", shown(.got), shown(.want))]
pub struct Mismatch {
    pub hive: HiveName,
    pub path: String,
    pub name: String,
    pub got: Option<ValueView>,
    pub want: Option<ValueView>,
}

/// A value read back or expected, or "nothing" for an absent one.
fn shown(v: &Option<ValueView>) -> String {
    v.as_ref()
        .map_or_else(|| "nothing".to_owned(), ValueView::to_string)
}

/// Reads back every value the edits left set (or deleted) from `bytes`, the hive as
/// written; the first mismatch is an error.
pub fn verify(result: &HiveResult, bytes: &[u8]) -> Result<(), Error> {
    let unreadable = |source| Error::Unreadable {
        hive: result.hive,
        source,
    };
    let h = View::open(result.hive.name(), bytes).map_err(unreadable)?;
    // Each key's values are read once (a key may hold tens of thousands).
    let mut listed: Option<(&str, std::collections::HashMap<String, RegValue>)> = None;
    for ((path, name), want) in &result.expected {
        if listed.as_ref().is_none_or(|(p, _)| *p != path.as_str()) {
            let mut values = std::collections::HashMap::new();
            for (n, v) in h.values(path).map_err(unreadable)? {
                values.entry(crate::hive::fold_name(&n)).or_insert(v);
            }
            listed = Some((path.as_str(), values));
        }
        let values = &listed.as_ref().expect("listed above").1;
        let got = values.get(&crate::hive::fold_name(name)).cloned();
        if got.as_ref() != want.as_ref() {
            return Err(Error::Mismatch(Box::new(Mismatch {
                hive: result.hive,
                path: path.clone(),
                name: name.clone(),
                got: got.as_ref().map(ValueView::from),
                want: want.as_ref().map(ValueView::from),
            })));
        }
    }
    Ok(())
}

/// One value a built-in profile sets, and what the hive holds now.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    pub profile: &'static str,
    pub hive: HiveName,
    pub key: String,
    pub value: String,
    pub wanted: ValueView,
    /// None when the value (or its key) is absent.
    pub current: Option<ValueView>,
    pub matches: bool,
}

/// The current state of every value the built-in profiles set for `family`.
pub fn settings(
    family: profiles::Family,
    sets: &ControlSets,
    mut load: impl FnMut(HiveName) -> Result<Vec<u8>, Error>,
) -> Result<Vec<Setting>, Error> {
    let mut hives: BTreeMap<HiveName, View> = BTreeMap::new();
    let mut out = Vec::new();
    for p in profiles::PROFILES {
        let edits = p
            .edits(family)
            .expect("built-in profiles parse (unit-tested)");
        for e in &edits {
            let Op::SetValue {
                name, kind, data, ..
            } = &e.op
            else {
                continue;
            };
            for t in targets_of(e, sets)? {
                let h = match hives.entry(t.hive) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(View::owned(t.hive.name(), load(t.hive)?)?)
                    }
                };
                let current = h.value(&t.path, name)?;
                let wanted = RegValue {
                    kind: *kind,
                    data: data.clone(),
                };
                out.push(Setting {
                    profile: p.name,
                    hive: t.hive,
                    key: t.path,
                    value: name.clone(),
                    matches: current.as_ref() == Some(&wanted),
                    wanted: ValueView::from(&wanted),
                    current: current.as_ref().map(ValueView::from),
                });
            }
        }
    }
    Ok(out)
}
