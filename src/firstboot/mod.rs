//! The first-boot queue: what only a running Windows can do, prepared offline to
//! run once by itself at the first boot of the golden image and of every clone.
//!
//! A service created offline (`wingold-firstboot`, LocalSystem, automatic) runs
//! Debian's `rhsrvany.exe` — the binary virt-v2v installs for the same purpose —
//! which starts `%SystemRoot%\wingold\firstboot\firstboot.cmd`, the runner
//! (`assets/firstboot/firstboot.cmd`): numbered scripts in `queue\`, each once,
//! logged, moved to `done\` or, after three failures across boots, `failed\`; the
//! service disables itself when the queue is empty. Built-in steps, the user's
//! scripts, and copied-in trees are all plain files; the service is plain
//! registry edits. `golden` writes them with the rest of the plan.
//!
//! Like `drivers`, this knows nothing of images or NTFS: guest files come through
//! a closure.

#![deny(unsafe_code)]

mod copy_in;
mod refusal;
pub mod security;
mod state;

pub use refusal::Refusal;
pub use state::{queue_state, QueueState};

use crate::error::unreadable;
pub use crate::guest::files::{FileAction, HashGuest, ReadGuest};
use crate::guest::Windows;
use crate::hive::View;
use crate::reg::Edits;
use crate::reg::HiveName;
use crate::reg::RegEdit;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The service's name (also the runner's `sc config` target).
pub const SERVICE: &str = "wingold-firstboot";
/// The first-boot folder under the system root.
pub const FOLDER: &str = "wingold\\firstboot";
/// Where Debian's rhsrvany package puts the service binary.
pub const RHSRVANY: &str = "/usr/share/virt-tools/rhsrvany.exe";

const RUNNER: &str = include_str!("../../assets/firstboot/firstboot.cmd");
const PNP_DRIVERS: &str = include_str!("../../assets/firstboot/pnp-drivers.cmd");
const BALLOON_SERVICE: &str = include_str!("../../assets/firstboot/balloon-service.cmd");
const TCPIP_NETSH: &str = include_str!("../../assets/firstboot/tcpip-netsh.cmd");
const NIC_WATCHDOG: &str = include_str!("../../assets/firstboot/nic-watchdog.cmd");
const NIC_WATCHDOG_TASK: &str = include_str!("../../assets/firstboot/nic-watchdog-task.cmd");
const NIC_WATCHDOG_TASK_NT5: &str =
    include_str!("../../assets/firstboot/nic-watchdog-task-nt5.cmd");
const NIC_RESET_VBS: &str = include_str!("../../assets/firstboot/nic-reset.vbs");
const SAN_POLICY: &str = include_str!("../../assets/firstboot/san-policy.cmd");
const GUEST_AGENT: &str = include_str!("../../assets/firstboot/guest-agent.cmd");

/// The NIC watchdog's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    /// The address pinged; the default gateway when None.
    pub target: Option<String>,
    /// Failures in a row before the NIC is reset.
    pub failures: u32,
}

/// A built-in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// `pnputil -i -a` over the staged virtio INFs (NT 6.0+).
    PnpDrivers,
    /// `blnsvr -i`: the balloon service.
    BalloonService,
    /// The NT 6+ TCP tuning with no registry form.
    TcpipNetsh,
    /// `diskpart`: SAN policy OnlineAll, so that disks added later come online
    /// (NT 6.1+, as virt-v2v sets it).
    SanPolicy,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::PnpDrivers => "pnp-drivers",
            Step::BalloonService => "balloon-service",
            Step::TcpipNetsh => "tcpip-netsh",
            Step::SanPolicy => "san-policy",
        }
    }

    /// Queue order: PnP before the balloon service (it needs the driver), both
    /// before the user's scripts.
    fn priority(self) -> u32 {
        match self {
            Step::PnpDrivers => 2000,
            Step::BalloonService => 5000,
            Step::TcpipNetsh => 5100,
            Step::SanPolicy => 1000,
        }
    }

    fn script(self) -> &'static str {
        match self {
            Step::PnpDrivers => PNP_DRIVERS,
            Step::BalloonService => BALLOON_SERVICE,
            Step::TcpipNetsh => TCPIP_NETSH,
            Step::SanPolicy => SAN_POLICY,
        }
    }
}

/// What to queue and copy in.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub steps: Vec<Step>,
    /// The user's scripts (`.cmd`, `.bat`, `.ps1`), run in this order after the
    /// built-in steps.
    pub scripts: Vec<PathBuf>,
    /// Local file or folder → guest path (`C:\Tools` or `\Tools`).
    pub copy_in: Vec<(PathBuf, String)>,
    /// The service binary; `RHSRVANY` when None.
    pub service_binary: Option<PathBuf>,
    /// The NIC watchdog (opt-in).
    pub nic_watchdog: Option<Watchdog>,
    /// The virtio-win ISO whose QEMU guest agent is installed silently at
    /// first boot (opt-in); the caller reads the MSI off it and hands it to
    /// [`plan`].
    pub guest_agent_iso: Option<PathBuf>,
}

