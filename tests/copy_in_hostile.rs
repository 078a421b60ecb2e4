//! Copy-in against what Windows and wingold own, and names NTFS compares per
//! UTF-16 unit: the hostile cases as data. Each refusal is exit 2, one line,
//! before anything is written — with `--output` and with `--in-place` alike; each
//! accepted case is read back with ntfs-3g's own `ntfscat`.

use wingold_test_support as support;

use std::path::{Path, PathBuf};
use support::fixtures::{self, Entry, PhonyWindows, WIN2K22_X64};
use support::*;

/// (guest target, what the one line must say). The local side is a one-line file.
const REFUSED: &[(&str, &str)] = &[
    ("C:\\$AttrDef", "an NTFS system file"),
    ("C:\\$LogFile", "an NTFS system file"),
    ("C:\\$UpCase", "an NTFS system file"),
    ("C:\\$Bitmap", "an NTFS system file"),
    ("\\$MFTMirr", "an NTFS system file"),
    ("C:/$Extend/$Quota", "an NTFS system file"),
    (
        "C:\\Windows\\System32\\config\\SYSTEM",
        "the registry's folder",
    ),
    (
        "C:\\WINDOWS\\system32\\CONFIG\\software.LOG1",
        "the registry's folder",
    ),
    (
        "C:\\Windows\\System32\\config\\SAM",
        "the registry's folder",
    ),
    ("C:\\Users\\Default\\NTUSER.DAT", "a user's registry hive"),
    (
        "C:\\Windows\\wingold\\firstboot\\queue\\6000-x.cmd",
        "wingold's first-boot folder",
    ),
    (
        "C:\\Windows\\Drivers\\VirtIO\\viostor.inf",
        "wingold's driver staging folder",
    ),
    ("\\\\server\\share\\x", "a network (UNC) path"),
    ("C:relative\\x", "relative to the drive's current folder"),
    ("D:\\x", "only the Windows volume (C:) is written"),
    // A file onto a folder that exists.
    (
        "C:\\Windows\\System32",
        "a folder, where a file is expected",
    ),
    ("C:\\Tools", "a folder, where a file is expected"),
];

fn phony(dir: &Path) -> PhonyWindows {
    fixtures::phony_windows(
        dir,
        &WIN2K22_X64,
        vec![
            Entry::Dir("Tools"),
            Entry::File("Tools/Straße.txt", b"the original".to_vec()),
        ],
    )
}

