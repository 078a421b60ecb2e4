//! The plan of an inject, step by step: the .reg files parsed before any image
//! is opened, Windows found on one read-only mount, the volume checked, the
//! planners (identity, drivers, first boot) run on the hives detection read,
//! the edits run on those same bytes, and the room the writes need checked.

use super::{
    files, refuse_unbootable, LogsReplayed, Plan, Report, Source, SourceSpec, WindowsSummary,
};
use crate::drivers;
use crate::firstboot;
use crate::golden::files::FilePlan;
use crate::golden::identity;
use crate::golden::Refusal;
use crate::guest::{self, Windows};
use crate::hive;
use crate::image::{self, Access};
use crate::ntfs::Volume;
use crate::reg::{self, profiles, Change, HiveName, RegEdit};
use anyhow::Context;
use std::borrow::Cow;
use std::path::Path;

/// Parses every source, finds Windows, checks it is safe to write, and runs the
/// edits on copies of its hives. Writes nothing.
pub fn plan(
    image_path: &Path,
    specs: &[SourceSpec],
    partition: Option<u32>,
    force: bool,
    driver_request: Option<&drivers::Request>,
    first_boot_request: Option<&firstboot::Request>,
    identity_request: Option<&identity::Request>,
) -> anyhow::Result<Plan> {
    if specs.is_empty()
        && identity_request.is_none()
        && driver_request.is_none()
        && first_boot_request.is_none_or(|r| r.is_empty())
    {
        return Err(Refusal::NothingToApply.into());
    }
    // Syntax first, before touching any image (the family only picks profile
    // variants): each .reg file is read and parsed once, here.
    let parsed = parse_regfiles(specs)?;
    let driver_request = with_vioserial(driver_request, first_boot_request);
    let requests = Requests {
        drivers: driver_request.as_deref(),
        first_boot: first_boot_request,
        identity: identity_request,
    };
    let input = image::open(image_path, Access::ReadOnly)?;
    // One read-only mount, the one Windows was found on: refuse an unsafe volume
    // before any output exists, then plan from the hives detection read.
    guest::with_windows(&input, image_path, partition, |found| {
        let guest::Found {
            windows: w,
            vol,
            system,
            software,
        } = found;
        let family = profiles::Family::of(w.major_version);
        let (sources, mut edits, first_boot) = load_sources(specs, family, parsed)?;
        reg::check_roots(&edits, &w.control_sets)?;
        let checked = vol.refuse_unsafe()?;
        // The agent's own refusal before the drivers it would bring along.
        if first_boot_request.is_some_and(|r| r.guest_agent_iso.is_some()) {
            firstboot::refuse_guest_agent(&w)?;
        }
        let mut hives = AtHand {
            w: &w,
            system: Some(system),
            software: Some(software),
            edited: None,
        };
        let tcpip = sources
            .iter()
            .any(|s| matches!(s, Source::Profile { name, .. } if name == "tcpip"));
        let planned = requests.plan(vol, &w, tcpip, &mut hives, &mut edits)?;
        let results = reg::apply(&edits, &w.control_sets, |hive| {
            hives
                .take(hive)
                .unwrap_or_else(|| guest::read_hive_to_edit(vol, &w, hive))
                .map_err(|e| reg::Error::load(hive, e))
        })?;
        let files = planned
            .files
            .filter(|f| !f.writes.is_empty() || !f.folders.is_empty());
        let bytes_needed =
            files.as_ref().map_or(0, FilePlan::bytes_needed) + hive_growth(vol, &w, &results)?;
        files::refuse_full_volume(vol, &w, image_path, bytes_needed)?;
        if !force {
            refuse_unbootable(&edits, &results)?;
        }
        // The changes move into the report (a large .reg makes hundreds of thousands).
        let mut results = results;
        let changes: Vec<Change> = results
            .iter_mut()
            .flat_map(|r| std::mem::take(&mut r.changes))
            .collect();
        let report = Report {
            image: image_path.to_owned(),
            output: None,
            in_place: false,
            dry_run: true,
            windows: WindowsSummary {
                product_name: w.product_name.clone(),
                version: w.version.clone(),
                osinfo: w.osinfo.clone(),
                arch: w.arch.to_owned(),
                family,
                control_sets: w
                    .control_sets
                    .edited()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            },
            sources,
            changes,
            hives_written: Vec::new(),
            logs_replayed: logs_replayed(&w, &results),
            logs_truncated: Vec::new(),
            first_boot_commands: first_boot,
            drivers: planned.drivers,
            first_boot: planned.first_boot,
            identity: planned.identity,
            verified: false,
            nothing_written: false,
        };
        anyhow::Ok(Plan {
            windows: w,
            report,
            results,
            forced: force,
            files,
            checked: Some(checked),
        })
    })
}

