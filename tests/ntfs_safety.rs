//! Volumes that are unsafe to write are refused before anything is written, with
//! what to do in Windows; the image stays byte-identical.

use wingold_test_support as support;

use std::path::Path;
use support::fixtures::{self, Entry, Part, Table, MIB};
use support::*;
use wingold::error::{Classify, Kind};
use wingold::image::{self, Access, PartitionView};
use wingold::ntfs::{Error, Volume};

/// A GPT disk image (qcow2) with one 32 MiB partition holding `volume`.
fn disk_with(dir: &Path, volume: &Path) -> (std::path::PathBuf, u64) {
    let raw = dir.join("disk.raw");
    let offsets = fixtures::disk(
        &raw,
        48 * MIB,
        Table::Gpt,
        &[Part {
            size: 32 * MIB,
            volume: Some(volume.to_owned()),
            kind: "0700",
        }],
    );
    let qcow = dir.join("disk.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&raw), s(&qcow)]);
    (qcow, offsets[0])
}

fn open_rw(image_path: &Path, offset: u64) -> Result<(), Error> {
    let img = image::open(image_path, Access::ReadWrite).unwrap();
    let part = PartitionView::new(&img, offset, 32 * MIB).unwrap();
    Volume::open(&part, "partition 1", Access::ReadWrite).map(|v| v.close().unwrap())
}

fn refused(volume: &Path, check: impl Fn(&Error) -> bool) -> String {
    let dir = volume.parent().unwrap();
    let (qcow, offset) = disk_with(dir, volume);
    let before = sha256_file(&qcow);
    let err = open_rw(&qcow, offset).expect_err("an unsafe volume was opened for writing");
    assert!(check(&err), "unexpected error: {err:?}");
    assert_eq!(err.kind(), Kind::BadInput, "{err}");
    assert_eq!(sha256_file(&qcow), before, "the image was written");
    err.to_string()
}

fn volume_with(dir: &Path, entries: &[Entry]) -> std::path::PathBuf {
    let v = dir.join("vol.ntfs");
    fixtures::ntfs_volume(&v, 32 * MIB, "Windows", entries);
    v
}

fn hiberfil(magic: &[u8]) -> Entry {
    let mut data = magic.to_vec();
    data.resize(8192, 0);
    Entry::File("hiberfil.sys", data)
}

#[test]
fn hibernated_volume_is_refused() {
    let dir = tempdir();
    let msg = refused(&volume_with(dir.path(), &[hiberfil(b"hibr")]), |e| {
        matches!(e, Error::Hibernated { .. })
    });
    assert!(
        msg.contains("powercfg /h off") && msg.contains("hibr"),
        "{msg}"
    );
}

#[test]
fn resuming_hiberfile_is_refused() {
    let dir = tempdir();
    let msg = refused(&volume_with(dir.path(), &[hiberfil(b"WAKE")]), |e| {
        matches!(e, Error::Hibernated { .. })
    });
    assert!(msg.contains("WAKE"), "{msg}");
}

#[test]
fn zeroed_hiberfile_is_fine() {
    let dir = tempdir();
    let v = volume_with(dir.path(), &[hiberfil(&[0; 4])]);
    let (qcow, offset) = disk_with(dir.path(), &v);
    open_rw(&qcow, offset).unwrap();
}

#[test]
fn dirty_volume_is_refused() {
    let dir = tempdir();
    let v = volume_with(dir.path(), &[]);
    fixtures::set_volume_dirty(&v);
    let msg = refused(&v, |e| matches!(e, Error::Dirty { .. }));
    assert!(msg.contains("chkdsk"), "{msg}");
}

#[test]
fn non_ntfs_partition_is_refused() {
    let dir = tempdir();
    let v = dir.path().join("blank.img");
    std::fs::write(&v, vec![0u8; 32 * MIB as usize]).unwrap();
    refused(&v, |e| matches!(e, Error::NotNtfs { .. }));
}

#[test]
fn corrupt_boot_sector_is_refused() {
    let dir = tempdir();
    let v = volume_with(dir.path(), &[]);
    let mut bytes = std::fs::read(&v).unwrap();
    // Keep the signature, break the geometry: 0 bytes per sector, 0 sectors per cluster.
    bytes[0x0b..0x0e].fill(0);
    std::fs::write(&v, bytes).unwrap();
    refused(&v, |e| matches!(e, Error::Mount { .. }));
}

/// A read-write open marks the volume dirty before anything else is written, and
/// only `close` marks it clean again, after every write is durable: a writer cut
/// short (here: dropped without `close`) leaves the volume as chkdsk must see it.
/// ntfs-3g's tools and wingold's own refusal agree.
#[test]
fn a_volume_is_dirty_from_a_read_write_open_until_close() {
    let dir = tempdir();
    let v = volume_with(dir.path(), &[Entry::File("a.txt", b"old".to_vec())]);
    let (qcow, offset) = disk_with(dir.path(), &v);
    let part = dir.path().join("part.raw");
    // What the volume says of itself, by the format and by ntfs-3g's `ntfscat`.
    let state = |qcow: &Path| {
        fixtures::extract_partition(qcow, offset, 32 * MIB, &part);
        let dirty = fixtures::volume_is_dirty(&std::fs::read(&part).unwrap());
        let cat = std::process::Command::new("ntfscat")
            .args([s(&part), "/a.txt"])
            .output()
            .unwrap();
        (dirty, cat)
    };
    let writer = |qcow: &Path, close: bool| {
        let img = image::open(qcow, Access::ReadWrite).unwrap();
        let part = PartitionView::new(&img, offset, 32 * MIB).unwrap();
        let vol = Volume::open(&part, "partition 1", Access::ReadWrite).unwrap();
        vol.write_file("a.txt", b"new").unwrap();
        if close {
            vol.close().unwrap();
        }
    };

    let cut = dir.path().join("cut.qcow2");
    std::fs::copy(&qcow, &cut).unwrap();
    writer(&cut, false);
    let (dirty, cat) = state(&cut);
    assert!(
        dirty,
        "a writer dropped without close left the volume clean"
    );
    assert!(
        !cat.status.success()
            && String::from_utf8_lossy(&cat.stderr).contains("scheduled for check"),
        "ntfscat reads a volume that should be dirty: {:?}",
        cat.status
    );
    let img = image::open(&cut, Access::ReadOnly).unwrap();
    let view = PartitionView::new(&img, offset, 32 * MIB).unwrap();
    let err = match Volume::open(&view, "partition 1", Access::ReadOnly) {
        Ok(vol) => vol.refuse_unsafe().expect_err("a dirty volume passed"),
        Err(e) => panic!("the cut-short volume does not mount: {e}"),
    };
    assert!(matches!(err, Error::Dirty { .. }), "{err}");

    writer(&qcow, true);
    let (dirty, cat) = state(&qcow);
    assert!(!dirty, "close left the volume dirty");
    assert_eq!(
        cat.stdout,
        b"new",
        "ntfscat: {}",
        String::from_utf8_lossy(&cat.stderr)
    );
}
