//! `--oci-layout DIR`: the same image as an OCI image layout, each blob and
//! file whole or not at all, other tags' manifests kept.

use super::{Refusal, MANIFEST_TYPE};
use crate::error::unreadable;
use anyhow::Context;
use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;

pub(super) type Opener<'a> = &'a dyn Fn() -> anyhow::Result<Box<dyn Read + Send>>;

/// Writes an OCI image layout: `oci-layout`, `blobs/sha256/…` (each under a
/// temporary name, then moved), `index.json` naming the manifest with each tag
/// beside what it named before under other tags.
pub(super) fn write_layout(
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
