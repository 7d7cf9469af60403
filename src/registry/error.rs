//! The one error type of the registry client. Messages name the image (or the host for transport
//! failures) so the caller can print them as they are, BuildKit-style: `X: not found` and
//! `pull access denied for X: ...` keep BuildKit's wording, `push access denied for X: ...`
//! mirrors it; everything else follows the house style (lowercase, values in backticks).

use std::path::PathBuf;

use crate::oci::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    InvalidReference(#[from] crate::oci::ReferenceError),

    #[error("failed to read registry config `{}`", path.display())]
    ReadConfig { path: PathBuf, source: std::io::Error },

    #[error("failed to parse registry config `{}`", path.display())]
    ParseConfig { path: PathBuf, source: Box<toml::de::Error> },

    #[error("failed to read credentials file `{}`", path.display())]
    ReadCredentials { path: PathBuf, source: std::io::Error },

    #[error("failed to parse credentials file `{}`", path.display())]
    ParseCredentials { path: PathBuf, source: serde_json::Error },

    #[error("invalid `auth` entry for `{host}` in `{}`", path.display())]
    InvalidAuthEntry { host: String, path: PathBuf },

    #[error("credential helper `docker-credential-{helper}` failed for `{host}`: {message}")]
    CredentialHelper { helper: String, host: String, message: String },

    #[error("failed to read certificate file `{}`", path.display())]
    ReadCertificate { path: PathBuf, source: std::io::Error },

    #[error("invalid TLS settings for registry `{host}`")]
    Tls { host: String, source: reqwest::Error },

    #[error("failed to start the registry runtime")]
    Runtime { source: std::io::Error },

    #[error("pull access denied for {reference}: {reason}")]
    AccessDenied { reference: String, reason: String },

    #[error("push access denied for {reference}: {reason}")]
    PushAccessDenied { reference: String, reason: String },

    #[error("{reference}: not found")]
    NotFound { reference: String },

    #[error("no match for platform `{platform}` in manifest of {reference}")]
    NoMatchingPlatform { reference: String, platform: String },

    /// A transport failure: connecting, a redirect loop, a body cut short, a timeout. The
    /// message says which (BuildKit's users saw "failed to connect" for all of them), and
    /// `cause` what broke underneath with the config key that fixes it (`transport.rs`).
    #[error("{}{cause}", transport_message(host, reference, source))]
    Connect { host: String, reference: String, source: reqwest::Error, cause: String },

    #[error("unexpected status `{status}` from registry `{host}` for {reference}{message}")]
    UnexpectedStatus { host: String, reference: String, status: u16, message: String },

    /// The realm comes from the registry: shown at most 200 characters long.
    #[error("failed to get an auth token from `{}` for {reference}: {detail}", realm.chars().take(200).collect::<String>())]
    Token { realm: String, reference: String, detail: String },

    /// Text, not [`Digest`]: the expected one may be a reference's (any algorithm), the actual
    /// one a registry's header.
    #[error("digest mismatch for {reference}: expected `{expected}`, got `{actual}`")]
    DigestMismatch { reference: String, expected: String, actual: String },

    #[error("size mismatch for `{digest}` of {reference}: expected {expected} bytes, got {actual}")]
    SizeMismatch { reference: String, digest: Digest, expected: u64, actual: u64 },

    #[error("unsupported digest `{digest}` for {reference}")]
    UnsupportedDigest { reference: String, digest: String },

    /// `what`: the manifest, the config, the token response.
    #[error("{what} of {reference} is too large (more than {limit} bytes)")]
    TooLarge { what: &'static str, reference: String, limit: usize },

    #[error("invalid manifest for {reference}: {reason}")]
    InvalidManifest { reference: String, reason: String },

    #[error("unsupported manifest media type `{media_type}` for {reference}")]
    UnsupportedMediaType { reference: String, media_type: String },

    #[error("failed to read blob `{digest}` to push to {reference}")]
    ReadBlob { reference: String, digest: Digest, source: std::io::Error },

    #[error("registry `{host}` acknowledged {acknowledged} bytes of {reference} after {sent} were sent")]
    UploadOffset { host: String, reference: String, sent: u64, acknowledged: u64 },

    #[error("timed out: `{host}` did not send {reference} within {seconds:.0} s")]
    Timeout { host: String, reference: String, seconds: f64 },

    #[error("timed out: `{host}` stalled sending {reference} ({bytes} bytes in {seconds:.0} s)")]
    Stalled { host: String, reference: String, bytes: u64, seconds: f64 },

    #[error("canceled")]
    Canceled,

    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// BuildKit's words for an http source's answer that is not 2xx or 304.
    #[error("`{url}`: invalid response status {status}")]
    UrlStatus { url: String, status: u16 },

    /// A transport failure fetching a URL; `cause` as in [`RegistryError::Connect`], which
    /// says what reqwest's error chain would (so `error` is not a `source`).
    #[error("{} `{url}`{cause}", transport_failure(error))]
    Download { url: String, error: reqwest::Error, cause: String },

    #[error("failed to write the download of `{url}`")]
    WriteDownload { url: String, source: std::io::Error },

    #[error("failed to write blob `{digest}` of {reference}: {source}")]
    Write { reference: String, digest: Digest, source: std::io::Error },
}

fn transport_message(host: &str, reference: &str, source: &reqwest::Error) -> String {
    format!("{} registry `{host}` for {reference}", transport_failure(source))
}

/// What went wrong in the words the messages start with (`failed to connect to`).
fn transport_failure(source: &reqwest::Error) -> &'static str {
    if source.is_timeout() {
        "timed out talking to"
    } else if source.is_redirect() {
        "too many redirects from"
    } else if source.is_connect() {
        "failed to connect to"
    } else if source.is_body() || source.is_decode() {
        "the response was cut short by"
    } else {
        "failed to talk to"
    }
}
