//! Files the user names as inputs. Their type is checked before they are opened
//! (opening a FIFO blocks until a writer comes; `/dev/zero` never ends), and text
//! inputs are read up to a cap that no real one comes near.

#![deny(unsafe_code)]

use crate::error::{open_kind, Kind};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most a config, an auth file or a certificate may be.
pub const SMALL: Cap = Cap {
    bytes: 1 << 20,
    what: "a configuration file",
};
/// The most a secret (a password file) may be.
pub const SECRET: Cap = Cap {
    bytes: 64 << 10,
    what: "a password file",
};
/// The most a first-boot script may be.
pub const SCRIPT: Cap = Cap {
    bytes: 16 << 20,
    what: "a script",
};
/// The most a program wingold installs (the first-boot service) may be.
pub const PROGRAM: Cap = Cap {
    bytes: 64 << 20,
    what: "a service program",
};
/// The most a `.reg` file may be (an export of a whole SOFTWARE hive is some
/// hundreds of MiB).
pub const REG: Cap = Cap {
    bytes: 1 << 30,
    what: "a .reg file",
};

/// How much of a kind of input wingold reads.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub bytes: u64,
    pub what: &'static str,
}

/// A file input that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {what}, not a regular file; give a file", .path.display())]
    NotAFile { path: PathBuf, what: &'static str },

    #[error(
        "{}: larger than {} MiB, more than {what} can be; give the right file",
        .path.display(),
        .bytes >> 20
    )]
    TooLarge {
        path: PathBuf,
        bytes: u64,
        what: &'static str,
    },

    #[error("{}: cannot read", .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

crate::error::classify! {
    impl Classify for Error {
        fn kind(&self) -> Kind {
            match self {
                Error::NotAFile { .. } | Error::TooLarge { .. } => Kind::BadInput,
                Error::Unreadable { source, .. } => open_kind(source),
            }
        }
    }
}

/// What a file type is called, or None for a regular file. `block` says whether
/// a block device is as good as a file here (a disk, an ISO on a drive).
fn not_a_file(t: std::fs::FileType, block: bool) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_file() || (block && t.is_block_device()) {
        None
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("not a file")
    }
}

/// Refuses, without opening it, an input that is not a regular file (or, when
/// `block`, a block device). Symbolic links are followed, as `open` would.
pub fn check(path: &Path, block: bool) -> Result<std::fs::Metadata, Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    match not_a_file(meta.file_type(), block) {
        Some(what) => Err(Error::NotAFile {
            path: path.to_owned(),
            what,
        }),
        None => Ok(meta),
    }
}

/// Opens an input after [`check`].
pub fn open(path: &Path, block: bool) -> Result<std::fs::File, Error> {
    check(path, block)?;
    std::fs::File::open(path).map_err(|source| Error::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// The whole of a regular file, refused past `cap` (read up to the cap and one
/// byte more, whatever the file claims to be).
pub fn read(path: &Path, cap: Cap) -> Result<Vec<u8>, Error> {
    let file = open(path, false)?;
    let mut data = Vec::new();
    file.take(cap.bytes + 1)
        .read_to_end(&mut data)
        .map_err(|source| Error::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    if data.len() as u64 > cap.bytes {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            bytes: cap.bytes,
            what: cap.what,
        });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classify;

    #[test]
    fn device_files_fifos_and_folders_are_refused_unopened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        for (path, said) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (dir.path(), "a folder"),
        ] {
            let e = read(path, SMALL).unwrap_err();
            assert!(e.to_string().contains(said), "{e}");
            assert_eq!(e.kind(), Kind::BadInput);
        }
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; (SMALL.bytes + 1) as usize]).unwrap();
        let e = read(&big, SMALL).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        std::fs::write(&big, b"ok").unwrap();
        assert_eq!(read(&big, SMALL).unwrap(), b"ok");
        let missing = read(&dir.path().join("missing"), SMALL).unwrap_err();
        assert_eq!(missing.kind(), Kind::BadInput);
    }
}
