//! The request machinery both sides of the client share: authorization and sending with retries.
//! [`Client::send_as`] is the one way a request goes out; [`Failure`] is how it ends when it gives
//! no usable response.
//!
//! Auth: a request goes out with the cached authorization for (host, scope); on 401 the
//! `WWW-Authenticate` challenge is answered once per request (Bearer: token from the realm,
//! anonymous or with the host's credentials; Basic: the credentials), a second 401 is
//! "pull access denied". 403 is "insufficient scope".
//!
//! Retries: connection errors, 408, 429 and 5xx are retried with exponential backoff honouring
//! `Retry-After`, at most [`RetryPolicy::attempts`](super::RetryPolicy::attempts) tries within a
//! bounded total delay.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use super::auth::{Credential, parse_challenge};
use super::client::{Client, Endpoint, read_limited};
use super::error::RegistryError;
use crate::oci::Reference;

/// How a request ended when it did not give a usable response.
pub(super) enum Failure {
    /// The host does not have it; try the next host, and say "not found" if none has it.
    NotFound,
    Error(RegistryError),
}

impl From<RegistryError> for Failure {
    fn from(error: RegistryError) -> Failure {
        Failure::Error(error)
    }
}

impl Failure {
    /// The error to report when no other host is left to try; `name` is what was not found.
    pub(super) fn into_error(self, name: &str) -> RegistryError {
        match self {
            Failure::NotFound => RegistryError::NotFound { reference: name.to_string() },
            Failure::Error(error) => error,
        }
    }
}

/// What a request asks of the registry's authorization: the token scopes (their joined text
/// keys the cached `Authorization`), and whether a refusal is a pull or a push refusal.
pub(super) struct Access {
    scopes: Vec<String>,
    push: bool,
}

impl Access {
    fn pull(reference: &Reference) -> Access {
        Access { scopes: vec![format!("repository:{}:pull", reference.repository)], push: false }
    }

    /// Pull and push on the reference's repository, plus pull on `mount_from` (the source of a
    /// cross-repository mount), as containerd's pusher asks.
    pub(super) fn push(reference: &Reference, mount_from: Option<&str>) -> Access {
        let mut scopes = vec![format!("repository:{}:pull,push", reference.repository)];
        scopes.extend(mount_from.map(|source| format!("repository:{source}:pull")));
        Access { scopes, push: true }
    }

    fn denied(&self, reference: &Reference, reason: String) -> RegistryError {
        let reference = reference.to_string();
        if self.push { RegistryError::PushAccessDenied { reference, reason } } else { RegistryError::AccessDenied { reference, reason } }
    }
}

