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
/// anything: the UDF file system, the WIM header, its XML.
pub fn installer_images(iso: &Path) -> Result<(&'static str, Vec<wim::Image>), Error> {
    let udf = udf::Udf::open(iso)?;
    for name in INSTALL_IMAGES {
        let Some(file) = udf.find(name)? else {
            continue;
        };
        let named = iso.join(name);
        if file.is_dir || file.size < wim::HEADER as u64 {
            return Err(Error::NotWim {
                path: named,
                reason: format!("{} bytes", file.size),
            });
        }
        let header = udf.read(&file, 0, wim::HEADER as u64)?;
        let (offset, len) = wim::xml_extent(&header, file.size, &named)?;
        let xml = udf.read(&file, offset, len)?;
        return Ok((name, wim::images(&xml, &named)?));
    }
    Err(Error::NoInstallImage {
        path: iso.to_owned(),
    })
}
