//! Marvin32, the keyed hash Windows stamps on each new-format log entry
//! (Hash-1 and Hash-2 of an `HvLE` entry).

/// The seed of the log-entry hashes. The specification lists it as the bytes
/// `82 EF 4D 88 7A 4E 55 C5`; read as one big-endian number, as here, it is the
/// seed that reproduces the hashes Windows wrote in the corpus logs
/// (tests/hive_logs.rs checks every entry of them).
pub const LOG_ENTRY_SEED: u64 = 0x82EF_4D88_7A4E_55C5;

fn block(lo: &mut u32, hi: &mut u32) {
    *hi ^= *lo;
    *lo = lo.rotate_left(20).wrapping_add(*hi);
    *hi = hi.rotate_left(9) ^ *lo;
    *lo = lo.rotate_left(27).wrapping_add(*hi);
    *hi = hi.rotate_left(19);
}

/// Marvin32 of `data` under `seed`: the 64-bit result (high word the second
/// state word), as the log entries store it.
pub fn marvin32(data: &[u8], seed: u64) -> u64 {
    let (mut lo, mut hi) = (seed as u32, (seed >> 32) as u32);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        lo = lo.wrapping_add(u32::from_le_bytes(w.try_into().expect("4")));
        block(&mut lo, &mut hi);
    }
    // The tail, then a 0x80 byte, zero-padded to two words.
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[rest.len()] = 0x80;
    for w in last.chunks_exact(4) {
        lo = lo.wrapping_add(u32::from_le_bytes(w.try_into().expect("4")));
        block(&mut lo, &mut hi);
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lengths_differ() {
        // Every tail length takes its own padding path; none may collide with another.
        let data = b"abcdefg";
        let all: Vec<u64> = (0..=data.len())
            .map(|n| marvin32(&data[..n], LOG_ENTRY_SEED))
            .collect();
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| b != a), "{all:x?}");
        }
    }
}
