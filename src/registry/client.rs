//! The pull side of the OCI distribution API: resolve a reference to the platform's manifest and
//! config, and stream blobs, verifying every byte against its digest. Also the hosts both sides
//! share; `push.rs` builds the push side on them.
//!
//! Ownership: a [`Client`] owns one multi-threaded tokio runtime (two workers) and runs all
//! registry I/O on it; its methods are blocking and may be called from many threads (rayon
//! workers) at once, but never from inside a tokio runtime. HTTP clients are built lazily per
//! host (each host has its own TLS roots, client certificate and verification switch) and, like
//! tokens, cached behind short-lived mutexes that are never held across an await.
//!
//! Hosts: a reference's mirrors (`[registry."docker.io"] mirrors = [...]`, each with its own
//! section's settings) are tried in order, then the registry itself (`registry-1.docker.io` for
//! `docker.io`). As in containerd's resolver, any failure moves on to the next host; the error
//! reported is the first one that was not a 404, else "not found" ([`HostFailures`]: a host
//! that could not be reached does not hide another's "not found"). Plain HTTP for `http = true`
//! (localhost by default); `insecure = true` skips verification and, with `http`, falls back to
//! plain HTTP for the rest of the process after the first TLS/connection failure (BuildKit's
//! `httpFallback`).
//!
//! Auth and retries: see `request.rs`. A blob stream that breaks is re-requested from the byte
//! where it stopped (`Range`; a server that ignores it sends everything and the known prefix is
//! skipped), so the bytes given to `out` and the running digest stay one continuous stream and
//! the final check covers the whole blob.
//!
//! Decision: reqwest directly instead of oci-client. oci-client (0.18, on reqwest 0.13 with
//! aws-lc) has one TLS configuration for all hosts (no per-host CA, client certificate or
//! insecure switch), no mirrors, no retries and errors too coarse for "pull access denied" vs
//! "not found"; what remains of the distribution API for pulling is four requests, cheaper to own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};

use super::auth::Credentials;
use super::config::{HostConfig, RegistryConfig};
use super::error::RegistryError;
use super::manifest::{self, MANIFEST_ACCEPT};
use super::request::Failure;
use super::transport::{Cause, config_hint};
use crate::oci::manifest::AnyManifest;
use crate::oci::{DOCKER_HUB, Digest, DigestHasher, Reference};

/// Manifests bigger than this are refused (containerd uses the same bound).
const MANIFEST_LIMIT: usize = 4 << 20;
/// Image configs are small JSON documents; this bounds memory for a hostile registry.
const CONFIG_LIMIT: usize = 32 << 20;
/// containerd pushes a blob in one request; chunks bound the memory of a retried request and let
/// a registry that limits request bodies (nginx's `client_max_body_size`) take big layers.
const DEFAULT_UPLOAD_CHUNK_SIZE: usize = 8 << 20;
const USER_AGENT: &str = concat!("rbuild/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference with `digest` set to what the tag points to (the index when there is one).
    pub reference: Reference,
    /// The digest of the platform's image manifest (equal to `reference.digest` for a
    /// single-platform image).
    pub manifest_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<crate::oci::Descriptor>,
}

/// Bounds for retrying transient failures, and for waiting on a slow server: a server that
/// drips bytes cannot hold a build forever.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in total, the first included.
    pub attempts: u32,
    /// Delay before the second try; doubled for each further try.
    pub initial_delay: Duration,
    /// Cap on one delay, `Retry-After` included.
    pub max_delay: Duration,
    /// Cap on the sum of delays of one request.
    pub max_total_delay: Duration,
    /// The longest wait for a response's headers.
    pub response_deadline: Duration,
    /// The longest wait for the whole body of a small document (manifest, config, token).
    pub small_body_deadline: Duration,
    /// A blob download that brings fewer than `stall_min_bytes` in a `stall_window` stalled.
    pub stall_window: Duration,
    pub stall_min_bytes: u64,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            max_total_delay: Duration::from_secs(30),
            response_deadline: Duration::from_secs(60),
            small_body_deadline: Duration::from_secs(120),
            stall_window: Duration::from_secs(60),
            stall_min_bytes: 16 << 10,
        }
    }
}

