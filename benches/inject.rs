//! `make bench`: `wingold inject --profile all` on a 2 GiB qcow2 holding the real
//! 11 MiB SYSTEM hive, whole process, image I/O included, beside:
//! - `hivexregedit --merge` of the same settings into the already-extracted SYSTEM
//!   and SOFTWARE hives (the C library's floor: no image, no NTFS);
//! - libguestfs `virt-win-reg --merge` on the same image, when it is installed
//!   (it boots a helper VM; said so when it is not installed).
//!
//! Then large edits against `hivexregedit --merge` on the extracted SOFTWARE hive,
//! time and peak memory: 20,000 values into one key, 20,000 subkeys of one key
//! (libhivex adds keys one by one: tens of seconds and a hive of over a gigabyte,
//! so one round), and a 10 MB .reg.
//!
//! And the cost of confinement: the same inject with `WINGOLD_UNCONFINED=1` (the
//! work in wingold's own process, no fork, Landlock or seccomp), in the same rounds.
//!
//! Median of several rounds, side by side; ratios reported.

mod common;
use common::*;

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use std::process::Command;
use support::fixtures;
use wingold::reg::{profiles, Op};

const ROUNDS: usize = 7;

/// The settings of every NT 6 profile as .reg text for one hive, with
/// CurrentControlSet spelled ControlSet001 and every parent key spelled out, as
/// hivexregedit needs.
fn reg_for(hive: &str) -> String {
    let prefix = format!("HKEY_LOCAL_MACHINE\\{hive}\\");
    let mut out = String::from("Windows Registry Editor Version 5.00\n\n");
    let mut seen = std::collections::BTreeSet::new();
    for p in profiles::PROFILES {
        for e in p.edits(profiles::Family::Nt6).unwrap() {
            let Op::SetValue {
                key, name, data, ..
            } = &e.op
            else {
                continue;
            };
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let rest = rest.replacen("CurrentControlSet", "ControlSet001", 1);
            let parts: Vec<&str> = rest.split('\\').collect();
            for i in 1..=parts.len() {
                let k = parts[..i].join("\\");
                if seen.insert(k.clone()) {
                    out += &format!("[{prefix}{k}]\n\n");
                }
            }
            let n = u32::from_le_bytes(data[..4].try_into().unwrap());
            out += &format!("[{prefix}{rest}]\n\"{name}\"=dword:{n:08x}\n\n");
        }
    }
    out
}

