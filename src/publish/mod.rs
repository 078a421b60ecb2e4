//! Publishing a golden image to an OCI registry as a KubeVirt containerDisk
//! (KubeVirt's user guide, "containerDisk"; CDI's `image-from-registry.md`):
//! an uncompressed tar layer holding
//! `disk/disk.img` (107:107, 0444) first, a provenance layer second, a canonical
//! config and manifest — the same bytes on any machine for the same golden image
//! and manifest. The disk layer is hashed in one read (cached beside the image,
//! which never changes) and streamed to the registry; blobs the registry has are
//! skipped. `--oci-layout DIR` writes the same image as an OCI image layout.

#![deny(unsafe_code)]

mod image;
mod layout;
mod refusal;
pub mod tar;

pub use refusal::Refusal;

use crate::error::unreadable;
use crate::golden::manifest::{self, Manifest, Unloadable};
use crate::registry::{self, base64, credentials_from_files, Credentials, Registry};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Bumped when the layout of the disk layer changes (invalidates the cache).
const LAYOUT_VERSION: u32 = 1;

/// What `publish` is asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub golden: PathBuf,
    /// `docker://HOST[:PORT]/REPO[:TAG]`, parsed; None with only `--oci-layout`.
    pub to: Option<registry::Target>,
    pub tags: Vec<String>,
    pub insecure: bool,
    pub ca_cert: Option<PathBuf>,
    pub credentials: Option<Credentials>,
    pub oci_layout: Option<PathBuf>,
    pub created: Option<String>,
    /// `auto`, a KubeVirt preference name, or `none`.
    pub preference: String,
    pub chunked: bool,
    /// How long one registry request may go unanswered (60 s when None).
    pub timeout: Option<std::time::Duration>,
    pub dry_run: bool,
}

/// One blob of the image.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
    pub media_type: &'static str,
    /// True when this run uploaded it; false when the registry had it.
    pub uploaded: bool,
}

/// `publish --json`. Field names are part of the CLI contract (README).
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// `HOST/REPO@sha256:…`, what to pin.
    pub reference: Option<String>,
    pub digest: String,
    pub tags: Vec<String>,
    pub config: Layer,
    pub layers: Vec<Layer>,
    pub bytes_uploaded: u64,
    pub oci_layout: Option<PathBuf>,
    pub dry_run: bool,
    /// Ready-to-paste snippets.
    pub kubevirt: Option<Value>,
}

/// Where the references a golden version was published under are kept: beside
/// the version (`<version>.published.json`), for `clone --format kubevirt`.
pub fn published_path(golden: &Path) -> Option<PathBuf> {
    let version = std::fs::canonicalize(golden).ok()?;
    Some(PathBuf::from(format!(
        "{}.published.json",
        version.display()
    )))
}

/// The references (`host/repo@sha256:…`) a golden version was published under,
/// newest last.
pub fn published(golden: &Path) -> Vec<String> {
    published_path(golden)
        .and_then(|p| crate::input::read(&p, crate::input::SMALL).ok())
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .unwrap_or_default()
}

/// Adds `reference` to the version's published record (a record only: a folder
/// that cannot be written costs `clone --format kubevirt` an `--image`).
fn record_published(golden: &Path, reference: &str) {
    let Some(path) = published_path(golden) else {
        return;
    };
    let mut list = published(golden);
    list.retain(|r| r != reference);
    list.push(reference.to_owned());
    if let Ok(text) = serde_json::to_vec_pretty(&list) {
        let _ = crate::fsutil::write_file(&path, &text, 0o644, crate::fsutil::Place::Replace);
    }
}

