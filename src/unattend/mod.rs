//! Answer files for Windows Setup and the text Windows reads them in: an
//! unattended install from the Windows ISO to a powered-off base image
//! (`autounattend.xml` on its own small ISO, NT 6 and later), and the encodings
//! every answer file shares (the administrator password as Windows encodes it,
//! XML text). `golden::identity` writes a clone's `unattend.xml` with the same
//! encodings.
//!
//! Windows installs on a disk it has its own driver for (IDE on the pc machine,
//! SATA on q35): no driver is loaded during Setup, so no driver path or drive
//! letter matters; the virtio drivers go in offline at `wingold build`.

#![deny(unsafe_code)]

mod xml;

pub use xml::{autounattend, base64, encode_password, xml_text};

use crate::error::Setting;
use serde::Serialize;

/// A Windows release, by the id osinfo-db gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Os {
    pub id: &'static str,
    /// NT 5 (XP, 2003) reads `WINNT.SIF` from a floppy; NT 6 and later read
    /// `autounattend.xml` from the root of any removable medium.
    pub nt5: bool,
    /// Only ever released for x64 (no x86 media exist).
    pub x64_only: bool,
    /// Setup requires UEFI with Secure Boot and a TPM 2.0 (Windows 11).
    pub needs_uefi: bool,
}

const fn os(id: &'static str, nt5: bool, x64_only: bool, needs_uefi: bool) -> Os {
    Os {
        id,
        nt5,
        x64_only,
        needs_uefi,
    }
}

/// Every release wingold writes answers for, as osinfo-db names them.
pub const OSES: &[Os] = &[
    os("winxp", true, false, false),
    os("win2k3", true, false, false),
    os("win2k3r2", true, false, false),
    os("win2k8", false, false, false),
    os("win2k8r2", false, true, false),
    os("win7", false, false, false),
    os("win8", false, false, false),
    os("win8.1", false, false, false),
    os("win2k12", false, true, false),
    os("win2k12r2", false, true, false),
    os("win10", false, false, false),
    os("win2k16", false, true, false),
    os("win2k19", false, true, false),
    os("win2k22", false, true, false),
    os("win11", false, true, true),
    os("win2k25", false, true, false),
];

impl Os {
    pub fn find(id: &str) -> Option<Os> {
        OSES.iter().copied().find(|o| o.id.eq_ignore_ascii_case(id))
    }
}

/// The processor architecture of the media, as answer files name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86,
    Amd64,
}

impl Arch {
    pub fn parse(text: &str) -> Option<Arch> {
        match text.to_ascii_lowercase().as_str() {
            "x86" | "i386" => Some(Arch::X86),
            "amd64" | "x64" | "x86_64" => Some(Arch::Amd64),
            _ => None,
        }
    }

    /// `processorArchitecture` in an answer file.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86 => "x86",
            Arch::Amd64 => "amd64",
        }
    }
}

/// Which image of `install.wim` Setup installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Edition {
    /// `/IMAGE/NAME`, e.g. `Windows Server 2022 SERVERSTANDARD`.
    Name(String),
    /// `/IMAGE/INDEX`, from 1.
    Index(u32),
}

/// The firmware the install recipe boots with: how Setup partitions disk 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// MBR: System Reserved (active) and Windows.
    Bios,
    /// GPT: EFI system partition, MSR and Windows.
    Uefi,
}

/// A secret read from a file (`golden::identity::read_secret`): kept out of
/// every message, report and `Debug`.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} characters)", self.0.chars().count())
    }
}

/// What an unattended install is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    pub os: Os,
    pub arch: Arch,
    pub firmware: Firmware,
    pub edition: Edition,
    pub hostname: Option<String>,
    pub admin_password: Option<Secret>,
    pub product_key: Option<Secret>,
    /// A Windows time zone id (`UTC`, `W. Europe Standard Time`).
    pub timezone: Option<String>,
    /// A language tag (`en-US`): Setup's, the system's and the user's.
    pub locale: String,
}

