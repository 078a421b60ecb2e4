//! Creating empty qcow2 images and overlays.
//!
//! We write the few metadata clusters ourselves (qcow2-rs cannot set a backing
//! file, and its formatter is meant for tests): header, one refcount table sized
//! for the whole disk, one refcount block, and the L1 table. The result is
//! deterministic: the same options give the same bytes.
//!
//! The file is written under a temporary name beside the target, synced, then
//! linked into place (`fsutil`), which fails if the target exists: nothing is
//! overwritten and no partial image is ever visible under the target name.

use super::qcow2::Header;
use super::{Error, Format, Result, SECTOR_SIZE};
use crate::fsutil::{self, Place};
use std::path::{Path, PathBuf};

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Virtual size in bytes (rounded up to whole sectors).
    pub size: u64,
    /// log2 of the cluster size; 16 (64 KiB) as qemu-img does by default.
    pub cluster_bits: u32,
    /// The backing image and its format, for an overlay. The path is stored as given:
    /// pass an absolute one so the overlay works from any directory.
    pub backing: Option<(PathBuf, Format)>,
}

impl CreateOptions {
    pub fn new(size: u64) -> Self {
        CreateOptions {
            size,
            cluster_bits: 16,
            backing: None,
        }
    }
}

/// 16-bit refcounts, as `Header::new_v3` records.
const REFCOUNT_ORDER: u32 = 4;

/// Builds the image's bytes.
fn layout(opts: &CreateOptions) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::BadSize {
        text: opts.size.to_string(),
        reason,
    };
    if !(12..=21).contains(&opts.cluster_bits) {
        return Err(bad(format!(
            "cluster size 2^{} is outside 4 KiB to 2 MiB",
            opts.cluster_bits
        )));
    }
    let size = opts.size.div_ceil(SECTOR_SIZE) * SECTOR_SIZE;
    if size == 0 || size > 1u64 << 50 {
        return Err(bad(
            "a qcow2 disk must be between 512 bytes and 1 PiB".into()
        ));
    }
    let cluster = 1u64 << opts.cluster_bits;
    let l2_span = (cluster / 8) * cluster;
    let l1_entries = size.div_ceil(l2_span);
    let l1_clusters = (l1_entries * 8).div_ceil(cluster).max(1);
    // One refcount block covers cluster*8/16 clusters. Size the table for a fully
    // allocated disk plus its metadata, so that it never has to grow.
    let clusters_per_block = cluster * 8 / (1 << REFCOUNT_ORDER);
    let host_max = size + size / (cluster / 8) + 64 * cluster;
    let blocks = host_max.div_ceil(cluster).div_ceil(clusters_per_block);
    let rt_clusters = (blocks * 8).div_ceil(cluster).max(1);

    let rt_offset = cluster;
    let rb_offset = rt_offset + rt_clusters * cluster;
    let l1_offset = rb_offset + cluster;
    let total_clusters = l1_offset / cluster + l1_clusters;
    if total_clusters > clusters_per_block {
        return Err(bad("the metadata does not fit one refcount block".into()));
    }
    let mut img = vec![0u8; (total_clusters * cluster) as usize];

    // Header (docs/interop/qcow2.txt), version 3, zlib, no features.
    let backing = match &opts.backing {
        None => None,
        Some((path, format)) => {
            let name = path.to_str().ok_or_else(|| Error::NotAnImage {
                path: path.clone(),
                reason: "the backing path is not UTF-8".into(),
            })?;
            Some((name.to_owned(), format.to_string()))
        }
    };
    let header = Header::new_v3(
        opts.cluster_bits,
        size,
        (l1_entries as u32, l1_offset),
        (rt_offset, rt_clusters as u32),
        backing,
    )
    .encode()
    .ok_or_else(|| Error::NotAnImage {
        path: opts
            .backing
            .as_ref()
            .map(|b| b.0.clone())
            .unwrap_or_default(),
        reason: "the backing path is too long for a qcow2 header (1023 bytes)".into(),
    })?;
    img[..header.len()].copy_from_slice(&header);

    // Refcount table: one block, at rb_offset.
    let rt = rt_offset as usize;
    img[rt..rt + 8].copy_from_slice(&rb_offset.to_be_bytes());
    // Refcount block: every cluster so far is used once.
    let rb = rb_offset as usize;
    for i in 0..total_clusters as usize {
        img[rb + 2 * i..rb + 2 * i + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    Ok(img)
}

/// Creates a qcow2 image at `path`, refusing to replace an existing file.
pub fn create_qcow2(path: &Path, opts: &CreateOptions) -> Result<()> {
    let bytes = layout(opts)?;
    if path.exists() {
        return Err(Error::Exists {
            path: path.to_owned(),
        });
    }
    fsutil::write_file(path, &bytes, 0o644, Place::NoReplace).map_err(|e| placing_error(path, e))
}

fn placing_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Exists {
            path: path.to_owned(),
        },
        _ => Error::io(path, "writing", e),
    }
}

/// Creates a qcow2 overlay at `path` whose backing file is `base` (qcow2 or raw).
///
/// The base's absolute path is stored, so the overlay opens from any directory;
/// the overlay has the base's virtual size. The base is opened read-only to check
/// it, and is never written.
pub fn create_overlay(path: &Path, base: &Path) -> Result<()> {
    let abs = std::fs::canonicalize(base).map_err(|e| Error::open(base, e))?;
    let image = super::open(&abs, super::Access::ReadOnly)?;
    let opts = CreateOptions {
        size: super::BlockDev::len(&image),
        cluster_bits: 16,
        backing: Some((abs, image.format())),
    };
    drop(image);
    create_qcow2(path, &opts)
}

/// Moves a finished file from its temporary name to `path`, refusing to replace
/// anything there, and makes it durable.
pub fn publish(tmp: &Path, path: &Path) -> Result<()> {
    fsutil::move_into_place(tmp, path, Place::NoReplace).map_err(|e| placing_error(path, e))
}
