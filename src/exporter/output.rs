//! `-o` / `--output` values, parsed as buildx parses them: CSV `key=value` pairs with
//! `type=`; a bare path means `type=local,dest=PATH`; `-` means a tar on stdout; key=value pairs
//! without `type=` are an error, as in buildx.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::oci::Compression;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Oci,
    Docker,
    Tar,
    Local,
    /// `type=image,push=true` and `type=registry`: pushed to the registry of each name.
    Registry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Path(PathBuf),
    Stdout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    pub dest: Option<Destination>,
    /// `tar=false` writes an OCI layout directory instead of an archive.
    pub tar: bool,
    pub names: Vec<String>,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub oci_mediatypes: bool,
    /// `annotation.KEY=V` and `annotation-manifest.KEY=V`: on the image manifest.
    pub manifest_annotations: BTreeMap<String, String>,
    /// `annotation-manifest-descriptor.KEY=V`: on the manifest's descriptor in `index.json`.
    pub descriptor_annotations: BTreeMap<String, String>,
    pub rewrite_timestamp: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    #[error("invalid output `{0}`: expected key=value pairs")]
    Syntax(String),
    #[error("unsupported output type `{0}` (supported: oci, docker, tar, local)")]
    UnknownType(String),
    #[error("output type `{0}` is not supported yet: registries come with a later version of rbuild")]
    NotYet(String),
    #[error("invalid value `{value}` for output key `{key}`")]
    Value { key: String, value: String },
    #[error("unknown output key `{key}` for type `{kind}`")]
    UnknownKey { key: String, kind: String },
    #[error("dest is required for {0} output")]
    MissingDest(String),
    #[error(
        "rbuild has no image store: use `type=image,push=true` (or `type=registry`) to push, or `type=oci`/`type=docker` to write an archive"
    )]
    NoImageStore,
    #[error("empty output: give `-o type=TYPE,dest=PATH` (oci, docker, tar, local) or `-o PATH`")]
    Empty,
    /// buildx's words: `-o dest=x.tar` without `type=` is refused, not taken for a directory.
    #[error("type is required for output")]
    MissingType,
    #[error("invalid output `{dest}`: the directory `{parent}` does not exist")]
    MissingParent { dest: String, parent: String },
    /// BuildKit's words: an index exists only for several platforms.
    #[error("index annotations not supported for single platform export")]
    IndexAnnotations,
    #[error("invalid annotation `{0}`, expected key=value")]
    AnnotationFlag(String),
    #[error(
        "invalid annotation key `{0}` (expected annotation[-TYPE][[PLATFORM]].KEY, TYPE one of manifest, manifest-descriptor, index, index-descriptor)"
    )]
    AnnotationKey(String),
}

/// Where an annotation goes (BuildKit's annotation types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnnotationTarget {
    Manifest,
    ManifestDescriptor,
    Index,
    IndexDescriptor,
}

/// `annotation[-TYPE][[PLATFORM]].KEY` as BuildKit's exporters read it: (type, platform, key).
pub(crate) fn parse_annotation_key(text: &str) -> Result<(AnnotationTarget, Option<String>, String), OutputError> {
    let invalid = || OutputError::AnnotationKey(text.to_string());
    let rest = text.strip_prefix("annotation").ok_or_else(invalid)?;
    let (kind, rest) = match rest.find(['.', '[']) {
        Some(at) => rest.split_at(at),
        None => return Err(invalid()),
    };
    let target = match kind {
        "" | "-manifest" => AnnotationTarget::Manifest,
        "-manifest-descriptor" => AnnotationTarget::ManifestDescriptor,
        "-index" => AnnotationTarget::Index,
        "-index-descriptor" => AnnotationTarget::IndexDescriptor,
        _ => return Err(invalid()),
    };
    let (platform, rest) = match rest.strip_prefix('[') {
        Some(inner) => {
            let (platform, after) = inner.split_once(']').ok_or_else(invalid)?;
            (Some(platform.to_string()), after)
        }
        None => (None, rest),
    };
    let key = rest.strip_prefix('.').filter(|key| !key.is_empty()).ok_or_else(invalid)?;
    Ok((target, platform, key.to_string()))
}

