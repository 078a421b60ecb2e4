//! Old-format logs (Windows XP to 8): a dirty vector of 512-byte pages after
//! the log's base block, replayed when the primary's own base block is valid or
//! the log's is.

use super::{
    grow, put_u32, set_checksum, take_base_block, u32_at, LogFile, LogSummary, Replay,
    BASE_BLOCK_LEN, BINS_SIZE, HBIN_MIN, LOG_HEADER_LEN, SEQ1, SEQ2, TIMESTAMP,
};

/// An old-format log's dirty pages: (bit index, page) in bitmap order.
pub(super) struct OldPages<'a> {
    pub pages: Vec<(usize, &'a [u8])>,
    pub bins_size: u32,
    pub end: usize,
}

pub(super) fn old_pages(b: &[u8]) -> std::result::Result<OldPages<'_>, String> {
    if u32_at(b, SEQ1) != u32_at(b, SEQ2) {
        return Err("its sequence numbers differ (it was being written)".into());
    }
    if b.len() < LOG_HEADER_LEN + 4 || &b[LOG_HEADER_LEN..LOG_HEADER_LEN + 4] != b"DIRT" {
        return Err("no `DIRT` dirty vector after its base block".into());
    }
    let bins_size = u32_at(b, BINS_SIZE);
    if bins_size % HBIN_MIN != 0 {
        return Err("its hive-bins size is not a multiple of 4096".into());
    }
    let bits = bins_size as usize / 512;
    let map_at = LOG_HEADER_LEN + 4;
    let map = b
        .get(map_at..map_at + bits / 8)
        .ok_or("its dirty vector is cut short")?;
    let mut at = (map_at + map.len()).div_ceil(512) * 512;
    let mut pages = Vec::new();
    for bit in 0..bits {
        if map[bit / 8] & (1 << (bit % 8)) != 0 {
            let page = b
                .get(at..at + 512)
                .ok_or("it ends before the last dirty page its vector lists")?;
            pages.push((bit, page));
            at += 512;
        }
    }
    Ok(OldPages {
        pages,
        bins_size,
        end: at,
    })
}

pub(super) fn replay_old(
    bytes: &mut Vec<u8>,
    primary_valid: bool,
    parsed: &[(usize, OldPages)],
    logs: &[LogFile],
    summaries: &mut [LogSummary],
) -> Option<Replay> {
    let timestamp =
        |b: &[u8]| u64::from_le_bytes(b[TIMESTAMP..TIMESTAMP + 8].try_into().expect("8"));
    let (index, pages) = if primary_valid {
        // The first log (in .LOG1, .LOG2, .LOG order as given) written with the
        // hive's own timestamp.
        let own = timestamp(bytes);
        parsed
            .iter()
            .find(|(i, _)| timestamp(logs[*i].bytes) == own)?
    } else {
        // The primary's base block is lost: the newest valid log's replaces it.
        parsed
            .iter()
            .max_by_key(|(i, _)| timestamp(logs[*i].bytes))?
    };
    let log = logs[*index].bytes;
    take_base_block(bytes, log);
    grow(bytes, pages.bins_size);
    let mut applied = 0;
    for (bit, page) in &pages.pages {
        let at = BASE_BLOCK_LEN + bit * 512;
        bytes[at..at + 512].copy_from_slice(page);
        applied += 512;
    }
    // The log's base block is the newer header: both numbers its own.
    let seq = u32_at(log, SEQ1);
    put_u32(bytes, SEQ2, seq);
    set_checksum(bytes);
    summaries[*index].applied = 1;
    Some(Replay {
        logs: Vec::new(),
        applied: 1,
        first_sequence: Some(seq),
        last_sequence: Some(seq),
        base_block_from: (!primary_valid).then(|| logs[*index].name.to_owned()),
        bytes_applied: applied,
    })
}
