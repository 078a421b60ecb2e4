//! One question every layer's errors answer — whose move is it? — and so the exit
//! code. `cli::exit_code` asks it of the first cause in an error chain that knows.

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
pub trait Classify {
    fn kind(&self) -> Kind;
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

impl Classify for Unreadable {
    fn kind(&self) -> Kind {
        open_kind(&self.source)
    }
}

/// Turns an error reading `path` (an I/O or a walk error) into [`Unreadable`].
pub fn unreadable<E: Into<io::Error>>(path: &std::path::Path) -> impl FnOnce(E) -> Unreadable + '_ {
    move |e| Unreadable {
        path: path.to_owned(),
        source: e.into(),
    }
}