/// Where a request goes: a path under the endpoint's `/v2/` (its scheme may change between tries
/// through the HTTP fallback), or a URL the registry gave (an upload's `Location`).
pub(super) enum Target<'a> {
    Path(&'a str),
    Url(&'a reqwest::Url),
}

impl Client {
    /// A pull request under `/v2/` with authentication and retries; see [`Client::send_as`].
    pub(super) async fn send(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        method: Method,
        path: &str,
        accept: &str,
        range_start: u64,
    ) -> Result<reqwest::Response, Failure> {
        let access = Access::pull(reference);
        self.send_as(endpoint, reference, &access, method, Target::Path(path), true, |request| {
            let request = request.header(ACCEPT, accept);
            if range_start > 0 { request.header(RANGE, format!("bytes={range_start}-")) } else { request }
        })
        .await
    }

    /// One request with authentication and (when `retries`) retries. `customize` adds headers and
    /// body; it runs once per try. Returns any response that is not 401/403 and not worth
    /// retrying; 401/403 become `access`'s "access denied".
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_as(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        access: &Access,
        method: Method,
        target: Target<'_>,
        retries: bool,
        customize: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let key = (endpoint.host.clone(), access.scopes.join(" "));
        let mut answered_challenge = false;
        loop {
            let authorization = self.lock_authorizations().get(&key).cloned();
            let response = self
                .send_with_retries(endpoint, &reference.to_string(), retries, || {
                    let (url, same_host) = match &target {
                        Target::Path(path) => (endpoint.url(path), true),
                        Target::Url(url) => (url.to_string(), authority(url) == endpoint.host),
                    };
                    let mut request = customize(endpoint.http.request(method.clone(), url));
                    // A token is for the registry; an upload `Location` on another host (a storage
                    // redirect) carries its own authorization in the URL.
                    if let Some(authorization) = authorization.as_ref().filter(|_| same_host) {
                        request = request.header(AUTHORIZATION, authorization);
                    }
                    request
                })
                .await?;
            match response.status() {
                StatusCode::UNAUTHORIZED if !answered_challenge => {
                    answered_challenge = true;
                    let authorization = self.answer_challenge(endpoint, reference, access, response.headers()).await?;
                    self.lock_authorizations().insert(key.clone(), authorization);
                }
                StatusCode::UNAUTHORIZED => {
                    let credential = self.credentials.get(&endpoint.host)?;
                    let reason = match credential {
                        Some(credential) => format!("authentication failed for `{}` at `{}`", credential.username(), endpoint.host),
                        None => "authentication required".to_string(),
                    };
                    return Err(Failure::Error(access.denied(reference, reason)));
                }
                StatusCode::FORBIDDEN => {
                    let reason = format!("insufficient scope{}", server_message(response).await);
                    return Err(Failure::Error(access.denied(reference, reason)));
                }
                _ => return Ok(response),
            }
        }
    }

    fn lock_authorizations(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        // A poisoned map is still consistent: values are replaced whole.
        self.authorizations.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The `Authorization` value that answers a 401's challenge.
    async fn answer_challenge(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        access: &Access,
        headers: &HeaderMap,
    ) -> Result<String, Failure> {
        let credential = self.credentials.get(&endpoint.host)?;
        let denied = |reason: String| Failure::Error(access.denied(reference, reason));
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter_map(parse_challenge)
            .find(|challenge| challenge.scheme == "bearer" || challenge.scheme == "basic");
        let Some(challenge) = challenge else {
            return Err(denied("authentication required".into()));
        };
        if challenge.scheme == "basic" {
            return match credential {
                Some(Credential::Basic { username, password }) => {
                    Ok(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))))
                }
                _ => Err(denied("authentication required".into())),
            };
        }
        let Some(realm) = challenge.parameters.get("realm") else {
            return Err(denied("authentication required".into()));
        };
        let service = challenge.parameters.get("service").cloned().unwrap_or_default();
        let realm_url = reqwest::Url::parse(realm).map_err(|error| {
            Failure::Error(RegistryError::Token { realm: realm.clone(), reference: reference.to_string(), detail: error.to_string() })
        })?;
        // As containerd: the OAuth form joins scopes with spaces, the GET repeats `scope`.
        let joined_scopes = access.scopes.join(" ");
        let response = self
            .send_with_retries(endpoint, &reference.to_string(), true, || match &credential {
                Some(Credential::IdentityToken { token, .. }) => endpoint.http.post(realm_url.clone()).form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("service", service.as_str()),
                    ("scope", joined_scopes.as_str()),
                    ("client_id", "rbuild"),
                ]),
                other => {
                    let mut query: Vec<(&str, &str)> = access.scopes.iter().map(|scope| ("scope", scope.as_str())).collect();
                    if !service.is_empty() {
                        query.push(("service", service.as_str()));
                    }
                    let request = endpoint.http.get(realm_url.clone()).query(&query);
                    match other {
                        Some(Credential::Basic { username, password }) => request.basic_auth(username, Some(password)),
                        _ => request,
                    }
                }
            })
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let reason = match &credential {
                Some(credential) => format!("authentication failed for `{}` at `{}`", credential.username(), endpoint.host),
                None => "authentication required".to_string(),
            };
            return Err(denied(reason));
        }
        if !status.is_success() {
            return Err(Failure::Error(RegistryError::Token {
                realm: realm.clone(),
                reference: reference.to_string(),
                detail: format!("status `{status}`{}", server_message(response).await),
            }));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let bytes = read_limited(response, endpoint, reference, 1 << 20, self.retry.small_body_deadline, "the token response").await?;
        let answer: TokenAnswer = serde_json::from_slice(&bytes).map_err(|error| {
            Failure::Error(RegistryError::Token { realm: realm.clone(), reference: reference.to_string(), detail: error.to_string() })
        })?;
        let token = if answer.token.is_empty() { answer.access_token } else { answer.token };
        if token.is_empty() {
            return Err(Failure::Error(RegistryError::Token {
                realm: realm.clone(),
                reference: reference.to_string(),
                detail: "no token in the answer".into(),
            }));
        }
        Ok(format!("Bearer {token}"))
    }

    /// Sends `build()` until it gives a response that is not 408, 429 or 5xx, or the policy is
    /// spent (then the last response is returned, for the caller's error message). Without
    /// `retries` there is one try (the HTTP fallback still applies).
    /// `name` (the image, or the URL) is what error messages say was being fetched.
    pub(super) async fn send_with_retries(
        &self,
        endpoint: &Endpoint,
        name: &str,
        retries: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RegistryError> {
        let attempts = if retries { self.retry.attempts } else { 1 };
        let started = Instant::now();
        let mut total_delay = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let Ok(outcome) = tokio::time::timeout(self.retry.response_deadline, build().send()).await else {
                return Err(RegistryError::Timeout {
                    host: endpoint.host.clone(),
                    reference: name.to_string(),
                    seconds: self.retry.response_deadline.as_secs_f64(),
                });
            };
            let retry_after = match &outcome {
                Ok(response) if is_retryable(response.status()) => retry_after(response.headers()),
                Ok(_) => None,
                Err(error)
                    if endpoint.fallback && !endpoint.plain_http.load(Ordering::Relaxed) && (error.is_connect() || error.is_request()) =>
                {
                    tracing::debug!("HTTPS to `{}` failed ({error}); falling back to HTTP", endpoint.host);
                    endpoint.plain_http.store(true, Ordering::Relaxed);
                    continue;
                }
                Err(_) => None,
            };
            let retryable = match &outcome {
                Ok(response) => is_retryable(response.status()),
                Err(error) => !error.is_builder() && !error.is_redirect(),
            };
            let delay = retry_after.unwrap_or(self.retry.initial_delay * 2u32.saturating_pow(attempt - 1)).min(self.retry.max_delay);
            if !retryable || attempt >= attempts || total_delay + delay > self.retry.max_total_delay {
                return outcome.map_err(|source| endpoint.transport_error(name.to_string(), source));
            }
            match &outcome {
                Ok(response) => tracing::debug!("`{}` answered `{}`; retrying in {delay:?}", endpoint.host, response.status()),
                Err(error) => tracing::debug!("request to `{}` failed: {error}; retrying in {delay:?}", endpoint.host),
            }
            drop(outcome);
            tokio::time::sleep(delay).await;
            total_delay += delay;
            attempt += 1;
            tracing::trace!("retry {attempt} after {:?}", started.elapsed());
        }
    }
}

