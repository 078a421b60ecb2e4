//! Bringing a dirty hive up to date from its transaction logs, as Windows does
//! when it loads one: the regf specification (msuhanov/regf, "Format of
//! transaction log files", "Dirty state of a hive", "Multiple transaction log
//! files") followed rule by rule. Safe Rust over bytes; nothing here reads files.
//!
//! - New format (`HvLE` entries, Windows 8.1 on): the two logs are taken in the
//!   order of their sequence numbers (with wrap); entries apply while each is
//!   intact (size, Hash-1, Hash-2, hive-bins size) and carries the next sequence
//!   number; the first bad entry ends the log, and the second log must go on
//!   from the last number applied.
//! - Old format (`DIRT` bitmap, Vista and 7): one log applies whole, the one whose
//!   base block is valid and whose timestamp matches the hive's.
//! - A primary base block with a wrong checksum is taken from the log (the new
//!   format's latest, the old format's newest valid one).

use super::header::{base_block_checksum, BASE_BLOCK_LEN, CHECKSUM_OFFSET};
use super::marvin::{marvin32, LOG_ENTRY_SEED};
use super::{Error, Result};
use serde::Serialize;

mod old;
use old::{old_pages, replay_old};

/// A log's copy of the base block fills its first sector.
const LOG_HEADER_LEN: usize = 512;
const ENTRY_HEADER_LEN: usize = 40;
/// `File type` of a base block: 0 a primary file, 1 (2 before XP) an old-format
/// log, 6 a new-format log.
const FILE_TYPE_PRIMARY: u32 = 0;
const FILE_TYPES_OLD: [u32; 2] = [1, 2];
const FILE_TYPE_NEW: u32 = 6;
const HBIN_MIN: u32 = 4096;
/// Offsets in a base block.
const SEQ1: usize = 4;
const SEQ2: usize = 8;
const TIMESTAMP: usize = 12;
const FILE_TYPE: usize = 28;
const BINS_SIZE: usize = 40;
const FLAGS: usize = 144;
const LAST_REORGANIZED: usize = 168;

/// One transaction log as read from beside its hive.
#[derive(Debug, Clone, Copy)]
pub struct LogFile<'a> {
    /// Its file name, e.g. `SYSTEM.LOG1`.
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// What a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Zero bytes: nothing to apply.
    Empty,
    /// `HvLE` entries (Windows 8.1 and later).
    New,
    /// A `DIRT` bitmap and its pages (Vista, 7 and earlier).
    Old,
    /// Not a log wingold can use; `note` says why.
    Unusable,
}

/// One log, as `inspect` shows it and a replay used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogSummary {
    pub name: String,
    pub format: LogFormat,
    pub size: u64,
    /// Intact entries in a row from the start (an old-format log counts as one).
    pub entries: u32,
    pub first_sequence: Option<u32>,
    pub last_sequence: Option<u32>,
    /// Bytes of the log those entries fill, its base block included.
    pub valid_bytes: u64,
    /// Entries of it this replay applied.
    pub applied: u32,
    /// Why reading it stopped before its end, or why it is unusable.
    pub note: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replay {
    pub logs: Vec<LogSummary>,
    /// Entries applied, over all logs.
    pub applied: u32,
    pub first_sequence: Option<u32>,
    pub last_sequence: Option<u32>,
    /// The log whose base block replaced the primary's damaged one.
    pub base_block_from: Option<String>,
    /// Bytes of hive-bin pages written.
    pub bytes_applied: u64,
}

/// The outcome of [`recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The hive is clean: logs are not read (Windows ignores them too).
    Clean,
    /// The hive was dirty and is now up to date; its header is clean.
    Replayed(Replay),
    /// Dirty, and nothing in the logs applies to it; the bytes are untouched.
    NothingApplies { why: String, logs: Vec<LogSummary> },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4"))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// `a` comes before `b` in a sequence that wraps at 2^32.
fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A base block (or a log's first sector) that reads as one: signature and
/// checksum right.
fn valid_base_block(b: &[u8]) -> bool {
    b.len() >= LOG_HEADER_LEN
        && &b[0..4] == b"regf"
        && u32_at(b, CHECKSUM_OFFSET) == base_block_checksum(b)
}

fn set_checksum(b: &mut [u8]) {
    let sum = base_block_checksum(b);
    put_u32(b, CHECKSUM_OFFSET, sum);
}

/// One intact new-format entry.
struct Entry<'a> {
    sequence: u32,
    flags: u32,
    bins_size: u32,
    /// (offset in the hive bins data, bytes)
    pages: Vec<(u32, &'a [u8])>,
}

/// A log parsed: its base block's sequence and the intact entries from the start.
struct NewLog<'a> {
    index: usize,
    base_sequence: u32,
    entries: Vec<Entry<'a>>,
}

/// Reads entries from the second sector on, stopping at the first that fails a
/// check; returns them, the bytes they fill, and why reading stopped early.
fn read_entries(bytes: &[u8]) -> (Vec<Entry<'_>>, usize, Option<String>) {
    let mut out = Vec::new();
    let mut at = LOG_HEADER_LEN;
    let stop = |at: usize, why: &str| Some(format!("entry at byte {at}: {why}"));
    let note = loop {
        if at + ENTRY_HEADER_LEN > bytes.len() {
            break None;
        }
        let head = &bytes[at..at + ENTRY_HEADER_LEN];
        if &head[0..4] != b"HvLE" {
            // Zeros after the last entry are the usual end; anything else is
            // remnants of older writes, also an end.
            break None;
        }
        let size = u32_at(head, 4) as usize;
        let bins_size = u32_at(head, 16);
        let count = u32_at(head, 20) as usize;
        if size < ENTRY_HEADER_LEN || size % 512 != 0 || size > bytes.len() - at {
            break stop(at, "its size does not fit the log");
        }
        let entry = &bytes[at..at + size];
        if u64::from_le_bytes(entry[24..32].try_into().expect("8"))
            != marvin32(&entry[ENTRY_HEADER_LEN..], LOG_ENTRY_SEED)
        {
            break stop(at, "Hash-1 does not match its data");
        }
        if u64::from_le_bytes(entry[32..40].try_into().expect("8"))
            != marvin32(&entry[..32], LOG_ENTRY_SEED)
        {
            break stop(at, "Hash-2 does not match its header");
        }
        if bins_size == 0 || bins_size % HBIN_MIN != 0 {
            break stop(at, "its hive-bins size is not a multiple of 4096");
        }
        let Some(refs_end) = count
            .checked_mul(8)
            .map(|n| n + ENTRY_HEADER_LEN)
            .filter(|&e| e <= size)
        else {
            break stop(at, "its page references do not fit it");
        };
        let mut data = refs_end;
        let mut pages = Vec::with_capacity(count);
        let mut bad = None;
        for r in entry[ENTRY_HEADER_LEN..refs_end].chunks_exact(8) {
            let (offset, len) = (u32_at(r, 0), u32_at(r, 4) as usize);
            let inside = u64::from(offset) + len as u64 <= u64::from(bins_size);
            if !inside || offset % 512 != 0 || len % 512 != 0 || len > size - data {
                bad = stop(at, "a page reference falls outside the hive or the entry");
                break;
            }
            pages.push((offset, &entry[data..data + len]));
            data += len;
        }
        if bad.is_some() {
            break bad;
        }
        out.push(Entry {
            sequence: u32_at(head, 12),
            flags: u32_at(head, 8),
            bins_size,
            pages,
        });
        at += size;
    };
    (out, at, note)
}

