//! wingold fetch against a loopback server that misbehaves on demand, serving a
//! fixture ISO with the real virtio-win layout.

use wingold_test_support as support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use support::http::{Mode, Server};
use support::*;

const PATH: &str = "/files/virtio-win-0.1.999.iso";

struct Env {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    iso: PathBuf,
    bytes: Vec<u8>,
}

impl Env {
    fn new() -> Env {
        let dir = tempdir();
        let iso = fixtures::virtio_iso(dir.path(), "0.1.999", 3 << 20);
        let bytes = std::fs::read(&iso).unwrap();
        Env {
            dir: dir.path().to_owned(),
            iso,
            bytes,
            _dir: dir,
        }
    }
    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }
    fn lock(&self) -> PathBuf {
        self.dir.join("wingold.lock")
    }
    fn fetch(&self, url: &str, extra: &[&str]) -> (Output, Value) {
        let mut cmd = wingold();
        cmd.args(["fetch", "--url", url, "--json"]);
        cmd.args(["--cache", s(&self.cache()), "--lock", s(&self.lock())]);
        if !extra.contains(&"--retries") {
            cmd.args(["--retries", "3"]);
        }
        if !extra.contains(&"--timeout") {
            cmd.args(["--timeout", "5"]);
        }
        let out = cmd.args(extra).output().unwrap();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, json)
    }
    /// Nothing accepted in the cache: no object, no named ISO, no partial file.
    fn assert_cache_empty(&self) {
        let objects = self.cache().join("objects");
        let count = |d: &Path| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0);
        assert_eq!(count(&objects), 0, "an object was stored");
        assert_eq!(
            count(&self.cache().join("partial")),
            0,
            "a partial file was left"
        );
        let isos = std::fs::read_dir(self.cache())
            .map(|r| {
                r.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "iso")
                })
                .count()
            })
            .unwrap_or(0);
        assert_eq!(isos, 0);
    }
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn plain_download_is_byte_exact_and_pinned_on_first_use() {
    let e = Env::new();
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::Normal);
    let (out, j) = e.fetch(&srv.url(PATH), &[]);
    ok(&out);
    assert_eq!(j["sha256"], sha(&e.bytes));
    assert_eq!(j["version"], "0.1.999");
    assert_eq!(j["size"], e.bytes.len());
    assert_eq!(j["from_cache"], false);
    assert_eq!(j["pinned_by"], "first_use");
    assert!(std::fs::read(j["path"].as_str().unwrap()).unwrap() == e.bytes);
    let lock = std::fs::read_to_string(e.lock()).unwrap();
    assert!(
        lock.contains("0.1.999") && lock.contains(&sha(&e.bytes)),
        "{lock}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("first use"));
}

#[test]
fn cut_connection_resumes_with_range() {
    let e = Env::new();
    let half = e.bytes.len() as u64 / 2;
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::CutOnceAfter(half));
    let (out, j) = e.fetch(&srv.url(PATH), &[]);
    ok(&out);
    assert_eq!(j["sha256"], sha(&e.bytes));
    let reqs = srv.requests();
    let resumed = reqs
        .iter()
        .find(|r| r.header("Range").is_some())
        .expect("no Range request");
    let start: u64 = resumed.header("Range").unwrap()["bytes=".len()..]
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(start > 0 && start <= half, "resumed at {start}");
    assert_eq!(resumed.header("If-Range"), Some("\"v1\""));
    // Only the rest was sent again.
    assert!(srv.state.lock().unwrap().body_bytes_sent < e.bytes.len() as u64 * 3 / 2);
}

#[test]
fn server_ignoring_range_restarts_cleanly() {
    let e = Env::new();
    let srv = Server::start(
        e.bytes.clone(),
        "\"v1\"",
        Mode::CutOnceThenIgnoreRange(e.bytes.len() as u64 / 3),
    );
    let (out, j) = e.fetch(&srv.url(PATH), &[]);
    ok(&out);
    assert_eq!(j["sha256"], sha(&e.bytes));
    assert!(std::fs::read(j["path"].as_str().unwrap()).unwrap() == e.bytes);
    assert!(srv.requests().iter().any(|r| r.header("Range").is_some()));
}

#[test]
fn html_page_is_refused_and_nothing_is_cached() {
    let e = Env::new();
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::Html);
    let (out, _) = e.fetch(&srv.url(PATH), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTML page"));
    e.assert_cache_empty();
}

