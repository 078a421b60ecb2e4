//! `wingold build`: fetch (verified) → inject into an overlay of the base →
//! finalize into a standalone qcow2 → verify → manifest; and nothing at all when no
//! input changed, so a timer can run it hourly.
//!
//! Crash safety: the golden image is written under a temporary name, fsynced, and
//! renamed over the previous one; the manifest follows. Killed at any moment, the
//! output path holds the previous complete image or nothing; the next run clears
//! the leftovers (under a lock, so two builds never clear each other's files).

mod inputs;
mod output;

pub use super::config::load;
pub use inputs::refuse_output_among;

pub use super::config::Loaded;
use super::finalize;
use super::inject::{self, Mode};
use super::manifest::{manifest_path, read_manifest, Timings};
use super::versions::Layout;
use crate::fsutil::{self, Place};
use crate::image::{self, Access};
use crate::virtio::{self, fetch};
use anyhow::Context;
use inputs::{refuse_aliases, Inputs};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `build` did (handed from the worker to the parent as JSON).
#[derive(Debug, Serialize, serde::Deserialize)]
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

/// A build locked and fetched: what is left reads and writes guest bytes, and
/// needs no network (the CLI runs it in a confined worker).
pub struct Started<'a> {
    cfg: &'a Loaded,
    force: bool,
    progress: bool,
    layout: Layout,
    _lock: nix::fcntl::Flock<std::fs::File>,
    iso: fetch::Fetched,
    t0: Instant,
    t_fetch: std::time::Duration,
}

/// The steps that need the network or the output's lock: the output folder
/// locked and cleared of leftovers, virtio-win fetched (verified; a
/// conditional request when it is cached). `Started::rest` does the others;
/// `force` rebuilds even when nothing changed.
pub fn start(cfg: &Loaded, force: bool, progress: bool) -> anyhow::Result<Started<'_>> {
    let t0 = Instant::now();
    let c = &cfg.config;
    let out = &c.golden.output;
    let layout = Layout::new(out)?;
    // Nothing is written before the inputs are known not to be the output.
    refuse_aliases(cfg)?;
    let lock = output::lock(&layout)?;
    output::clear_leftovers(out);
    fsutil::clear_dead_temps(layout.dir(), None);
    phase("locked");

    // 1. virtio-win, verified (a conditional request when it is cached).
    let iso = virtio::fetch(&inputs::fetch_options(cfg, progress))?;
    refuse_output_among(out, &[("the cached virtio-win ISO", iso.path.clone())])?;
    let t_fetch = t0.elapsed();
    phase("fetched");
    Ok(Started {
        cfg,
        force,
        progress,
        layout,
        _lock: lock,
        iso,
        t0,
        t_fetch,
    })
}

