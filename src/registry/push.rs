//! The push side of the distribution API, as BuildKit's image exporter does it through
//! containerd's pusher: blobs first (skipped when the registry has them, mounted from another
//! repository of the same registry when the caller knows one that has them, else uploaded),
//! manifests last.
//!
//! Hosts: a push goes to the reference's registry itself, never to a mirror; TLS, plain HTTP
//! and the HTTP fallback follow the host's section as for pulls. Tokens are asked for
//! `repository:<name>:pull,push` (plus `repository:<source>:pull` for a mount) and cached per
//! scope set like pull tokens; a refusal is "push access denied for X: ...".
//!
//! Uploads: `POST /v2/<name>/blobs/uploads/`, then `PATCH` requests of
//! [`Client::with_upload_chunk_size`] bytes (`Content-Range: start-end`), each sent to the
//! `Location` of the previous answer, then `PUT <location>?digest=`. The `Range` a `PATCH`
//! answer reports is the truth: bytes of the current chunk it did not take are sent again, and a
//! registry that lost earlier bytes makes the upload start over.
//!
//! Retries: `HEAD`, the mount, the `POST` that opens a session, and manifest `PUT`s are retried
//! per request like pulls (connection errors, 408, 429, 5xx; never other 4xx). A `PATCH` or the
//! closing `PUT` is not: after a failure the registry's view of the session is unknown, so the
//! whole upload starts over (abandoning the session with a best-effort `DELETE`) from a fresh
//! reader, at most [`RetryPolicy::attempts`](super::RetryPolicy) times. Decision: restarting
//! costs a re-send of the bytes already uploaded, but needs no `GET` of the session state, which
//! registries implement unevenly.
//!
//! Invariant: the bytes read are checked against `size` and `digest` before the closing `PUT`,
//! so a wrong reader is reported as a mismatch of ours, never as the registry's `400`.

use std::io::Read;

use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, StatusCode};

use super::client::{Client, Endpoint, blob_name, header_text, verify};
use super::error::RegistryError;
use super::request::{Access, Failure, Target, is_retryable, server_message};
use crate::oci::{Digest, DigestHasher, Reference};

/// The outcome of a cross-repository mount request.
enum Mount {
    Mounted,
    /// The registry did not mount and opened an upload session at this URL instead.
    Upload(reqwest::Url),
}

/// One blob upload: what is pushed where, and the caller's callbacks.
struct Upload<'a, 'r> {
    endpoint: &'a Endpoint,
    reference: &'a Reference,
    access: &'a Access,
    /// `registry/repository@digest`, for messages.
    name: &'a str,
    digest: &'a Digest,
    size: u64,
    /// A fresh reader of the blob's bytes, from the first byte.
    open: &'a mut dyn FnMut() -> std::io::Result<Box<dyn Read + Send + 'r>>,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl Client {
    /// Uploads a blob unless the registry has it (`HEAD` first); when `mount_from` names another
    /// repository of the same registry, asks for a cross-repository mount from it before
    /// uploading. `open` gives a fresh reader of the blob each time it is called (a restarted
    /// upload calls it again); `progress(done, total)` follows the uploaded bytes (and starts
    /// over with the upload). Returns whether bytes were uploaded: `false` when the blob was
    /// there or was mounted.
    pub fn push_blob<'r>(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        mount_from: Option<&str>,
        open: &mut dyn FnMut() -> std::io::Result<Box<dyn Read + Send + 'r>>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<bool, RegistryError> {
        let name = blob_name(reference, digest.as_str());
        let endpoint = self.push_endpoint(&reference.registry)?;
        let access = Access::push(reference, None);
        self.block_on(async {
            if self.blob_exists(&endpoint, reference, &access, &name, digest).await? {
                tracing::debug!("{name}: already in the registry");
                return Ok(false);
            }
            let mut session = None;
            if let Some(source) = mount_from.filter(|source| *source != reference.repository) {
                match self.mount_blob(&endpoint, reference, &name, digest, source).await {
                    Ok(Mount::Mounted) => {
                        tracing::debug!("{name}: mounted from `{source}`");
                        return Ok(false);
                    }
                    Ok(Mount::Upload(location)) => session = Some(location),
                    // The source may be unreadable for these credentials; uploading still works.
                    Err(error) => tracing::debug!("mounting {name} from `{source}` failed: {error}"),
                }
            }
            let mut upload = Upload { endpoint: &endpoint, reference, access: &access, name: &name, digest, size, open, progress };
            self.upload_blob(&mut upload, session).await?;
            Ok(true)
        })
    }

