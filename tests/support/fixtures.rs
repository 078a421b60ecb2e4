//! Test disks built from reviewable inputs, as libguestfs builds its phony guests:
//! NTFS volumes made by `mkntfs` and filled through ntfs-3g's own FUSE driver (an
//! independent writer), spliced into MBR or GPT disks laid out by sfdisk / sgdisk,
//! converted with qemu-img.

use super::{run, s};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;

/// A file or directory to put into a volume.
pub enum Entry {
    File(&'static str, Vec<u8>),
    Dir(&'static str),
}

/// Makes an NTFS volume image of `size` bytes holding `entries`.
pub fn ntfs_volume(path: &Path, size: u64, label: &str, entries: &[Entry]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    run(
        "mkntfs",
        &[
            "-q",
            "-F",
            "-f",
            "-L",
            label,
            "-s",
            "512",
            "-p",
            "2048",
            "-H",
            "255",
            "-S",
            "63",
            s(path),
        ],
    );
    if entries.is_empty() {
        return;
    }
    add_entries(path, entries);
}

/// Writes `entries` into the NTFS volume image at `path` (through ntfs-3g's FUSE
/// driver).
pub fn add_entries(path: &Path, entries: &[Entry]) {
    with_fuse_mount(path, |mnt| {
        for e in entries {
            match e {
                Entry::Dir(d) => std::fs::create_dir_all(mnt.join(d)).unwrap(),
                Entry::File(p, data) => {
                    let dest = mnt.join(p);
                    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                    std::fs::write(dest, data).unwrap();
                }
            }
        }
    });
}

/// Mounts `volume` with ntfs-3g's FUSE driver (in the foreground, so that unmounting
/// waits for every write), runs `f`, unmounts.
pub fn with_fuse_mount(volume: &Path, f: impl FnOnce(&Path)) {
    let mnt = volume.with_extension("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new("ntfs-3g")
        .args([s(volume), s(&mnt), "-o", "no_detach"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("TEST CANNOT RUN: ntfs-3g missing (Debian ntfs-3g)");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        if mounts.contains(s(&std::fs::canonicalize(&mnt).unwrap())) {
            break;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("TEST CANNOT RUN: ntfs-3g FUSE mount failed ({st}); fixtures need /dev/fuse and root");
        }
        assert!(Instant::now() < deadline, "ntfs-3g did not mount in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    f(&mnt);
    // "target is busy" for a moment is possible while another test thread forks
    // (its child holds our descriptors until it execs): try again for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("umount").arg(&mnt).output().unwrap();
        if out.status.success() {
            break;
        }
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            why.contains("busy") && Instant::now() < deadline,
            "umount {}: {why}",
            mnt.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success(), "ntfs-3g failed");
    std::fs::remove_dir(&mnt).unwrap();
}

#[derive(Clone, Copy, PartialEq)]
pub enum Table {
    Mbr,
    Gpt,
}

/// One partition: its size and, for an NTFS one, the volume image to splice in.
pub struct Part {
    pub size: u64,
    pub volume: Option<PathBuf>,
    /// MBR type byte or sgdisk type code.
    pub kind: &'static str,
}

/// A raw disk of `size` bytes with `parts` laid out from sector 2048 on; returns
/// each partition's byte offset.
pub fn disk(path: &Path, size: u64, table: Table, parts: &[Part]) -> Vec<u64> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    match table {
        Table::Mbr => {
            let mut script = String::from("label: dos\n");
            for (i, p) in parts.iter().enumerate() {
                let boot = if i == 0 { ",*" } else { "" };
                script += &format!(",{}KiB,{}{boot}\n", p.size / 1024, p.kind);
            }
            sfdisk(path, &script);
        }
        Table::Gpt => {
            let mut args: Vec<String> = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                let n = i + 1;
                args.push(format!("-n{n}:0:+{}K", p.size / 1024));
                args.push(format!("-t{n}:{}", p.kind));
            }
            args.push(s(path).to_owned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run("sgdisk", &args);
        }
    }
    let json = super::run_json("sfdisk", &["--json", s(path)]);
    let offsets: Vec<u64> = json["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start"].as_u64().unwrap() * 512)
        .collect();
    for (p, off) in parts.iter().zip(&offsets) {
        if let Some(vol) = &p.volume {
            splice(vol, path, *off);
        }
    }
    offsets
}

/// Lays out `path` with an sfdisk script.
pub fn sfdisk(path: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .args(["-q", s(path)])
        .stdin(Stdio::piped())
        .spawn()
        .expect("TEST CANNOT RUN: sfdisk missing (Debian fdisk)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed");
}

/// A disk with one NTFS data partition and no Windows on it.
pub fn data_disk(dir: &Path) -> PathBuf {
    let vol = dir.join("data.ntfs");
    ntfs_volume(
        &vol,
        16 * MIB,
        "Data",
        &[Entry::File("readme.txt", b"hi".to_vec())],
    );
    let raw = dir.join("data.raw");
    disk(
        &raw,
        32 * MIB,
        Table::Mbr,
        &[Part {
            size: 16 * MIB,
            volume: Some(vol.clone()),
            kind: "7",
        }],
    );
    std::fs::remove_file(vol).unwrap();
    raw
}

/// Copies `volume` into `disk` at byte `offset`.
pub fn splice(volume: &Path, disk: &Path, offset: u64) {
    run(
        "dd",
        &[
            &format!("if={}", s(volume)),
            &format!("of={}", s(disk)),
            "bs=1M",
            &format!("seek={}", offset),
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

/// Copies `len` bytes at `offset` of a (possibly qcow2) image into a raw file, as a
/// user would with `qemu-img convert` + `dd`, for ntfs-3g's tools to read.
pub fn extract_partition(image: &Path, offset: u64, len: u64, out: &Path) {
    let raw = out.with_extension("whole.raw");
    run("qemu-img", &["convert", "-O", "raw", s(image), s(&raw)]);
    run(
        "dd",
        &[
            &format!("if={}", s(&raw)),
            &format!("of={}", s(out)),
            "bs=1M",
            &format!("skip={offset}"),
            &format!("count={len}"),
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ],
    );
    std::fs::remove_file(&raw).unwrap();
}

/// A minimal PE file: MZ header, PE signature, COFF header and the start of an
/// optional header (PE32 or PE32+, console subsystem). Enough for wingold's
/// architecture check and for `file` (which libguestfs' inspection asks).
pub fn minimal_pe(machine: u16) -> Vec<u8> {
    let plus = machine != MACHINE_I386;
    let mut b = vec![0u8; 1024];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&machine.to_le_bytes());
    b[0x86..0x88].copy_from_slice(&1u16.to_le_bytes()); // one section
    let (opt_size, characteristics, magic): (u16, u16, u16) = if plus {
        (0xf0, 0x0022, 0x20b)
    } else {
        (0xe0, 0x0102, 0x10b)
    };
    b[0x94..0x96].copy_from_slice(&opt_size.to_le_bytes());
    b[0x96..0x98].copy_from_slice(&characteristics.to_le_bytes());
    b[0x98..0x9a].copy_from_slice(&magic.to_le_bytes());
    b[0x98 + 68..0x98 + 70].copy_from_slice(&3u16.to_le_bytes()); // console
    b
}

pub const MACHINE_I386: u16 = 0x014c;
pub const MACHINE_AMD64: u16 = 0x8664;

/// The phony Windows' SYSTEM hive: the corpus hive, with `spec.system_reg` merged.
fn system_hive(dir: &Path, spec: &WindowsSpec) -> Vec<u8> {
    let hive = super::corpus_hive(dir, spec.system_hive);
    if let Some(reg) = spec.system_reg {
        let reg_path = super::repo().join("tests/fixtures").join(reg);
        run(
            "hivexregedit",
            &[
                "--merge",
                "--prefix",
                "HKEY_LOCAL_MACHINE\\SYSTEM",
                s(&hive),
                s(&reg_path),
            ],
        );
    }
    std::fs::read(&hive).unwrap()
}

/// A minimal PE image with a certificate table (an embedded signature as far as
/// the headers go): 16 data directories, directory 4 pointing at 8 bytes past
/// the headers.
pub fn signed_pe(machine: u16) -> Vec<u8> {
    let mut b = minimal_pe(machine);
    let opt = 0x98;
    let (count_at, dirs_at) = if machine == MACHINE_I386 {
        (opt + 92, opt + 96)
    } else {
        (opt + 108, opt + 112)
    };
    b[count_at..count_at + 4].copy_from_slice(&16u32.to_le_bytes());
    let cert = dirs_at + 4 * 8;
    b[cert..cert + 4].copy_from_slice(&0x300u32.to_le_bytes());
    b[cert + 4..cert + 8].copy_from_slice(&8u32.to_le_bytes());
    b[0x300..0x308].copy_from_slice(&[8, 0, 0, 0, 0, 2, 2, 0]);
    b
}

/// The PCI device ids (`DEV_…` legacy, modern) and class of a virtio-win driver
/// folder, as its INF lists them (kvm-guest-drivers-windows' `.inx` templates).
fn driver_ids(driver: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    const SCSI: &str = "{4D36E97B-E325-11CE-BFC1-08002BE10318}";
    const NET: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
    const SYSTEM: &str = "{4D36E97D-E325-11CE-BFC1-08002BE10318}";
    match driver.to_ascii_lowercase().as_str() {
        "viostor" => ("1001", "1042", SCSI, "00021AF4"),
        "vioscsi" => ("1004", "1048", SCSI, "00081AF4"),
        "netkvm" => ("1000", "1041", NET, "00011AF4"),
        "balloon" => ("1002", "1045", SYSTEM, "00051AF4"),
        "vioserial" => ("1003", "1043", SYSTEM, "00031AF4"),
        "viorng" => ("1005", "1044", SYSTEM, "00041AF4"),
        _ => ("10FF", "10FE", SYSTEM, "00FF1AF4"),
    }
}

/// What a fixture ISO file holds: PE images for binaries (for the folder's
/// architecture, signed), INF files that list the driver's ids, the path for the rest.
pub fn virtio_file(path: &str, version: &str) -> Vec<u8> {
    let parts: Vec<&str> = path.split('/').collect();
    let lower = path.to_ascii_lowercase();
    let machine = if parts.contains(&"x86") {
        MACHINE_I386
    } else if parts.contains(&"ARM64") {
        0xaa64
    } else {
        MACHINE_AMD64
    };
    if parts.len() >= 4
        && (lower.ends_with(".sys") || lower.ends_with(".exe") || lower.ends_with(".dll"))
    {
        let mut pe = signed_pe(machine);
        pe.extend_from_slice(path.as_bytes());
        return pe;
    }
    if parts.len() >= 4 && lower.ends_with(".inf") {
        return fixture_inf(path, &parts, machine, version).into_bytes();
    }
    path.as_bytes().to_vec()
}

/// An INF in the shape of the real ones. Folders for Windows XP and 2003 (`xp`,
/// `2k3`) follow the last builds for them (virtio-win-pkg-scripts
/// `data/old-drivers/Wnet`, `Wxp`: the legacy device only, under three subsystems,
/// no modern id, `[Manufacturer] %RHEL% = RHEL,NTx86`); the others follow the
/// `.inx` templates of kvm-guest-drivers-windows as stampinf renders them (legacy
/// and modern device, `SUBSYS_…1AF4&REV_…` then the bare device as compatible id).
fn fixture_inf(path: &str, parts: &[&str], machine: u16, version: &str) -> String {
    let (legacy, modern, class, s1) = driver_ids(parts[0]);
    let build: String = version.rsplit('.').next().unwrap_or("0").to_owned();
    let arch = if machine == MACHINE_I386 {
        "NTx86"
    } else {
        "NTamd64"
    };
    let cat = parts[parts.len() - 1].replace(".inf", ".cat");
    let driver = parts[0];
    let bus = if driver.eq_ignore_ascii_case("vioscsi") {
        "0x0000000A"
    } else {
        "0x00000001"
    };
    let old = parts
        .iter()
        .any(|p| p.eq_ignore_ascii_case("2k3") || p.eq_ignore_ascii_case("xp"));
    if old {
        return format!(
            "; {path}\r\n; Copyright (c) 2009, Red Hat Inc.\r\n[Version]\r\n\
             Signature=\"$Windows NT$\"\r\nClassGUID={class}\r\nProvider=%RHEL%\r\n\
             DriverVer=11/27/2012,52.64.104.{build} \r\nCatalogFile={cat}\r\n\r\n\
             [ControlFlags]\r\n;ExcludeFromSelect = *\r\n\r\n\
             [Manufacturer]\r\n%RHEL%   = RHEL,{arch}\r\n\r\n[RHEL.{arch}]\r\n\
             %Desc% = inst, PCI\\VEN_1AF4&DEV_{legacy}&SUBSYS_00000000\r\n\
             %Desc% = inst, PCI\\VEN_1AF4&DEV_{legacy}&SUBSYS_00020000\r\n\
             %Desc% = inst, PCI\\VEN_1AF4&DEV_{legacy}&SUBSYS_{s1}\r\n\r\n\
             [pnpsafe_pci_addreg]\r\n\
             HKR, \"Parameters\\PnpInterface\", \"5\", %REG_DWORD%, 0x00000001\r\n\
             HKR, \"Parameters\", \"BusType\", %REG_DWORD%, {bus}\r\n\r\n\
             [Strings]\r\nDesc = \"{driver} (wingold test fixture)\"\r\n\
             RHEL = \"Red Hat, Inc.\"\r\nREG_DWORD      = 0x00010001\r\n"
        );
    }
    format!(
        "; {path}\r\n[Version]\r\nSignature=\"$Windows NT$\"\r\nClassGUID={class}\r\n\
         Provider=%VENDOR%\r\nDriverVer=01/01/2025,100.95.104.{build}\r\nCatalogFile={cat}\r\n\
         PnpLockdown=1\r\n\r\n[ControlFlags]\r\n\r\n\
         [Manufacturer]\r\n%VENDOR%   = VioStor,{arch}\r\n\r\n[VioStor.{arch}]\r\n\
         %Desc% = inst, PCI\\VEN_1AF4&DEV_{legacy}&SUBSYS_{s1}&REV_00, PCI\\VEN_1AF4&DEV_{legacy}\r\n\
         %Desc% = inst, PCI\\VEN_1AF4&DEV_{modern}&SUBSYS_11001AF4&REV_01, PCI\\VEN_1AF4&DEV_{modern}\r\n\r\n\
         [pnpsafe_pci_addreg]\r\n\
         HKR, \"Parameters\\PnpInterface\", \"5\", %REG_DWORD%, 0x00000001\r\n\
         HKR, \"Parameters\", \"BusType\", %REG_DWORD%, {bus}\r\n\
         HKR, \"Parameters\", DmaRemappingCompatible,0x00010001,0\r\n\r\n\
         [Strings]\r\nVENDOR = \"Red Hat, Inc.\"\r\nDesc = \"{driver} (wingold test fixture)\"\r\n\
         REG_DWORD      = 0x00010001\r\n"
    )
}

/// A hive made by `hivexregedit --merge` of `tests/fixtures/<reg>` into an empty hive.
pub fn hive_from_reg(dir: &Path, reg: &str, prefix: &str) -> Vec<u8> {
    let out = dir.join(format!("{reg}.hive"));
    std::fs::write(&out, hivex::EMPTY_HIVE_TEMPLATE).unwrap();
    let reg_path = super::repo().join("tests/fixtures").join(reg);
    run(
        "hivexregedit",
        &["--merge", "--prefix", prefix, s(&out), s(&reg_path)],
    );
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// Which phony Windows to build.
pub struct WindowsSpec {
    /// `.reg` file under tests/fixtures for the SOFTWARE hive.
    pub software_reg: &'static str,
    pub machine: u16,
    pub table: Table,
    /// The system root folder as that Windows spells it.
    pub root: &'static str,
    /// Corpus hive used as SYSTEM (`SYSTEM`, or the dirty `SYSTEM_2`).
    pub system_hive: &'static str,
    /// A `.reg` under tests/fixtures merged into SYSTEM (the NT 6.2+ DriverDatabase).
    pub system_reg: Option<&'static str>,
}

pub const WIN2K3R2_X86: WindowsSpec = WindowsSpec {
    software_reg: "software-2k3r2-x86.reg",
    machine: MACHINE_I386,
    table: Table::Mbr,
    root: "WINDOWS",
    system_hive: "SYSTEM",
    system_reg: None,
};

pub const WIN2K22_X64: WindowsSpec = WindowsSpec {
    software_reg: "software-2k22-x64.reg",
    machine: MACHINE_AMD64,
    table: Table::Gpt,
    root: "Windows",
    system_hive: "SYSTEM",
    system_reg: Some("system-driverdatabase.reg"),
};

/// A phony Windows disk (qcow2) and where its Windows partition lies.
#[derive(Clone)]
pub struct PhonyWindows {
    pub image: PathBuf,
    pub win_offset: u64,
    pub win_size: u64,
    pub win_partition: u32,
}

pub const WIN_PART_SIZE: u64 = 96 * MIB;

/// Builds a disk with a small "System Reserved" NTFS partition and the Windows NTFS
/// partition holding the hives (SOFTWARE from .reg text, SYSTEM and SAM from the
/// shared corpus), transaction logs beside SYSTEM, and a minimal cmd.exe.
/// `extra` adds files to the Windows volume (e.g. a hiberfil.sys).
/// The benches' disk: a phony Windows Server 2022 on 2 GiB (its Windows partition
/// fills the disk).
pub fn phony_2k22_2gib(dir: &Path) -> PhonyWindows {
    shared_phony(dir, &WIN2K22_X64, 2032 * MIB)
}

pub fn phony_windows(dir: &Path, spec: &WindowsSpec, extra: Vec<Entry>) -> PhonyWindows {
    if extra.is_empty() {
        return shared_phony(dir, spec, WIN_PART_SIZE);
    }
    phony_windows_with(dir, spec, extra, |_| {})
}

/// A phony Windows without extras, built once per test process for each spec and
/// size and copied into `dir` for each test: building one (mkntfs, a FUSE mount,
/// sfdisk, qemu-img) costs seconds, a copy milliseconds. Each test still gets its
/// own image to change.
fn shared_phony(dir: &Path, spec: &WindowsSpec, win_size: u64) -> PhonyWindows {
    let key = format!(
        "{}-{}-{}-{}-{}-{}-{win_size}",
        spec.software_reg,
        spec.machine,
        spec.table == Table::Mbr,
        spec.root,
        spec.system_hive,
        spec.system_reg.unwrap_or("")
    );
    let built = built_once(&key, |at| {
        phony_windows_sized(at, spec, vec![], |_| {}, win_size)
    });
    std::fs::create_dir_all(dir).unwrap();
    let image = dir.join("phony.qcow2");
    std::fs::copy(&built.image, &image).unwrap();
    PhonyWindows { image, ..built }
}

/// What `build` makes, in a folder of its own under [`shared_dir`], once per test
/// process for each `key` (tests asking at the same time wait for the one build).
fn built_once<T: Clone + Send + Sync + 'static>(key: &str, build: impl FnOnce(&Path) -> T) -> T {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Cell = Arc<OnceLock<Box<dyn std::any::Any + Send + Sync>>>;
    static BUILT: OnceLock<Mutex<HashMap<String, Cell>>> = OnceLock::new();
    let cell = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .clone();
    let built = cell.get_or_init(|| {
        let at = shared_dir().join(key.replace(['.', '|'], "_"));
        std::fs::create_dir_all(&at).unwrap();
        Box::new(build(&at))
    });
    built.downcast_ref::<T>().expect("one type per key").clone()
}

/// This process's folder of shared fixtures, under cargo's scratch folder for
/// tests (the system's for examples); folders left by processes that have ended
/// are removed.
fn shared_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = super::profile_dir()
            .parent()
            .map(|target| target.join("tmp"))
            .unwrap_or_else(std::env::temp_dir)
            .join("wingold-shared-fixtures");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let pid = e.file_name().to_string_lossy().into_owned();
                if !Path::new("/proc").join(&pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = root.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// As [`phony_windows`], with `tweak` run on the Windows volume image before it is
/// spliced into the disk (to damage it, mark it dirty, …).
pub fn phony_windows_with(
    dir: &Path,
    spec: &WindowsSpec,
    extra: Vec<Entry>,
    tweak: impl FnOnce(&Path),
) -> PhonyWindows {
    phony_windows_sized(dir, spec, extra, tweak, WIN_PART_SIZE)
}

/// As [`phony_windows_with`], with a Windows partition of `win_size` bytes (the disk
/// is 16 MiB larger).
pub fn phony_windows_sized(
    dir: &Path,
    spec: &WindowsSpec,
    extra: Vec<Entry>,
    tweak: impl FnOnce(&Path),
    win_size: u64,
) -> PhonyWindows {
    let win = windows_volume(dir, spec, extra, tweak, win_size);
    let sysres = dir.join("sysres.ntfs");
    ntfs_volume(
        &sysres,
        8 * MIB,
        "System Reserved",
        &[Entry::File("bootmgr", b"phony".to_vec())],
    );
    let raw = dir.join("phony.raw");
    let kind =
        |mbr: &'static str, gpt: &'static str| if spec.table == Table::Mbr { mbr } else { gpt };
    let offsets = disk(
        &raw,
        win_size + 16 * MIB,
        spec.table,
        &[
            Part {
                size: 8 * MIB,
                volume: Some(sysres.clone()),
                kind: kind("7", "2700"),
            },
            Part {
                size: win_size,
                volume: Some(win.clone()),
                kind: kind("7", "0700"),
            },
        ],
    );
    let image = dir.join("phony.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&image)]);
    for f in [raw, sysres, win] {
        std::fs::remove_file(f).unwrap();
    }
    PhonyWindows {
        image,
        win_offset: offsets[1],
        win_size,
        win_partition: 2,
    }
}

/// A phony Windows laid out as a UEFI install lays it out on GPT: an EFI system
/// partition (FAT32 by mkfs.vfat, Windows' loader put in by mtools), the
/// Microsoft reserved partition (no file system), then Windows (partition 3).
pub fn phony_windows_uefi(dir: &Path, spec: &WindowsSpec) -> PhonyWindows {
    std::fs::create_dir_all(dir).unwrap();
    let win = windows_volume(dir, spec, vec![], |_| {}, WIN_PART_SIZE);
    let esp = dir.join("esp.fat");
    let f = std::fs::File::create(&esp).unwrap();
    f.set_len(40 * MIB).unwrap();
    drop(f);
    run("mkfs.vfat", &["-F", "32", "-n", "SYSTEM", s(&esp)]);
    let img = s(&esp).to_owned();
    for d in ["::EFI", "::EFI/Microsoft", "::EFI/Microsoft/Boot"] {
        run("mmd", &["-i", &img, d]);
    }
    let loader = dir.join("bootmgfw.efi");
    std::fs::write(&loader, minimal_pe(MACHINE_AMD64)).unwrap();
    run(
        "mcopy",
        &["-i", &img, s(&loader), "::EFI/Microsoft/Boot/bootmgfw.efi"],
    );
    let raw = dir.join("uefi.raw");
    let offsets = disk(
        &raw,
        WIN_PART_SIZE + 64 * MIB,
        Table::Gpt,
        &[
            Part {
                size: 40 * MIB,
                volume: Some(esp.clone()),
                kind: "EF00",
            },
            Part {
                size: 16 * MIB,
                volume: None,
                kind: "0C01",
            },
            Part {
                size: WIN_PART_SIZE,
                volume: Some(win.clone()),
                kind: "0700",
            },
        ],
    );
    let image = dir.join("phony-uefi.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&image)]);
    for f in [raw, esp, win, loader] {
        std::fs::remove_file(f).unwrap();
    }
    PhonyWindows {
        image,
        win_offset: offsets[2],
        win_size: WIN_PART_SIZE,
        win_partition: 3,
    }
}

/// The phony Windows volume itself: hives, logs, cmd.exe, a driver, `extra`,
/// then `tweak` on the volume image.
fn windows_volume(
    dir: &Path,
    spec: &WindowsSpec,
    extra: Vec<Entry>,
    tweak: impl FnOnce(&Path),
    win_size: u64,
) -> PathBuf {
    let config = format!("{}/System32/config", spec.root);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let entries = vec![
        Entry::File(leak(format!("{config}/SYSTEM")), system_hive(dir, spec)),
        Entry::File(
            leak(format!("{config}/SOFTWARE")),
            hive_from_reg(dir, spec.software_reg, "HKEY_LOCAL_MACHINE\\SOFTWARE"),
        ),
        Entry::File(
            leak(format!("{config}/SAM")),
            std::fs::read(super::corpus_hive(dir, "SAM")).unwrap(),
        ),
        Entry::File(leak(format!("{config}/SYSTEM.LOG1")), vec![0u8; 8192]),
        Entry::File(leak(format!("{config}/SYSTEM.LOG2")), Vec::new()),
        Entry::File(
            leak(format!("{}/System32/cmd.exe", spec.root)),
            minimal_pe(spec.machine),
        ),
        Entry::File(
            leak(format!("{}/System32/drivers/disk.sys", spec.root)),
            signed_pe(spec.machine),
        ),
        Entry::Dir("Program Files"),
    ];
    let win = dir.join("win.ntfs");
    ntfs_volume(&win, win_size, "Windows", &entries);
    // Windows protects its driver files (not the everyone-full-control descriptor
    // new files get from ntfs-3g): give them a descriptor of their own, as ntfs-3g's
    // ntfssecaudit makes from a mode.
    for (mode, path) in [
        ("644", format!("/{}/System32/drivers/disk.sys", spec.root)),
        ("755", format!("/{}/System32/drivers", spec.root)),
    ] {
        run("ntfssecaudit", &[s(&win), mode, &path]);
    }
    // Extras last: ntfssecaudit refuses a volume holding a hibernation file.
    if !extra.is_empty() {
        add_entries(&win, &extra);
    }
    tweak(&win);
    win
}

/// An NTFS volume whose free space is left only in small holes, then `file`
/// (`data`) written into it, so that its data lies in hundreds of runs:
/// fill with 8 KiB files, delete every other one, plug the larger free areas
/// (ntfs-3g's allocator takes the largest first) until about `data.len()` is free,
/// write the file, then delete the plugs.
pub fn fragmented_volume(path: &Path, size: u64, file: &str, data: &[u8]) {
    ntfs_volume(path, size, "Fragmented", &[]);
    with_fuse_mount(path, |mnt| {
        let fill = mnt.join("fill");
        let plug = mnt.join("plug");
        std::fs::create_dir(&fill).unwrap();
        std::fs::create_dir(&plug).unwrap();
        let small = vec![0x5au8; 8192];
        let mut n = 0;
        while std::fs::write(fill.join(format!("f{n}")), &small).is_ok() {
            n += 1;
        }
        for i in (0..=n).step_by(2) {
            let _ = std::fs::remove_file(fill.join(format!("f{i}")));
        }
        let avail = || {
            let st = nix::sys::statvfs::statvfs(mnt).unwrap();
            st.blocks_available() as u64 * st.fragment_size() as u64
        };
        let chunk = vec![0xa5u8; 65536];
        let mut k = 0;
        while avail() > data.len() as u64 + 300 * 1024 {
            std::fs::write(plug.join(format!("p{k}")), &chunk).unwrap();
            k += 1;
        }
        std::fs::write(mnt.join(file), data).unwrap();
        // Room to grow, in the plugs' places: libntfs-3g cannot grow a file into a
        // nearly full volume of tiny holes.
        std::fs::remove_dir_all(&plug).unwrap();
    });
}

/// How many runs the data of `file` has, as ntfsinfo counts them.
pub fn run_count(volume: &Path, file: &str) -> usize {
    let out = run("ntfsinfo", &["-v", "-F", file, s(volume)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Total runs:"))
        .unwrap_or_else(|| panic!("ntfsinfo printed no run count for {file}"));
    line["Total runs:".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Where an NTFS volume image keeps `$Volume`'s MFT record (record 3) in `$MFT` and
/// in `$MFTMirr`, and how long a record is — by the boot sector.
fn volume_records(v: &[u8]) -> ([usize; 2], usize) {
    let u16_at = |at: usize| u16::from_le_bytes([v[at], v[at + 1]]) as usize;
    let cluster = u16_at(0x0b) * v[0x0d] as usize;
    let lcn = |at: usize| u64::from_le_bytes(v[at..at + 8].try_into().unwrap()) as usize;
    let per = v[0x40] as i8;
    let len = if per < 0 {
        1usize << -per
    } else {
        per as usize * cluster
    };
    let record = |base: usize| {
        let r = base + 3 * len;
        assert_eq!(
            &v[r..r + 4],
            b"FILE",
            "no MFT record 3 where the boot sector says"
        );
        r
    };
    (
        [record(lcn(0x30) * cluster), record(lcn(0x38) * cluster)],
        len,
    )
}

/// The offset, within `$Volume`'s MFT record, of the flags of its
/// `$VOLUME_INFORMATION` (VOLUME_IS_DIRTY is bit 0).
fn volume_flags_in(record: &[u8]) -> usize {
    let u16_at = |at: usize| u16::from_le_bytes([record[at], record[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().unwrap());
    let mut at = u16_at(0x14);
    loop {
        let (kind, len) = (u32_at(at), u32_at(at + 4) as usize);
        assert!(
            kind != 0xffff_ffff && len > 0,
            "$VOLUME_INFORMATION not found"
        );
        if kind == 0x70 {
            return at + u16_at(at + 0x14) + 0x0a;
        }
        at += len;
    }
}

/// Sets the `$Volume` dirty flag (VOLUME_IS_DIRTY in `$VOLUME_INFORMATION`) in an
/// NTFS volume image, in `$MFT` and `$MFTMirr` alike, as Windows leaves it when
/// chkdsk is due.
pub fn set_volume_dirty(volume: &Path) {
    let mut v = std::fs::read(volume).unwrap();
    let (records, len) = volume_records(&v);
    for r in records {
        let flags = r + volume_flags_in(&v[r..r + len]);
        v[flags] |= 1;
    }
    std::fs::write(volume, v).unwrap();
}

/// Whether an NTFS volume's bytes say it is dirty, as `$MFT` (what Windows mounts
/// by) says it — read by the on-disk format (update sequence fixups applied), not
/// by ntfs-3g, which will not mount a volume whose `$MFTMirr` disagrees.
pub fn volume_is_dirty(volume: &[u8]) -> bool {
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let ([start, _], len) = volume_records(volume);
    let mut rec = volume[start..start + len].to_vec();
    let (usa, count) = (u16_at(&rec, 4), u16_at(&rec, 6));
    for i in 1..count {
        let end = i * 512 - 2;
        assert_eq!(rec[end..end + 2], rec[usa..usa + 2], "torn MFT record 3");
        rec[end] = rec[usa + 2 * i];
        rec[end + 1] = rec[usa + 2 * i + 1];
    }
    rec[volume_flags_in(&rec)] & 1 != 0
}

/// A virtio-win ISO with the real layout: every path of
/// `../shared/reference/virtio-win-iso-list.txt` (plus the frozen 2003 drivers the
/// fedorapeople ISOs carry), made by xorriso with Rock Ridge and the volume id
/// `virtio-win-<version>`. Files hold their own path (and `pad` bytes of filler in
/// the licence file, to make the ISO as large as a test needs).
pub fn virtio_iso(dir: &Path, version: &str, pad: usize) -> PathBuf {
    // A thousand files and xorriso: built once per test process, copied per test.
    let built = built_once(&format!("iso-{version}-{pad}"), |at| {
        virtio_iso_with(at, version, pad, |_, _| true)
    });
    std::fs::create_dir_all(dir).unwrap();
    let iso = dir.join(built.file_name().unwrap());
    std::fs::copy(&built, &iso).unwrap();
    iso
}

/// As [`virtio_iso`], with `tweak` run on each file's bytes (by ISO path) before
/// the image is made: a wrong machine, a missing signature, an INF without ids;
/// a file for which it returns false is left out.
pub fn virtio_iso_with(
    dir: &Path,
    version: &str,
    pad: usize,
    tweak: impl Fn(&str, &mut Vec<u8>) -> bool,
) -> PathBuf {
    let shared = std::env::var_os("WINGOLD_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo().join("../shared"));
    let list = shared.join("reference/virtio-win-iso-list.txt");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "TEST CANNOT RUN: {} ({e}); set WINGOLD_SHARED to the shared folder",
            list.display()
        )
    });
    let tree = dir.join(format!("iso-tree-{version}"));
    let _ = std::fs::remove_dir_all(&tree);
    let mut paths: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    for arch in ["x86", "amd64"] {
        for f in ["viostor.inf", "viostor.sys", "viostor.cat"] {
            paths.push(format!("viostor/2k3/{arch}/{f}"));
        }
        for f in ["netkvm.inf", "netkvm.sys", "netkvm.cat"] {
            paths.push(format!("NetKVM/2k3/{arch}/{f}"));
        }
        for f in ["balloon.inf", "balloon.sys", "balloon.cat", "blnsvr.exe"] {
            paths.push(format!("Balloon/2k3/{arch}/{f}"));
        }
    }
    for p in &paths {
        let full = tree.join(p);
        let mut data = virtio_file(p, version);
        if tweak(p, &mut data) {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, data).unwrap();
        }
    }
    let mut pad_data = format!("virtio-win {version}\n").into_bytes();
    pad_data.resize(pad.max(pad_data.len()), b'.');
    std::fs::write(tree.join("virtio-win_license.txt"), pad_data).unwrap();
    let iso = dir.join(format!("virtio-win-{version}.iso"));
    let label = format!("virtio-win-{version}");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-r",
            "-iso-level",
            "4",
            "-V",
            &label,
            "-o",
            s(&iso),
            s(&tree),
        ],
    );
    std::fs::remove_dir_all(&tree).unwrap();
    iso
}
