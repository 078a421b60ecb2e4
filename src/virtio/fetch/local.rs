//! A `file://` source: the ISO copied into the cache while it is hashed, then
//! accepted like a download.

use super::cache::{Cache, Index};
use super::transfer::discard;
use super::{accept, io, pin_check, Downloaded, Error, Fetched, LockFile, Options};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// A `file://` URL: copied into the cache while hashed, then checked like a download.
pub(super) fn fetch_file(
    opts: &Options,
    url: &str,
    cache: &Cache,
    index: &mut Index,
    lock: &mut LockFile,
) -> Result<Fetched, Error> {
    let src = PathBuf::from(url.trim_start_matches("file://"));
    let meta = crate::input::check(&src, true)?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| format!("mtime {}.{:09}", d.as_secs(), d.subsec_nanos()));
    // The same file unchanged (size and mtime): nothing to copy.
    if let Some(e) = index.urls.get(url).filter(|e| {
        e.size == meta.len() && e.last_modified == stamp && cache.object(&e.sha256).exists()
    }) {
        let by = pin_check(opts, lock, url, &e.version, &e.sha256)?;
        let path = cache.name(&e.sha256, &e.version)?;
        return Ok(Fetched::of(path, url, e, true, by));
    }
    let (partial, meta_path) = cache.partial(url);
    let mut hasher = Sha256::new();
    let copied = (|| -> std::io::Result<u64> {
        let mut out = File::create(&partial)?;
        let mut both = Hashing {
            out: &mut out,
            hasher: &mut hasher,
        };
        let n = std::io::copy(&mut File::open(&src)?, &mut both)?;
        out.sync_all()?;
        Ok(n)
    })()
    .map_err(io(&src, "copying"));
    let size = match copied {
        Ok(s) => s,
        Err(e) => {
            discard(&partial, &meta_path);
            return Err(e);
        }
    };
    let downloaded = Downloaded {
        partial: &partial,
        meta: &meta_path,
        url,
        final_url: url,
        sha256: format!("{:x}", hasher.finalize()),
        size,
        etag: None,
        last_modified: stamp,
    };
    accept(opts, cache, index, lock, downloaded)
}

/// Writes to a file and into a hash at once.
struct Hashing<'a> {
    out: &'a mut File,
    hasher: &'a mut Sha256,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
