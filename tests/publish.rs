//! `wingold publish` against a real registry — Debian's docker-registry (CNCF
//! distribution), started here on 127.0.0.1 with its own config and stopped after
//! — checked by clients that are not ours: skopeo (inspect, copy) and umoci
//! (unpack, as a container runtime would).

use wingold_test_support as support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::fixtures::{self, WIN2K22_X64};
use support::golden::{build_in, golden};
use support::*;

/// A docker-registry on 127.0.0.1, killed when dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry: `extra` is appended to its config (auth, TLS).
fn registry(extra: &str) -> Registry {
    let tool = Path::new("/usr/bin/docker-registry");
    assert!(
        tool.exists(),
        "TEST CANNOT RUN: docker-registry is missing; make setup installs Debian's docker-registry"
    );
    let dir = tempdir();
    let cfg = dir.path().join("config.yml");
    let storage = dir.path().join("data");
    let (http_extra, rest) = extra.split_once("\n---\n").unwrap_or(("", extra));
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n{http_extra}{rest}",
            storage.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(tool)
        .args(["serve", s(&cfg)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut port = 0;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(at) = line.find("listening on 127.0.0.1:") {
            let rest = &line[at + "listening on 127.0.0.1:".len()..];
            port = rest
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap();
            break;
        }
    }
    assert!(port > 0, "docker-registry did not say where it listens");
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Registry {
        child,
        port,
        _dir: dir,
    }
}

fn publish(args: &[&str]) -> (Option<i32>, Value, String) {
    wingold_json("publish", args)
}

fn manifest_of(golden: &Path) -> Value {
    let version = std::fs::canonicalize(golden).unwrap();
    let mut name = version.file_name().unwrap().to_owned();
    name.push(".manifest.json");
    serde_json::from_slice(&std::fs::read(version.with_file_name(name)).unwrap()).unwrap()
}

fn skopeo_inspect(reference: &str, extra: &[&str]) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .args(extra)
        .arg(reference)
        .output()
        .expect("TEST CANNOT RUN: skopeo is missing (make setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// skopeo copies the image into an OCI layout, umoci unpacks it: the bundle's root.
fn unpack(reference: &str, dir: &Path) -> PathBuf {
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-oci-accept-uncompressed-layers",
            reference,
            &format!("oci:{}:t", layout.display()),
        ],
    );
    let out = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:t", layout.display()),
            s(&bundle),
        ])
        .output()
        .expect("TEST CANNOT RUN: umoci is missing (make setup installs it)");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle.join("rootfs")
}