/// Every .reg file given, read and parsed, in order.
fn parse_regfiles(specs: &[SourceSpec]) -> anyhow::Result<Vec<Vec<RegEdit>>> {
    let mut parsed = Vec::new();
    for src in specs {
        if let SourceSpec::Reg(path) = src {
            let bytes = crate::input::read(path, crate::input::REG)?;
            let (_, edits) = reg::parse(&bytes, &path.display().to_string())?;
            parsed.push(edits);
        }
    }
    Ok(parsed)
}

/// The driver request, with vioserial added when the guest agent is asked for:
/// the agent talks through it.
fn with_vioserial<'a>(
    drivers: Option<&'a drivers::Request>,
    first_boot: Option<&firstboot::Request>,
) -> Option<Cow<'a, drivers::Request>> {
    let req = drivers?;
    let agent = first_boot.is_some_and(|f| f.guest_agent_iso.is_some());
    let has = req
        .extra
        .iter()
        .any(|d| d.eq_ignore_ascii_case("vioserial"));
    Some(if agent && !has {
        Cow::Owned(drivers::Request {
            extra: [req.extra.clone(), vec!["vioserial".to_owned()]].concat(),
            ..req.clone()
        })
    } else {
        Cow::Borrowed(req)
    })
}

/// The SYSTEM and SOFTWARE hives detection read through their logs: handed,
/// ready to edit, to the planners and then to the edits, so that each is read
/// once.
struct AtHand<'w> {
    w: &'w Windows,
    system: Option<guest::HiveBytes>,
    software: Option<guest::HiveBytes>,
    /// Both, ready to edit, once a planner asked for them.
    edited: Option<files::Hives>,
}

impl AtHand<'_> {
    /// Both hives ready to edit (a dirty one is refused here).
    fn for_planners(&mut self) -> anyhow::Result<&files::Hives> {
        if self.edited.is_none() {
            let take = |h: &mut Option<guest::HiveBytes>, name| {
                guest::to_edit(self.w, name, h.take().expect("taken only here"))
            };
            self.edited = Some(files::Hives {
                system: take(&mut self.system, HiveName::System)?,
                software: take(&mut self.software, HiveName::Software)?,
            });
        }
        Ok(self.edited.as_ref().expect("set above"))
    }

    /// Hive `name`'s bytes for the edits, once; None for a hive not at hand.
    fn take(&mut self, name: HiveName) -> Option<Result<Vec<u8>, guest::Error>> {
        if let Some(h) = self.edited.as_mut() {
            return match name {
                HiveName::System => Some(Ok(std::mem::take(&mut h.system))),
                HiveName::Software => Some(Ok(std::mem::take(&mut h.software))),
                _ => None,
            };
        }
        let read = match name {
            HiveName::System => self.system.take(),
            HiveName::Software => self.software.take(),
            _ => None,
        }?;
        Some(guest::to_edit(self.w, name, read))
    }
}

/// The planners asked for.
struct Requests<'a> {
    drivers: Option<&'a drivers::Request>,
    first_boot: Option<&'a firstboot::Request>,
    identity: Option<&'a identity::Request>,
}

/// What the planners made: the files to write and their reports.
#[derive(Default)]
struct Planned {
    files: Option<FilePlan>,
    drivers: Option<drivers::Report>,
    first_boot: Option<firstboot::Report>,
    identity: Option<identity::Report>,
}

