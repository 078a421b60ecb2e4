//! The two facts wingold checks in a driver binary: the machine it was built for
//! (PE COFF header) and whether it carries an embedded signature (a non-empty
//! certificate table, data directory 4), which a boot-start driver on 64-bit
//! Windows Vista and later must have (Microsoft's "Kernel-mode code signing
//! requirements").

pub const MACHINE_I386: u16 = 0x014c;
pub const MACHINE_AMD64: u16 = 0x8664;
pub const MACHINE_ARM64: u16 = 0xaa64;

/// What the headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pe {
    pub machine: u16,
    pub signed: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads a PE image's headers; None when `b` is no PE image.
pub fn parse(b: &[u8]) -> Option<Pe> {
    if b.get(0..2)? != b"MZ" {
        return None;
    }
    let pe = u32_at(b, 0x3c)? as usize;
    if b.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let machine = u16_at(b, pe + 4)?;
    let opt = pe + 24;
    let (count_at, dirs_at) = match u16_at(b, opt)? {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        _ => {
            return Some(Pe {
                machine,
                signed: false,
            })
        }
    };
    let count = u32_at(b, count_at).unwrap_or(0);
    let signed = count > 4
        && u32_at(b, dirs_at + 4 * 8).is_some_and(|off| off != 0)
        && u32_at(b, dirs_at + 4 * 8 + 4).is_some_and(|size| size != 0);
    Some(Pe { machine, signed })
}

/// The PE machine for a Windows architecture (`x86`, `x64`, `arm64`).
pub fn machine_for(arch: &str) -> u16 {
    match arch {
        "x86" => MACHINE_I386,
        "arm64" => MACHINE_ARM64,
        _ => MACHINE_AMD64,
    }
}

/// A machine number as a reader knows it.
pub fn machine_name(machine: u16) -> String {
    match machine {
        MACHINE_I386 => "x86".into(),
        MACHINE_AMD64 => "x64".into(),
        MACHINE_ARM64 => "arm64".into(),
        m => format!("machine {m:#06x}"),
    }
}
