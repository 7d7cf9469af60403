//! `--cache-to` and `--cache-from` values, parsed as buildx parses them: CSV `key=value` pairs
//! with `type=`; a value without `=` is a registry reference (`--cache-from user/app:cache`).
//!
//! | type       | `--cache-to` keys                                     | `--cache-from` keys    |
//! |------------|-------------------------------------------------------|------------------------|
//! | `registry` | `ref`, `mode`, `compression`, `compression-level`, `ignore-error`, `cache-mounts` | `ref` |
//! | `local`    | `dest`, `tag`, and the same as `registry`             | `src`, `tag`, `digest` |
//!
//! `oci-mediatypes`, `image-manifest` and `force-compression` are accepted for buildx's sake:
//! rbuild always writes an OCI image manifest and always compresses as asked.

use std::fmt;
use std::path::PathBuf;

use crate::exporter::output::{parse_bool, split_csv};
use crate::oci::Compression;

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    Registry {
        reference: String,
    },
    /// An OCI layout directory; the cache is the manifest tagged `tag`, or the one of `digest`.
    Local {
        dir: PathBuf,
        tag: String,
        digest: Option<String>,
    },
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Registry { reference } => write!(formatter, "{reference}"),
            CacheLocation::Local { dir, .. } => write!(formatter, "{}", dir.display()),
        }
    }
}