/// One way to reach a host: base URL and the HTTP client with that host's TLS settings.
pub(super) struct Endpoint {
    /// `host[:port]` as contacted; credentials are looked up by it.
    pub(super) host: String,
    /// Path prefix before `/v2` (a mirror may have one), without trailing slash.
    prefix: String,
    pub(super) http: reqwest::Client,
    /// Starts on HTTPS; switches to HTTP for good after a connection failure when `fallback`.
    pub(super) plain_http: AtomicBool,
    pub(super) fallback: bool,
    /// The registry config file, named in hints.
    config_file: Option<PathBuf>,
}

impl Endpoint {
    pub(super) fn url(&self, path: &str) -> String {
        let scheme = if self.plain_http.load(Ordering::Relaxed) { "http" } else { "https" };
        format!("{scheme}://{}{}/v2/{path}", self.host, self.prefix)
    }

    /// A request to this host got no answer: what broke, and the config key that fixes it.
    pub(super) fn transport_error(&self, reference: String, source: reqwest::Error) -> RegistryError {
        let cause = if source.is_timeout() || source.is_redirect() {
            String::new()
        } else {
            Cause::of(&source).describe(&self.host, self.config_file.as_deref())
        };
        RegistryError::Connect { host: self.host.clone(), reference, source, cause }
    }
}

pub struct Client {
    pub(super) runtime: tokio::runtime::Runtime,
    config: RegistryConfig,
    pub(super) credentials: Credentials,
    pub(super) retry: RetryPolicy,
    /// Bytes per `PATCH` of a blob upload.
    pub(super) upload_chunk_size: usize,
    /// Endpoints per registry host (mirrors first), built on first use.
    endpoints: Mutex<HashMap<String, Arc<Vec<Arc<Endpoint>>>>>,
    /// `Authorization` header values per (host, scope).
    pub(super) authorizations: Mutex<HashMap<(String, String), String>>,
    /// Set by Ctrl-C or SIGTERM: every request in flight ends at once.
    cancel: Option<Arc<AtomicBool>>,
}

impl Client {
    pub fn new(config: RegistryConfig, credentials: Credentials) -> Result<Client, RegistryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rbuild-registry")
            .enable_all()
            .build()
            .map_err(|source| RegistryError::Runtime { source })?;
        Ok(Client {
            runtime,
            config,
            credentials,
            retry: RetryPolicy::default(),
            upload_chunk_size: DEFAULT_UPLOAD_CHUNK_SIZE,
            endpoints: Mutex::new(HashMap::new()),
            authorizations: Mutex::new(HashMap::new()),
            cancel: None,
        })
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    /// Bytes per `PATCH` request of a blob upload (at least 1; default 8 MiB).
    pub fn with_upload_chunk_size(mut self, bytes: usize) -> Client {
        self.upload_chunk_size = bytes.max(1);
        self
    }

    /// Ends every request with [`RegistryError::Canceled`] once `cancel` is set.
    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Client {
        self.cancel = Some(cancel);
        self
    }

    pub(super) fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Runs registry work on the client's runtime until it ends or the build is canceled.
    pub(super) fn block_on<T>(&self, work: impl std::future::Future<Output = Result<T, RegistryError>>) -> Result<T, RegistryError> {
        let cancel = self.cancel.clone();
        self.runtime.block_on(async move {
            tokio::select! {
                result = work => result,
                () = canceled(cancel) => Err(RegistryError::Canceled),
            }
        })
    }

