//! The registry edits that let Windows load a virtio storage driver at its first
//! boot on that controller, per Windows family, as virt-v2v writes them
//! (libguestfs-common `mlcustomize/inject_virtio_win.ml`: `add_guestor_to_registry`,
//! `cdb_regedits`, `ddb_regedits`), as plain [`RegEdit`]s that run in
//! the same hive commits as every other edit.

use crate::hive::types::{REG_BINARY, REG_EXPAND_SZ};
use crate::reg::{utf16z, Edits};

/// The SCSIAdapter device class, which both virtio storage drivers belong to.
pub const SCSI_ADAPTER_CLASS: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";

const SYSTEM: &str = "HKEY_LOCAL_MACHINE\\SYSTEM";
const CCS: &str = "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet";

/// A storage driver wingold can register for boot, and its PCI ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDriver {
    /// Service name and file stem: `viostor`, `vioscsi`.
    pub service: &'static str,
    /// The ISO's folder name.
    pub folder: &'static str,
    /// `VEN_1AF4&DEV_…` of the transitional (legacy) and the modern device.
    pub legacy: &'static str,
    pub modern: &'static str,
    /// The subsystem id QEMU gives the transitional device (`SUBSYS_0002…`).
    pub legacy_subsys: &'static str,
}

pub const VIOSTOR: BootDriver = BootDriver {
    service: "viostor",
    folder: "viostor",
    legacy: "VEN_1AF4&DEV_1001",
    modern: "VEN_1AF4&DEV_1042",
    legacy_subsys: "SUBSYS_00021AF4",
};

pub const VIOSCSI: BootDriver = BootDriver {
    service: "vioscsi",
    folder: "vioscsi",
    legacy: "VEN_1AF4&DEV_1004",
    modern: "VEN_1AF4&DEV_1048",
    legacy_subsys: "SUBSYS_00081AF4",
};

/// The subsystem id of modern-only virtio devices.
const MODERN_SUBSYS: &str = "SUBSYS_11001AF4";

impl BootDriver {
    /// The `VEN&DEV` of the devices an INF claims, of this driver's two: the
    /// transitional (legacy) one and the modern one. The last Windows XP/2003
    /// builds claim only the legacy device.
    pub fn claimed_by(&self, inf: &super::inf::Inf) -> Vec<&'static str> {
        [self.legacy, self.modern]
            .into_iter()
            .filter(|d| inf.lists_device(d))
            .collect()
    }

    /// The ids registered for the `devices` claimed, in the two shapes virt-v2v
    /// has boot-tested: the compatible `VEN&DEV&REV` (legacy rev 0, modern rev 1)
    /// it writes since 2023, then the `SUBSYS` hardware id of 2016–2023.
    pub fn ids(&self, devices: &[&str]) -> Vec<String> {
        let shapes = |d: &str| {
            if d == self.modern {
                (format!("{d}&REV_01"), format!("{d}&{MODERN_SUBSYS}&REV_01"))
            } else {
                (
                    format!("{d}&REV_00"),
                    format!("{d}&{}&REV_00", self.legacy_subsys),
                )
            }
        };
        let (rev, subsys): (Vec<String>, Vec<String>) = [self.legacy, self.modern]
            .into_iter()
            .filter(|d| devices.contains(d))
            .map(shapes)
            .unzip();
        rev.into_iter().chain(subsys).collect()
    }
}

/// How Windows is told which driver a boot controller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Registration {
    /// NT 5.x to 6.1: `Control\CriticalDeviceDatabase`.
    CriticalDeviceDatabase,
    /// NT 6.2+: a package in `DriverDatabase` at the SYSTEM root.
    DriverDatabase,
    /// Windows installed the driver itself (PnP): nothing registered by wingold.
    InstalledByWindows,
}

/// The boot driver's service key (§1.3): the five values virt-v2v writes, the
/// INF's `Parameters` DWORDs, and no `StartOverride`.
pub fn service(e: &mut Edits, d: &BootDriver, parameters: &[(String, String, u32)]) {
    let key = format!("{CCS}\\Services\\{}", d.service);
    e.dword(&key, "Type", 1);
    e.dword(&key, "Start", 0);
    e.dword(&key, "ErrorControl", 1);
    e.sz(&key, "Group", "SCSI miniport");
    e.set(
        &key,
        "ImagePath",
        REG_EXPAND_SZ,
        utf16z(&format!("system32\\drivers\\{}.sys", d.service)),
    );
    for (subkey, name, value) in parameters {
        e.dword(&format!("{key}\\{subkey}"), name, *value);
    }
    e.delete_key(&format!("{key}\\StartOverride"));
}

