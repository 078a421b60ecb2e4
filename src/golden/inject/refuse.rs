//! What `inject` refuses before writing: edits that leave Windows without its
//! control set, and writing into a golden version in place.

use super::{HiveName, Refusal, RegEdit};
use crate::hive;
use crate::reg;
use std::path::Path;
/// Refuses edits after which Windows cannot find its control set: `Select` gone,
/// its `Current` or `Default` not a DWORD, or naming a `ControlSet00N` that is not
/// there (deleting `CurrentControlSet` deletes the current set). The message names
/// the last edit that touched `Select` or a control set, with its line.
pub(super) fn refuse_unbootable(
    edits: &[RegEdit],
    results: &[reg::HiveResult],
) -> anyhow::Result<()> {
    let Some(system) = results
        .iter()
        .find(|r| r.hive == HiveName::System)
        .and_then(|r| r.bytes.as_ref())
    else {
        return Ok(());
    };
    let touches = |e: &&RegEdit| {
        let key = hive::fold_name(e.op.key());
        let rest = key
            .strip_prefix("HKEY_LOCAL_MACHINE\\SYSTEM")
            .or_else(|| key.strip_prefix("HKLM\\SYSTEM"));
        match rest {
            Some("") => true,
            Some(r) => {
                let first = r.trim_start_matches('\\').split('\\').next().unwrap_or("");
                first == "SELECT"
                    || (matches!(e.op, reg::Op::DeleteKey { .. })
                        && (first == "CURRENTCONTROLSET" || first.starts_with("CONTROLSET")))
            }
            None => false,
        }
    };
    // Only an edit of `Select`, or deleting a control set (or the whole hive),
    // can leave Windows without its control set: without one, nothing to read.
    if !edits.iter().any(|e| touches(&e)) {
        return Ok(());
    }
    let h = hive::View::open(HiveName::System.name(), system)?;
    let problem = (|| -> anyhow::Result<Option<String>> {
        if !h.has_key("Select")? {
            return Ok(Some("the `Select` key is gone".into()));
        }
        for name in ["Current", "Default"] {
            let set = match h.value("Select", name)? {
                Some(v) if v.kind == 4 && v.data.len() == 4 => {
                    u32::from_le_bytes(v.data[..4].try_into().expect("4 bytes"))
                }
                Some(_) => return Ok(Some(format!("`Select\\{name}` is not a DWORD"))),
                None => return Ok(Some(format!("`Select\\{name}` is gone"))),
            };
            let key = format!("ControlSet{set:03}");
            if !h.has_key(&key)? {
                return Ok(Some(format!(
                    "`Select\\{name}` names {key}, which is not there"
                )));
            }
        }
        Ok(None)
    })()?;
    let Some(problem) = problem else {
        return Ok(());
    };
    let culprit = edits
        .iter()
        .rev()
        .find(touches)
        .map(|e| format!("{}:{}", e.file, e.line));
    Err(Refusal::Unbootable { culprit, problem }.into())
}

/// Refuses to write into a golden version in place: clones rest on its bytes, and
/// a version is never rewritten.
pub fn refuse_golden_version(image: &Path) -> anyhow::Result<()> {
    let Ok(canonical) = std::fs::canonicalize(image) else {
        return Ok(());
    };
    match crate::golden::manifest::read_manifest(&canonical) {
        Some(m) if std::fs::canonicalize(&m.output.path).ok() == Some(canonical.clone()) => {
            Err(Refusal::GoldenVersion {
                image: image.to_owned(),
                version: canonical,
            }
            .into())
        }
        _ => Ok(()),
    }
}