    pub fn resolve(&self, reference: &Reference, os: &str, architecture: &str, variant: Option<&str>) -> Result<Resolved, RegistryError> {
        let endpoints = self.endpoints(&reference.registry)?;
        self.block_on(async {
            let mut failures = HostFailures::default();
            for endpoint in endpoints.iter() {
                match self.resolve_at(endpoint, reference, os, architecture, variant).await {
                    Ok(resolved) => return Ok(resolved),
                    Err(Failure::NotFound) => {
                        tracing::debug!("{reference}: not found at `{}`", endpoint.host);
                        failures.not_found = true;
                    }
                    Err(Failure::Error(error)) => {
                        tracing::debug!("resolving {reference} at `{}` failed: {error}", endpoint.host);
                        failures.add(error);
                    }
                }
            }
            Err(failures.into_error(reference.to_string()))
        })
    }

    pub fn fetch_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: Option<u64>,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), RegistryError> {
        let name = blob_name(reference, digest.as_str());
        let hasher = DigestHasher::for_digest(digest);
        let endpoints = self.endpoints(&reference.registry)?;
        self.block_on(async {
            let mut stream = BlobStream { reference, name: &name, digest, size, written: 0, hasher: Some(hasher), out, progress };
            let mut failures = HostFailures::default();
            for endpoint in endpoints.iter() {
                match self.stream_blob(endpoint, &mut stream).await {
                    Ok(()) => return stream.finish(),
                    Err(Failure::NotFound) => {
                        tracing::debug!("{name}: not found at `{}`", endpoint.host);
                        failures.not_found = true;
                    }
                    // A digest or write failure is final: the bytes already given to `out` are wrong.
                    Err(Failure::Error(
                        error @ (RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } | RegistryError::Write { .. }),
                    )) => {
                        return Err(error);
                    }
                    Err(Failure::Error(error)) => {
                        tracing::debug!("fetching {name} from `{}` failed: {error}", endpoint.host);
                        failures.add(error);
                    }
                }
            }
            Err(failures.into_error(name.clone()))
        })
    }

    pub(super) fn endpoints(&self, registry: &str) -> Result<Arc<Vec<Arc<Endpoint>>>, RegistryError> {
        if let Some(endpoints) = self.lock_endpoints().get(registry) {
            return Ok(endpoints.clone());
        }
        let host_config = self.config.host(registry);
        let mut endpoints = Vec::new();
        for mirror in &host_config.mirrors {
            let mirror = mirror.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
            let (host, prefix) = match mirror.split_once('/') {
                Some((host, path)) => (host, format!("/{path}")),
                None => (mirror, String::new()),
            };
            endpoints.push(Arc::new(build_endpoint(host, prefix, &self.config.host(host), self.config.file.clone())?));
        }
        let api_host = if registry == DOCKER_HUB { "registry-1.docker.io" } else { registry };
        endpoints.push(Arc::new(build_endpoint(api_host, String::new(), &host_config, self.config.file.clone())?));
        let endpoints = Arc::new(endpoints);
        self.lock_endpoints().insert(registry.to_string(), endpoints.clone());
        Ok(endpoints)
    }

    /// The registry itself, never a mirror: pushes go where the reference names.
    pub(super) fn push_endpoint(&self, registry: &str) -> Result<Arc<Endpoint>, RegistryError> {
        let endpoints = self.endpoints(registry)?;
        // `endpoints` always ends with the registry's own endpoint, after its mirrors.
        Ok(endpoints.last().cloned().expect("the registry endpoint is always last"))
    }

    fn lock_endpoints(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<Arc<Endpoint>>>>> {
        // A poisoned map is still consistent: entries are inserted whole.
        self.endpoints.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    async fn resolve_at(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        os: &str,
        architecture: &str,
        variant: Option<&str>,
    ) -> Result<Resolved, Failure> {
        let (top_digest, top_bytes, top_header) = match &reference.digest {
            Some(digest) => self.get_manifest(endpoint, reference, digest).await?,
            None => self.get_manifest_by_tag(endpoint, reference).await?,
        };
        let mut resolved_reference = reference.clone();
        resolved_reference.digest = Some(top_digest.to_string());
        let invalid = |reason: String| Failure::Error(RegistryError::InvalidManifest { reference: reference.to_string(), reason });
        let top: AnyManifest = serde_json::from_slice(&top_bytes).map_err(|error| invalid(error.to_string()))?;
        let top_type = top.media_type(top_header.as_deref());
        let platform_text = || match variant {
            Some(variant) => format!("{os}/{architecture}/{variant}"),
            None => format!("{os}/{architecture}"),
        };

        let (manifest_digest, manifest_bytes, manifest, media_type, single) = if manifest::is_index(&top_type) {
            let entries = top.manifests.as_deref().unwrap_or_default();
            let entry = manifest::select(entries, os, architecture, variant).ok_or_else(|| {
                Failure::Error(RegistryError::NoMatchingPlatform { reference: resolved_reference.to_string(), platform: platform_text() })
            })?;
            let (_, bytes, header) = self.get_manifest(endpoint, reference, entry.digest.as_str()).await?;
            let parsed: AnyManifest = serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
            let media_type = parsed.media_type(header.as_deref().or(Some(&entry.media_type)));
            (entry.digest.clone(), bytes, parsed, media_type, false)
        } else if manifest::is_manifest(&top_type) {
            (top_digest.clone(), top_bytes, top, top_type, true)
        } else {
            return Err(Failure::Error(RegistryError::UnsupportedMediaType { reference: reference.to_string(), media_type: top_type }));
        };
        if !manifest::is_manifest(&media_type) || manifest.schema_version != 2 {
            return Err(Failure::Error(RegistryError::UnsupportedMediaType { reference: reference.to_string(), media_type }));
        }
        let config_descriptor = manifest.config.as_ref().ok_or_else(|| invalid("no config".into()))?;
        let config = self.get_small_blob(endpoint, reference, &config_descriptor.digest, config_descriptor.size, CONFIG_LIMIT).await?;
        if single {
            // An image without an index says its platform only in the config (the same fields
            // as an index entry's platform); containerd checks it.
            let platform: manifest::Platform = serde_json::from_slice(&config).map_err(|error| invalid(format!("config: {error}")))?;
            if platform.match_rank(&manifest::Platform::new(os, architecture, variant)).is_none() {
                return Err(Failure::Error(RegistryError::NoMatchingPlatform {
                    reference: resolved_reference.to_string(),
                    platform: platform_text(),
                }));
            }
        }
        let layers = manifest.layers.unwrap_or_default();
        Ok(Resolved {
            reference: resolved_reference,
            manifest_digest,
            manifest: manifest_bytes,
            manifest_media_type: media_type,
            config,
            config_digest: config_descriptor.digest.clone(),
            layers,
        })
    }

    /// HEAD for the digest (cheap, and not counted by Docker Hub's rate limit), then GET by
    /// digest; GET by tag when HEAD gives no digest or is refused.
    pub(super) async fn get_manifest_by_tag(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
    ) -> Result<(Digest, Vec<u8>, Option<String>), Failure> {
        let tag = reference.manifest_selector();
        let path = format!("{}/manifests/{tag}", reference.repository);
        let head = self.send(endpoint, reference, Method::HEAD, &path, MANIFEST_ACCEPT, 0).await?;
        match head.status() {
            status if status.is_success() => {
                let digest = header_text(head.headers(), "docker-content-digest");
                if let Some(digest) = digest.filter(|digest| hasher_for(digest).is_some()) {
                    return self.get_manifest(endpoint, reference, &digest).await;
                }
            }
            StatusCode::NOT_FOUND => return Err(Failure::NotFound),
            status => tracing::debug!("HEAD {path} at `{}` gave `{status}`; trying GET", endpoint.host),
        }
        let (bytes, header) = self.fetch_manifest(endpoint, reference, &path).await?;
        Ok((Digest::sha256_of(&bytes), bytes, header))
    }

    /// GET of a manifest path: its bytes (size-limited) and its Content-Type.
    async fn fetch_manifest(&self, endpoint: &Endpoint, reference: &Reference, path: &str) -> Result<(Vec<u8>, Option<String>), Failure> {
        let response = self.send(endpoint, reference, Method::GET, path, MANIFEST_ACCEPT, 0).await?;
        let response = check_status(response, endpoint, reference)?;
        let header = header_text(response.headers(), CONTENT_TYPE.as_str());
        let bytes = read_limited(response, endpoint, reference, MANIFEST_LIMIT, self.retry.small_body_deadline, "the manifest").await?;
        Ok((bytes, header))
    }

    /// A manifest by digest (as a reference or a header gives it), verified: its checked
    /// digest, bytes and Content-Type.
    pub(super) async fn get_manifest(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        digest: &str,
    ) -> Result<(Digest, Vec<u8>, Option<String>), Failure> {
        let path = format!("{}/manifests/{digest}", reference.repository);
        let (bytes, header) = self.fetch_manifest(endpoint, reference, &path).await?;
        let digest = verify(reference, digest, &bytes)?;
        Ok((digest, bytes, header))
    }

    /// A blob read whole into memory (the config), verified.
    pub(super) async fn get_small_blob(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        limit: usize,
    ) -> Result<Vec<u8>, Failure> {
        let name = blob_name(reference, digest.as_str());
        if size > limit as u64 {
            return Err(Failure::Error(RegistryError::TooLarge { what: "the config", reference: name, limit }));
        }
        let path = format!("{}/blobs/{digest}", reference.repository);
        let response = self.send(endpoint, reference, Method::GET, &path, "*/*", 0).await?;
        let response = check_status(response, endpoint, reference)?;
        let bytes = read_limited(response, endpoint, reference, limit, self.retry.small_body_deadline, "the config").await?;
        if bytes.len() as u64 != size {
            return Err(Failure::Error(RegistryError::SizeMismatch {
                reference: name,
                digest: digest.clone(),
                expected: size,
                actual: bytes.len() as u64,
            }));
        }
        verify(reference, digest.as_str(), &bytes)?;
        Ok(bytes)
    }

    async fn stream_blob(&self, endpoint: &Endpoint, stream: &mut BlobStream<'_>) -> Result<(), Failure> {
        let path = format!("{}/blobs/{}", stream.reference.repository, stream.digest);
        let mut breaks = 0;
        loop {
            let response = self.send(endpoint, stream.reference, Method::GET, &path, "*/*", stream.written).await?;
            let mut response = check_status(response, endpoint, stream.reference)?;
            // 206 continues where we stopped; 200 is the whole blob again, its known prefix skipped.
            let mut skip = if response.status() == StatusCode::PARTIAL_CONTENT { 0 } else { stream.written };
            let total = stream.size.or_else(|| response.content_length().map(|length| length + stream.written - skip)).unwrap_or(0);
            let mut window_started = std::time::Instant::now();
            let mut window_bytes = 0u64;
            loop {
                let chunk = response.chunk().await;
                if let Ok(Some(bytes)) = &chunk {
                    window_bytes += bytes.len() as u64;
                }
                if window_started.elapsed() >= self.retry.stall_window {
                    if window_bytes < self.retry.stall_min_bytes {
                        return Err(Failure::Error(RegistryError::Stalled {
                            host: endpoint.host.clone(),
                            reference: stream.name.to_string(),
                            bytes: window_bytes,
                            seconds: window_started.elapsed().as_secs_f64(),
                        }));
                    }
                    window_started = std::time::Instant::now();
                    window_bytes = 0;
                }
                match chunk {
                    Ok(Some(bytes)) => {
                        let fresh = if skip >= bytes.len() as u64 {
                            skip -= bytes.len() as u64;
                            continue;
                        } else {
                            let start = skip as usize;
                            skip = 0;
                            &bytes[start..]
                        };
                        stream.accept(fresh)?;
                        (stream.progress)(stream.written, total.max(stream.written));
                    }
                    Ok(None) => return Ok(()),
                    Err(error) => {
                        breaks += 1;
                        if breaks >= self.retry.attempts {
                            return Err(Failure::Error(endpoint.transport_error(stream.name.to_string(), error)));
                        }
                        tracing::debug!(
                            "stream of {} from `{}` broke at {} bytes: {error}; resuming",
                            stream.name,
                            endpoint.host,
                            stream.written
                        );
                        tokio::time::sleep(self.retry.initial_delay * 2u32.pow(breaks - 1)).await;
                        break;
                    }
                }
            }
        }
    }
}

/// What the hosts of one reference (mirrors, then the registry) answered when none had it.
/// As containerd's resolver: the first real error wins, else "not found". A host that could
/// not be reached ranks below a host that answered "not found": with a docker.io mirror and no
/// way to Docker Hub, a tag the mirror lacks is "not found" (as BuildKit says), not a
/// connection failure to a host the user never meant to use.
#[derive(Default)]
struct HostFailures {
    not_found: bool,
    first_error: Option<RegistryError>,
    first_unreachable: Option<RegistryError>,
}

impl HostFailures {
    fn add(&mut self, error: RegistryError) {
        let unreachable = matches!(error, RegistryError::Connect { .. } | RegistryError::Timeout { .. } | RegistryError::Stalled { .. });
        let slot = if unreachable { &mut self.first_unreachable } else { &mut self.first_error };
        slot.get_or_insert(error);
    }

    fn into_error(self, reference: String) -> RegistryError {
        let unreachable = if self.not_found { None } else { self.first_unreachable };
        self.first_error.or(unreachable).unwrap_or(RegistryError::NotFound { reference })
    }
}

/// The state of one blob download, kept across resumed requests and hosts.
struct BlobStream<'a> {
    reference: &'a Reference,
    /// `registry/repository@digest`, for messages.
    name: &'a str,
    digest: &'a Digest,
    size: Option<u64>,
    written: u64,
    /// Taken by [`BlobStream::finish`].
    hasher: Option<DigestHasher>,
    out: &'a mut dyn std::io::Write,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl BlobStream<'_> {
    fn accept(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        if let Some(size) = self.size
            && self.written + bytes.len() as u64 > size
        {
            return Err(Failure::Error(RegistryError::SizeMismatch {
                reference: self.name.to_string(),
                digest: self.digest.clone(),
                expected: size,
                actual: self.written + bytes.len() as u64,
            }));
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.out.write_all(bytes).map_err(|source| RegistryError::Write {
            reference: self.name.to_string(),
            digest: self.digest.clone(),
            source,
        })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), RegistryError> {
        if let Some(size) = self.size
            && self.written != size
        {
            return Err(RegistryError::SizeMismatch {
                reference: self.name.to_string(),
                digest: self.digest.clone(),
                expected: size,
                actual: self.written,
            });
        }
        let actual = self.hasher.take().map(|hasher| hasher.finish().to_string()).unwrap_or_default();
        if actual != self.digest.as_str() {
            return Err(RegistryError::DigestMismatch { reference: self.name.to_string(), expected: self.digest.to_string(), actual });
        }
        self.out.flush().map_err(|source| RegistryError::Write { reference: self.name.to_string(), digest: self.digest.clone(), source })
    }
}

pub(super) fn build_endpoint(
    host: &str,
    prefix: String,
    config: &HostConfig,
    config_file: Option<PathBuf>,
) -> Result<Endpoint, RegistryError> {
    let tls_error = |source| RegistryError::Tls { host: host.to_string(), source };
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .danger_accept_invalid_certs(config.insecure);
    for path in &config.ca {
        let pem = std::fs::read(path).map_err(|source| RegistryError::ReadCertificate { path: path.clone(), source })?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem).map_err(tls_error)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    // rustls takes one client identity; the first pair is used, as Go's TLS picks the first
    // certificate that fits and registries ask for one.
    if let Some((key, cert)) = config.keypair.first() {
        let mut pem = std::fs::read(cert).map_err(|source| RegistryError::ReadCertificate { path: cert.clone(), source })?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|source| RegistryError::ReadCertificate { path: key.clone(), source })?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(tls_error)?);
    }
    let http = builder.build().map_err(tls_error)?;
    Ok(Endpoint {
        host: host.to_string(),
        prefix,
        http,
        plain_http: AtomicBool::new(config.http && !config.insecure),
        fallback: config.http && config.insecure,
        config_file,
    })
}