/// Publishes (or, with `dry_run`, only computes) the image.
pub fn publish(o: &Options) -> anyhow::Result<Outcome> {
    refuse_options(o)?;
    let (version, m, size) = load_golden(&o.golden)?;
    let img = image::assemble(o, &version, &m, size)?;
    let tags = tags(o, &m, &img.title);
    let open_disk = || -> anyhow::Result<Box<dyn Read + Send>> {
        let f = std::fs::File::open(&version).map_err(unreadable(&version))?;
        Ok(Box::new(tar::disk_layer(f, size)))
    };
    if let (Some(dir), false) = (&o.oci_layout, o.dry_run) {
        layout::write_layout(
            dir,
            &[(&img.disk_digest, &open_disk as layout::Opener)],
            &[
                (&img.prov_digest, &img.prov_layer),
                (&img.config_digest, &img.config),
                (&img.digest, &img.manifest),
            ],
            &img.digest,
            img.manifest.len(),
            &tags,
        )?;
    }
    let reference =
        o.to.as_ref()
            .map(|t| format!("{}/{}@{}", t.host, t.repo, img.digest));
    let pushed = match (&o.to, o.dry_run) {
        (Some(t), false) => {
            let pushed = push(o, t, &img, &tags, &open_disk)?;
            if let Some(r) = &reference {
                record_published(&o.golden, r);
            }
            pushed
        }
        _ => Pushed::default(),
    };
    let layer = |digest: &str, size: u64, media_type, uploaded| Layer {
        digest: digest.to_owned(),
        size,
        media_type,
        uploaded,
    };
    Ok(Outcome {
        kubevirt: reference
            .as_ref()
            .map(|r| kubevirt_snippets(r, &img.title, m.output.virtual_size)),
        reference,
        digest: img.digest.clone(),
        tags,
        config: layer(
            &img.config_digest,
            img.config.len() as u64,
            CONFIG_TYPE,
            pushed.config,
        ),
        layers: vec![
            layer(&img.disk_digest, img.disk_len, LAYER_TYPE, pushed.disk),
            layer(
                &img.prov_digest,
                img.prov_layer.len() as u64,
                LAYER_TYPE,
                pushed.provenance,
            ),
        ],
        bytes_uploaded: pushed.bytes,
        oci_layout: o.oci_layout.clone(),
        dry_run: o.dry_run,
    })
}

/// A destination, valid tags, an RFC 3339 creation time: checked first.
fn refuse_options(o: &Options) -> Result<(), Refusal> {
    if o.to.is_none() && o.oci_layout.is_none() {
        return Err(Refusal::NoDestination);
    }
    if let Some(t) = o.tags.iter().find(|t| !registry::valid_tag(t)) {
        return Err(Refusal::Tag(t.clone()));
    }
    if let Some(c) = &o.created {
        if c.len() < 20 || c.as_bytes().get(4) != Some(&b'-') || c.as_bytes().get(10) != Some(&b'T')
        {
            return Err(Refusal::Created(c.clone()));
        }
    }
    Ok(())
}

/// The golden version `golden` names, its manifest and its size: a standalone
/// image (no backing file) whose size is the one its manifest records.
fn load_golden(golden: &Path) -> anyhow::Result<(PathBuf, Manifest, u64)> {
    let version = std::fs::canonicalize(golden).map_err(unreadable(golden))?;
    let backing = crate::image::backing_files(&version);
    if let Some(first) = backing.first() {
        return Err(Refusal::HasBacking {
            golden: golden.to_owned(),
            backing: first.clone(),
        }
        .into());
    }
    let m = manifest::load(&version).map_err(|e| match e {
        Unloadable::Missing(_) => Refusal::NoManifest {
            golden: golden.to_owned(),
            version: version.clone(),
        },
        Unloadable::Malformed(e) => Refusal::Manifest {
            golden: golden.to_owned(),
            reason: e.to_string(),
        },
    })?;
    let size = std::fs::metadata(&version)?.len();
    if m.output.size != size {
        return Err(Refusal::SizeDiffers {
            golden: golden.to_owned(),
        }
        .into());
    }
    Ok((version, m, size))
}

/// The reference's tag and the ones given; without any, `TITLE-VIRTIO-SHA12`.
fn tags(o: &Options, m: &Manifest, title: &str) -> Vec<String> {
    let mut tags: Vec<String> =
        o.to.as_ref()
            .and_then(|t| t.tag.clone())
            .into_iter()
            .collect();
    tags.extend(o.tags.iter().cloned());
    if tags.is_empty() {
        let vw = &m.virtio_win.version;
        let sha12 = m.output.sha256.get(..12).unwrap_or("");
        tags.push(format!("{title}-{vw}-{sha12}"));
    }
    tags.dedup();
    tags
}

