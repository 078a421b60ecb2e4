//! The disks of one VM: the installer's pair (the system disk HDA and the
//! temporary virtio disk HDB) and clones of a golden image, each with the script
//! that starts it. All or nothing: a refusal or a failure leaves no file behind.

use crate::fsutil::{self, Place};
use crate::golden::{identity, inject, seed, Refusal};
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

/// The answer medium of an unattended install beside system disk `hda`
/// (`vm_N.qcow2` → `vm_N.unattend.iso`), which `launch --install` attaches.
pub fn answer_path(hda: &Path) -> PathBuf {
    hda.with_extension("unattend.iso")
}

/// Makes the installer's disks: `hda` of `hda_size` bytes, and `hdb` of
/// `hdb_size` bytes when given; writes the answer medium (`answer`: its bytes,
/// readable by the owner only: it holds the encoded administrator password) and
/// `script` (the install recipe) when given. Every output is checked to be new
/// before anything is written; a failure removes what was made.
pub fn create_disks(
    hda: (&Path, u64),
    hdb: Option<(&Path, u64)>,
    answer: Option<(&Path, &[u8])>,
    script: Option<(&Path, &str)>,
) -> anyhow::Result<Vec<Disk>> {
    let mut outputs = vec![hda.0];
    outputs.extend(hdb.map(|h| h.0));
    outputs.extend(answer.map(|a| a.0));
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
    let undo = |disks: &[Disk]| {
        for d in disks {
            let _ = std::fs::remove_file(&d.path);
        }
    };
    if let Some((path, bytes)) = answer {
        if let Err(e) = write_new(path, bytes, 0o600) {
            undo(&disks);
            return Err(e);
        }
    }
    if let Some((path, text)) = script {
        if let Err(e) = write_new(path, text.as_bytes(), 0o755) {
            undo(&disks);
            if let Some((a, _)) = answer {
                let _ = std::fs::remove_file(a);
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
    /// Its own identity (None with `--keep-identity`).
    pub identity: Option<identity::Report>,
    /// The record of that identity beside the clone (`vm_N.identity.json`).
    pub record: Option<PathBuf>,
    /// Seed media for an in-guest agent (`vm_N.seed.iso`), attached by the recipe.
    pub seed: Option<PathBuf>,
}

/// Where a clone goes: `DIR/vm_N.qcow2` and its script `DIR/vm_N.sh`.
pub fn clone_paths(dir: &Path, id: u32) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("vm_{id}.qcow2")),
        dir.join(format!("vm_{id}.sh")),
    )
}

/// The identity record beside clone `disk` (`vm_N.qcow2` → `vm_N.identity.json`).
pub fn record_path(disk: &Path) -> PathBuf {
    disk.with_extension("identity.json")
}

/// The seed media beside clone `disk` (`vm_N.qcow2` → `vm_N.seed.iso`).
pub fn seed_path(disk: &Path) -> PathBuf {
    disk.with_extension("seed.iso")
}

/// What a clone's record holds: no secret, ever.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Record {
    pub image: PathBuf,
    pub golden: PathBuf,
    pub hostname: String,
    pub computer_name: String,
    pub machine_guid: Option<String>,
    pub answer_file: Option<String>,
    #[serde(default)]
    pub seed: Option<PathBuf>,
}

/// The computer names the clones recorded in `dir` carry, with their images.
pub fn names_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".identity.json"))
        .filter_map(|e| {
            let text = crate::input::read(&e.path(), crate::input::SMALL).ok()?;
            let r: Record = serde_json::from_slice(&text).ok()?;
            Some((r.computer_name, r.image))
        })
        .collect()
}

/// Refuses `name` when a clone recorded in `dir` already carries it.
pub fn refuse_taken_name(dir: &Path, name: &str) -> anyhow::Result<()> {
    let upper = name.to_ascii_uppercase();
    match names_in(dir).into_iter().find(|(n, _)| *n == upper) {
        Some((_, other)) => Err(Refusal::HostnameTaken {
            name: name.to_owned(),
            other,
        }
        .into()),
        None => Ok(()),
    }
}