/// Ends when `cancel` is set; never without one.
async fn canceled(cancel: Option<Arc<AtomicBool>>) {
    let Some(cancel) = cancel else { return std::future::pending().await };
    while !cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_string)
}

pub(super) fn blob_name(reference: &Reference, digest: &str) -> String {
    format!("{}/{}@{digest}", reference.registry, reference.repository)
}

/// Maps the statuses `send` lets through: 404 moves on to the next host, other failures are errors.
fn check_status(response: reqwest::Response, endpoint: &Endpoint, reference: &Reference) -> Result<reqwest::Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(Failure::NotFound);
    }
    // An HTTPS server asked in plain HTTP answers 400 ("Client sent an HTTP request to an
    // HTTPS server"): say which key makes rbuild speak HTTPS to it.
    let message = if status == StatusCode::BAD_REQUEST && endpoint.plain_http.load(Ordering::Relaxed) {
        format!(
            " (plain HTTP was used; if `{}` speaks HTTPS, {})",
            endpoint.host,
            config_hint("http = false", &endpoint.host, endpoint.config_file.as_deref())
        )
    } else {
        String::new()
    };
    Err(Failure::Error(RegistryError::UnexpectedStatus {
        host: endpoint.host.clone(),
        reference: reference.to_string(),
        status: status.as_u16(),
        message,
    }))
}

