//! Files from plain http(s) URLs, for `ADD <url>`: a conditional `HEAD` that asks whether a file
//! changed since it was downloaded, and a `GET` that streams it.
//!
//! The same transport as registries: the URL's host gets its `[registry."host"]` settings (CA
//! files, client certificate, `insecure`), requests are retried as registry requests are (408,
//! 429, 5xx, dropped connections), redirects are followed (at most ten), proxies come from
//! `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`, and Ctrl-C ends a download at once. The URL's own
//! scheme is used, never switched.
//!
//! As BuildKit's http source: a file is revalidated with `If-None-Match` and the `ETag` of the
//! earlier download; an answer other than 2xx or 304 is `invalid response status N`. Beyond
//! BuildKit (which downloads again): a file without an `ETag` is revalidated with
//! `If-Modified-Since` and its `Last-Modified`.

use reqwest::StatusCode;
use reqwest::header::{ETAG, HeaderMap, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};

use super::client::{Client, build_endpoint};
use super::error::RegistryError;

/// What identifies a version of a file to its server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// `ETag`, as sent (quotes kept).
    pub etag: Option<String>,
    /// `Last-Modified`, as sent.
    pub last_modified: Option<String>,
}

/// What a `GET` of a URL said besides its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// `ETag`, as sent (quotes kept).
    pub etag: Option<String>,
    /// `Last-Modified`, as sent.
    pub last_modified: Option<String>,
    /// Bytes written.
    pub size: u64,
}

impl Client {
    /// A `HEAD` of `url` with the validators of an earlier download (`If-None-Match` with its
    /// `ETag`, else `If-Modified-Since` with its `Last-Modified`): whether the server says the
    /// file is still that one (304, or a 2xx with the same validator).
    pub fn url_unchanged(&self, url: &str, earlier: &Validators) -> Result<bool, RegistryError> {
        let endpoint = self.url_endpoint(url)?;
        self.block_on(async {
            let response = self
                .send_with_retries(&endpoint, url, true, || {
                    let request = endpoint.http.head(url);
                    match (&earlier.etag, &earlier.last_modified) {
                        (Some(etag), _) => request.header(IF_NONE_MATCH, etag),
                        (None, Some(date)) => request.header(IF_MODIFIED_SINCE, date),
                        (None, None) => request,
                    }
                })
                .await
                .map_err(|error| download_error(url, error))?;
            let status = response.status();
            if status == StatusCode::NOT_MODIFIED {
                return Ok(true);
            }
            if !status.is_success() {
                return Err(RegistryError::UrlStatus { url: url.to_string(), status: status.as_u16() });
            }
            let now = Validators { etag: header(response.headers(), ETAG), last_modified: header(response.headers(), LAST_MODIFIED) };
            Ok(match &earlier.etag {
                Some(etag) => now.etag.as_ref() == Some(etag),
                None => earlier.last_modified.is_some() && now.etag.is_none() && now.last_modified == earlier.last_modified,
            })
        })
    }

    /// `GET url`, the body written to `out`; `progress` gets (bytes so far, total when known).
    pub fn download(
        &self,
        url: &str,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Download, RegistryError> {
        let endpoint = self.url_endpoint(url)?;
        self.block_on(async {
            let mut response = self
                .send_with_retries(&endpoint, url, true, || endpoint.http.get(url))
                .await
                .map_err(|error| download_error(url, error))?;
            let status = response.status();
            if !status.is_success() {
                return Err(RegistryError::UrlStatus { url: url.to_string(), status: status.as_u16() });
            }
            let headers = response.headers();
            let (etag, last_modified) = (header(headers, ETAG), header(headers, LAST_MODIFIED));
            let total = response.content_length();
            let mut size = 0_u64;
            while let Some(chunk) =
                response.chunk().await.map_err(|source| download_error(url, endpoint.transport_error(url.into(), source)))?
            {
                out.write_all(&chunk).map_err(|source| RegistryError::WriteDownload { url: url.to_string(), source })?;
                size += chunk.len() as u64;
                progress(size, total);
            }
            Ok(Download { etag, last_modified, size })
        })
    }

    /// The transport of `url`'s host: its `[registry."host"]` settings, a client of its own.
    fn url_endpoint(&self, url: &str) -> Result<super::client::Endpoint, RegistryError> {
        let parsed =
            reqwest::Url::parse(url).map_err(|error| RegistryError::InvalidUrl { url: url.to_string(), reason: error.to_string() })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(RegistryError::InvalidUrl { url: url.to_string(), reason: format!("unsupported scheme `{}`", parsed.scheme()) });
        }
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            (None, _) => return Err(RegistryError::InvalidUrl { url: url.to_string(), reason: "no host".into() }),
        };
        build_endpoint(&host, String::new(), &self.config().host(&host), self.config().file.clone())
    }
}

fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_string)
}

/// A transport failure said of the URL rather than of a registry.
fn download_error(url: &str, error: RegistryError) -> RegistryError {
    match error {
        RegistryError::Connect { source, cause, .. } => RegistryError::Download { url: url.to_string(), error: source, cause },
        other => other,
    }
}
