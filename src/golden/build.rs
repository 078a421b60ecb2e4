//! `wingold build`: fetch (verified) → inject into an overlay of the base →
//! finalize into a standalone qcow2 → verify → manifest; and nothing at all when no
//! input changed, so a timer can run it hourly.
//!
//! Crash safety: the golden image is written under a temporary name, fsynced, and
//! renamed over the previous one; the manifest follows. Killed at any moment, the
//! output path holds the previous complete image or nothing; the next run clears
//! the leftovers (under a lock, so two builds never clear each other's files).

pub use super::config::load;
use super::config::{first_boot_inputs, Loaded};
use super::finalize;
use super::inject::{self, Mode, SourceSpec};
use super::manifest::{manifest_path, read_manifest};
use super::manifest::{
    BaseRecord, ConfigRecord, EditRecord, Identity, Manifest, OutputRecord, Timings, VirtioRecord,
};
use super::versions::Layout;
use crate::error::unreadable;
use crate::fsutil::{self, FileKey, Place};
use crate::golden::Refusal;
use crate::image::{self, Access};
use crate::virtio::{self, fetch};
use anyhow::Context;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `build` did.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub up_to_date: bool,
    /// The stable name (a symlink to `version`).
    pub output: PathBuf,
    /// The versioned file this build made or found.
    pub version: PathBuf,
    pub manifest: PathBuf,
    pub sha256: String,
    pub changes: usize,
    pub virtio_win_version: String,
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    Ok(fsutil::sha256_file(path).map_err(unreadable(path))?)
}

