//! `wingold build`: fetch (verified) → inject into an overlay of the base →
//! finalize into a standalone qcow2 → verify → manifest; and nothing at all when no
//! input changed, so a timer can run it hourly.
//!
//! Crash safety: the golden image is written under a temporary name, fsynced, and
//! renamed over the previous one; the manifest follows. Killed at any moment, the
//! output path holds the previous complete image or nothing; the next run clears
//! the leftovers (under a lock, so two builds never clear each other's files).

use super::finalize;
use super::inject::{self, Mode, SourceSpec};
use super::versions::{self, Layout};
use crate::fsutil::{self, FileKey, Place};
use crate::image::{self, Access};
use crate::virtio::{self, fetch};
use crate::BadInput;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `wingold.toml` (assets/wingold.example.toml documents it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub virtio_win: VirtioConfig,
    pub base: BaseConfig,
    pub golden: GoldenConfig,
    #[serde(default)]
    pub drivers: DriversConfig,
    #[serde(default)]
    pub firstboot: FirstbootConfig,
    /// `[[files]]`: local trees copied into the guest.
    #[serde(default)]
    pub files: Vec<FilesConfig>,
    /// `[publish]`: registries the golden image goes to after each build (the
    /// `cli` layer does it, with `publish`).
    #[serde(default)]
    pub publish: PublishConfig,
}

/// `[publish]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishConfig {
    /// `docker://HOST[:PORT]/REPO[:TAG]`, one or more.
    #[serde(default)]
    pub to: Vec<String>,
    /// More tags for each.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Plain HTTP for these registries (loopback or a trusted network only).
    #[serde(default)]
    pub insecure: bool,
    /// A CA certificate (PEM) to trust, relative to the config file.
    pub ca_cert: Option<PathBuf>,
}

/// `[firstboot]`: what runs once at the first boot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstbootConfig {
    /// The queue and its service (default true): the built-in steps run.
    #[serde(default = "yes")]
    pub enable: bool,
    /// The user's scripts (.cmd, .bat, .ps1), after the built-in steps.
    #[serde(default)]
    pub scripts: Vec<PathBuf>,
    /// The service binary (default: Debian's /usr/share/virt-tools/rhsrvany.exe).
    pub service_binary: Option<PathBuf>,
    /// The NIC watchdog (opt-in, NT 6.0+).
    #[serde(default)]
    pub nic_watchdog: bool,
    /// The address it pings (default: the default gateway).
    pub watchdog_target: Option<String>,
    /// Failures in a row before it resets the NIC (default 3).
    pub watchdog_failures: Option<u32>,
}

impl Default for FirstbootConfig {
    fn default() -> Self {
        FirstbootConfig {
            enable: true,
            scripts: Vec::new(),
            service_binary: None,
            nic_watchdog: false,
            watchdog_target: None,
            watchdog_failures: None,
        }
    }
}

/// One `[[files]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// A local file or folder (relative to the config file).
    pub from: PathBuf,
    /// Where it lands in the guest (`C:\Tools`).
    pub to: String,
}

/// `[drivers]`: virtio drivers put into the image offline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriversConfig {
    /// Inject the ISO's drivers (default true).
    #[serde(default = "yes")]
    pub inject: bool,
    /// The boot driver: `viostor` (virtio-blk, default) or `vioscsi`.
    #[serde(default)]
    pub boot: Option<String>,
    /// More driver folders by name.
    #[serde(default)]
    pub extra: Vec<String>,
}

