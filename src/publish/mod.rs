//! Publishing a golden image to an OCI registry as a KubeVirt containerDisk
//! (KubeVirt's user guide, "containerDisk"; CDI's `image-from-registry.md`):
//! an uncompressed tar layer holding
//! `disk/disk.img` (107:107, 0444) first, a provenance layer second, a canonical
//! config and manifest — the same bytes on any machine for the same golden image
//! and manifest. The disk layer is hashed in one read (cached beside the image,
//! which never changes) and streamed to the registry; blobs the registry has are
//! skipped. `--oci-layout DIR` writes the same image as an OCI image layout.

#![deny(unsafe_code)]

mod auth;
mod refusal;
pub mod registry;
pub mod tar;
mod tls;

pub use refusal::{BadReference, Refusal};

pub use auth::{base64, credentials_from_files, unbase64};

use crate::error::unreadable;
use crate::golden::manifest::{self, Manifest, Unloadable};
use anyhow::Context;
use registry::{Credentials, Registry};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
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

fn oci_digest(b: &[u8]) -> String {
    format!("sha256:{}", crate::fsutil::sha256_hex(b))
}

/// The KubeVirt preference for a Windows (common-instancetypes names), `.virtio`
/// when the virtio drivers were injected.
fn preference_for(osinfo: &str, virtio: bool) -> Option<String> {
    let base = match osinfo {
        "win10" => "windows.10",
        "win11" => "windows.11",
        "win2k16" => "windows.2k16",
        "win2k19" => "windows.2k19",
        "win2k22" => "windows.2k22",
        "win2k25" => "windows.2k25",
        "win2k12" | "win2k12r2" => "windows.2k12",
        "win2k8" | "win2k8r2" => "windows.2k8",
        "win7" => "windows.7",
        "winxp" => "windows.xp",
        "win2k3" | "win2k3r2" => "windows.2k3",
        _ => return None,
    };
    Some(if virtio {
        format!("{base}.virtio")
    } else {
        base.to_owned()
    })
}

/// What of the config decided the image; a manifest older than that record
/// gives its config file's digest instead.
fn settings_sha256(id: &crate::golden::manifest::Identity) -> String {
    if id.settings_sha256.is_empty() {
        id.config_sha256.clone()
    } else {
        id.settings_sha256.clone()
    }
}

/// The deterministic part of a golden manifest: nothing that names a host path,
/// an inode or a time.
fn provenance(m: &Manifest) -> Value {
    // A file as provenance keeps it: where it goes, its digest and size.
    let strip =
        |to: &str, sha256: &str, size: u64| json!({"to": to, "sha256": sha256, "size": size});
    let file_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
    let edits: Vec<Value> = m
        .edits
        .iter()
        .map(|e| {
            let mut e = e.clone();
            // `file:line` of an edit: a host path keeps only its file name.
            if e.source.starts_with('/') {
                e.source = file_name(&e.source);
            }
            json!(e)
        })
        .collect();
    let regfiles: Vec<Value> = m
        .identity
        .regfiles
        .iter()
        .map(|(path, sha)| json!([file_name(path), sha]))
        .collect();
    let (id, v, out) = (&m.identity, &m.virtio_win, &m.output);
    json!({
        "format": "qcow2",
        "wingold_version": m.wingold_version,
        "identity": {
            "base_sha256": id.base_sha256,
            "virtio_win_version": id.virtio_win_version,
            "virtio_win_sha256": id.virtio_win_sha256,
            "settings_sha256": settings_sha256(id),
            "regfiles": regfiles,
        },
        "virtio_win": {
            "version": v.version,
            "sha256": v.sha256,
            "size": v.size,
            "drivers_injected": v.drivers_injected,
        },
        "windows": m.windows,
        "edits": edits,
        "first_boot_commands": m.first_boot_commands,
        "drivers": m.drivers.as_ref().map(|d| json!({
            "boot": d.boot, "registration": d.registration, "drivers": d.drivers,
            "files": d.files.iter().map(|f| strip(&f.to, &f.sha256, f.size)).collect::<Vec<_>>(),
        })),
        "first_boot": m.first_boot.as_ref().map(|f| json!({
            "queue": f.queue.iter().map(|q| q.name.clone()).collect::<Vec<_>>(),
            "service_binary_sha256": f.service.as_ref().map(|s| s.binary_sha256.clone()),
            "files": f.files.iter().map(|g| strip(&g.to, &g.sha256, g.size)).collect::<Vec<_>>(),
        })),
        "output": {
            "sha256": out.sha256,
            "size": out.size,
            "virtual_size": out.virtual_size,
            "compressed": out.compressed,
        },
    })
}

