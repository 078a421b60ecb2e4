//! Builds a phony Windows disk with the test fixture builder (tests/support), for
//! `make demo` and for trying wingold by hand:
//!
//!     cargo run --release --example phony_windows -- DIR [2k22|2k3r2 [VIRTIO_VERSION]]
//!
//! Prints the path of the qcow2 it made. Needs what the tests need (make setup):
//! mkntfs and ntfs-3g (FUSE, as root), sgdisk/sfdisk, hivexregedit, qemu-img, and
//! the hive corpus in ../shared/corpus or $WINGOLD_CORPUS.

use wingold_test_support as support;

use support::fixtures;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: phony_windows DIR [2k22|2k3r2 [VIRTIO_VERSION]]";
    let dir = match args.get(1).map(String::as_str) {
        Some("-h" | "--help") => {
            println!("{usage}");
            return;
        }
        // A folder named like an option is a mistake, not an output folder.
        Some(d) if !d.starts_with('-') => d,
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let spec = match args.get(2).map(String::as_str) {
        None | Some("2k22") => &fixtures::WIN2K22_X64,
        Some("2k3r2") => &fixtures::WIN2K3R2_X86,
        Some(other) => {
            eprintln!("unknown Windows {other:?}: 2k22 or 2k3r2");
            std::process::exit(2);
        }
    };
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).expect("create the folder");
    let w = fixtures::phony_windows(dir, spec, vec![]);
    println!("{}", w.image.display());
    // With a third argument, also a fixture virtio-win ISO of that version.
    if let Some(version) = args.get(3) {
        let iso = fixtures::virtio_iso(dir, version, 0);
        println!("{}", iso.display());
    }
}