impl Default for DriversConfig {
    fn default() -> Self {
        DriversConfig {
            inject: true,
            boot: None,
            extra: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtioConfig {
    /// `stable` or `latest`.
    pub channel: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
    /// A local ISO file (relative to the config file).
    pub iso: Option<PathBuf>,
    pub sha256: Option<String>,
    pub cache: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseConfig {
    pub image: PathBuf,
    /// Record the base's SHA-256 in every manifest (one more read and hash of the
    /// whole base per rebuild). Without it the base is known by path, size, mtime
    /// and inode, and hashed only when that alone changed.
    #[serde(default)]
    pub hash: bool,
    /// The partition holding Windows (Linux numbering), as `inject --partition`;
    /// found by looking when omitted.
    pub partition: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenConfig {
    pub output: PathBuf,
    #[serde(default = "all_profiles")]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub regfiles: Vec<PathBuf>,
    #[serde(default)]
    pub compress: bool,
}

fn all_profiles() -> Vec<String> {
    vec!["all".into()]
}

/// A loaded config, its paths resolved against its folder.
pub struct Loaded {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub bytes: Vec<u8>,
    pub config: Config,
}

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| BadInput(format!("{}: not UTF-8 text", path.display())))?;
    let mut config: Config = toml::from_str(&text).map_err(|e| {
        let (line, col) = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                (
                    before.matches('\n').count() + 1,
                    before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1,
                )
            })
            .unwrap_or((1, 1));
        BadInput(format!("{}:{line}:{col}: {}", path.display(), e.message()))
    })?;
    let dir = std::path::absolute(path)?
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    resolve(&mut config.base.image);
    resolve(&mut config.golden.output);
    config.golden.regfiles.iter_mut().for_each(resolve);
    config.firstboot.scripts.iter_mut().for_each(resolve);
    if let Some(b) = config.firstboot.service_binary.as_mut() {
        resolve(b);
    }
    for f in &mut config.files {
        resolve(&mut f.from);
    }
    if let Some(c) = config.publish.ca_cert.as_mut() {
        resolve(c);
    }
    if let Some(iso) = config.virtio_win.iso.as_mut() {
        resolve(iso);
    }
    if let Some(c) = config.virtio_win.cache.as_mut() {
        resolve(c);
    }
    let v = &config.virtio_win;
    let given = [
        v.channel.is_some(),
        v.version.is_some(),
        v.url.is_some(),
        v.iso.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(BadInput(format!(
            "{}: [virtio_win] takes one of channel, version, url or iso",
            path.display()
        ))
        .into());
    }
    if let Some(ch) = v
        .channel
        .as_deref()
        .filter(|c| !["stable", "latest"].contains(c))
    {
        return Err(BadInput(format!(
            "{}: [virtio_win] channel must be stable or latest, not {ch:?}",
            path.display()
        ))
        .into());
    }
    if let Some(b) = config
        .drivers
        .boot
        .as_deref()
        .filter(|b| crate::drivers::Boot::parse(b).is_none())
    {
        return Err(BadInput(format!(
            "{}: [drivers] boot must be viostor or vioscsi, not {b:?}",
            path.display()
        ))
        .into());
    }
    versions::Layout::new(&config.golden.output)
        .map_err(|e| BadInput(format!("{}: [golden] output: {}", path.display(), e.0)))?;
    Ok(Loaded {
        path: path.to_owned(),
        dir,
        bytes,
        config,
    })
}

/// What a golden image was built from. When it is unchanged, nothing is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub wingold_version: String,
    /// None when the base was not hashed (see `[base] hash`).
    pub base_sha256: Option<String>,
    pub virtio_win_version: String,
    pub virtio_win_sha256: String,
    pub config_sha256: String,
    pub regfiles: Vec<(String, String)>,
    /// The first boot's inputs: each script and the service binary by SHA-256,
    /// each copied-in tree by a digest of its files' paths, sizes and mtimes.
    #[serde(default)]
    pub first_boot_inputs: Vec<(String, String)>,
}

/// What the first boot takes from the host, as (path, digest) pairs.
fn first_boot_inputs(c: &Config) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if !c.firstboot.enable {
        return Ok(out);
    }
    let binary = c
        .firstboot
        .service_binary
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::firstboot::RHSRVANY));
    let mut files: Vec<PathBuf> = c.firstboot.scripts.clone();
    if binary.exists() {
        files.push(binary);
    }
    for f in files {
        let bytes = std::fs::read(&f)
            .map_err(|e| BadInput(format!("{}: cannot read: {e}", f.display())))?;
        out.push((
            f.display().to_string(),
            format!("{:x}", Sha256::digest(&bytes)),
        ));
    }
    for t in &c.files {
        let mut h = Sha256::new();
        for e in walkdir::WalkDir::new(&t.from).sort_by_file_name() {
            let e = e.map_err(|e| BadInput(format!("{}: {e}", t.from.display())))?;
            let meta = e
                .metadata()
                .map_err(|e| BadInput(format!("{}: {e}", t.from.display())))?;
            h.update(format!(
                "{}\0{}\0{}\0{}\n",
                e.path().strip_prefix(&t.from).unwrap_or(e.path()).display(),
                meta.is_dir(),
                meta.len(),
                meta.mtime_nsec() + meta.mtime() * 1_000_000_000
            ));
        }
        out.push((
            format!("{} -> {}", t.from.display(), t.to),
            format!("{:x}", h.finalize()),
        ));
    }
    Ok(out)
}

/// The base image as the manifest records it. Size, mtime and inode are the cheap
/// identity: when all three match the last build, its SHA-256 is taken as still
/// true; when any differs, the base is hashed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    /// None when the base was not hashed (see `[base] hash`).
    #[serde(default)]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The versioned file (`NAME-<12 hex of sha256>.EXT`), never rewritten.
    pub path: PathBuf,
    /// The stable name that pointed at it when it was built (a symlink).
    #[serde(default)]
    pub stable: Option<PathBuf>,
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
    pub virtual_size: u64,
    pub compressed: bool,
}

