//! A loopback HTTP/1.1 server for fetch tests, serving one file and able to
//! misbehave on demand: cut a transfer, ignore ranges, send HTML, fail, stall.
//! It listens on 127.0.0.1 only and stops when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// The first full-body response stops after this many bytes.
    CutOnceAfter(u64),
    /// As CutOnceAfter, and Range requests get the whole body (200).
    CutOnceThenIgnoreRange(u64),
    /// As CutOnceAfter, and a Range request for `N-` gets a 206 of the right length
    /// that starts at 0 instead (`Content-Range: bytes 0-…`): the wrong bytes.
    CutOnceThenWrongRange(u64),
    Html,
    NotFound,
    ServerError,
    /// Headers, a few bytes, then silence.
    Stall,
}

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct State {
    pub body: Arc<Vec<u8>>,
    pub etag: String,
    pub mode: Mode,
    pub requests: Vec<Request>,
    pub body_bytes_sent: u64,
    cut_done: bool,
}

pub struct Server {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
    stop: Arc<Mutex<bool>>,
}

impl Server {
    pub fn start(body: Vec<u8>, etag: &str, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            body: Arc::new(body),
            etag: etag.to_owned(),
            mode,
            requests: Vec::new(),
            body_bytes_sent: 0,
            cut_done: false,
        }));
        let stop = Arc::new(Mutex::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || loop {
            if *sp.lock().unwrap() {
                return;
            }
            match listener.accept() {
                Ok((conn, _)) => {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        let _ = serve(conn, &st);
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        Server { port, state, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn set(&self, body: Vec<u8>, etag: &str, mode: Mode) {
        let mut s = self.state.lock().unwrap();
        s.body = Arc::new(body);
        s.etag = etag.to_owned();
        s.mode = mode;
        s.cut_done = false;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
    }
}

fn serve(conn: TcpStream, state: &Arc<Mutex<State>>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut req = Request {
        path: path.clone(),
        headers: Vec::new(),
    };
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((n, v)) = h.trim_end().split_once(':') {
            req.headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut out = conn;
    let (body, etag, mode, cut) = {
        let mut s = state.lock().unwrap();
        s.requests.push(req.clone());
        let cut = match s.mode {
            Mode::CutOnceAfter(n)
            | Mode::CutOnceThenIgnoreRange(n)
            | Mode::CutOnceThenWrongRange(n)
                if !s.cut_done =>
            {
                Some(n)
            }
            _ => None,
        };
        (s.body.clone(), s.etag.clone(), s.mode, cut)
    };
    let lm = "Wed, 01 Oct 2025 10:00:00 GMT";
    let head = |status: &str, extra: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
    };
    match mode {
        Mode::NotFound => return out.write_all(head("404 Not Found", "", 0).as_bytes()),
        Mode::ServerError => {
            return out.write_all(head("500 Internal Server Error", "", 0).as_bytes())
        }
        Mode::Html => {
            let page =
                b"<!DOCTYPE html><html><body>Checking that you are not a bot...</body></html>";
            out.write_all(head("200 OK", "Content-Type: text/html\r\n", page.len()).as_bytes())?;
            return out.write_all(page);
        }
        _ => {}
    }
    if req.header("If-None-Match") == Some(etag.as_str()) {
        return out.write_all(head("304 Not Modified", &format!("ETag: {etag}\r\n"), 0).as_bytes());
    }
    let validators = format!("ETag: {etag}\r\nLast-Modified: {lm}\r\nAccept-Ranges: bytes\r\n");
    let range_start = req
        .header("Range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let if_range_ok = req.header("If-Range").is_none_or(|v| v == etag || v == lm);
    let honour_range = !matches!(mode, Mode::CutOnceThenIgnoreRange(_));
    if let (Some(start), true, true) = (range_start, if_range_ok, honour_range) {
        if start < body.len() && matches!(mode, Mode::CutOnceThenWrongRange(_)) {
            let len = body.len() - start;
            let extra = format!(
                "{validators}Content-Range: bytes 0-{}/{}\r\n",
                len - 1,
                body.len()
            );
            out.write_all(head("206 Partial Content", &extra, len).as_bytes())?;
            state.lock().unwrap().body_bytes_sent += len as u64;
            return out.write_all(&body[..len]);
        }
        if start < body.len() {
            let part = &body[start..];
            let extra = format!(
                "{validators}Content-Range: bytes {start}-{}/{}\r\n",
                body.len() - 1,
                body.len()
            );
            out.write_all(head("206 Partial Content", &extra, part.len()).as_bytes())?;
            state.lock().unwrap().body_bytes_sent += part.len() as u64;
            return out.write_all(part);
        }
    }
    out.write_all(head("200 OK", &validators, body.len()).as_bytes())?;
    if mode == Mode::Stall {
        out.write_all(&body[..16.min(body.len())])?;
        out.flush()?;
        std::thread::sleep(Duration::from_secs(20));
        return Ok(());
    }
    let send = match cut {
        Some(n) => {
            state.lock().unwrap().cut_done = true;
            &body[..(n as usize).min(body.len())]
        }
        None => &body[..],
    };
    state.lock().unwrap().body_bytes_sent += send.len() as u64;
    out.write_all(send)?;
    out.flush()?;
    if cut.is_some() {
        // Give the client the bytes, then drop the connection mid-body.
        std::thread::sleep(Duration::from_millis(100));
        out.shutdown(std::net::Shutdown::Both)?;
    }
    Ok(())
}
