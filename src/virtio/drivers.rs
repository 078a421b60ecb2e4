//! Which folder of the virtio-win ISO holds a driver for a given Windows:
//! `<Driver>/<os>/<arch>/`, with the aliases of the ISO's build-to-folder map
//! (reference/windows-offline.md §5b): the w10 build serves 2k16, 2k19 and 2k22, the
//! w11 build 2k25, w7 2k8R2, w8 2k12, w8.1 2k12R2, and the 2003 amd64 build XP x64.

use serde::Serialize;

/// What decides the folder: version, client or server, product name, build, arch.
#[derive(Debug, Clone)]
pub struct Target {
    pub major: u32,
    pub minor: u32,
    /// Windows 11 (a 10.0 client from build 22000 on), as the finder of Windows says.
    pub windows11: bool,
    pub server: bool,
    pub product_name: String,
    /// `x86`, `x64` or `arm64`.
    pub arch: String,
}

/// The ISO's OS folder name for a Windows version, and the folders that carry the
/// same build should that one be missing.
pub fn os_folders(t: &Target) -> Vec<&'static str> {
    let p = &t.product_name;
    match (t.major, t.minor) {
        (5, 1) => vec!["xp"],
        (5, 2) if !t.server => vec!["xp", "2k3"],
        (5, 2) => vec!["2k3"],
        (6, 0) => vec!["2k8"],
        (6, 1) if t.server => vec!["2k8R2", "w7"],
        (6, 1) => vec!["w7"],
        (6, 2) if t.server => vec!["2k12", "w8"],
        (6, 2) => vec!["w8"],
        (6, 3) if t.server => vec!["2k12R2", "w8.1"],
        (6, 3) => vec!["w8.1"],
        (10, 0) if t.server => {
            if p.contains("2025") {
                vec!["2k25", "w11"]
            } else if p.contains("2022") {
                vec!["2k22", "w10"]
            } else if p.contains("2019") {
                vec!["2k19", "w10"]
            } else {
                vec!["2k16", "w10"]
            }
        }
        (10, 0) if t.windows11 => vec!["w11"],
        (10, 0) => vec!["w10"],
        _ => vec![],
    }
}

/// The ISO's architecture folder name.
pub fn arch_folder(arch: &str) -> &'static str {
    match arch {
        "x86" => "x86",
        "arm64" => "ARM64",
        _ => "amd64",
    }
}

/// One driver and the folder picked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pick {
    pub driver: String,
    /// `viostor/2k3/x86`.
    pub folder: String,
    /// True when an alias folder was taken because the exact one is missing.
    pub alias: bool,
}

/// For every driver on the ISO (from its list of folders), the folder to use for
/// `os`/`arch` (the first of `os` that exists), sorted by driver name.
pub fn pick(folders: &[String], os: &[&str], arch: &str) -> Vec<Pick> {
    let mut drivers: Vec<&str> = folders
        .iter()
        .filter_map(|f| {
            let parts: Vec<&str> = f.split('/').collect();
            (parts.len() == 3).then_some(parts[0])
        })
        .collect();
    drivers.sort_unstable();
    drivers.dedup();
    let mut out = Vec::new();
    for d in drivers {
        for (i, o) in os.iter().enumerate() {
            let folder = format!("{d}/{o}/{arch}");
            if folders.iter().any(|f| f.eq_ignore_ascii_case(&folder)) {
                out.push(Pick {
                    driver: d.to_owned(),
                    folder,
                    alias: i > 0,
                });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(major: u32, minor: u32, build: u32, server: bool, product: &str) -> Target {
        Target {
            major,
            minor,
            windows11: build >= 22000,
            server,
            product_name: product.into(),
            arch: "x64".into(),
        }
    }

    #[test]
    fn folders_by_version() {
        assert_eq!(
            os_folders(&t(5, 2, 3790, true, "Windows Server 2003 R2"))[0],
            "2k3"
        );
        assert_eq!(
            os_folders(&t(6, 1, 7601, true, "Windows Server 2008 R2"))[0],
            "2k8R2"
        );
        assert_eq!(
            os_folders(&t(6, 3, 9600, true, "Windows Server 2012 R2"))[0],
            "2k12R2"
        );
        assert_eq!(
            os_folders(&t(10, 0, 19045, false, "Windows 10 Pro"))[0],
            "w10"
        );
        assert_eq!(
            os_folders(&t(10, 0, 22631, false, "Windows 10 Pro"))[0],
            "w11"
        );
        assert_eq!(
            os_folders(&t(10, 0, 17763, true, "Windows Server 2019"))[0],
            "2k19"
        );
        assert_eq!(
            os_folders(&t(10, 0, 20348, true, "Windows Server 2022"))[0],
            "2k22"
        );
        assert_eq!(
            os_folders(&t(10, 0, 26100, true, "Windows Server 2025"))[0],
            "2k25"
        );
    }
}
