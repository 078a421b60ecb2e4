//! An image's first-boot queue as `inspect` shows it.

use super::{ReadGuest, FOLDER, SERVICE};
use crate::guest::Windows;
use crate::hive::View;
use crate::reg::HiveName;
use serde::Serialize;

/// An image's queue, for `inspect`: pending, done, failed, and the log's tail.
#[derive(Debug, Clone, Serialize)]
pub struct QueueState {
    pub pending: Vec<String>,
    pub done: Vec<String>,
    pub failed: Vec<String>,
    pub log_tail: Vec<String>,
    pub service_start: Option<u32>,
}

/// Reads the queue state through `list` (folder → file names) and `read_guest`.
pub fn queue_state(
    w: &Windows,
    system: &[u8],
    read_guest: &ReadGuest,
    list: &dyn Fn(&str) -> anyhow::Result<Option<Vec<String>>>,
) -> anyhow::Result<Option<QueueState>> {
    let root = w.system_root.trim_start_matches('\\');
    let dir = format!("{root}\\{FOLDER}");
    let Some(_) = list(&dir)? else {
        return Ok(None);
    };
    let names = |sub: &str| -> anyhow::Result<Vec<String>> {
        Ok(list(&format!("{dir}\\{sub}"))?
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.to_ascii_lowercase().ends_with(".cmd"))
            .collect())
    };
    let log = read_guest(&format!("{dir}\\log.txt"))?.unwrap_or_default();
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
    let log_tail = lines[lines.len().saturating_sub(10)..].to_vec();
    let sys = View::open(HiveName::System.name(), system)?;
    let service_start = sys
        .value(
            &format!("{}\\Services\\{SERVICE}", w.control_sets.current),
            "Start",
        )?
        .and_then(|v| v.as_dword());
    Ok(Some(QueueState {
        pending: names("queue")?,
        done: names("done")?,
        failed: names("failed")?,
        log_tail,
        service_start,
    }))
}
