//! `wingold publish` against a hostile registry: a small HTTP server here on
//! 127.0.0.1 (used with --insecure), with a second listener on 127.0.0.2 standing
//! for "another host". Each case checks the exit code, the time taken, and that no
//! secret reached a listener it was not meant for, nor the output.

use wingold_test_support as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::golden::golden;
use support::*;

const USER: &str = "wingold-user";
const PASSWORD: &str = "s3cret-hunter2";

/// How the registry misbehaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Basic auth; uploads are sent on to the other host by an absolute Location.
    LocationOnOtherHost,
    /// Basic auth; the manifest PUT is redirected (307) to the other host.
    RedirectToOtherHost,
    /// A bearer challenge whose realm is plain HTTP on the other host.
    RealmOnOtherHost,
    /// A bearer challenge whose realm, on this host, never stops sending.
    EndlessToken,
    /// Reads each request and never answers.
    Silent,
}

/// One request as a listener saw it: its first line and headers.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn authorization(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str())
    }
}

/// A listener that answers with `answer(request line, headers, body length)` and
/// records what it saw. Stops when dropped.
struct Listener {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    addr: &'static str,
}

type Answer = dyn Fn(&Seen, &mut TcpStream) + Send + Sync;

impl Listener {
    fn start(addr: &'static str, answer: Arc<Answer>) -> Listener {
        let l = TcpListener::bind(format!("{addr}:0"))
            .unwrap_or_else(|e| panic!("TEST CANNOT RUN: binding {addr}: {e}"));
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: a test that forgets to stop it ends it after two minutes.
            let until = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < until {
                match l.accept() {
                    Ok((stream, _)) => {
                        let (seen, answer, stop) = (seen2.clone(), answer.clone(), stop2.clone());
                        std::thread::spawn(move || serve(stream, &seen, &*answer, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Listener {
            port,
            seen,
            stop,
            addr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}:{}", self.addr, self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads requests on one connection (bodies by Content-Length, skipped) and
/// answers each.
fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, answer: &Answer, stop: &AtomicBool) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let req = Seen {
            line: line.trim_end().to_owned(),
            headers,
        };
        let len: u64 = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if std::io::copy(&mut (&mut reader).take(len), &mut std::io::sink()).is_err() {
            return;
        }
        seen.lock().unwrap().push(req.clone());
        answer(&req, &mut out);
    }
}

fn reply(out: &mut TcpStream, status: &str, headers: &[(&str, String)]) {
    let mut text = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n");
    for (n, v) in headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let _ = out.write_all(text.as_bytes());
}

fn basic() -> String {
    let raw = format!("{USER}:{PASSWORD}");
    let out = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(raw.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    format!("Basic {}", String::from_utf8(out.stdout).unwrap())
}

/// The registry for `mode`, with `other` as the other host.
fn hostile(mode: Mode, other: &Listener) -> Listener {
    let other_url = other.url();
    let auth = basic();
    let self_url = Arc::new(Mutex::new(String::new()));
    let self_url2 = self_url.clone();
    let l = Listener::start(
        "127.0.0.1",
        Arc::new(move |req: &Seen, out: &mut TcpStream| {
            let path = req.line.split(' ').nth(1).unwrap_or("");
            let method = req.line.split(' ').next().unwrap_or("");
            match mode {
                Mode::Silent => std::thread::sleep(Duration::from_secs(60)),
                Mode::RealmOnOtherHost if path == "/v2/" => reply(
                    out,
                    "401 Unauthorized",
                    &[(
                        "WWW-Authenticate",
                        format!("Bearer realm=\"{other_url}/token\",service=\"hostile\""),
                    )],
                ),
                Mode::EndlessToken if path == "/v2/" => reply(
                    out,
                    "401 Unauthorized",
                    &[(
                        "WWW-Authenticate",
                        format!(
                            "Bearer realm=\"{}/token\",service=\"hostile\"",
                            self_url2.lock().unwrap()
                        ),
                    )],
                ),
                Mode::EndlessToken if path.starts_with("/token") => {
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"token\":\"",
                    );
                    let chunk = vec![b'a'; 64 << 10];
                    let until = Instant::now() + Duration::from_secs(60);
                    while Instant::now() < until && out.write_all(&chunk).is_ok() {}
                }
                _ if req.authorization() != Some(auth.as_str()) => reply(
                    out,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", "Basic realm=\"hostile\"".into())],
                ),
                _ if path == "/v2/" => reply(out, "200 OK", &[]),
                Mode::RedirectToOtherHost if method == "PUT" && path.contains("/manifests/") => {
                    reply(
                        out,
                        "307 Temporary Redirect",
                        &[("Location", format!("{other_url}/elsewhere{path}"))],
                    )
                }
                Mode::RedirectToOtherHost if method == "POST" => reply(
                    out,
                    "202 Accepted",
                    &[("Location", "/v2/win/x/blobs/uploads/1".into())],
                ),
                _ if method == "HEAD" => reply(out, "404 Not Found", &[]),
                _ if method == "POST" => reply(
                    out,
                    "202 Accepted",
                    &[("Location", format!("{other_url}/upload/1"))],
                ),
                _ => reply(out, "201 Created", &[]),
            }
        }),
    );
    *self_url.lock().unwrap() = l.url();
    l
}

/// The other host: takes uploads (201), and answers a token request with a token.
fn other_host() -> Listener {
    Listener::start(
        "127.0.0.2",
        Arc::new(|req: &Seen, out: &mut TcpStream| {
            if req.line.contains("/token") {
                let body = b"{\"token\":\"t\"}";
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = out.write_all(body);
            } else {
                reply(out, "201 Created", &[]);
            }
        }),
    )
}

/// `publish GOLDEN docker://127.0.0.1:PORT/win/x:v1 --insecure --json` with the
/// password on stdin: exit code, stdout + stderr, seconds taken.
fn publish_to(port: u16, extra: &[&str], golden: &std::path::Path) -> (Option<i32>, String, f64) {
    let to = format!("docker://127.0.0.1:{port}/win/x:v1");
    let start = Instant::now();
    let mut child = wingold()
        .args(["publish", s(golden), &to, "--insecure", "--json"])
        .args(["--username", USER, "--password-stdin"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, start.elapsed().as_secs_f64())
}

/// The other host got a request whose first line holds `want`, and no request
/// of it carried credentials.
fn reached_without_credentials(other: &Listener, want: &str, text: &str) {
    let there = other.seen();
    assert!(
        there.iter().any(|r| r.line.contains(want)),
        "no {want:?} reached the other host: {there:?} {text}"
    );
    for r in &there {
        assert_eq!(r.authorization(), None, "sent to the other host: {r:?}");
    }
}

#[test]
fn credentials_stay_with_their_registry_and_nothing_hangs() {
    let g = golden();

    // An upload Location on another host: the upload goes there, the
    // credentials do not.
    let other = other_host();
    let reg = hostile(Mode::LocationOnOtherHost, &other);
    let (code, text, secs) = publish_to(reg.port, &[], &g.path);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    reached_without_credentials(&other, "PUT /upload/1", &text);
    assert!(reg.seen().iter().any(|r| r.authorization().is_some()));
    println!("Location on another host: {secs:.1} s");

    // A 307 to another host: what is redirected goes there, the credentials do
    // not.
    let other = other_host();
    let reg = hostile(Mode::RedirectToOtherHost, &other);
    let (_, text, _) = publish_to(reg.port, &[], &g.path);
    assert!(!text.contains(PASSWORD), "{text}");
    reached_without_credentials(&other, "/elsewhere/", &text);

    // A token realm in clear on another host: refused before anything is sent.
    let other = other_host();
    let reg = hostile(Mode::RealmOnOtherHost, &other);
    let (code, text, _) = publish_to(reg.port, &[], &g.path);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("in clear"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(other.seen().is_empty(), "{:?}", other.seen());

    // A registry that never answers: ended by --timeout, not waited on forever.
    let other = other_host();
    let reg = hostile(Mode::Silent, &other);
    let (code, text, secs) = publish_to(reg.port, &["--timeout", "2"], &g.path);
    assert_eq!(code, Some(1), "{text}");
    assert!(secs < 30.0, "took {secs:.1} s: {text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");

    // A token service that never stops sending: read up to a cap, then refused.
    let reg = hostile(Mode::EndlessToken, &other);
    let (code, text, secs) = publish_to(reg.port, &["--timeout", "20"], &g.path);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("over 1 MiB"), "{text}");
    assert!(secs < 30.0, "took {secs:.1} s: {text}");
}

#[test]
fn a_password_from_an_endless_stdin_is_refused_not_read_forever() {
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let start = Instant::now();
    let out = wingold()
        .args([
            "publish",
            "/nonexistent/golden.qcow2",
            "docker://127.0.0.1:9/win/x",
        ])
        .args(["--username", USER, "--password-stdin"])
        .stdin(zero)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("over 64 KiB"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_password_in_the_reference_is_refused_and_never_repeated() {
    for reference in [
        format!("docker://{USER}:{PASSWORD}@127.0.0.1:9/win/x:v1"),
        format!("docker://{PASSWORD}@127.0.0.1:9/win/x"),
    ] {
        for json in [false, true] {
            let mut cmd = wingold();
            cmd.args(["publish", "/nonexistent/golden.qcow2", &reference]);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(2), "{text}");
            assert!(text.contains("--password-stdin"), "{text}");
            assert!(!text.contains(PASSWORD), "{text}");
            assert_eq!(text.trim().lines().count(), 1, "{text}");
        }
    }
}