/// Which records `--cache-to` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps of the exported image only (BuildKit's default).
    Min,
    /// Every step of the build, other stages included.
    Max,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    pub location: CacheLocation,
    pub mode: CacheMode,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    /// A failed export is a warning, not a failed build.
    pub ignore_error: bool,
    /// Also export the `RUN --mount=type=cache` directories the build used.
    pub cache_mounts: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheImport {
    pub location: CacheLocation,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SpecError {
    #[error("invalid cache `{0}`: expected key=value pairs")]
    Syntax(String),
    #[error("cache type `{0}` is not supported: use type=registry,ref=REF or type=local,{1}=DIR")]
    UnknownType(String, &'static str),
    #[error("invalid value `{value}` for cache key `{key}`")]
    Value { key: String, value: String },
    #[error("unknown key `{key}` for {direction} type `{kind}`")]
    UnknownKey { key: String, kind: String, direction: &'static str },
    #[error("{direction} type `{kind}` needs `{key}`")]
    Missing { key: &'static str, kind: String, direction: &'static str },
}

/// The pairs of a value, keys lowercased; a bare reference means `type=registry,ref=...`.
fn pairs(text: &str) -> Result<Vec<(String, String)>, SpecError> {
    if !text.contains('=') {
        return Ok(vec![("type".into(), "registry".into()), ("ref".into(), text.trim().into())]);
    }
    let mut pairs = Vec::new();
    for field in split_csv(text) {
        let Some((key, value)) = field.split_once('=') else {
            return Err(SpecError::Syntax(text.into()));
        };
        pairs.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(pairs)
}

fn kind_of(pairs: &[(String, String)], directory_key: &'static str) -> Result<String, SpecError> {
    let explicit = pairs.iter().find(|(key, _)| key == "type").map(|(_, value)| value.clone());
    // buildx: without a type, `ref` means a registry.
    let kind = explicit.unwrap_or_else(|| if pairs.iter().any(|(key, _)| key == "ref") { "registry".into() } else { String::new() });
    match kind.as_str() {
        "registry" | "local" => Ok(kind),
        other => Err(SpecError::UnknownType(other.into(), directory_key)),
    }
}

fn bool_value(key: &str, value: &str) -> Result<bool, SpecError> {
    parse_bool(key, value).map_err(|_| SpecError::Value { key: key.into(), value: value.into() })
}

pub(crate) fn parse_cache_to(text: &str) -> Result<CacheExport, SpecError> {
    let pairs = pairs(text)?;
    let kind = kind_of(&pairs, "dest")?;
    let direction = "--cache-to";
    let mut reference = None;
    let mut dir = None;
    let mut tag = "latest".to_string();
    let mut export = CacheExport {
        location: CacheLocation::Registry { reference: String::new() },
        mode: CacheMode::Min,
        compression: Compression::Gzip,
        compression_level: None,
        ignore_error: false,
        cache_mounts: false,
    };
    for (key, value) in pairs {
        let invalid = || SpecError::Value { key: key.clone(), value: value.clone() };
        match key.as_str() {
            "type" => {}
            "ref" if kind == "registry" => reference = Some(value),
            "dest" if kind == "local" => dir = Some(PathBuf::from(value)),
            "tag" if kind == "local" => tag = value,
            "mode" => {
                export.mode = match value.as_str() {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(invalid()),
                }
            }
            "compression" => export.compression = Compression::parse(&value).ok_or_else(invalid)?,
            "compression-level" => export.compression_level = Some(value.parse().map_err(|_| invalid())?),
            "ignore-error" => export.ignore_error = bool_value(&key, &value)?,
            "cache-mounts" => export.cache_mounts = bool_value(&key, &value)?,
            "oci-mediatypes" | "image-manifest" | "force-compression" => {
                bool_value(&key, &value)?;
            }
            _ => return Err(SpecError::UnknownKey { key, kind, direction }),
        }
    }
    export.location = location(&kind, reference, dir, tag, None, direction)?;
    Ok(export)
}

pub(crate) fn parse_cache_from(text: &str) -> Result<CacheImport, SpecError> {
    let pairs = pairs(text)?;
    let kind = kind_of(&pairs, "src")?;
    let direction = "--cache-from";
    let mut reference = None;
    let mut dir = None;
    let mut tag = "latest".to_string();
    let mut digest = None;
    for (key, value) in pairs {
        match key.as_str() {
            "type" => {}
            "ref" if kind == "registry" => reference = Some(value),
            "src" if kind == "local" => dir = Some(PathBuf::from(value)),
            "tag" if kind == "local" => tag = value,
            "digest" if kind == "local" => {
                if !value.starts_with("sha256:") {
                    return Err(SpecError::Value { key, value });
                }
                digest = Some(value)
            }
            _ => return Err(SpecError::UnknownKey { key, kind, direction }),
        }
    }
    Ok(CacheImport { location: location(&kind, reference, dir, tag, digest, direction)? })
}

fn location(
    kind: &str,
    reference: Option<String>,
    dir: Option<PathBuf>,
    tag: String,
    digest: Option<String>,
    direction: &'static str,
) -> Result<CacheLocation, SpecError> {
    if kind == "registry" {
        let reference = reference.filter(|reference| !reference.is_empty());
        let reference = reference.ok_or(SpecError::Missing { key: "ref", kind: kind.into(), direction })?;
        return Ok(CacheLocation::Registry { reference });
    }
    let key = if direction == "--cache-to" { "dest" } else { "src" };
    let dir = dir.filter(|dir| !dir.as_os_str().is_empty()).ok_or(SpecError::Missing { key, kind: kind.into(), direction })?;
    Ok(CacheLocation::Local { dir, tag, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_caches_take_a_ref_or_a_bare_reference() {
        let export = parse_cache_to("type=registry,ref=host:5000/app:cache,mode=max,compression=zstd,ignore-error=true").unwrap();
        assert_eq!(export.location, CacheLocation::Registry { reference: "host:5000/app:cache".into() });
        assert_eq!(export.mode, CacheMode::Max);
        assert_eq!(export.compression, Compression::Zstd);
        assert!(export.ignore_error);
        assert!(!export.cache_mounts);
        let bare = parse_cache_from("user/app:cache").unwrap();
        assert_eq!(bare.location, CacheLocation::Registry { reference: "user/app:cache".into() });
        let untyped = parse_cache_to("ref=user/app:cache").unwrap();
        assert_eq!(untyped.mode, CacheMode::Min);
        assert_eq!(untyped.compression, Compression::Gzip);
    }

    #[test]
    fn local_caches_take_dest_to_write_and_src_to_read() {
        let export = parse_cache_to("type=local,dest=/tmp/c,cache-mounts=true").unwrap();
        assert_eq!(export.location, CacheLocation::Local { dir: "/tmp/c".into(), tag: "latest".into(), digest: None });
        assert!(export.cache_mounts);
        let import = parse_cache_from("type=local,src=/tmp/c,tag=main").unwrap();
        assert_eq!(import.location, CacheLocation::Local { dir: "/tmp/c".into(), tag: "main".into(), digest: None });
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(parse_cache_to("type=registry,ref=a,mode=all").unwrap_err().to_string(), "invalid value `all` for cache key `mode`");
        assert_eq!(
            parse_cache_to("type=gha").unwrap_err().to_string(),
            "cache type `gha` is not supported: use type=registry,ref=REF or type=local,dest=DIR"
        );
        assert_eq!(parse_cache_from("type=local,dest=/x").unwrap_err().to_string(), "unknown key `dest` for --cache-from type `local`");
        assert_eq!(parse_cache_from("type=local").unwrap_err().to_string(), "--cache-from type `local` needs `src`");
        assert_eq!(parse_cache_to("type=registry,mode=max").unwrap_err().to_string(), "--cache-to type `registry` needs `ref`");
        assert!(parse_cache_from("type=local,src=/x,digest=md5:1").is_err());
    }
}