/// What a push uploaded (blobs the registry had are skipped).
#[derive(Default)]
struct Pushed {
    disk: bool,
    provenance: bool,
    config: bool,
    bytes: u64,
}

/// Uploads the blobs the registry lacks, then the manifest under each tag.
fn push(
    o: &Options,
    t: &registry::Target,
    img: &image::Image,
    tags: &[String],
    open_disk: layout::Opener,
) -> anyhow::Result<Pushed> {
    let ca = o
        .ca_cert
        .as_ref()
        .map(|p| crate::input::read(p, crate::input::SMALL))
        .transpose()?;
    let creds = o
        .credentials
        .clone()
        .map_or_else(|| credentials_from_files(&t.host), |c| Ok(Some(c)))?;
    let mut reg = Registry::new(t.clone(), o.insecure, ca.as_deref(), creds)?;
    if let Some(t) = o.timeout {
        reg.timeout = t;
    }
    reg.login()?;
    let mut pushed = Pushed::default();
    if !reg.has_blob(&img.disk_digest)? {
        let chunk = o.chunked.then_some(4 << 20);
        reg.upload(&img.disk_digest, img.disk_len, chunk, open_disk)?;
        pushed.disk = true;
        pushed.bytes += img.disk_len;
    }
    for (digest, bytes, uploaded) in [
        (&img.prov_digest, &img.prov_layer, &mut pushed.provenance),
        (&img.config_digest, &img.config, &mut pushed.config),
    ] {
        if !reg.has_blob(digest)? {
            let data = bytes.clone();
            let open = move || -> anyhow::Result<Box<dyn Read + Send>> {
                Ok(Box::new(std::io::Cursor::new(data.clone())))
            };
            reg.upload(digest, bytes.len() as u64, None, &open)?;
            *uploaded = true;
            pushed.bytes += bytes.len() as u64;
        }
    }
    for tag in tags {
        reg.put_manifest(tag, MANIFEST_TYPE, &img.manifest, &img.digest)?;
    }
    Ok(pushed)
}

/// The YAML that uses the pushed image: a containerDisk volume, and a CDI
/// DataVolume importing it (sized to the virtual disk plus 1 GiB).
fn kubevirt_snippets(reference: &str, title: &str, virtual_size: u64) -> Value {
    let gib = virtual_size.div_ceil(1 << 30) + 1;
    json!({
        "containerDisk": format!("volumes:\n- name: rootdisk\n  containerDisk:\n    image: {reference}\n"),
        "dataVolume": format!(
            "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {title}\nspec:\n  source:\n    registry:\n      url: docker://{reference}\n  storage:\n    resources:\n      requests:\n        storage: {gib}Gi\n"
        ),
    })
}

/// A KubeVirt VirtualMachine booting the containerDisk `image`, with a sysprep
/// volume from a Secret holding `unattend` (what Windows reads at its first boot
/// from a sealed image), as one YAML stream: the Secret, then the VM.
pub fn kubevirt_vm(name: &str, image: &str, memory_mib: u64, cpus: u32, unattend: &[u8]) -> String {
    let secret = format!("{name}-sysprep");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\ntype: Opaque\ndata:\n  \
         Unattend.xml: {}\n---\napiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  \
         name: {name}\nspec:\n  runStrategy: Always\n  template:\n    metadata:\n      labels:\n        \
         kubevirt.io/vm: {name}\n    spec:\n      domain:\n        cpu:\n          cores: {cpus}\n        \
         resources:\n          requests:\n            memory: {memory_mib}Mi\n        devices:\n          \
         disks:\n          - name: rootdisk\n            disk:\n              bus: virtio\n          \
         - name: sysprep\n            cdrom:\n              bus: sata\n          interfaces:\n          \
         - name: default\n            masquerade: {{}}\n            model: virtio\n      networks:\n      \
         - name: default\n        pod: {{}}\n      volumes:\n      - name: rootdisk\n        \
         containerDisk:\n          image: {image}\n      - name: sysprep\n        sysprep:\n          \
         secret:\n            name: {secret}\n",
        base64(unattend)
    )
}
