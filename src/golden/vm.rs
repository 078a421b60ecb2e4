//! The disks of one VM: the installer's pair (the system disk HDA and the
//! temporary virtio disk HDB) and clones of a golden image, each with the script
//! that starts it. All or nothing: a refusal or a failure leaves no file behind.

use crate::fsutil::{self, Place};
use crate::golden::Refusal;
use crate::image::{self, create_overlay, create_qcow2, CreateOptions};
use crate::launch::Vm;
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One disk made.
#[derive(Debug, Serialize)]
pub struct Disk {
    /// `hda` or `hdb`.
    pub role: &'static str,
    pub path: PathBuf,
    pub format: &'static str,
    pub virtual_size: u64,
}

/// Where the installer's disks go: `DIR/vm_N.qcow2` and `DIR/temp_N.qcow2`.
pub fn disk_paths(dir: &Path, id: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("vm_{id}.qcow2")),
        dir.join(format!("temp_{id}.qcow2")),
    )
}

/// Makes the installer's disks: `hda` of `hda_size` bytes, and `hdb` of
/// `hdb_size` bytes when given; writes `script` (the install recipe) when given.
/// Every output is checked to be new before anything is written.
pub fn create_disks(
    hda: (&Path, u64),
    hdb: Option<(&Path, u64)>,
    script: Option<(&Path, &str)>,
) -> anyhow::Result<Vec<Disk>> {
    let mut outputs = vec![hda.0];
    outputs.extend(hdb.map(|h| h.0));
    outputs.extend(script.map(|s| s.0));
    refuse_existing(&outputs)?;
    create_parent(hda.0)?;
    create_qcow2(hda.0, &CreateOptions::new(hda.1)).context("creating the system disk")?;
    let mut disks = vec![disk("hda", hda)];
    if let Some(hdb) = hdb {
        if let Err(e) = create_qcow2(hdb.0, &CreateOptions::new(hdb.1)) {
            let _ = std::fs::remove_file(hda.0);
            return Err(e).context("creating the temporary virtio disk");
        }
        disks.push(disk("hdb", hdb));
    }
    if let Some((path, text)) = script {
        if let Err(e) = write_script(path, text) {
            for d in &disks {
                let _ = std::fs::remove_file(&d.path);
            }
            return Err(e);
        }
    }
    Ok(disks)
}

fn disk(role: &'static str, (path, size): (&Path, u64)) -> Disk {
    Disk {
        role,
        path: path.to_owned(),
        format: "qcow2",
        virtual_size: size.div_ceil(512) * 512,
    }
}

/// A new VM from a golden image.
#[derive(Debug, Serialize)]
pub struct Cloned {
    pub image: PathBuf,
    /// The golden version the clone rests on (what its overlay records, not what
    /// the stable name points at by the time anyone looks).
    pub backing: PathBuf,
    pub script: PathBuf,
    pub argv: Vec<String>,
}

/// Where a clone goes: `DIR/vm_N.qcow2` and its script `DIR/vm_N.sh`.
pub fn clone_paths(dir: &Path, id: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("vm_{id}.qcow2")),
        dir.join(format!("vm_{id}.sh")),
    )
}

/// Makes `disk` (the VM's system disk, `vm.hda`) an overlay on `golden` and
/// writes `script`, the recipe that starts it.
pub fn clone(golden: &Path, disk: &Path, script: &Path, vm: &Vm) -> anyhow::Result<Cloned> {
    refuse_existing(&[disk, script])?;
    if !golden.exists() {
        return Err(Refusal::NoGolden {
            golden: golden.to_owned(),
        }
        .into());
    }
    create_parent(disk)?;
    create_overlay(disk, golden)?;
    if let Err(e) = write_script(script, &vm.sh()) {
        let _ = std::fs::remove_file(disk);
        return Err(e);
    }
    let backing = image::backing_files(disk)
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(Cloned {
        image: disk.to_owned(),
        backing,
        script: script.to_owned(),
        argv: vm.argv(),
    })
}

/// The folder `path` goes into, made when missing (`--dir`); a path that cannot
/// be a folder is bad input, a host that refuses one a failure.
fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| image::Error::open(dir, e))?;
    }
    Ok(())
}

fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(image::Error::Exists {
            path: p.to_path_buf(),
        }
        .into()),
        None => Ok(()),
    }
}

/// Writes an executable script under a temporary name, then moves it into place;
/// an existing file is never replaced.
fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    fsutil::write_file(path, text.as_bytes(), 0o755, Place::NoReplace).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => image::Error::Exists {
            path: path.to_owned(),
        }
        .into(),
        _ => anyhow::Error::new(e).context(format!("{}: cannot write", path.display())),
    })
}
