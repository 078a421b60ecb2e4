//! Writing files so that nothing half-written is ever seen under the final name:
//! write under a temporary name beside the target, fsync, then move into place
//! (replacing the old file atomically, or refusing to replace anything).

#![forbid(unsafe_code)]

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

/// Makes a new directory entry durable; best effort.
pub fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
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
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        move_into_place(&tmp, path, place)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
