//! Image manifests and indexes: OCI's, and Docker's schema 2 manifest and manifest list, which
//! have the same shape (only the media type tells them apart). One type each for what rbuild
//! writes (image exports, `index.json` of layouts, cache manifests) and what it reads (from
//! registries, layouts and the store).
//!
//! Writing: fields in the order of BuildKit's Go structs (`schemaVersion`, `mediaType`, then
//! `config` and `layers`, or `manifests`, then `annotations`); empty annotations and an empty
//! document media type are left out. Reading: unknown fields are ignored; `layers` and
//! `manifests` that are missing or `null` (Go marshals a nil slice so) are empty; every
//! descriptor's digest is checked ([`Descriptor`]).
//!
//! A document whose kind is not known before it is read (what a registry's manifest endpoint
//! answers) is read as an [`AnyManifest`] first.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::Descriptor;
use super::media_types::{OCI_INDEX, OCI_MANIFEST, is_index, is_manifest};

/// The only schema version of both documents.
const SCHEMA_VERSION: u32 = 2;

/// An image manifest: the config and the layers of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// A manifest of media type `media_type` (OCI's or Docker's), without annotations.
    pub(crate) fn new(media_type: &str, config: Descriptor, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest { schema_version: SCHEMA_VERSION, media_type: media_type.into(), config, layers, annotations: BTreeMap::new() }
    }
}

/// An image index (or Docker's manifest list): descriptors of manifests, each for a platform
/// or, in a layout's `index.json`, for a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageIndex {
    /// An OCI index of `manifests`, without annotations.
    pub(crate) fn new(manifests: Vec<Descriptor>) -> ImageIndex {
        ImageIndex { schema_version: SCHEMA_VERSION, media_type: OCI_INDEX.into(), manifests, annotations: BTreeMap::new() }
    }
}

/// A manifest or an index, read before its kind is known: which fields are set tells them
/// apart when the registry's `Content-Type` is vague. Every field is optional, so the reader
/// decides what a missing one means (an index without `manifests` matches no platform, a
/// manifest without `config` is refused in the registry's words).
#[derive(Debug, Deserialize)]
pub(crate) struct AnyManifest {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Option<Vec<Descriptor>>,
}

impl AnyManifest {
    /// The media type from the document, else from the header, else guessed from the shape.
    pub(crate) fn media_type(&self, header: Option<&str>) -> String {
        if let Some(media_type) = self.media_type.as_deref().filter(|value| !value.is_empty()) {
            return media_type.to_string();
        }
        if let Some(header) = header.map(|value| value.split(';').next().unwrap_or(value).trim())
            && (is_index(header) || is_manifest(header))
        {
            return header.to_string();
        }
        if self.manifests.is_some() { OCI_INDEX.to_string() } else { OCI_MANIFEST.to_string() }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Descriptor>, D::Error> {
    Ok(Option::<Vec<Descriptor>>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::oci::media_types::{DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP};

    fn digest(character: char) -> Digest {
        Digest::parse(&format!("sha256:{}", character.to_string().repeat(64))).unwrap()
    }

    #[test]
    fn manifests_and_indexes_serialize_as_buildkit_writes_them() {
        let config = Descriptor::new(OCI_CONFIG, digest('c'), 2);
        let mut manifest = ImageManifest::new(OCI_MANIFEST, config, vec![Descriptor::new(OCI_LAYER_GZIP, digest('e'), 3)]);
        let json = serde_json::to_string(&manifest).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":2}},"layers":[{{"mediaType":"{OCI_LAYER_GZIP}","digest":"{}","size":3}}]}}"#,
                digest('c'),
                digest('e')
            )
        );
        assert_eq!(serde_json::from_str::<ImageManifest>(&json).unwrap(), manifest);
        manifest.annotations.insert("a".into(), "b".into());
        assert!(serde_json::to_string(&manifest).unwrap().ends_with(r#"],"annotations":{"a":"b"}}"#));

        let index = ImageIndex::new(vec![Descriptor::new(OCI_MANIFEST, digest('d'), 4)]);
        assert_eq!(
            serde_json::to_string(&index).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":4}}]}}"#,
                digest('d')
            )
        );
    }

    #[test]
    fn reading_takes_null_or_missing_lists_as_empty_and_refuses_unsafe_digests() {
        let config = format!(r#"{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":2}}"#, digest('c'));
        for layers in [r#","layers":null"#, ""] {
            let text = format!(r#"{{"schemaVersion":2,"config":{config}{layers},"extra":1}}"#);
            let manifest: ImageManifest = serde_json::from_str(&text).unwrap();
            assert!(manifest.layers.is_empty() && manifest.media_type.is_empty(), "{text}");
        }
        let hostile = r#"{"schemaVersion":2,"manifests":[{"mediaType":"x","digest":"sha256:../../x","size":1}]}"#;
        assert!(serde_json::from_str::<ImageIndex>(hostile).unwrap_err().to_string().contains("invalid digest"));
    }

    #[test]
    fn any_manifest_takes_its_kind_from_the_document_the_header_or_the_shape() {
        let read = |text: &str| serde_json::from_str::<AnyManifest>(text).unwrap();
        assert_eq!(read(&format!(r#"{{"mediaType":"{DOCKER_LIST}"}}"#)).media_type(Some(OCI_MANIFEST)), DOCKER_LIST);
        assert_eq!(read("{}").media_type(Some(&format!("{DOCKER_MANIFEST}; charset=utf-8"))), DOCKER_MANIFEST);
        assert_eq!(read(r#"{"manifests":[]}"#).media_type(Some("application/json")), OCI_INDEX);
        assert_eq!(read("{}").media_type(None), OCI_MANIFEST);
    }
}
