//! Finalize: flatten an image (an overlay and its backing chain) into one standalone
//! qcow2 file, with a streaming writer of our own.
//!
//! Clusters that read as zero, or are unallocated down the whole chain, are left
//! out. With compression each data cluster is deflated (zlib, 4 KiB window, as QEMU
//! reads and writes compressed qcow2 clusters), on every core, and stored raw when it
//! does not shrink.
//!
//! Deterministic: the same image bytes give the same file. qcow2 holds no
//! timestamps; the layout is fixed: header in cluster 0, then data clusters in
//! guest order (compressed ones packed byte to byte), then the L2 tables, the L1
//! table, the refcount blocks and the refcount table, all at positions that follow
//! from the data alone. The header is written last.

mod plain;
use plain::write_plain;

use crate::image::{BlockDev, Error as ImageError};
use std::fs::File;
use std::io::{IoSlice, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcount entries per refcount block, with 16-bit refcounts.
const RB_ENTRIES: u64 = CLUSTER / 2;
/// L2 entry flags (docs/interop/qcow2.txt).
const OFLAG_COPIED: u64 = 1 << 63;
const OFLAG_COMPRESSED: u64 = 1 << 62;
/// Clusters read and compressed together.
const BATCH: u64 = 256;
/// QEMU inflates compressed clusters with a 4 KiB window (qcow2-threads.c).
const ZLIB_WINDOW_BITS: u8 = 12;

/// What finalize wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub virtual_size: u64,
    pub file_size: u64,
    pub data_clusters: u64,
    pub compressed_clusters: u64,
    pub skipped_clusters: u64,
    /// SHA-256 of the file, when it was hashed while being written (plain images).
    #[serde(skip)]
    pub sha256: Option<String>,
}

impl Stats {
    fn new(virtual_size: u64) -> Stats {
        Stats {
            virtual_size,
            file_size: 0,
            data_clusters: 0,
            compressed_clusters: 0,
            skipped_clusters: 0,
            sha256: None,
        }
    }
}

/// Whether even ideal byte-wise Huffman coding (order-0 entropy, no matches)
/// could not save a sector: random or already-compressed data. deflate takes ~10×
/// longer over such a cluster than this count does, only to give it back as it was.
fn incompressible(data: &[u8]) -> bool {
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 * (n / c as f64).log2())
        .sum();
    bits / 8.0 > n - 512.0
}

/// Level 9: our zlib (zlib-rs, zlib-ng's levels) compresses at 6 and 8 no better
/// than at 4, and its 9 is what makes the output no bigger than QEMU's (madler
/// zlib at level 6) — for a modest cost (make bench).
fn deflate(data: &[u8]) -> Option<Vec<u8>> {
    if incompressible(data) {
        return None;
    }
    let mut c = flate2::Compress::new_with_window_bits(
        flate2::Compression::new(9),
        false,
        ZLIB_WINDOW_BITS,
    );
    let mut out = Vec::with_capacity(data.len());
    match c.compress_vec(data, &mut out, flate2::FlushCompress::Finish) {
        Ok(flate2::Status::StreamEnd) if out.len() < data.len() => Some(out),
        _ => None,
    }
}

/// Writes `src` as a standalone qcow2 to `out` (created, or truncated). The caller
/// names `out` temporarily and renames it when this returns. `progress` is told
/// how many guest bytes are done (of `src.len()`).
pub fn write_qcow2(
    src: &dyn BlockDev,
    out: &Path,
    compress: bool,
    progress: &dyn Fn(u64),
) -> Result<Stats, ImageError> {
    if compress {
        write_compressed(src, out, progress)
    } else {
        write_plain(src, out, progress)
    }
}

/// Turns an I/O error on `out` during `op` into the image layer's error.
fn io_error<'a>(out: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> ImageError + 'a {
    move |e| ImageError::Io {
        path: out.to_owned(),
        op,
        source: e,
    }
}

