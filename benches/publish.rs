//! `make bench`: `wingold publish` of a 2 GiB golden image (data everywhere) to a
//! registry on loopback (Debian's docker-registry), cold (disk layer hashed, then
//! streamed), beside `skopeo copy oci:LAYOUT docker://…` of the same image to the
//! same registry — target: no slower than skopeo, peak RSS under 64 MiB. Then a
//! golden image over 8 GiB (sparse) is published and unpacked by skopeo + umoci
//! (tar's base-256 size field): too slow and too large for `make test`.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Registry(Child, u16);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry(dir: &Path) -> Registry {
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker-registry (make setup installs it)");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = 0u16;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on 127.0.0.1:") {
            port = line[at + 23..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap();
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Registry(child, port)
}

/// A golden image file and the manifest `publish` reads beside it.
fn golden(path: &Path, size: u64, random: bool) {
    let mut f = std::fs::File::create(path).unwrap();
    if random {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut block = vec![0u8; 4 << 20];
        let mut left = size;
        while left > 0 {
            fill_random(&mut block, &mut x);
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    } else {
        f.set_len(size).unwrap();
    }
    drop(f);
    let sha = String::from_utf8(run(Command::new("sha256sum").arg(path)).stdout).unwrap();
    let sha = sha.split_whitespace().next().unwrap().to_owned();
    // The manifest as a build writes it (the type keeps this in step with `build`).
    use wingold::golden::manifest::{BaseRecord, Identity, Manifest, OutputRecord, VirtioRecord};
    let virtio_sha = "0".repeat(64);
    let manifest = Manifest {
        wingold_version: "bench".into(),
        identity: Identity {
            wingold_version: "bench".into(),
            base_sha256: None,
            virtio_win_version: "0.1.999".into(),
            virtio_win_sha256: virtio_sha.clone(),
            config_sha256: "0".repeat(64),
            settings_sha256: "0".repeat(64),
            regfiles: Vec::new(),
            first_boot_inputs: Vec::new(),
        },
        base: BaseRecord {
            path: "base.qcow2".into(),
            size,
            mtime_ns: 0,
            inode: 0,
            sha256: None,
        },
        virtio_win: VirtioRecord {
            version: "0.1.999".into(),
            url: "file:///virtio-win-0.1.999.iso".into(),
            final_url: "file:///virtio-win-0.1.999.iso".into(),
            sha256: virtio_sha,
            size: 0,
            pinned_by: wingold::virtio::fetch::PinnedBy::Flag,
            path: "virtio-win-0.1.999.iso".into(),
            drivers_injected: true,
        },
        config: wingold::golden::manifest::ConfigRecord {
            path: "wingold.toml".into(),
            sha256: String::new(),
            profiles: Vec::new(),
            regfiles: Vec::new(),
            compress: false,
        },
        windows: wingold::golden::inject::WindowsSummary {
            product_name: "Windows Server 2022".into(),
            version: "10.0".into(),
            osinfo: "win2k22".into(),
            arch: "x64".into(),
            family: wingold::reg::profiles::Family::Nt6,
            control_sets: vec!["ControlSet001".into()],
        },
        edits: Vec::new(),
        first_boot_commands: Vec::new(),
        drivers: None,
        first_boot: None,
        boot: None,
        output: OutputRecord {
            path: path.to_owned(),
            stable: None,
            sha256: sha,
            size,
            mtime_ns: 0,
            inode: 0,
            virtual_size: size,
            compressed: false,
        },
        timings_ms: wingold::golden::manifest::Timings {
            fetch: 0,
            inject: 0,
            finalize: 0,
            verify: 0,
            total: 0,
        },
    };
    let manifest = serde_json::to_string(&manifest).unwrap();
    let mut name = path.file_name().unwrap().to_owned();
    name.push(".manifest.json");
    std::fs::write(path.with_file_name(name), manifest).unwrap();
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-publish");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let wingold = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/wingold");
    run(Command::new("cargo").args(["build", "--release", "--quiet", "--bin", "wingold"]));
    let reg = registry(&dir);
    let g = dir.join("golden-2g.qcow2");
    eprintln!("bench: writing a 2 GiB golden image of random data");
    golden(&g, 2 << 30, true);
    let layout = dir.join("layout");
    run(Command::new(&wingold)
        .arg("publish")
        .arg(&g)
        .arg("--oci-layout")
        .arg(&layout)
        .args(["--tag", "t"]));
    // Each run gets a registry of its own: a registry that has the blob (or that
    // skopeo's blob cache knows has it) would turn an upload into a no-op.
    let (mut ours, mut theirs, mut peak) = (Vec::new(), Vec::new(), 0);
    for round in 0..3 {
        let _ = std::fs::remove_file(format!("{}.oci.json", g.display()));
        let (a, b) = (
            dir.join(format!("ra{round}")),
            dir.join(format!("rb{round}")),
        );
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let (ra, rb) = (registry(&a), registry(&b));
        ours.push(secs(|| {
            let o = run(Command::new("/usr/bin/time")
                .args(["-f", "peak-kb %M"])
                .arg(&wingold)
                .arg("publish")
                .arg(&g)
                .arg(format!("docker://127.0.0.1:{}/ours/win:t", ra.1))
                .arg("--insecure"));
            peak = peak.max(peak_kib(&o));
        }));
        theirs.push(secs(|| {
            run(Command::new("skopeo")
                .args(["copy", "--dest-tls-verify=false", "--quiet"])
                .arg(format!("oci:{}:t", layout.display()))
                .arg(format!("docker://127.0.0.1:{}/theirs/win:t", rb.1)));
        }));
        drop((ra, rb));
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }
    let (o, t) = (median(ours), median(theirs));
    println!(
        "publish a 2 GiB golden image (random data) to docker-registry on loopback (median of 3):"
    );
    println!("  wingold publish (cold: hash, then stream)       {:>8.1} ms, peak {} MiB  (target < 64 MiB)", o * 1000.0, peak / 1024);
    println!(
        "  skopeo copy oci:LAYOUT docker://… (pre-hashed)  {:>8.1} ms",
        t * 1000.0
    );
    println!("  ratio wingold / skopeo: {:.2}x   (target <= 1.0x)", o / t);

    // Over 8 GiB: GNU base-256 size field; skopeo + umoci unpack it.
    let big = dir.join("golden-9g.qcow2");
    eprintln!("bench: a 9 GiB sparse golden image, published and unpacked");
    golden(&big, 9 << 30, false);
    let t = secs(|| {
        run(Command::new(&wingold)
            .arg("publish")
            .arg(&big)
            .arg(format!("docker://127.0.0.1:{}/big/win:t", reg.1))
            .arg("--insecure"));
    });
    let oci = dir.join("big-oci");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-oci-accept-uncompressed-layers",
            "--quiet",
        ])
        .arg(format!("docker://127.0.0.1:{}/big/win:t", reg.1))
        .arg(format!("oci:{}:t", oci.display())));
    let bundle = dir.join("big-bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", oci.display()))
        .arg(&bundle));
    let disk = bundle.join("rootfs/disk/disk.img");
    let len = std::fs::metadata(&disk).unwrap().len();
    let same = run(Command::new("cmp").arg(&disk).arg(&big))
        .status
        .success();
    println!(
        "9 GiB sparse golden image: published in {:.1} s; umoci unpacked disk/disk.img of {len} bytes, {} the golden image",
        t,
        if same && len == 9 << 30 { "byte-identical to" } else { "DIFFERENT FROM" }
    );
    drop(reg);
    let _ = std::fs::remove_dir_all(&dir);
}