fn stamp(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    (
        meta.len(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        meta.ino(),
    )
}

/// A file's SHA-256 being computed on another core.
type Hashing = std::thread::JoinHandle<anyhow::Result<String>>;

fn join_hash(h: Hashing) -> anyhow::Result<String> {
    h.join()
        .map_err(|_| anyhow::anyhow!("the thread hashing the base image panicked"))?
}

/// The base's record; its SHA-256 is the last build's when size, mtime and inode
/// still match (the second value says whether they do), else unknown for now.
fn base_record(path: &Path, previous: Option<&BaseRecord>) -> anyhow::Result<(BaseRecord, bool)> {
    let meta = std::fs::metadata(path).map_err(|e| image::Error::open(path, e))?;
    let (size, mtime_ns, inode) = stamp(&meta);
    let same = previous
        .filter(|p| p.path == path && p.size == size && p.mtime_ns == mtime_ns && p.inode == inode);
    Ok((
        BaseRecord {
            path: path.to_owned(),
            size,
            mtime_ns,
            inode,
            sha256: same.and_then(|p| p.sha256.clone()),
        },
        same.is_some(),
    ))
}

/// A bar on stderr for a step over `len` bytes when `shown` (a terminal and no
/// `--json`); hidden otherwise, so that steps report to it either way.
fn bar(shown: bool, len: u64, what: &'static str) -> indicatif::ProgressBar {
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

fn hash_in_background(path: &Path) -> Hashing {
    let path = path.to_owned();
    std::thread::spawn(move || sha256_file(&path))
}

/// Removes what an interrupted build left beside the output: temporary images,
/// work overlays and symlinks named `.NAME.wingold-tmp.PID` / `.wingold-work.PID`.
/// Runs under the output's lock, so no live build's files are touched.
fn clear_leftovers(out: &Path) {
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

/// Refuses, before anything is written, an output that is one of the build's
/// inputs under any spelling: the base image or a file of its backing chain, the
/// config, a regfile, the local virtio-win ISO.
fn refuse_aliases(cfg: &Loaded) -> anyhow::Result<()> {
    let c = &cfg.config;
    let mut inputs: Vec<(&str, PathBuf)> = vec![("the config", cfg.path.clone())];
    inputs.push(("the base image", c.base.image.clone()));
    // The chain from the headers alone: no locks, no table walk of a large base.
    for layer in image::backing_files(&c.base.image) {
        inputs.push(("a backing file of the base image", layer));
    }
    for r in &c.golden.regfiles {
        inputs.push(("a regfile", r.clone()));
    }
    if let Some(iso) = &c.virtio_win.iso {
        inputs.push(("the virtio-win ISO", iso.clone()));
    }
    for s in &c.firstboot.scripts {
        inputs.push(("a first-boot script", s.clone()));
    }
    for f in &c.files {
        inputs.push(("a copied-in file", f.from.clone()));
    }
    refuse_output_among(&c.golden.output, &inputs)?;
    // The output's folder (its versions, lock and temporary files go there)
    // inside a copied-in tree: the next build would copy the golden into the guest.
    let out_dir = c.golden.output.parent().and_then(|d| {
        std::fs::canonicalize(if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        })
        .ok()
    });
    for f in &c.files {
        let tree = std::fs::canonicalize(&f.from).ok().filter(|t| t.is_dir());
        if let (Some(out), Some(tree)) = (&out_dir, tree) {
            if out.starts_with(&tree) {
                return Err(Refusal::OutputInTree {
                    output: c.golden.output.clone(),
                    tree: f.from.clone(),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// One line naming both when `output` is one of `inputs`.
pub fn refuse_output_among(
    output: &Path,
    inputs: &[(&'static str, PathBuf)],
) -> anyhow::Result<()> {
    let out = FileKey::of(output);
    for (what, path) in inputs {
        if FileKey::of(path).same(&out) {
            return Err(Refusal::OutputIsInput {
                output: output.to_owned(),
                what,
                input: path.to_owned(),
            }
            .into());
        }
    }
    Ok(())
}

/// The fetch options a config asks for.
fn fetch_options(cfg: &Loaded, progress: bool) -> fetch::Options {
    let v = &cfg.config.virtio_win;
    let source = match (&v.channel, &v.version, &v.url, &v.iso) {
        (_, _, _, Some(iso)) => fetch::Source::Url(format!("file://{}", iso.display())),
        (_, _, Some(u), _) => fetch::Source::Url(u.clone()),
        (_, Some(ver), _, _) => fetch::Source::Version(ver.clone()),
        (Some(ch), ..) if ch == "latest" => fetch::Source::Latest,
        _ => fetch::Source::Stable,
    };
    let mut opts = fetch::Options::new(source, cfg.dir.join("wingold.lock"));
    opts.sha256 = v.sha256.clone();
    if let Some(cache) = &v.cache {
        opts.cache = cache.clone();
    }
    opts.progress = progress;
    opts
}

/// Moves the finished, verified image `tmp` (whose sha256 is `sha256`) to its
/// versioned name. A version with those bytes that is already there is kept as it
/// is (it is never rewritten) and `tmp` is dropped.
fn place_version(layout: &Layout, tmp: &Path, sha256: &str) -> anyhow::Result<PathBuf> {
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

/// The steps of a build, in order, as the crash-safety test names them.
pub const PHASES: &[&str] = &[
    "locked",
    "fetched",
    "injected",
    "finalized",
    "verified",
    "placed",
    "manifest",
    "linked",
];

/// Test hook (feature `test-hooks` only): with `WINGOLD_TEST_KILL_AT=PHASE` the
/// build kills itself (SIGKILL) on reaching that phase, so that the
/// crash-safety test lands a kill in every phase on purpose instead of by timing.
fn phase(name: &str) {
    debug_assert!(PHASES.contains(&name));
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("WINGOLD_TEST_KILL_AT").is_some_and(|p| p == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs the whole chain; `force` rebuilds even when nothing changed.
pub fn build(cfg: &Loaded, force: bool, progress: bool) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let c = &cfg.config;
    let out = &c.golden.output;
    let layout = Layout::new(out)?;
    // Nothing is written before the inputs are known not to be the output.
    refuse_aliases(cfg)?;
    let out_dir = layout.dir().to_owned();
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    // One build per output at a time.
    let lock_path = out_dir.join(format!(".{name}.wingold-lock"));
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{}: cannot open", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
        .with_context(|| format!("{}: cannot lock", lock_path.display()))?;
    let current = layout.current()?;
    clear_leftovers(out);
    fsutil::clear_dead_temps(&out_dir, None);
    phase("locked");

    // 1. virtio-win, verified (a conditional request when it is cached).
    let iso = virtio::fetch(&fetch_options(cfg, progress))?;
    refuse_output_among(out, &[("the cached virtio-win ISO", iso.path.clone())])?;
    let t_fetch = t0.elapsed();
    phase("fetched");

    // 2. Has anything changed?
    let previous = current.as_deref().and_then(read_manifest);
    let (mut base, base_stamp_same) =
        base_record(&c.base.image, previous.as_ref().map(|m| &m.base))?;
    let mut regfiles = Vec::new();
    for r in &c.golden.regfiles {
        let bytes = crate::input::read(r, crate::input::REG)?;
        regfiles.push((r.display().to_string(), crate::fsutil::sha256_hex(&bytes)));
    }
    let mut identity = Identity {
        wingold_version: env!("CARGO_PKG_VERSION").into(),
        base_sha256: base.sha256.clone(),
        virtio_win_version: iso.version.clone(),
        virtio_win_sha256: iso.sha256.clone(),
        config_sha256: crate::fsutil::sha256_hex(&cfg.bytes),
        settings_sha256: c.settings_sha256(),
        regfiles,
        first_boot_inputs: first_boot_inputs(c)?,
    };
    let others_same = previous.as_ref().is_some_and(|m| {
        m.identity
            == Identity {
                base_sha256: m.identity.base_sha256.clone(),
                ..identity.clone()
            }
    });
    // Only the base's stamp moved (copied, touched): its hash decides, when the
    // last build recorded one.
    let mut base_same = base_stamp_same;
    if !base_stamp_same && others_same && !force {
        if let Some(was) = previous.as_ref().and_then(|m| m.base.sha256.clone()) {
            let b = bar(progress, base.size, "hashing");
            let now = fsutil::sha256_file_with(&c.base.image, &|n| b.set_position(n))
                .map_err(unreadable(&c.base.image))?;
            b.finish_and_clear();
            base_same = now == was;
            base.sha256 = Some(now);
            identity.base_sha256 = base.sha256.clone();
        }
    }
    if let (Some(m), Some(cur), true) = (
        previous.as_ref().filter(|_| others_same && !force),
        &current,
        base_same,
    ) {
        let now = std::fs::metadata(cur).ok().map(|meta| stamp(&meta));
        if now == Some((m.output.size, m.output.mtime_ns, m.output.inode)) {
            return Ok(Outcome {
                up_to_date: true,
                output: out.clone(),
                version: cur.clone(),
                manifest: manifest_path(cur),
                sha256: m.output.sha256.clone(),
                changes: 0,
                virtio_win_version: iso.version,
            });
        }
    }

    // A rebuild hashes the base on the second core only when asked to record it.
    let mut hashing =
        (c.base.hash && base.sha256.is_none()).then(|| hash_in_background(&c.base.image));

    // 3. Inject into an overlay of the base.
    let specs: Vec<SourceSpec> = c
        .golden
        .profiles
        .iter()
        .cloned()
        .map(SourceSpec::Profile)
        .chain(c.golden.regfiles.iter().cloned().map(SourceSpec::Reg))
        .collect();
    let work = out_dir.join(format!(".{name}.wingold-work.{}", std::process::id()));
    let tmp = fsutil::temp_name(out);
    let driver_request = c.drivers.inject.then(|| crate::drivers::Request {
        iso: iso.path.clone(),
        boot: c.drivers.boot.unwrap_or_default(),
        extra: c.drivers.extra.clone(),
    });
    let first_boot_request = c.firstboot.enable.then(|| crate::firstboot::Request {
        steps: Vec::new(),
        scripts: c.firstboot.scripts.clone(),
        copy_in: c
            .files
            .iter()
            .map(|f| (f.from.clone(), f.to.clone()))
            .collect(),
        service_binary: c.firstboot.service_binary.clone(),
        nic_watchdog: c
            .firstboot
            .nic_watchdog
            .then(|| crate::firstboot::Watchdog {
                target: c.firstboot.watchdog_target.clone(),
                failures: c.firstboot.watchdog_failures.unwrap_or(3),
            }),
        guest_agent_iso: c.firstboot.guest_agent.then(|| iso.path.clone()),
    });
    let mut plan = inject::plan(
        &c.base.image,
        &specs,
        c.base.partition,
        false,
        driver_request.as_ref(),
        first_boot_request.as_ref(),
        None,
    )?;
    let result = (|| -> anyhow::Result<Outcome> {
        inject::write(&mut plan, &Mode::WorkOverlay(work.clone()))?;
        let t_inject = t0.elapsed();
        phase("injected");

        // 4. Finalize into a temporary name, verify, fsync, move to its version.
        let stats = {
            let src = image::open(&work, Access::ReadOnly)?;
            let b = bar(progress, image::BlockDev::len(&src), "finalizing");
            let stats =
                finalize::write_qcow2(&src, &tmp, c.golden.compress, &|n| b.set_position(n))?;
            b.finish_and_clear();
            stats
        };
        let t_finalize = t0.elapsed();
        phase("finalized");
        // A plain image was hashed as it was written; a compressed one is hashed on
        // one core while the other reads back what was written.
        let hashing_output = match &stats.sha256 {
            Some(_) => None,
            None => Some(hash_in_background(&tmp)),
        };
        let verified = inject::verify(
            &tmp,
            &plan.windows,
            &plan.results,
            plan.files.as_ref(),
            true,
        )
        .context("verifying the golden image");
        let sha256 = match hashing_output {
            Some(h) => join_hash(h)?,
            None => stats.sha256.clone().unwrap_or_default(),
        };
        verified?;
        let t_verify = t0.elapsed();
        phase("verified");
        let version = place_version(&layout, &tmp, &sha256)?;
        phase("placed");
        let (size, mtime_ns, inode) = stamp(&std::fs::metadata(&version)?);

        // 5. The manifest beside the version, then the stable name moves to it.
        if let Some(h) = hashing.take() {
            base.sha256 = Some(join_hash(h)?);
            identity.base_sha256 = base.sha256.clone();
        }
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let manifest = Manifest {
            wingold_version: env!("CARGO_PKG_VERSION").into(),
            identity: identity.clone(),
            base: base.clone(),
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
                sha256: identity.config_sha256.clone(),
                profiles: c.golden.profiles.clone(),
                regfiles: identity.regfiles.clone(),
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
                path: version.clone(),
                stable: Some(out.clone()),
                sha256: sha256.clone(),
                size,
                mtime_ns,
                inode,
                virtual_size: stats.virtual_size,
                compressed: c.golden.compress,
            },
            timings_ms: Timings {
                fetch: ms(t_fetch),
                inject: ms(t_inject - t_fetch),
                finalize: ms(t_finalize - t_inject),
                verify: ms(t_verify - t_finalize),
                total: ms(t0.elapsed()),
            },
        };
        let manifest_file = manifest_path(&version);
        fsutil::write_file(
            &manifest_file,
            &serde_json::to_vec_pretty(&manifest)?,
            0o644,
            Place::Replace,
        )
        .with_context(|| format!("{}: cannot write", manifest_file.display()))?;
        phase("manifest");
        layout.point_to(&version).with_context(|| {
            format!(
                "{}: cannot point it at {}",
                out.display(),
                version.display()
            )
        })?;
        phase("linked");
        Ok(Outcome {
            up_to_date: false,
            output: out.clone(),
            manifest: manifest_file,
            version,
            sha256,
            changes: plan.report.changes.len(),
            virtio_win_version: iso.version.clone(),
        })
    })();
    let _ = std::fs::remove_file(&work);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use crate::golden::versions::Layout;
    use std::path::Path;

    #[test]
    fn versions_are_named_by_the_first_12_hex_of_their_sha256() {
        let l = Layout::new(Path::new("/g/win2k22.qcow2")).unwrap();
        assert_eq!(
            l.version_path("0123456789abcdef0123"),
            Path::new("/g/win2k22-0123456789ab.qcow2")
        );
        let bare = Layout::new(Path::new("img")).unwrap();
        assert_eq!(
            bare.version_path("ffffffffffffff"),
            Path::new("./img-ffffffffffff")
        );
    }
}