#[test]
fn wrong_pin_is_refused() {
    let e = Env::new();
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::Normal);
    let wrong = "0".repeat(64);
    let (out, _) = e.fetch(&srv.url(PATH), &["--sha256", &wrong]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match the pin"));
    e.assert_cache_empty();
    // A known version whose bytes differ from the known table is refused too.
    let fake = fixtures::virtio_iso(&e.dir, "0.1.285", 0);
    let srv = Server::start(std::fs::read(fake).unwrap(), "\"k\"", Mode::Normal);
    let (out, _) = e.fetch(&srv.url("/virtio-win-0.1.285.iso"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known-versions table"));
    e.assert_cache_empty();
}

#[test]
fn not_found_and_server_errors_are_clear() {
    let e = Env::new();
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::NotFound);
    let (out, _) = e.fetch(&srv.url(PATH), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    assert_eq!(srv.requests().len(), 1, "a 404 is not retried");
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::ServerError);
    let (out, _) = e.fetch(&srv.url(PATH), &["--retries", "2"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("500") && err.contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(srv.requests().len(), 3);
    e.assert_cache_empty();
}

#[test]
fn stalled_server_times_out() {
    let e = Env::new();
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::Stall);
    let t = std::time::Instant::now();
    let (out, _) = e.fetch(&srv.url(PATH), &["--retries", "0", "--timeout", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed().as_secs() < 15, "took {:?}", t.elapsed());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timed out") || err.contains("broke off"),
        "{err}"
    );
}

#[test]
fn second_fetch_is_one_conditional_request() {
    let e = Env::new();
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::Normal);
    ok(&e.fetch(&srv.url(PATH), &[]).0);
    let sent = srv.state.lock().unwrap().body_bytes_sent;
    let (out, j) = e.fetch(&srv.url(PATH), &[]);
    ok(&out);
    assert_eq!(j["from_cache"], true);
    assert_eq!(j["pinned_by"], "lock");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].header("If-None-Match"), Some("\"v1\""));
    assert_eq!(
        srv.state.lock().unwrap().body_bytes_sent,
        sent,
        "a body was sent again"
    );
    // The file behind the URL changes (new version, new ETag): downloaded anew.
    let newer = std::fs::read(fixtures::virtio_iso(&e.dir, "0.1.1000", 0)).unwrap();
    srv.set(newer.clone(), "\"v2\"", Mode::Normal);
    let (out, j) = e.fetch(&srv.url(PATH), &[]);
    ok(&out);
    assert_eq!(j["from_cache"], false);
    assert_eq!(j["sha256"], sha(&newer));
}

#[test]
fn offline_uses_only_the_cache() {
    let e = Env::new();
    let url = format!("http://127.0.0.1:9{PATH}");
    let (out, _) = e.fetch(&url, &["--offline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--offline"));
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::Normal);
    ok(&e.fetch(&srv.url(PATH), &[]).0);
    let url = srv.url(PATH);
    drop(srv);
    let (out, j) = e.fetch(&url, &["--offline"]);
    ok(&out);
    assert_eq!(j["from_cache"], true);
}