/// The disk layer's digest: from the cache beside the golden image (keyed by its
/// SHA-256 and the layout version), else one streaming read.
fn disk_layer_digest(golden: &Path, golden_sha: &str, size: u64) -> anyhow::Result<String> {
    let cache = PathBuf::from(format!("{}.oci.json", golden.display()));
    if let Ok(bytes) = std::fs::read(&cache) {
        if let Ok(c) = serde_json::from_slice::<Value>(&bytes) {
            if c["golden_sha256"] == golden_sha && c["layout_version"] == LAYOUT_VERSION {
                if let Some(d) = c["disk_layer_digest"].as_str() {
                    return Ok(d.to_owned());
                }
            }
        }
    }
    let f = std::fs::File::open(golden).map_err(unreadable(golden))?;
    let mut h = Sha256::new();
    std::io::copy(&mut tar::disk_layer(f, size), &mut h)?;
    let digest = format!("sha256:{:x}", h.finalize());
    let record = json!({"golden_sha256": golden_sha, "layout_version": LAYOUT_VERSION, "disk_layer_digest": digest});
    // A cache only: a folder we cannot write (a read-only store) just costs a read next time.
    let _ = crate::fsutil::write_file(
        &cache,
        record.to_string().as_bytes(),
        0o644,
        crate::fsutil::Place::Replace,
    );
    Ok(digest)
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
    let golden = &o.golden;
    let target = o.to.clone();
    if target.is_none() && o.oci_layout.is_none() {
        return Err(Refusal::NoDestination.into());
    }
    for t in &o.tags {
        if !registry::valid_tag(t) {
            return Err(Refusal::Tag(t.clone()).into());
        }
    }
    if let Some(c) = &o.created {
        if c.len() < 20 || c.as_bytes().get(4) != Some(&b'-') || c.as_bytes().get(10) != Some(&b'T')
        {
            return Err(Refusal::Created(c.clone()).into());
        }
    }
    let version = std::fs::canonicalize(golden).map_err(unreadable(golden))?;
    let backing = crate::image::backing_files(&version);
    if !backing.is_empty() {
        return Err(Refusal::HasBacking {
            golden: golden.to_owned(),
            backing: backing[0].clone(),
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
    let golden_sha = m.output.sha256.clone();
    if m.output.size != size {
        return Err(Refusal::SizeDiffers {
            golden: golden.to_owned(),
        }
        .into());
    }

    // Layers.
    let disk_digest = disk_layer_digest(&version, &golden_sha, size)?;
    let disk_len = tar::disk_layer_len(size);
    let prov = provenance(&m);
    let prov_bytes = serde_json::to_vec(&prov)?;
    let prov_layer = tar::small_layer(
        &["wingold/"],
        &[("wingold/provenance.json", 0o444, &prov_bytes)],
    );
    let prov_digest = oci_digest(&prov_layer);

    // Annotations and labels, from the deterministic part only.
    let w = &m.windows;
    let title = version
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let title = title
        .rsplit_once('-')
        .map(|(a, _)| a.to_owned())
        .unwrap_or(title);
    let mut ann = serde_json::Map::new();
    let mut put = |k: &str, v: String| {
        // A value the manifest does not hold (an unhashed base) is left out.
        if v != "null" && !v.is_empty() {
            ann.insert(k.to_owned(), Value::String(v));
        }
    };
    put("org.opencontainers.image.title", title.clone());
    put(
        "org.opencontainers.image.description",
        format!(
            "{} {} golden image (wingold)",
            w.product_name.clone(),
            w.version.clone()
        ),
    );
    if let Some(c) = &o.created {
        put("org.opencontainers.image.created", c.clone());
    }
    put("io.wingold.version", m.wingold_version.clone());
    put("io.wingold.golden.sha256", golden_sha.clone());
    put("io.wingold.golden.size", size.to_string());
    put("io.wingold.golden.format", "qcow2".into());
    // Manifest fields as they are, in label order.
    let from_manifest = [
        ("golden.virtual-size", m.output.virtual_size.to_string()),
        ("golden.compressed", m.output.compressed.to_string()),
        (
            "base.sha256",
            m.identity.base_sha256.clone().unwrap_or_default(),
        ),
        ("settings.sha256", settings_sha256(&m.identity)),
        ("virtio-win.version", m.virtio_win.version.clone()),
        ("virtio-win.sha256", m.virtio_win.sha256.clone()),
        (
            "virtio-win.drivers-injected",
            m.virtio_win.drivers_injected.to_string(),
        ),
        ("windows.product-name", w.product_name.clone()),
        ("windows.version", w.version.clone()),
        ("windows.osinfo", w.osinfo.clone()),
        ("windows.arch", w.arch.clone()),
    ];
    for (label, value) in from_manifest {
        put(&format!("io.wingold.{label}"), value);
    }
    put(
        "io.wingold.provenance.sha256",
        crate::fsutil::sha256_hex(&prov_bytes),
    );
    let virtio = m.virtio_win.drivers_injected;
    let pref = match o.preference.as_str() {
        "" | "auto" => preference_for(&w.osinfo, virtio),
        "none" => None,
        name => Some(name.to_owned()),
    };
    let env: Vec<Value> = pref
        .iter()
        .map(|p| Value::String(format!("INSTANCETYPE_KUBEVIRT_IO_DEFAULT_PREFERENCE={p}")))
        .collect();
    let mut config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": env, "Labels": Value::Object(ann.clone())},
        "rootfs": {"type": "layers", "diff_ids": [disk_digest, prov_digest]},
    });
    if let Some(c) = &o.created {
        config["created"] = Value::String(c.clone());
    }
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = oci_digest(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config_bytes.len()},
        "layers": [
            {"mediaType": LAYER_TYPE, "digest": disk_digest, "size": disk_len},
            {"mediaType": LAYER_TYPE, "digest": prov_digest, "size": prov_layer.len()},
        ],
        "annotations": Value::Object(ann),
    });
    let manifest_out = serde_json::to_vec(&manifest)?;
    let digest = oci_digest(&manifest_out);

    let mut tags: Vec<String> = target
        .as_ref()
        .and_then(|t| t.tag.clone())
        .into_iter()
        .collect();
    tags.extend(o.tags.iter().cloned());
    if tags.is_empty() {
        let vw = &m.virtio_win.version;
        tags.push(format!(
            "{title}-{vw}-{}",
            &golden_sha.get(..12).unwrap_or("")
        ));
    }
    tags.dedup();
    let open_disk = || -> anyhow::Result<Box<dyn Read + Send>> {
        let f = std::fs::File::open(&version).map_err(unreadable(&version))?;
        Ok(Box::new(tar::disk_layer(f, size)))
    };
    let mut layers = vec![
        Layer {
            digest: disk_digest.clone(),
            size: disk_len,
            media_type: LAYER_TYPE,
            uploaded: false,
        },
        Layer {
            digest: prov_digest.clone(),
            size: prov_layer.len() as u64,
            media_type: LAYER_TYPE,
            uploaded: false,
        },
    ];
    let mut config_layer = Layer {
        digest: config_digest.clone(),
        size: config_bytes.len() as u64,
        media_type: CONFIG_TYPE,
        uploaded: false,
    };
    let mut bytes_uploaded = 0;

    if let (Some(dir), false) = (&o.oci_layout, o.dry_run) {
        write_layout(
            dir,
            &[(
                &disk_digest,
                &open_disk as &dyn Fn() -> anyhow::Result<Box<dyn Read + Send>>,
            )],
            &[
                (&prov_digest, &prov_layer),
                (&config_digest, &config_bytes),
                (&digest, &manifest_out),
            ],
            &digest,
            manifest_out.len(),
            &tags,
        )?;
    }
    let reference = target
        .as_ref()
        .map(|t| format!("{}/{}@{digest}", t.host, t.repo));
    if let (Some(t), false) = (&target, o.dry_run) {
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
        let chunk = o.chunked.then_some(4 << 20);
        let small: [(&str, &[u8]); 2] =
            [(&prov_digest, &prov_layer), (&config_digest, &config_bytes)];
        if !reg.has_blob(&disk_digest)? {
            reg.upload(&disk_digest, disk_len, chunk, &open_disk)?;
            layers[0].uploaded = true;
            bytes_uploaded += disk_len;
        }
        for (i, (d, bytes)) in small.iter().enumerate() {
            if !reg.has_blob(d)? {
                let data = bytes.to_vec();
                let open = move || -> anyhow::Result<Box<dyn Read + Send>> {
                    Ok(Box::new(std::io::Cursor::new(data.clone())))
                };
                reg.upload(d, bytes.len() as u64, None, &open)?;
                bytes_uploaded += bytes.len() as u64;
                if i == 0 {
                    layers[1].uploaded = true
                } else {
                    config_layer.uploaded = true
                }
            }
        }
        for tag in &tags {
            reg.put_manifest(tag, MANIFEST_TYPE, &manifest_out, &digest)?;
        }
        if let Some(r) = &reference {
            record_published(golden, r);
        }
    }
    let kubevirt = reference.as_ref().map(|r| {
        let vsize = m.output.virtual_size;
        let gib = vsize.div_ceil(1 << 30) + 1;
        json!({
            "containerDisk": format!("volumes:\n- name: rootdisk\n  containerDisk:\n    image: {r}\n"),
            "dataVolume": format!(
                "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {title}\nspec:\n  source:\n    registry:\n      url: docker://{r}\n  storage:\n    resources:\n      requests:\n        storage: {gib}Gi\n"
            ),
        })
    });
    Ok(Outcome {
        reference,
        digest,
        tags,
        config: config_layer,
        layers,
        bytes_uploaded,
        oci_layout: o.oci_layout.clone(),
        dry_run: o.dry_run,
        kubevirt,
    })
}