/// Brings `bytes` (a primary hive file) up to date from `logs`, in place.
///
/// A clean hive is left alone ([`Outcome::Clean`]). A dirty one is replayed and
/// given a clean header: sequence numbers equal (the last applied), checksum
/// recomputed. When no log applies, the bytes are untouched and the outcome says
/// why. Errors: not a hive at all, or a replay that leaves a hive bin damaged.
pub fn recover(name: &str, bytes: &mut Vec<u8>, logs: &[LogFile]) -> Result<Outcome> {
    if bytes.len() < BASE_BLOCK_LEN {
        return Err(Error::NotAHive {
            name: name.to_owned(),
            reason: "shorter than the 4096-byte base block".into(),
        });
    }
    let primary_valid = valid_base_block(bytes);
    if primary_valid && u32_at(bytes, SEQ1) == u32_at(bytes, SEQ2) {
        return Ok(Outcome::Clean);
    }
    if !primary_valid && &bytes[0..4] != b"regf" && bytes[4096..].get(..4) != Some(b"hbin") {
        return Err(Error::NotAHive {
            name: name.to_owned(),
            reason: "no `regf` signature and no hive bin after the base block".into(),
        });
    }
    let mut summaries: Vec<LogSummary> = logs
        .iter()
        .map(|l| LogSummary {
            name: l.name.to_owned(),
            format: LogFormat::Unusable,
            size: l.bytes.len() as u64,
            entries: 0,
            first_sequence: None,
            last_sequence: None,
            valid_bytes: 0,
            applied: 0,
            note: None,
        })
        .collect();
    // Each log: its format and what it holds.
    let mut new_logs = Vec::new();
    let mut old_logs = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let s = &mut summaries[i];
        let b = log.bytes;
        if b.is_empty() {
            s.format = LogFormat::Empty;
            continue;
        }
        if !valid_base_block(b) {
            s.note = Some("its base block is damaged (signature or checksum)".into());
            continue;
        }
        match u32_at(b, FILE_TYPE) {
            FILE_TYPE_NEW => {
                let (entries, end, note) = read_entries(b);
                s.format = LogFormat::New;
                s.entries = entries.len() as u32;
                s.first_sequence = entries.first().map(|e| e.sequence);
                s.last_sequence = entries.last().map(|e| e.sequence);
                s.valid_bytes = end as u64;
                s.note = note;
                new_logs.push(NewLog {
                    index: i,
                    base_sequence: u32_at(b, SEQ1),
                    entries,
                });
            }
            t if FILE_TYPES_OLD.contains(&t) => match old_pages(b) {
                Ok(pages) => {
                    s.format = LogFormat::Old;
                    s.entries = 1;
                    s.first_sequence = Some(u32_at(b, SEQ1));
                    s.last_sequence = Some(u32_at(b, SEQ1));
                    s.valid_bytes = pages.end as u64;
                    old_logs.push((i, pages));
                }
                Err(why) => s.note = Some(why),
            },
            t => s.note = Some(format!("file type {t} is no transaction log")),
        }
    }
    let nothing = |why: String, summaries| {
        Ok(Outcome::NothingApplies {
            why,
            logs: summaries,
        })
    };
    let mut replay = if new_logs.iter().any(|l| !l.entries.is_empty()) {
        match replay_new(bytes, primary_valid, &new_logs, logs, &mut summaries) {
            Some(r) => r,
            None => {
                return nothing(
                    "no entry of its logs carries the sequence number that comes next".into(),
                    summaries,
                )
            }
        }
    } else if !old_logs.is_empty() {
        match replay_old(bytes, primary_valid, &old_logs, logs, &mut summaries) {
            Some(r) => r,
            None => {
                return nothing(
                    "its log's timestamp does not match the hive's (the log is older)".into(),
                    summaries,
                )
            }
        }
    } else if logs.is_empty() {
        return nothing("it has no transaction logs".into(), summaries);
    } else if summaries.iter().all(|s| s.format == LogFormat::Empty) {
        return nothing("its transaction logs are empty".into(), summaries);
    } else {
        return nothing(
            "its transaction logs hold no usable entry".into(),
            summaries,
        );
    };
    check_bins(name, bytes)?;
    replay.logs = summaries;
    Ok(Outcome::Replayed(replay))
}

