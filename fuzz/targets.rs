//! The fuzz targets: each takes bytes an attacker could hand wingold (a disk
//! image, a partition table, a disc, a .reg file, a hive and its logs, an INF, a
//! PE file) and runs the parser that reads them, the way wingold does. An error
//! is a fine answer; a panic, a crash, a hang or a runaway allocation is a bug.
//!
//! Shared by the fuzzer (`fuzz/main.rs`, built by scripts/fuzz.sh with AFL++'s
//! instrumentation) and the regression test (`tests/fuzz_regressions.rs`), which
//! replays every crash the fuzzer ever found.

use std::path::{Path, PathBuf};
use wingold::image::BlockDev;

/// A fuzz target: bytes in, nothing out (it must only end).
pub type Target = fn(&[u8]);

/// Each target by the name `make fuzz` and the crash folders use.
pub const TARGETS: &[(&str, Target)] = &[
    ("qcow2", qcow2),
    ("partitions", partitions),
    ("iso9660", iso9660),
    ("installer", installer),
    ("wim_xml", wim_xml),
    ("reg", reg),
    ("hive_index", hive_index),
    ("replay", replay),
    ("inf", inf),
    ("pe", pe),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// `data` as a file (the readers that take a path): one per process, in memory
/// where the system has /dev/shm, rewritten for each input. It is unlinked as
/// soon as it is made and named through /proc/self/fd, so nothing is left
/// behind however the process ends (afl-fuzz kills its last one).
fn as_file(data: &[u8]) -> PathBuf {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    static FILE: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("wingold-fuzz-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("the fuzz input file can be made");
        let _ = std::fs::remove_file(&path);
        file
    });
    file.set_len(0).expect("the fuzz input file can be emptied");
    file.write_all_at(data, 0)
        .expect("the fuzz input file can be written");
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// A qcow2 (or raw) image: its header, backing chain, L1/L2 and refcount walk —
/// reads spread over the whole disk, then its partition table.
pub fn qcow2(data: &[u8]) {
    let path = as_file(data);
    let _ = wingold::image::backing_files(&path);
    let Ok(img) = wingold::image::open(&path, wingold::image::Access::ReadOnly) else {
        return;
    };
    let len = img.len();
    let mut buf = vec![0u8; 4096];
    for i in 0..64u64 {
        let at = (len / 64).saturating_mul(i) & !4095;
        let n = buf.len().min(len.saturating_sub(at) as usize);
        let _ = img.read_at(at, &mut buf[..n]);
        let _ = img.allocated(at, 1 << 16);
    }
    let _ = wingold::image::scan_partitions(&img, &path);
}

/// Bytes as a disk: what `scan_partitions` reads through.
struct Memory(Vec<u8>);

impl BlockDev for Memory {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> wingold::image::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len());
        match end {
            Some(end) => {
                buf.copy_from_slice(&self.0[offset as usize..end as usize]);
                Ok(())
            }
            None => Err(wingold::image::Error::OutOfRange {
                offset,
                len: buf.len(),
                size: self.len(),
            }),
        }
    }

    fn write_at(&self, _offset: u64, _buf: &[u8]) -> wingold::image::Result<()> {
        Err(wingold::image::Error::ReadOnly {
            path: PathBuf::from("fuzz.img"),
        })
    }

    fn flush(&self) -> wingold::image::Result<()> {
        Ok(())
    }

    fn is_writable(&self) -> bool {
        false
    }
}

/// MBR (with extended partitions) and GPT, from a raw disk's first sectors.
pub fn partitions(data: &[u8]) {
    let disk = Memory(data.to_vec());
    if let Ok(table) = wingold::image::scan_partitions(&disk, Path::new("fuzz.img")) {
        for p in &table.partitions {
            if let Ok(view) = wingold::image::PartitionView::new(&disk, p.start, p.size) {
                let _ = wingold::image::probe_filesystem(&view);
            }
        }
    }
}

/// A virtio-win ISO as wingold reads it: the ISO 9660 tree (Rock Ridge names,
/// multi-extent files) and the head of every file.
pub fn iso9660(data: &[u8]) {
    let path = as_file(data);
    let _ = wingold::media::iso9660::volume_id(&path);
    let Ok(iso) = wingold::media::iso9660::Iso::open(&path) else {
        return;
    };
    if let Ok(entries) = iso.list() {
        for e in entries.iter().filter(|e| !e.is_dir).take(64) {
            let _ = iso.read_head(e, 4096);
        }
    }
}

/// A Windows installer disc: UDF (else ISO 9660), then the WIM header and XML.
pub fn installer(data: &[u8]) {
    let path = as_file(data);
    let _ = wingold::media::installer_images(&path);
}

/// A WIM's XML resource (UTF-16), as `--list-editions` reads it.
pub fn wim_xml(data: &[u8]) {
    let _ = wingold::media::wim::images(data, Path::new("fuzz.wim"));
}

/// A .reg file.
pub fn reg(data: &[u8]) {
    let _ = wingold::reg::parse(data, "fuzz.reg");
}

/// A hive through wingold's own reader: its structure audit, then every key
/// (to a bound) with its values.
pub fn hive_index(data: &[u8]) {
    let _ = wingold::hive::index::check_structure(data);
    let Ok(view) = wingold::hive::View::open("SYSTEM", data) else {
        return;
    };
    let mut queue = vec![String::new()];
    let mut seen = 0;
    while let Some(key) = queue.pop() {
        seen += 1;
        if seen > 2000 {
            break;
        }
        let _ = view.values(&key);
        if let Ok(subkeys) = view.subkeys(&key) {
            for s in subkeys.into_iter().take(64) {
                queue.push(if key.is_empty() {
                    s
                } else {
                    format!("{key}\\{s}")
                });
            }
        }
    }
}

/// A dirty hive and its two logs, framed as `len32 hive len32 log1 log2`
/// (little-endian lengths; what is short is empty): the replay Windows does on
/// boot, done offline.
pub fn replay(data: &[u8]) {
    let (hive, rest) = take_framed(data);
    let (log1, log2) = take_framed(rest);
    let mut bytes = hive.to_vec();
    let logs = [
        wingold::hive::replay::LogFile {
            name: "SYSTEM.LOG1",
            bytes: log1,
        },
        wingold::hive::replay::LogFile {
            name: "SYSTEM.LOG2",
            bytes: log2,
        },
    ];
    let _ = wingold::hive::replay::log_marks(&logs);
    if let Some(head) = bytes.first_chunk() {
        let _ = wingold::hive::replay::in_progress_base_block(head, &logs);
    }
    if wingold::hive::replay::recover("SYSTEM", &mut bytes, &logs).is_ok() {
        let _ = wingold::hive::index::check_structure(&bytes);
    }
}

/// The first `len32`-framed piece of `data` and what follows it.
pub fn take_framed(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (&[], &[]);
    }
    let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let rest = &data[4..];
    let len = len.min(rest.len());
    (&rest[..len], &rest[len..])
}

/// `len32 a len32 b rest`: how the replay seeds are made.
pub fn frame(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// An INF file (UTF-16 or 8-bit), as the driver layer reads one.
pub fn inf(data: &[u8]) {
    let inf = wingold::drivers::inf::parse(&wingold::drivers::inf::decode(data));
    let _ = inf.version();
    let _ = inf.lists_device("VEN_1AF4&DEV_1001");
}

/// A PE file's headers (a driver's machine type).
pub fn pe(data: &[u8]) {
    let _ = wingold::drivers::pe::parse(data);
}
