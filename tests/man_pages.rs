//! `make man`: man pages made from the CLI's own help by help2man, one per
//! subcommand, each holding that subcommand's options.

use wingold_test_support as support;

use support::*;

#[test]
fn man_pages_cover_every_subcommand_and_its_options() {
    let dir = tempdir();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/man.sh");
    let out = std::process::Command::new(&script)
        .arg(env!("CARGO_BIN_EXE_wingold"))
        .arg(dir.path())
        .output()
        .expect("TEST CANNOT RUN: scripts/man.sh (needs help2man: make setup)");
    assert!(
        out.status.success(),
        "man.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Subcommand → an option only it has (man source escapes dashes).
    for (cmd, option) in [
        ("inject", "\\-\\-in\\-place"),
        ("build", "\\-\\-force"),
        ("clone", "\\-\\-disk\\-bus"),
        ("publish", "\\-\\-oci\\-layout"),
        ("gc", "\\-\\-keep"),
        ("disks", "\\-\\-no\\-hdb"),
        ("fetch", "\\-\\-offline"),
    ] {
        let page = dir.path().join(format!("wingold-{cmd}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".SH SYNOPSIS"), "{cmd}: no synopsis");
        assert!(text.contains(option), "{cmd}: {option} missing");
    }
    let top = std::fs::read_to_string(dir.path().join("wingold.1")).unwrap();
    assert!(top.contains("inject") && top.contains("publish"), "{top}");
}
