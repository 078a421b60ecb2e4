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
mod plan;
mod refusal;
pub mod security;
mod state;

pub use plan::plan;
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