/// Why an unattended install is refused. Each is bad input, found before
/// anything is written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("unknown Windows {id:?}; known: {}", known())]
    UnknownOs { id: String },
    #[error(
        "{os}: no x86 media of it were released; leave out {arch} or give amd64",
        arch = Setting::Arch
    )]
    X64Only { os: &'static str },
    #[error(
        "{os}: Windows 11 Setup refuses a machine without UEFI, Secure Boot and a TPM 2.0; \
         give {firmware} uefi",
        firmware = Setting::Firmware
    )]
    NeedsUefi { os: &'static str },
    #[error(
        "{os}: x86 Windows does not boot with UEFI on QEMU's OVMF (64-bit firmware); give \
         {firmware} bios",
        firmware = Setting::Firmware
    )]
    X86Uefi { os: &'static str },
    #[error(
        "{os}: which architecture the media are is not guessed; give {arch} x86 or amd64",
        arch = Setting::Arch
    )]
    NoArch { os: &'static str },
    #[error(
        "{os}: Windows XP and Server 2003 read WINNT.SIF from a floppy, which this wingold \
         does not write yet; install it by hand"
    )]
    Nt5 { os: &'static str },
    #[error("{iso}: no image {edition} in {file}; it holds {}", listed(.images))]
    NoEdition {
        iso: String,
        file: &'static str,
        edition: String,
        images: Vec<(u32, String)>,
    },
    #[error(
        "{iso}: image {index} ({name}) is {found} media, not {asked}; leave out {arch} to take \
         the image's",
        arch = Setting::Arch
    )]
    ArchDiffers {
        iso: String,
        index: u32,
        name: String,
        found: &'static str,
        asked: &'static str,
    },
    #[error(
        "{iso}: image {index} ({name}) is for processor architecture {arch}, not x86 or amd64"
    )]
    UnknownArch {
        iso: String,
        index: u32,
        name: String,
        arch: String,
    },
    #[error("locale {locale:?}: give a language tag such as en-US or de-DE")]
    Locale { locale: String },
    #[error("{what} {value:?}: {why}")]
    Value {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

crate::error::classify! {
    impl Classify for Refusal {
        fn kind(&self) -> crate::error::Kind {
            crate::error::Kind::BadInput
        }
    }
}

fn listed(images: &[(u32, String)]) -> String {
    images
        .iter()
        .map(|(i, n)| format!("{i} {n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `WINDOWS/ARCH` of a WIM image as an answer file's architecture: 0 x86, 9 x64
/// (PROCESSOR_ARCHITECTURE_INTEL, _AMD64); None for any other.
pub fn wim_arch(arch: u32) -> Option<Arch> {
    match arch {
        0 => Some(Arch::X86),
        9 => Some(Arch::Amd64),
        _ => None,
    }
}

/// The image of the installer ISO `iso` (its images `images`, in `file`) that
/// `edition` names, and its architecture checked against the one asked for:
/// taken from the image when none was (never guessed).
pub fn pick_image<'a>(
    iso: &std::path::Path,
    file: &'static str,
    images: &'a [crate::media::wim::Image],
    edition: &Edition,
    asked: Option<Arch>,
) -> Result<(&'a crate::media::wim::Image, Option<Arch>), Refusal> {
    let image = images
        .iter()
        .find(|i| match edition {
            Edition::Name(n) => i.name == *n,
            Edition::Index(n) => i.index == *n,
        })
        .ok_or_else(|| Refusal::NoEdition {
            iso: iso.display().to_string(),
            file,
            edition: match edition {
                Edition::Name(n) => format!("{n:?}"),
                Edition::Index(n) => format!("with index {n}"),
            },
            images: images.iter().map(|i| (i.index, i.name.clone())).collect(),
        })?;
    let found = match image.arch {
        None => return Ok((image, asked)),
        Some(a) => wim_arch(a).ok_or_else(|| Refusal::UnknownArch {
            iso: iso.display().to_string(),
            index: image.index,
            name: image.name.clone(),
            arch: a.to_string(),
        })?,
    };
    match asked {
        Some(a) if a != found => Err(Refusal::ArchDiffers {
            iso: iso.display().to_string(),
            index: image.index,
            name: image.name.clone(),
            found: found.name(),
            asked: a.name(),
        }),
        _ => Ok((image, Some(found))),
    }
}

fn known() -> String {
    OSES.iter().map(|o| o.id).collect::<Vec<_>>().join(", ")
}

/// The OS and architecture a request names, checked against each other and the
/// firmware: `arch` None is taken only for an x64-only release.
pub fn check(os: &str, arch: Option<Arch>, firmware: Firmware) -> Result<(Os, Arch), Refusal> {
    let os = Os::find(os).ok_or_else(|| Refusal::UnknownOs { id: os.to_owned() })?;
    if os.nt5 {
        return Err(Refusal::Nt5 { os: os.id });
    }
    let arch = match (arch, os.x64_only) {
        (Some(Arch::X86), true) => return Err(Refusal::X64Only { os: os.id }),
        (Some(a), _) => a,
        (None, true) => Arch::Amd64,
        (None, false) => return Err(Refusal::NoArch { os: os.id }),
    };
    if os.needs_uefi && firmware != Firmware::Uefi {
        return Err(Refusal::NeedsUefi { os: os.id });
    }
    if arch == Arch::X86 && firmware == Firmware::Uefi {
        return Err(Refusal::X86Uefi { os: os.id });
    }
    Ok((os, arch))
}

/// A language tag as answer files take it: `ll-CC` (letters).
pub fn check_locale(locale: &str) -> Result<(), Refusal> {
    let ok = locale.split_once('-').is_some_and(|(l, c)| {
        (2..=3).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphabetic())
            && (2..=4).contains(&c.len())
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if ok {
        Ok(())
    } else {
        Err(Refusal::Locale {
            locale: locale.to_owned(),
        })
    }
}

/// The answer medium of an unattended install: an ISO labelled `UNATTEND`
/// holding `autounattend.xml` at its root (Setup looks there on every removable
/// medium), the same bytes for the same request.
pub fn medium(req: &Request) -> Vec<u8> {
    let xml = autounattend(req);
    crate::media::iso9660::image(
        "UNATTEND",
        &[("autounattend.xml".to_owned(), xml.into_bytes())],
    )
}
