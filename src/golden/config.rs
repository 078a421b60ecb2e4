//! `wingold.toml`: the build's settings, read and checked whole before anything is
//! done, and the identity of a build's inputs (what makes a rebuild).

use super::versions;
use crate::error::unreadable;
use crate::golden::Refusal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
    /// Install the QEMU guest agent from the virtio-win ISO at first boot
    /// (Windows 8 / 2012 and later; vioserial is staged with it).
    #[serde(default)]
    pub guest_agent: bool,
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
            guest_agent: false,
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
    /// The boot driver: `viostor` (virtio-blk, default) or `vioscsi`; any
    /// other word is refused by the parser with its line.
    #[serde(default)]
    pub boot: Option<crate::drivers::Boot>,
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
impl Config {
    /// The digest of the settings that decide what goes into the image, and of
    /// nothing else: no host path (inputs count by their contents, recorded
    /// beside this), no output or cache location, no publishing target, not the
    /// file's formatting. Two configs that differ only in where things are on
    /// this host give the same digest, and so the same published image.
    pub fn settings_sha256(&self) -> String {
        let d = &self.drivers;
        let f = &self.firstboot;
        let settings = serde_json::json!({
            "base": {"partition": self.base.partition},
            "golden": {"profiles": self.golden.profiles, "compress": self.golden.compress},
            "drivers": {"inject": d.inject, "boot": d.boot, "extra": d.extra},
            "firstboot": {
                "enable": f.enable,
                "nic_watchdog": f.nic_watchdog,
                "watchdog_target": f.watchdog_target,
                "watchdog_failures": f.watchdog_failures,
                "guest_agent": f.guest_agent,
            },
            "files": self.files.iter().map(|x| &x.to).collect::<Vec<_>>(),
        });
        crate::fsutil::sha256_hex(settings.to_string().as_bytes())
    }
}

pub struct Loaded {
    pub path: PathBuf,
    pub dir: PathBuf,
    pub bytes: Vec<u8>,
    pub config: Config,
}

/// Reads and parses the TOML file `path` (up to the small-input cap): its bytes
/// and its value; a syntax error or an unknown key is refused with its line and
/// column.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<(Vec<u8>, T)> {
    let bytes = crate::input::read(path, crate::input::SMALL)?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| Refusal::NotUtf8 {
        config: path.to_owned(),
    })?;
    let value = toml::from_str(&text).map_err(|e| {
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
        Refusal::Syntax {
            config: path.to_owned(),
            line,
            column: col,
            message: e.message().to_owned(),
        }
    })?;
    Ok((bytes, value))
}

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let (bytes, mut config): (Vec<u8>, Config) = read_toml(path)?;
    refuse_nul_paths(path, &config)?;
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
        return Err(Refusal::VirtioSources {
            config: path.to_owned(),
        }
        .into());
    }
    if let Some(ch) = v
        .channel
        .as_deref()
        .filter(|c| !["stable", "latest"].contains(c))
    {
        return Err(Refusal::Channel {
            config: path.to_owned(),
            channel: ch.to_owned(),
        }
        .into());
    }
    versions::Layout::new(&config.golden.output).map_err(|_| Refusal::ConfigOutput {
        config: path.to_owned(),
        output: config.golden.output.clone(),
    })?;
    check_input_kinds(&config)?;
    Ok(Loaded {
        path: path.to_owned(),
        dir,
        bytes,
        config,
    })
}

/// A NUL in a path the config names: no file can have that name.
fn refuse_nul_paths(config_path: &Path, c: &Config) -> Result<(), Refusal> {
    use std::os::unix::ffi::OsStrExt;
    let paths = [&c.base.image, &c.golden.output]
        .into_iter()
        .chain(&c.golden.regfiles)
        .chain(&c.firstboot.scripts)
        .chain(&c.firstboot.service_binary)
        .chain(c.files.iter().map(|f| &f.from))
        .chain(&c.publish.ca_cert)
        .chain(&c.virtio_win.iso)
        .chain(&c.virtio_win.cache);
    for p in paths {
        if p.as_os_str().as_bytes().contains(&0) {
            return Err(Refusal::NulInPath {
                config: config_path.to_owned(),
                path: p.display().to_string().replace('\0', "\\0"),
            });
        }
    }
    Ok(())
}

/// Refuses, before anything is fetched or written, an input the config names
/// that is there but no file: a FIFO would block the build, `/dev/zero` would be
/// read without end. (Missing ones are said where they are first needed.)
fn check_input_kinds(c: &Config) -> anyhow::Result<()> {
    let there = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    if there(&c.base.image) {
        crate::image::check_kind(&c.base.image)?;
    }
    if let Some(iso) = c.virtio_win.iso.as_deref().filter(|p| there(p)) {
        crate::input::check(iso, true)?;
    }
    let files = c.golden.regfiles.iter().chain(&c.firstboot.scripts);
    for f in files
        .chain(&c.firstboot.service_binary)
        .filter(|p| there(p))
    {
        crate::input::check(f, false)?;
    }
    if let Some(ca) = c.publish.ca_cert.as_deref().filter(|p| there(p)) {
        crate::input::check(ca, false)?;
    }
    Ok(())
}

/// What the first boot takes from the host, as (path, digest) pairs.
pub(super) fn first_boot_inputs(c: &Config) -> anyhow::Result<Vec<(String, String)>> {
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
    let scripts = files.len();
    if binary.exists() {
        files.push(binary);
    }
    for (i, f) in files.into_iter().enumerate() {
        let cap = if i < scripts {
            crate::input::SCRIPT
        } else {
            crate::input::PROGRAM
        };
        let bytes = crate::input::read(&f, cap)?;
        out.push((f.display().to_string(), crate::fsutil::sha256_hex(&bytes)));
    }
    for t in &c.files {
        let mut h = Sha256::new();
        for e in walkdir::WalkDir::new(&t.from).sort_by_file_name() {
            let e = e.map_err(unreadable(&t.from))?;
            let meta = e.metadata().map_err(unreadable(e.path()))?;
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
