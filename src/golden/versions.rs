//! Golden images as immutable versions behind a stable name.
//!
//! A build writes `DIR/NAME-<first 12 hex of its sha256>.EXT` (read-only, never
//! rewritten) with its manifest beside it, then moves the stable name `DIR/NAME.EXT`
//! — a relative symlink — to it, atomically (a new link renamed over the old one).
//! Clones record the versioned file as their backing file, so a rebuild never
//! changes what an existing clone reads. `gc` removes versions nobody uses.

use crate::error::unreadable;
use crate::fsutil;
use crate::golden::Refusal;
use crate::image;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Hex digits of the sha256 in a version's file name.
const VERSION_HEX: usize = 12;

/// Where the versions of one golden image live.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The stable name, e.g. `golden/win2k22.qcow2`.
    pub stable: PathBuf,
    dir: PathBuf,
    stem: String,
    /// `.qcow2`, or empty when the stable name has no extension.
    ext: String,
}

impl Layout {
    pub fn new(stable: &Path) -> Result<Layout, Refusal> {
        let name = stable
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| Refusal::OutputName {
                output: stable.to_owned(),
            })?;
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        let dir = match stable.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok(Layout {
            stable: stable.to_owned(),
            dir,
            stem: stem.to_owned(),
            ext: ext.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The versioned file for an image whose sha256 is `sha256`.
    pub fn version_path(&self, sha256: &str) -> PathBuf {
        let short = &sha256[..VERSION_HEX.min(sha256.len())];
        self.dir.join(format!("{}-{short}{}", self.stem, self.ext))
    }

    /// Whether `file_name` is one of this image's versions.
    fn is_version_name(&self, file_name: &str) -> bool {
        let Some(rest) = file_name.strip_prefix(&self.stem) else {
            return false;
        };
        let Some(rest) = rest.strip_prefix('-') else {
            return false;
        };
        let Some(hex) = rest.strip_suffix(self.ext.as_str()) else {
            return false;
        };
        hex.len() == VERSION_HEX && hex.bytes().all(|b| b.is_ascii_hexdigit())
    }

    /// The version the stable name points at: `None` when there is no stable name
    /// yet. A stable name that is not a symlink (an image from a wingold without
    /// versions, or a file of the user's) is refused: clones may rest on its bytes,
    /// and replacing it would change them.
    pub fn current(&self) -> anyhow::Result<Option<PathBuf>> {
        match std::fs::symlink_metadata(&self.stable) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(image::Error::open(&self.stable, e).into()),
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&self.stable)
                    .map_err(|e| image::Error::open(&self.stable, e))?;
                let target = self.dir.join(target);
                Ok(target.exists().then_some(target))
            }
            Ok(_) => Err(Refusal::StableIsFile {
                stable: self.stable.clone(),
            }
            .into()),
        }
    }

    /// Points the stable name at `version` (in the same folder), atomically.
    pub fn point_to(&self, version: &Path) -> std::io::Result<()> {
        let target = version
            .file_name()
            .ok_or_else(|| std::io::Error::other("a version has a file name"))?;
        let tmp = fsutil::temp_name(&self.stable);
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)?;
        let placed = fsutil::move_into_place(&tmp, &self.stable, fsutil::Place::Replace);
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }

    /// Every version in the folder, newest first (by when a build last produced it).
    pub fn versions(&self) -> std::io::Result<Vec<Version>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !self.is_version_name(name) {
                continue;
            }
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if !meta.is_file() {
                continue;
            }
            let manifest = super::manifest::manifest_path(&path);
            let built = std::fs::metadata(&manifest)
                .map(|m| m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128)
                .unwrap_or(0)
                .max(meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128);
            out.push(Version {
                path,
                manifest,
                size: meta.len(),
                built_ns: built,
                id: (meta.dev(), meta.ino()),
            });
        }
        out.sort_by(|a, b| b.built_ns.cmp(&a.built_ns).then(b.path.cmp(&a.path)));
        Ok(out)
    }
}

