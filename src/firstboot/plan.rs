//! The plan, step by step: the queue's entries (built-in steps, the NIC
//! watchdog, the guest agent, the user's scripts), what already ran, the runner
//! and its service when anything is queued, copied-in trees, and what the guest
//! already has.

use super::{
    copy_in, crlf, mtime, queue_stem, service_edits, system_root_with_drive, AgentMsi, FileAction,
    GuestFile, HashGuest, Plan, Queued, ReadGuest, Refusal, Report, Request, ServiceReport, Step,
    Watchdog, FOLDER, GUEST_AGENT, NIC_RESET_VBS, NIC_WATCHDOG, NIC_WATCHDOG_TASK,
    NIC_WATCHDOG_TASK_NT5, RHSRVANY, RUNNER, SERVICE,
};
use crate::guest::Windows;
use crate::reg::Edits;
use std::path::{Path, PathBuf};

/// Computes the plan; refusals are bad input naming the file. `agent`: the
/// guest agent's MSI, read by the caller off `req.guest_agent_iso`.
pub fn plan(
    w: &Windows,
    req: &Request,
    agent: Option<AgentMsi>,
    software: &[u8],
    read_guest: &ReadGuest,
    hash_guest: &HashGuest,
    fold: &crate::guest::files::NameFold,
) -> anyhow::Result<Plan> {
    let guest_dir = format!("{}\\{FOLDER}", system_root_with_drive(w, software)?);
    let mut b = Builder::new(w);

    // Queue entries, in order: built-ins by priority, then the user's scripts.
    b.built_in(&req.steps);
    if let Some(wd) = &req.nic_watchdog {
        b.nic_watchdog(wd)?;
    }
    if let Some(msi) = agent {
        b.guest_agent(msi)?;
    }
    b.user_scripts(&req.scripts, read_guest)?;
    let queue = b.enqueue(read_guest)?;

    // The runner and its service, when anything is queued.
    let mut edits = Edits::new("first boot".into());
    let service = if queue.is_empty() {
        None
    } else {
        Some(b.service(req.service_binary.as_deref(), &guest_dir, &mut edits)?)
    };

    // Copied-in trees.
    for (local, guest) in &req.copy_in {
        copy_in::copy_in(local, guest, &b.root, fold, &mut b.files, &mut b.folders)?;
    }

    // Idempotence: what is there with the same bytes is left alone.
    for f in &mut b.files {
        f.action = match hash_guest(&f.to)? {
            None => FileAction::New,
            Some(old) if old == f.sha256 => FileAction::Unchanged,
            Some(_) => FileAction::Replaced,
        };
    }
    let mut seen = std::collections::BTreeSet::new();
    b.folders.retain(|f| seen.insert(fold(f)));
    Ok(Plan {
        report: Report {
            folder: guest_dir,
            service,
            queue,
            files: b.files,
            folders: b.folders,
            notes: b.notes,
        },
        edits: edits.list,
    })
}

/// One queue entry before it is checked against what already ran.
struct Entry {
    name: String,
    source: String,
    data: Vec<u8>,
    time: Option<i64>,
}

/// The plan as it is put together.
struct Builder<'a> {
    w: &'a Windows,
    /// The system root without its leading `\` (`Windows`).
    root: String,
    /// The first-boot folder on the volume (`Windows\wingold\firstboot`).
    dir: String,
    entries: Vec<Entry>,
    files: Vec<GuestFile>,
    folders: Vec<String>,
    notes: Vec<String>,
}

