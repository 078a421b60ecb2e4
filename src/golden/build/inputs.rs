//! A build's inputs: refused when one of them is the output, the fetch options,
//! what identifies the build (and so whether the last one still stands), and the
//! requests handed to inject.

use super::output::{self, stamp, Hashing};
use crate::error::unreadable;
use crate::fsutil::{self, FileKey};
use crate::golden::config::{first_boot_inputs, Config, Loaded};
use crate::golden::inject::SourceSpec;
use crate::golden::manifest::{BaseRecord, Identity, Manifest};
use crate::golden::Refusal;
use crate::image;
use crate::virtio::fetch;
use std::path::{Path, PathBuf};

/// What identifies a build, read before anything is written.
pub(super) struct Inputs {
    pub base: BaseRecord,
    pub identity: Identity,
    /// Everything but the base is as the last build had it.
    others_same: bool,
    /// The base is as the last build had it (by its stamp, or by its hash).
    base_same: bool,
    /// The base's SHA-256 being computed on the second core, when asked to
    /// record it.
    pub hashing: Option<Hashing>,
}

/// The last build, still standing.
pub(super) struct Standing {
    pub version: PathBuf,
    pub sha256: String,
}

impl Inputs {
    /// The base's record and the build's identity. When only the base's stamp
    /// moved (copied, touched), its hash decides, if the last build recorded one.
    pub fn read(
        cfg: &Loaded,
        iso: &fetch::Fetched,
        previous: Option<&Manifest>,
        force: bool,
        progress: bool,
    ) -> anyhow::Result<Inputs> {
        let c = &cfg.config;
        let (mut base, base_stamp_same) = base_record(&c.base.image, previous.map(|m| &m.base))?;
        let mut regfiles = Vec::new();
        for r in &c.golden.regfiles {
            let bytes = crate::input::read(r, crate::input::REG)?;
            regfiles.push((r.display().to_string(), fsutil::sha256_hex(&bytes)));
        }
        let mut identity = Identity {
            wingold_version: env!("CARGO_PKG_VERSION").into(),
            base_sha256: base.sha256.clone(),
            virtio_win_version: iso.version.clone(),
            virtio_win_sha256: iso.sha256.clone(),
            config_sha256: fsutil::sha256_hex(&cfg.bytes),
            settings_sha256: c.settings_sha256(),
            regfiles,
            first_boot_inputs: first_boot_inputs(c)?,
        };
        let others_same = previous.is_some_and(|m| {
            m.identity
                == Identity {
                    base_sha256: m.identity.base_sha256.clone(),
                    ..identity.clone()
                }
        });
        let mut base_same = base_stamp_same;
        if !base_stamp_same && others_same && !force {
            if let Some(was) = previous.and_then(|m| m.base.sha256.clone()) {
                let b = output::bar(progress, base.size, "hashing");
                let now = fsutil::sha256_file_with(&c.base.image, &|n| b.set_position(n))
                    .map_err(unreadable(&c.base.image))?;
                b.finish_and_clear();
                base_same = now == was;
                base.sha256 = Some(now);
                identity.base_sha256 = base.sha256.clone();
            }
        }
        Ok(Inputs {
            base,
            identity,
            others_same,
            base_same,
            hashing: None,
        })
    }

    /// The last build, when nothing changed and its version is the file it
    /// recorded (size, mtime and inode).
    pub fn up_to_date(
        &self,
        previous: Option<&Manifest>,
        current: Option<&Path>,
        force: bool,
    ) -> Option<Standing> {
        let m = previous.filter(|_| self.others_same && self.base_same && !force)?;
        let cur = current?;
        let now = std::fs::metadata(cur).ok().map(|meta| stamp(&meta));
        (now == Some((m.output.size, m.output.mtime_ns, m.output.inode))).then(|| Standing {
            version: cur.to_owned(),
            sha256: m.output.sha256.clone(),
        })
    }
}

/// The profiles, then the regfiles, in the config's order.
pub(super) fn specs(c: &Config) -> Vec<SourceSpec> {
    c.golden
        .profiles
        .iter()
        .cloned()
        .map(SourceSpec::Profile)
        .chain(c.golden.regfiles.iter().cloned().map(SourceSpec::Reg))
        .collect()
}

/// The driver and first-boot requests the config makes, with the fetched ISO.
pub(super) fn requests(
    c: &Config,
    iso: &fetch::Fetched,
) -> (
    Option<crate::drivers::Request>,
    Option<crate::firstboot::Request>,
) {
    let drivers = c.drivers.inject.then(|| crate::drivers::Request {
        iso: iso.path.clone(),
        boot: c.drivers.boot.unwrap_or_default(),
        extra: c.drivers.extra.clone(),
    });
    let first_boot = c.firstboot.enable.then(|| crate::firstboot::Request {
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
    (drivers, first_boot)
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

/// Refuses, before anything is written, an output that is one of the build's
/// inputs under any spelling: the base image or a file of its backing chain, the
/// config, a regfile, the local virtio-win ISO.
pub(super) fn refuse_aliases(cfg: &Loaded) -> anyhow::Result<()> {
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
    let out_dir = std::fs::canonicalize(crate::fsutil::folder_of(&c.golden.output)).ok();
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
pub(super) fn fetch_options(cfg: &Loaded, progress: bool) -> fetch::Options {
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