impl Started<'_> {
    /// What the rest of the build reads: the base and the files it rests on,
    /// the fetched ISO, the .reg files, first-boot scripts and service binary,
    /// the trees copied in.
    pub fn reads(&self) -> Vec<PathBuf> {
        let c = &self.cfg.config;
        let mut read: Vec<PathBuf> = std::iter::once(c.base.image.clone())
            .chain(image::backing_files(&c.base.image))
            .collect();
        read.push(self.iso.path.clone());
        read.extend(c.golden.regfiles.iter().cloned());
        read.extend(c.firstboot.scripts.iter().cloned());
        read.push(
            c.firstboot
                .service_binary
                .clone()
                .unwrap_or_else(|| PathBuf::from(crate::firstboot::RHSRVANY)),
        );
        read.extend(c.files.iter().map(|f| f.from.clone()));
        read
    }

    /// Where the rest of the build writes: the output's folder (work overlay,
    /// temporary image, versions, manifests, the stable name).
    pub fn writes(&self) -> Vec<PathBuf> {
        vec![self.layout.dir().to_owned()]
    }

    /// Clears what a build that died past `start` left in the output folder
    /// (under the lock, still held).
    pub fn clear_leftovers(&self) {
        output::clear_leftovers(&self.cfg.config.golden.output);
    }

    /// Steps 2 to 5: nothing when no input changed; else inject, finalize,
    /// verify, place, manifest, link.
    pub fn rest(&self) -> anyhow::Result<Outcome> {
        let (cfg, force, progress) = (self.cfg, self.force, self.progress);
        let c = &cfg.config;
        let out = &c.golden.output;
        let (layout, iso) = (&self.layout, &self.iso);

        // 2. Has anything changed?
        let current = layout.current()?;
        let previous = current.as_deref().and_then(read_manifest);
        let mut inputs = Inputs::read(cfg, iso, previous.as_ref(), force, progress)?;
        if let Some(done) = inputs.up_to_date(previous.as_ref(), current.as_deref(), force) {
            return Ok(Outcome {
                up_to_date: true,
                output: out.clone(),
                manifest: manifest_path(&done.version),
                version: done.version,
                sha256: done.sha256,
                changes: 0,
                virtio_win_version: iso.version.clone(),
            });
        }
        // A rebuild hashes the base on the second core only when asked to record it.
        inputs.hashing = (c.base.hash && inputs.base.sha256.is_none())
            .then(|| output::hash_in_background(&c.base.image));

        // 3. Inject into an overlay of the base.
        let (drivers, first_boot) = inputs::requests(c, iso);
        let mut plan = inject::plan(
            &c.base.image,
            &inputs::specs(c),
            c.base.partition,
            false,
            drivers.as_ref(),
            first_boot.as_ref(),
            None,
        )?;
        let name = out.file_name().unwrap_or_default().to_string_lossy();
        let work = layout
            .dir()
            .join(format!(".{name}.wingold-work.{}", std::process::id()));
        let tmp = fsutil::temp_name(out);
        let result = self.finish(&mut plan, inputs, &work, &tmp);
        let _ = std::fs::remove_file(&work);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Writes the plan into the work overlay, finalizes it into `tmp`, verifies
    /// it, moves it to its version, writes the manifest, and points the stable
    /// name at it.
    fn finish(
        &self,
        plan: &mut inject::Plan,
        mut inputs: Inputs,
        work: &Path,
        tmp: &Path,
    ) -> anyhow::Result<Outcome> {
        let c = &self.cfg.config;
        let out = &c.golden.output;
        inject::write(plan, &Mode::WorkOverlay(work.to_owned()))?;
        let t_inject = self.t0.elapsed();
        phase("injected");

        // 4. Finalize into a temporary name, verify, fsync, move to its version.
        let stats = {
            let src = image::open(work, Access::ReadOnly)?;
            let b = output::bar(self.progress, image::BlockDev::len(&src), "finalizing");
            let stats =
                finalize::write_qcow2(&src, tmp, c.golden.compress, &|n| b.set_position(n))?;
            b.finish_and_clear();
            stats
        };
        let t_finalize = self.t0.elapsed();
        phase("finalized");
        // A plain image was hashed as it was written; a compressed one is hashed on
        // one core while the other reads back what was written.
        let hashing_output = match &stats.sha256 {
            Some(_) => None,
            None => Some(output::hash_in_background(tmp)),
        };
        let verified = inject::verify(tmp, &plan.windows, &plan.results, plan.files.as_ref(), true)
            .context("verifying the golden image");
        let sha256 = match hashing_output {
            Some(h) => output::join_hash(h)?,
            None => stats.sha256.clone().unwrap_or_default(),
        };
        verified?;
        let t_verify = self.t0.elapsed();
        phase("verified");
        let version = output::place_version(&self.layout, tmp, &sha256)?;
        phase("placed");

        // 5. The manifest beside the version, then the stable name moves to it.
        if let Some(h) = inputs.hashing.take() {
            inputs.base.sha256 = Some(output::join_hash(h)?);
            inputs.identity.base_sha256 = inputs.base.sha256.clone();
        }
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let timings = Timings {
            fetch: ms(self.t_fetch),
            inject: ms(t_inject - self.t_fetch),
            finalize: ms(t_finalize - t_inject),
            verify: ms(t_verify - t_finalize),
            total: ms(self.t0.elapsed()),
        };
        let written = output::Written {
            version: &version,
            sha256: &sha256,
            stats: &stats,
            timings,
        };
        let manifest = output::manifest(self.cfg, &self.iso, &inputs, plan, written)?;
        let manifest_file = manifest_path(&version);
        fsutil::write_file(
            &manifest_file,
            &serde_json::to_vec_pretty(&manifest)?,
            0o644,
            Place::Replace,
        )
        .with_context(|| format!("{}: cannot write", manifest_file.display()))?;
        phase("manifest");
        self.layout.point_to(&version).with_context(|| {
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
            virtio_win_version: self.iso.version.clone(),
        })
    }
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