fn inject(args: &[&str]) -> (Option<i32>, String) {
    let out = wingold().arg("inject").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `inject IMAGE --output OUT --copy-in LOCAL:GUEST`: exit code and stderr.
fn copy_in(image: &Path, out: &Path, local: &Path, guest: &str) -> (Option<i32>, String) {
    inject(&[
        s(image),
        "--output",
        s(out),
        "--copy-in",
        &format!("{}:{guest}", local.display()),
    ])
}

fn partition(image: &Path, w: &PhonyWindows, dir: &Path) -> PathBuf {
    let part = dir.join("win.part");
    fixtures::extract_partition(image, w.win_offset, w.win_size, &part);
    part
}

fn ntfscat(part: &Path, path: &str) -> Vec<u8> {
    run("ntfscat", &[s(part), path]).stdout
}

#[test]
fn copy_in_refuses_what_windows_and_wingold_own_with_output_and_in_place() {
    let dir = tempdir();
    let w = phony(dir.path());
    let junk = dir.path().join("junk");
    std::fs::write(&junk, "junk\n").unwrap();
    let before = sha256_file(&w.image);
    for (guest, want) in REFUSED {
        let spec = format!("{}:{guest}", junk.display());
        let out = dir.path().join("out.qcow2");
        for in_place in [false, true] {
            let mut args = vec![s(&w.image), "--copy-in", spec.as_str()];
            if in_place {
                args.push("--in-place");
            } else {
                args.extend(["--output", s(&out)]);
            }
            let (code, err) = inject(&args);
            assert_eq!(code, Some(2), "{guest} (in place: {in_place}): {err}");
            assert!(err.contains(want), "{guest}: wanted {want:?} in: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{guest}: {err}");
            assert!(!out.exists(), "{guest}: an output was written");
            assert_eq!(sha256_file(&w.image), before, "{guest}: the input changed");
        }
    }
    // The same in a tree: one file inside the registry's folder refuses it whole.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("System32/config")).unwrap();
    std::fs::write(tree.join("readme.txt"), "ok").unwrap();
    std::fs::write(tree.join("System32/config/SYSTEM"), "junk").unwrap();
    let out = dir.path().join("out.qcow2");
    let (code, err) = copy_in(&w.image, &out, &tree, "C:\\Windows");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the registry's folder"), "{err}");
    assert!(!out.exists());
}

#[test]
fn sharp_s_is_not_double_s_in_guest_names() {
    let dir = tempdir();
    let w = phony(dir.path());
    // STRASSE.TXT beside Straße.txt: Windows' $UpCase keeps ß as ß, so these are
    // two files, and the first one's bytes stay.
    let upper = dir.path().join("STRASSE.TXT");
    std::fs::write(&upper, "the new one").unwrap();
    let out = dir.path().join("out.qcow2");
    let (code, err) = copy_in(&w.image, &out, &upper, "C:\\Tools\\STRASSE.TXT");
    assert_eq!(code, Some(0), "{err}");
    let part = partition(&out, &w, dir.path());
    assert_eq!(ntfscat(&part, "/Tools/Straße.txt"), b"the original");
    assert_eq!(ntfscat(&part, "/Tools/STRASSE.TXT"), b"the new one");
    std::fs::remove_file(&part).unwrap();

    // A tree holding both is two files too.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("Straße.txt"), "sharp").unwrap();
    std::fs::write(tree.join("STRASSE.TXT"), "double").unwrap();
    let out2 = dir.path().join("out2.qcow2");
    let (code, err) = copy_in(&w.image, &out2, &tree, "C:\\Other");
    assert_eq!(code, Some(0), "{err}");
    let part = partition(&out2, &w, dir.path());
    assert_eq!(ntfscat(&part, "/Other/Straße.txt"), b"sharp");
    assert_eq!(ntfscat(&part, "/Other/STRASSE.TXT"), b"double");
    let listed =
        String::from_utf8(run("ntfsls", &["-f", s(&part), "-p", "/Other"]).stdout).unwrap();
    let names: Vec<&str> = listed.lines().filter(|l| !l.starts_with('.')).collect();
    assert_eq!(names, ["STRASSE.TXT", "Straße.txt"], "{listed}");
    std::fs::remove_file(&part).unwrap();

    // É and é are one name to NTFS: a tree with both is refused as twins.
    let tree = dir.path().join("twins");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("É.txt"), "a").unwrap();
    std::fs::write(tree.join("é.txt"), "b").unwrap();
    let out3 = dir.path().join("out3.qcow2");
    let (code, err) = copy_in(&w.image, &out3, &tree, "C:\\Twins");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("differ only in case"), "{err}");
    assert!(!out3.exists());
}

/// Control characters in names (a local file's, a registry key's) never reach
/// the terminal raw: refusals and reports show them escaped.
#[test]
fn control_characters_in_names_are_shown_escaped() {
    let dir = tempdir();
    let w = phony(dir.path());
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("red\x1b[31mtitle\x07"), "x").unwrap();
    let out = dir.path().join("out.qcow2");
    let (code, err) = copy_in(&w.image, &out, &tree, "C:\\Tools");
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\u{1b}"), "{err:?}");
    // A key name the registry allows, with a BEL in it: the text report escapes it.
    let reg = dir.path().join("bel.reg");
    std::fs::write(
        &reg,
        "Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\Bell\x07Key]\r\n\"v\"=dword:00000001\r\n",
    )
    .unwrap();
    let res = wingold()
        .args(["inject", s(&w.image), "--output", s(&out), "--reg", s(&reg)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        !text.contains('\x07') && text.contains("Bell\\u{7}Key"),
        "{text:?}"
    );
}
