//! The [`ImageResolver`] of a build: OCI layouts from `--build-context`; registries later.

use std::path::Path;

use crate::frontend::{ImageDocument, ImageResolver, Platform, ResolvedImage};
use crate::ops::image::resolve_oci_layout;

pub struct Resolver;

impl ImageResolver for Resolver {
    fn resolve_layout(&self, path: &Path, selector: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        let resolved = resolve_oci_layout(path, selector, (&platform.os, &platform.architecture, platform.variant.as_deref()))
            .map_err(|error| error.to_string())?;
        let config: ImageDocument = serde_json::from_slice(&resolved.config)
            .map_err(|error| format!("invalid image config in `{}`: {error}", path.display()))?;
        let crate::graph::ImageSource::OciLayout { manifest_digest, reference, .. } = &resolved.source;
        let display = format!("{reference}@{manifest_digest}");
        Ok(ResolvedImage { source: resolved.source.clone(), display, config })
    }

    fn resolve_reference(&self, reference: &str, _platform: &Platform) -> Result<ResolvedImage, String> {
        let name = crate::exporter::normalize(reference).map(|r| r.full).unwrap_or_else(|_| reference.to_string());
        let short = name.strip_prefix("docker.io/library/").unwrap_or(&name);
        let short = short.strip_suffix(":latest").unwrap_or(short);
        Err(format!(
            "failed to resolve source metadata for {name}: pulling from registries is not supported yet; \
             give the image as an OCI layout with --build-context {short}=oci-layout://PATH"
        ))
    }
}