impl<'a> Builder<'a> {
    fn new(w: &'a Windows) -> Self {
        let root = w.system_root.trim_start_matches('\\').to_owned();
        Builder {
            w,
            dir: format!("{root}\\{FOLDER}"),
            root,
            entries: Vec::new(),
            files: Vec::new(),
            folders: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn add(&mut self, to: String, from: String, data: Vec<u8>, time: Option<i64>) {
        self.files.push(GuestFile {
            size: data.len() as u64,
            sha256: crate::fsutil::sha256_hex(&data),
            action: FileAction::New,
            to,
            from,
            time,
            data,
            local: None,
        });
    }

    fn entry(&mut self, name: String, source: String, data: Vec<u8>, time: Option<i64>) {
        self.entries.push(Entry {
            name,
            source,
            data,
            time,
        });
    }

    /// The built-in steps, by priority, each once.
    fn built_in(&mut self, steps: &[Step]) {
        let mut steps = steps.to_vec();
        steps.sort_by_key(|s| s.priority());
        steps.dedup();
        for s in &steps {
            self.entry(
                format!("{}-{}.cmd", s.priority(), s.name()),
                format!("built-in step {}", s.name()),
                crlf(s.script()),
                None,
            );
        }
    }

    /// The watchdog script, the task that runs it, and on NT 5 the script that
    /// resets the adapter through the Network Connections folder.
    fn nic_watchdog(&mut self, wd: &Watchdog) -> anyhow::Result<()> {
        let w = self.w;
        // NT 5.0 (2000) has no Network Connections verbs to script; 5.1 and 5.2
        // reset through nic-reset.vbs, NT 6 through netsh or PowerShell.
        if w.major_version < 5 || (w.major_version == 5 && w.minor_version < 1) {
            return Err(Refusal::NoAdapterReset {
                product: w.product_name.clone(),
            }
            .into());
        }
        let target = wd.target.clone().unwrap_or_default();
        if !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        {
            return Err(Refusal::WatchdogTarget { target }.into());
        }
        if !(1..=100).contains(&wd.failures) {
            return Err(Refusal::WatchdogFailures {
                failures: wd.failures,
            }
            .into());
        }
        let script = NIC_WATCHDOG
            .replace("@TARGET@", &target)
            .replace("@LIMIT@", &wd.failures.to_string());
        let root = self.root.clone();
        self.add(
            format!("{root}\\wingold\\nic-watchdog.cmd"),
            "wingold NIC watchdog".into(),
            crlf(&script),
            None,
        );
        let task = if w.major_version < 6 {
            self.add(
                format!("{root}\\wingold\\nic-reset.vbs"),
                "wingold NIC reset (Windows Script Host)".into(),
                crlf(NIC_RESET_VBS),
                None,
            );
            NIC_WATCHDOG_TASK_NT5
        } else {
            NIC_WATCHDOG_TASK
        };
        self.entry(
            "5200-nic-watchdog.cmd".into(),
            "built-in step nic-watchdog".into(),
            crlf(task),
            None,
        );
        Ok(())
    }

    /// The guest agent's MSI staged, and the step that installs it.
    fn guest_agent(&mut self, msi: AgentMsi) -> anyhow::Result<()> {
        super::refuse_guest_agent(self.w)?;
        let step = crlf(&GUEST_AGENT.replace("@MSI@", &msi.name));
        self.add(
            format!("{}\\wingold\\{}", self.root, msi.name),
            msi.from,
            msi.data,
            None,
        );
        self.entry(
            "3000-guest-agent.cmd".into(),
            "built-in step guest-agent".into(),
            step,
            None,
        );
        Ok(())
    }

    /// The user's scripts, in the order given: `.cmd`/`.bat` queued as they
    /// are, `.ps1` staged beside a `.cmd` that runs it (refused without
    /// PowerShell in the guest).
    fn user_scripts(&mut self, scripts: &[PathBuf], read_guest: &ReadGuest) -> anyhow::Result<()> {
        let powershell = format!(
            "{}\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            self.root
        );
        let has_powershell = read_guest(&powershell)?.is_some();
        for (i, script) in scripts.iter().enumerate() {
            let shown = script.display().to_string();
            let ext = script
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            let meta = crate::input::check(script, false)?;
            let data = crate::input::read(script, crate::input::SCRIPT)?;
            let name = format!("{}-{}", 6000 + i, queue_stem(script));
            match ext.as_str() {
                "cmd" | "bat" => self.entry(format!("{name}.cmd"), shown, data, mtime(&meta)),
                "ps1" if !has_powershell => {
                    return Err(Refusal::NoPowerShell {
                        script: script.clone(),
                        product: self.w.product_name.clone(),
                    }
                    .into());
                }
                "ps1" => {
                    let sha = crate::fsutil::sha256_hex(&data);
                    let to = format!("{}\\scripts\\{name}.ps1", self.dir);
                    self.add(to, shown.clone(), data, mtime(&meta));
                    let wrapper = format!(
                        "@echo off\nrem wingold: runs {shown} under PowerShell, this script's policy bypassed\n\
                         rem sha256 {sha}\n\
                         powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File \"%~dp0..\\scripts\\{name}.ps1\"\n\
                         exit /b %errorlevel%\n"
                    );
                    self.entry(format!("{name}.cmd"), shown, crlf(&wrapper), mtime(&meta));
                }
                _ => {
                    return Err(Refusal::ScriptType {
                        script: script.clone(),
                    }
                    .into())
                }
            }
        }
        Ok(())
    }

    /// The entries into the queue folder, but those that already ran with the
    /// same bytes (in `done\` or `failed\`); one that changed since is queued
    /// again (the runner moves it over the old record).
    fn enqueue(&mut self, read_guest: &ReadGuest) -> anyhow::Result<Vec<Queued>> {
        let mut queue = Vec::new();
        for e in std::mem::take(&mut self.entries) {
            let mut before = None;
            for folder in ["done", "failed"] {
                if let Some(old) = read_guest(&format!("{}\\{folder}\\{}", self.dir, e.name))? {
                    before = Some(old == e.data);
                    break;
                }
            }
            match before {
                Some(true) => {
                    self.notes.push(format!(
                        "{} already ran on this image (done\\ or failed\\): not queued again",
                        e.name
                    ));
                    continue;
                }
                Some(false) => self.notes.push(format!(
                    "{} ran on this image before, and has changed since: queued again",
                    e.name
                )),
                None => {}
            }
            let to = format!("{}\\queue\\{}", self.dir, e.name);
            self.add(to, e.source.clone(), e.data, e.time);
            queue.push(Queued {
                name: e.name,
                source: e.source,
            });
        }
        Ok(queue)
    }

    /// The service binary (rhsrvany, or the one given), the runner, their
    /// folders and the service's registry edits.
    fn service(
        &mut self,
        binary: Option<&Path>,
        guest_dir: &str,
        edits: &mut Edits,
    ) -> anyhow::Result<ServiceReport> {
        let binary = binary.map_or_else(|| PathBuf::from(RHSRVANY), Path::to_owned);
        let bytes = match crate::input::read(&binary, crate::input::PROGRAM) {
            Ok(b) => b,
            Err(crate::input::Error::Unreadable { source, .. }) => {
                return Err(Refusal::NoServiceBinary { binary, source }.into())
            }
            Err(e) => return Err(e.into()),
        };
        let sha = crate::fsutil::sha256_hex(&bytes);
        let dir = self.dir.clone();
        self.add(
            format!("{dir}\\rhsrvany.exe"),
            binary.display().to_string(),
            bytes,
            None,
        );
        self.add(
            format!("{dir}\\firstboot.cmd"),
            "wingold runner".into(),
            crlf(RUNNER),
            None,
        );
        service_edits(edits, guest_dir);
        for f in [
            "wingold".to_owned(),
            FOLDER.to_owned(),
            format!("{FOLDER}\\queue"),
            format!("{FOLDER}\\done"),
            format!("{FOLDER}\\failed"),
            format!("{FOLDER}\\scripts"),
        ] {
            self.folders.push(format!("{}\\{f}", self.root));
        }
        Ok(ServiceReport {
            name: SERVICE.into(),
            binary,
            binary_sha256: sha,
            binary_origin: "Debian package rhsrvany (what virt-v2v installs)".into(),
        })
    }
}
