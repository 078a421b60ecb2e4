//! Which folder of the virtio-win ISO holds a driver for a given Windows:
//! `<Driver>/<os>/<arch>/`, with the aliases of the ISO's build-to-folder map
//! (virtio-win-pkg-scripts `util/filemap.py`): the w10 build serves 2k16, 2k19 and 2k22, the
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

/// OS folders the ISO fills from one build (§5b): when the first is missing, the
/// second holds the same driver.
const SAME_BUILD: &[(&str, &str)] = &[
    ("2k8R2", "w7"),
    ("2k12", "w8"),
    ("2k12R2", "w8.1"),
    ("2k16", "w10"),
    ("2k19", "w10"),
    ("2k22", "w10"),
    ("2k25", "w11"),
];

/// The folders to try for ISO OS code `os` on `arch` (an ISO arch folder): `os`,
/// then the folder built the same should it be missing. `xp/amd64` is the 2003
/// amd64 build (XP x64 is NT 5.2); XP x86 is a build of its own, with no stand-in.
pub fn folders_for(os: &str, arch: &str) -> Vec<String> {
    let alias = SAME_BUILD
        .iter()
        .find(|(o, _)| *o == os)
        .map(|(_, a)| *a)
        .or((os == "xp" && arch == "amd64").then_some("2k3"));
    std::iter::once(os.to_owned())
        .chain(alias.map(str::to_owned))
        .collect()
}

/// The ISO's OS folder for a Windows version (§0); None for versions it has none for.
fn os_folder(t: &Target) -> Option<&'static str> {
    let p = &t.product_name;
    Some(match (t.major, t.minor) {
        (5, 1) => "xp",
        (5, 2) if !t.server => "xp",
        (5, 2) => "2k3",
        (6, 0) => "2k8",
        (6, 1) if t.server => "2k8R2",
        (6, 1) => "w7",
        (6, 2) if t.server => "2k12",
        (6, 2) => "w8",
        (6, 3) if t.server => "2k12R2",
        (6, 3) => "w8.1",
        (10, 0) if t.server && p.contains("2025") => "2k25",
        (10, 0) if t.server && p.contains("2022") => "2k22",
        (10, 0) if t.server && p.contains("2019") => "2k19",
        (10, 0) if t.server => "2k16",
        (10, 0) if t.windows11 => "w11",
        (10, 0) => "w10",
        _ => return None,
    })
}

/// The folders to try for a Windows: its own, then the one built the same.
pub fn os_folders(t: &Target) -> Vec<String> {
    os_folder(t)
        .map(|os| folders_for(os, arch_folder(&t.arch)))
        .unwrap_or_default()
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
pub fn pick(folders: &[String], os: &[String], arch: &str) -> Vec<Pick> {
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
    fn stand_ins_follow_the_build_map() {
        assert_eq!(folders_for("2k22", "amd64"), ["2k22", "w10"]);
        assert_eq!(folders_for("2k25", "amd64"), ["2k25", "w11"]);
        assert_eq!(folders_for("w10", "x86"), ["w10"]);
        // The 2003 amd64 build fills xp/amd64; XP x86 has its own build.
        assert_eq!(folders_for("xp", "amd64"), ["xp", "2k3"]);
        assert_eq!(folders_for("xp", "x86"), ["xp"]);
        let mut xp64 = t(5, 2, 3790, false, "Microsoft Windows XP");
        assert_eq!(os_folders(&xp64), ["xp", "2k3"]);
        xp64.arch = "x86".into();
        xp64.minor = 1;
        assert_eq!(os_folders(&xp64), ["xp"]);
        assert!(os_folders(&t(4, 0, 1381, true, "NT 4")).is_empty());
    }

    #[test]
    fn folders_by_version() {
        let table = [
            (5, 2, 3790, true, "Windows Server 2003 R2", "2k3"),
            (6, 1, 7601, true, "Windows Server 2008 R2", "2k8R2"),
            (6, 3, 9600, true, "Windows Server 2012 R2", "2k12R2"),
            (10, 0, 19045, false, "Windows 10 Pro", "w10"),
            (10, 0, 22631, false, "Windows 10 Pro", "w11"),
            (10, 0, 17763, true, "Windows Server 2019", "2k19"),
            (10, 0, 20348, true, "Windows Server 2022", "2k22"),
            (10, 0, 26100, true, "Windows Server 2025", "2k25"),
        ];
        for (major, minor, build, server, product, folder) in table {
            let got = os_folders(&t(major, minor, build, server, product));
            assert_eq!(got[0], folder, "{product} build {build}");
        }
    }
}
