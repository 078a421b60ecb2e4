//! The virtio driver state of any image, for `inspect`: staged files, services,
//! boot registration, versions — whoever installed them.

use super::{inf, installed_by_windows, registry, ReadGuest, STAGING};
use crate::guest::Windows;
use crate::hive::View;
use crate::reg::HiveName;
use serde::Serialize;

/// What an image holds of virtio drivers, for `inspect`: staged files, services,
/// boot registration, versions — whoever installed them.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// Files in `%SystemRoot%\Drivers\VirtIO`.
    pub staged: Vec<String>,
    /// DriverVer of each staged INF.
    pub staged_versions: Vec<(String, String)>,
    pub services: Vec<ServiceState>,
    /// How the boot controllers are registered: `CriticalDeviceDatabase`,
    /// `DriverDatabase (wingold/virt-v2v guestor package)`, `installed by Windows`.
    pub boot_registration: Vec<String>,
    pub device_path_has_virtio: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    pub name: String,
    pub start: Option<u32>,
    pub image_path: Option<String>,
    pub file_present: bool,
}

/// Reads the driver state of an image.
pub fn state(
    w: &Windows,
    system: &[u8],
    software: &[u8],
    read_guest: &ReadGuest,
    list_staged: &dyn Fn() -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<State> {
    let sys = View::open(HiveName::System.name(), system)?;
    let set = &w.control_sets.current;
    let root = w.system_root.trim_start_matches('\\');
    let staged = list_staged()?;
    let mut staged_versions = Vec::new();
    for f in staged
        .iter()
        .filter(|f| f.to_ascii_lowercase().ends_with(".inf"))
    {
        if let Some(b) = read_guest(&format!("{root}\\{STAGING}\\{f}"))? {
            if let Some(v) = inf::parse(&inf::decode(&b)).driver_ver {
                staged_versions.push((f.clone(), v));
            }
        }
    }
    let mut services = Vec::new();
    for name in ["viostor", "vioscsi", "netkvm", "BALLOON", "BalloonService"] {
        let key = format!("{set}\\Services\\{name}");
        if !sys.has_key(&key)? {
            continue;
        }
        let image_path = sys.value(&key, "ImagePath")?.and_then(|v| v.as_string());
        let file_present = match &image_path {
            Some(p) => {
                let p = p.trim_matches('"');
                let lower = p.to_ascii_lowercase();
                let rel = lower
                    .strip_prefix("\\systemroot\\")
                    .or_else(|| lower.strip_prefix("%systemroot%\\"))
                    .map(|r| format!("{root}\\{}", &p[p.len() - r.len()..]))
                    .or_else(|| {
                        lower
                            .starts_with("system32\\")
                            .then(|| format!("{root}\\{p}"))
                    });
                match rel {
                    Some(r) => read_guest(&r)?.is_some(),
                    None => false,
                }
            }
            None => false,
        };
        services.push(ServiceState {
            name: name.to_owned(),
            start: sys.value(&key, "Start")?.and_then(|v| v.as_dword()),
            image_path,
            file_present,
        });
    }
    let mut boot_registration = Vec::new();
    for d in [&registry::VIOSTOR, &registry::VIOSCSI] {
        if let Some(i) = installed_by_windows(&sys, w, d)? {
            boot_registration.push(format!("{}: installed by Windows ({i})", d.service));
        }
        let cdd = format!("{set}\\Control\\CriticalDeviceDatabase");
        for id in d.ids(&[d.legacy, d.modern]) {
            let key = format!("{cdd}\\PCI#{id}");
            if sys
                .value(&key, "Service")?
                .and_then(|v| v.as_string())
                .is_some_and(|s| s.eq_ignore_ascii_case(d.service))
            {
                boot_registration.push(format!("{}: CriticalDeviceDatabase PCI#{id}", d.service));
            }
        }
        let conf = format!(
            "DriverDatabase\\DriverPackages\\{}\\Configurations\\guestor_conf",
            registry::package_label(w.arch)
        );
        if sys
            .value(&conf, "Service")?
            .and_then(|v| v.as_string())
            .is_some_and(|s| s.eq_ignore_ascii_case(d.service))
        {
            boot_registration.push(format!(
                "{}: DriverDatabase package {}",
                d.service,
                registry::package_label(w.arch)
            ));
        }
    }
    let soft = View::open(HiveName::Software.name(), software)?;
    let device_path_has_virtio = soft
        .value("Microsoft\\Windows\\CurrentVersion", "DevicePath")?
        .and_then(|v| v.as_string())
        .is_some_and(|s| {
            s.to_ascii_lowercase()
                .contains(&registry::DEVICE_PATH_ADDITION.to_ascii_lowercase())
        });
    Ok(State {
        staged,
        staged_versions,
        services,
        boot_registration,
        device_path_has_virtio,
    })
}