/// The body of a small document, at most `limit` bytes, within `deadline`.
pub(super) async fn read_limited(
    mut response: reqwest::Response,
    endpoint: &Endpoint,
    reference: &Reference,
    limit: usize,
    deadline: Duration,
    what: &'static str,
) -> Result<Vec<u8>, Failure> {
    let read = read_limited_body(&mut response, endpoint, reference, limit, what);
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Error(RegistryError::Timeout {
            host: endpoint.host.clone(),
            reference: reference.to_string(),
            seconds: deadline.as_secs_f64(),
        })),
    }
}

async fn read_limited_body(
    response: &mut reqwest::Response,
    endpoint: &Endpoint,
    reference: &Reference,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(Failure::Error(RegistryError::TooLarge { what, reference: reference.to_string(), limit }));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(source) => {
                return Err(Failure::Error(endpoint.transport_error(reference.to_string(), source)));
            }
        }
    }
}

/// `bytes` checked against `digest`, given as text (a reference's digest may be of an algorithm
/// rbuild cannot verify, or malformed): the checked digest.
pub(super) fn verify(reference: &Reference, digest: &str, bytes: &[u8]) -> Result<Digest, Failure> {
    let mut hasher = hasher_for(digest)
        .ok_or_else(|| RegistryError::UnsupportedDigest { reference: reference.to_string(), digest: digest.to_string() })?;
    hasher.update(bytes);
    let actual = hasher.finish();
    if actual != digest {
        return Err(Failure::Error(RegistryError::DigestMismatch {
            reference: blob_name(reference, digest),
            expected: digest.to_string(),
            actual: actual.to_string(),
        }));
    }
    Ok(actual)
}

/// A hasher for the algorithm `digest` names, `None` for one rbuild cannot verify.
fn hasher_for(digest: &str) -> Option<DigestHasher> {
    DigestHasher::for_algorithm(digest.split_once(':')?.0)
}
