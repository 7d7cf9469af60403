//! Small OCI artifacts: an image manifest whose config is not an image config (a build cache),
//! fetched whole with its config. No platform selection: the manifest is taken as it is.

use super::client::Client;
use super::error::RegistryError;
use super::manifest;
use super::request::Failure;
use crate::oci::manifest::AnyManifest;
use crate::oci::{Digest, Reference};

/// An artifact manifest and its config, both verified against their digests.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub digest: Digest,
    pub manifest: Vec<u8>,
    pub config_media_type: String,
    pub config: Vec<u8>,
    pub layers: Vec<crate::oci::Descriptor>,
}

impl Client {
    /// The image manifest `reference` names (by tag or digest) and its config, read into memory
    /// (at most `config_limit` bytes). `Ok(None)` when no host has it.
    pub fn fetch_artifact(&self, reference: &Reference, config_limit: usize) -> Result<Option<Artifact>, RegistryError> {
        let endpoints = self.endpoints(&reference.registry)?;
        self.block_on(async {
            let mut first_error = None;
            for endpoint in endpoints.iter() {
                let fetched = async {
                    let (digest, bytes, header) = match &reference.digest {
                        Some(digest) => self.get_manifest(endpoint, reference, digest).await?,
                        None => self.get_manifest_by_tag(endpoint, reference).await?,
                    };
                    let invalid =
                        |reason: String| Failure::Error(RegistryError::InvalidManifest { reference: reference.to_string(), reason });
                    let parsed: AnyManifest = serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
                    let media_type = parsed.media_type(header.as_deref());
                    if !manifest::is_manifest(&media_type) {
                        return Err(Failure::Error(RegistryError::UnsupportedMediaType { reference: reference.to_string(), media_type }));
                    }
                    let config = parsed.config.ok_or_else(|| invalid("no config".into()))?;
                    let config_bytes = self.get_small_blob(endpoint, reference, &config.digest, config.size, config_limit).await?;
                    let layers = parsed.layers.unwrap_or_default();
                    Ok(Artifact { digest, manifest: bytes, config_media_type: config.media_type, config: config_bytes, layers })
                };
                match fetched.await {
                    Ok(artifact) => return Ok(Some(artifact)),
                    Err(Failure::NotFound) => tracing::debug!("{reference}: not found at `{}`", endpoint.host),
                    Err(Failure::Error(error)) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            match first_error {
                Some(error) => Err(error),
                None => Ok(None),
            }
        })
    }
}