/// A compressed image: data clusters in guest order, deflated on every core and
/// packed byte to byte, then the metadata, the header last.
fn write_compressed(
    src: &dyn BlockDev,
    out: &Path,
    progress: &dyn Fn(u64),
) -> Result<Stats, ImageError> {
    let size = src.len();
    let io = |op: &'static str| io_error(out, op);
    let mut w = File::create(out).map_err(io("creating"))?;
    let nclusters = size.div_ceil(CLUSTER);
    let mut l2 = vec![0u64; nclusters as usize];
    // Refcounts of host clusters; cluster 0 is the header.
    let mut refs: Vec<u16> = vec![1];
    // The next free host cluster: raw clusters and room for compressed data are
    // taken from here, in guest order.
    let mut pos = CLUSTER;
    let bump = |refs: &mut Vec<u16>, first: u64, last: u64| {
        if refs.len() <= last as usize {
            refs.resize(last as usize + 1, 0);
        }
        for c in first..=last {
            refs[c as usize] += 1;
        }
    };
    let mut stats = Stats::new(size);
    let zero = vec![0u8; CLUSTER as usize];
    let mut buf = vec![0u8; (BATCH * CLUSTER) as usize];
    let mut packer = Packer::default();
    let mut first = 0u64;
    while first < nclusters {
        let count = BATCH.min(nclusters - first);
        // Which clusters of the batch hold data.
        let mut present = Vec::with_capacity(count as usize);
        for i in 0..count {
            let off = (first + i) * CLUSTER;
            let len = CLUSTER.min(size - off);
            if !src.allocated(off, len)? {
                present.push(false);
                continue;
            }
            let chunk = &mut buf[(i * CLUSTER) as usize..(i * CLUSTER) as usize + len as usize];
            src.read_at(off, chunk)?;
            // The tail of a disk that is not a whole cluster reads as zeros.
            buf[(i * CLUSTER + len) as usize..((i + 1) * CLUSTER) as usize].fill(0);
            present.push(buf[(i * CLUSTER) as usize..((i + 1) * CLUSTER) as usize] != zero[..]);
        }
        let clusters: Vec<&[u8]> = buf[..(count * CLUSTER) as usize]
            .chunks(CLUSTER as usize)
            .collect();
        let packed = compress_all(&clusters, &present);
        // Raw clusters go out in runs of consecutive host clusters, each run one
        // vectored write straight from the read buffer: no copies.
        let mut run_start = pos;
        let mut parts: Vec<IoSlice> = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let g = first as usize + i;
            if !present[i] {
                stats.skipped_clusters += 1;
                continue;
            }
            match &packed[i] {
                Some(z) => {
                    let at = packer.place(z, &mut pos, &w).map_err(io("writing"))?;
                    let len = z.len() as u64;
                    // Additional 512-byte sectors beyond the one holding the offset.
                    let sectors = ((at + len - 1) >> 9) - (at >> 9);
                    let shift = 62 - (CLUSTER_BITS - 8);
                    l2[g] = OFLAG_COMPRESSED | (sectors << shift) | at;
                    bump(&mut refs, at / CLUSTER, (at + len - 1) / CLUSTER);
                    stats.compressed_clusters += 1;
                }
                None => {
                    if run_start + parts.len() as u64 * CLUSTER != pos {
                        write_all_vectored_at(&w, run_start, &mut parts).map_err(io("writing"))?;
                        parts.clear();
                        run_start = pos;
                    }
                    l2[g] = OFLAG_COPIED | pos;
                    parts.push(IoSlice::new(clusters[i]));
                    bump(&mut refs, pos / CLUSTER, pos / CLUSTER);
                    pos += CLUSTER;
                }
            }
            stats.data_clusters += 1;
        }
        write_all_vectored_at(&w, run_start, &mut parts).map_err(io("writing"))?;
        first += count;
        progress((first * CLUSTER).min(size));
    }
    packer.finish(&w).map_err(io("writing"))?;
    w.seek(SeekFrom::Start(pos)).map_err(io("seeking"))?;
    // Metadata after the data, cluster-aligned (pos always is).
    let tables: Vec<usize> = l2
        .chunks(L2_ENTRIES as usize)
        .enumerate()
        .filter(|(_, t)| t.iter().any(|&e| e != 0))
        .map(|(i, _)| i)
        .collect();
    let tail = Tail::layout(pos, tables, nclusters);
    w.write_all_at(&tail.bytes(&l2, &mut refs), tail.start)
        .map_err(io("writing"))?;
    w.write_all_at(&tail.header(size), 0)
        .map_err(io("writing"))?;
    w.set_len(tail.end).map_err(io("sizing"))?;
    w.sync_all().map_err(io("fsync"))?;
    stats.file_size = tail.end;
    Ok(stats)
}

