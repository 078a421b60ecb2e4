//! Copy-in: a local file or folder tree into the guest, its shape kept, refused
//! (naming the file, before anything is written) when Windows could not hold it.

use super::Refusal;
use super::{mtime, sha256_local, GuestFile};
use crate::error::unreadable;
use crate::guest::files::FileAction;
use crate::guest::names;
use std::collections::BTreeMap;
use std::path::Path;

/// The guest path of `C:\Tools` or `\Tools` on the Windows volume (`Tools`).
fn guest_target(guest: &str) -> Result<String, Refusal> {
    let g = guest.replace('/', "\\");
    if g.starts_with("\\\\") {
        return Err(Refusal::NotOnVolume {
            guest: guest.to_owned(),
            why: "a network (UNC) path",
        });
    }
    let rest = match g.as_bytes() {
        [d, b':', ..] if !d.eq_ignore_ascii_case(&b'c') => {
            return Err(Refusal::OtherVolume {
                guest: guest.to_owned(),
            })
        }
        [_, b':'] | [_, b':', b'\\', ..] => &g[2..],
        [_, b':', ..] => {
            return Err(Refusal::NotOnVolume {
                guest: guest.to_owned(),
                why: "relative to the drive's current folder",
            })
        }
        _ => &g[..],
    };
    let rest = rest.trim_matches('\\');
    if rest.is_empty() {
        return Err(Refusal::VolumeRoot {
            guest: guest.to_owned(),
        });
    }
    for part in rest.split('\\') {
        if part == "." || part == ".." {
            return Err(Refusal::Dots {
                guest: guest.to_owned(),
            });
        }
        if let Some(problem) = names::problem(part) {
            return Err(Refusal::GuestName {
                guest: guest.to_owned(),
                part: part.to_owned(),
                problem,
            });
        }
    }
    Ok(rest.to_owned())
}

/// NTFS's own files at the volume's root (records 0–11): what Windows and every
/// NTFS driver need to mount it.
const NTFS_METAFILES: &[&str] = &[
    "$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot", "$BadClus",
    "$Secure", "$UpCase", "$Extend",
];

/// Per-user hives, wherever a profile keeps them.
const USER_HIVES: &[&str] = &["NTUSER.DAT", "UsrClass.dat"];

/// What a copy-in may not write to: the guest path `to` (relative to the volume's
/// root) is, or is inside, something Windows or wingold needs as it is.
fn owned_by_windows_or_wingold(root: &str, to: &str) -> Option<&'static str> {
    let fold = crate::hive::fold_name;
    let parts: Vec<String> = to.split('\\').map(fold).collect();
    let inside = |prefix: &str| {
        let p: Vec<String> = prefix.split('\\').map(fold).collect();
        parts.len() >= p.len() && parts[..p.len()] == p[..]
    };
    if NTFS_METAFILES.iter().any(|m| fold(m) == parts[0]) {
        return Some("an NTFS system file, which the volume needs to mount");
    }
    if inside(&format!("{root}\\System32\\config")) {
        return Some("the registry's folder (the hives and their transaction logs)");
    }
    let name = parts.last().map(String::as_str).unwrap_or("");
    if USER_HIVES.iter().any(|h| {
        let h = fold(h);
        name == h
            || name
                .strip_prefix(h.as_str())
                .is_some_and(|ext| [".LOG", ".LOG1", ".LOG2"].contains(&ext))
    }) {
        return Some("a user's registry hive or its log");
    }
    if inside(&format!("{root}\\{}", super::FOLDER)) || inside(&format!("{root}\\wingold")) {
        return Some("wingold's first-boot folder, which wingold writes itself");
    }
    if inside(&format!("{root}\\{}", crate::guest::files::STAGING)) {
        return Some("wingold's driver staging folder, which driver injection writes");
    }
    None
}