/// `<golden>.manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub wingold_version: String,
    pub identity: Identity,
    pub base: BaseRecord,
    pub virtio_win: serde_json::Value,
    pub config: serde_json::Value,
    pub windows: serde_json::Value,
    pub edits: serde_json::Value,
    pub first_boot_commands: Vec<String>,
    /// The virtio drivers put into the image: per driver its ISO folder and
    /// DriverVer, every file (guest path, sha256); the registry edits are in `edits`.
    #[serde(default)]
    pub drivers: Option<serde_json::Value>,
    /// The first-boot queue: the service (binary and its sha256), every queued
    /// script, every file written (guest path, sha256), copied-in trees included.
    #[serde(default)]
    pub first_boot: Option<serde_json::Value>,
    pub output: OutputRecord,
    pub timings_ms: serde_json::Value,
}

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

pub fn manifest_path(golden: &Path) -> PathBuf {
    let mut name = golden.file_name().unwrap_or_default().to_owned();
    name.push(".manifest.json");
    golden.with_file_name(name)
}

/// The manifest of a golden version; the stable name is followed to its version.
pub fn read_manifest(golden: &Path) -> Option<Manifest> {
    let version = std::fs::canonicalize(golden).ok()?;
    let bytes = std::fs::read(manifest_path(&version)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    fsutil::sha256_file(path).with_context(|| format!("{}: cannot read", path.display()))
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
    refuse_output_among(&c.golden.output, &inputs)
}

/// One line naming both when `output` is one of `inputs`.
pub fn refuse_output_among(output: &Path, inputs: &[(&str, PathBuf)]) -> anyhow::Result<()> {
    let out = FileKey::of(output);
    for (what, path) in inputs {
        if FileKey::of(path).same(&out) {
            return Err(BadInput(format!(
                "{}: the output is {what} ({}); an output can never be an input: choose \
                 another output",
                output.display(),
                path.display()
            ))
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
    fetch::Options {
        source,
        sha256: v.sha256.clone(),
        cache: v.cache.clone().unwrap_or_else(fetch::default_cache),
        lock_file: cfg.dir.join("wingold.lock"),
        offline: false,
        progress,
        retries: 4,
        connect_timeout: std::time::Duration::from_secs(30),
        stall_timeout: std::time::Duration::from_secs(30),
        backoff: std::time::Duration::from_millis(500),
    }
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

/// Test hook: with `WINGOLD_TEST_KILL_AT=PHASE` the build kills itself (SIGKILL)
/// on reaching that phase, so that the crash-safety test lands a kill in every
/// phase on purpose instead of by timing.
fn phase(name: &str) {
    debug_assert!(PHASES.contains(&name));
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
        let bytes =
            std::fs::read(r).map_err(|e| BadInput(format!("{}: cannot read: {e}", r.display())))?;
        regfiles.push((
            r.display().to_string(),
            format!("{:x}", Sha256::digest(&bytes)),
        ));
    }
    let mut identity = Identity {
        wingold_version: env!("CARGO_PKG_VERSION").into(),
        base_sha256: base.sha256.clone(),
        virtio_win_version: iso.version.clone(),
        virtio_win_sha256: iso.sha256.clone(),
        config_sha256: format!("{:x}", Sha256::digest(&cfg.bytes)),
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
            let now = sha256_file(&c.base.image)?;
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
        boot: c
            .drivers
            .boot
            .as_deref()
            .and_then(crate::drivers::Boot::parse)
            .unwrap_or_default(),
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
    });
    let mut plan = inject::plan(
        &c.base.image,
        &specs,
        c.base.partition,
        false,
        driver_request.as_ref(),
        first_boot_request.as_ref(),
    )?;
    let result = (|| -> anyhow::Result<Outcome> {
        inject::write(&mut plan, &Mode::Overlay(work.clone()))?;
        let t_inject = t0.elapsed();
        phase("injected");

        // 4. Finalize into a temporary name, verify, fsync, move to its version.
        let stats = {
            let src = image::open(&work, Access::ReadOnly)?;
            finalize::write_qcow2(&src, &tmp, c.golden.compress)?
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
            virtio_win: serde_json::json!({
                "version": iso.version,
                "url": iso.url,
                "final_url": iso.final_url,
                "sha256": iso.sha256,
                "size": iso.size,
                "pinned_by": iso.pinned_by,
                "path": iso.path,
                "drivers_injected": plan.report.drivers.is_some(),
            }),
            config: serde_json::json!({
                "path": cfg.path,
                "sha256": identity.config_sha256,
                "profiles": c.golden.profiles,
                "regfiles": identity.regfiles,
                "compress": c.golden.compress,
            }),
            windows: serde_json::to_value(&plan.report.windows)?,
            edits: serde_json::to_value(&plan.report.changes)?,
            first_boot_commands: plan.report.first_boot_commands.clone(),
            drivers: plan
                .report
                .drivers
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?,
            first_boot: plan
                .report
                .first_boot
                .as_ref()
                .map(serde_json::to_value)
                .transpose()?,
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
            timings_ms: serde_json::json!({
                "fetch": ms(t_fetch),
                "inject": ms(t_inject - t_fetch),
                "finalize": ms(t_finalize - t_inject),
                "verify": ms(t_verify - t_finalize),
                "total": ms(t0.elapsed()),
            }),
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
    use super::versions::Layout;
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
