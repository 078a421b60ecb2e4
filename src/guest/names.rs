//! File names Windows can hold: what copy-in and driver staging refuse before
//! anything is written.

/// Characters no Windows file name may hold.
const FORBIDDEN: &[char] = &['<', '>', ':', '"', '|', '?', '*', '\\'];

/// Device names Windows reserves, with or without an extension.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Why Windows cannot hold a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("an empty name")]
    Empty,
    #[error("{0:?} is not allowed in Windows names")]
    Forbidden(char),
    #[error("control character {0:#04x}")]
    Control(u32),
    #[error("Windows drops a trailing dot or space")]
    TrailingDotOrSpace,
    #[error("{0} is a device name Windows reserves")]
    Reserved(String),
    #[error("longer than 255 characters")]
    TooLong,
}

/// Why Windows cannot hold `name` (one path component), or None when it can.
pub fn problem(name: &str) -> Option<Problem> {
    if name.is_empty() {
        return Some(Problem::Empty);
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN.contains(c)) {
        return Some(Problem::Forbidden(c));
    }
    if let Some(c) = name.chars().find(|c| (*c as u32) < 0x20) {
        return Some(Problem::Control(c as u32));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some(Problem::TrailingDotOrSpace);
    }
    let stem = name.split('.').next().unwrap_or("").trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        return Some(Problem::Reserved(stem.to_owned()));
    }
    if name.encode_utf16().count() > 255 {
        return Some(Problem::TooLong);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn refuses_what_windows_cannot_hold() {
        for bad in [
            "a<b", "a:b", "q?", "star*", "pipe|", "quote\"", "dot.", "space ", "CON", "nul.txt",
            "Com1.log", "tab\t",
        ] {
            assert!(problem(bad).is_some(), "{bad}");
        }
        for good in [
            "readme.txt",
            "Ünïcode ✓.cmd",
            "CONSOLE",
            "com10",
            ".hidden",
            "a b",
        ] {
            assert_eq!(problem(good), None, "{good}");
        }
    }
}