/// Adds a local file or folder tree under `guest` (its shape kept); refuses names
/// Windows cannot hold, two names equal but for case in one folder, symbolic
/// links, and targets Windows or wingold own (`root` is the system root, e.g.
/// `Windows`) — naming the file, before anything is written.
pub(super) fn copy_in(
    local: &Path,
    guest: &str,
    root: &str,
    fold: &crate::guest::files::NameFold,
    files: &mut Vec<GuestFile>,
    folders: &mut Vec<String>,
) -> anyhow::Result<()> {
    let target = guest_target(guest)?;
    let refuse_owned = |to: &str| -> Result<(), Refusal> {
        match owned_by_windows_or_wingold(root, to) {
            Some(what) => Err(Refusal::Owned {
                guest: guest.to_owned(),
                to: to.to_owned(),
                what,
            }),
            None => Ok(()),
        }
    };
    refuse_owned(&target)?;
    let meta = std::fs::symlink_metadata(local).map_err(unreadable(local))?;
    if meta.file_type().is_symlink() {
        return Err(Refusal::Symlink {
            path: local.to_owned(),
        }
        .into());
    }
    if !meta.is_file() && !meta.is_dir() {
        return Err(Refusal::NotFileOrFolder {
            path: local.to_owned(),
        }
        .into());
    }
    // Folder parents of the target.
    let mut acc = String::new();
    let parts: Vec<&str> = target.split('\\').collect();
    let dirs = if meta.is_dir() {
        &parts[..]
    } else {
        &parts[..parts.len() - 1]
    };
    for p in dirs {
        acc = if acc.is_empty() {
            p.to_string()
        } else {
            format!("{acc}\\{p}")
        };
        folders.push(acc.clone());
    }
    if meta.is_file() {
        files.push(GuestFile {
            to: target,
            from: local.display().to_string(),
            size: meta.len(),
            sha256: sha256_local(local)?,
            action: FileAction::New,
            time: mtime(&meta),
            data: Vec::new(),
            local: Some(local.to_owned()),
        });
        return Ok(());
    }
    let mut by_folder: BTreeMap<String, BTreeMap<Vec<u16>, String>> = BTreeMap::new();
    let walk = walkdir::WalkDir::new(local)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1);
    for entry in walk {
        let entry = entry.map_err(unreadable(local))?;
        let path = entry.path();
        let rel = path.strip_prefix(local).expect("under the root");
        let mut guest_parts = Vec::new();
        for c in rel.components() {
            let name = c.as_os_str().to_str().ok_or_else(|| Refusal::NotUtf8Name {
                path: path.to_owned(),
            })?;
            guest_parts.push(name.to_owned());
        }
        let name = guest_parts.last().cloned().unwrap_or_default();
        if let Some(problem) = names::problem(&name) {
            return Err(Refusal::LocalName {
                path: path.to_owned(),
                name,
                problem,
            }
            .into());
        }
        let parent = guest_parts[..guest_parts.len() - 1].join("\\");
        let folded = fold(&name);
        if let Some(other) = by_folder
            .entry(parent.clone())
            .or_default()
            .insert(folded, name.clone())
        {
            return Err(Refusal::CaseTwins {
                path: path.to_owned(),
                name,
                other,
            }
            .into());
        }
        let to = format!("{target}\\{}", guest_parts.join("\\"));
        refuse_owned(&to)?;
        let ft = entry.file_type();
        if ft.is_symlink() {
            return Err(Refusal::Symlink {
                path: path.to_owned(),
            }
            .into());
        } else if ft.is_dir() {
            folders.push(to);
        } else if ft.is_file() {
            let meta = entry.metadata().map_err(unreadable(path))?;
            files.push(GuestFile {
                to,
                from: path.display().to_string(),
                size: meta.len(),
                sha256: sha256_local(path)?,
                action: FileAction::New,
                time: mtime(&meta),
                data: Vec::new(),
                local: Some(path.to_owned()),
            });
        } else {
            return Err(Refusal::NotFileOrFolder {
                path: path.to_owned(),
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::owned_by_windows_or_wingold as owned;

    #[test]
    fn what_windows_and_wingold_own_is_refused() {
        for to in [
            "$AttrDef",
            "$logfile",
            "$Extend\\$Quota",
            "$UpCase",
            "WINDOWS\\system32\\CONFIG\\SYSTEM",
            "Windows\\System32\\config\\software.LOG1",
            "Windows\\System32\\config\\RegBack\\SAM",
            "Users\\Bob\\ntuser.dat",
            "Users\\Bob\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat.LOG2",
            "Windows\\wingold\\firstboot\\queue\\6000-x.cmd",
            "windows\\WINGOLD",
            "Windows\\Drivers\\VirtIO\\viostor.inf",
        ] {
            assert!(owned("Windows", to).is_some(), "{to}");
        }
        for to in [
            "Tools\\$AttrDef",
            "$Recycle.Bin\\x",
            "Windows\\System32\\configs\\x",
            "Windows\\System32\\drivers\\etc\\hosts",
            "Windows\\Drivers",
            "Windows\\wingolden",
            "Users\\Bob\\ntuser.ini",
            "Windows\\System32",
        ] {
            assert_eq!(owned("Windows", to), None, "{to}");
        }
    }
}
