//! Removable media wingold writes itself, byte for byte the same for the same
//! inputs (no clock, no host names in them): ISO 9660 images (a clone's seed
//! for its in-guest agent, the answer file of an unattended install) and FAT12
//! floppy images (the answer file of an NT 5 install).

#![deny(unsafe_code)]

pub mod fat12;
pub mod iso9660;
