//! Copy-in: a local file or folder tree into the guest, its shape kept, refused
//! (naming the file, before anything is written) when Windows could not hold it.

use super::Refusal;
use super::{mtime, names, sha256_local, GuestFile};
use crate::drivers::FileAction;
use crate::error::unreadable;
use std::collections::BTreeMap;
use std::path::Path;

/// The guest path of `C:\Tools` or `\Tools` on the Windows volume (`Tools`).
fn guest_target(guest: &str) -> Result<String, Refusal> {
    let g = guest.replace('/', "\\");
    let rest = match g.as_bytes() {
        [d, b':', ..] if d.eq_ignore_ascii_case(&b'c') => &g[2..],
        [_, b':', ..] => {
            return Err(Refusal::OtherVolume {
                guest: guest.to_owned(),
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

/// Adds a local file or folder tree under `guest` (its shape kept); refuses names
/// Windows cannot hold, two names equal but for case in one folder, and symbolic
/// links — naming the file, before anything is written.
pub(super) fn copy_in(
    local: &Path,
    guest: &str,
    files: &mut Vec<GuestFile>,
    folders: &mut Vec<String>,
) -> anyhow::Result<()> {
    let target = guest_target(guest)?;
    let meta = std::fs::symlink_metadata(local).map_err(unreadable(local))?;
    if meta.file_type().is_symlink() {
        return Err(Refusal::Symlink {
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
    let mut by_folder: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
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
        let folded = crate::hive::fold_name(&name);
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
