//! What inject refuses: exit code 2, one line naming the file and the reason, no
//! output (not even a temporary file), the input byte-identical.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use support::fixtures::{self, Entry, WindowsSpec, WIN2K22_X64};
use support::*;

struct Case {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    image: PathBuf,
}

fn case(spec: &WindowsSpec, extra: Vec<Entry>, tweak: impl FnOnce(&Path)) -> Case {
    let dir = tempdir();
    let w = fixtures::phony_windows_with(dir.path(), spec, extra, tweak);
    Case {
        dir: dir.path().to_owned(),
        image: w.image,
        _dir: dir,
    }
}

/// Runs inject with `args` after IMAGE and --output; checks the refusal contract and
/// returns the message.
fn refused(c: &Case, args: &[&str]) -> String {
    let before = sha256_file(&c.image);
    let listing = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let files_before = listing(&c.dir);
    let out = c.dir.join("golden.qcow2");
    let res = wingold()
        .args(["inject", s(&c.image), "--output", s(&out)])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "an output was left behind");
    assert_eq!(listing(&c.dir), files_before, "a file was left behind");
    assert_eq!(sha256_file(&c.image), before, "the input was written");
    err
}

fn reg_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn dirty_hive_is_refused() {
    let c = case(
        &WindowsSpec {
            system_hive: "SYSTEM_2",
            system_reg: None,
            ..WIN2K22_X64
        },
        vec![],
        |_| {},
    );
    let err = refused(&c, &["--profile", "crash-dump"]);
    assert!(
        err.contains("dirty") && err.contains("205") && err.contains("204"),
        "{err}"
    );
}

#[test]
fn bad_reg_syntax_names_file_line_and_column() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let r = reg_file(
        &c.dir.clone(),
        "bad.reg",
        "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\X]\n\"A\"=dword:123456789\n",
    );
    // The .reg file sits in the same folder: the listing check covers it.
    let err = refused(&c, &["--reg", s(&r)]);
    assert!(err.contains("bad.reg:4:11"), "{err}");
    assert!(err.contains("1 to 8 hex digits"), "{err}");
}

#[test]
fn unknown_root_is_refused_with_its_line() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let r = reg_file(
        &c.dir.clone(),
        "hkcu.reg",
        "Windows Registry Editor Version 5.00\n\n[HKEY_CURRENT_USER\\Software\\X]\n\"A\"=\"b\"\n",
    );
    let err = refused(&c, &["--reg", s(&r)]);
    assert!(
        err.contains("hkcu.reg:3") && err.contains("HKEY_CURRENT_USER"),
        "{err}"
    );
}

#[test]
fn image_without_windows_is_refused() {
    let dir = tempdir();
    let raw = fixtures::data_disk(dir.path());
    let c = Case {
        dir: dir.path().to_owned(),
        image: raw,
        _dir: dir,
    };
    let err = refused(&c, &["--profile", "all"]);
    assert!(err.contains("no Windows installation found"), "{err}");
}

#[test]
fn hibernated_windows_is_refused() {
    let mut hiber = b"hibr".to_vec();
    hiber.resize(8192, 0);
    let c = case(
        &WIN2K22_X64,
        vec![Entry::File("hiberfil.sys", hiber)],
        |_| {},
    );
    let err = refused(&c, &["--profile", "all"]);
    assert!(err.contains("powercfg /h off"), "{err}");
}

#[test]
fn dirty_ntfs_volume_is_refused() {
    let c = case(&WIN2K22_X64, vec![], fixtures::set_volume_dirty);
    let err = refused(&c, &["--profile", "all"]);
    assert!(err.contains("chkdsk"), "{err}");
}

#[test]
fn non_ntfs_partition_asked_for_is_refused() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let err = refused(&c, &["--profile", "all", "--partition", "3"]);
    assert!(err.contains("no partition 3"), "{err}");
    // A disk whose first partition holds no filesystem at all.
    let dir = tempdir();
    let raw = dir.path().join("mixed.raw");
    fixtures::disk(
        &raw,
        32 * fixtures::MIB,
        fixtures::Table::Mbr,
        &[fixtures::Part {
            size: 8 * fixtures::MIB,
            volume: None,
            kind: "83",
        }],
    );
    let c = Case {
        dir: dir.path().to_owned(),
        image: raw,
        _dir: dir,
    };
    let err = refused(&c, &["--profile", "all", "--partition", "1"]);
    assert!(
        err.contains("no NTFS filesystem") && err.contains("partition 1"),
        "{err}"
    );
}

