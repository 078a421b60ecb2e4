//! `wingold inspect`: what an image holds.

use crate::image::{
    self, probe_filesystem, scan_partitions, Access, BlockDev, Image, PartitionView,
};
use clap::Args;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The disk image (qcow2 or raw).
    image: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `inspect --json` output. Field names are part of the CLI contract.
#[derive(Debug, Serialize)]
struct Report {
    image: PathBuf,
    format: image::Format,
    virtual_size: u64,
    /// The backing chain below the image, nearest first.
    backing_chain: Vec<Layer>,
    partition_table: image::TableKind,
    disk_id: String,
    partitions: Vec<PartitionReport>,
}

#[derive(Debug, Serialize)]
struct Layer {
    path: PathBuf,
    format: image::Format,
}

#[derive(Debug, Serialize)]
struct PartitionReport {
    #[serde(flatten)]
    partition: image::Partition,
    filesystem: &'static str,
}

fn backing_chain(img: &Image) -> Vec<Layer> {
    let mut out = Vec::new();
    let mut cur = img;
    while let Image::Qcow2(q) = cur {
        let Some(next) = q.backing() else { break };
        let path = match next {
            Image::Qcow2(b) => b.path().to_owned(),
            Image::Raw(r) => r.path().to_owned(),
        };
        out.push(Layer {
            path,
            format: next.format(),
        });
        cur = next;
    }
    out
}

fn report(path: &Path) -> anyhow::Result<Report> {
    let img = image::open(path, Access::ReadOnly)?;
    let table = scan_partitions(&img, path)?;
    let mut partitions = Vec::new();
    for p in table.partitions {
        let filesystem = if p.role == image::Role::Extended {
            "extended"
        } else {
            probe_filesystem(&PartitionView::new(&img, p.start, p.size)?)?
        };
        partitions.push(PartitionReport {
            partition: p,
            filesystem,
        });
    }
    Ok(Report {
        image: path.to_owned(),
        format: img.format(),
        virtual_size: img.len(),
        backing_chain: backing_chain(&img),
        partition_table: table.kind,
        disk_id: table.disk_id,
        partitions,
    })
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let r = report(&args.image)?;
    if args.json {
        return super::print_json(&r);
    }
    println!(
        "{}: {}, {} bytes",
        r.image.display(),
        r.format,
        r.virtual_size
    );
    for layer in &r.backing_chain {
        println!("  backed by {} ({})", layer.path.display(), layer.format);
    }
    println!(
        "partition table: {} ({})",
        match r.partition_table {
            image::TableKind::Mbr => "MBR",
            image::TableKind::Gpt => "GPT",
        },
        r.disk_id
    );
    for p in &r.partitions {
        let q = &p.partition;
        println!(
            "  {:>2}  start {:>12}  size {:>12}  type {:<36}  {}{}",
            q.number,
            q.start,
            q.size,
            q.type_id,
            p.filesystem,
            q.name
                .as_deref()
                .filter(|n| !n.is_empty())
                .map(|n| format!("  \"{n}\""))
                .unwrap_or_default()
        );
    }
    Ok(())
}
