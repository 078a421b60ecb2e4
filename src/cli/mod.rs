//! The command line: clap definitions, dispatch, human and `--json` output, exit codes.
//!
//! Results go to stdout, progress and diagnostics to stderr. Exit codes: 0 done (or
//! nothing to do), 1 failed, 2 bad usage or bad input.

#![deny(unsafe_code)]

mod build;
mod disks;
mod doctor;
mod fetch;
mod inject;
mod inspect;
mod invalid;
mod launch;
mod publish;

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
    /// What this host can do for wingold (QEMU, KVM, OVMF, swtpm, rhsrvany, the
    /// libraries, free space), and the image reader's confinement proven live.
    Doctor(doctor::DoctorArgs),
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
        Command::Doctor(args) => doctor::run(args),
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

/// How a setting is given on this command line: `--NAME`.
pub fn spell(setting: crate::error::Setting) -> String {
    format!("--{}", setting.name())
}

/// The exit code for `err`: 2 for usage and bad input, 1 for a failure.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    crate::error::kind_of(err).exit_code()
}

/// What a confined worker may read of an image: the image, the files it rests
/// on and the folders they are in (manifests and clone records lie beside
/// them). Which files those are comes from the qcow2 headers alone
/// (`image::backing_files`).
pub fn image_reads(image: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut read = Vec::new();
    for file in std::iter::once(image.to_owned()).chain(crate::image::backing_files(image)) {
        read.push(crate::fsutil::folder_of(&file));
        read.push(file);
    }
    read
}

/// A command's end already reported (by a confined worker, on its own stderr):
/// exit with its code, print nothing more.
#[derive(Debug, thiserror::Error)]
#[error("exit {0}")]
pub struct Reported(pub i32);

/// How a command ends: nothing on success or when its reader stopped reading,
/// else its error on one line (control characters escaped); the exit code.
pub fn finish(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(err) if is_closed_stdout(&err) => 0,
        Err(err) => {
            if let Some(Reported(code)) = err.downcast_ref::<Reported>() {
                return *code;
            }
            let text = format!("{err:#}").replace('\n', "\\n");
            eprintln!("wingold: {}", terminal_safe(&text));
            exit_code(&err)
        }
    }
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
    use crate::error::Kind;

    /// Every setting a lower layer can name in a message is an option of some
    /// subcommand, under the name [`super::spell`] gives it.
    #[test]
    fn every_setting_is_an_option() {
        use clap::CommandFactory;
        let cli = super::Cli::command();
        let mut longs = std::collections::BTreeSet::new();
        let mut stack = vec![&cli];
        while let Some(cmd) = stack.pop() {
            longs.extend(cmd.get_arguments().filter_map(|a| a.get_long()));
            stack.extend(cmd.get_subcommands());
        }
        let missing: Vec<_> = crate::error::Setting::ALL
            .iter()
            .filter(|s| !longs.contains(s.name()))
            .collect();
        assert!(missing.is_empty(), "no such option: {missing:?}");
    }

    /// The table the linker gathers holds the types of layers this module never
    /// names, wrapped as the commands wrap them.
    #[test]
    fn kind_finds_types_through_the_linked_table() {
        let refusal = crate::golden::Refusal::TimeZone {
            zone: "Mars/Olympus".into(),
        };
        let err = anyhow::Error::new(refusal).context("building");
        assert_eq!(crate::error::kind_of(&err), Kind::BadInput);
        let usage = anyhow::Error::new(super::Invalid::InjectMode).context("inject");
        assert_eq!(crate::error::kind_of(&usage), Kind::Usage);
        let plain = anyhow::anyhow!("something else");
        assert_eq!(crate::error::kind_of(&plain), Kind::Failure);
        // Every `classify!` in the source is in the table: one entry each.
        let mut written = 0;
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    written += text
                        .lines()
                        .map(str::trim_start)
                        .filter(|l| {
                            l.starts_with("classify! {")
                                || l.starts_with("crate::error::classify! {")
                        })
                        .count();
                }
            }
        }
        assert!(written > 10, "{written} uses of classify! found");
        assert_eq!(crate::error::CLASSIFIERS.len(), written);
    }
}