/// buildx's `--annotation [TYPE[,TYPE...]][[PLATFORM]]:KEY=VALUE` as exporter keys
/// (`annotation-TYPE[PLATFORM].KEY`, or `annotation.KEY` without a type) with the value.
pub(crate) fn annotation_flag_keys(flag: &str) -> Result<Vec<(String, String)>, OutputError> {
    let (left, value) = flag.split_once('=').ok_or_else(|| OutputError::AnnotationFlag(flag.to_string()))?;
    // A prefix is lowercase types with optional platforms, before the first `:`; a key with a
    // colon of its own (`org.example:x`) and no such prefix is kept whole, as buildx's pattern does.
    let typed = left.split_once(':').filter(|(prefix, _)| {
        !prefix.is_empty()
            && prefix.split(',').all(|part| {
                let (name, platform) = match part.split_once('[') {
                    Some((name, platform)) => (name, platform.strip_suffix(']')),
                    None => (part, Some("")),
                };
                !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    && platform.is_some_and(|platform| platform.chars().all(|c| c.is_ascii_alphanumeric() || "_/-".contains(c)))
            })
    });
    let Some((prefix, key)) = typed else {
        return Ok(vec![(format!("annotation.{left}"), value.to_string())]);
    };
    Ok(prefix
        .split(',')
        .map(|part| {
            let name_end = part.find('[').unwrap_or(part.len());
            (format!("annotation-{}{}.{key}", &part[..name_end], &part[name_end..]), value.to_string())
        })
        .collect())
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, OutputError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(OutputError::Value { key: key.into(), value: value.into() }),
    }
}

impl OutputSpec {
    /// An archive goes where the user points, into an existing directory: its parents are never
    /// made (BuildKit's client opens the file before the build and fails the same way).
    /// An exporter annotation key (`annotation-manifest.KEY`, ...) with its value; `replace`
    /// false keeps a value the output already has (its own `-o` keys win over `--annotation`).
    pub fn add_annotation(&mut self, key: &str, value: String, replace: bool) -> Result<(), OutputError> {
        let (target, platform, name) = parse_annotation_key(key)?;
        let map = match (target, platform) {
            (AnnotationTarget::Manifest, None) => &mut self.manifest_annotations,
            (AnnotationTarget::ManifestDescriptor, None) => &mut self.descriptor_annotations,
            // One platform is built, and BuildKit's single-platform export applies only
            // annotations without a platform: `[linux/amd64]` ones are dropped, as there.
            (AnnotationTarget::Manifest | AnnotationTarget::ManifestDescriptor, Some(_)) => return Ok(()),
            (AnnotationTarget::Index | AnnotationTarget::IndexDescriptor, _) => return Err(OutputError::IndexAnnotations),
        };
        if replace || !map.contains_key(&name) {
            map.insert(name, value);
        }
        Ok(())
    }

    pub fn check_destination(&self) -> Result<(), OutputError> {
        let Some(Destination::Path(path)) = &self.dest else { return Ok(()) };
        let archive = match self.kind {
            OutputKind::Tar => true,
            OutputKind::Oci | OutputKind::Docker => self.tar,
            OutputKind::Local | OutputKind::Registry => false,
        };
        let parent = path.parent().filter(|parent| !parent.as_os_str().is_empty());
        match parent {
            Some(parent) if archive && !parent.is_dir() => {
                Err(OutputError::MissingParent { dest: path.display().to_string(), parent: parent.display().to_string() })
            }
            _ => Ok(()),
        }
    }
}

/// Splits a CSV line, honouring double quotes (buildx allows `"name=a,b"`).
pub(crate) fn split_csv(text: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields
}

pub(crate) fn parse_output(text: &str) -> Result<OutputSpec, OutputError> {
    if text.trim().is_empty() {
        return Err(OutputError::Empty);
    }
    if text == "-" {
        return Ok(spec(OutputKind::Tar, Some(Destination::Stdout)));
    }
    if !text.contains('=') && !text.contains(',') {
        return Ok(spec(OutputKind::Local, Some(Destination::Path(PathBuf::from(text)))));
    }
    let mut pairs = Vec::new();
    for field in split_csv(text) {
        let Some((key, value)) = field.split_once('=') else {
            return Err(OutputError::Syntax(text.into()));
        };
        pairs.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let kind_name = pairs.iter().find(|(key, _)| key == "type").map(|(_, value)| value.clone()).ok_or(OutputError::MissingType)?;
    let kind = match kind_name.as_str() {
        "oci" => OutputKind::Oci,
        "docker" => OutputKind::Docker,
        "tar" => OutputKind::Tar,
        "local" => OutputKind::Local,
        "image" | "registry" => OutputKind::Registry,
        other => return Err(OutputError::UnknownType(other.into())),
    };
    let mut output = spec(kind, None);
    let image_kind = matches!(kind, OutputKind::Oci | OutputKind::Docker | OutputKind::Registry);
    let mut push = kind_name == "registry";
    let mut mediatypes_given = None;
    for (key, value) in pairs {
        match key.as_str() {
            "type" => {}
            "dest" => output.dest = Some(if value == "-" { Destination::Stdout } else { Destination::Path(PathBuf::from(value)) }),
            "tar" if image_kind => output.tar = parse_bool(&key, &value)?,
            "name" if image_kind => output.names.extend(value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from)),
            "compression" if image_kind => output.compression = Compression::parse(&value).ok_or(OutputError::Value { key, value })?,
            "compression-level" if image_kind => {
                output.compression_level = Some(value.parse().map_err(|_| OutputError::Value { key: key.clone(), value: value.clone() })?)
            }
            "force-compression" if image_kind => {
                parse_bool(&key, &value)?;
            }
            "oci-mediatypes" if image_kind => mediatypes_given = Some(parse_bool(&key, &value)?),
            "rewrite-timestamp" => output.rewrite_timestamp = parse_bool(&key, &value)?,
            "push" if image_kind => push = parse_bool(&key, &value)?,
            "registry.insecure" | "unpack" | "store" | "name-canonical" | "dangling-name-prefix" if image_kind => {}
            "platform-split" | "buildinfo" | "attestation-inline" => {}
            key if image_kind && key.starts_with("annotation") => output.add_annotation(key, value, true)?,
            _ => return Err(OutputError::UnknownKey { key, kind: kind_name.clone() }),
        }
    }
    // OCI media types are the default for `oci` and required for zstd; `docker` defaults to
    // Docker's own.
    output.oci_mediatypes =
        mediatypes_given.unwrap_or(matches!(kind, OutputKind::Oci | OutputKind::Registry)) || output.compression == Compression::Zstd;
    if kind == OutputKind::Registry {
        if !push {
            return Err(OutputError::NoImageStore);
        }
        return Ok(output);
    }
    if output.dest.is_none() {
        return Err(OutputError::MissingDest(kind_name));
    }
    Ok(output)
}

