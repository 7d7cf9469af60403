//! The [`ImageResolver`] of a build: OCI layouts from `--build-context`; registries later.

use std::path::Path;

use crate::frontend::{ImageResolver, ResolvedImage};
use crate::oci::Platform;
use crate::oci::image_config::ImageDocument;
use crate::ops::image::resolve_oci_layout;

/// Layouts from disk; registry references through the store's resolved tags, or the registry
/// (`--pull`, or a tag not resolved before), recording what was resolved.
pub(super) struct Resolver<'a> {
    pub store: &'a crate::store::Store,
    pub registry: Option<&'a crate::registry::Client>,
    pub pull: bool,
    /// `[internal] load metadata for NAME` progress, as BuildKit shows resolves.
    pub progress: crate::progress::Sender,
    /// References resolved in this build (with the platform): stages on the same base resolve
    /// it once, so they get the same digest even with `--pull` and a tag that moves meanwhile.
    pub resolved: std::sync::Mutex<std::collections::HashMap<String, ResolvedImage>>,
}

impl Resolver<'_> {
    /// Reports a resolve as its own progress vertex.
    fn reported<T>(&self, name: &str, resolve: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let task = self.progress.task(format!("[internal] load metadata for {name}"));
        task.start();
        let result = resolve();
        match &result {
            Ok(_) => task.finish(),
            Err(error) => task.fail_message(error.clone()),
        }
        result
    }
}

impl ImageResolver for Resolver<'_> {
    fn resolve_layout(&self, path: &Path, selector: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let resolved = resolve_oci_layout(path, selector, platform).map_err(|error| error.to_string())?;
        let config: ImageDocument =
            serde_json::from_slice(&resolved.config).map_err(|error| format!("invalid image config in `{}`: {error}", path.display()))?;
        let display = match &resolved.source {
            crate::graph::ImageSource::OciLayout { manifest_digest, reference, .. } => format!("{reference}@{manifest_digest}"),
            crate::graph::ImageSource::Registry { manifest_digest, reference } => format!("{reference}@{manifest_digest}"),
        };
        Ok(ResolvedImage { source: resolved.source.clone(), display, config })
    }

    fn resolve_reference(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let parsed = crate::oci::Reference::parse(reference).map_err(|error| error.to_string())?;
        let name = parsed.to_string();
        let key = format!("{name} {platform}");
        if let Some(known) = self.resolved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
            return Ok(known.clone());
        }
        let resolved = self.reported(&name, || self.resolve_registry(&parsed, &name, platform))?;
        self.resolved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, resolved.clone());
        Ok(resolved)
    }
}

impl Resolver<'_> {
    /// A registry reference: the store's resolved tag unless `--pull`, else the registry (and
    /// the manifest, config and tag recorded in the store).
    fn resolve_registry(&self, parsed: &crate::oci::Reference, name: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let failed = |message: String| format!("failed to resolve source metadata for {name}: {message}");
        let key = format!("{name} {platform}");
        let known = if self.pull { None } else { self.store.database().image_tag(&key).map_err(|e| failed(e.to_string()))? };
        // Read whole and checked against their digests: a damaged one is fetched again.
        let cached = known.and_then(|(manifest, config, _)| {
            self.store.read_blob(&manifest)?;
            Some((manifest, self.store.read_blob(&config)?))
        });
        let (manifest_digest, config_bytes) = match cached {
            Some((manifest, bytes)) => (manifest, bytes),
            None => {
                let client = self.registry.ok_or_else(|| failed("no registry configuration".into()))?;
                let resolved = client
                    .resolve(parsed, &platform.os, &platform.architecture, platform.variant.as_deref())
                    .map_err(|error| failed(error.to_string()))?;
                let (manifest, _) = self.store.put_blob(&resolved.manifest).map_err(|e| failed(e.to_string()))?;
                let (config, _) = self.store.put_blob(&resolved.config).map_err(|e| failed(e.to_string()))?;
                if manifest != resolved.manifest_digest || config != resolved.config_digest {
                    return Err(failed("the registry's manifest or config does not match its digest".into()));
                }
                let now = crate::store::now();
                let mut database = self.store.database();
                for (digest, size, media_type) in [
                    (&manifest, resolved.manifest.len(), resolved.manifest_media_type.as_str()),
                    (&config, resolved.config.len(), crate::oci::media_types::OCI_CONFIG),
                ] {
                    database
                        .put_blob(&crate::store::BlobRow {
                            digest: digest.clone(),
                            diff_id: String::new(),
                            compression: "none".into(),
                            level: 0,
                            media_type: media_type.into(),
                            size: size as u64,
                            last_used_at: now,
                        })
                        .map_err(|e| failed(e.to_string()))?;
                }
                database.put_image_tag(&key, &manifest, &config, now).map_err(|e| failed(e.to_string()))?;
                (manifest, resolved.config)
            }
        };
        let config: ImageDocument =
            serde_json::from_slice(&config_bytes).map_err(|error| failed(format!("invalid image config: {error}")))?;
        Ok(ResolvedImage {
            source: crate::graph::ImageSource::Registry {
                reference: name.to_string(),
                manifest_digest: crate::graph::Digest(manifest_digest.clone()),
            },
            display: format!("{name}@{manifest_digest}"),
            config,
        })
    }
}