#[test]
fn corrupt_ntfs_boot_sector_is_refused() {
    let c = case(&WIN2K22_X64, vec![], |vol| {
        let mut b = std::fs::read(vol).unwrap();
        b[0x0b..0x0e].fill(0);
        std::fs::write(vol, b).unwrap();
    });
    let err = refused(&c, &["--profile", "all"]);
    assert!(err.contains("cannot mount"), "{err}");
}

#[test]
fn unknown_profile_is_refused() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let err = refused(&c, &["--profile", "turbo"]);
    assert!(err.contains("unknown profile \"turbo\""), "{err}");
}

#[test]
fn in_place_write_into_an_image_with_internal_snapshots_is_refused() {
    // Regression for issue 2: qcow2-rs would corrupt refcounts shared with snapshots.
    let c = case(&WIN2K22_X64, vec![], |_| {});
    run("qemu-img", &["snapshot", "-c", "installed", s(&c.image)]);
    let before = sha256_file(&c.image);
    let out = wingold()
        .args(["inject", s(&c.image), "--in-place", "--profile", "all"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("internal snapshot") && err.contains(s(&c.image)),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(sha256_file(&c.image), before, "the image was written");
    // The overlay route works: the snapshotted image is only read.
    let golden = c.dir.join("golden.qcow2");
    succeeds(wingold().args([
        "inject",
        s(&c.image),
        "--output",
        s(&golden),
        "--profile",
        "all",
    ]));
}

/// Edits after which Windows cannot find its control set are refused with their
/// line unless `--force` is given: deleting `Select`, `CurrentControlSet` (the
/// current set) or the default set, pointing `Select\Current`/`Default` at a set
/// that is not there, or making them anything but a DWORD.
#[test]
fn edits_that_make_windows_unbootable_are_refused_unless_forced() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let report = wingold()
        .args(["inspect", "--json", s(&c.image)])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let current = report["windows"]["control_sets"]["current"]
        .as_str()
        .unwrap()
        .to_owned();
    let default = report["windows"]["control_sets"]["default"]
        .as_str()
        .unwrap_or(&current)
        .to_owned();
    let head = "Windows Registry Editor Version 5.00\r\n\r\n";
    let cases = [
        format!("{head}[-HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\r\n"),
        format!("{head}[-HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet]\r\n"),
        format!("{head}[-HKEY_LOCAL_MACHINE\\SYSTEM\\{default}]\r\n"),
        format!("{head}[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\r\n\"Current\"=dword:00000063\r\n"),
        format!("{head}[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\r\n\"Default\"=\"1\"\r\n"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let reg = reg_file(&c.dir, &format!("unbootable{i}.reg"), text);
        let err = refused(&c, &["--reg", s(&reg)]);
        let line = text
            .lines()
            .position(|l| l.starts_with("[-") || l.starts_with('"'))
            .unwrap()
            + 1;
        assert!(
            err.contains(&format!("unbootable{i}.reg:{line}:")) && err.contains("unbootable"),
            "case {i}: {err}"
        );
        assert!(err.contains("--force"), "{err}");
        std::fs::remove_file(&reg).unwrap();
    }
    // With --force the user gets what they asked for.
    let reg = reg_file(&c.dir, "forced.reg", &cases[0]);
    let out = c.dir.join("forced.qcow2");
    succeeds(wingold().args([
        "inject",
        s(&c.image),
        "--output",
        s(&out),
        "--force",
        "--reg",
        s(&reg),
    ]));
    let after = wingold().args(["inspect", s(&out)]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&after.stdout).contains("Windows: none found"),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
}

/// Deleting a hive's root key is the user's mistake: exit 2 with the .reg line.
#[test]
fn deleting_a_hive_root_is_bad_input() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let reg = reg_file(
        &c.dir,
        "root.reg",
        "Windows Registry Editor Version 5.00\r\n\r\n[-HKEY_LOCAL_MACHINE\\SOFTWARE]\r\n",
    );
    let err = refused(&c, &["--reg", s(&reg)]);
    assert!(
        err.contains("root.reg:3") && err.contains("root key"),
        "{err}"
    );
}

/// A long value is shortened in the human plan, with its length; JSON keeps it whole.
#[test]
fn long_values_are_shortened_in_plans() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let long = "x".repeat(5000);
    let reg = reg_file(
        &c.dir,
        "long.reg",
        &format!(
            "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Long]\r\n\"v\"=\"{long}\"\r\n"
        ),
    );
    let out = wingold()
        .args(["inject", s(&c.image), "--dry-run", "--reg", s(&reg)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let line = text
        .lines()
        .find(|l| l.contains(": v = "))
        .expect("the value's line");
    assert!(line.len() < 200 && line.contains("(10002 bytes)"), "{line}");
    let out = wingold()
        .args([
            "inject",
            s(&c.image),
            "--dry-run",
            "--json",
            "--reg",
            s(&reg),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&long));
}

/// A value larger than libhivex can write is refused with its line and the limit
/// (exit 2); one byte less is written (and read back by the verification).
#[test]
fn values_over_libhivex_limit_are_refused_with_the_limit() {
    let c = case(&WIN2K22_X64, vec![], |_| {});
    let reg_of = |len: usize| {
        let hex: Vec<&str> = vec!["ab"; len];
        format!(
            "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Big]\r\n\"v\"=hex:{}\r\n",
            hex.join(",")
        )
    };
    let max = wingold::hive::MAX_VALUE_DATA;
    let reg = reg_file(&c.dir, "too-big.reg", &reg_of(max + 1));
    let err = refused(&c, &["--reg", s(&reg)]);
    assert!(
        err.contains("too-big.reg:4") && err.contains(&format!("{max} bytes at most")),
        "{err}"
    );
    std::fs::remove_file(&reg).unwrap();
    let reg = reg_file(&c.dir, "just.reg", &reg_of(max));
    let out = c.dir.join("just.qcow2");
    succeeds(wingold().args(["inject", s(&c.image), "--output", s(&out), "--reg", s(&reg)]));
}

/// yarp's odd hives (`../shared/corpus/odd`) as the SAM hive an edit writes into:
/// structural damage is refused before a byte is written (exit 2, "damaged"),
/// whatever libhivex would make of it; odd but sound hives are written.
#[test]
fn structurally_damaged_hives_are_refused_and_odd_sound_ones_written() {
    let tmp = tempdir();
    let reg = reg_file(
        tmp.path(),
        "sam.reg",
        "Windows Registry Editor Version 5.00\r\n\r\n\
         [HKEY_LOCAL_MACHINE\\SAM\\Wingold]\r\n\"v\"=dword:00000001\r\n",
    );
    std::fs::create_dir_all(tmp.path().join("odd")).unwrap();
    let hive = |name: &str| corpus_hive(tmp.path(), &format!("odd/{name}"));
    let with_sam = |name: &str| {
        let h = hive(name);
        case(&WIN2K22_X64, vec![], move |vol| {
            run(
                "ntfscp",
                &["-f", s(vol), s(&h), "/Windows/System32/config/SAM"],
            );
        })
    };
    for (name, want) in [
        ("BadListHive", "listed under two keys"),
        ("BadSubkeyHive", "listed under two keys"),
        ("InvalidParentHive", "as its parent"),
        ("DuplicateSubkeysHive", "listed twice"),
        ("TruncatedNameHive", "name runs past its cell"),
    ] {
        let c = with_sam(name);
        let err = refused(&c, &["--reg", s(&reg)]);
        assert!(err.contains("SAM") && err.contains(want), "{name}: {err}");
        if name != "TruncatedNameHive" {
            assert!(err.contains("damaged"), "{name}: {err}");
        }
    }
    for name in ["UnicodeHive", "ManySubkeysHive", "EmptyHive", "CompHive"] {
        let c = with_sam(name);
        let out = c.dir.join("out.qcow2");
        let res = wingold()
            .args(["inject", s(&c.image), "--output", s(&out), "--reg", s(&reg)])
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
}

/// Hives grow in place: an edit that needs more room than the volume has is
/// refused before anything is written (exit 2), in place as with --output, never
/// cut off half-way by a full volume.
#[test]
fn hive_growth_counts_in_the_free_space_check() {
    let dir = tempdir();
    // A 40 MiB Windows partition with about 2 MiB free (as in tests/drivers.rs).
    let filler = Entry::File("pagefile.sys", vec![0x5a; 22 << 20]);
    let w = fixtures::phony_windows_sized(dir.path(), &WIN2K22_X64, vec![filler], |_| {}, 40 << 20);
    let c = Case {
        dir: dir.path().to_owned(),
        image: w.image,
        _dir: dir,
    };
    // 3000 values of 1 KiB: the SOFTWARE hive grows by about 3 MiB.
    let mut text = String::from(
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Wingold\\Big]\r\n",
    );
    let kib = vec!["5a"; 1024].join(",");
    for i in 0..3000 {
        text.push_str(&format!("\"v{i}\"=hex:{kib}\r\n"));
    }
    let reg = reg_file(&c.dir, "big.reg", &text);
    let err = refused(&c, &["--reg", s(&reg)]);
    assert!(err.contains("MiB free"), "{err}");
    let before = sha256_file(&c.image);
    let res = wingold()
        .args(["inject", s(&c.image), "--in-place", "--reg", s(&reg)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(err.contains("MiB free"), "{err}");
    assert_eq!(sha256_file(&c.image), before, "the volume was written");
}