#[test]
fn file_urls_and_concurrent_fetches_share_one_cache() {
    let e = Env::new();
    let url = format!("file://{}", s(&e.iso));
    let spawn = || {
        wingold()
            .args([
                "fetch",
                "--url",
                &url,
                "--json",
                "--cache",
                s(&e.cache()),
                "--lock",
                s(&e.lock()),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        ok(&out);
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["sha256"], sha(&e.bytes));
        assert!(std::fs::read(j["path"].as_str().unwrap()).unwrap() == e.bytes);
    }
    let objects: Vec<_> = std::fs::read_dir(e.cache().join("objects"))
        .unwrap()
        .collect();
    assert_eq!(objects.len(), 1);
}

#[test]
fn driver_folders_for_each_windows() {
    let e = Env::new();
    let url = format!("file://{}", s(&e.iso));
    let cases = [
        ("2k3/x86", "viostor", "viostor/2k3/x86"),
        ("2k8R2/amd64", "viostor", "viostor/2k8R2/amd64"),
        ("2k12R2/amd64", "NetKVM", "NetKVM/2k12R2/amd64"),
        ("w10/amd64", "viostor", "viostor/w10/amd64"),
        ("w11/amd64", "vioscsi", "vioscsi/w11/amd64"),
        ("2k19/amd64", "Balloon", "Balloon/2k19/amd64"),
        ("2k22/amd64", "viostor", "viostor/2k22/amd64"),
        ("2k25/amd64", "NetKVM", "NetKVM/2k25/amd64"),
    ];
    for (os, driver, folder) in cases {
        let (out, j) = e.fetch(&url, &["--list-drivers", "--for", os]);
        ok(&out);
        let picks = j["drivers"].as_array().unwrap();
        let p = picks
            .iter()
            .find(|p| p["driver"] == driver)
            .unwrap_or_else(|| panic!("{os}: no {driver} in {picks:?}"));
        assert_eq!(p["folder"], folder, "{os}");
    }
    // The picked folders really hold the driver files.
    let (out, _) = e.fetch(&url, &["--list-drivers"]);
    ok(&out);
}

#[test]
fn a_cached_iso_is_returned_under_its_own_bytes_when_another_shares_its_version() {
    // Two sources, one version, different bytes: the versioned name must always
    // show the ISO just accepted, from the network or from the cache.
    let e = Env::new();
    let other_dir = e.dir.join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = fixtures::virtio_iso(&other_dir, "0.1.999", 4096);
    let other_bytes = std::fs::read(&other).unwrap();
    assert_ne!(sha(&other_bytes), sha(&e.bytes));
    let a = format!("file://{}", s(&e.iso));
    let b = format!("file://{}", s(&other));
    let pin_a = sha(&e.bytes);
    let pin_b = sha(&other_bytes);
    let (out, j) = e.fetch(&a, &["--sha256", &pin_a]);
    ok(&out);
    let (out, j2) = e.fetch(&b, &["--sha256", &pin_b]);
    ok(&out);
    assert!(std::fs::read(j2["path"].as_str().unwrap()).unwrap() == other_bytes);
    let (out, j3) = e.fetch(&a, &["--sha256", &pin_a]);
    ok(&out);
    assert_eq!(j3["from_cache"], true);
    assert_eq!(j3["path"], j["path"]);
    assert!(
        std::fs::read(j3["path"].as_str().unwrap()).unwrap() == e.bytes,
        "the name shows the other ISO"
    );
}

/// A server answering `Range: bytes=N-` with a 206 that starts elsewhere (the
/// right length, the wrong bytes): the resume is thrown away and the file fetched
/// again from zero, never accepted as it came.
#[test]
fn a_resume_answered_with_another_range_starts_over() {
    let e = Env::new();
    let half = e.bytes.len() as u64 / 2;
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::CutOnceThenWrongRange(half));
    let (out, j) = e.fetch(&srv.url(PATH), &[]);
    ok(&out);
    assert_eq!(j["sha256"], sha(&e.bytes), "wrong bytes accepted");
    assert!(std::fs::read(j["path"].as_str().unwrap()).unwrap() == e.bytes);
    let reqs = srv.requests();
    assert!(
        reqs.iter().any(|r| r.header("Range").is_some()),
        "no resume tried"
    );
    assert!(
        reqs.last().unwrap().header("Range").is_none(),
        "the last request was not a fresh start"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another range"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Credentials in the URL go to the server and nowhere else: not in the JSON,
/// messages, the lock file, the cache index or the partial file's record.
#[test]
fn credentials_in_urls_are_sent_and_never_shown_or_stored() {
    let e = Env::new();
    let secret = "s3cretPa55";
    let half = e.bytes.len() as u64 / 2;
    let srv = Server::start(e.bytes.clone(), "\"v1\"", Mode::CutOnceAfter(half));
    let url = srv
        .url(PATH)
        .replace("http://", &format!("http://mirror-user:{secret}@"));
    let (out, j) = e.fetch(&url, &[]);
    ok(&out);
    assert_eq!(j["sha256"], sha(&e.bytes));
    let auth = srv.requests()[0]
        .header("Authorization")
        .map(str::to_owned)
        .expect("no credentials sent");
    assert!(auth.starts_with("Basic "), "{auth}");
    let mut seen = vec![
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ];
    for entry in walkdir::WalkDir::new(&e.dir) {
        let entry = entry.unwrap();
        seen.push(entry.path().display().to_string());
        if entry.file_type().is_file() && entry.metadata().unwrap().len() < 1 << 20 {
            seen.push(String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned());
        }
    }
    for text in &seen {
        assert!(!text.contains(secret), "the password leaked: {text}");
        assert!(
            !text.contains("mirror-user"),
            "the user name leaked: {text}"
        );
    }
    assert!(
        j["url"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "{j}"
    );
    // A failure names the URL without them too.
    let srv404 = Server::start(Vec::new(), "\"x\"", Mode::NotFound);
    let url404 = srv404
        .url(PATH)
        .replace("http://", &format!("http://mirror-user:{secret}@"));
    let (out, _) = e.fetch(&url404, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("404") && !err.contains(secret), "{err}");
}
