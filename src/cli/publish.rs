//! `wingold publish`: arguments and output; the work is `publish`.

use super::Invalid;
use crate::publish::{self, Options};
use crate::registry::Credentials;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The golden image (its stable name or a version) with its manifest beside it.
    golden: PathBuf,
    /// Where: docker://HOST[:PORT]/REPO[:TAG].
    to: Option<String>,
    /// Another tag for the same image (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Plain HTTP for this registry's host (TLS otherwise).
    #[arg(long)]
    insecure: bool,
    /// A CA certificate (PEM) to trust for the registry.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The user name (the password comes from --password-stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Also (or only) write the image as an OCI image layout in DIR.
    #[arg(long, value_name = "DIR")]
    oci_layout: Option<PathBuf>,
    /// The image's creation time (RFC 3339); none is recorded without it.
    #[arg(long, value_name = "RFC3339")]
    created: Option<String>,
    /// The KubeVirt preference: auto (from the Windows found), a name, or none.
    #[arg(long, default_value = "auto")]
    preference: String,
    /// Upload in 4 MiB PATCH chunks instead of one streamed PUT (for proxies that
    /// limit request sizes).
    #[arg(long)]
    chunked: bool,
    /// Seconds a registry may take to answer one request (uploads get more, in
    /// proportion to their size); a registry that stops answering ends the
    /// publish instead of hanging it.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Compute digests and print what would be published; upload nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PublishArgs) -> anyhow::Result<()> {
    let credentials = match (&args.username, args.password_stdin) {
        (Some(u), true) => {
            // One line, read up to 64 KiB (no password is longer; `< /dev/zero`
            // must not read until memory runs out).
            use std::io::{BufRead, Read};
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .take(64 << 10)
                .read_line(&mut line)?;
            if line.len() >= 64 << 10 && !line.ends_with('\n') {
                return Err(Invalid::LongPassword.into());
            }
            let password = line.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() {
                return Err(Invalid::NoPassword.into());
            }
            Some(Credentials {
                username: u.clone(),
                password,
            })
        }
        _ => None,
    };
    let o = Options {
        golden: args.golden,
        to: args
            .to
            .as_deref()
            .map(crate::registry::parse_reference)
            .transpose()
            .map_err(crate::registry::Error::from)?,
        tags: args.tags,
        insecure: args.insecure,
        ca_cert: args.ca_cert,
        credentials,
        oci_layout: args.oci_layout,
        created: args.created,
        preference: args.preference,
        chunked: args.chunked,
        timeout: Some(std::time::Duration::from_secs(args.timeout)),
        dry_run: args.dry_run,
    };
    let out = publish::publish(&o)?;
    if args.json {
        return super::print_json(&out);
    }
    match &out.reference {
        Some(r) => println!("{r}"),
        None => println!("{}", out.digest),
    }
    println!(
        "  tags: {}; {} bytes uploaded{}",
        out.tags.join(", "),
        out.bytes_uploaded,
        if out.dry_run { " (dry run)" } else { "" }
    );
    for l in &out.layers {
        println!(
            "  layer {} ({} bytes){}",
            l.digest,
            l.size,
            if l.uploaded {
                ", uploaded"
            } else {
                ", already there"
            }
        );
    }
    if let Some(dir) = &out.oci_layout {
        println!("  OCI layout: {}", dir.display());
    }
    if let Some(k) = &out.kubevirt {
        print!(
            "KubeVirt containerDisk:\n{}CDI DataVolume:\n{}",
            k["containerDisk"].as_str().unwrap_or(""),
            k["dataVolume"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
