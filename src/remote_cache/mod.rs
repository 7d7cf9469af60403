//! The build cache shared between machines: `--cache-to` writes the records of a build (cache
//! key → layer blobs) to a registry or an OCI layout directory, `--cache-from` reads them back,
//! so a fleet of CI runners shares its cache through an ordinary registry.
//!
//! A cache is one OCI image manifest: its config (`application/vnd.rbuild.cache.config.v1+json`,
//! [`format`]) lists the records and the layers; its layers are the layer blobs, then the blobs
//! of exported cache mounts. Keys are content-based (DESIGN.md section 3): the same on every
//! machine, so a record written by one runner is a hit on another.
//!
//! Import reads only the manifest and the config. The solver consults the imported records
//! when the store misses; a hit hands out lazy layers (`ops::lazy`), fetched only when a step
//! runs on them or an export needs their blob. A cache that cannot be imported (missing on the
//! first CI run, unreachable) is a warning, as in BuildKit, not a failure.
//!
//! | file        | concept                                                        |
//! |-------------|----------------------------------------------------------------|
//! | `spec.rs`   | `--cache-to` / `--cache-from` values, parsed as buildx does    |
//! | `format.rs` | the cache config document                                      |
//! | `import.rs` | reading a cache: manifest, config, blob sources                |
//! | `export.rs` | writing a cache: choosing records, blobs, pushing or a layout  |
//! | `layout.rs` | the OCI layout directory of `type=local`                       |

mod export;
mod format;
mod import;
mod layout;
mod spec;

pub(crate) use export::{ExportRecord, ExportSet, export};
pub(crate) use import::import;
pub(crate) use spec::{CacheExport, CacheImport, parse_cache_from, parse_cache_to};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{location}: not found")]
    NotFound { location: String },
    #[error("invalid cache `{location}`: {message}")]
    Invalid { location: String, message: String },
    #[error("failed to read `{path}`")]
    Read { path: String, source: std::io::Error },
    #[error("failed to write `{path}`")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Image(#[from] crate::exporter::image::ImageError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Database(#[from] crate::store::DatabaseError),
    #[error("canceled")]
    Canceled,
    /// A `--cache-to` export that failed, naming the cache.
    #[error("failed to export the cache to {location}")]
    Export { location: String, source: Box<CacheError> },
}
