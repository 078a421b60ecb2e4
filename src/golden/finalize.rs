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

use crate::image::{BlockDev, Error as ImageError};
use std::fs::File;
use std::io::{IoSlice, Seek, SeekFrom, Write};
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
}

/// Level 9: our zlib (zlib-rs, zlib-ng's levels) compresses at 6 and 8 no better
/// than at 4, and its 9 is what makes the output no bigger than QEMU's (madler
/// zlib at level 6) — for a modest cost (make bench).
fn deflate(data: &[u8]) -> Option<Vec<u8>> {
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
/// names `out` temporarily and renames it when this returns.
pub fn write_qcow2(src: &dyn BlockDev, out: &Path, compress: bool) -> Result<Stats, ImageError> {
    let size = src.len();
    let io = |op: &'static str| {
        move |e: std::io::Error| ImageError::Io {
            path: out.to_owned(),
            op,
            source: e,
        }
    };
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
    let mut stats = Stats {
        virtual_size: size,
        file_size: 0,
        data_clusters: 0,
        compressed_clusters: 0,
        skipped_clusters: 0,
    };
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
        let packed: Vec<Option<Vec<u8>>> = if compress {
            compress_all(&clusters, &present)
        } else {
            vec![None; count as usize]
        };
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
    }
    packer.finish(&w).map_err(io("writing"))?;
    w.seek(SeekFrom::Start(pos)).map_err(io("seeking"))?;
    // Metadata after the data, cluster-aligned (pos always is).
    let l1_size = nclusters.div_ceil(L2_ENTRIES).max(1);
    let mut l1 = vec![0u64; l1_size as usize];
    for (i, table) in l2.chunks(L2_ENTRIES as usize).enumerate() {
        if table.iter().all(|&e| e == 0) {
            continue;
        }
        let mut bytes = vec![0u8; CLUSTER as usize];
        for (j, e) in table.iter().enumerate() {
            bytes[j * 8..j * 8 + 8].copy_from_slice(&e.to_be_bytes());
        }
        l1[i] = OFLAG_COPIED | pos;
        w.write_all(&bytes).map_err(io("writing"))?;
        bump(&mut refs, pos / CLUSTER, pos / CLUSTER);
        pos += CLUSTER;
    }
    let l1_offset = pos;
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    let mut l1_bytes = vec![0u8; (l1_clusters * CLUSTER) as usize];
    for (i, e) in l1.iter().enumerate() {
        l1_bytes[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    w.write_all(&l1_bytes).map_err(io("writing"))?;
    bump(&mut refs, pos / CLUSTER, pos / CLUSTER + l1_clusters - 1);
    pos += l1_clusters * CLUSTER;
    // Refcount blocks and table must count themselves: find sizes that fit.
    let used = pos / CLUSTER;
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
    let rb_offset = pos;
    bump(&mut refs, used, used + blocks + table - 1);
    refs.resize((blocks * RB_ENTRIES) as usize, 0);
    let mut rb_bytes = vec![0u8; (blocks * CLUSTER) as usize];
    for (i, r) in refs.iter().enumerate() {
        rb_bytes[i * 2..i * 2 + 2].copy_from_slice(&r.to_be_bytes());
    }
    w.write_all(&rb_bytes).map_err(io("writing"))?;
    pos += blocks * CLUSTER;
    let rt_offset = pos;
    let mut rt_bytes = vec![0u8; (table * CLUSTER) as usize];
    for b in 0..blocks {
        let at = (b * 8) as usize;
        rt_bytes[at..at + 8].copy_from_slice(&(rb_offset + b * CLUSTER).to_be_bytes());
    }
    w.write_all(&rt_bytes).map_err(io("writing"))?;
    pos += table * CLUSTER;

    // The header, last.
    let mut h = vec![0u8; CLUSTER as usize];
    h[0..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&l1_offset.to_be_bytes());
    h[48..56].copy_from_slice(&rt_offset.to_be_bytes());
    h[56..60].copy_from_slice(&(table as u32).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&112u32.to_be_bytes());
    w.seek(SeekFrom::Start(0)).map_err(io("seeking"))?;
    w.write_all(&h).map_err(io("writing"))?;
    w.set_len(pos).map_err(io("sizing"))?;
    w.sync_all().map_err(io("fsync"))?;
    stats.file_size = pos;
    Ok(stats)
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
