//! The five calls of the OCI distribution API wingold needs, on the reqwest it
//! already has: check a blob, upload one (one streamed monolithic PUT, or PATCH
//! chunks), put a manifest; with anonymous, basic and bearer-token access, TLS by
//! default and plain HTTP only for the host `--insecure` names. Knows nothing of
//! golden images, manifests or OCI image layouts: `publish` builds the image, this
//! layer moves its blobs.

#![deny(unsafe_code)]

use crate::error::Setting;
use crate::net::{one_line, with_backoff, Stop, Try};

mod auth;
mod error;
mod tls;

pub use auth::{base64, credentials_from_files, unbase64};
pub use error::{BadReference, Error};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use std::io::Read;
use std::time::Duration;

/// The wait before the first retry; it doubles each time.
const FIRST_WAIT: Duration = Duration::from_millis(500);

/// Where to push: `HOST[:PORT]` and `REPO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub repo: String,
    pub tag: Option<String>,
}

/// Parses `docker://HOST[:PORT]/REPO[:TAG]`.
pub fn parse_reference(text: &str) -> Result<Target, BadReference> {
    let text_owned = || text.to_owned();
    let rest = text
        .strip_prefix("docker://")
        .ok_or_else(|| BadReference::Shape { text: text_owned() })?;
    // A user name and password in the reference would be printed and kept in
    // shell history: refused without repeating them.
    if let Some((userinfo, after)) = rest.split_once('@') {
        if !userinfo.contains('/') {
            return Err(BadReference::Userinfo {
                shown: format!("docker://…@{after}"),
            });
        }
    }
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| BadReference::NoRepository { text: text_owned() })?;
    if path.contains('@') {
        return Err(BadReference::Digest { text: text_owned() });
    }
    if path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.matches(':').count() > 1)
    {
        return Err(BadReference::TwoTags { text: text_owned() });
    }
    if host.is_empty() || path.is_empty() {
        return Err(BadReference::Shape { text: text_owned() });
    }
    let (repo, tag) = match path.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t.to_owned())),
        _ => (path, None),
    };
    let repo_ok = repo.split('/').all(|c| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    });
    if !repo_ok {
        return Err(BadReference::Repository { text: text_owned() });
    }
    if let Some(t) = &tag {
        if !valid_tag(t) {
            return Err(BadReference::Tag {
                text: text_owned(),
                tag: t.clone(),
            });
        }
    }
    Ok(Target {
        host: host.to_owned(),
        repo: repo.to_owned(),
        tag,
    })
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Credentials; never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.username)
    }
}

/// A URL's scheme, host and port (the scheme's default filled in): where
/// credentials may go.
type Origin = (String, String, u16);

