//! A plain (uncompressed) golden image in one pass: the layout from the
//! allocation map alone, then three stages at once — read, write, hash.

use super::{io_error, write_all_vectored_at, Stats, Tail, CLUSTER, L2_ENTRIES, OFLAG_COPIED};
use crate::image::{BlockDev, Error as ImageError};
use std::fs::File;
use std::io::IoSlice;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Clusters read, written and hashed together: 4 MiB.
const BATCH: u64 = 64;
/// What direct I/O asks of a buffer's address, an offset and a length.
const ALIGN: usize = 4096;

/// A plain image in one pass, hashed as it is written. Its layout follows from the
/// allocation map alone (one slot per cluster allocated anywhere in the chain, in
/// guest order), so the header is known first. Three stages run at once: this
/// thread reads batches of clusters from the chain, a writer writes each batch's
/// data slots, and a hasher takes the file's SHA-256 in file order; buffers go
/// round from reader to writer to hasher and back. A slot whose cluster reads as
/// zeros is left as a hole (unreferenced, refcount 0).
///
/// The data slots are written with direct I/O where the file system allows it:
/// the device reads them from our buffers, and the processor is left for the
/// reading and the hashing (a copy into the page cache costs as much as the
/// hashing on the two-core machines this runs on). Header and tables go through
/// the page cache; `sync_all` makes both durable.
pub(super) fn write_plain(
    src: &dyn BlockDev,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<Stats, ImageError> {
    use sha2::{Digest, Sha256};
    use std::sync::mpsc;
    let size = src.len();
    let io = |op: &'static str| io_error(out, op);
    let nclusters = size.div_ceil(CLUSTER);
    let mut allocated = Vec::with_capacity(nclusters as usize);
    for g in 0..nclusters {
        let off = g * CLUSTER;
        allocated.push(src.allocated(off, CLUSTER.min(size - off))?);
    }
    let slots = allocated.iter().filter(|&&a| a).count() as u64;
    let tables: Vec<usize> = allocated
        .chunks(L2_ENTRIES as usize)
        .enumerate()
        .filter(|(_, t)| t.iter().any(|&a| a))
        .map(|(i, _)| i)
        .collect();
    let tail = Tail::layout(CLUSTER + slots * CLUSTER, tables, nclusters);
    let header = tail.header(size);

    // The hasher takes buffers in file order and hands them back for reuse.
    let (to_hasher, hasher_in) = mpsc::sync_channel::<(Vec<u8>, Range<usize>)>(2);
    let (back, spare) = mpsc::channel::<Vec<u8>>();
    let hasher = std::thread::spawn(move || {
        let mut h = Sha256::new();
        for (buf, part) in hasher_in {
            h.update(&buf[part]);
            let _ = back.send(buf);
        }
        format!("{:x}", h.finalize())
    });
    let result = (|| -> Result<Stats, ImageError> {
        let hashing_stopped = || std::io::Error::other("the hashing thread stopped");
        let w = File::create(out).map_err(io("creating"))?;
        w.write_all_at(&header, 0).map_err(io("writing"))?;
        let direct = open_direct(out).map_err(io("opening"))?;
        to_hasher
            .send((header, 0..CLUSTER as usize))
            .map_err(|_| io("hashing")(hashing_stopped()))?;
        let mut refs: Vec<u16> = vec![1];
        refs.resize((tail.start / CLUSTER) as usize, 0);
        let mut map = Map {
            l2: vec![0u64; nclusters as usize],
            refs,
            stats: Stats::new(size),
        };
        std::thread::scope(|scope| -> Result<(), ImageError> {
            let (to_writer, writer_in) = mpsc::sync_channel::<Batch>(1);
            let data_file = direct.as_ref().unwrap_or(&w);
            let to_hasher = to_hasher.clone();
            let writer = scope.spawn(move || -> std::io::Result<()> {
                for b in writer_in {
                    b.write(data_file)?;
                    let part = b.start..b.start + b.filled * CLUSTER as usize;
                    to_hasher
                        .send((b.buf, part))
                        .map_err(|_| hashing_stopped())?;
                }
                Ok(())
            });
            // A writer that stopped has its error, taken below.
            let read = read_batches(src, &allocated, &mut map, &spare, progress, |batch| {
                to_writer.send(batch).is_ok()
            });
            drop(to_writer);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the writing thread panicked")));
            read?;
            written.map_err(io("writing"))
        })?;
        let Map {
            l2,
            mut refs,
            mut stats,
        } = map;
        let meta = tail.bytes(&l2, &mut refs);
        w.write_all_at(&meta, tail.start).map_err(io("writing"))?;
        let len = meta.len();
        to_hasher
            .send((meta, 0..len))
            .map_err(|_| io("hashing")(hashing_stopped()))?;
        w.set_len(tail.end).map_err(io("sizing"))?;
        w.sync_all().map_err(io("fsync"))?;
        if let Some(direct) = &direct {
            direct.sync_all().map_err(io("fsync"))?;
        }
        stats.file_size = tail.end;
        Ok(stats)
    })();
    drop(to_hasher);
    let sha256 = hasher
        .join()
        .map_err(|_| io("hashing")(std::io::Error::other("the hashing thread panicked")))?;
    result.map(|mut stats| {
        stats.sha256 = Some(sha256);
        stats
    })
}

/// Up to `BATCH` allocated clusters read into consecutive slots of one buffer,
/// from the file offset `first_slot` on; `holes` are the slots that read as
/// zeros (not written: they read back as zeros, and the buffer holds zeros).
/// The clusters start at `start` in `buf`, the first address there aligned for
/// direct I/O.
struct Batch {
    buf: Vec<u8>,
    start: usize,
    first_slot: u64,
    filled: usize,
    holes: Vec<usize>,
}

impl Batch {
    /// The runs of data slots between the holes, one vectored write each.
    fn write(&self, w: &File) -> std::io::Result<()> {
        let mut start = 0usize;
        for end in self
            .holes
            .iter()
            .copied()
            .chain(std::iter::once(self.filled))
        {
            if end > start {
                let mut parts: Vec<IoSlice> = self.buf
                    [self.start + start * CLUSTER as usize..self.start + end * CLUSTER as usize]
                    .chunks(CLUSTER as usize)
                    .map(IoSlice::new)
                    .collect();
                write_all_vectored_at(w, self.first_slot + start as u64 * CLUSTER, &mut parts)?;
            }
            start = end + 1;
        }
        Ok(())
    }
}

/// What the slots of a plain image hold, filled in as clusters are read: the
/// L2 entries, the refcounts, the counts.
struct Map {
    l2: Vec<u64>,
    refs: Vec<u16>,
    stats: Stats,
}

/// Reads the allocated clusters of `src` in guest order, batch by batch, into
/// buffers from `spare` (or new ones), filling in `map` for each slot, and hands
/// each batch to `write` (false: stop, the writer has failed).
fn read_batches(
    src: &dyn BlockDev,
    allocated: &[bool],
    map: &mut Map,
    spare: &std::sync::mpsc::Receiver<Vec<u8>>,
    progress: &dyn Fn(u64),
    mut write: impl FnMut(Batch) -> bool,
) -> Result<(), ImageError> {
    let Map { l2, refs, stats } = map;
    let size = src.len();
    let nclusters = allocated.len() as u64;
    let zero = vec![0u8; CLUSTER as usize];
    let mut slot = CLUSTER;
    let mut g = 0u64;
    while g < nclusters {
        let whole = (BATCH * CLUSTER) as usize;
        let mut buf = std::iter::from_fn(|| spare.try_recv().ok())
            .find(|b| b.len() == whole + ALIGN)
            .unwrap_or_else(|| vec![0u8; whole + ALIGN]);
        let start = buf.as_ptr().align_offset(ALIGN);
        let data = &mut buf[start..start + whole];
        let first_slot = slot;
        let mut filled = 0usize;
        let mut holes = Vec::new();
        while g < nclusters && filled < BATCH as usize {
            if !allocated[g as usize] {
                stats.skipped_clusters += 1;
                g += 1;
                continue;
            }
            // A run of allocated clusters is one read into consecutive slots.
            let mut run = 1u64;
            while g + run < nclusters
                && allocated[(g + run) as usize]
                && filled + (run as usize) < BATCH as usize
            {
                run += 1;
            }
            let off = g * CLUSTER;
            let len = (run * CLUSTER).min(size - off) as usize;
            let span =
                &mut data[filled * CLUSTER as usize..(filled + run as usize) * CLUSTER as usize];
            src.read_at(off, &mut span[..len])?;
            span[len..].fill(0);
            for _ in 0..run {
                let chunk = &data[filled * CLUSTER as usize..(filled + 1) * CLUSTER as usize];
                if chunk[..] == zero[..] {
                    holes.push(filled);
                    stats.skipped_clusters += 1;
                } else {
                    l2[g as usize] = OFLAG_COPIED | slot;
                    refs[(slot / CLUSTER) as usize] = 1;
                    stats.data_clusters += 1;
                }
                slot += CLUSTER;
                filled += 1;
                g += 1;
            }
        }
        let batch = Batch {
            buf,
            start,
            first_slot,
            filled,
            holes,
        };
        if !write(batch) {
            return Ok(());
        }
        progress((g * CLUSTER).min(size));
    }
    Ok(())
}

/// A second handle on `out` for direct I/O, or none where the file system does
/// not take it (tmpfs, some FUSE file systems): then the data go through the page
/// cache like the rest. Test hook (feature `test-hooks` only):
/// `WINGOLD_TEST_NO_DIRECT_IO` takes that second path on any file system.
fn open_direct(out: &Path) -> std::io::Result<Option<File>> {
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("WINGOLD_TEST_NO_DIRECT_IO").is_some() {
        return Ok(None);
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(out)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}