/// Where the metadata after the data goes: the L2 tables (for the L1 entries
/// listed), the L1 table, the refcount blocks and the refcount table, in that
/// order from `start`. Every position follows from `start`, the tables' count and
/// the disk size alone, so the header can be known before the data is.
struct Tail {
    start: u64,
    tables: Vec<usize>,
    l1_size: u64,
    l1_offset: u64,
    rb_offset: u64,
    blocks: u64,
    rt_offset: u64,
    table: u64,
    end: u64,
}

impl Tail {
    fn layout(start: u64, tables: Vec<usize>, nclusters: u64) -> Tail {
        let l1_size = nclusters.div_ceil(L2_ENTRIES).max(1);
        let l1_offset = start + tables.len() as u64 * CLUSTER;
        let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
        let rb_offset = l1_offset + l1_clusters * CLUSTER;
        // Refcount blocks and table must count themselves: find sizes that fit.
        let used = rb_offset / CLUSTER;
        let (mut blocks, mut table) = (1u64, 1u64);
        loop {
            let total = used + blocks + table;
            let (nb, nt) = (
                total.div_ceil(RB_ENTRIES),
                (total.div_ceil(RB_ENTRIES) * 8).div_ceil(CLUSTER),
            );
            if nb <= blocks && nt <= table {
                break;
            }
            blocks = nb.max(blocks);
            table = nt.max(table);
        }
        let rt_offset = rb_offset + blocks * CLUSTER;
        Tail {
            start,
            tables,
            l1_size,
            l1_offset,
            rb_offset,
            blocks,
            rt_offset,
            table,
            end: rt_offset + table * CLUSTER,
        }
    }

    /// The metadata's bytes; `refs` (the data's refcounts so far, header
    /// included) gains the metadata's own clusters.
    fn bytes(&self, l2: &[u64], refs: &mut Vec<u16>) -> Vec<u8> {
        let mut out = vec![0u8; (self.end - self.start) as usize];
        let at = |off: u64| (off - self.start) as usize;
        let mut l1 = vec![0u64; self.l1_size as usize];
        for (n, &i) in self.tables.iter().enumerate() {
            let pos = self.start + n as u64 * CLUSTER;
            l1[i] = OFLAG_COPIED | pos;
            let entries =
                &l2[i * L2_ENTRIES as usize..((i + 1) * L2_ENTRIES as usize).min(l2.len())];
            for (j, e) in entries.iter().enumerate() {
                out[at(pos) + j * 8..at(pos) + j * 8 + 8].copy_from_slice(&e.to_be_bytes());
            }
        }
        for (i, e) in l1.iter().enumerate() {
            let o = at(self.l1_offset) + i * 8;
            out[o..o + 8].copy_from_slice(&e.to_be_bytes());
        }
        let (first, last) = (self.start / CLUSTER, self.end / CLUSTER);
        if refs.len() < last as usize {
            refs.resize(last as usize, 0);
        }
        for r in &mut refs[first as usize..last as usize] {
            *r += 1;
        }
        refs.resize((self.blocks * RB_ENTRIES) as usize, 0);
        for (i, r) in refs.iter().enumerate() {
            let o = at(self.rb_offset) + i * 2;
            out[o..o + 2].copy_from_slice(&r.to_be_bytes());
        }
        for b in 0..self.blocks {
            let o = at(self.rt_offset) + (b * 8) as usize;
            out[o..o + 8].copy_from_slice(&(self.rb_offset + b * CLUSTER).to_be_bytes());
        }
        out
    }

