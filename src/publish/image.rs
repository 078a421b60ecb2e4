//! The OCI image of a golden version, assembled: the disk layer's digest
//! (cached beside the version), the provenance layer, labels and annotations
//! from the manifest's deterministic part, the config and the manifest — the
//! same bytes on any machine for the same golden image and manifest.

use super::{tar, Options, CONFIG_TYPE, LAYER_TYPE, LAYOUT_VERSION, MANIFEST_TYPE};
use crate::error::unreadable;
use crate::golden::manifest::Manifest;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// An assembled image, ready to write or push.
pub(super) struct Image {
    /// The version's name without its digest suffix (`win2k22`).
    pub title: String,
    pub disk_digest: String,
    pub disk_len: u64,
    pub prov_layer: Vec<u8>,
    pub prov_digest: String,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    pub digest: String,
}

/// Assembles the image of `version` (`size` bytes, described by `m`).
pub(super) fn assemble(
    o: &Options,
    version: &Path,
    m: &Manifest,
    size: u64,
) -> anyhow::Result<Image> {
    let disk_digest = disk_layer_digest(version, &m.output.sha256, size)?;
    let disk_len = tar::disk_layer_len(size);
    let prov_bytes = serde_json::to_vec(&provenance(m))?;
    let prov_layer = tar::small_layer(
        &["wingold/"],
        &[("wingold/provenance.json", 0o444, &prov_bytes)],
    );
    let prov_digest = oci_digest(&prov_layer);
    let title = version
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let title = title
        .rsplit_once('-')
        .map(|(a, _)| a.to_owned())
        .unwrap_or(title);
    let ann = annotations(o, m, &title, size, &prov_bytes);
    let pref = match o.preference.as_str() {
        "" | "auto" => preference_for(&m.windows.osinfo, m.virtio_win.drivers_injected),
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
    let config = serde_json::to_vec(&config)?;
    let config_digest = oci_digest(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [
            {"mediaType": LAYER_TYPE, "digest": disk_digest, "size": disk_len},
            {"mediaType": LAYER_TYPE, "digest": prov_digest, "size": prov_layer.len()},
        ],
        "annotations": Value::Object(ann),
    });
    let manifest = serde_json::to_vec(&manifest)?;
    Ok(Image {
        title,
        digest: oci_digest(&manifest),
        disk_digest,
        disk_len,
        prov_layer,
        prov_digest,
        config,
        config_digest,
        manifest,
    })
}

/// Annotations (and the config's labels), from the deterministic part only; a
/// value the manifest does not hold (an unhashed base) is left out.
fn annotations(
    o: &Options,
    m: &Manifest,
    title: &str,
    size: u64,
    prov_bytes: &[u8],
) -> serde_json::Map<String, Value> {
    let w = &m.windows;
    let mut ann = serde_json::Map::new();
    let mut put = |k: &str, v: String| {
        if v != "null" && !v.is_empty() {
            ann.insert(k.to_owned(), Value::String(v));
        }
    };
    put("org.opencontainers.image.title", title.to_owned());
    put(
        "org.opencontainers.image.description",
        format!("{} {} golden image (wingold)", w.product_name, w.version),
    );
    if let Some(c) = &o.created {
        put("org.opencontainers.image.created", c.clone());
    }
    put("io.wingold.version", m.wingold_version.clone());
    put("io.wingold.golden.sha256", m.output.sha256.clone());
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
        crate::fsutil::sha256_hex(prov_bytes),
    );
    ann
}

pub(super) fn oci_digest(b: &[u8]) -> String {
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
