//! A build's output: the lock on it, leftovers of interrupted builds, the
//! progress bars and background hashes, the version moved into place, and the
//! manifest written beside it.

use super::inputs::Inputs;
use crate::error::unreadable;
use crate::fsutil::{self, Place};
use crate::golden::config::Loaded;
use crate::golden::finalize;
use crate::golden::inject;
use crate::golden::manifest::{
    read_manifest, ConfigRecord, EditRecord, Manifest, OutputRecord, Timings, VirtioRecord,
};
use crate::golden::versions::Layout;
use crate::image;
use crate::virtio::fetch;
use anyhow::Context;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One build per output at a time: an exclusive lock on `.NAME.wingold-lock`
/// beside it (the folder made first), held until dropped.
pub(super) fn lock(layout: &Layout) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let out_dir = layout.dir();
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let name = layout
        .stable
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let lock_path = out_dir.join(format!(".{name}.wingold-lock"));
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{}: cannot open", lock_path.display()))?;
    nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
        .with_context(|| format!("{}: cannot lock", lock_path.display()))
}

/// What the build wrote, for its manifest.
pub(super) struct Written<'a> {
    pub version: &'a Path,
    pub sha256: &'a str,
    pub stats: &'a finalize::Stats,
    pub timings: Timings,
}

/// The manifest of the version just placed.
pub(super) fn manifest(
    cfg: &Loaded,
    iso: &fetch::Fetched,
    inputs: &Inputs,
    plan: &inject::Plan,
    written: Written,
) -> anyhow::Result<Manifest> {
    let c = &cfg.config;
    let (size, mtime_ns, inode) = stamp(&std::fs::metadata(written.version)?);
    Ok(Manifest {
        wingold_version: env!("CARGO_PKG_VERSION").into(),
        identity: inputs.identity.clone(),
        base: inputs.base.clone(),
        virtio_win: VirtioRecord {
            version: iso.version.clone(),
            url: iso.url.clone(),
            final_url: iso.final_url.clone(),
            sha256: iso.sha256.clone(),
            size: iso.size,
            pinned_by: iso.pinned_by,
            path: iso.path.clone(),
            drivers_injected: plan.report.drivers.is_some(),
        },
        config: ConfigRecord {
            path: cfg.path.clone(),
            sha256: inputs.identity.config_sha256.clone(),
            profiles: c.golden.profiles.clone(),
            regfiles: inputs.identity.regfiles.clone(),
            compress: c.golden.compress,
        },
        windows: plan.report.windows.clone(),
        edits: plan.report.changes.iter().map(EditRecord::from).collect(),
        first_boot_commands: plan.report.first_boot_commands.clone(),
        drivers: plan.report.drivers.clone(),
        first_boot: plan.report.first_boot.clone(),
        boot: image::open(&c.base.image, image::Access::ReadOnly)
            .ok()
            .and_then(|img| crate::guest::boot(&img, &c.base.image).ok()),
        output: OutputRecord {
            path: written.version.to_owned(),
            stable: Some(c.golden.output.clone()),
            sha256: written.sha256.to_owned(),
            size,
            mtime_ns,
            inode,
            virtual_size: written.stats.virtual_size,
            compressed: c.golden.compress,
        },
        timings_ms: written.timings,
    })
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    Ok(fsutil::sha256_file(path).map_err(unreadable(path))?)
}

pub(super) fn stamp(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    (
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        meta.ino(),
    )
}

/// A file's SHA-256 being computed on another core.
pub(super) type Hashing = std::thread::JoinHandle<anyhow::Result<String>>;

pub(super) fn join_hash(h: Hashing) -> anyhow::Result<String> {
    h.join()
        .map_err(|_| anyhow::anyhow!("the thread hashing the base image panicked"))?
}

/// A bar on stderr for a step over `len` bytes when `shown` (a terminal and no
/// `--json`); hidden otherwise, so that steps report to it either way.
pub(super) fn bar(shown: bool, len: u64, what: &'static str) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:10} [{bar:40}] {bytes}/{total_bytes} {eta}")
    {
        b.set_style(style);
    }
    b.set_message(what);
    b
}

pub(super) fn hash_in_background(path: &Path) -> Hashing {
    let path = path.to_owned();
    std::thread::spawn(move || sha256_file(&path))
}

/// Removes what an interrupted build left beside the output: temporary images,
/// work overlays and symlinks named `.NAME.wingold-tmp.PID` / `.wingold-work.PID`.
/// Runs under the output's lock, so no live build's files are touched.
pub(super) fn clear_leftovers(out: &Path) {
    let (Some(dir), Some(name)) = (out.parent(), out.file_name()) else {
        return;
    };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name().to_string_lossy().into_owned();
        if f.starts_with('.')
            && f.contains(&*name)
            && (f.contains(".wingold-tmp.") || f.contains(".wingold-work."))
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Moves the finished, verified image `tmp` (whose sha256 is `sha256`) to its
/// versioned name. A version with those bytes that is already there is kept as it
/// is (it is never rewritten) and `tmp` is dropped.
pub(super) fn place_version(layout: &Layout, tmp: &Path, sha256: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let version = layout.version_path(sha256);
    if version.exists() {
        let same = read_manifest(&version).is_some_and(|m| m.output.sha256 == sha256)
            || sha256_file(&version)? == sha256;
        anyhow::ensure!(
            same,
            "{}: a different image already has this name (a sha256 prefix collision); \
             move it away and build again",
            version.display()
        );
        std::fs::remove_file(tmp).with_context(|| format!("{}: cannot remove", tmp.display()))?;
        return Ok(version);
    }
    // Read-only: nothing is meant to write a version again.
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o444))
        .with_context(|| format!("{}: cannot make read-only", tmp.display()))?;
    fsutil::move_into_place(tmp, &version, Place::NoReplace)
        .with_context(|| format!("{}: cannot move into place", version.display()))?;
    Ok(version)
}