/// Makes `disk` (the VM's system disk, `vm.hda`) an overlay on `golden` and
/// writes `script`, the recipe that starts it. With `identity`, the clone is
/// made its own machine in the overlay (names, machine id, or an answer file for
/// a sealed golden), verified, and recorded beside it; the golden's bytes are
/// never written.
pub fn clone(
    golden: &Path,
    disk: &Path,
    script: &Path,
    vm: &Vm,
    identity: Option<&identity::Request>,
    seed: Option<&seed::Request>,
) -> anyhow::Result<Cloned> {
    let record = identity.map(|_| record_path(disk));
    let seed_file = seed.map(|_| seed_path(disk));
    let mut paths = vec![disk, script];
    paths.extend(record.as_deref());
    paths.extend(seed_file.as_deref());
    refuse_existing(&paths)?;
    if !golden.exists() {
        return Err(Refusal::NoGolden {
            golden: golden.to_owned(),
        }
        .into());
    }
    create_parent(disk)?;
    if let Some(u) = &vm.uefi {
        for p in [&u.vars, &u.tpm] {
            if p.exists() {
                return Err(image::Error::Exists { path: p.clone() }.into());
            }
        }
    }
    let report = match identity {
        None => {
            create_overlay(disk, golden)?;
            None
        }
        Some(req) => {
            let mut plan = inject::plan(golden, &[], None, false, None, None, Some(req))?;
            inject::write(&mut plan, &inject::Mode::Overlay(disk.to_owned()))?;
            plan.report.identity
        }
    };
    let backing = image::backing_files(disk)
        .into_iter()
        .next()
        .unwrap_or_default();
    let undo = || {
        let _ = std::fs::remove_file(disk);
        if let Some(f) = &seed_file {
            let _ = std::fs::remove_file(f);
        }
        if let Some(u) = &vm.uefi {
            let _ = std::fs::remove_file(&u.vars);
            let _ = std::fs::remove_dir(&u.tpm);
        }
    };
    if let Some(u) = &vm.uefi {
        if let Err(e) = firmware_files(u) {
            undo();
            return Err(e);
        }
    }
    if let (Some(req), Some(path)) = (seed, &seed_file) {
        // The instance id an agent keys its first-boot work on: the clone's
        // MachineGuid when it got one, else a new one.
        let id = match report.as_ref().and_then(|r| r.machine_guid.clone()) {
            Some(g) => g,
            None => identity::random_guid().context("/dev/urandom")?,
        };
        let hostname = report
            .as_ref()
            .map(|r| r.hostname.clone())
            .unwrap_or_else(|| vm.name.clone());
        let instance = match req.kind {
            seed::SeedKind::NoCloud => format!("iid-{id}"),
            seed::SeedKind::ConfigDrive => id,
        };
        let (volume, files) = seed::files(req, &instance, &hostname);
        let image = seed::iso(volume, &files);
        if let Err(e) = fsutil::write_file(path, &image, 0o644, Place::NoReplace) {
            let _ = std::fs::remove_file(disk);
            return Err(anyhow::Error::new(e).context(format!("{}: cannot write", path.display())));
        }
    }
    if let (Some(path), Some(r)) = (&record, &report) {
        let rec = Record {
            image: disk.to_owned(),
            golden: backing.clone(),
            hostname: r.hostname.clone(),
            computer_name: r.computer_name.clone(),
            machine_guid: r.machine_guid.clone(),
            answer_file: r.answer_file.clone(),
            seed: seed_file.clone(),
        };
        let text = serde_json::to_vec_pretty(&rec).expect("a record serializes");
        if let Err(e) = fsutil::write_file(path, &text, 0o644, Place::NoReplace) {
            undo();
            return Err(anyhow::Error::new(e).context(format!("{}: cannot write", path.display())));
        }
    }
    if let Err(e) = write_new(script, vm.sh().as_bytes(), 0o755) {
        undo();
        if let Some(r) = &record {
            let _ = std::fs::remove_file(r);
        }
        return Err(e);
    }
    let seed = seed_file;
    Ok(Cloned {
        image: disk.to_owned(),
        backing,
        script: script.to_owned(),
        argv: vm.argv(),
        identity: report,
        record,
        seed,
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
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    fsutil::write_file(path, bytes, mode, Place::NoReplace).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => image::Error::Exists {
            path: path.to_owned(),
        }
        .into(),
        _ => anyhow::Error::new(e).context(format!("{}: cannot write", path.display())),
    })
}

/// One clone of a `--spec` file (a `[[clone]]` table).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecEntry {
    pub id: u32,
    pub hostname: Option<String>,
    pub timezone: Option<String>,
    /// Relative to the spec file's folder.
    pub admin_password_file: Option<PathBuf>,
    /// Relative to the spec file's folder.
    pub domain_join_blob: Option<PathBuf>,
    #[serde(default)]
    pub keep_identity: bool,
    /// Seed media for an in-guest agent: `nocloud` or `configdrive`.
    pub seed: Option<seed::SeedKind>,
    /// Files for the seed, relative to the spec file's folder.
    pub user_data: Option<PathBuf>,
    pub network_config: Option<PathBuf>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    clone: Vec<SpecEntry>,
}