/// The guest agent's installer as the virtio-win ISO holds it.
#[derive(Debug, Clone)]
pub struct AgentMsi {
    /// Its name on the ISO (`qemu-ga-x86_64.msi`), kept in the guest.
    pub name: String,
    /// Where it came from, as reports show it (`ISO:guest-agent/qemu-ga-x86_64.msi`).
    pub from: String,
    pub data: Vec<u8>,
}

/// Refuses the guest agent where it is not supported: QEMU's Windows builds
/// target the Windows 8 API (QEMU's "Supported build platforms"), so NT 6.2 and
/// later.
pub fn refuse_guest_agent(w: &Windows) -> Result<(), Refusal> {
    if (w.major_version, w.minor_version) < (6, 2) {
        return Err(Refusal::NoGuestAgent {
            product: w.product_name.clone(),
        });
    }
    Ok(())
}

/// The guest agent's MSI on the virtio-win ISO for a Windows architecture.
pub fn agent_msi_path(arch: &str) -> Option<&'static str> {
    match arch {
        "x64" => Some("guest-agent/qemu-ga-x86_64.msi"),
        "x86" => Some("guest-agent/qemu-ga-i386.msi"),
        _ => None,
    }
}

impl Request {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
            && self.scripts.is_empty()
            && self.copy_in.is_empty()
            && self.nic_watchdog.is_none()
            && self.guest_agent_iso.is_none()
    }
}

/// One file to put into the guest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GuestFile {
    /// Path on the Windows volume (`Windows\wingold\firstboot\firstboot.cmd`).
    pub to: String,
    /// Where it comes from: a local path, `wingold` (generated) or the binary.
    pub from: String,
    pub size: u64,
    pub sha256: String,
    pub action: FileAction,
    /// Its time (seconds since 1970): a copied-in file keeps its local mtime.
    #[serde(skip)]
    pub time: Option<i64>,
    /// The bytes of a generated file (runner, steps, scripts).
    #[serde(skip)]
    pub data: Vec<u8>,
    /// A copied-in file is streamed from here when written, never held in memory.
    #[serde(skip)]
    pub local: Option<PathBuf>,
}

/// A queued script.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Queued {
    /// `2000-pnp-drivers.cmd`.
    pub name: String,
    /// The built-in step, or the user's file.
    pub source: String,
}

/// The service that starts the runner.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ServiceReport {
    pub name: String,
    pub binary: PathBuf,
    pub binary_sha256: String,
    /// Debian's rhsrvany package, what virt-v2v installs.
    pub binary_origin: String,
}

/// What the first-boot plan does; the manifest and `inject --json` carry it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// `C:\Windows\wingold\firstboot`, as the guest sees it.
    pub folder: String,
    pub service: Option<ServiceReport>,
    pub queue: Vec<Queued>,
    /// Every file written (runner, steps, scripts, copied-in trees).
    pub files: Vec<GuestFile>,
    pub folders: Vec<String>,
    pub notes: Vec<String>,
}

/// The plan: files, folders (parents first), registry edits.
#[derive(Debug, Clone)]
pub struct Plan {
    pub report: Report,
    pub edits: Vec<RegEdit>,
}

/// The SHA-256 of a local file, read in pieces.
fn sha256_local(path: &Path) -> anyhow::Result<String> {
    Ok(crate::fsutil::sha256_file(path).map_err(unreadable(path))?)
}

/// Text with CRLF line ends (what cmd on NT 5.2 needs).
pub fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

/// `C:\Windows` as the guest knows it: SOFTWARE's `SystemRoot`, else `C:` and the
/// system root found on the volume.
fn system_root_with_drive(w: &Windows, software: &[u8]) -> anyhow::Result<String> {
    let h = View::open(HiveName::Software.name(), software)?;
    let from_hive = h
        .value("Microsoft\\Windows NT\\CurrentVersion", "SystemRoot")?
        .and_then(|v| v.as_string())
        .filter(|s| s.len() > 3 && s.as_bytes()[1] == b':');
    Ok(from_hive.unwrap_or_else(|| format!("C:{}", w.system_root)))
}

/// A name safe for a queue entry: letters, digits, `-`, `_`.
fn queue_stem(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "script".into()
    } else {
        s
    }
}

fn mtime(meta: &std::fs::Metadata) -> Option<i64> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.mtime())
}