type Opener<'a> = &'a dyn Fn() -> anyhow::Result<Box<dyn Read + Send>>;

/// Writes an OCI image layout: `oci-layout`, `blobs/sha256/…` (each under a
/// temporary name, then moved), `index.json` naming the manifest with each tag
/// beside what it named before under other tags.
fn write_layout(
    dir: &Path,
    streamed: &[(&String, Opener)],
    small: &[(&String, &Vec<u8>)],
    manifest_digest: &str,
    manifest_len: usize,
    tags: &[String],
) -> anyhow::Result<()> {
    // What the layout already names under other tags stays, as skopeo keeps it; a
    // tag given now moves to this image.
    const REF_NAME: &str = "org.opencontainers.image.ref.name";
    let index_path = dir.join("index.json");
    let mut manifests: Vec<Value> = match std::fs::read(&index_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(unreadable(&index_path)(e).into()),
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["manifests"].as_array().cloned())
            .ok_or_else(|| Refusal::NotALayout {
                index: index_path.clone(),
            })?,
    };
    manifests.retain(|m| {
        !tags
            .iter()
            .any(|t| m["annotations"][REF_NAME] == t.as_str())
    });
    manifests.extend(tags.iter().map(|t| {
        json!({"mediaType": MANIFEST_TYPE, "digest": manifest_digest, "size": manifest_len, "annotations": {REF_NAME: t}})
    }));
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)
        .with_context(|| format!("{}: cannot create", blobs.display()))?;
    crate::fsutil::clear_dead_temps(dir, None);
    crate::fsutil::clear_dead_temps(&blobs, None);
    // Each blob whole or not at all, under its digest (one already there is kept).
    let blob = |digest: &str| {
        let path = blobs.join(digest.trim_start_matches("sha256:"));
        (!path.exists()).then_some(path)
    };
    let place = |path: &Path, fill: &mut dyn FnMut(&mut std::fs::File) -> std::io::Result<()>| {
        crate::fsutil::write_with(path, 0o644, crate::fsutil::Place::Replace, fill)
            .with_context(|| format!("{}: cannot write", path.display()))
    };
    for (digest, open) in streamed {
        if let Some(path) = blob(digest) {
            let mut src = open()?;
            place(&path, &mut |f| std::io::copy(&mut src, f).map(drop))?;
        }
    }
    for (digest, bytes) in small {
        if let Some(path) = blob(digest) {
            place(&path, &mut |f| std::io::Write::write_all(f, bytes))?;
        }
    }
    // Small files whole or not at all (temporary name, then moved into place).
    let put = |name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        crate::fsutil::write_file(&dir.join(name), bytes, 0o644, crate::fsutil::Place::Replace)
            .with_context(|| format!("{}: cannot write {name}", dir.display()))
    };
    put("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    put("index.json", &serde_json::to_vec(&index)?)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in ["", "f", "fo", "foo", "user:pa:ss wörd"] {
            assert_eq!(unbase64(&base64(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn references_parse() {
        let t = registry::parse_reference("docker://127.0.0.1:5000/windows/win2k22:v1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.repo.as_str(), t.tag.as_deref()),
            ("127.0.0.1:5000", "windows/win2k22", Some("v1"))
        );
        assert!(registry::parse_reference("docker://host/Upper").is_err());
        assert!(registry::parse_reference("http://host/repo").is_err());
    }
}