#[test]
fn publishes_a_containerdisk_that_skopeo_and_umoci_read() {
    let g = golden();
    let reg = registry("");
    let to = format!("docker://127.0.0.1:{}/windows/win2k22:v1", reg.port);
    let (code, j, err) = publish(&[s(&g.path), &to, "--insecure", "--tag", "latest"]);
    assert_eq!(code, Some(0), "{err}");
    let digest = j["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        j["reference"],
        format!("127.0.0.1:{}/windows/win2k22@{digest}", reg.port)
    );
    assert_eq!(j["tags"], serde_json::json!(["v1", "latest"]));
    // Recorded beside the version, for `clone --format kubevirt`.
    let version = std::fs::canonicalize(&g.path).unwrap();
    let record: Value = serde_json::from_slice(
        &std::fs::read(format!("{}.published.json", version.display())).unwrap(),
    )
    .unwrap();
    assert!(
        record.as_array().unwrap().contains(&j["reference"]),
        "{record}"
    );
    let m = manifest_of(&g.path);
    let golden_sha = m["output"]["sha256"].as_str().unwrap();
    // skopeo: the digest, platform, labels and the preference env.
    let i = skopeo_inspect(
        &format!("docker://127.0.0.1:{}/windows/win2k22:latest", reg.port),
        &[],
    );
    assert_eq!(i["Digest"], digest);
    assert_eq!(i["Architecture"], "amd64");
    assert_eq!(i["Os"], "linux");
    assert_eq!(i["Labels"]["io.wingold.golden.sha256"], golden_sha);
    assert_eq!(i["Labels"]["io.wingold.windows.osinfo"], "win2k22");
    assert!(i["Env"]
        .to_string()
        .contains("INSTANCETYPE_KUBEVIRT_IO_DEFAULT_PREFERENCE=windows.2k22.virtio"));
    let raw = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!(
            "docker://127.0.0.1:{}/windows/win2k22:v1",
            reg.port
        ))
        .output()
        .unwrap()
        .stdout;
    use sha2::Digest;
    assert_eq!(format!("sha256:{:x}", sha2::Sha256::digest(&raw)), digest);
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert!(manifest["annotations"]["org.opencontainers.image.created"].is_null());
    // umoci: disk/disk.img byte-identical to the golden image, 107:107, 0444,
    // alone in disk/; the provenance matches its annotation.
    let tmp = tempdir();
    let root = unpack(
        &format!("docker://127.0.0.1:{}/windows/win2k22:v1", reg.port),
        tmp.path(),
    );
    let disk = root.join("disk/disk.img");
    assert_eq!(sha256_file(&disk), golden_sha);
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (107, 107, 0o444)
    );
    assert_eq!(std::fs::read_dir(root.join("disk")).unwrap().count(), 1);
    let prov = std::fs::read(root.join("wingold/provenance.json")).unwrap();
    let parsed: Value = serde_json::from_slice(&prov).unwrap();
    assert_eq!(parsed["output"]["sha256"], golden_sha);
    assert!(
        !String::from_utf8_lossy(&prov).contains(s(&g.dir)),
        "a host path in the provenance"
    );
    assert_eq!(
        manifest["annotations"]["io.wingold.provenance.sha256"],
        format!("{:x}", sha2::Sha256::digest(&prov))
    );
    let info = run("qemu-img", &["info", "--output=json", s(&disk)]);
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert!(info["backing-filename"].is_null());
    // The snippets name the digest.
    assert!(j["kubevirt"]["containerDisk"]
        .as_str()
        .unwrap()
        .contains(&digest));
}