/// Grows `bytes` to hold `bins_size` bytes of hive bins.
fn grow(bytes: &mut Vec<u8>, bins_size: u32) {
    let want = BASE_BLOCK_LEN + bins_size as usize;
    if bytes.len() < want {
        bytes.resize(want, 0);
    }
}

/// The base block of `log` put over the primary's (file type back to primary).
fn take_base_block(bytes: &mut [u8], log: &[u8]) {
    bytes[..LOG_HEADER_LEN].copy_from_slice(&log[..LOG_HEADER_LEN]);
    put_u32(bytes, FILE_TYPE, FILE_TYPE_PRIMARY);
}

/// The fields of a log's base block that describe the hive as the log's
/// entries leave it (the in-memory base block it copies): root cell, version,
/// timestamps, flags.
fn adopt_header(bytes: &mut [u8], log: &[u8]) {
    for (at, len) in [(12, 8), (20, 8), (36, 4), (FLAGS, 4), (LAST_REORGANIZED, 8)] {
        bytes[at..at + len].copy_from_slice(&log[at..at + len]);
    }
}

fn replay_new(
    bytes: &mut Vec<u8>,
    primary_valid: bool,
    parsed: &[NewLog],
    logs: &[LogFile],
    summaries: &mut [LogSummary],
) -> Option<Replay> {
    let mut order: Vec<&NewLog> = parsed.iter().filter(|l| !l.entries.is_empty()).collect();
    order.sort_by(|a, b| {
        if seq_before(a.base_sequence, b.base_sequence) {
            std::cmp::Ordering::Less
        } else if a.base_sequence == b.base_sequence {
            a.index.cmp(&b.index)
        } else {
            std::cmp::Ordering::Greater
        }
    });
    let mut base_block_from = None;
    if !primary_valid {
        // Only the log with the latest entries, its base block taken first.
        let latest = *order.last()?;
        order = vec![latest];
        take_base_block(bytes, logs[latest.index].bytes);
        base_block_from = Some(logs[latest.index].name.to_owned());
    }
    let floor = u32_at(bytes, SEQ2);
    let mut next: Option<u32> = None;
    let mut replay = Replay {
        logs: Vec::new(),
        applied: 0,
        first_sequence: None,
        last_sequence: None,
        base_block_from,
        bytes_applied: 0,
    };
    for log in order {
        for (n, e) in log.entries.iter().enumerate() {
            let expected = match next {
                Some(s) => e.sequence == s,
                // The first entry applied: the log's own first, and not older
                // than the hive (a valid primary's secondary number).
                None => {
                    n == 0
                        && e.sequence == log.base_sequence
                        && (!primary_valid || !seq_before(e.sequence, floor))
                }
            };
            if !expected {
                if summaries[log.index].note.is_none() {
                    summaries[log.index].note = Some(format!(
                        "entry {n} carries sequence {} where {} was due; replay of this log \
                         stops there",
                        e.sequence,
                        next.map_or("the log's first".into(), |s| s.to_string())
                    ));
                }
                break;
            }
            if summaries[log.index].applied == 0 {
                adopt_header(bytes, logs[log.index].bytes);
            }
            grow(bytes, e.bins_size);
            for (offset, page) in &e.pages {
                let at = BASE_BLOCK_LEN + *offset as usize;
                bytes[at..at + page.len()].copy_from_slice(page);
                replay.bytes_applied += page.len() as u64;
            }
            put_u32(bytes, BINS_SIZE, e.bins_size);
            let flags = (u32_at(bytes, FLAGS) & !1) | (e.flags & 1);
            put_u32(bytes, FLAGS, flags);
            replay.first_sequence.get_or_insert(e.sequence);
            replay.last_sequence = Some(e.sequence);
            replay.applied += 1;
            summaries[log.index].applied += 1;
            next = Some(e.sequence.wrapping_add(1));
        }
    }
    let last = replay.last_sequence?;
    put_u32(bytes, SEQ1, last);
    put_u32(bytes, SEQ2, last);
    set_checksum(bytes);
    Some(replay)
}

