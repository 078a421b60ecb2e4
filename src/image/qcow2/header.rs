//! The qcow2 header as wingold reads it (every field it checks before qcow2-rs
//! sees the file), and the scan of the L1, L2 and refcount tables that refuses
//! what qcow2-rs would misread or damage.

use super::{
    Access, Error, Incompat, Result, EXT_BACKING_FORMAT, EXT_END, MAX_CLUSTER_BITS,
    MIN_CLUSTER_BITS, QCOW_MAGIC, SECTOR_SIZE,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
/// The fields of a qcow2 header that wingold looks at (big-endian on disk).
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible_features: Incompat,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

pub(super) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A version 3 header's length without extensions (the fields up to
/// `header_length`, plus the compression type and padding).
pub(crate) const V3_HEADER_LENGTH: u32 = 112;

impl Header {
    /// A version 3 header for a new image: zlib, 16-bit refcounts, no features; a
    /// backing file (name, format) for an overlay.
    pub fn new_v3(
        cluster_bits: u32,
        size: u64,
        l1: (u32, u64),
        refcount_table: (u64, u32),
        backing: Option<(String, String)>,
    ) -> Header {
        let (backing_file, backing_format) = backing.unzip();
        Header {
            version: 3,
            backing_file_offset: 0,
            backing_file_size: 0,
            cluster_bits,
            size,
            crypt_method: 0,
            l1_size: l1.0,
            l1_table_offset: l1.1,
            refcount_table_offset: refcount_table.0,
            refcount_table_clusters: refcount_table.1,
            nb_snapshots: 0,
            incompatible_features: Incompat::default(),
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V3_HEADER_LENGTH,
            backing_file,
            backing_format,
        }
    }

    /// The header's bytes as [`Header::parse`] reads them (docs/interop/qcow2.txt):
    /// the fields, the backing format extension when there is a backing file, the
    /// end marker, then the backing file's name (offset and size set here). None
    /// when the name does not fit (QEMU's limit, 1023 bytes, or the first 4 KiB).
    pub fn encode(&self) -> Option<Vec<u8>> {
        let mut h = vec![0u8; self.header_length as usize];
        h[0..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&self.version.to_be_bytes());
        h[20..24].copy_from_slice(&self.cluster_bits.to_be_bytes());
        h[24..32].copy_from_slice(&self.size.to_be_bytes());
        h[32..36].copy_from_slice(&self.crypt_method.to_be_bytes());
        h[36..40].copy_from_slice(&self.l1_size.to_be_bytes());
        h[40..48].copy_from_slice(&self.l1_table_offset.to_be_bytes());
        h[48..56].copy_from_slice(&self.refcount_table_offset.to_be_bytes());
        h[56..60].copy_from_slice(&self.refcount_table_clusters.to_be_bytes());
        h[60..64].copy_from_slice(&self.nb_snapshots.to_be_bytes());
        if self.version >= 3 {
            h[72..80].copy_from_slice(&self.incompatible_features.0.to_be_bytes());
            h[88..96].copy_from_slice(&self.autoclear_features.to_be_bytes());
            h[96..100].copy_from_slice(&self.refcount_order.to_be_bytes());
            h[100..104].copy_from_slice(&self.header_length.to_be_bytes());
        }
        if let Some(format) = &self.backing_format {
            let padded = format.len().div_ceil(8) * 8;
            h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            h.extend_from_slice(&(format.len() as u32).to_be_bytes());
            h.extend_from_slice(format.as_bytes());
            h.resize(h.len() + padded - format.len(), 0);
        }
        h.extend_from_slice(&EXT_END.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        if let Some(name) = &self.backing_file {
            let at = h.len();
            if name.len() > 1023 || at + name.len() > 4096 {
                return None;
            }
            h[8..16].copy_from_slice(&(at as u64).to_be_bytes());
            h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            h.extend_from_slice(name.as_bytes());
        }
        Some(h)
    }

    /// Parses the first cluster (or as much of it as the file has).
    pub fn parse(path: &Path, buf: &[u8]) -> Result<Header> {
        let corrupt = |r: &str| Error::corrupt(path, r);
        if buf.len() < 72 || !buf.starts_with(QCOW_MAGIC) {
            return Err(corrupt("the header is truncated"));
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(Error::unsupported(
                path,
                format!("qcow2 version {version}"),
                "convert it with `qemu-img convert -O qcow2`",
            ));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits: be32(buf, 20),
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            incompatible_features: Incompat::default(),
            autoclear_features: 0,
            refcount_order: 4,
            header_length: 72,
            backing_file: None,
            backing_format: None,
        };
        if version == 3 {
            if buf.len() < 104 {
                return Err(corrupt("the version 3 header is truncated"));
            }
            h.incompatible_features = Incompat(be64(buf, 72));
            h.autoclear_features = be64(buf, 88);
            h.refcount_order = be32(buf, 96);
            h.header_length = be32(buf, 100);
            if h.header_length < 104 || h.header_length as usize > buf.len() {
                return Err(corrupt("the header length is invalid"));
            }
        }
        if !(9..=MAX_CLUSTER_BITS).contains(&h.cluster_bits) {
            return Err(corrupt(&format!(
                "cluster_bits {} is invalid",
                h.cluster_bits
            )));
        }
        let cluster = 1usize << h.cluster_bits;
        // Header extensions, up to the end marker. Version 2 has them too when qemu
        // wrote it (right after the 72-byte header); other writers may put the
        // backing name there directly, so for version 2 a malformed area only ends
        // the list.
        let limit = match (version, h.backing_file_offset as usize) {
            (2, 0) => buf.len().min(cluster),
            (2, name) => name.min(buf.len()).min(cluster),
            _ => buf.len().min(cluster),
        };
        let mut at = h.header_length as usize;
        loop {
            if at + 8 > limit {
                if version == 2 {
                    break;
                }
                return Err(corrupt("header extensions run past the first cluster"));
            }
            let (kind, len) = (be32(buf, at), be32(buf, at + 4) as usize);
            if kind == EXT_END {
                break;
            }
            let data = at + 8;
            if data + len > limit {
                if version == 2 {
                    break;
                }
                return Err(corrupt("a header extension runs past the first cluster"));
            }
            if kind == EXT_BACKING_FORMAT {
                h.backing_format =
                    Some(String::from_utf8_lossy(&buf[data..data + len]).into_owned());
            }
            at = data + len.div_ceil(8) * 8;
        }
        // An offset with a size of 0 is no backing file, as QEMU reads it (an empty
        // name means none).
        if h.backing_file_offset != 0 && h.backing_file_size != 0 {
            let start = h.backing_file_offset as usize;
            let end = start.saturating_add(h.backing_file_size as usize);
            if h.backing_file_size > 1023 || end > buf.len().min(cluster) {
                return Err(corrupt(
                    "the backing file name lies outside the first cluster",
                ));
            }
            let name = std::str::from_utf8(&buf[start..end])
                .map_err(|_| corrupt("the backing file name is not UTF-8"))?;
            h.backing_file = Some(name.to_owned());
        }
        Ok(h)
    }

    /// Refuses, with a reason and a way out, what qcow2-rs cannot handle safely.
    pub fn check(&self, path: &Path, file_len: u64, access: Access) -> Result<()> {
        let write = access == Access::ReadWrite;
        let unsupported = |what: &str, hint: &str| Err(Error::unsupported(path, what, hint));
        let convert = "make a plain copy with `qemu-img convert -O qcow2 IN OUT`";
        if self.crypt_method != 0 {
            return unsupported("an encrypted image", "decrypt it with `qemu-img convert`");
        }
        let f = self.incompatible_features;
        if f.has(Incompat::CORRUPT) {
            return Err(Error::corrupt(
                path,
                "QEMU marked it corrupt; repair it with `qemu-img check -r all`",
            ));
        }
        if f.has(Incompat::DATA_FILE) {
            return unsupported("an external data file", convert);
        }
        if f.has(Incompat::COMPRESSION) {
            return unsupported(
                "a compression type other than zlib (zstd)",
                "convert it with `qemu-img convert -O qcow2 -o compression_type=zlib`",
            );
        }
        if f.has(Incompat::EXTL2) {
            return unsupported("extended L2 entries (subclusters)", convert);
        }
        let unknown = f.unknown();
        if unknown != 0 {
            return unsupported(
                &format!("unknown incompatible feature bits {unknown:#x}"),
                convert,
            );
        }
        if write && f.has(Incompat::DIRTY) {
            return unsupported(
                "writing an image marked dirty (QEMU did not close it cleanly)",
                "repair it with `qemu-img check -r all` first",
            );
        }
        if self.cluster_bits < MIN_CLUSTER_BITS {
            return unsupported(
                &format!("a cluster size of {} bytes", 1u64 << self.cluster_bits),
                "convert it with `qemu-img convert -O qcow2 -o cluster_size=64k`",
            );
        }
        if write && self.nb_snapshots != 0 {
            return unsupported(
                &format!(
                    "writing an image with {} internal snapshot(s)",
                    self.nb_snapshots
                ),
                "delete them with `qemu-img snapshot -d`, or write to an overlay instead",
            );
        }
        if write && self.refcount_order != 4 {
            return unsupported(
                &format!("writing with {}-bit refcounts", 1u32 << self.refcount_order),
                "convert it with `qemu-img convert -O qcow2 -o refcount_bits=16`",
            );
        }
        if self.size % SECTOR_SIZE != 0 {
            return unsupported(
                &format!("a virtual size of {} bytes (not whole sectors)", self.size),
                "resize it with `qemu-img resize` to a multiple of 512 bytes",
            );
        }
        let cluster = 1u64 << self.cluster_bits;
        let l2_span = (cluster / 8) * cluster;
        let needed_l1 = self.size.div_ceil(l2_span);
        if (self.l1_size as u64) < needed_l1 {
            return Err(Error::corrupt(
                path,
                "the L1 table is too small for the disk size",
            ));
        }
        let within = |off: u64, len: u64| off.checked_add(len).is_some_and(|end| end <= file_len);
        if self.l1_table_offset % cluster != 0 {
            return Err(Error::corrupt(
                path,
                "the L1 table offset is not cluster-aligned",
            ));
        }
        if !within(self.l1_table_offset, self.l1_size as u64 * 8) {
            return Err(Error::corrupt(
                path,
                "the L1 table lies outside the file (is it truncated?)",
            ));
        }
        if self.refcount_table_offset % cluster != 0 {
            return Err(Error::corrupt(
                path,
                "the refcount table offset is not cluster-aligned",
            ));
        }
        if self.refcount_table_clusters == 0
            || !within(
                self.refcount_table_offset,
                self.refcount_table_clusters as u64 * cluster,
            )
        {
            return Err(Error::corrupt(
                path,
                "the refcount table lies outside the file (is it truncated?)",
            ));
        }
        Ok(())
    }
}

/// Host offset bits of L1, L2 and refcount table entries (docs/interop/qcow2.txt).
pub(super) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(super) const L2_COMPRESSED: u64 = 1 << 62;

/// What a walk over the tables found.
#[derive(Debug, Default)]
pub(super) struct TableScan {
    /// Some L2 entry maps a compressed cluster.
    pub(super) compressed: bool,
}

/// Walks the L1 table, every L2 table and the refcount table, as QEMU's checks do,
/// and refuses offsets QEMU would refuse: a table or data cluster that is not
/// cluster-aligned, or lies past the end of the file. Reads only metadata (one
/// L2 table per 512 MiB of allocated disk with 64 KiB clusters).
pub(super) fn scan_tables(
    file: &File,
    path: &Path,
    h: &Header,
    file_len: u64,
) -> Result<TableScan> {
    let cluster = 1u64 << h.cluster_bits;
    let read = |offset: u64, len: u64, what: &str| -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| Error::io(path, "reading the tables", e))
            .map_err(|e| match e {
                Error::Io { ref source, .. }
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    Error::corrupt(path, format!("{what} lies past the end of the file"))
                }
                other => other,
            })?;
        Ok(buf)
    };
    let entries = |buf: &[u8]| -> Vec<u64> { buf.chunks_exact(8).map(|c| be64(c, 0)).collect() };
    let mut scan = TableScan::default();
    let l1 = read(h.l1_table_offset, h.l1_size as u64 * 8, "the L1 table")?;
    for (i, l1e) in entries(&l1).into_iter().enumerate() {
        let l2_offset = l1e & OFFSET_MASK;
        if l2_offset == 0 {
            continue;
        }
        if l2_offset % cluster != 0 {
            return Err(Error::corrupt(
                path,
                format!("L1 entry {i} points to an unaligned L2 table at {l2_offset:#x}"),
            ));
        }
        if l2_offset + cluster > file_len {
            return Err(Error::corrupt(
                path,
                format!("L1 entry {i} points past the end of the file (is it truncated?)"),
            ));
        }
        let l2 = read(l2_offset, cluster, "an L2 table")?;
        for (j, l2e) in entries(&l2).into_iter().enumerate() {
            if l2e & L2_COMPRESSED != 0 {
                scan.compressed = true;
                continue;
            }
            let data = l2e & OFFSET_MASK;
            if data != 0 && data % cluster != 0 {
                let guest = (i as u64 * (cluster / 8) + j as u64) * cluster;
                return Err(Error::corrupt(
                    path,
                    format!(
                        "the cluster at guest offset {guest:#x} is mapped to an unaligned \
                         host offset {data:#x}"
                    ),
                ));
            }
        }
    }
    let rt = read(
        h.refcount_table_offset,
        h.refcount_table_clusters as u64 * cluster,
        "the refcount table",
    )?;
    for (i, e) in entries(&rt).into_iter().enumerate() {
        let block = e & !(cluster - 1) & OFFSET_MASK;
        if e != 0 && (e & (cluster - 1) != 0 || block == 0) {
            return Err(Error::corrupt(
                path,
                format!("refcount table entry {i} points to an unaligned refcount block"),
            ));
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `encode` writes, `parse` reads back, backing file and format included.
    #[test]
    fn encoded_headers_parse_back_to_the_same_fields() {
        let path = Path::new("t.qcow2");
        for backing in [
            None,
            Some(("/golden/win2k22-0123456789ab.qcow2".into(), "qcow2".into())),
        ] {
            let h = Header::new_v3(16, 20 << 30, (40, 0x30000), (0x10000, 1), backing);
            let bytes = h.encode().unwrap();
            let mut cluster = bytes.clone();
            cluster.resize(65536, 0);
            let back = Header::parse(path, &cluster).unwrap();
            assert_eq!(format!("{back:?}"), {
                let mut want = h.clone();
                if let Some(name) = &h.backing_file {
                    want.backing_file_offset = (bytes.len() - name.len()) as u64;
                    want.backing_file_size = name.len() as u32;
                }
                format!("{want:?}")
            });
        }
        let long = Header::new_v3(
            16,
            1 << 30,
            (1, 0x30000),
            (0x10000, 1),
            Some(("x".repeat(1024), "raw".into())),
        );
        assert!(
            long.encode().is_none(),
            "a backing name over 1023 bytes was encoded"
        );
    }
}