#[test]
fn publishing_again_uploads_nothing_and_identical_builds_share_a_digest() {
    let g = golden();
    let reg = registry("");
    let to = |repo: &str| format!("docker://127.0.0.1:{}/{repo}:v1", reg.port);
    let (code, first, err) = publish(&[s(&g.path), &to("a/win"), "--insecure"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(first["bytes_uploaded"].as_u64().unwrap() > 0);
    let (code, again, err) = publish(&[s(&g.path), &to("a/win"), "--insecure"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again["digest"], first["digest"]);
    assert_eq!(again["bytes_uploaded"], 0);
    // A second build of the same inputs in another folder: the same digest.
    let tmp = tempdir();
    let other = tmp.path().to_owned();
    std::fs::create_dir_all(other.join("base")).unwrap();
    std::fs::copy(
        g.dir.join("base/phony.qcow2"),
        other.join("base/phony.qcow2"),
    )
    .unwrap();
    std::fs::copy(
        g.dir.join("virtio-win-0.1.999.iso"),
        other.join("virtio-win-0.1.999.iso"),
    )
    .unwrap();
    build_in(&other);
    let (code, second, err) = publish(&[
        s(&other.join("golden/win.qcow2")),
        &to("b/win"),
        "--insecure",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(second["digest"], first["digest"]);
    // The OCI layout, written twice, is the same tree, and skopeo reads it.
    let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
    for l in [&l1, &l2] {
        let (code, j, err) = publish(&[s(&g.path), "--oci-layout", s(l), "--tag", "v1"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(j["digest"], first["digest"]);
    }
    let listing = |d: &Path| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = walk(d)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(d).unwrap().display().to_string(),
                    sha256_file(&p),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(listing(&l1), listing(&l2));
    let i = skopeo_inspect(&format!("oci:{}:v1", l1.display()), &[]);
    assert_eq!(i["Digest"], first["digest"]);
    // Another tag into the same layout: the first stays, as skopeo keeps it.
    let (code, _, err) = publish(&[s(&g.path), "--oci-layout", s(&l1), "--tag", "v2"]);
    assert_eq!(code, Some(0), "{err}");
    for tag in ["v1", "v2"] {
        let i = skopeo_inspect(&format!("oci:{}:{tag}", l1.display()), &[]);
        assert_eq!(i["Digest"], first["digest"], "{tag}");
    }
    // A folder whose index.json is no OCI index is refused, and nothing is written.
    let bad = tmp.path().join("not-a-layout");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("index.json"), "my notes").unwrap();
    let (code, _, err) = publish(&[s(&g.path), "--oci-layout", s(&bad), "--tag", "v1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not an OCI image index"), "{err}");
    assert_eq!(
        std::fs::read_dir(&bad).unwrap().count(),
        1,
        "something was written"
    );
    // Chunked uploads (4 MiB PATCHes) give the same image.
    let (code, chunked, err) = publish(&[s(&g.path), &to("c/win"), "--insecure", "--chunked"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(chunked["digest"], first["digest"]);
    assert!(chunked["layers"][0]["uploaded"].as_bool().unwrap());
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn basic_auth_works_and_a_wrong_password_is_one_clear_line() {
    let g = golden();
    let tmp = tempdir();
    let htpasswd = tmp.path().join("htpasswd");
    run(
        "htpasswd",
        &["-Bbc", s(&htpasswd), "builder", "s3cret-Pa55"],
    );
    let reg = registry(&format!(
        "auth:\n  htpasswd:\n    realm: wingold-test\n    path: {}\n",
        htpasswd.display()
    ));
    let to = format!("docker://127.0.0.1:{}/windows/win:v1", reg.port);
    let with_password = |password: &str| {
        let mut child = wingold()
            .args([
                "publish",
                s(&g.path),
                &to,
                "--insecure",
                "--username",
                "builder",
            ])
            .args(["--password-stdin", "--json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let bad = with_password("wrong-password");
    let err = String::from_utf8_lossy(&bad.stderr);
    // The user's to fix: bad input.
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{}", reg.port)) && err.contains("refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // No credentials at all (and none in the files skopeo reads): also the user's.
    let none = wingold()
        .args(["publish", s(&g.path), &to, "--insecure", "--json"])
        .env("HOME", tmp.path())
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("REGISTRY_AUTH_FILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--username") && err.trim().lines().count() == 1,
        "{err}"
    );
    let good = with_password("s3cret-Pa55");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    for out in [&bad, &good] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains("s3cret-Pa55") && !all.contains("wrong-password"),
            "{all}"
        );
    }
    let i = skopeo_inspect(&to, &["--creds", "builder:s3cret-Pa55"]);
    let j: Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(i["Digest"], j["digest"]);
    // The credentials skopeo and podman keep (REGISTRY_AUTH_FILE) serve too.
    let auth = tmp.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"127.0.0.1:{}\":{{\"auth\":\"{}\"}}}}}}",
            reg.port,
            wingold::registry::base64(b"builder:s3cret-Pa55")
        ),
    )
    .unwrap();
    let out = succeeds(
        wingold()
            .args([
                "publish",
                s(&g.path),
                &to,
                "--insecure",
                "--tag",
                "from-auth-file",
            ])
            .env("REGISTRY_AUTH_FILE", &auth),
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
}

#[test]
fn tls_with_a_test_ca_and_plain_http_only_when_asked() {
    let g = golden();
    let tmp = tempdir();
    let d = tmp.path();
    let (ca_key, ca, key, csr, cert, ext) = (
        d.join("ca.key"),
        d.join("ca.pem"),
        d.join("server.key"),
        d.join("server.csr"),
        d.join("server.pem"),
        d.join("ext.cnf"),
    );
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=wingold test CA",
            "-keyout",
            s(&ca_key),
            "-out",
            s(&ca),
        ],
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
        ],
    );
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca),
            "-CAkey",
            s(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&ext),
            "-out",
            s(&cert),
        ],
    );
    let reg = registry(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    ));
    let to = format!("docker://127.0.0.1:{}/windows/win:v1", reg.port);
    // Without the CA: refused by TLS, one line saying what to do, exit 2.
    let (code, _, err) = publish(&[s(&g.path), &to]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", reg.port)), "{err}");
    assert!(
        err.contains("--ca-cert") && !err.contains("UnknownIssuer"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // With it: published over TLS.
    let (code, j, err) = publish(&[s(&g.path), &to, "--ca-cert", s(&ca)]);
    assert_eq!(code, Some(0), "{err}");
    let i = skopeo_inspect(&to, &[]);
    assert_eq!(i["Digest"], j["digest"]);
    // Plain HTTP to a TLS registry is not silently tried: --insecure is needed
    // for HTTP, and it fails here (the registry speaks TLS).
    let (code, _, _) = publish(&[s(&g.path), &to, "--insecure"]);
    assert_ne!(code, Some(0));
    // A self-signed certificate as Docker's registry documentation makes it
    // (openssl req -x509: the CA flag is set), pinned with --ca-cert: trusted as
    // skopeo and curl trust it (webpki alone says CaUsedAsEndEntity).
    let (self_key, self_cert) = (d.join("domain.key"), d.join("domain.crt"));
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-keyout",
            s(&self_key),
            "-addext",
            "subjectAltName = IP:127.0.0.1",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-out",
            s(&self_cert),
        ],
    );
    let text = String::from_utf8(
        run(
            "openssl",
            &["x509", "-in", s(&self_cert), "-noout", "-text"],
        )
        .stdout,
    )
    .unwrap();
    assert!(
        text.contains("CA:TRUE"),
        "the fixture is not what Docker's docs make"
    );
    let pinned = registry(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        self_cert.display(),
        self_key.display()
    ));
    let to_pinned = format!("docker://127.0.0.1:{}/windows/win:v1", pinned.port);
    let (code, j, err) = publish(&[s(&g.path), &to_pinned, "--ca-cert", s(&self_cert)]);
    assert_eq!(code, Some(0), "{err}");
    let i = skopeo_inspect(&to_pinned, &[]);
    assert_eq!(i["Digest"], j["digest"]);
    // Someone else's certificate pinned is no trust in this one.
    let (code, _, err) = publish(&[s(&g.path), &to_pinned, "--ca-cert", s(&ca)]);
    assert_eq!(code, Some(2), "{err}");
    // TLS asked of a registry on plain HTTP: said, with what to do.
    let plain = registry("");
    let to_plain = format!("docker://127.0.0.1:{}/windows/win:v1", plain.port);
    let (code, _, err) = publish(&[s(&g.path), &to_plain]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--insecure") && !err.contains("InvalidContentType"),
        "{err}"
    );

    // A TLS registry whose token service is plain HTTP on another host: refused
    // before the credentials go anywhere (nothing connects to that host).
    let other = TcpListener::bind("127.0.0.2:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let reg = registry(&format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  token:\n    realm: http://127.0.0.2:{}/token\n    \
         service: hostile\n    issuer: hostile\n    rootcertbundle: {}\n",
        cert.display(),
        key.display(),
        other.local_addr().unwrap().port(),
        ca.display()
    ));
    let to = format!("docker://127.0.0.1:{}/windows/win:v1", reg.port);
    let out = wingold()
        .args(["publish", s(&g.path), &to, "--ca-cert", s(&ca)])
        .args(["--username", "u", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            writeln!(c.stdin.take().unwrap(), "the-password")?;
            c.wait_with_output()
        })
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in clear") && err.contains("--insecure"),
        "{err}"
    );
    assert!(
        other.accept().is_err(),
        "something connected to the other host"
    );
}

