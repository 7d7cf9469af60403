//! Pulling from and pushing to OCI registries: references, per-host settings, credentials, and a
//! blocking [`Client`] that resolves an image for a platform and streams its blobs, and uploads
//! blobs and manifests; with the same transport, files from plain http(s) URLs.
//!
//! Self-contained: nothing here imports other rbuild modules; `ops` and `cli` wire it in.
//! The client's end-to-end tests (real registries, a scripted server) are in
//! `tests/integration/registry_client/`: they use only this public API.
//! Invariant: every manifest, config and blob the client hands out has been checked against
//! its digest (for a streamed blob, a mismatch is reported after the last byte, and the caller
//! discards what it wrote); every blob it uploads is checked before the upload is committed.
//!
//! | file           | concept                                                             |
//! |----------------|---------------------------------------------------------------------|
//! | `config.rs`    | `[registry."host"]` sections of a buildkitd.toml-style file         |
//! | `auth.rs`      | docker/podman credential files, helpers, `WWW-Authenticate`         |
//! | `manifest.rs`  | platform selection in an index, digests                             |
//! | `client.rs`    | hosts and mirrors, resolve, blobs                                   |
//! | `request.rs`   | token/basic auth, sending with retries, how a request failed        |
//! | `push.rs`      | blob existence, cross-repository mounts, chunked uploads, manifests |
//! | `transport.rs` | why a request got no answer, and the config key that fixes it       |
//! | `artifact.rs`  | a non-image manifest (a build cache) and its config                 |
//! | `http_file.rs` | files from http(s) URLs (`ADD <url>`): revalidate, download         |
//! | `error.rs`     | [`RegistryError`]                                                   |

mod artifact;
mod auth;
mod client;
mod config;
mod error;
mod http_file;
mod manifest;
mod push;
mod request;
mod transport;

pub use artifact::Artifact;
pub use auth::{Credential, Credentials};
pub use client::{Client, Resolved, RetryPolicy};
pub use config::{HostConfig, RegistryConfig};
pub use error::RegistryError;
pub use http_file::{Download, Validators};
