//! Removable media wingold writes itself, byte for byte the same for the same
//! inputs (no clock, no host names in them): ISO 9660 images (a clone's seed
//! for its in-guest agent, the answer file of an unattended install) and FAT12
//! floppy images (the answer file of an NT 5 install). And what it reads of the
//! media users bring: a Windows installer ISO's UDF file system and, in it, the
//! images `sources/install.wim` holds.

#![deny(unsafe_code)]

mod error;
pub mod fat12;
pub mod iso9660;
pub mod udf;
pub mod wim;

pub use error::Error;
use std::path::Path;

/// Where a Windows installer ISO keeps its images, as Setup looks for them.
const INSTALL_IMAGES: [&str; 2] = ["sources/install.wim", "sources/install.esd"];

/// The images of the Windows installer ISO at `iso`: which file holds them
/// (`sources/install.wim` or `.esd`) and what each is, read without mounting
/// anything: the UDF file system (Microsoft's ISOs keep install.wim only there)
/// or, on a disc without UDF (one repacked by xorriso or mkisofs), the ISO 9660
/// tree, then the WIM header and its XML.
pub fn installer_images(iso: &Path) -> Result<(&'static str, Vec<wim::Image>), Error> {
    let found = match udf::Udf::open(iso) {
        Ok(udf) => from_udf(udf)?,
        Err(Error::NotUdf { .. }) => from_iso9660(iso)?,
        Err(e) => return Err(e),
    };
    let Some((name, size, read)) = found else {
        return Err(Error::NoInstallImage {
            path: iso.to_owned(),
        });
    };
    let named = iso.join(name);
    if size < wim::HEADER as u64 {
        return Err(Error::NotWim {
            path: named,
            reason: format!("{size} bytes"),
        });
    }
    let header = read(0, wim::HEADER as u64)?;
    let (offset, len) = wim::xml_extent(&header, size, &named)?;
    let xml = read(offset, len)?;
    Ok((name, wim::images(&xml, &named)?))
}

/// Reads `len` bytes of the install image from an offset.
type Reader = Box<dyn Fn(u64, u64) -> Result<Vec<u8>, Error>>;

/// The install image's name, size and reader, through UDF.
fn from_udf(udf: udf::Udf) -> Result<Option<(&'static str, u64, Reader)>, Error> {
    for name in INSTALL_IMAGES {
        if let Some(file) = udf.find(name)?.filter(|f| !f.is_dir) {
            let size = file.size;
            return Ok(Some((
                name,
                size,
                Box::new(move |at, len| udf.read(&file, at, len)),
            )));
        }
    }
    Ok(None)
}

/// The install image's name, size and reader, through the ISO 9660 tree (Rock
/// Ridge names where present); a file over 4 GiB is several extents, each its
/// own directory record of the same name, in order (ECMA-119 multi-extent).
fn from_iso9660(iso: &Path) -> Result<Option<(&'static str, u64, Reader)>, Error> {
    let image = iso9660::Iso::open(iso)?;
    let entries = image.list()?;
    for name in INSTALL_IMAGES {
        let parts: Vec<iso9660::Entry> = entries
            .iter()
            .filter(|e| !e.is_dir && e.path.eq_ignore_ascii_case(name))
            .cloned()
            .collect();
        if parts.is_empty() {
            continue;
        }
        let size = parts.iter().map(|p| p.size).sum();
        let runs: Vec<(Option<u64>, u64)> =
            parts.iter().map(|p| (Some(p.offset), p.size)).collect();
        let whole = parts[0].clone();
        let read = move |at: u64, len: u64| {
            read_runs(&runs, at, len, |offset, size| {
                image.read(&iso9660::Entry {
                    offset,
                    size,
                    ..whole.clone()
                })
            })
        };
        return Ok(Some((name, size, Box::new(read))));
    }
    Ok(None)
}

/// `len` bytes from `offset` of a file laid out in `runs` (where each run is in
/// the image, None for a hole that reads as zeros, and how long), read through
/// `bytes(image offset, length)`.
fn read_runs(
    runs: &[(Option<u64>, u64)],
    offset: u64,
    len: u64,
    bytes: impl Fn(u64, u64) -> Result<Vec<u8>, Error>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(len as usize);
    let (mut at, end) = (0u64, offset + len);
    for &(place, run) in runs {
        let (from, to) = (offset.max(at), end.min(at + run));
        if from < to {
            match place {
                Some(base) => out.extend(bytes(base + (from - at), to - from)?),
                None => out.resize(out.len() + (to - from) as usize, 0),
            }
        }
        at += run;
        if at >= end {
            break;
        }
    }
    Ok(out)
}
