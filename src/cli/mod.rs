//! The command line: clap definitions, dispatch, human and `--json` output, exit codes.
//!
//! Results go to stdout, progress and diagnostics to stderr. Exit codes: 0 done (or
//! nothing to do), 1 failed, 2 bad usage or bad input.

#![forbid(unsafe_code)]

mod build;
mod disks;
mod fetch;
mod inject;
mod inspect;
mod launch;
mod publish;

use clap::{Parser, Subcommand};

/// Exit code for bad usage or bad input.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code for an operation that failed on good input.
pub const EXIT_FAILED: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "wingold",
    version,
    about = "Builds ready-to-clone Windows guest images for Linux KVM hosts, offline",
    long_about = "Builds ready-to-clone Windows guest images for Linux KVM hosts: disks for \
                  the installer, offline registry settings written straight into the disk \
                  image (no running guest, no mount, no root), golden images and clones.\n\n\
                  Exit codes: 0 done or nothing to do, 1 failed, 2 bad usage or bad input."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the virtio-win ISO: verified, cached, pinned; list its driver folders.
    Fetch(fetch::FetchArgs),
    /// Create the system disk (HDA) and the temporary virtio disk (HDB) for VM N.
    Disks(disks::DisksArgs),
    /// Show what an image holds: format, backing chain, partitions, Windows, hives.
    Inspect(inspect::InspectArgs),
    /// Write registry settings (built-in profiles, .reg files) into a Windows image, offline.
    Inject(inject::InjectArgs),
    /// Print how to start a VM: a sh script, a QEMU argv (JSON) or libvirt XML.
    Launch(launch::LaunchArgs),
    /// Build the golden image (fetch, inject, finalize, manifest); nothing when no input changed.
    Build(build::BuildArgs),
    /// A new VM from the golden image: a qcow2 overlay and its run recipe.
    Clone(build::CloneArgs),
    /// Remove golden versions that no clone uses and no running VM holds.
    Gc(build::GcArgs),
    /// Publish a golden image to an OCI registry as a KubeVirt containerDisk.
    Publish(publish::PublishArgs),
    /// Print a shell completion script (e.g. `wingold completions bash > /etc/bash_completion.d/wingold`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Runs one command. `matches` gives the command line's order of options where it
/// matters (inject applies profiles and .reg files in the order given).
pub fn run(cli: Cli, matches: Option<&clap::ArgMatches>) -> anyhow::Result<()> {
    match cli.command {
        Command::Fetch(args) => fetch::run(args),
        Command::Disks(args) => disks::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Inject(args) => {
            inject::run(args, matches.and_then(|m| m.subcommand_matches("inject")))
        }
        Command::Launch(args) => launch::run(args),
        Command::Build(args) => build::run_build(args),
        Command::Clone(args) => build::run_clone(args),
        Command::Gc(args) => build::run_gc(args),
        Command::Publish(args) => publish::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "wingold",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}

/// Maps an error chain to the exit code: 2 when any cause is bad input.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let bad_input = err.chain().any(|cause| {
        cause
            .downcast_ref::<crate::image::Error>()
            .is_some_and(|e| e.is_bad_input())
            || cause
                .downcast_ref::<crate::ntfs::Error>()
                .is_some_and(|e| e.is_bad_input())
            || cause
                .downcast_ref::<crate::hive::Error>()
                .is_some_and(|e| e.is_bad_input())
            || cause
                .downcast_ref::<crate::guest::Error>()
                .is_some_and(|e| e.is_bad_input())
            || cause
                .downcast_ref::<crate::reg::Error>()
                .is_some_and(|e| e.is_bad_input())
            || cause.downcast_ref::<crate::launch::Error>().is_some()
            || cause
                .downcast_ref::<crate::virtio::fetch::Error>()
                .is_some_and(|e| e.is_bad_input())
            || cause.downcast_ref::<crate::virtio::iso::Error>().is_some()
            || cause.downcast_ref::<BadInput>().is_some()
    });
    if bad_input {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILED
    }
}

pub use crate::BadInput;

/// Prints `value` as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    // Streamed: a report of a large .reg would otherwise be built whole in memory.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