fn origin(url: &str) -> Option<Origin> {
    let u = reqwest::Url::parse(url).ok()?;
    Some((
        u.scheme().to_owned(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default()?,
    ))
}

/// The most a token service's answer may be: tokens are a few KiB.
const TOKEN_ANSWER_CAP: u64 = 1 << 20;

/// A connection to one repository of one registry.
pub struct Registry {
    client: Client,
    base: String,
    /// The registry's own scheme, host and port: the only place the credentials
    /// and the token are sent (a token service gets the credentials only over
    /// TLS, or on this host with --insecure).
    origin: Origin,
    insecure: bool,
    /// How long one request may take without an answer (uploads get more in
    /// proportion to their size).
    pub timeout: Duration,
    pub target: Target,
    creds: Option<Credentials>,
    /// The `Authorization` header value, once the registry asked for one.
    auth: Option<String>,
    pub retries: u32,
}

impl Registry {
    pub fn new(
        target: Target,
        insecure: bool,
        ca_cert: Option<&[u8]>,
        creds: Option<Credentials>,
    ) -> Result<Registry, Error> {
        let mut b = Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .timeout(None::<Duration>)
            .user_agent(concat!("wingold/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_cert {
            let tls = tls::with_pinned(pem).map_err(|reason| Error::CaCert { reason })?;
            b = b.use_preconfigured_tls(tls);
        }
        let scheme = if insecure { "http" } else { "https" };
        let base = format!("{scheme}://{}", target.host);
        let origin = origin(&base).ok_or_else(|| Error::Client {
            reason: format!("{base} is no URL"),
        })?;
        Ok(Registry {
            client: b.build().map_err(|e| Error::Client {
                reason: one_line(&e),
            })?,
            base,
            origin,
            insecure,
            timeout: Duration::from_secs(60),
            target,
            creds,
            auth: None,
            retries: 4,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.target.repo)
    }

    /// A request to `url`, bounded in time, carrying the credentials only when
    /// `url` is the registry's own scheme, host and port.
    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let r = self.client.request(method, url).timeout(self.timeout);
        match &self.auth {
            Some(a) if origin(url).as_ref() == Some(&self.origin) => r.header(AUTHORIZATION, a),
            _ => r,
        }
    }

    /// The time a request carrying `len` bytes may take: the timeout, plus the
    /// body at 256 KiB/s.
    fn upload_timeout(&self, len: u64) -> Duration {
        self.timeout + Duration::from_secs(len / (256 << 10))
    }

    /// Refuses a URL the registry named that would go in clear (http) when TLS
    /// was asked for.
    fn refuse_plain(&self, what: &'static str, url: &str) -> Result<(), Error> {
        if !self.insecure && origin(url).is_none_or(|o| o.0 != "https") {
            return Err(Error::Plaintext {
                host: self.host(),
                what,
                url: url.to_owned(),
            });
        }
        Ok(())
    }

    /// Asks `GET /v2/` and settles how to authenticate (basic, or a bearer token
    /// for pull and push on this repository).
    pub fn login(&mut self) -> Result<(), Error> {
        let url = format!("{}/v2/", self.base);
        let r = self
            .request(Method::GET, &url)
            .send()
            .map_err(|e| self.connection("asking /v2/", &e))?;
        if r.status().is_success() {
            return Ok(());
        }
        if r.status() != StatusCode::UNAUTHORIZED {
            return Err(self.answered("asking /v2/", r.status()));
        }
        let challenge = r
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let creds = self.creds.clone();
        if challenge.to_ascii_lowercase().starts_with("basic") {
            let c = creds.ok_or_else(|| Error::NeedsCredentials { host: self.host() })?;
            let token = base64(format!("{}:{}", c.username, c.password).as_bytes());
            self.auth = Some(format!("Basic {token}"));
            let check = self
                .request(Method::GET, &url)
                .send()
                .map_err(|e| self.connection("logging in", &e))?;
            if check.status() == StatusCode::UNAUTHORIZED {
                return Err(Error::CredentialsRefused { host: self.host() });
            }
            return Ok(());
        }
        if challenge.to_ascii_lowercase().starts_with("bearer") {
            let param = |name: &str| {
                challenge.split(',').find_map(|p| {
                    let p = p
                        .trim()
                        .trim_start_matches("Bearer ")
                        .trim_start_matches("bearer ");
                    let (k, v) = p.split_once('=')?;
                    (k.trim() == name).then(|| v.trim().trim_matches('"').to_owned())
                })
            };
            let realm =
                param("realm").ok_or_else(|| self.protocol("a bearer challenge without realm"))?;
            self.refuse_plain("its token service", &realm)?;
            let realm_origin =
                origin(&realm).ok_or_else(|| self.protocol("a bearer realm that is no URL"))?;
            let mut req = self.client.get(&realm).timeout(self.timeout).query(&[(
                "scope",
                format!("repository:{}:pull,push", self.target.repo),
            )]);
            if let Some(service) = param("service") {
                req = req.query(&[("service", service)]);
            }
            if let Some(c) = &creds {
                // Over TLS only, or in clear to the registry's own host when
                // --insecure says that host is trusted so.
                if realm_origin.0 != "https" && realm_origin.1 != self.origin.1 {
                    return Err(Error::Plaintext {
                        host: self.host(),
                        what: "its token service (another host)",
                        url: realm,
                    });
                }
                req = req.basic_auth(&c.username, Some(&c.password));
            }
            let r = req
                .send()
                .map_err(|e| self.connection("asking for a token", &e))?;
            if !r.status().is_success() {
                return Err(Error::TokenRefused {
                    host: self.host(),
                    status: r.status(),
                });
            }
            let mut body = Vec::new();
            r.take(TOKEN_ANSWER_CAP + 1)
                .read_to_end(&mut body)
                .map_err(|e| Error::Connection {
                    host: self.host(),
                    what: "reading the token".into(),
                    reason: e.to_string(),
                })?;
            if body.len() as u64 > TOKEN_ANSWER_CAP {
                return Err(self.protocol("a token service's answer over 1 MiB"));
            }
            let j: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| self.protocol(&format!("the token service's answer: {e}")))?;
            let token = j["token"]
                .as_str()
                .or(j["access_token"].as_str())
                .ok_or_else(|| self.protocol("no token in the token service's answer"))?;
            self.auth = Some(format!("Bearer {token}"));
            return Ok(());
        }
        Err(self.protocol(&format!("unknown authentication scheme {challenge:?}")))
    }

    fn host(&self) -> String {
        self.target.host.clone()
    }

    fn connection(&self, what: &str, e: &reqwest::Error) -> Error {
        let reason = one_line(e);
        let hint = if reason.contains("UnknownIssuer") || reason.contains("CaUsedAsEndEntity") {
            Some(format!(
                "its certificate is signed by no authority wingold trusts: give the \
                 registry's CA, or its self-signed certificate, with {} FILE",
                Setting::CaCert
            ))
        } else if reason.contains("InvalidContentType") || reason.contains("CorruptMessage") {
            Some(format!(
                "it does not speak TLS here: for a registry on plain HTTP that you trust \
                 on this network, use {}",
                Setting::Insecure
            ))
        } else if reason.contains("NotValidForName") {
            Some("its certificate is for another name: publish to the name it was made for".into())
        } else {
            None
        };
        match hint {
            Some(hint) => Error::Tls {
                host: self.host(),
                what: what.to_owned(),
                hint,
            },
            None => Error::Connection {
                host: self.host(),
                what: what.to_owned(),
                reason,
            },
        }
    }

    /// Sends `request` (with the credentials) once; anything but a success is an
    /// error.
    fn send_ok(&self, what: &str, request: RequestBuilder) -> Result<Response, Error> {
        let r = request.send().map_err(|e| self.connection(what, &e))?;
        self.check(&r, what)?;
        Ok(r)
    }

    /// What a registry's answer other than a success means.
    fn check(&self, r: &Response, what: &str) -> Result<(), Error> {
        let (host, what, status) = (self.host(), what.to_owned(), r.status());
        Err(match status {
            s if s.is_success() => return Ok(()),
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge { host, what },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Error::NotAllowed { host, what, status }
            }
            _ => Error::Answered { host, what, status },
        })
    }

    fn answered(&self, what: &str, status: StatusCode) -> Error {
        Error::Answered {
            host: self.host(),
            what: what.to_owned(),
            status,
        }
    }

    fn protocol(&self, problem: &str) -> Error {
        Error::Protocol {
            host: self.host(),
            problem: problem.to_owned(),
        }
    }

    /// True when the registry has the blob.
    pub fn has_blob(&self, digest: &str) -> Result<bool, Error> {
        let r = self.retry("checking a blob", || {
            self.request(Method::HEAD, &self.url(&format!("blobs/{digest}")))
                .send()
        })?;
        match r.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(self.answered(&format!("checking blob {digest}"), s)),
        }
    }

    /// Uploads a blob of `len` bytes that `open` yields (called again for each
    /// attempt): one streamed PUT, or PATCHes of `chunk` bytes.
    pub fn upload(
        &self,
        digest: &str,
        len: u64,
        chunk: Option<usize>,
        open: &dyn Fn() -> anyhow::Result<Box<dyn Read + Send>>,
    ) -> anyhow::Result<()> {
        with_backoff(
            self.retries,
            FIRST_WAIT,
            || match self.upload_once(digest, len, chunk, open) {
                Ok(()) => Try::Done(()),
                Err(e) if is_transient(&e) => Try::Again(e),
                Err(e) => Try::Fail(e),
            },
            |e, wait| {
                crate::note::say(format!(
                    "{}: upload of {digest} failed ({e:#}); retrying in {} ms",
                    self.target.host,
                    wait.as_millis()
                ))
            },
        )
        .map_err(|stop| match stop {
            Stop::GaveUp(e) | Stop::Failed(e) => e,
        })
    }

    fn upload_once(
        &self,
        digest: &str,
        len: u64,
        chunk: Option<usize>,
        open: &dyn Fn() -> anyhow::Result<Box<dyn Read + Send>>,
    ) -> anyhow::Result<()> {
        let r = self.send_ok(
            "starting an upload",
            self.request(Method::POST, &self.url("blobs/uploads/"))
                .header(reqwest::header::CONTENT_LENGTH, 0),
        )?;
        let mut location = self.location(&r)?;
        let mut reader = open()?;
        if let Some(size) = chunk {
            let mut at = 0u64;
            let mut buf = vec![0u8; size];
            while at < len {
                let want = size.min((len - at) as usize);
                reader.read_exact(&mut buf[..want])?;
                let r = self.send_ok(
                    "uploading a chunk",
                    self.request(Method::PATCH, &location)
                        .timeout(self.upload_timeout(want as u64))
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("Content-Range", format!("{at}-{}", at + want as u64 - 1))
                        .body(buf[..want].to_vec()),
                )?;
                location = self.location(&r)?;
                at += want as u64;
            }
            let sep = if location.contains('?') { '&' } else { '?' };
            let r = self.send_ok(
                "finishing an upload",
                self.request(Method::PUT, &format!("{location}{sep}digest={digest}"))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, 0),
            )?;
            return Ok(self.same_digest(&r, digest)?);
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self.send_ok(
            "uploading",
            self.request(Method::PUT, &format!("{location}{sep}digest={digest}"))
                .timeout(self.upload_timeout(len))
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(Body::sized(reader, len)),
        )?;
        Ok(self.same_digest(&r, digest)?)
    }

    /// Puts a manifest under `reference` (a tag); returns the digest the
    /// registry gives it, which must be `digest`.
    pub fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        digest: &str,
    ) -> Result<(), Error> {
        let r = self.retry("putting the manifest", || {
            self.request(Method::PUT, &self.url(&format!("manifests/{reference}")))
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
                .send()
        })?;
        self.check(&r, "putting the manifest")?;
        self.same_digest(&r, digest)
    }

    fn same_digest(&self, r: &Response, digest: &str) -> Result<(), Error> {
        if let Some(got) = r
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
        {
            if got != digest {
                return Err(Error::DigestMismatch {
                    host: self.host(),
                    got: got.to_owned(),
                    digest: digest.to_owned(),
                });
            }
        }
        Ok(())
    }

    fn location(&self, r: &Response) -> Result<String, Error> {
        let loc = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol("an upload without a Location"))?;
        let url = reqwest::Url::parse(&self.base)
            .and_then(|base| base.join(loc))
            .map_err(|_| self.protocol(&format!("an upload Location that is no URL: {loc:?}")))?
            .to_string();
        self.refuse_plain("an upload Location", &url)?;
        Ok(url)
    }

    fn retry(
        &self,
        what: &str,
        send: impl Fn() -> reqwest::Result<Response>,
    ) -> Result<Response, Error> {
        // A 5xx answer is retried; the last one is returned as it came.
        let sent: Result<_, Stop<_, std::convert::Infallible>> = with_backoff(
            self.retries,
            FIRST_WAIT,
            || match send() {
                Ok(r) if r.status().is_server_error() => Try::Again(Ok(r)),
                Ok(r) => Try::Done(r),
                Err(e) => Try::Again(Err(e)),
            },
            |_, _| {},
        );
        match sent {
            Ok(r) | Err(Stop::GaveUp(Ok(r))) => Ok(r),
            Err(Stop::GaveUp(Err(e))) => Err(self.connection(what, &e)),
            Err(Stop::Failed(never)) => match never {},
        }
    }
}

/// Whether a failed upload attempt is worth another: a registry error that is
/// (not the blob's reader failing).
fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<Error>().is_some_and(Error::is_transient))
}

#[cfg(test)]
mod tests {
    #[test]
    fn references_parse() {
        let t = super::parse_reference("docker://127.0.0.1:5000/windows/win2k22:v1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.repo.as_str(), t.tag.as_deref()),
            ("127.0.0.1:5000", "windows/win2k22", Some("v1"))
        );
        assert!(super::parse_reference("docker://host/Upper").is_err());
        assert!(super::parse_reference("http://host/repo").is_err());
    }
}
