//! Backing chains as QEMU resolves them: names relative to the overlay's folder,
//! formats probed or declared, loops told by identity.

use super::*;

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
    let resolved = resolve_backing(path, name);
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

/// The files an image rests on, nearest first, read from the headers alone: no
/// locks (images that running VMs hold are read too), no tables. Stops at a raw
/// or unreadable file, or where the chain comes back to a file already seen.
pub fn backing_files(path: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = Vec::new();
    let mut cur = path.to_owned();
    loop {
        let Ok(file) = File::open(&cur) else { break };
        let Ok(meta) = file.metadata() else { break };
        if !meta.is_file() || seen.contains(&(meta.dev(), meta.ino())) {
            break;
        }
        seen.push((meta.dev(), meta.ino()));
        let mut head = vec![0u8; 4096.min(meta.len() as usize)];
        if file.read_exact_at(&mut head, 0).is_err() {
            break;
        }
        let Ok(h) = Header::parse(&cur, &head) else {
            break;
        };
        let Some(name) = h.backing_file else { break };
        cur = resolve_backing(&cur, &name);
        out.push(cur.clone());
    }
    out
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
