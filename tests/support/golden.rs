//! A golden image to publish: `wingold build` of a phony Windows Server 2022.

use super::fixtures::{self, WIN2K22_X64};
use super::*;
use std::path::{Path, PathBuf};

/// A golden image built by `wingold build` from a phony Windows Server 2022.
pub struct Golden {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    pub path: PathBuf,
}

pub fn golden() -> Golden {
    let tmp = tempdir();
    let dir = tmp.path().to_owned();
    std::fs::create_dir_all(dir.join("base")).unwrap();
    fixtures::phony_windows(&dir.join("base"), &WIN2K22_X64, vec![]);
    fixtures::virtio_iso(&dir, "0.1.999", 0);
    build_in(&dir);
    Golden {
        path: dir.join("golden/win.qcow2"),
        dir,
        _dir: tmp,
    }
}

pub fn build_in(dir: &Path) {
    std::fs::write(
        dir.join("wingold.toml"),
        "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\ncache = \"cache\"\n\n\
         [base]\nimage = \"base/phony.qcow2\"\n\n[golden]\noutput = \"golden/win.qcow2\"\n\
         compress = true\n",
    )
    .unwrap();
    succeeds(wingold().args(["build", "-c", s(&dir.join("wingold.toml"))]));
}
