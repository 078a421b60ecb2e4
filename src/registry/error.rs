//! The registry layer's one error type: what a push can run into, each with whose
//! move it is.

use crate::error::Setting;
use reqwest::StatusCode;
use std::path::PathBuf;

/// What went wrong talking to a registry. Credentials the registry will not take
/// are the user's to fix (bad input); the rest is the network's or the
/// registry's (failures).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference that does not parse.
    #[error(transparent)]
    Reference(#[from] BadReference),

    /// An auth file that is there but broken (never what it holds).
    #[error("{}: {problem}; fix or remove it (podman login rewrites it)", .path.display())]
    AuthFile { path: PathBuf, problem: String },

    #[error(transparent)]
    Input(#[from] crate::input::Error),

    /// No answer at all: DNS, a refused or dropped connection, TLS.
    #[error("{host}: {what}: {reason}")]
    Connection {
        host: String,
        what: String,
        reason: String,
    },

    /// TLS could not be set up, for a reason the user can act on.
    #[error("{host}: {what}: {hint}")]
    Tls {
        host: String,
        what: String,
        hint: String,
    },

    /// An answer wingold cannot go on from.
    #[error("{host}: {what}: {status}")]
    Answered {
        host: String,
        what: String,
        status: StatusCode,
    },

    #[error(
        "{host}: {what}: 413 — a proxy in front of the registry limits request sizes; \
         try {chunked}",
        chunked = Setting::Chunked
    )]
    TooLarge { host: String, what: String },

    #[error(
        "{host}: the registry wants a user name and password ({user}, {pass}, or a \
         containers/docker auth file)",
        user = Setting::Username,
        pass = Setting::PasswordStdin
    )]
    NeedsCredentials { host: String },

    #[error("{host}: the user name or password was refused")]
    CredentialsRefused { host: String },

    #[error("{host}: the token service refused the credentials ({status})")]
    TokenRefused { host: String, status: StatusCode },

    #[error("{host}: {what}: {status} — the credentials do not allow pushing here")]
    NotAllowed {
        host: String,
        what: String,
        status: StatusCode,
    },

    /// The registry broke the protocol: no realm, no token, no Location, an
    /// unknown authentication scheme.
    #[error("{host}: {problem}")]
    Protocol { host: String, problem: String },

    #[error("{host}: the registry reports {got} for what wingold digested as {digest}")]
    DigestMismatch {
        host: String,
        got: String,
        digest: String,
    },

    /// The registry sent wingold to plain HTTP while TLS was asked for.
    #[error(
        "{host}: the registry sends {what} to {url}, in clear; wingold sends nothing \
         there without TLS ({insecure} allows it, for a registry you trust on this \
         network)",
        insecure = Setting::Insecure
    )]
    Plaintext {
        host: String,
        what: &'static str,
        url: String,
    },

    #[error("{ca}: not a PEM certificate ({reason})", ca = Setting::CaCert)]
    CaCert { reason: String },

    #[error("the HTTP client: {reason}")]
    Client { reason: String },
}

impl Error {
    /// Worth another attempt: a dropped connection or a 5xx.
    pub(super) fn is_transient(&self) -> bool {
        match self {
            Error::Connection { .. } => true,
            Error::Answered { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

crate::error::classify! {
    impl Classify for Error {
        fn kind(&self) -> crate::error::Kind {
            use crate::error::Kind;
            match self {
                Error::Input(e) => crate::error::Classify::kind(e),
                Error::Reference(_)
                | Error::AuthFile { .. }
                | Error::NeedsCredentials { .. }
                | Error::CredentialsRefused { .. }
                | Error::NotAllowed { .. }
                | Error::Plaintext { .. }
                | Error::Tls { .. }
                | Error::CaCert { .. } => Kind::BadInput,
                Error::TokenRefused { status, .. }
                    if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN =>
                {
                    Kind::BadInput
                }
                _ => Kind::Failure,
            }
        }
    }
}

/// A `docker://HOST[:PORT]/REPO[:TAG]` that does not parse.
/// The payload of `Error::Reference`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadReference {
    #[error("{text}: give docker://HOST[:PORT]/REPO[:TAG]")]
    Shape { text: String },
    #[error("{text}: no repository after the host")]
    NoRepository { text: String },
    #[error("{text}: a repository is lower-case letters, digits, '.', '_', '-' and '/'")]
    Repository { text: String },
    #[error("{text}: {tag:?} is no valid tag")]
    Tag { text: String, tag: String },
    #[error(
        "{shown}: no user name or password in the reference; give {user} and {pass}, or \
         log in with podman or docker",
        user = Setting::Username,
        pass = Setting::PasswordStdin
    )]
    Userinfo { shown: String },
    #[error(
        "{text}: a digest names an image that exists; publish pushes to a tag: give REPO[:TAG]"
    )]
    Digest { text: String },
    #[error("{text}: more than one ':' after the repository; give REPO[:TAG]")]
    TwoTags { text: String },
}