/// `host[:port]` of a URL, comparable with [`Endpoint::host`].
fn authority(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        (None, _) => String::new(),
    }
}

pub(super) fn is_retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (the HTTP-date form is rare for registries and is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// The most characters of a registry's own error text that an error line shows.
const SERVER_MESSAGE_LIMIT: usize = 300;

/// `: CODE: message` from a distribution error body, or nothing.
pub(super) async fn server_message(response: reqwest::Response) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(Ok(bytes)) = tokio::time::timeout(std::time::Duration::from_secs(10), response.bytes()).await else {
        return String::new();
    };
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(errors) if !errors.errors.is_empty() => {
            // A registry repeats one entry per offending item (every unknown blob of a manifest).
            let mut entries: Vec<String> = Vec::new();
            for entry in &errors.errors {
                let text = format!("{}: {}", entry.code.to_ascii_lowercase(), entry.message);
                if !entries.contains(&text) {
                    entries.push(text);
                }
            }
            // Bounded: a hostile registry must not fill the terminal with one error line.
            let message = entries.join(", ");
            let shown: String = message.chars().take(SERVER_MESSAGE_LIMIT).collect();
            let cut = if shown.len() < message.len() { " [...]" } else { "" };
            format!(": server message: {shown}{cut}")
        }
        _ => String::new(),
    }
}
