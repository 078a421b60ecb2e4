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
mod invalid;
mod launch;
mod publish;

use crate::error::{Classify, Kind};
use clap::{Parser, Subcommand};
pub use invalid::Invalid;

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

/// The kind of the first cause in `err`'s chain that has one (an error of one of
/// the layers; wrappers answer for what they wrap); a failure when none does.
pub fn kind(err: &anyhow::Error) -> Kind {
    fn of<E: Classify + std::error::Error + 'static>(
        cause: &(dyn std::error::Error + 'static),
    ) -> Option<Kind> {
        cause.downcast_ref::<E>().map(Classify::kind)
    }
    // Every error type that implements Classify, once.
    let known = [
        of::<crate::image::Error>,
        of::<crate::ntfs::Error>,
        of::<crate::hive::Error>,
        of::<crate::guest::Error>,
        of::<crate::reg::Error>,
        of::<crate::launch::Error>,
        of::<crate::virtio::fetch::Error>,
        of::<crate::virtio::iso::Error>,
        of::<crate::error::Unreadable>,
        of::<crate::input::Error>,
        of::<crate::drivers::Refusal>,
        of::<crate::golden::Refusal>,
        of::<crate::firstboot::Refusal>,
        of::<crate::publish::Refusal>,
        of::<crate::publish::BadReference>,
        of::<crate::publish::registry::Error>,
        of::<Invalid>,
        of::<crate::reg::ParseError>,
    ];
    err.chain()
        .find_map(|cause| known.iter().find_map(|of| of(cause)))
        .unwrap_or(Kind::Failure)
}

/// The exit code for `err`: 2 for usage and bad input, 1 for a failure.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    kind(err).exit_code()
}

/// Text on its way to a terminal with its control characters escaped (`\u{1b}`),
/// line ends kept: names from guests, ISOs and users' files cannot move the
/// cursor, recolour or retitle a terminal.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A writer that passes text on through [`terminal_safe`] (each write is whole
/// UTF-8: `write!` hands over whole strings).
pub struct Safe<W: std::io::Write>(pub W);

impl<W: std::io::Write> std::io::Write for Safe<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(terminal_safe(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Prints `value` as pretty JSON on stdout.
/// True when `err` comes from writing to a standard output whose reader has
/// gone (`wingold … | head`): a broken pipe, and stdout is that closed pipe
/// (poll says so), so that a broken pipe to a child process or a socket is
/// still an error.
pub fn is_closed_stdout(err: &anyhow::Error) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let pipe = Some(std::io::ErrorKind::BrokenPipe);
    let broken = err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(|e| e.kind()) == pipe
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                == pipe
    });
    if !broken {
        return false;
    }
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLOUT)];
    // A pipe's write end whose read end is closed polls as POLLERR.
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    // Streamed: a report of a large .reg would otherwise be built whole in memory.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// `kind` can only ask the types it lists: an error type that implements
    /// `Classify` but is missing there would exit 1 whatever it says. Every
    /// `impl … Classify for NAME` in `src/` must have its `of::<…NAME>` line.
    #[test]
    fn kind_asks_every_type_that_classifies() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut implemented = Vec::new();
        for e in walkdir::WalkDir::new(&src).sort_by_file_name() {
            let e = e.unwrap();
            if e.path().extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                for line in text.lines().map(str::trim) {
                    if let Some(rest) = line.strip_prefix("impl ") {
                        if let Some((_, ty)) = rest.split_once("Classify for ") {
                            implemented.push(ty.trim_end_matches(" {").to_owned());
                        }
                    }
                }
            }
        }
        let this = std::fs::read_to_string(src.join("cli/mod.rs")).unwrap();
        let mut asked: Vec<String> = this
            .lines()
            .filter_map(|l| l.trim().strip_prefix("of::<"))
            .map(|l| {
                l.trim_end_matches(">,")
                    .rsplit("::")
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        implemented.sort();
        asked.sort();
        assert!(
            implemented.len() > 10,
            "too few impls found: {implemented:?}"
        );
        assert_eq!(
            asked, implemented,
            "cli::kind's list and the Classify impls differ"
        );
    }
}
