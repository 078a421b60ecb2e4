//! `wingold doctor`: what this host can do for wingold, and the confinement of
//! the worker that reads images, proven live.

use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The virtio-win cache folder to report free space of (default:
    /// $XDG_CACHE_HOME/wingold or ~/.cache/wingold).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// One thing looked at.
#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    /// Needed by the main job (`wingold build`): without it doctor fails.
    required: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Doctor {
    checks: Vec<Check>,
    confinement: crate::confine::Proof,
    /// The main job can run here.
    ready: bool,
}

/// The first line a program prints of its version, or why not.
fn version(program: &str, arg: &str, package: &str) -> (bool, String) {
    match Command::new(program).arg(arg).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let text = if text.trim().is_empty() {
                String::from_utf8_lossy(&out.stderr).into_owned()
            } else {
                text.into_owned()
            };
            (true, text.lines().next().unwrap_or("").trim().to_owned())
        }
        _ => (false, format!("not found (Debian package {package})")),
    }
}

/// A Debian package's installed version.
fn package(name: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", name])
        .output()
        .ok()?;
    (out.status.success() && !out.stdout.is_empty())
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn file(path: &str, package: &str) -> (bool, String) {
    if Path::new(path).is_file() {
        (true, path.to_owned())
    } else {
        (false, format!("{path} missing (Debian package {package})"))
    }
}

fn check(name: &'static str, required: bool, (ok, detail): (bool, String)) -> Check {
    Check {
        name,
        ok,
        required,
        detail,
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let mut checks = vec![check(
        "wingold",
        true,
        (true, env!("CARGO_PKG_VERSION").to_owned()),
    )];
    checks.push(check(
        "QEMU",
        false,
        version("qemu-system-x86_64", "--version", "qemu-system-x86"),
    ));
    let kvm = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => (
            true,
            "/dev/kvm opens read-write (no guest started to prove it runs)".to_owned(),
        ),
        Err(e) => (false, format!("/dev/kvm: {e}; VMs run under TCG (slow)")),
    };
    checks.push(check("KVM", false, kvm));
    checks.push(check("OVMF", false, file(crate::launch::OVMF_CODE, "ovmf")));
    checks.push(check(
        "swtpm",
        false,
        version(crate::launch::SWTPM, "--version", "swtpm"),
    ));
    checks.push(check(
        "rhsrvany",
        true,
        file(crate::firstboot::RHSRVANY, "rhsrvany"),
    ));
    for (name, pkg) in [("libntfs-3g", "libntfs-3g89"), ("libhivex", "libhivex0")] {
        let detail = match package(pkg) {
            Some(v) => format!("{pkg} {v}"),
            None => "linked (its package version unknown)".to_owned(),
        };
        checks.push(check(name, true, (true, detail)));
    }
    checks.push(check(
        "skopeo",
        false,
        version("skopeo", "--version", "skopeo"),
    ));
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(crate::virtio::fetch::default_cache);
    checks.push(check("cache", true, free_space(&cache)));
    let confinement = crate::confine::prove(Path::new("/etc/passwd"));
    let ready = checks.iter().all(|c| c.ok || !c.required);
    let report = Doctor {
        checks,
        confinement,
        ready,
    };
    if args.json {
        super::print_json(&report)?;
    } else {
        for c in &report.checks {
            let mark = match (c.ok, c.required) {
                (true, _) => "ok  ",
                (false, true) => "MISSING",
                (false, false) => "--  ",
            };
            println!(
                "{mark:<7} {:<11} {}",
                c.name,
                super::terminal_safe(&c.detail)
            );
        }
        let p = &report.confinement;
        println!(
            "{:<7} {:<11} {}",
            if p.landlock_abi.is_some() { "ok" } else { "--" },
            "Landlock",
            p.landlock_abi
                .map(|a| format!("ABI {a}"))
                .unwrap_or_else(|| "not in this kernel: workers are not confined".into())
        );
        println!(
            "{:<7} {:<11} a worker reading {}",
            if p.read_refused { "ok" } else { "--" },
            "confined",
            p.read
        );
        println!(
            "{:<7} {:<11} a worker opening a socket: {}",
            if p.socket_killed { "ok" } else { "--" },
            "seccomp",
            p.socket
        );
        println!(
            "{}",
            if report.ready {
                "wingold build can run here"
            } else {
                "wingold build cannot run here: install what is MISSING"
            }
        );
    }
    if report.ready {
        Ok(())
    } else {
        Err(super::Reported(crate::error::Kind::Failure.exit_code()).into())
    }
}

/// Free space in `dir` (or the nearest folder above it that exists), and
/// whether it can be written.
fn free_space(dir: &Path) -> (bool, String) {
    // A relative folder's nearest existing ancestor may be the current one.
    let mut at = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p.to_owned(),
            None => {
                return (
                    false,
                    format!("{}: no folder above it exists", dir.display()),
                )
            }
        }
    }
    if !at.is_dir() {
        return (
            false,
            format!("{}: {} is no folder", dir.display(), at.display()),
        );
    }
    let Ok(stat) = nix::sys::statvfs::statvfs(&at) else {
        return (false, format!("{}: cannot be examined", at.display()));
    };
    let free = stat.blocks_available() * stat.fragment_size();
    let writable = nix::unistd::access(&at, nix::unistd::AccessFlags::W_OK).is_ok();
    (
        writable,
        format!(
            "{}: {:.1} GiB free{}",
            dir.display(),
            free as f64 / (1u64 << 30) as f64,
            if writable { "" } else { ", not writable" }
        ),
    )
}
