//! The cache config: the one small document an import reads before any blob.
//!
//! ```json
//! {"rbuildCache": 1,
//!  "layers":  [{"blob": "sha256:…", "diffID": "sha256:…", "created": 1700000000}],
//!  "records": [{"key": "sha256:…", "description": "RUN make", "layers": ["sha256:…"],
//!               "inputs": [["op", "…"], ["input 0", "sha256:…"]]}],
//!  "mounts":  [{"id": "/root/.cache", "blob": "sha256:…"}]}
//! ```
//!
//! `layers` maps each layer (by diff id) to its blob in the manifest and its creation time (the
//! history time of the image that exports it, so every machine writes the same image). A
//! record's `layers` are diff ids, bottom first. `inputs` are kept for `--debug-cache` on the
//! importing machine; long values are kept as their digest, which still tells a change.
//! Everything is sorted, so the same records give the same document.

use std::collections::{BTreeMap, HashSet};

use crate::oci::Digest;
use serde::{Deserialize, Serialize};

pub(super) const CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
pub(super) const VERSION: u32 = 1;
/// Key input values longer than this are kept as `sha256:` of the value.
const INPUT_LIMIT: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CacheConfig {
    #[serde(rename = "rbuildCache")]
    pub version: u32,
    pub layers: Vec<LayerEntry>,
    pub records: Vec<RecordEntry>,
    #[serde(default)]
    pub mounts: Vec<MountEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LayerEntry {
    pub blob: String,
    #[serde(rename = "diffID")]
    pub diff_id: String,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RecordEntry {
    pub key: String,
    pub description: String,
    pub layers: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MountEntry {
    pub id: String,
    pub blob: String,
}

impl CacheConfig {
    /// The document for these records, layers and mounts, in canonical order.
    pub(super) fn new(mut layers: Vec<LayerEntry>, mut records: Vec<RecordEntry>, mut mounts: Vec<MountEntry>) -> CacheConfig {
        layers.sort_by(|a, b| a.diff_id.cmp(&b.diff_id));
        layers.dedup_by(|a, b| a.diff_id == b.diff_id);
        records.sort_by(|a, b| a.key.cmp(&b.key));
        records.dedup_by(|a, b| a.key == b.key);
        for record in &mut records {
            for (_, value) in &mut record.inputs {
                *value = compact_input(value);
            }
        }
        mounts.sort_by(|a, b| a.id.cmp(&b.id));
        CacheConfig { version: VERSION, layers, records, mounts }
    }

    pub(super) fn to_bytes(&self) -> Vec<u8> {
        // Plain data: serializing to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a document against the blobs its manifest lists: every blob it names
    /// is in the manifest, every diff id a record names has a layer.
    pub(super) fn parse(bytes: &[u8], manifest_blobs: &HashSet<&str>) -> Result<CacheConfig, String> {
        let config: CacheConfig = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if config.version != VERSION {
            return Err(format!("cache format version {} (this rbuild reads version {VERSION})", config.version));
        }
        let mut diff_ids = HashSet::new();
        for layer in &config.layers {
            if !manifest_blobs.contains(layer.blob.as_str()) {
                return Err(format!("layer blob {} is not in the manifest", layer.blob));
            }
            diff_ids.insert(layer.diff_id.as_str());
        }
        for record in &config.records {
            if let Some(missing) = record.layers.iter().find(|diff_id| !diff_ids.contains(diff_id.as_str())) {
                return Err(format!("record {} names an unknown layer {missing}", record.key));
            }
        }
        for mount in &config.mounts {
            if !manifest_blobs.contains(mount.blob.as_str()) {
                return Err(format!("cache mount blob {} is not in the manifest", mount.blob));
            }
        }
        Ok(config)
    }

    /// Layers by diff id.
    pub(super) fn layers_by_diff_id(&self) -> BTreeMap<&str, &LayerEntry> {
        self.layers.iter().map(|layer| (layer.diff_id.as_str(), layer)).collect()
    }
}

fn compact_input(value: &str) -> String {
    if value.len() <= INPUT_LIMIT || value.starts_with("sha256:") && value.len() == 71 {
        return value.to_string();
    }
    Digest::sha256_of(value.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(blob: &str, diff_id: &str) -> LayerEntry {
        LayerEntry { blob: blob.into(), diff_id: diff_id.into(), created: 1 }
    }

    #[test]
    fn documents_are_canonical_and_long_inputs_become_digests() {
        let record = |key: &str| RecordEntry {
            key: key.into(),
            description: "RUN x".into(),
            layers: vec!["sha256:d1".into()],
            inputs: vec![("op".into(), "x".repeat(1000)), ("input 0".into(), "sha256:short".into())],
        };
        let a = CacheConfig::new(vec![layer("sha256:b1", "sha256:d1")], vec![record("k2"), record("k1")], vec![]);
        let b = CacheConfig::new(
            vec![layer("sha256:b1", "sha256:d1"), layer("sha256:b1", "sha256:d1")],
            vec![record("k1"), record("k2")],
            vec![],
        );
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.records[0].key, "k1");
        assert!(a.records[0].inputs[0].1.starts_with("sha256:") && a.records[0].inputs[0].1.len() == 71);
        assert_eq!(a.records[0].inputs[1].1, "sha256:short");
    }

    #[test]
    fn parsing_checks_every_reference() {
        let config = CacheConfig::new(
            vec![layer("sha256:b1", "sha256:d1")],
            vec![RecordEntry { key: "k".into(), description: "d".into(), layers: vec!["sha256:d1".into()], inputs: vec![] }],
            vec![MountEntry { id: "/cache".into(), blob: "sha256:m".into() }],
        );
        let bytes = config.to_bytes();
        let all: HashSet<&str> = ["sha256:b1", "sha256:m"].into();
        assert_eq!(CacheConfig::parse(&bytes, &all).unwrap(), config);
        let no_mount: HashSet<&str> = ["sha256:b1"].into();
        assert!(CacheConfig::parse(&bytes, &no_mount).unwrap_err().contains("cache mount blob sha256:m"));
        let none: HashSet<&str> = HashSet::new();
        assert!(CacheConfig::parse(&bytes, &none).unwrap_err().contains("layer blob sha256:b1"));
        let mut broken = config.clone();
        broken.records[0].layers.push("sha256:d9".into());
        assert!(CacheConfig::parse(&broken.to_bytes(), &all).unwrap_err().contains("unknown layer sha256:d9"));
        assert!(CacheConfig::parse(br#"{"rbuildCache": 9, "layers": [], "records": []}"#, &all).unwrap_err().contains("version 9"));
    }
}