    /// The header cluster.
    fn header(&self, size: u64) -> Vec<u8> {
        let mut h = crate::image::Qcow2Header::new_v3(
            CLUSTER_BITS,
            size,
            (self.l1_size as u32, self.l1_offset),
            (self.rt_offset, self.table as u32),
            None,
        )
        .encode()
        .expect("a header without a backing name always fits");
        h.resize(CLUSTER as usize, 0);
        h
    }
}

/// Deflates the present clusters on every core; order and output are the same
/// whatever the number of threads.
fn compress_all(clusters: &[&[u8]], present: &[bool]) -> Vec<Option<Vec<u8>>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let per = clusters.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = clusters
            .chunks(per.max(1))
            .zip(present.chunks(per.max(1)))
            .map(|(cs, ps)| {
                s.spawn(move || {
                    cs.iter()
                        .zip(ps)
                        .map(|(c, &p)| if p { deflate(c) } else { None })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compression thread"))
            .collect()
    })
}

/// Writes every slice, in order, from `offset`, with as few system calls as the
/// kernel allows.
fn write_all_vectored_at(
    w: &File,
    mut offset: u64,
    mut parts: &mut [IoSlice<'_>],
) -> std::io::Result<()> {
    while !parts.is_empty() {
        match nix::sys::uio::pwritev(w, parts, offset as i64) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut parts, n);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Packs compressed clusters byte to byte into host clusters of their own, as
/// QEMU's allocator does: raw clusters taken in between do not waste the rest of
/// a partly filled compressed cluster, and compressed data runs on into the next
/// host cluster when that one is free (compressed data must be contiguous).
#[derive(Default)]
struct Packer {
    /// Where `open` starts in the file, and the bytes placed there so far.
    start: u64,
    open: Vec<u8>,
}

impl Packer {
    /// The file offset of `z`, placed in the open compressed cluster when it fits,
    /// else in newly taken host clusters (`pos` moves past them).
    fn place(&mut self, z: &[u8], pos: &mut u64, w: &File) -> std::io::Result<u64> {
        let room = self.open.len().div_ceil(CLUSTER as usize) * CLUSTER as usize;
        let contiguous = !self.open.is_empty() && self.start + room as u64 == *pos;
        if self.open.is_empty() || (self.open.len() + z.len() > room && !contiguous) {
            self.finish(w)?;
            self.start = *pos;
        }
        let at = self.start + self.open.len() as u64;
        self.open.extend_from_slice(z);
        let end = self.start + self.open.len() as u64;
        *pos = (*pos).max(end.div_ceil(CLUSTER) * CLUSTER);
        // Whole clusters before the last one are final: write them out.
        let done = (self.open.len() as u64 - 1) / CLUSTER * CLUSTER;
        if done > 0 {
            w.write_all_at(&self.open[..done as usize], self.start)?;
            self.open.drain(..done as usize);
            self.start += done;
        }
        Ok(at)
    }

    /// Writes what is still held, padded to its cluster.
    fn finish(&mut self, w: &File) -> std::io::Result<()> {
        if self.open.is_empty() {
            return Ok(());
        }
        let padded = self.open.len().div_ceil(CLUSTER as usize) * CLUSTER as usize;
        self.open.resize(padded, 0);
        w.write_all_at(&self.open, self.start)?;
        self.open.clear();
        Ok(())
    }
}