fn main() {
    let dir = fresh_dir("bench-inject");
    eprintln!("bench: building a 2 GiB phony Windows Server 2022 disk");
    let w = fixtures::phony_2k22_2gib(&dir);
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));

    // The floor: the hives already extracted, merged in place by hivexregedit.
    let part = dir.join("part.raw");
    fixtures::extract_partition(&w.image, w.win_offset, w.win_size, &part);
    let mut extracted = Vec::new();
    for hive in ["SYSTEM", "SOFTWARE"] {
        let data = Command::new("ntfscat")
            .arg(&part)
            .arg(format!("/Windows/System32/config/{hive}"))
            .output()
            .unwrap()
            .stdout;
        let path = dir.join(hive);
        std::fs::write(&path, data).unwrap();
        let reg = dir.join(format!("{hive}.reg"));
        std::fs::write(&reg, reg_for(hive)).unwrap();
        extracted.push((hive, path, reg));
    }
    std::fs::remove_file(&part).unwrap();

    let (mut ours, mut floor, mut unconfined) = (vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let out = dir.join(format!("golden{round}.qcow2"));
        ours.push(secs(|| {
            run(Command::new(&wingold)
                .args(["inject", "--profile", "all", "--output"])
                .arg(&out)
                .arg(&w.image));
        }));
        std::fs::remove_file(&out).unwrap();
        unconfined.push(secs(|| {
            run(Command::new(&wingold)
                .env("WINGOLD_UNCONFINED", "1")
                .args(["inject", "--profile", "all", "--output"])
                .arg(&out)
                .arg(&w.image));
        }));
        std::fs::remove_file(&out).unwrap();
        let copies: Vec<(String, PathBuf, PathBuf)> = extracted
            .iter()
            .map(|(hive, path, reg)| {
                let copy = dir.join(format!("{hive}.round"));
                std::fs::copy(path, &copy).unwrap();
                (format!("HKEY_LOCAL_MACHINE\\{hive}"), copy, reg.clone())
            })
            .collect();
        floor.push(secs(|| {
            for (prefix, copy, reg) in &copies {
                run(Command::new("hivexregedit")
                    .args(["--merge", "--prefix", prefix])
                    .arg(copy)
                    .arg(reg));
            }
        }));
    }
    let (o, f, u) = (median(ours), median(floor), median(unconfined));
    println!("inject --profile all into a 2 GiB qcow2 with the real 11 MiB SYSTEM hive (median of {ROUNDS}):");
    println!(
        "  wingold inject (whole process, overlay, NTFS, verify)   {:>7.1} ms",
        o * 1000.0
    );
    println!(
        "  hivexregedit --merge on extracted SYSTEM + SOFTWARE    {:>7.1} ms",
        f * 1000.0
    );
    println!(
        "  ratio to the hivexregedit floor: {:.2}x   (target <= 1.5x)",
        o / f
    );
    println!(
        "  the same unconfined (WINGOLD_UNCONFINED=1)              {:>7.1} ms",
        u * 1000.0
    );
    println!(
        "  confinement's cost: confined / unconfined = {:.3}x   (target <= 1.10x)",
        o / u
    );
    let vwr = Command::new("virt-win-reg").arg("--version").output();
    match vwr {
        Ok(help) if help.status.success() => {
            let reg = dir.join("all.reg");
            std::fs::write(&reg, reg_for("SYSTEM") + &reg_for("SOFTWARE")[38..]).unwrap();
            let copy = dir.join("vwr.qcow2");
            run(Command::new("cp").arg(&w.image).arg(&copy));
            let t = secs(|| {
                run(Command::new("virt-win-reg")
                    .env("LIBGUESTFS_BACKEND", "direct")
                    .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
                    .arg("--merge")
                    .arg(&copy)
                    .arg(&reg));
            });
            println!(
                "  virt-win-reg --merge (one run)                         {:>7.1} ms",
                t * 1000.0
            );
            println!("  ratio virt-win-reg / wingold: {:.1}x", t / o);
        }
        _ => println!(
            "  virt-win-reg: not installed, so not measured (Debian libguestfs-tools, which \
             needs QEMU from bookworm-backports and a kernel in /boot here)"
        ),
    }
    let software = &extracted[1].1;
    let mut text = String::from(
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Many]\r\n",
    );
    for i in 0..20_000 {
        text += &format!("\"v{i:05}\"=dword:{i:08x}\r\n");
    }
    side_by_side(
        &dir,
        &wingold,
        &w.image,
        software,
        "20000 values into one key",
        &text,
        7,
    );

    // Subkeys: hivexregedit needs each parent spelled out before its children.
    let mut text = String::from(
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\ManyKeys]\r\n\r\n",
    );
    for i in 0..20_000 {
        text += &format!(
            "[HKEY_LOCAL_MACHINE\\SOFTWARE\\ManyKeys\\k{i:05}]\r\n\"v\"=dword:{i:08x}\r\n\r\n"
        );
    }
    side_by_side(
        &dir,
        &wingold,
        &w.image,
        software,
        "20000 subkeys of one key",
        &text,
        1,
    );

    // A 10 MB .reg: 7,800 keys under 200 groups, 21 values each.
    let mut text = String::from(
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Big]\r\n\r\n",
    );
    for g in 0..200 {
        text += &format!("[HKEY_LOCAL_MACHINE\\SOFTWARE\\Big\\Group{g:03}]\r\n\r\n");
    }
    let mut k = 0;
    while text.len() < 10_000_000 {
        text += &format!(
            "[HKEY_LOCAL_MACHINE\\SOFTWARE\\Big\\Group{:03}\\Key{k:05}]\r\n",
            k % 200
        );
        for j in 0..20 {
            text += &format!("\"Value{j:02}\"=\"some text value number {j} for key {k}\"\r\n");
        }
        let hex: Vec<String> = (0..64)
            .map(|b| format!("{:02x}", (b * 7 + k) % 256))
            .collect();
        text += &format!("\"Bin\"=hex:{}\r\n\r\n", hex.join(","));
        k += 1;
    }
    side_by_side(&dir, &wingold, &w.image, software, "a 10 MB .reg", &text, 3);
}

/// `text` as a .reg: wingold inject (whole process) beside hivexregedit --merge of
/// the same file into the extracted SOFTWARE hive; median time and peak memory
/// (GNU time) of `rounds` runs.
fn side_by_side(
    dir: &Path,
    wingold: &Path,
    image: &Path,
    software: &Path,
    what: &str,
    text: &str,
    rounds: usize,
) {
    let reg = dir.join("side.reg");
    std::fs::write(&reg, text).unwrap();
    let peak = peak_kib;
    let (mut ours, mut theirs, mut ours_kb, mut theirs_kb) = (vec![], vec![], 0, 0);
    for round in 0..rounds {
        let out = dir.join(format!("side{round}.qcow2"));
        ours.push(secs(|| {
            let o = run(Command::new("/usr/bin/time")
                .args(["-f", "peak-kb %M"])
                .arg(wingold)
                .args(["inject", "--reg"])
                .arg(&reg)
                .arg("--output")
                .arg(&out)
                .arg(image));
            ours_kb = ours_kb.max(peak(&o));
        }));
        std::fs::remove_file(&out).unwrap();
        let copy = dir.join("SOFTWARE.side");
        std::fs::copy(software, &copy).unwrap();
        theirs.push(secs(|| {
            let o = run(Command::new("/usr/bin/time")
                .args(["-f", "peak-kb %M", "hivexregedit", "--merge", "--prefix"])
                .arg("HKEY_LOCAL_MACHINE\\SOFTWARE")
                .arg(&copy)
                .arg(&reg));
            theirs_kb = theirs_kb.max(peak(&o));
        }));
    }
    let _ = std::fs::remove_file(dir.join("SOFTWARE.side"));
    let (o, t) = (median(ours), median(theirs));
    println!(
        "{what} ({} KB .reg, median of {rounds}):",
        text.len() / 1000
    );
    println!(
        "  wingold inject (whole process)            {:>8.1} ms, peak {} MiB",
        o * 1000.0,
        ours_kb / 1024
    );
    println!(
        "  hivexregedit --merge on extracted SOFTWARE {:>8.1} ms, peak {} MiB",
        t * 1000.0,
        theirs_kb / 1024
    );
    println!("  ratio: {:.2}x   (target <= 1.0x)", o / t);
}
