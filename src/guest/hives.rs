//! The hive files of a Windows and their transaction logs: found in
//! `System32\\config`, read through their logs when Windows left them dirty,
//! and handed to edits only when that recovery is complete.

use super::{Error, HiveBytes, HiveFile, LogState, ReadOnce, Result, Windows};
use crate::hive::replay::{self, LogFile, Outcome};
use crate::hive::{self, HeaderState};
use crate::ntfs::Volume;
use crate::reg::HiveName;

pub(super) fn hive_files(vol: &Volume, config: &str) -> Result<Vec<HiveFile>> {
    let listing = vol.list(config)?;
    let mut out = Vec::new();
    for wanted in crate::reg::HiveName::ALL.map(|h| h.name()) {
        let Some(entry) = listing
            .iter()
            .find(|e| !e.is_dir && e.name.eq_ignore_ascii_case(wanted))
        else {
            continue;
        };
        let path = format!("{config}\\{}", entry.name);
        let head = vol.read_range(&path, 0, hive::BASE_BLOCK_LEN)?;
        let header = HeaderState::parse(&path, &head)?;
        let mut logs: Vec<String> = listing
            .iter()
            .filter(|e| !e.is_dir && hive::is_log_of(wanted, &e.name))
            .map(|e| e.name.clone())
            .collect();
        logs.sort_by_key(|l| log_rank(l));
        // A dirty hive's logs are read now, to say what they hold; the replayed
        // bytes are kept for whoever reads the hive next.
        let mut read = ReadOnce::default();
        let log_state = if header.is_clean() {
            LogState::Clean
        } else {
            match read_through_logs(vol, config, &entry.name, &logs) {
                Ok(r) => {
                    let state = r.state.clone();
                    read = ReadOnce(Some(std::sync::Arc::new(r)));
                    state
                }
                // A replay that fails is said, not fatal to inspecting the rest.
                Err(Error::Hive(e)) => LogState::Dirty {
                    why: e.to_string(),
                    logs: Vec::new(),
                },
                Err(e) => return Err(e),
            }
        };
        out.push(HiveFile {
            name: wanted.to_owned(),
            size: vol.file_size(&path)?,
            clean: header.is_clean(),
            header,
            path,
            logs,
            log_state,
            read,
        });
    }
    Ok(out)
}

/// The order logs are tried in: `.LOG1`, `.LOG2`, then the single `.LOG`.
fn log_rank(name: &str) -> u8 {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_uppercase();
    match ext.as_str() {
        "LOG1" => 0,
        "LOG2" => 1,
        _ => 2,
    }
}

/// The bytes detection looks at: those already known, else those it read.
pub(super) fn known_or_read<'b>(known: Option<&'b [u8]>, read: &'b Option<HiveBytes>) -> &'b [u8] {
    known
        .or(read.as_ref().map(|r| r.bytes.as_slice()))
        .unwrap_or_default()
}

/// Reads hive `file` in folder `config` through its transaction logs `logs`
/// (file names in the same folder): a dirty hive is replayed in memory, as
/// Windows would when it loads it; a clean one is read as it is.
pub(super) fn read_through_logs(
    vol: &Volume,
    config: &str,
    file: &str,
    logs: &[String],
) -> Result<HiveBytes> {
    let path = format!("{config}\\{file}");
    let mut bytes = vol.read_file(&path)?;
    if HeaderState::parse(&path, &bytes).is_ok_and(|h| h.is_clean()) {
        return Ok(HiveBytes {
            bytes,
            state: LogState::Clean,
        });
    }
    let data = logs
        .iter()
        .map(|l| Ok((l.as_str(), vol.read_file(&format!("{config}\\{l}"))?)))
        .collect::<Result<Vec<_>>>()?;
    let files: Vec<LogFile> = data
        .iter()
        .map(|(name, bytes)| LogFile { name, bytes })
        .collect();
    let state = match replay::recover(&path, &mut bytes, &files)? {
        Outcome::Clean => LogState::Clean,
        Outcome::Replayed(r) => LogState::Replayable(r),
        Outcome::NothingApplies { why, logs } => LogState::Dirty { why, logs },
    };
    Ok(HiveBytes { bytes, state })
}

/// Hive `name` of `w`, read through its transaction logs (see [`LogState`]).
pub fn read_hive(vol: &Volume, w: &Windows, name: HiveName) -> Result<HiveBytes> {
    let config = w.hive_path("").trim_end_matches('\\').to_owned();
    match w.hive_file(name) {
        Some(HiveFile {
            read: ReadOnce(Some(r)),
            ..
        }) => Ok((**r).clone()),
        Some(h) => {
            let file = h.path.rsplit('\\').next().unwrap_or(name.name());
            read_through_logs(vol, &config, file, &h.logs)
        }
        None => read_through_logs(vol, &config, name.name(), &[]),
    }
}

/// Hive `name` of `w` to be edited: read through its logs, and refused when it
/// is dirty and nothing in its logs brings it up to date (nothing is guessed).
pub fn read_hive_to_edit(vol: &Volume, w: &Windows, name: HiveName) -> Result<Vec<u8>> {
    to_edit(w, name, read_hive(vol, w, name)?)
}

/// Hive `name` of `w`, already read through its logs, to be edited: refused as
/// [`read_hive_to_edit`] refuses it.
pub fn to_edit(w: &Windows, name: HiveName, read: HiveBytes) -> Result<Vec<u8>> {
    match read.state {
        LogState::Dirty { why, .. } => {
            let header = HeaderState::parse(name.name(), &read.bytes)
                .ok()
                .and_then(|h| h.dirty_reason())
                .unwrap_or_else(|| "its header is damaged".into());
            Err(hive::Error::Dirty {
                name: w.hive_path(name),
                why: format!("{header}; {why}"),
            }
            .into())
        }
        _ => Ok(read.bytes),
    }
}
