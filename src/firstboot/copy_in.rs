//! Copy-in: a local file or folder tree into the guest, its shape kept, refused
//! (naming the file, before anything is written) when Windows could not hold it.

use super::{mtime, names, sha256_local, GuestFile};
use crate::drivers::FileAction;
use crate::BadInput;
use std::collections::BTreeMap;
use std::path::Path;

/// The guest path of `C:\Tools` or `\Tools` on the Windows volume (`Tools`).
fn guest_target(guest: &str) -> Result<String, String> {
    let g = guest.replace('/', "\\");
    let rest = match g.as_bytes() {
        [d, b':', ..] if d.eq_ignore_ascii_case(&b'c') => &g[2..],
        [_, b':', ..] => {
            return Err(format!(
                "{guest}: only the Windows volume (C:) is written; give C:\\… or \\…"
            ))
        }
        _ => &g[..],
    };
    let rest = rest.trim_matches('\\');
    if rest.is_empty() {
        return Err(format!("{guest}: name a folder, not the volume's root"));
    }
    for part in rest.split('\\') {
        if part == "." || part == ".." {
            return Err(format!("{guest}: no . or .. in guest paths"));
        }
        if let Some(p) = names::problem(part) {
            return Err(format!("{guest}: {part:?}: {p}"));
        }
    }
    Ok(rest.to_owned())
}

/// Adds a local file or folder tree under `guest` (its shape kept); refuses names
/// Windows cannot hold, two names equal but for case in one folder, and symbolic
/// links — naming the file, before anything is written.
pub(super) fn copy_in(
    local: &Path,
    guest: &str,
    files: &mut Vec<GuestFile>,
    folders: &mut Vec<String>,
) -> anyhow::Result<()> {
    let target = guest_target(guest).map_err(BadInput)?;
    let meta = std::fs::symlink_metadata(local)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", local.display())))?;
    if meta.file_type().is_symlink() {
        return Err(BadInput(format!(
            "{}: a symbolic link; copy-in takes files and folders only",
            local.display()
        ))
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
    let mut by_folder: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let walk = walkdir::WalkDir::new(local)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1);
    for entry in walk {
        let entry = entry.map_err(|e| BadInput(format!("{}: {e}", local.display())))?;
        let path = entry.path();
        let rel = path.strip_prefix(local).expect("under the root");
        let mut guest_parts = Vec::new();
        for c in rel.components() {
            let name = c
                .as_os_str()
                .to_str()
                .ok_or_else(|| BadInput(format!("{}: a name that is not UTF-8", path.display())))?;
            guest_parts.push(name.to_owned());
        }
        let name = guest_parts.last().cloned().unwrap_or_default();
        if let Some(p) = names::problem(&name) {
            return Err(BadInput(format!("{}: {name:?}: {p}", path.display())).into());
        }
        let parent = guest_parts[..guest_parts.len() - 1].join("\\");
        let folded = crate::hive::fold_name(&name);
        if let Some(other) = by_folder
            .entry(parent.clone())
            .or_default()
            .insert(folded, name.clone())
        {
            return Err(BadInput(format!(
                "{}: {name:?} and {other:?} differ only in case; Windows holds one",
                path.display()
            ))
            .into());
        }
        let to = format!("{target}\\{}", guest_parts.join("\\"));
        let ft = entry.file_type();
        if ft.is_symlink() {
            return Err(BadInput(format!(
                "{}: a symbolic link; copy-in takes files and folders only",
                path.display()
            ))
            .into());
        } else if ft.is_dir() {
            folders.push(to);
        } else if ft.is_file() {
            let meta = entry
                .metadata()
                .map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
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
            return Err(BadInput(format!(
                "{}: not a file or folder; copy-in takes files and folders only",
                path.display()
            ))
            .into());
        }
    }
    Ok(())
}