/// NT 5.x–6.1 (§2.1): a CriticalDeviceDatabase entry per id of the `devices` the
/// INF claims, in both shapes virt-v2v has boot-tested (with and without the
/// subsystem).
pub fn critical_device_database(e: &mut Edits, d: &BootDriver, devices: &[&str]) {
    for id in d.ids(devices) {
        let key = format!("{CCS}\\Control\\CriticalDeviceDatabase\\PCI#{id}");
        e.sz(&key, "Service", d.service);
        e.sz(&key, "ClassGUID", SCSI_ADAPTER_CLASS);
    }
}

/// The fake package's name: `guestor.inf_<arch>_0000000000000000`.
pub fn package_label(arch: &str) -> String {
    let arch = if arch == "x86" { "x86" } else { "amd64" };
    format!("guestor.inf_{arch}_0000000000000000")
}

/// NT 6.2+ (§2.3): the `guestor` package in `DriverDatabase`, mapping the ids of
/// the `devices` the INF claims to the service.
pub fn driver_database(e: &mut Edits, d: &BootDriver, arch: &str, devices: &[&str]) {
    let label = package_label(arch);
    let db = format!("{SYSTEM}\\DriverDatabase");
    let inf = format!("{db}\\DriverInfFiles\\guestor.inf");
    e.multi_sz(&inf, "", &[&label]);
    e.sz(&inf, "Active", &label);
    e.multi_sz(&inf, "Configurations", &["guestor_conf"]);
    let package = format!("{db}\\DriverPackages\\{label}");
    let mut version = vec![0x00, 0xff, 0x09, 0x00, 0, 0, 0, 0];
    version.extend_from_slice(&guid_bytes(SCSI_ADAPTER_CLASS));
    version.extend_from_slice(&[0u8; 24]);
    e.set(&package, "Version", REG_BINARY, version);
    let conf = format!("{package}\\Configurations\\guestor_conf");
    e.dword(&conf, "ConfigFlags", 0);
    e.sz(&conf, "Service", d.service);
    // Both id shapes, as for the CriticalDeviceDatabase: the compatible `REV` id
    // virt-v2v writes since 2023 and the `SUBSYS` hardware id of 2016–2023 (the
    // shape Debian 12's virt-v2v 2.2.0 writes), each boot-tested by virt-v2v.
    for id in d.ids(devices) {
        e.set(
            &format!("{db}\\DeviceIds\\PCI\\{id}"),
            "guestor.inf",
            REG_BINARY,
            vec![0x01, 0xff, 0x00, 0x00],
        );
        e.sz(
            &format!("{package}\\Descriptors\\PCI\\{id}"),
            "Configuration",
            "guestor_conf",
        );
    }
}

/// A GUID in its binary (mixed-endian) form.
fn guid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a GUID constant"))
        .collect();
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

/// Where Windows looks for drivers of new devices (SOFTWARE).
pub const DEVICE_PATH_KEY: &str =
    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion";
/// What is appended to `DevicePath`.
pub const DEVICE_PATH_ADDITION: &str = "%SystemRoot%\\Drivers\\VirtIO";

/// `DevicePath` with `;%SystemRoot%\Drivers\VirtIO` appended once (§1.4): None when
/// the folder is already listed. `data` is the value's UTF-16LE bytes.
pub fn extended_device_path(data: &[u8]) -> Option<Vec<u8>> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16_lossy(&units);
    let text = text.trim_end_matches('\0');
    if text
        .to_ascii_lowercase()
        .contains(&DEVICE_PATH_ADDITION.to_ascii_lowercase())
    {
        return None;
    }
    Some(utf16z(&format!("{text};{DEVICE_PATH_ADDITION}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_mixed_endian() {
        assert_eq!(
            guid_bytes(SCSI_ADAPTER_CLASS),
            [
                0x7b, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1,
                0x03, 0x18
            ]
        );
    }

    #[test]
    fn device_path_extended_once() {
        let old = utf16z("%SystemRoot%\\inf");
        let new = extended_device_path(&old).unwrap();
        assert_eq!(
            new,
            utf16z("%SystemRoot%\\inf;%SystemRoot%\\Drivers\\VirtIO")
        );
        assert_eq!(extended_device_path(&new), None);
    }
}
