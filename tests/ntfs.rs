//! The NTFS engine against ntfs-3g's own tools: what wingold writes into a volume
//! inside a qcow2 overlay, `ntfscat` reads back byte-identical and `ntfsfix -n`
//! finds nothing to fix; the base image is never touched.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use support::fixtures::{self, Entry, Part, Table, MIB};
use support::*;
use wingold::image::{self, create_overlay, Access, BlockDev, PartitionView};
use wingold::ntfs::{self, Volume};

const HIVE: &str = "Windows/System32/config/SYSTEM";

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    base: PathBuf,
    win_offset: u64,
    win_size: u64,
}

/// An MBR disk: a 16 MiB "System Reserved" NTFS and a 112 MiB Windows NTFS holding
/// an 11 MiB hive and a few small files, as qcow2.
fn fixture() -> Fixture {
    let tmp = tempdir();
    let dir = tmp.path().to_owned();
    let sysres = dir.join("sysres.ntfs");
    fixtures::ntfs_volume(
        &sysres,
        16 * MIB,
        "System Reserved",
        &[Entry::File("bootmgr", b"boot".to_vec())],
    );
    let win = dir.join("win.ntfs");
    let win_size = 112 * MIB;
    fixtures::ntfs_volume(
        &win,
        win_size,
        "Windows",
        &[
            Entry::File(HIVE, pattern(1, 11 * MIB as usize)),
            Entry::File("Windows/System32/config/SOFTWARE", pattern(2, 300_000)),
            Entry::File("Windows/win.ini", b"[fonts]\r\n".to_vec()),
            Entry::Dir("Program Files"),
        ],
    );
    let raw = dir.join("disk.raw");
    let offsets = fixtures::disk(
        &raw,
        160 * MIB,
        Table::Mbr,
        &[
            Part {
                size: 16 * MIB,
                volume: Some(sysres),
                kind: "7",
            },
            Part {
                size: win_size,
                volume: Some(win),
                kind: "7",
            },
        ],
    );
    let base = dir.join("base.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&base)]);
    std::fs::remove_file(&raw).unwrap();
    Fixture {
        _dir: tmp,
        dir,
        base,
        win_offset: offsets[1],
        win_size,
    }
}

fn ntfscat(volume: &Path, path: &str) -> Vec<u8> {
    run("ntfscat", &[s(volume), path]).stdout
}

fn assert_ntfsfix_clean(volume: &Path) {
    let out = run("ntfsfix", &["-n", s(volume)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("processed successfully"),
        "ntfsfix -n: {text}"
    );
}

#[test]
fn replaced_and_new_files_read_back_with_ntfscat() {
    let fx = fixture();
    let base_sha = sha256_file(&fx.base);
    let top = fx.dir.join("top.qcow2");
    create_overlay(&top, &fx.base).unwrap();

    let grown = pattern(10, 20 * MIB as usize);
    let same = pattern(11, 300_000);
    let shrunk = b"[fonts]".to_vec();
    let new_file = pattern(12, 70_000);
    {
        let img = image::open(&top, Access::ReadWrite).unwrap();
        let part = PartitionView::new(&img, fx.win_offset, fx.win_size).unwrap();
        let vol = Volume::open(&part, "partition 2", Access::ReadWrite).unwrap();
        // Case-insensitive lookups, as Windows spells paths every way.
        assert_eq!(
            vol.read_file("windows\\SYSTEM32\\Config\\system")
                .unwrap()
                .len(),
            11 * MIB as usize
        );
        vol.write_file("Windows\\System32\\config\\SYSTEM", &grown)
            .unwrap();
        vol.write_file("WINDOWS/system32/CONFIG/software", &same)
            .unwrap();
        vol.write_file("Windows/win.ini", &shrunk).unwrap();
        vol.mkdir_p("Windows/Temp/wingold/drivers").unwrap();
        vol.write_file("Windows/Temp/wingold/drivers/viostor.inf", &new_file)
            .unwrap();
        vol.close().unwrap();
        img.flush().unwrap();
    }
    assert_eq!(
        sha256_file(&fx.base),
        base_sha,
        "the base image was written"
    );
    assert_qemu_check_clean(&top);

    let part = fx.dir.join("part2.raw");
    fixtures::extract_partition(&top, fx.win_offset, fx.win_size, &part);
    assert!(ntfscat(&part, "/Windows/System32/config/SYSTEM") == grown);
    assert!(ntfscat(&part, "/Windows/System32/config/SOFTWARE") == same);
    assert_eq!(ntfscat(&part, "/Windows/win.ini"), shrunk);
    assert!(ntfscat(&part, "/Windows/Temp/wingold/drivers/viostor.inf") == new_file);
    assert_ntfsfix_clean(&part);
    let listing = run("ntfsls", &["-f", s(&part), "-p", "/Windows/Temp/wingold"]);
    assert!(String::from_utf8_lossy(&listing.stdout).contains("drivers"));
}

#[test]
fn listing_and_reading_match_ntfsls_and_ntfscat() {
    let fx = fixture();
    let img = image::open(&fx.base, Access::ReadOnly).unwrap();
    let part = PartitionView::new(&img, fx.win_offset, fx.win_size).unwrap();
    let vol = Volume::open(&part, "partition 2", Access::ReadOnly).unwrap();
    let names: Vec<String> = vol
        .list("Windows")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["System32", "win.ini"]);
    let raw = fx.dir.join("part2.raw");
    fixtures::extract_partition(&fx.base, fx.win_offset, fx.win_size, &raw);
    assert!(vol.read_file(HIVE).unwrap() == ntfscat(&raw, &format!("/{HIVE}")));
    let state = vol.state().unwrap();
    assert_eq!(state.label, "Windows");
    assert!(!state.dirty && state.hibernated.is_none());
    assert!(matches!(
        vol.read_file("Windows/nope.txt"),
        Err(ntfs::Error::NotFound { .. })
    ));
}

#[test]
fn read_only_volume_refuses_writes() {
    let fx = fixture();
    let img = image::open(&fx.base, Access::ReadOnly).unwrap();
    let part = PartitionView::new(&img, fx.win_offset, fx.win_size).unwrap();
    let vol = Volume::open(&part, "partition 2", Access::ReadOnly).unwrap();
    assert!(matches!(
        vol.write_file("Windows/win.ini", b"x"),
        Err(ntfs::Error::ReadOnly)
    ));
    let rw = Volume::open(&part, "partition 2", Access::ReadWrite);
    assert!(rw.is_err(), "a read-only image gave a writable volume");
    let _ = img.len();
}

#[test]
fn fragmented_file_is_replaced_grown_and_shrunk() {
    let dir = tempdir();
    let vol = dir.path().join("frag.ntfs");
    let original = pattern(20, 3_000_000);
    fixtures::fragmented_volume(&vol, 32 * MIB, "hive", &original);
    let runs = fixtures::run_count(&vol, "/hive");
    assert!(
        runs >= 150,
        "the fixture is not fragmented enough: {runs} runs"
    );

    let raw = dir.path().join("frag.raw");
    let offsets = fixtures::disk(
        &raw,
        40 * MIB,
        Table::Gpt,
        &[Part {
            size: 32 * MIB,
            volume: Some(vol.clone()),
            kind: "0700",
        }],
    );
    let mut previous = original;
    for (round, len) in [3_500_000usize, 1_000_000, 3_000_000]
        .into_iter()
        .enumerate()
    {
        let data = pattern(30 + round as u64, len);
        {
            let img = image::open(&raw, Access::ReadWrite).unwrap();
            let part = PartitionView::new(&img, offsets[0], 32 * MIB).unwrap();
            let v = Volume::open(&part, "fragmented", Access::ReadWrite).unwrap();
            assert!(
                v.read_file("HIVE").unwrap() == previous,
                "round {round}: read differs"
            );
            v.write_file("hive", &data)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            v.close().unwrap();
            img.flush().unwrap();
        }
        fixtures::extract_partition(&raw, offsets[0], 32 * MIB, &vol);
        assert!(
            ntfscat(&vol, "/hive") == data,
            "round {round}: ntfscat differs"
        );
        assert_ntfsfix_clean(&vol);
        previous = data;
    }
}
