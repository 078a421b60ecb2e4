//! The map in ARCHITECTURE.md, checked against the code: which layer uses which
//! (no arrow back up), who may print, and that every layer the code has is on the
//! map. The table below is the "may use" column of ARCHITECTURE.md; change both
//! together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each layer and the layers it may use (`error` is open to all).
const MAY_USE: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("note", &[]),
    ("fsutil", &[]),
    ("input", &[]),
    ("interrupt", &[]),
    ("confine", &["interrupt"]),
    ("net", &[]),
    ("media", &["fsutil", "input"]),
    ("unattend", &["media"]),
    ("image", &["fsutil"]),
    ("ntfs", &["image"]),
    ("hive", &["fsutil"]),
    ("reg", &["hive"]),
    ("guest", &["image", "ntfs", "hive", "reg"]),
    ("virtio", &["fsutil", "input", "net", "media"]),
    ("drivers", &["fsutil", "guest", "hive", "reg", "virtio"]),
    ("launch", &[]),
    ("firstboot", &["fsutil", "guest", "hive", "input", "reg"]),
    (
        "golden",
        &[
            "fsutil",
            "input",
            "interrupt",
            "image",
            "ntfs",
            "hive",
            "reg",
            "guest",
            "virtio",
            "drivers",
            "launch",
            "firstboot",
            "media",
            "unattend",
        ],
    ),
    ("registry", &["input", "net"]),
    (
        "publish",
        &["fsutil", "input", "image", "golden", "registry"],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The Rust files of a layer: `src/NAME.rs` or everything under `src/NAME/`.
fn files_of(layer: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{layer}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut out = Vec::new();
    let mut stack = vec![src().join(layer)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// Code without comments (line comments and doc comments), so that prose may
/// name any layer.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal is rare in this code base and would
            // only hide code from the check, never invent a use.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The layers a file names through `crate::NAME` or `use crate::{NAME, …}`.
fn layers_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of a grouped use: split at depth-0 commas.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(head(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.insert(head(&item));
        } else {
            out.insert(head(rest));
        }
    }
    out.remove("");
    out
}

fn head(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn no_layer_uses_one_it_may_not() {
    let known: BTreeSet<&str> = MAY_USE.iter().map(|(l, _)| *l).collect();
    let mut wrong = BTreeMap::new();
    for (layer, may) in MAY_USE {
        for file in files_of(layer) {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            for used in layers_used(&text) {
                let allowed = used == *layer
                    || used == "error"
                    || used == "note"
                    || may.contains(&used.as_str())
                    || !known.contains(used.as_str()) && used != "cli";
                if !allowed {
                    wrong
                        .entry(format!(
                            "{} uses {used}",
                            file.strip_prefix(src()).unwrap().display()
                        ))
                        .or_insert(());
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layers used against ARCHITECTURE.md: {:?}",
        wrong.keys().collect::<Vec<_>>()
    );
}

#[test]
fn every_layer_of_the_code_is_on_the_map() {
    let map =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    let mut layers: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_owned();
            (p.is_dir() || p.extension().is_some_and(|x| x == "rs")).then_some(name)
        })
        .filter(|n| n != "lib" && n != "main")
        .collect();
    layers.sort();
    layers.dedup();
    for layer in &layers {
        assert!(
            map.contains(&format!("| `{layer}` |")) || map.contains(&format!("| `{layer}` (")),
            "src/{layer} is not in ARCHITECTURE.md's table of layers"
        );
        assert!(
            layer == "cli" || MAY_USE.iter().any(|(l, _)| l == layer),
            "src/{layer} has no row in this test's table"
        );
    }
}

#[test]
fn only_the_command_line_prints() {
    // Lower layers hand notes up; `cli` (and main) decide what reaches the
    // terminal. libntfs-3g's own log lines are the one exception: they are
    // printed by the NTFS layer's logger only when WINGOLD_NTFS_DEBUG asks.
    let mut printing = Vec::new();
    for (layer, _) in MAY_USE {
        for file in files_of(layer) {
            let text = code(&std::fs::read_to_string(&file).unwrap());
            for (n, line) in text.lines().enumerate() {
                if ["println!", "eprintln!", "print!(", "eprint!("]
                    .iter()
                    .any(|m| line.contains(m))
                {
                    printing.push(format!(
                        "{}:{}",
                        file.strip_prefix(src()).unwrap().display(),
                        n + 1
                    ));
                }
            }
        }
    }
    printing.retain(|p| !p.starts_with("ntfs/log.rs:"));
    assert!(printing.is_empty(), "lower layers print: {printing:?}");
}

#[test]
fn unsafe_code_stays_where_the_map_puts_it() {
    // Every module but the FFI layers denies unsafe code at its top; the one
    // `allow` is the link-time table entry `error::classify!` writes.
    let ffi = ["ntfs", "hive", "interrupt", "confine"];
    let mut missing = Vec::new();
    let mut allowed = Vec::new();
    let mut tops = vec![src().join("main.rs"), src().join("cli/mod.rs")];
    for layer in MAY_USE.iter().map(|(l, _)| *l).chain(["cli"]) {
        let file = src().join(format!("{layer}.rs"));
        let top = if file.exists() {
            file
        } else {
            src().join(layer).join("mod.rs")
        };
        if !ffi.contains(&layer) && layer != "cli" {
            tops.push(top);
        }
        for f in files_of(layer) {
            let text = code(&std::fs::read_to_string(&f).unwrap());
            if text.contains("allow(unsafe_code)") && !f.ends_with("src/error.rs") {
                allowed.push(f.display().to_string());
            }
        }
    }
    for top in tops {
        let text = std::fs::read_to_string(&top).unwrap();
        if !text.contains("#![deny(unsafe_code)]") && !text.contains("#![forbid(unsafe_code)]") {
            missing.push(top.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "no unsafe_code lint at the top of: {missing:?}"
    );
    assert!(allowed.is_empty(), "unsafe code allowed in: {allowed:?}");
}

#[test]
fn no_source_file_is_over_600_lines() {
    // A file that long holds more than one idea: split it at its seams.
    let mut long = Vec::new();
    for layer in MAY_USE.iter().map(|(l, _)| *l).chain(["cli"]) {
        for f in files_of(layer) {
            let lines = std::fs::read_to_string(&f).unwrap().lines().count();
            if lines > 600 {
                long.push(format!("{} ({lines})", f.display()));
            }
        }
    }
    assert!(long.is_empty(), "over 600 lines: {long:?}");
}

/// One error type per layer answers `Classify` (and so the exit code): the
/// layer's `Error` or `Refusal`. Other error-like types of a layer are payloads
/// carried inside that one (`reg::Syntax`, `registry::BadReference`, …).
#[test]
fn each_layer_classifies_one_error_type() {
    let mut wrong = BTreeMap::new();
    for (layer, _) in MAY_USE.iter().chain([("cli", &[][..])].iter()) {
        let types: Vec<String> = files_of(layer)
            .iter()
            .flat_map(|f| {
                let text = code(&std::fs::read_to_string(f).unwrap());
                text.split("impl Classify for ")
                    .skip(1)
                    .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
                    // The macro's own pattern in `error`.
                    .filter(|name| !name.starts_with('$'))
                    .collect::<Vec<_>>()
            })
            .collect();
        if types.len() > 1 {
            wrong.insert(*layer, types);
        }
    }
    assert!(
        wrong.is_empty(),
        "layers with more than one error type: {wrong:?}"
    );
}
