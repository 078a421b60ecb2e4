//! Writing registry settings into a Windows image offline: the engine behind
//! `wingold inject` and the inject step of `wingold build`.
//!
//! Order of work, so that a refusal writes nothing: parse every .reg file; find
//! Windows on the input (read-only); map every key to a hive; check the NTFS volume
//! is safe to write; run the edits on copies of the hives (a dirty hive is refused);
//! only then create the output (a qcow2 overlay under a temporary name), write the
//! changed hives, verify them by reading the output back, and move it into place.

mod plan;
mod refuse;

use super::files::{self, FilePlan};
use crate::drivers;
use crate::firstboot;
use crate::golden::identity;
use crate::golden::Refusal;
use crate::guest::{self, Windows};
use crate::hive;
use crate::hive::replay::{self, LogFile};
use crate::image::{self, Access, BlockDev, PartitionView};
use crate::ntfs::Volume;
use crate::reg::{self, profiles, Change, HiveName, RegEdit};
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

pub use plan::plan;
pub use refuse::refuse_golden_version;
use refuse::refuse_unbootable;

/// A profile name or a .reg file, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Profile(String),
    Reg(PathBuf),
}

/// Where the result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    DryRun,
    /// A new qcow2 overlay backed by the input.
    Overlay(PathBuf),
    /// As `Overlay`, not read back: the caller verifies what it makes of it
    /// (`build` verifies the finished golden image, once).
    WorkOverlay(PathBuf),
    InPlace,
}

/// A dirty hive whose logs were replayed into what is written.
#[derive(Debug, Clone, Serialize)]
pub struct LogsReplayed {
    /// Path of the hive on the volume.
    pub hive: String,
    /// The logs whose entries applied.
    pub logs: Vec<String>,
    pub entries: u32,
    pub first_sequence: Option<u32>,
    pub last_sequence: Option<u32>,
}

/// One source of edits, in command-line order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Profile { name: String, file: String },
    Reg { file: PathBuf },
}