fn spec(kind: OutputKind, dest: Option<Destination>) -> OutputSpec {
    OutputSpec {
        kind,
        dest,
        tar: true,
        names: Vec::new(),
        compression: Compression::Gzip,
        compression_level: None,
        oci_mediatypes: kind == OutputKind::Oci,
        manifest_annotations: BTreeMap::new(),
        descriptor_annotations: BTreeMap::new(),
        rewrite_timestamp: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_flags_become_exporter_keys_as_buildx_makes_them() {
        let keys = |flag: &str| annotation_flag_keys(flag).unwrap();
        assert_eq!(keys("a=b"), vec![("annotation.a".to_string(), "b".to_string())]);
        assert_eq!(keys("org.example:x=1"), vec![("annotation.org.example:x".to_string(), "1".to_string())]);
        assert_eq!(
            keys("manifest,manifest-descriptor[linux/amd64]:k=v=w"),
            vec![
                ("annotation-manifest.k".to_string(), "v=w".to_string()),
                ("annotation-manifest-descriptor[linux/amd64].k".to_string(), "v=w".to_string())
            ]
        );
        assert!(annotation_flag_keys("nokey").is_err());
        assert_eq!(
            parse_annotation_key("annotation-manifest[linux/arm64].k").unwrap(),
            (AnnotationTarget::Manifest, Some("linux/arm64".into()), "k".into())
        );
        assert_eq!(parse_annotation_key("annotation.org.example:x").unwrap(), (AnnotationTarget::Manifest, None, "org.example:x".into()));
        for bad in ["annotation-bogus.k", "annotation.", "annotation-manifest[x.k", "annotationk"] {
            assert!(parse_annotation_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn outputs_parse_like_buildx() {
        let oci = parse_output("type=oci,dest=out.tar").unwrap();
        assert_eq!(oci.kind, OutputKind::Oci);
        assert_eq!(oci.dest, Some(Destination::Path("out.tar".into())));
        assert!(oci.oci_mediatypes && oci.tar);
        assert_eq!(parse_output("out").unwrap().kind, OutputKind::Local);
        assert_eq!(parse_output("-").unwrap().dest, Some(Destination::Stdout));
        let docker = parse_output("type=docker,dest=a.tar,\"name=a:1,b:2\",compression=zstd,annotation.x=y").unwrap();
        assert_eq!(docker.names, ["a:1", "b:2"]);
        assert!(docker.oci_mediatypes, "zstd forces OCI media types");
        assert_eq!(docker.manifest_annotations["x"], "y");
        assert!(!parse_output("type=docker,dest=a.tar").unwrap().oci_mediatypes);
        assert!(!parse_output("type=oci,dest=d,tar=false").unwrap().tar);
        assert!(matches!(parse_output("type=nope,dest=x"), Err(OutputError::UnknownType(_))));
        assert!(matches!(parse_output("dest=x.tar"), Err(OutputError::MissingType)));
        assert!(matches!(parse_output("type=oci"), Err(OutputError::MissingDest(_))));
        assert!(matches!(parse_output("type=local,dest=x,tar=false"), Err(OutputError::UnknownKey { .. })));
        assert!(matches!(parse_output("type=oci,dest=x,compression=lz4"), Err(OutputError::Value { .. })));
        let registry = parse_output("type=registry,name=r.example/a:1").unwrap();
        assert_eq!(registry.kind, OutputKind::Registry);
        assert_eq!(registry.names, ["r.example/a:1"]);
        assert!(registry.oci_mediatypes);
        assert_eq!(parse_output("type=image,name=x,push=true").unwrap().kind, OutputKind::Registry);
        assert!(matches!(parse_output("type=image,name=x"), Err(OutputError::NoImageStore)));
    }
}