impl Requests<'_> {
    /// Runs the identity, driver and first-boot planners on the hives at hand;
    /// their registry edits join `edits`, their files one plan.
    fn plan(
        &self,
        vol: &Volume,
        w: &Windows,
        tcpip: bool,
        hives: &mut AtHand,
        edits: &mut Vec<RegEdit>,
    ) -> anyhow::Result<Planned> {
        if self.drivers.is_none() && self.first_boot.is_none() && self.identity.is_none() {
            return Ok(Planned::default());
        }
        let h = hives.for_planners()?;
        let mut f = FilePlan::empty();
        let mut planned = Planned::default();
        if let Some(req) = self.identity {
            let system = hive::View::open(HiveName::System.name(), &h.system)?;
            let software = hive::View::open(HiveName::Software.name(), &h.software)?;
            // NT 5's mini-setup answer file, when the folder is there.
            let sysprep = match vol.lookup("sysprep")? {
                None => None,
                Some(_) => Some(match vol.lookup(identity::SYSPREP_INF)? {
                    Some(_) => vol.read_file(identity::SYSPREP_INF)?,
                    None => Vec::new(),
                }),
            };
            let p = identity::plan(w, &system, &software, sysprep.as_deref(), req)?;
            edits.extend(p.edits);
            if let Some((path, data)) = p.answer_file {
                if f.time == 0 {
                    f.time = files::hive_time(&h.system);
                }
                files::plan_answer_file(vol, &path, data, &mut f)?;
            }
            planned.identity = Some(p.report);
        }
        if let Some(req) = self.drivers {
            let p = files::plan_drivers(vol, w, h, req, &mut f)?;
            edits.extend(p.edits);
            planned.drivers = Some(p.report);
        }
        if let Some(req) = self.first_boot {
            let mut req = req.clone();
            req.steps = files::builtin_steps(w, tcpip, planned.drivers.as_ref());
            if !req.is_empty() {
                let p = files::plan_first_boot(vol, w, h, &req, &mut f)?;
                edits.extend(p.edits);
                planned.first_boot = Some(p.report);
            }
        }
        planned.files = Some(f);
        Ok(planned)
    }
}

/// What the edited hives gain over their files, in 4 KiB clusters: they grow
/// in place, and count with the files.
fn hive_growth(vol: &Volume, w: &Windows, results: &[reg::HiveResult]) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for r in results {
        if let Some(new) = &r.bytes {
            let old = vol.file_size(&w.hive_path(r.hive))?;
            bytes += (new.len() as u64).saturating_sub(old).div_ceil(4096) * 4096;
        }
    }
    Ok(bytes)
}

/// The dirty hives the edits reach, which were read through their logs.
fn logs_replayed(w: &Windows, results: &[reg::HiveResult]) -> Vec<LogsReplayed> {
    results
        .iter()
        .filter(|r| r.bytes.is_some())
        .filter_map(|r| match &w.hive_file(r.hive)?.log_state {
            guest::LogState::Replayable(rp) => Some(LogsReplayed {
                hive: w.hive_path(r.hive),
                logs: rp
                    .logs
                    .iter()
                    .filter(|l| l.applied > 0)
                    .map(|l| l.name.clone())
                    .collect(),
                entries: rp.applied,
                first_sequence: rp.first_sequence,
                last_sequence: rp.last_sequence,
            }),
            _ => None,
        })
        .collect()
}

/// The edits of every source in order: profiles for `family`, `.reg` files from
/// `parsed` (parsed before the image was opened, in the same order); a bad profile
/// name is bad input.
fn load_sources(
    order: &[SourceSpec],
    family: profiles::Family,
    parsed: Vec<Vec<RegEdit>>,
) -> anyhow::Result<(Vec<Source>, Vec<RegEdit>, Vec<String>)> {
    let mut parsed = parsed.into_iter();
    let mut sources = Vec::new();
    let mut edits = Vec::new();
    let mut first_boot = Vec::new();
    for src in order {
        match src {
            SourceSpec::Profile(name) => {
                let chosen: Vec<&profiles::Profile> = if name == profiles::ALL {
                    profiles::PROFILES.iter().collect()
                } else {
                    vec![profiles::find(name).ok_or_else(|| Refusal::UnknownProfile {
                        name: name.clone(),
                        known: profiles::PROFILES.iter().map(|p| p.name).collect(),
                    })?]
                };
                for p in chosen {
                    edits.extend(
                        p.edits(family)
                            .context("a built-in profile does not parse")?,
                    );
                    first_boot.extend(p.first_boot(family).iter().map(|s| s.to_string()));
                    sources.push(Source::Profile {
                        name: p.name.to_owned(),
                        file: p.regfile(family).0.to_owned(),
                    });
                }
            }
            SourceSpec::Reg(path) => {
                edits.extend(parsed.next().context("a .reg file was not parsed first")?);
                sources.push(Source::Reg { file: path.clone() });
            }
        }
    }
    Ok((sources, edits, first_boot))
}