/// `inject --json` output. Field names are part of the CLI contract (README).
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub output: Option<PathBuf>,
    pub in_place: bool,
    pub dry_run: bool,
    pub windows: WindowsSummary,
    pub sources: Vec<Source>,
    pub changes: Vec<Change>,
    pub hives_written: Vec<HiveWritten>,
    /// Dirty hives brought up to date from their transaction logs before the
    /// edits ran on them (what is written holds both).
    pub logs_replayed: Vec<LogsReplayed>,
    pub logs_truncated: Vec<String>,
    pub first_boot_commands: Vec<String>,
    /// virtio drivers injected (`--drivers`): drivers, files, registration.
    pub drivers: Option<drivers::Report>,
    /// The first-boot queue: service, queued scripts, files, copied-in trees.
    pub first_boot: Option<firstboot::Report>,
    /// A clone's identity: its names, machine id or answer file.
    pub identity: Option<identity::Report>,
    pub verified: bool,
    /// True when the image already held every edit and file, so nothing was
    /// written (in place; it was still read back).
    pub nothing_written: bool,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WindowsSummary {
    pub product_name: String,
    pub version: String,
    pub osinfo: String,
    pub arch: String,
    pub family: profiles::Family,
    pub control_sets: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HiveWritten {
    pub hive: HiveName,
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// The edits run on copies of the hives: what will change, and the new hive bytes.
pub struct Plan {
    pub windows: Windows,
    pub report: Report,
    pub results: Vec<reg::HiveResult>,
    /// Edits that leave Windows unbootable were allowed (`--force`): verification
    /// then does not look for Windows again.
    pub forced: bool,
    /// Files and folders to write (drivers, first boot, copy-in).
    pub files: Option<FilePlan>,
    /// The volume passed the safety check when planned: an overlay made on the
    /// same bytes is mounted read-write without checking again.
    checked: Option<crate::ntfs::Checked>,
}

impl Plan {
    /// True when every edit is already in the hives and every file in place.
    fn nothing_to_write(&self) -> bool {
        self.results.iter().all(|r| r.bytes.is_none())
            && self.files.as_ref().is_none_or(|f| {
                f.folders.is_empty()
                    && f.writes
                        .iter()
                        .all(|c| c.action == drivers::FileAction::Unchanged)
            })
    }
}

/// Carries a plan out: into a new overlay backed by the input (written under a
/// temporary name, verified, then moved into place), or into the input itself.
pub fn write(plan: &mut Plan, mode: &Mode) -> anyhow::Result<()> {
    let image_path = plan.report.image.clone();
    let checked = plan.checked.take();
    let (w, results) = (&plan.windows, &plan.results);
    let nothing_to_write = plan.nothing_to_write();
    let (files, check) = (plan.files.as_ref(), !plan.forced);
    // Writes the plan into `img`, opened on `target` (named `shown` in messages),
    // closes it and, when `read_back`, reads every file and value back from
    // `target`. `held`: termination signals held until the image is closed.
    let write_verified = |img: image::Image,
                          target: &Path,
                          shown: &Path,
                          ordering,
                          held: Option<crate::interrupt::Held>,
                          checked: Option<crate::ntfs::Checked>,
                          read_back: bool| {
        let write = || {
            write_hives(
                &img,
                w,
                &shown.display().to_string(),
                results,
                files,
                ordering,
                checked,
            )
        };
        // What libntfs-3g creates carries times: the inputs' time, not the clock's.
        let written = match files {
            Some(f) => crate::ntfs::with_frozen_clock(f.time, write)?,
            None => write()?,
        };
        drop(img);
        drop(held);
        if read_back {
            verify(target, w, results, files, check)?;
        }
        anyhow::Ok(written)
    };
    let r = &mut plan.report;
    match mode {
        Mode::DryRun => return Ok(()),
        Mode::InPlace if nothing_to_write => {
            verify(&image_path, w, results, files, check)?;
            r.in_place = true;
            r.nothing_written = true;
        }
        Mode::InPlace => {
            // From the first write to the close, Ctrl-C waits: a change cut off
            // half-way in the user's own image cannot be undone.
            let held = crate::interrupt::hold();
            // Said once the image is open for writing (it may refuse).
            let img = image::open(&image_path, Access::ReadWrite)?;
            crate::note::say(format!(
                "writing {} in place, as asked",
                image_path.display()
            ));
            // The user's image may have changed since it was planned: its
            // volume is checked again by the read-write open.
            (r.hives_written, r.logs_truncated) = write_verified(
                img,
                &image_path,
                &image_path,
                Ordering::CrashOrdered,
                Some(held),
                None,
                true,
            )?;
            r.in_place = true;
        }
        Mode::Overlay(out) | Mode::WorkOverlay(out) => {
            let read_back = matches!(mode, Mode::Overlay(_));
            // What a killed run left beside this output.
            crate::fsutil::clear_dead_temps(&crate::fsutil::folder_of(out), Some(out));
            if out.exists() {
                return Err(image::Error::Exists { path: out.clone() }.into());
            }
            let tmp = crate::fsutil::temp_name(out);
            let done = (|| {
                image::create_overlay(&tmp, &image_path)?;
                let img = image::open(&tmp, Access::ReadWrite)?;
                let written =
                    write_verified(img, &tmp, out, Ordering::Unseen, None, checked, read_back)?;
                image::publish(&tmp, out)?;
                anyhow::Ok(written)
            })();
            match done {
                Ok((written, logs)) => {
                    r.hives_written = written;
                    r.logs_truncated = logs;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            }
            r.output = Some(out.clone());
        }
    }
    r.dry_run = false;
    // A work overlay is read back by its caller, on what it makes of it.
    r.verified = !matches!(mode, Mode::WorkOverlay(_));
    Ok(())
}

/// How hives reach the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ordering {
    /// Into a new file nobody sees until it is complete (an overlay under a
    /// temporary name): plain writes.
    Unseen,
    /// Into the user's image (`--in-place`): crash-ordered, so that a kill at any
    /// moment leaves each hive as it was, as it should be, or marked dirty.
    CrashOrdered,
}

/// Hives are rewritten a page at a time: only the 4 KiB pages an edit changed
/// are written (Windows' own unit of hive change, and the NTFS cluster size).
const HIVE_PAGE: usize = 4096;

/// Writes the changed hives into the Windows volume of `img`, empties their
/// transaction logs, and returns what it wrote.
///
/// Crash-ordered, for each hive: (1) the new hive is written with its base block
/// marked "write in progress" past every log beside it (sequence numbers above
/// any the logs carry, a timestamp no old-format log shares), so that a kill
/// while the body is written leaves a dirty hive to which no log applies; the
/// image is flushed (qcow2 metadata + fsync); (2) only then is the clean base
/// block written over it, and flushed again; (3) last, its logs are emptied: the
/// hive is clean by then, so Windows ignores them meanwhile, and afterwards they
/// hold nothing it would apply over the new hive. A hive that was dirty was
/// replayed from those same logs into the bytes written (the plan read it so).
/// From its first write to its close the NTFS volume is marked dirty (the NTFS
/// layer's rule), and so is a qcow2 image between flushes, so chkdsk, ntfsfix and
/// QEMU notice a run cut short; Ctrl-C and `kill` wait for the close (the caller
/// holds them, see `crate::interrupt`).
fn write_hives(
    img: &dyn BlockDev,
    w: &Windows,
    label: &str,
    results: &[reg::HiveResult],
    files: Option<&FilePlan>,
    ordering: Ordering,
    checked: Option<crate::ntfs::Checked>,
) -> anyhow::Result<(Vec<HiveWritten>, Vec<String>)> {
    let ordered = ordering == Ordering::CrashOrdered;
    let part = PartitionView::new(img, w.partition_start, w.partition_size)?;
    // Marked dirty from here to close (the NTFS layer's rule); durably so before
    // anything else is written, when the image is the user's.
    let vol = match checked {
        Some(c) if !ordered => Volume::open_checked(&part, label, c)?,
        _ => Volume::open(&part, label, Access::ReadWrite)?,
    };
    if ordered {
        img.flush()?;
    }
    // Files before the registry that names them: a kill in between leaves files
    // nobody loads yet.
    if let Some(f) = files {
        files::write_files(&vol, f)?;
        if ordered {
            img.flush()?;
        }
    }
    let mut written = Vec::new();
    let mut truncated = Vec::new();
    // The written hives' digests, taken on the other core while they are written.
    let digests = std::thread::scope(|s| {
        let hashing = s.spawn(|| {
            results
                .iter()
                .filter_map(|r| r.bytes.as_deref().map(crate::fsutil::sha256_hex))
                .collect::<Vec<_>>()
        });
        let done = write_each_hive(&vol, img, w, results, ordered, &mut truncated);
        let digests = hashing.join().expect("hashing does not panic");
        done.map(|paths| (paths, digests))
    });
    let (paths, digests) = digests?;
    for ((r, path), sha256) in results
        .iter()
        .filter(|r| r.bytes.is_some())
        .zip(paths)
        .zip(digests)
    {
        written.push(HiveWritten {
            hive: r.hive,
            path,
            size: r.bytes.as_ref().map_or(0, |b| b.len() as u64),
            sha256,
        });
    }
    // Everything durable before the volume says clean (close clears the flag).
    if ordered {
        img.flush()?;
    }
    vol.close()?;
    img.flush()?;
    Ok((written, truncated))
}

/// Writes each changed hive (crash-ordered when `ordered`) and empties its logs;
/// returns the hives' paths, in `results` order.
fn write_each_hive(
    vol: &Volume,
    img: &dyn BlockDev,
    w: &Windows,
    results: &[reg::HiveResult],
    ordered: bool,
    truncated: &mut Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    let config = w.hive_path("").trim_end_matches('\\').to_owned();
    let listing = vol.list(&config)?;
    for r in results {
        let Some(bytes) = &r.bytes else { continue };
        let path = w.hive_path(r.hive);
        let logs = listing
            .iter()
            .filter(|e| !e.is_dir && crate::hive::is_log_of(r.hive.name(), &e.name))
            .map(|e| {
                let log_path = format!("{config}\\{}", e.name);
                let bytes = if ordered {
                    vol.read_file(&log_path)?
                } else {
                    Vec::new()
                };
                Ok((log_path, bytes))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let head: Option<&[u8; hive::BASE_BLOCK_LEN]> = bytes
            .get(..hive::BASE_BLOCK_LEN)
            .and_then(|h| h.try_into().ok());
        if let Some(head) = head.filter(|_| ordered) {
            let files: Vec<LogFile> = logs
                .iter()
                .map(|(name, bytes)| LogFile { name, bytes })
                .collect();
            let mut first = bytes.clone();
            first[..hive::BASE_BLOCK_LEN]
                .copy_from_slice(&replay::in_progress_base_block(head, &files));
            // Only the pages that differ, the marked header first.
            vol.write_changed(&path, &vol.read_file(&path)?, &first, HIVE_PAGE)?;
            drop(first);
            img.flush()?;
            vol.write_range(&path, 0, &bytes[..hive::BASE_BLOCK_LEN])?;
            img.flush()?;
        } else {
            vol.write_changed(&path, &vol.read_file(&path)?, bytes, HIVE_PAGE)?;
        }
        // The hive is clean now: its old logs are emptied (an empty log holds
        // nothing to apply; msuhanov/regf, "Format of transaction log files").
        for (log_path, _) in &logs {
            if vol.file_size(log_path)? > 0 {
                vol.write_file(log_path, &[])?;
                truncated.push(log_path.clone());
            }
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Reads every written hive back from the finished image and checks its bytes and
/// every value the edits set.
pub fn verify(
    image: &Path,
    w: &Windows,
    results: &[reg::HiveResult],
    files: Option<&FilePlan>,
    detect: bool,
) -> anyhow::Result<()> {
    let img = image::open(image, Access::ReadOnly)?;
    let part = PartitionView::new(&img, w.partition_start, w.partition_size)?;
    let vol = Volume::open(&part, "verification", Access::ReadOnly)?;
    for f in files.map(|f| f.writes.as_slice()).unwrap_or_default() {
        anyhow::ensure!(
            files::guest_sha256(&vol, &f.to)? == f.sha256,
            "verification failed: {} reads back different bytes",
            f.to
        );
    }
    let mut back = Vec::new();
    for r in results {
        let Some(bytes) = &r.bytes else { continue };
        let read = vol.read_file(&w.hive_path(r.hive))?;
        anyhow::ensure!(
            &read == bytes,
            "verification failed: hive {} reads back different bytes",
            r.hive
        );
        reg::verify(r, &read)?;
        back.push((r.hive, read));
    }
    if !detect {
        return Ok(());
    }
    // And Windows is still found where it was, with the same control sets: on
    // the same mount, from the hives just read back.
    let known = |name: HiveName| {
        back.iter()
            .find(|(h, _)| *h == name)
            .map(|(_, b)| b.as_slice())
    };
    let again = guest::detect_again(
        &vol,
        w,
        guest::Known {
            system: known(HiveName::System),
            software: known(HiveName::Software),
        },
    )
    .context("verification failed: Windows is no longer found on the result")?;
    anyhow::ensure!(
        again.control_sets.current == w.control_sets.current,
        "verification failed: the current control set moved from {} to {}",
        w.control_sets.current,
        again.control_sets.current
    );
    Ok(())
}