    /// `PUT`s a manifest or index under the reference's tag (its digest when it has no tag) and
    /// returns its digest. The registry's `Docker-Content-Digest` must be the sha256 of `bytes`,
    /// and so must the reference's digest when it has one.
    pub fn push_manifest(&self, reference: &Reference, media_type: &str, bytes: &[u8]) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(bytes);
        if let Some(expected) = &reference.digest {
            verify(reference, expected, bytes).map_err(|failure| failure.into_error(&reference.to_string()))?;
        }
        let selector = reference.tag.as_deref().or(reference.digest.as_deref()).unwrap_or("latest");
        let path = format!("{}/manifests/{selector}", reference.repository);
        let endpoint = self.push_endpoint(&reference.registry)?;
        let access = Access::push(reference, None);
        self.block_on(async {
            let response = self
                .send_as(&endpoint, reference, &access, Method::PUT, Target::Path(&path), true, |request| {
                    request.header(CONTENT_TYPE, media_type).body(bytes.to_vec())
                })
                .await
                .map_err(|failure| failure.into_error(&reference.to_string()))?;
            if !response.status().is_success() {
                return Err(unexpected(&endpoint, &reference.to_string(), response).await);
            }
            if let Some(reported) = header_text(response.headers(), "docker-content-digest")
                && digest != reported.as_str()
            {
                return Err(RegistryError::DigestMismatch {
                    reference: reference.to_string(),
                    expected: digest.to_string(),
                    actual: reported,
                });
            }
            Ok(digest)
        })
    }

    async fn blob_exists(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        access: &Access,
        name: &str,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let path = format!("{}/blobs/{digest}", reference.repository);
        let response = self
            .send_as(endpoint, reference, access, Method::HEAD, Target::Path(&path), true, |request| request)
            .await
            .map_err(|failure| failure.into_error(name))?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(endpoint, name, response).await),
        }
    }

    async fn mount_blob(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        name: &str,
        digest: &Digest,
        source: &str,
    ) -> Result<Mount, RegistryError> {
        let access = Access::push(reference, Some(source));
        let path = format!("{}/blobs/uploads/?mount={digest}&from={source}", reference.repository);
        let response = self
            .send_as(endpoint, reference, &access, Method::POST, Target::Path(&path), true, |request| request.body(Vec::new()))
            .await
            .map_err(|failure| failure.into_error(name))?;
        match response.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Upload(location(endpoint, name, &response)?)),
            _ => Err(unexpected(endpoint, name, response).await),
        }
    }

    /// Runs upload sessions until one succeeds, restarting after transient failures.
    async fn upload_blob(&self, upload: &mut Upload<'_, '_>, mut session: Option<reqwest::Url>) -> Result<(), RegistryError> {
        let mut attempt = 1;
        loop {
            let location = match session.take() {
                Some(location) => location,
                None => self.start_upload(upload).await?,
            };
            let error = match self.upload_session(upload, location.clone()).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            // Best effort: the registry drops stale sessions on its own anyway.
            let abandoned = self
                .send_as(upload.endpoint, upload.reference, upload.access, Method::DELETE, Target::Url(&location), false, |request| request)
                .await;
            if let Err(Failure::Error(delete_error)) = abandoned {
                tracing::debug!("abandoning the upload session of {} failed: {delete_error}", upload.name);
            }
            if !is_transient(&error) || attempt >= self.retry.attempts {
                return Err(error);
            }
            let delay = (self.retry.initial_delay * 2u32.saturating_pow(attempt - 1)).min(self.retry.max_delay);
            tracing::debug!("uploading {} failed: {error}; starting over in {delay:?}", upload.name);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// `POST /v2/<name>/blobs/uploads/`: the URL of a new upload session.
    async fn start_upload(&self, upload: &Upload<'_, '_>) -> Result<reqwest::Url, RegistryError> {
        let path = format!("{}/blobs/uploads/", upload.reference.repository);
        let response = self
            .send_as(upload.endpoint, upload.reference, upload.access, Method::POST, Target::Path(&path), true, |request| {
                request.body(Vec::new())
            })
            .await
            .map_err(|failure| failure.into_error(upload.name))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(unexpected(upload.endpoint, upload.name, response).await);
        }
        location(upload.endpoint, upload.name, &response)
    }

    /// Sends the blob in chunks to the session at `location`, then closes it with its digest.
    async fn upload_session(&self, upload: &mut Upload<'_, '_>, mut location: reqwest::Url) -> Result<(), RegistryError> {
        let read_error =
            |source| RegistryError::ReadBlob { reference: upload.reference.to_string(), digest: upload.digest.clone(), source };
        let mut reader = (upload.open)().map_err(read_error)?;
        let mut hasher = DigestHasher::for_digest(upload.digest);
        let mut buffer = vec![0u8; self.upload_chunk_size];
        let mut offset = 0u64;
        (upload.progress)(0, upload.size);
        loop {
            let filled = read_full(&mut reader, &mut buffer).map_err(read_error)?;
            if filled == 0 {
                break;
            }
            let chunk = &buffer[..filled];
            if offset + filled as u64 > upload.size {
                return Err(RegistryError::SizeMismatch {
                    reference: upload.name.to_string(),
                    digest: upload.digest.clone(),
                    expected: upload.size,
                    actual: offset + filled as u64,
                });
            }
            hasher.update(chunk);
            let mut taken = 0usize;
            while taken < filled {
                let start = offset + taken as u64;
                let end = offset + filled as u64 - 1;
                let body = &chunk[taken..];
                let response = self
                    .send_as(upload.endpoint, upload.reference, upload.access, Method::PATCH, Target::Url(&location), false, |request| {
                        request
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header("content-range", format!("{start}-{end}"))
                            .body(body.to_vec())
                    })
                    .await
                    .map_err(|failure| failure.into_error(upload.name))?;
                if !response.status().is_success() {
                    return Err(unexpected(upload.endpoint, upload.name, response).await);
                }
                if response.headers().contains_key(LOCATION) {
                    location = self::location(upload.endpoint, upload.name, &response)?;
                }
                let acknowledged = acknowledged_bytes(response.headers()).unwrap_or(end + 1);
                if acknowledged <= start || acknowledged > end + 1 {
                    return Err(RegistryError::UploadOffset {
                        host: upload.endpoint.host.clone(),
                        reference: upload.name.to_string(),
                        sent: end + 1,
                        acknowledged,
                    });
                }
                if acknowledged <= end {
                    tracing::debug!("registry took {acknowledged} of {} bytes of {}; sending the rest again", end + 1, upload.name);
                }
                taken = (acknowledged - offset) as usize;
            }
            offset += filled as u64;
            (upload.progress)(offset, upload.size);
        }
        if offset != upload.size {
            return Err(RegistryError::SizeMismatch {
                reference: upload.name.to_string(),
                digest: upload.digest.clone(),
                expected: upload.size,
                actual: offset,
            });
        }
        let actual = hasher.finish();
        if actual != *upload.digest {
            return Err(RegistryError::DigestMismatch {
                reference: upload.name.to_string(),
                expected: upload.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        location.query_pairs_mut().append_pair("digest", upload.digest.as_str());
        let response = self
            .send_as(upload.endpoint, upload.reference, upload.access, Method::PUT, Target::Url(&location), false, |request| {
                request.body(Vec::new())
            })
            .await
            .map_err(|failure| failure.into_error(upload.name))?;
        if !response.status().is_success() {
            return Err(unexpected(upload.endpoint, upload.name, response).await);
        }
        Ok(())
    }
}

/// The `Location` of an upload answer, resolved against the request's URL (registries send
/// relative and absolute ones).
fn location(endpoint: &Endpoint, name: &str, response: &reqwest::Response) -> Result<reqwest::Url, RegistryError> {
    let missing = |detail: &str| RegistryError::UnexpectedStatus {
        host: endpoint.host.clone(),
        reference: name.to_string(),
        status: response.status().as_u16(),
        message: format!(": {detail}"),
    };
    let value = header_text(response.headers(), LOCATION.as_str()).ok_or_else(|| missing("no `Location` header"))?;
    response.url().join(&value).map_err(|_| missing(&format!("invalid `Location` header `{value}`")))
}

/// Bytes the registry holds after a `PATCH`: one past the end of its `Range: 0-<last>` header
/// (Docker's form; `bytes=0-<last>` is accepted too).
fn acknowledged_bytes(headers: &HeaderMap) -> Option<u64> {
    let range = header_text(headers, "range")?;
    let range = range.trim().trim_start_matches("bytes=");
    let (_, last) = range.split_once('-')?;
    last.trim().parse::<u64>().ok().map(|last| last + 1)
}

/// Fills `buffer` unless the reader ends first; returns the bytes read.
fn read_full(reader: &mut dyn Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Failures worth a fresh upload session: transport errors, statuses retried for pulls, and a
/// registry that lost bytes it had taken.
fn is_transient(error: &RegistryError) -> bool {
    match error {
        RegistryError::Connect { .. } | RegistryError::UploadOffset { .. } => true,
        RegistryError::UnexpectedStatus { status, .. } => StatusCode::from_u16(*status).is_ok_and(is_retryable),
        _ => false,
    }
}

async fn unexpected(endpoint: &Endpoint, name: &str, response: reqwest::Response) -> RegistryError {
    RegistryError::UnexpectedStatus {
        host: endpoint.host.clone(),
        reference: name.to_string(),
        status: response.status().as_u16(),
        message: server_message(response).await,
    }
}