/// The clones a `--spec` file lists, checked whole: ids and host names once each
/// (names compared as Windows compares them), every name one Windows takes,
/// password files resolved against the spec's folder.
pub fn load_spec(path: &Path) -> anyhow::Result<Vec<SpecEntry>> {
    let (_, file): (_, SpecFile) = super::config::read_toml(path)?;
    let refuse = |message: String| Refusal::Spec {
        spec: path.to_owned(),
        message,
    };
    let dir = std::path::absolute(path)?
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let mut ids = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for mut e in file.clone {
        if !ids.insert(e.id) {
            return Err(refuse(format!("clone id {} is listed twice", e.id)).into());
        }
        if let Some(h) = &e.hostname {
            identity::check_hostname(h).map_err(|why| Refusal::Hostname {
                name: h.clone(),
                why,
            })?;
            if !names.insert(h.to_ascii_uppercase()) {
                return Err(refuse(format!("hostname {h:?} is listed twice")).into());
            }
        }
        if e.keep_identity && (e.hostname.is_some() || e.timezone.is_some()) {
            return Err(refuse(format!(
                "clone {}: keep_identity = true takes no hostname or time zone",
                e.id
            ))
            .into());
        }
        for p in [
            e.admin_password_file.as_mut(),
            e.domain_join_blob.as_mut(),
            e.user_data.as_mut(),
            e.network_config.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() && p.as_os_str() != "-" {
                *p = dir.join(&*p);
            }
        }
        if e.seed.is_none() && (e.user_data.is_some() || e.network_config.is_some()) {
            return Err(refuse(format!(
                "clone {}: user_data and network_config go on a seed: add seed = \"nocloud\" \
                 or \"configdrive\"",
                e.id
            ))
            .into());
        }
        out.push(e);
    }
    if out.is_empty() {
        return Err(refuse("lists no [[clone]]".into()).into());
    }
    Ok(out)
}

/// The answer file a KubeVirt VM of a sealed `golden` gets through its sysprep
/// volume (KubeVirt starts each VM from the containerDisk itself: there is no
/// overlay to write an identity into), with what it sets. An unsealed golden is
/// refused: it reads no answer file.
pub fn answer_for(
    golden: &Path,
    req: &identity::Request,
) -> anyhow::Result<(identity::Report, Vec<u8>)> {
    let img = image::open(golden, crate::image::Access::ReadOnly)?;
    // One mount: the one Windows is found on, with the hives detection read.
    let plan = crate::guest::with_windows(&img, golden, None, |found| {
        let (w, vol) = (&found.windows, found.vol);
        let system = crate::hive::View::open("SYSTEM", &found.system.bytes)?;
        let software = crate::hive::View::open("SOFTWARE", &found.software.bytes)?;
        let sysprep = vol.lookup("sysprep")?.is_some();
        if identity::seal_of(&system, sysprep)? != identity::Seal::Sealed {
            return Err(Refusal::KubevirtUnsealed.into());
        }
        anyhow::Ok(identity::plan(
            w,
            &system,
            &software,
            sysprep.then_some(&[][..]),
            req,
        )?)
    })?;
    let (_, xml) = plan
        .answer_file
        .expect("a sealed golden's plan holds an answer file");
    Ok((plan.report, xml))
}

/// A UEFI VM's own firmware files: its variable store, a copy (never a link) of
/// OVMF's template with Microsoft's keys enrolled (Secure Boot on), and the
/// empty folder swtpm keeps its TPM state in.
pub fn firmware_files(u: &crate::launch::Uefi) -> anyhow::Result<()> {
    let template = Path::new(crate::launch::OVMF_VARS_TEMPLATE);
    let vars = std::fs::read(template).map_err(|e| Refusal::NoOvmf {
        path: template.to_owned(),
        reason: e.to_string(),
    })?;
    fsutil::write_file(&u.vars, &vars, 0o644, Place::NoReplace)
        .with_context(|| format!("{}: cannot write", u.vars.display()))?;
    if let Err(e) = std::fs::create_dir(&u.tpm) {
        let _ = std::fs::remove_file(&u.vars);
        return Err(anyhow::Error::new(e).context(format!("{}: cannot create", u.tpm.display())));
    }
    Ok(())
}
