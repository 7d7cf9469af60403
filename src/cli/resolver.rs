//! The [`ImageResolver`] of a build: base images resolved by `ops::image` (OCI layouts from
//! `--build-context`, registry references through the store or the registry), each registry
//! reference once per build and reported as its own progress vertex.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::frontend::ImageResolver;
use crate::oci::{Platform, Reference};
use crate::ops::image::{ResolveError, ResolvedImage, resolve_oci_layout, resolve_registry};

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
    pub resolved: Mutex<HashMap<String, ResolvedImage>>,
}

impl Resolver<'_> {
    /// Reports a resolve as its own progress vertex, `[internal] load metadata for NAME` or for
    /// a named context `[context NAME] load metadata for REFERENCE`.
    fn reported<T>(&self, label: String, resolve: impl FnOnce() -> Result<T, ResolveError>) -> Result<T, ResolveError> {
        let task = self.progress.task(label);
        task.start();
        let result = resolve();
        match &result {
            Ok(_) => task.finish(),
            Err(error) => task.fail_message(error.to_string()),
        }
        result
    }
}

impl Resolver<'_> {
    /// A registry reference, resolved once per build and platform.
    fn resolve_once(&self, parsed: &Reference, platform: &Platform, label: String) -> Result<ResolvedImage, ResolveError> {
        let key = format!("{parsed} {platform}");
        if let Some(known) = self.resolved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
            return Ok(known.clone());
        }
        let resolved = self.reported(label, || resolve_registry(self.store, self.registry, parsed, platform, self.pull))?;
        self.resolved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, resolved.clone());
        Ok(resolved)
    }
}

impl ImageResolver for Resolver<'_> {
    fn resolve_layout(&self, path: &Path, selector: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        resolve_oci_layout(path, selector, platform)
    }

    fn resolve_reference(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        let parsed = Reference::parse(reference)?;
        let label = format!("[internal] load metadata for {parsed}");
        self.resolve_once(&parsed, platform, label)
    }

    fn resolve_context_image(&self, context: &str, reference: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        let parsed = Reference::parse(reference)?;
        self.resolve_once(&parsed, platform, format!("[context {context}] load metadata for {reference}"))
    }
}