/// A proxy to the registry that cuts the first blob PUT (on whatever connection
/// it comes) after about `cut` bytes of its body; everything else passes through.
fn flaky_proxy(upstream: u16, cut: usize) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut_done = Arc::new(AtomicBool::new(false));
    let flag = cut_done.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let flag = flag.clone();
            std::thread::spawn(move || {
                let mut server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut s_read, mut c_write) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                let down = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
                let mut buf = vec![0u8; 65536];
                let mut cutting: Option<usize> = None;
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(left) = cutting.as_mut() {
                        *left = left.saturating_sub(n);
                        if *left == 0 {
                            break;
                        }
                        continue;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.contains("PUT /v2/")
                        && text.contains("digest=")
                        && !flag.swap(true, Ordering::SeqCst)
                    {
                        // Forward nothing of this request: swallow `cut` bytes, then drop.
                        cutting = Some(cut);
                        continue;
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
                let _ = down.join();
            });
        }
    });
    (port, cut_done)
}

#[test]
fn a_connection_dropped_mid_upload_is_retried_to_success() {
    let g = golden();
    let reg = registry("");
    let (port, cut) = flaky_proxy(reg.port, 200_000);
    let to = format!("docker://127.0.0.1:{port}/windows/win:v1");
    let (code, j, err) = publish(&[s(&g.path), &to, "--insecure"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut an upload");
    assert!(err.contains("retrying"), "{err}");
    let i = skopeo_inspect(
        &format!("docker://127.0.0.1:{}/windows/win:v1", reg.port),
        &[],
    );
    assert_eq!(i["Digest"], j["digest"]);
    let tmp = tempdir();
    let root = unpack(
        &format!("docker://127.0.0.1:{}/windows/win:v1", reg.port),
        tmp.path(),
    );
    assert_eq!(
        sha256_file(&root.join("disk/disk.img")),
        manifest_of(&g.path)["output"]["sha256"].as_str().unwrap()
    );
}

#[test]
fn refusals_before_any_network_call() {
    let g = golden();
    // A clone (backing file) is no containerDisk.
    let clone_dir = g.dir.join("vms");
    let out = wingold()
        .args(["clone", s(&g.path), "--id", "5", "--dir", s(&clone_dir)])
        .output()
        .unwrap();
    assert!(out.status.success());
    for (args, want) in [
        (
            vec![
                s(&clone_dir.join("vm_5.qcow2")).to_owned(),
                "docker://127.0.0.1:9/x/y:v1".into(),
            ],
            "has a backing file",
        ),
        (
            vec![s(&g.path).to_owned(), "http://127.0.0.1:9/x/y".into()],
            "give docker://",
        ),
        (
            vec![s(&g.path).to_owned(), "docker://127.0.0.1:9/Upper/y".into()],
            "lower-case",
        ),
        (
            vec![
                s(&g.path).to_owned(),
                "docker://127.0.0.1:9/x/y:bad tag".into(),
            ],
            "no valid tag",
        ),
        (
            vec![
                s(&g.path.with_file_name("missing.qcow2")).to_owned(),
                "docker://127.0.0.1:9/x/y".into(),
            ],
            "missing.qcow2",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = publish(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn build_publishes_after_each_build_and_an_up_to_date_build_sends_nothing() {
    let reg = registry("");
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("base")).unwrap();
    fixtures::phony_windows(&dir.join("base"), &WIN2K22_X64, vec![]);
    fixtures::virtio_iso(dir, "0.1.999", 0);
    std::fs::write(
        dir.join("wingold.toml"),
        format!(
            "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\ncache = \"cache\"\n\n\
             [base]\nimage = \"base/phony.qcow2\"\n\n[golden]\noutput = \"golden/win.qcow2\"\n\n\
             [publish]\nto = [\"docker://127.0.0.1:{}/windows/win2k22:stable\"]\ntags = [\"latest\"]\ninsecure = true\n",
            reg.port
        ),
    )
    .unwrap();
    let build = || {
        let out = succeeds(wingold().args(["build", "-c", s(&dir.join("wingold.toml")), "--json"]));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = build();
    assert_eq!(first["up_to_date"], false);
    let p = &first["published"][0];
    assert!(p["bytes_uploaded"].as_u64().unwrap() > 0);
    assert_eq!(p["tags"], serde_json::json!(["stable", "latest"]));
    let i = skopeo_inspect(
        &format!("docker://127.0.0.1:{}/windows/win2k22:latest", reg.port),
        &[],
    );
    assert_eq!(i["Digest"], p["digest"]);
    assert_eq!(i["Labels"]["io.wingold.golden.sha256"], first["sha256"]);
    let again = build();
    assert_eq!(again["up_to_date"], true);
    assert_eq!(again["published"][0]["bytes_uploaded"], 0);
    assert_eq!(again["published"][0]["digest"], p["digest"]);
    // A bad [publish] entry is refused before anything is written.
    std::fs::write(
        dir.join("bad.toml"),
        "[virtio_win]\niso = \"virtio-win-0.1.999.iso\"\n\n[base]\nimage = \"base/phony.qcow2\"\n\n\
         [golden]\noutput = \"other/win.qcow2\"\n\n[publish]\nto = [\"http://nowhere/x\"]\n",
    )
    .unwrap();
    let out = wingold()
        .args(["build", "-c", s(&dir.join("bad.toml"))])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[publish] to"));
    assert!(!dir.join("other").exists());
}

/// Two goldens built from the same inputs by configs that differ only in where
/// things are on this host — the output and cache folders, the inputs' folders,
/// the file's layout and comments, a publish target — publish to one digest.
#[test]
fn the_same_inputs_publish_to_one_digest_wherever_they_are() {
    let tmp = tempdir();
    let base_dir = tmp.path().join("shared");
    std::fs::create_dir_all(&base_dir).unwrap();
    let w = fixtures::phony_windows(&base_dir, &WIN2K22_X64, vec![]);
    let iso = fixtures::virtio_iso(&base_dir, "0.1.999", 0);
    let reg = "Windows Registry Editor Version 5.00\r\n\r\n\
               [HKEY_LOCAL_MACHINE\\SOFTWARE\\Wingold\\Same]\r\n\"v\"=dword:00000001\r\n";
    let mut digests = Vec::new();
    for (i, layout) in ["a/b/c", "elsewhere"].iter().enumerate() {
        let dir = tmp.path().join(layout);
        std::fs::create_dir_all(dir.join(format!("inputs{i}"))).unwrap();
        let base = dir.join(format!("inputs{i}/base.qcow2"));
        std::fs::copy(&w.image, &base).unwrap();
        let iso_here = dir.join(format!("inputs{i}/virtio-win-0.1.999.iso"));
        std::fs::copy(&iso, &iso_here).unwrap();
        std::fs::write(dir.join(format!("inputs{i}/site.reg")), reg).unwrap();
        let cfg = if i == 0 {
            format!(
                "[virtio_win]\niso = \"{}\"\ncache = \"cache\"\n\n[base]\nimage = \"{}\"\n\n\
                 [golden]\noutput = \"out/win.qcow2\"\nregfiles = [\"inputs0/site.reg\"]\n",
                iso_here.display(),
                base.display()
            )
        } else {
            format!(
                "# another host's layout\n[golden]\nregfiles = [ \"{}\" ]\noutput = \"golden/x/win.qcow2\"\n\
                 [base]\nimage = \"inputs1/base.qcow2\"\n[virtio_win]\niso = \"inputs1/virtio-win-0.1.999.iso\"\n\
                 cache = \"/{}/cache2\"\n[publish]\nto = []\n",
                dir.join("inputs1/site.reg").display(),
                dir.display().to_string().trim_start_matches('/')
            )
        };
        std::fs::write(dir.join("wingold.toml"), cfg).unwrap();
        succeeds(wingold().args(["build", "-c", s(&dir.join("wingold.toml"))]));
        let golden = if i == 0 {
            dir.join("out/win.qcow2")
        } else {
            dir.join("golden/x/win.qcow2")
        };
        let (code, j, err) = publish(&[s(&golden), "docker://127.0.0.1:9/win/x:v1", "--dry-run"]);
        assert_eq!(code, Some(0), "{err}");
        digests.push(j["digest"].as_str().unwrap().to_owned());
    }
    assert_eq!(digests[0], digests[1]);
}
