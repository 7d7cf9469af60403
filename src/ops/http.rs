//! `ADD <http(s) URL>`: a file downloaded once, keyed by its content.
//!
//! As BuildKit's http source (measured with the oracle): the result is one layer holding
//! `/<filename>` (the URL path's last component, `__unnamed__` without one; the frontend
//! chooses it), mode 0600, owner 0:0, mtime from `Last-Modified` (else the Unix epoch). The
//! step that copies it into the stage (`ADD`'s file op) applies the destination rules,
//! `--chmod`, `--chown` and `--unpack`.
//!
//! Cache key: the content's digest, the file name and `Last-Modified` (the file's mtime), never
//! the URL: the same file from two URLs is one result, and a URL whose content changed is a new
//! one. (BuildKit leaves the mtime out, so of two URLs with the same bytes the first one cached
//! gives its mtime to both; rbuild's result does not depend on what was cached before.) Finding the digest means
//! asking the server: a URL downloaded before is revalidated with `If-None-Match` and its
//! `ETag` (a `HEAD`; BuildKit does the same), or without one with `If-Modified-Since`, and only
//! downloaded again when the server says it changed or the layer was pruned. So the download happens while the key is computed, before
//! the cache is asked, as in BuildKit ("failed to load cache key: ...").
//!
//! | cache input | value                        |
//! |-------------|------------------------------|
//! | `content`   | `sha256:` of the bytes       |
//! | `filename`  | the file's name in the layer |
//! | `last_modified` | the response's `Last-Modified`, as sent (empty without one) |
//!
//! State: the `http_source` table of the store remembers per URL the validators, the digest
//! and the layer, so a rebuild with an unchanged URL downloads nothing.

use std::os::unix::fs::PermissionsExt;

use super::layer::{self, Layer};
use super::{CacheInput, Environment, OpError};
use crate::graph::HttpSource;
use crate::oci::{Digest, Hashing};
use crate::registry::Validators;
use crate::store::database::HttpSourceRow;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error(transparent)]
    Fetch(#[from] crate::registry::RegistryError),
    #[error("no network client for `{url}`")]
    NoClient { url: String },
    /// BuildKit's words: the actual digest first, then the expected one (as the Dockerfile
    /// gave it: `--checksum` may name an algorithm rbuild does not compute).
    #[error("digest mismatch {actual}: {expected}")]
    ChecksumMismatch { actual: Digest, expected: String },
    #[error("failed to write the download of `{url}`")]
    Write { url: String, source: std::io::Error },
}

/// The key's inputs: the content's digest (from the server's word that the file is unchanged,
/// or from downloading it) and the file name.
pub(crate) fn cache_inputs(source: &HttpSource, environment: &Environment) -> Result<Vec<CacheInput>, OpError> {
    let row = current(source, environment)?;
    let modified = row.last_modified.unwrap_or_default();
    Ok(vec![
        ("content".to_string(), row.digest.to_string()),
        ("filename".to_string(), source.filename.clone()),
        ("last_modified".to_string(), modified),
    ])
}

/// The layer holding the file: the one [`cache_inputs`] made or found, downloaded again if it
/// is gone meanwhile.
pub(crate) fn run(source: &HttpSource, environment: &Environment) -> Result<Vec<Layer>, OpError> {
    let database_row = environment.store.database().http_source(&source.url).map_err(crate::store::StoreError::from)?;
    if let Some(row) = database_row
        && let Some(layers) = layer::load(environment.store, std::slice::from_ref(&row.diff_id))?
    {
        return Ok(layers);
    }
    let row = download(source, environment)?;
    Ok(layer::load(environment.store, std::slice::from_ref(&row.diff_id))?.unwrap_or_default())
}

/// The URL's record, revalidated or downloaded now, its content checked against `--checksum`
/// (which the frontend checked for form; a sha384 or sha512 one can only mismatch, as in
/// BuildKit, whose http source hashes with sha256 too).
fn current(source: &HttpSource, environment: &Environment) -> Result<HttpSourceRow, OpError> {
    let client = environment.registry.ok_or_else(|| HttpError::NoClient { url: source.url.clone() })?;
    let known = environment.store.database().http_source(&source.url).map_err(crate::store::StoreError::from)?;
    let row = match known {
        Some(row)
            if (row.etag.is_some() || row.last_modified.is_some())
                && layer::load(environment.store, std::slice::from_ref(&row.diff_id))?.is_some()
                && client
                    .url_unchanged(&source.url, &Validators { etag: row.etag.clone(), last_modified: row.last_modified.clone() })
                    .map_err(HttpError::from)? =>
        {
            row
        }
        _ => download(source, environment)?,
    };
    if let Some(expected) = &source.checksum
        && row.digest != *expected
    {
        return Err(HttpError::ChecksumMismatch { actual: row.digest, expected: expected.clone() }.into());
    }
    Ok(row)
}

/// Downloads the file into a new layer and remembers it. A checksum mismatch keeps nothing.
fn download(source: &HttpSource, environment: &Environment) -> Result<HttpSourceRow, OpError> {
    let client = environment.registry.ok_or_else(|| HttpError::NoClient { url: source.url.clone() })?;
    let directory = environment.store.temp_dir("http-")?;
    let path = directory.path().join(&source.filename);
    let write_error = |error: std::io::Error| HttpError::Write { url: source.url.clone(), source: error };
    let file = std::fs::File::create(&path).map_err(write_error)?;
    let mut hashing = Hashing::sha256(std::io::BufWriter::new(file));
    let downloaded = client
        .download(&source.url, &mut hashing, &mut |done, total| (environment.status)(&source.url, done, total, false))
        .map_err(|error| match error {
        crate::registry::RegistryError::Canceled => OpError::Canceled,
        other => HttpError::Fetch(other).into(),
    })?;
    let (inner, digest, _) = hashing.finish();
    let file = inner.into_inner().map_err(|error| write_error(error.into_error()))?;
    if let Some(expected) = &source.checksum
        && digest != expected.as_str()
    {
        return Err(HttpError::ChecksumMismatch { actual: digest, expected: expected.clone() }.into());
    }
    let seconds = downloaded.last_modified.as_deref().and_then(crate::oci::time::parse_http_date).unwrap_or(0);
    let mtime =
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(seconds.max(0).unsigned_abs())).unwrap_or(std::time::UNIX_EPOCH);
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(write_error)?;
    file.set_modified(mtime).and_then(|()| file.sync_all()).map_err(write_error)?;
    // As BuildKit describes the record of an http source in `du`.
    let description = format!("http url {}", source.url);
    let layer = layer::commit(environment.store, directory, &description, crate::store::LayerKind::Regular, false, environment.cancel)?;
    let row = HttpSourceRow {
        url: source.url.clone(),
        etag: downloaded.etag,
        last_modified: downloaded.last_modified,
        digest,
        diff_id: layer.diff_id.clone(),
        fetched_at: crate::store::now(),
    };
    environment.store.database().put_http_source(&row).map_err(crate::store::StoreError::from)?;
    Ok(row)
}