/// After a replay every hive bin must read as one (signature, its own offset, a
/// size of whole 4 KiB pages inside the hive): a page written over a bin's
/// header from a log that was cut or mixed up would otherwise go unnoticed.
fn check_bins(name: &str, bytes: &[u8]) -> Result<()> {
    let total = u32_at(bytes, BINS_SIZE) as usize;
    let mut rel = 0usize;
    while rel < total {
        let at = BASE_BLOCK_LEN + rel;
        let bad = |why: &str| Error::LogReplay {
            name: name.to_owned(),
            reason: format!(
                "after its transaction logs are replayed, the hive bin at offset {rel:#x} {why}"
            ),
        };
        let head = bytes.get(at..at + 12).ok_or_else(|| bad("is cut short"))?;
        if &head[0..4] != b"hbin" {
            return Err(bad("has no `hbin` signature"));
        }
        if u32_at(head, 4) as usize != rel {
            return Err(bad("names another offset"));
        }
        let size = u32_at(head, 8) as usize;
        if size < HBIN_MIN as usize || size % HBIN_MIN as usize != 0 || size > total - rel {
            return Err(bad(
                "has a size that is no whole number of pages inside the hive",
            ));
        }
        rel += size;
    }
    Ok(())
}

/// The highest sequence number any of `logs` carries (base blocks and intact
/// entries), and the timestamps of the old-format ones: what a base block
/// written while a hive is being replaced must stay past, so that no log applies
/// over a half-written body.
pub fn log_marks(logs: &[LogFile]) -> (Option<u32>, Vec<u64>) {
    let mut highest: Option<u32> = None;
    let mut stamps = Vec::new();
    let mut see = |s: u32| {
        if highest.is_none_or(|h| seq_before(h, s)) {
            highest = Some(s);
        }
    };
    for log in logs {
        let b = log.bytes;
        if b.len() < LOG_HEADER_LEN || &b[0..4] != b"regf" {
            continue;
        }
        see(u32_at(b, SEQ1));
        see(u32_at(b, SEQ2));
        stamps.push(u64::from_le_bytes(
            b[TIMESTAMP..TIMESTAMP + 8].try_into().expect("8"),
        ));
        if u32_at(b, FILE_TYPE) == FILE_TYPE_NEW {
            for e in read_entries(b).0 {
                see(e.sequence);
            }
        }
    }
    (highest, stamps)
}

/// The base block `head` (of a clean hive about to be written over a file whose
/// transaction logs are `logs`) marked as a write in progress past every log:
/// secondary sequence above anything the logs carry, primary one above that, a
/// timestamp no old-format log shares. A kill while the body is written leaves a
/// dirty hive to which no log applies — visibly needing repair, never a log's
/// pages replayed over a half-new body. (A whole base block by type: the fuzzer
/// found the slice this once took cut short.)
pub fn in_progress_base_block(head: &[u8; BASE_BLOCK_LEN], logs: &[LogFile]) -> Vec<u8> {
    let mut head = head.to_vec();
    let (highest, stamps) = log_marks(logs);
    let own = u32_at(&head, SEQ1);
    let floor = match highest {
        Some(h) if !seq_before(h, own) => h,
        _ => own,
    };
    put_u32(&mut head, SEQ1, floor.wrapping_add(2));
    put_u32(&mut head, SEQ2, floor.wrapping_add(1));
    let mut stamp = u64::from_le_bytes(head[TIMESTAMP..TIMESTAMP + 8].try_into().expect("8"));
    while stamps.contains(&stamp) {
        stamp = stamp.wrapping_add(1);
    }
    head[TIMESTAMP..TIMESTAMP + 8].copy_from_slice(&stamp.to_le_bytes());
    set_checksum(&mut head);
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_order_wraps() {
        assert!(seq_before(1, 2));
        assert!(seq_before(u32::MAX, 0));
        assert!(!seq_before(0, u32::MAX));
        assert!(!seq_before(5, 5));
    }
}
