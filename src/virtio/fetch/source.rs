//! Where the ISO comes from: stable, latest, a version (checked against the known
//! table shipped in `assets/virtio-win-known.toml`) or a URL.

use super::{Error, DIRECT_DOWNLOADS, KNOWN};
use serde::Deserialize;
/// Where the ISO comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Stable,
    Latest,
    Version(String),
    Url(String),
}

#[derive(Debug, Deserialize)]
pub(super) struct KnownTable {
    pub(super) iso: Vec<KnownIso>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct KnownIso {
    pub(super) version: String,
    pub(super) release: u32,
    pub(super) sha256: String,
}

pub(super) fn known() -> Vec<KnownIso> {
    toml::from_str::<KnownTable>(KNOWN)
        .expect("assets/virtio-win-known.toml parses (unit-tested)")
        .iso
}

/// `0.1.NNN`, checked.
pub fn check_version(v: &str) -> Result<(), Error> {
    let ok = v
        .strip_prefix("0.1.")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(Error::BadVersion(v.to_owned()))
    }
}

impl Source {
    pub fn url(&self) -> Result<String, Error> {
        Ok(match self {
            Source::Stable => format!("{DIRECT_DOWNLOADS}/stable-virtio/virtio-win.iso"),
            Source::Latest => format!("{DIRECT_DOWNLOADS}/latest-virtio/virtio-win.iso"),
            Source::Version(v) => {
                check_version(v)?;
                let release = known()
                    .into_iter()
                    .find(|k| &k.version == v)
                    .map(|k| k.release)
                    .unwrap_or(1);
                format!(
                    "{DIRECT_DOWNLOADS}/archive-virtio/virtio-win-{v}-{release}/virtio-win-{v}.iso"
                )
            }
            Source::Url(u) => {
                if !(u.starts_with("http://")
                    || u.starts_with("https://")
                    || u.starts_with("file://"))
                {
                    return Err(Error::BadUrl(u.clone()));
                }
                u.clone()
            }
        })
    }
}