/// One versioned golden file.
#[derive(Debug, Clone)]
pub struct Version {
    pub path: PathBuf,
    pub manifest: PathBuf,
    pub size: u64,
    built_ns: i128,
    id: (u64, u64),
}

/// What `gc` decided for one version.
#[derive(Debug, Serialize)]
pub struct GcEntry {
    pub path: PathBuf,
    pub size: u64,
    /// `current`, `newest`, `used by CLONE`, `held by a running VM`, or `removed`
    /// (`would be removed` with `--dry-run`).
    pub verdict: String,
    pub removed: bool,
}

/// `wingold gc`: removes the versions of `stable` that no clone under `clones`
/// rests on and no running VM holds, keeping the `keep` newest and always the one
/// the stable name points at.
pub fn gc(
    stable: &Path,
    keep: usize,
    clones: &[PathBuf],
    dry_run: bool,
) -> anyhow::Result<Vec<GcEntry>> {
    let layout = Layout::new(stable)?;
    let current = layout
        .current()?
        .and_then(|c| std::fs::metadata(c).ok())
        .map(|m| (m.dev(), m.ino()));
    let Clones { used, unresolved } = clone_backings(clones)?;
    let mut out = Vec::new();
    for (i, v) in layout.versions()?.into_iter().enumerate() {
        let verdict = if Some(v.id) == current {
            "current".to_owned()
        } else if i < keep {
            "newest".to_owned()
        } else if let Some((_, clone)) = used.iter().find(|(id, _)| *id == v.id) {
            format!("used by {}", clone.display())
        } else if image::in_use(&v.path)? {
            "held by a running VM".to_owned()
        } else if let Some(u) = unresolved.first() {
            format!(
                "kept: {} names backing file {:?}, which cannot be followed ({}); \
                 no version is removed until it can",
                u.image.display(),
                u.name,
                u.why
            )
        } else if dry_run {
            "would be removed".to_owned()
        } else {
            std::fs::remove_file(&v.path).map_err(|e| image::Error::io(&v.path, "removing", e))?;
            let _ = std::fs::remove_file(&v.manifest);
            // The publish cache of its OCI layer digest (`publish`), if any.
            let _ = std::fs::remove_file(format!("{}.oci.json", v.path.display()));
            let _ = std::fs::remove_file(format!("{}.published.json", v.path.display()));
            "removed".to_owned()
        };
        out.push(GcEntry {
            removed: verdict == "removed",
            path: v.path,
            size: v.size,
            verdict,
        });
    }
    fsutil::sync_parent(stable);
    Ok(out)
}

/// What the clone folders say about the versions: every file a qcow2 image under
/// them rests on, as (device, inode) with the image that uses it, and the backing
/// names that could not be followed (while any is, no version is removed: it may
/// be the one that name means).
#[derive(Debug, Default)]
struct Clones {
    used: Vec<((u64, u64), PathBuf)>,
    unresolved: Vec<image::Unresolved>,
}

/// Reads the clone folders, following symbolic links to folders and files (a
/// link that loops back is skipped). Headers are read without locks, so clones
/// that running VMs hold are seen too; nothing is opened before its type is known.
fn clone_backings(dirs: &[PathBuf]) -> anyhow::Result<Clones> {
    let mut c = Clones::default();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(Refusal::NotCloneFolder {
                dir: dir.to_owned(),
            }
            .into());
        }
        for e in walkdir::WalkDir::new(dir).follow_links(true) {
            let e = match e {
                Ok(e) => e,
                Err(e) if e.loop_ancestor().is_some() => continue,
                // A dangling link is no clone.
                Err(e)
                    if e.io_error()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
                {
                    continue
                }
                Err(e) => return Err(unreadable(dir)(e).into()),
            };
            if !e.file_type().is_file() {
                continue;
            }
            let chain = image::backing_chain(e.path());
            for file in chain.files {
                if let Ok(m) = std::fs::metadata(&file) {
                    c.used.push(((m.dev(), m.ino()), e.path().to_owned()));
                }
            }
            c.unresolved.extend(chain.unresolved);
        }
    }
    Ok(c)
}
