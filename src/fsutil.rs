//! Writing files so that nothing half-written is ever seen under the final name:
//! write under a temporary name beside the target, fsync, then move into place
//! (replacing the old file atomically, or refusing to replace anything).

#![deny(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `.NAME.wingold-tmp.PID` beside `path`.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.wingold-tmp.{}", std::process::id()))
}

/// The folder `path` is (or is to be) in, absolute where the working folder can
/// be known; `.` for a bare name otherwise.
pub fn folder_of(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Makes a new directory entry durable; best effort.
pub fn sync_parent(path: &Path) {
    if let Ok(d) = std::fs::File::open(folder_of(path)) {
        let _ = d.sync_all();
    }
}

/// Whether moving into place may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Atomically replace what is there (rename).
    Replace,
    /// Fail with `AlreadyExists` when something is there (link, then unlink).
    NoReplace,
}

/// Moves the finished file `tmp` to `path` and makes the move durable.
pub fn move_into_place(tmp: &Path, path: &Path, place: Place) -> std::io::Result<()> {
    match place {
        Place::Replace => std::fs::rename(tmp, path)?,
        Place::NoReplace => {
            std::fs::hard_link(tmp, path)?;
            std::fs::remove_file(tmp)?;
        }
    }
    sync_parent(path);
    Ok(())
}

/// Writes `bytes` to `path` (file mode `mode`) under a temporary name, fsyncs, and
/// moves it into place; on any failure the temporary file is removed.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, place: Place) -> std::io::Result<()> {
    write_with(path, mode, place, |f| f.write_all(bytes))
}

/// As [`write_file`], with the content written by `fill` into the open file.
pub fn write_with(
    path: &Path,
    mode: u32,
    place: Place,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        move_into_place(&tmp, path, place)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A path as the filesystem knows it, to tell whether two spellings (`./x`, a
/// symlink, a hard link, a folder reached two ways) name the same file.
#[derive(Debug, Clone)]
pub struct FileKey {
    /// Absolute, with the folder resolved: the same for every spelling of a name.
    spelled: PathBuf,
    /// (device, inode) of the name itself and of the file it leads to.
    ids: Vec<(u64, u64)>,
}

impl FileKey {
    pub fn of(path: &Path) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let spelled = match (abs.parent(), abs.file_name()) {
            (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| abs.clone()),
            _ => abs.clone(),
        };
        let ids = [std::fs::symlink_metadata(path), std::fs::metadata(path)]
            .into_iter()
            .flatten()
            .map(|m| (m.dev(), m.ino()))
            .collect();
        FileKey { spelled, ids }
    }

    /// Whether both name the same file, or one is a link to the other's file.
    pub fn same(&self, other: &FileKey) -> bool {
        self.spelled == other.spelled || self.ids.iter().any(|id| other.ids.contains(id))
    }
}

/// Whether process `pid` is gone (so the temporary files it named are stale).
fn process_is_gone(pid: i32) -> bool {
    pid > 0
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

/// Removes the files in `dir` that a killed wingold left: names for which `rule`
/// gives the id of a process that no longer runs and how long the file must have
/// been left alone first. Best effort.
fn sweep(dir: &Path, rule: impl Fn(&str) -> Option<(i32, std::time::Duration)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, idle_for)) = name.to_str().and_then(&rule) else {
            continue;
        };
        let idle = idle_for.is_zero()
            || e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|d| d > idle_for);
        if idle && process_is_gone(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes the files in `dir` that a killed wingold left: names for which `pid_of`
/// gives the id of a process that no longer runs. Best effort.
pub fn clear_stale(dir: &Path, pid_of: impl Fn(&str) -> Option<i32>) {
    sweep(dir, |n| {
        pid_of(n).map(|pid| (pid, std::time::Duration::ZERO))
    });
}

/// How long a temporary file of another name must have been left alone before a
/// run that did not make it removes it: a process id alone can mislead (a run in
/// another PID namespace writing to a shared folder looks gone from here).
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Removes from `dir` every temporary file a killed wingold left, whatever it was
/// for (`.NAME.wingold-tmp.PID`, `.NAME.wingold-work.PID`: a manifest, an image,
/// an OCI layout's `index.json` or blob), when no process of that id runs: at
/// once for `own`'s temporary names (this run's target), after 15 minutes idle
/// for any other. Best effort.
pub fn clear_dead_temps(dir: &Path, own: Option<&Path>) {
    let own = own
        .and_then(|p| p.file_name())
        .map(|n| format!(".{}.wingold-tmp.", n.to_string_lossy()));
    sweep(dir, |name| {
        if let Some(pid) = own.as_deref().and_then(|o| name.strip_prefix(o)) {
            return Some((pid.parse().ok()?, std::time::Duration::ZERO));
        }
        let rest = name.strip_prefix('.')?;
        let (_, pid) = rest
            .rsplit_once(".wingold-tmp.")
            .or_else(|| rest.rsplit_once(".wingold-work."))?;
        Some((pid.parse().ok()?, ABANDONED_AFTER))
    });
}

/// The SHA-256 of `bytes` in lower-case hex: the one spelling of a digest in
/// reports, manifests and caches.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// The SHA-256 (lower-case hex) of a file's bytes, read in 4 MiB pieces.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_file_with(path, &|_| {})
}

/// [`sha256_file`], telling `progress` how many bytes are done.
pub fn sha256_file_with(path: &Path, progress: &dyn Fn(u64)) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(format!("{:x}", h.finalize()))
}
