//! Seed media for in-guest agents (cloud-init, cloudbase-init): a small ISO 9660
//! image with Joliet names, written by hand, deterministic (no clock in it).
//!
//! - NoCloud: volume `cidata`, `meta-data` (instance-id, local-hostname), and the
//!   user's `user-data` and `network-config` when given;
//! - OpenStack config drive: volume `config-2`,
//!   `openstack/latest/meta_data.json`, `network_data.json`, and `user_data`
//!   when given.
//!
//! The image itself is `media::iso9660`'s.

#![deny(unsafe_code)]

use serde::Serialize;

pub use crate::media::iso9660::image as iso;

/// Which agent a seed is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedKind {
    /// cloud-init's NoCloud (cloudbase-init reads it too).
    NoCloud,
    /// An OpenStack config drive (cloudbase-init's default, cloud-init too).
    ConfigDrive,
}

/// What goes into a clone's seed.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: SeedKind,
    /// The user's `user-data` (cloud-config or a script), as given.
    pub user_data: Option<Vec<u8>>,
    /// The user's network configuration: `network-config` (NoCloud, YAML) or
    /// `network_data.json` (config drive).
    pub network: Option<Vec<u8>>,
}

/// The files of a seed: (path with `/`, bytes), and its volume id.
pub fn files(
    req: &Request,
    instance_id: &str,
    hostname: &str,
) -> (&'static str, Vec<(String, Vec<u8>)>) {
    let mut out = Vec::new();
    match req.kind {
        SeedKind::NoCloud => {
            out.push((
                "meta-data".to_owned(),
                format!("instance-id: {instance_id}\nlocal-hostname: {hostname}\n").into_bytes(),
            ));
            if let Some(u) = &req.user_data {
                out.push(("user-data".to_owned(), u.clone()));
            }
            if let Some(n) = &req.network {
                out.push(("network-config".to_owned(), n.clone()));
            }
            ("cidata", out)
        }
        SeedKind::ConfigDrive => {
            let meta = serde_json::json!({
                "uuid": instance_id,
                "hostname": hostname,
                "name": hostname,
                "launch_index": 0,
                "availability_zone": "nova",
            });
            out.push((
                "openstack/latest/meta_data.json".to_owned(),
                serde_json::to_vec_pretty(&meta).expect("json"),
            ));
            out.push((
                "openstack/latest/network_data.json".to_owned(),
                req.network.clone().unwrap_or_else(|| {
                    br#"{"links": [], "networks": [], "services": []}"#.to_vec()
                }),
            ));
            if let Some(u) = &req.user_data {
                out.push(("openstack/latest/user_data".to_owned(), u.clone()));
            }
            ("config-2", out)
        }
    }
}
