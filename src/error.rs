//! One question every layer's errors answer — whose move is it? — and so the exit
//! code. [`kind_of`] asks it of the first cause in an error chain that knows.
//!
//! A type answers by implementing [`Classify`] inside [`classify!`], which also
//! enters it in [`CLASSIFIERS`], a table the linker gathers from every module:
//! there is no list to keep by hand, and a hand-written `impl Classify` does not
//! compile (the trait is sealed by the macro).

#![deny(unsafe_code)]

use std::io;

/// What an error means for whoever ran wingold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command line is wrong: options that do not go together, a bad value.
    Usage,
    /// What the user gave is wrong, damaged or unsafe to use; fix it and run again.
    BadInput,
    /// Good input, but the operation failed: I/O, the host, the network, a bug.
    Failure,
}

impl Kind {
    /// 2 for usage and bad input, 1 for a failure.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Usage | Kind::BadInput => 2,
            Kind::Failure => 1,
        }
    }
}

/// An error that knows its [`Kind`]; wrappers answer with their source's.
/// Implemented only through [`classify!`].
pub trait Classify: registered::Sealed {
    fn kind(&self) -> Kind;
}

#[doc(hidden)]
pub mod registered {
    /// Implemented by [`classify!`](crate::error::classify) beside `Classify`, so
    /// that a type cannot classify without being entered in the table.
    pub trait Sealed {}
}

/// Asks `cause` for its kind if it is an `E`.
pub type Ask = fn(&(dyn std::error::Error + 'static)) -> Option<Kind>;

/// One [`Ask`] per type that classifies, entered by [`classify!`].
#[linkme::distributed_slice]
pub static CLASSIFIERS: [Ask];

/// The [`Ask`] for `E`.
pub fn ask<E: Classify + std::error::Error + 'static>(
    cause: &(dyn std::error::Error + 'static),
) -> Option<Kind> {
    cause.downcast_ref::<E>().map(Classify::kind)
}

/// Implements [`Classify`] for a type and enters it in [`CLASSIFIERS`]:
///
/// ```ignore
/// classify! {
///     impl Classify for Refusal {
///         fn kind(&self) -> Kind {
///             Kind::BadInput
///         }
///     }
/// }
/// ```
macro_rules! classify {
    (impl Classify for $ty:ty { $($body:tt)* }) => {
        impl $crate::error::Classify for $ty { $($body)* }
        impl $crate::error::registered::Sealed for $ty {}
        const _: () = {
            // linkme's entry is a `#[link_section]` static, which the unsafe_code
            // lint counts as unsafe: the one allowance outside ntfs, hive and
            // interrupt (tests/layers.rs checks there is no other).
            #[allow(unsafe_code)]
            #[::linkme::distributed_slice($crate::error::CLASSIFIERS)]
            static ASK: $crate::error::Ask = $crate::error::ask::<$ty>;
        };
    };
}
pub(crate) use classify;

/// The kind of the first cause in `err`'s chain that has one (an error of one of
/// the layers; wrappers answer for what they wrap); a failure when none does.
pub fn kind_of(err: &anyhow::Error) -> Kind {
    err.chain()
        .find_map(|cause| CLASSIFIERS.iter().find_map(|ask| ask(cause)))
        .unwrap_or(Kind::Failure)
}

/// Opening a file the user named: a path that leads nowhere is bad input; an open
/// that fails on an existing file (EIO, EACCES, EMFILE, …) is a failure.
pub fn open_kind(e: &io::Error) -> Kind {
    match e.kind() {
        io::ErrorKind::NotFound
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::InvalidInput => Kind::BadInput,
        _ if e.raw_os_error() == Some(libc::ELOOP) => Kind::BadInput,
        _ => Kind::Failure,
    }
}

/// A file or folder the user named could not be read. Whose move it is follows
/// [`open_kind`]: a path that leads nowhere is bad input, a read the host fails
/// (EIO, EACCES, …) a failure.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot read", path.display())]
pub struct Unreadable {
    pub path: std::path::PathBuf,
    #[source]
    pub source: io::Error,
}

classify! {
    impl Classify for Unreadable {
        fn kind(&self) -> Kind {
            open_kind(&self.source)
        }
    }
}

/// Turns an error reading `path` (an I/O or a walk error) into [`Unreadable`].
pub fn unreadable<E: Into<io::Error>>(path: &std::path::Path) -> impl FnOnce(E) -> Unreadable + '_ {
    move |e| Unreadable {
        path: path.to_owned(),
        source: e.into(),
    }
}

macro_rules! settings {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A setting the user gives, as a layer's message names it (what to give,
        /// what to leave out) without knowing how the front end spells it: the
        /// command line installs `--NAME` ([`set_spelling`]); used on its own the
        /// library shows the bare name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Setting {
            $($(#[$doc])* $variant,)*
        }

        impl Setting {
            /// Every setting, for the front end's test that it spells them all.
            pub const ALL: &'static [Setting] = &[$(Setting::$variant,)*];

            /// The setting's name, the words a front end spells as it likes.
            pub fn name(self) -> &'static str {
                match self {
                    $(Setting::$variant => $name,)*
                }
            }
        }
    };
}

settings! {
    AdminPassword = "admin-password-file",
    Arch = "arch",
    CaCert = "ca-cert",
    Chunked = "chunked",
    CopyIn = "copy-in",
    Created = "created",
    DomainJoin = "domain-join-blob",
    Drivers = "drivers",
    Firmware = "firmware",
    Firstboot = "firstboot",
    Force = "force",
    Format = "format",
    GuestAgent = "guest-agent",
    Image = "image",
    Insecure = "insecure",
    ListProfiles = "list-profiles",
    NicWatchdog = "nic-watchdog",
    OciLayout = "oci-layout",
    Offline = "offline",
    Output = "output",
    PasswordStdin = "password-stdin",
    Profile = "profile",
    Reg = "reg",
    Sha256 = "sha256",
    Tag = "tag",
    Timezone = "timezone",
    Username = "username",
    WatchdogFailures = "watchdog-failures",
    WatchdogTarget = "watchdog-target",
}

static SPELLING: std::sync::OnceLock<fn(Setting) -> String> = std::sync::OnceLock::new();

/// How settings appear in messages from now on (the command line: `--NAME`).
/// The first call wins.
pub fn set_spelling(spell: fn(Setting) -> String) {
    let _ = SPELLING.set(spell);
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match SPELLING.get() {
            Some(spell) => f.write_str(&spell(*self)),
            None => f.write_str(self.name()),
        }
    }
}
