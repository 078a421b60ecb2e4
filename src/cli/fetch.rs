//! `wingold fetch`: the virtio-win ISO, verified, cached and pinned; and which of its
//! driver folders serve a given Windows.

use super::Invalid;
use crate::guest;
use crate::image::{self, Access};
use crate::virtio::{self, drivers, fetch, iso::Iso, Source};
use clap::{Args, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Channel {
    Stable,
    Latest,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// fedorapeople's stable or latest virtio-win (default: stable).
    #[arg(long, value_enum, conflicts_with_all = ["version", "url"])]
    channel: Option<Channel>,
    /// A version from the archive, e.g. 0.1.285.
    #[arg(long, conflicts_with = "url")]
    version: Option<String>,
    /// Any http, https or file URL of a virtio-win ISO.
    #[arg(long)]
    url: Option<String>,
    /// The SHA-256 the ISO must have (wins over wingold.lock and the known table).
    #[arg(long)]
    sha256: Option<String>,
    /// The cache folder (default: $XDG_CACHE_HOME/wingold or ~/.cache/wingold).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// The lock file pinning each version's SHA-256.
    #[arg(long, default_value = "wingold.lock")]
    lock: PathBuf,
    /// Use only the cache; never touch the network.
    #[arg(long)]
    offline: bool,
    /// Attempts after the first on connection errors and 5xx answers.
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Seconds without a byte (or to connect) before an attempt is given up.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// List the ISO's driver folders (all, or those for --for / --for-image).
    #[arg(long)]
    list_drivers: bool,
    /// Pick driver folders for an ISO OS code and arch, e.g. 2k3/x86, 2k22/amd64.
    #[arg(
        long,
        value_name = "OS/ARCH",
        requires = "list_drivers",
        conflicts_with = "for_image"
    )]
    r#for: Option<String>,
    /// Pick driver folders for the Windows found on this disk image.
    #[arg(long, value_name = "IMAGE", requires = "list_drivers")]
    for_image: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn options(args: &FetchArgs) -> fetch::Options {
    let source = match (&args.channel, &args.version, &args.url) {
        (_, _, Some(u)) => Source::Url(u.clone()),
        (_, Some(v), _) => Source::Version(v.clone()),
        (Some(Channel::Latest), ..) => Source::Latest,
        _ => Source::Stable,
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    fetch::Options {
        sha256: args.sha256.clone(),
        cache: args.cache.clone().unwrap_or_else(fetch::default_cache),
        offline: args.offline,
        progress: std::io::stderr().is_terminal() && !args.json,
        retries: args.retries,
        connect_timeout: timeout,
        stall_timeout: timeout,
        ..fetch::Options::new(source, args.lock.clone())
    }
}

pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let got = fetch::fetch(&options(&args))?;
    if !args.list_drivers {
        if args.json {
            return super::print_json(&got);
        }
        println!(
            "{}: virtio-win {} ({} bytes, sha256 {}){}, pinned by {}",
            got.path.display(),
            got.version,
            got.size,
            got.sha256,
            if got.from_cache {
                ", from the cache"
            } else {
                ""
            },
            got.pinned_by
        );
        return Ok(());
    }
    let entries = Iso::open(&got.path)?.list()?;
    let folders = virtio::driver_folders(&entries);
    let (os, arch): (Vec<String>, String) = match (&args.r#for, &args.for_image) {
        (Some(spec), _) => {
            let (os, arch) = spec
                .split_once('/')
                .ok_or_else(|| Invalid::ForSpec(spec.clone()))?;
            (drivers::folders_for(os, arch), arch.to_owned())
        }
        (None, Some(img)) => {
            let dev = image::open(img, Access::ReadOnly)?;
            let w = guest::find_windows(&dev, img)?;
            let os = drivers::os_folders(&crate::drivers::target_of(&w));
            (os, drivers::arch_folder(w.arch).to_owned())
        }
        (None, None) => {
            if args.json {
                return super::print_json(&Folders {
                    iso: &got,
                    folders: &folders,
                });
            }
            for f in &folders {
                println!("{f}");
            }
            return Ok(());
        }
    };
    let picks = drivers::pick(&folders, &os, &arch);
    if args.json {
        return super::print_json(&Picks {
            iso: &got,
            os: &os,
            arch: &arch,
            drivers: &picks,
        });
    }
    if picks.is_empty() {
        println!(
            "no driver folders for {}/{arch} on virtio-win {}",
            os.join(" or "),
            got.version
        );
    }
    for p in &picks {
        println!(
            "{:<14} {}{}",
            p.driver,
            p.folder,
            if p.alias { "  (alias)" } else { "" }
        );
    }
    Ok(())
}

/// `fetch --list-drivers --json`: the ISO and every driver folder on it.
#[derive(serde::Serialize)]
struct Folders<'a, F: serde::Serialize> {
    iso: &'a virtio::fetch::Fetched,
    folders: &'a [F],
}

/// `fetch --list-drivers --for … --json`: the folders picked for one Windows.
#[derive(serde::Serialize)]
struct Picks<'a, P: serde::Serialize> {
    iso: &'a virtio::fetch::Fetched,
    os: &'a [String],
    arch: &'a str,
    drivers: &'a [P],
}
