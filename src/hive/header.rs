//! The regf base block: its checksum, its state (clean or dirty), and the
//! "write in progress" mark a crash-ordered write puts on it first.

use super::{Error, Result};
use serde::Serialize;

/// Size of the regf base block.
pub const BASE_BLOCK_LEN: usize = 4096;
/// Offset of the XOR-32 checksum of the first 508 bytes (REGF "Base block").
pub(super) const CHECKSUM_OFFSET: usize = 508;

/// The REGF checksum of a base block: XOR of its first 127 dwords, with 0 stored
/// as 1 and 0xffffffff as 0xfffffffe.
pub(super) fn base_block_checksum(bytes: &[u8]) -> u32 {
    let xor = bytes[..CHECKSUM_OFFSET]
        .chunks_exact(4)
        .fold(0u32, |acc, d| {
            acc ^ u32::from_le_bytes(d.try_into().expect("4"))
        });
    match xor {
        0 => 1,
        0xffff_ffff => 0xffff_fffe,
        x => x,
    }
}

/// What the regf base block says (msuhanov/regf, "Base block").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderState {
    pub primary_sequence: u32,
    pub secondary_sequence: u32,
    pub checksum_valid: bool,
    pub major_version: u32,
    pub minor_version: u32,
}

impl HeaderState {
    /// Parses the base block at the start of `bytes`.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<HeaderState> {
        let bad = |reason: &str| Error::NotAHive {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() < BASE_BLOCK_LEN {
            return Err(bad("shorter than the 4096-byte base block"));
        }
        if &bytes[0..4] != b"regf" {
            return Err(bad("no `regf` signature"));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let expected = base_block_checksum(bytes);
        Ok(HeaderState {
            primary_sequence: u32_at(4),
            secondary_sequence: u32_at(8),
            checksum_valid: u32_at(CHECKSUM_OFFSET) == expected,
            major_version: u32_at(20),
            minor_version: u32_at(24),
        })
    }

    /// Clean: checksum right and both sequence numbers equal. A dirty hive has
    /// changes pending in its transaction logs.
    pub fn is_clean(&self) -> bool {
        self.checksum_valid && self.primary_sequence == self.secondary_sequence
    }

    /// Why the hive is dirty, when it is.
    pub fn dirty_reason(&self) -> Option<String> {
        if !self.checksum_valid {
            Some("the header checksum is wrong".into())
        } else if self.primary_sequence != self.secondary_sequence {
            Some(format!(
                "primary sequence {} != secondary sequence {}",
                self.primary_sequence, self.secondary_sequence
            ))
        } else {
            None
        }
    }
}
