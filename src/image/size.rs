//! Human sizes as `qemu-img` takes them: a number with an optional K, M, G or T
//! suffix (powers of 1024), e.g. `20G`, `512M`, `1073741824`.

use super::{Error, Result};

/// Parses `text` into bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = |reason: &str| Error::BadSize {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad("the suffix must be K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "expected a whole number with an optional K, M, G or T suffix",
        ));
    }
    let n: u64 = digits.parse().map_err(|_| bad("number too large"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| bad("number too large"))?;
    if bytes == 0 {
        return Err(bad("the size must be greater than zero"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in ["", "G", "-1G", "1.5G", "1X", "0", "99999999999T", "1 G G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
