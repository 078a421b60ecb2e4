//! Backing chains as QEMU resolves them: names relative to the overlay's folder,
//! formats probed or declared, loops told by identity.

use super::{Access, Error, Header, Image, Qcow2Image, Result, MAX_CHAIN_DEPTH};
use crate::image::BlockDev;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
/// Reads from a base that may be shorter than the overlay: past its end is zeros.
pub(super) fn read_base(base: &Image, offset: u64, buf: &mut [u8]) -> Result<()> {
    let avail = base.len().saturating_sub(offset).min(buf.len() as u64) as usize;
    if avail > 0 {
        base.read_at(offset, &mut buf[..avail])?;
    }
    buf[avail..].fill(0);
    Ok(())
}

pub(super) fn open_backing(
    path: &Path,
    name: &str,
    header: &Header,
    above: &[(u64, u64)],
) -> Result<Image> {
    let resolved = backing_path(path, name).unwrap_or_else(|_| resolve_backing(path, name));
    let wrap = |source: Error| Error::Backing {
        path: path.to_owned(),
        backing: resolved.clone(),
        source: Box::new(source),
    };
    if name.is_empty() {
        return Err(Error::corrupt(path, "its backing file name is empty"));
    }
    if above.len() >= MAX_CHAIN_DEPTH {
        return Err(wrap(Error::corrupt(
            &resolved,
            format!("the backing chain is deeper than {MAX_CHAIN_DEPTH} images"),
        )));
    }
    let format = match header.backing_format.as_deref() {
        Some("raw") => crate::image::Format::Raw,
        Some("qcow2") => crate::image::Format::Qcow2,
        Some(other) => {
            return Err(wrap(Error::unsupported(
                &resolved,
                format!("a backing file of format {other:?}"),
                "use a qcow2 or raw base",
            )))
        }
        None => crate::image::sniff(&resolved).map_err(wrap)?,
    };
    let image = match format {
        crate::image::Format::Raw => {
            crate::image::RawImage::open(&resolved, Access::ReadOnly).map(Image::Raw)
        }
        crate::image::Format::Qcow2 => {
            Qcow2Image::open_in_chain(&resolved, Access::ReadOnly, above)
                .map(|q| Image::Qcow2(Box::new(q)))
        }
    };
    image.map_err(wrap)
}

/// A backing name that could not be followed to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The image whose header names it.
    pub image: PathBuf,
    pub name: String,
    pub why: String,
}

/// An image's backing chain as far as it could be followed.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// The files it rests on, nearest first.
    pub files: Vec<PathBuf>,
    /// Where it could not go on, when a name leads to no readable image file
    /// (missing, a FIFO or device, a `json:` name that is no local file).
    pub unresolved: Option<Unresolved>,
}

/// The files an image rests on, nearest first, read from the headers alone: no
/// locks (images that running VMs hold are read too), no tables. Stops at a raw
/// or unreadable file, or where the chain comes back to a file already seen.
pub fn backing_files(path: &Path) -> Vec<PathBuf> {
    backing_chain(path).files
}

/// [`backing_files`], saying where a backing name could not be followed. No file
/// is opened before its type is known (opening a FIFO blocks).
pub fn backing_chain(path: &Path) -> Chain {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut chain = Chain::default();
    let mut seen = Vec::new();
    let mut cur = path.to_owned();
    let mut named: Option<(PathBuf, String)> = None;
    fn at(named: &Option<(PathBuf, String)>, why: String) -> Option<Unresolved> {
        named
            .clone()
            .map(|(image, name)| Unresolved { image, name, why })
    }
    loop {
        let meta = match std::fs::metadata(&cur) {
            Ok(m) => m,
            Err(e) => {
                chain.unresolved = at(&named, format!("{}: {e}", cur.display()));
                break;
            }
        };
        let t = meta.file_type();
        if !t.is_file() {
            if !t.is_block_device() {
                chain.unresolved = at(&named, format!("{} is no image file", cur.display()));
            }
            break;
        }
        if seen.contains(&(meta.dev(), meta.ino())) {
            break;
        }
        seen.push((meta.dev(), meta.ino()));
        let Ok(file) = File::open(&cur) else {
            chain.unresolved = at(&named, format!("{}: cannot be opened", cur.display()));
            break;
        };
        let mut head = vec![0u8; 4096.min(meta.len() as usize)];
        if file.read_exact_at(&mut head, 0).is_err() {
            break;
        }
        let Ok(h) = Header::parse(&cur, &head) else {
            break;
        };
        let Some(name) = h.backing_file else { break };
        named = Some((cur.clone(), name.clone()));
        match backing_path(&cur, &name) {
            Ok(next) => {
                cur = next;
                chain.files.push(cur.clone());
            }
            Err(why) => {
                chain.unresolved = at(&named, why);
                break;
            }
        }
    }
    chain
}

/// The local file a backing name stands for: a path (relative ones against the
/// overlay's folder, as QEMU resolves them), `file:PATH`, or QEMU's
/// `json:{…}` form whose protocol layer is a local file.
pub fn backing_path(path: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let Some(json) = name.strip_prefix("json:") else {
        return Ok(resolve_backing(
            path,
            name.strip_prefix("file:").unwrap_or(name),
        ));
    };
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("a json: name QEMU would not read ({e})"))?;
    // {"driver": "qcow2", "file": {"driver": "file", "filename": "/…"}},
    // {"file.filename": "/…"}, or {"file": "/…"}.
    fn local(v: &serde_json::Value, depth: usize) -> Option<String> {
        if depth > 8 {
            return None;
        }
        let driver = v.get("driver").and_then(|d| d.as_str());
        if let Some(f) = v.get("filename").and_then(|f| f.as_str()) {
            return matches!(driver, None | Some("file")).then(|| f.to_owned());
        }
        if let Some(f) = v.get("file.filename").and_then(|f| f.as_str()) {
            let inner = v.get("file.driver").and_then(|d| d.as_str());
            return matches!(inner, None | Some("file")).then(|| f.to_owned());
        }
        match v.get("file") {
            Some(serde_json::Value::String(f)) => Some(f.clone()),
            Some(inner) => local(inner, depth + 1),
            None => None,
        }
    }
    local(&value, 0)
        .map(|f| resolve_backing(path, &f))
        .ok_or_else(|| "a json: name whose protocol is no local file".to_owned())
}

/// QEMU resolves a relative backing name against the overlay's folder.
pub(super) fn resolve_backing(path: &Path, name: &str) -> PathBuf {
    let name = Path::new(name);
    if name.is_absolute() {
        return name.to_owned();
    }
    path.parent()
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| name.to_owned())
}