/// Computes the plan; refusals are bad input naming the file. `agent`: the
/// guest agent's MSI, read by the caller off `req.guest_agent_iso`.
pub fn plan(
    w: &Windows,
    req: &Request,
    agent: Option<AgentMsi>,
    software: &[u8],
    read_guest: &ReadGuest,
    hash_guest: &HashGuest,
    fold: &crate::guest::files::NameFold,
) -> anyhow::Result<Plan> {
    let root = w.system_root.trim_start_matches('\\').to_owned();
    let dir = format!("{root}\\{FOLDER}");
    let guest_root = system_root_with_drive(w, software)?;
    let guest_dir = format!("{guest_root}\\{FOLDER}");
    let mut files: Vec<GuestFile> = Vec::new();
    let mut folders: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut queue = Vec::new();
    let add = |files: &mut Vec<GuestFile>, to: String, from: String, data: Vec<u8>, time| {
        files.push(GuestFile {
            size: data.len() as u64,
            sha256: crate::fsutil::sha256_hex(&data),
            action: FileAction::New,
            to,
            from,
            time,
            data,
            local: None,
        });
    };

    // Queue entries, in order: built-ins by priority, then the user's scripts.
    // What ran before under that name, with the same bytes: a script that changed
    // since is queued again (the runner moves it over the old record).
    // Some(true): ran with these bytes; Some(false): ran, and changed since.
    let ran_before = |name: &str, data: &[u8]| -> anyhow::Result<Option<bool>> {
        for folder in ["done", "failed"] {
            if let Some(old) = read_guest(&format!("{dir}\\{folder}\\{name}"))? {
                return Ok(Some(old == data));
            }
        }
        Ok(None)
    };
    let mut steps = req.steps.clone();
    steps.sort_by_key(|s| s.priority());
    steps.dedup();
    let mut entries: Vec<(String, String, Vec<u8>, Option<i64>)> = Vec::new();
    for s in &steps {
        entries.push((
            format!("{}-{}.cmd", s.priority(), s.name()),
            format!("built-in step {}", s.name()),
            crlf(s.script()),
            None,
        ));
    }
    if let Some(wd) = &req.nic_watchdog {
        // NT 5.0 (2000) has no Network Connections verbs to script; 5.1 and 5.2
        // reset through nic-reset.vbs, NT 6 through netsh or PowerShell.
        if w.major_version < 5 || (w.major_version == 5 && w.minor_version < 1) {
            return Err(Refusal::NoAdapterReset {
                product: w.product_name.clone(),
            }
            .into());
        }
        let target = wd.target.clone().unwrap_or_default();
        if !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(Refusal::WatchdogTarget { target }.into());
        }
        if !(1..=100).contains(&wd.failures) {
            return Err(Refusal::WatchdogFailures {
                failures: wd.failures,
            }
            .into());
        }
        let script = NIC_WATCHDOG
            .replace("@TARGET@", &target)
            .replace("@LIMIT@", &wd.failures.to_string());
        add(
            &mut files,
            format!("{root}\\wingold\\nic-watchdog.cmd"),
            "wingold NIC watchdog".into(),
            crlf(&script),
            None,
        );
        let task = if w.major_version < 6 {
            add(
                &mut files,
                format!("{root}\\wingold\\nic-reset.vbs"),
                "wingold NIC reset (Windows Script Host)".into(),
                crlf(NIC_RESET_VBS),
                None,
            );
            NIC_WATCHDOG_TASK_NT5
        } else {
            NIC_WATCHDOG_TASK
        };
        entries.push((
            "5200-nic-watchdog.cmd".into(),
            "built-in step nic-watchdog".into(),
            crlf(task),
            None,
        ));
    }
    if let Some(msi) = agent {
        refuse_guest_agent(w)?;
        add(
            &mut files,
            format!("{root}\\wingold\\{}", msi.name),
            msi.from,
            msi.data,
            None,
        );
        entries.push((
            "3000-guest-agent.cmd".into(),
            "built-in step guest-agent".into(),
            crlf(&GUEST_AGENT.replace("@MSI@", &msi.name)),
            None,
        ));
    }
    let has_powershell = read_guest(&format!(
        "{root}\\System32\\WindowsPowerShell\\v1.0\\powershell.exe"
    ))?
    .is_some();
    for (i, script) in req.scripts.iter().enumerate() {
        let shown = script.display().to_string();
        let ext = script
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let meta = crate::input::check(script, false)?;
        let data = crate::input::read(script, crate::input::SCRIPT)?;
        let name = format!("{}-{}", 6000 + i, queue_stem(script));
        match ext.as_str() {
            "cmd" | "bat" => entries.push((format!("{name}.cmd"), shown, data, mtime(&meta))),
            "ps1" => {
                if !has_powershell {
                    return Err(Refusal::NoPowerShell {
                        script: script.clone(),
                        product: w.product_name.clone(),
                    }
                    .into());
                }
                let sha = crate::fsutil::sha256_hex(&data);
                add(
                    &mut files,
                    format!("{dir}\\scripts\\{name}.ps1"),
                    shown.clone(),
                    data,
                    mtime(&meta),
                );
                let wrapper = format!(
                    "@echo off\nrem wingold: runs {shown} under PowerShell, this script's policy bypassed\n\
                     rem sha256 {}\n\
                     powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"%~dp0..\\scripts\\{name}.ps1\"\n\
                     exit /b %errorlevel%\n",
                    sha
                );
                entries.push((format!("{name}.cmd"), shown, crlf(&wrapper), mtime(&meta)));
            }
            _ => {
                return Err(Refusal::ScriptType {
                    script: script.clone(),
                }
                .into())
            }
        }
    }
    for (name, source, data, time) in entries {
        match ran_before(&name, &data)? {
            Some(true) => {
                notes.push(format!(
                    "{name} already ran on this image (done\\ or failed\\): not queued again"
                ));
                continue;
            }
            Some(false) => notes.push(format!(
                "{name} ran on this image before, and has changed since: queued again"
            )),
            None => {}
        }
        add(
            &mut files,
            format!("{dir}\\queue\\{name}"),
            source.clone(),
            data,
            time,
        );
        queue.push(Queued { name, source });
    }

    // The runner and its service, when anything is queued.
    let mut edits = Edits::new("first boot".into());
    let service = if queue.is_empty() {
        None
    } else {
        let binary = req
            .service_binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(RHSRVANY));
        let bytes = match crate::input::read(&binary, crate::input::PROGRAM) {
            Ok(b) => b,
            Err(crate::input::Error::Unreadable { source, .. }) => {
                return Err(Refusal::NoServiceBinary {
                    binary: binary.clone(),
                    source,
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        };
        let sha = crate::fsutil::sha256_hex(&bytes);
        add(
            &mut files,
            format!("{dir}\\rhsrvany.exe"),
            binary.display().to_string(),
            bytes,
            None,
        );
        add(
            &mut files,
            format!("{dir}\\firstboot.cmd"),
            "wingold runner".into(),
            crlf(RUNNER),
            None,
        );
        service_edits(&mut edits, &guest_dir);
        Some(ServiceReport {
            name: SERVICE.into(),
            binary,
            binary_sha256: sha,
            binary_origin: "Debian package rhsrvany (what virt-v2v installs)".into(),
        })
    };
    if service.is_some() {
        for f in [
            "wingold",
            FOLDER,
            &format!("{FOLDER}\\queue"),
            &format!("{FOLDER}\\done"),
            &format!("{FOLDER}\\failed"),
            &format!("{FOLDER}\\scripts"),
        ] {
            folders.push(format!("{root}\\{f}"));
        }
    }

    // Copied-in trees.
    for (local, guest) in &req.copy_in {
        copy_in::copy_in(local, guest, &root, fold, &mut files, &mut folders)?;
    }

    // Idempotence: what is there with the same bytes is left alone.
    for f in &mut files {
        f.action = match hash_guest(&f.to)? {
            None => FileAction::New,
            Some(old) if old == f.sha256 => FileAction::Unchanged,
            Some(_) => FileAction::Replaced,
        };
    }
    let mut seen = std::collections::BTreeSet::new();
    folders.retain(|f| seen.insert(fold(f)));
    Ok(Plan {
        report: Report {
            folder: guest_dir,
            service,
            queue,
            files,
            folders,
            notes,
        },
        edits: edits.list,
    })
}

/// The service virt-v2v's tools install for their first boot, with wingold's
/// names (libguestfs-common `mlcustomize/firstboot.ml`, `Windows.install_service`).
fn service_edits(e: &mut Edits, guest_dir: &str) {
    let key = format!("HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\{SERVICE}");
    e.dword(&key, "Type", 0x10);
    e.dword(&key, "Start", 2);
    e.dword(&key, "ErrorControl", 1);
    e.sz(
        &key,
        "ImagePath",
        &format!("\"{guest_dir}\\rhsrvany.exe\" -s {SERVICE}"),
    );
    e.sz(&key, "DisplayName", "wingold first boot");
    e.sz(&key, "ObjectName", "LocalSystem");
    let params = format!("{key}\\Parameters");
    e.sz(
        &params,
        "CommandLine",
        &format!("cmd /c \"{guest_dir}\\firstboot.cmd\""),
    );
    e.sz(&params, "PWD", guest_dir);
}
