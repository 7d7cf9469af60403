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

use serde::{Deserialize, Serialize};

use crate::oci::{DiffId, Digest};
use crate::store::CacheKey;

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
    pub blob: Digest,
    #[serde(rename = "diffID")]
    pub diff_id: DiffId,
    pub created: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RecordEntry {
    pub key: CacheKey,
    pub description: String,
    pub layers: Vec<DiffId>,
    #[serde(default)]
    pub inputs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MountEntry {
    pub id: String,
    pub blob: Digest,
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
    /// is in the manifest, every diff id a record names has a layer. Digests, diff ids and keys
    /// are checked as they are read: a document with one that is none is invalid as a whole.
    pub(super) fn parse(bytes: &[u8], manifest_blobs: &HashSet<&Digest>) -> Result<CacheConfig, String> {
        let config: CacheConfig = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
        if config.version != VERSION {
            return Err(format!("cache format version {} (this rbuild reads version {VERSION})", config.version));
        }
        let mut diff_ids = HashSet::new();
        for layer in &config.layers {
            if !manifest_blobs.contains(&layer.blob) {
                return Err(format!("layer blob {} is not in the manifest", layer.blob));
            }
            diff_ids.insert(&layer.diff_id);
        }
        for record in &config.records {
            if let Some(missing) = record.layers.iter().find(|diff_id| !diff_ids.contains(diff_id)) {
                return Err(format!("record {} names an unknown layer {missing}", record.key));
            }
        }
        for mount in &config.mounts {
            if !manifest_blobs.contains(&mount.blob) {
                return Err(format!("cache mount blob {} is not in the manifest", mount.blob));
            }
        }
        Ok(config)
    }

    /// Layers by diff id.
    pub(super) fn layers_by_diff_id(&self) -> BTreeMap<&DiffId, &LayerEntry> {
        self.layers.iter().map(|layer| (&layer.diff_id, layer)).collect()
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

    use crate::store::cache_key::test_names::{diff_id, digest, key};

    fn layer(blob: &str, layer: &str) -> LayerEntry {
        LayerEntry { blob: digest(blob), diff_id: diff_id(layer), created: 1 }
    }

    #[test]
    fn documents_are_canonical_and_long_inputs_become_digests() {
        let record = |name: &str| RecordEntry {
            key: key(name),
            description: "RUN x".into(),
            layers: vec![diff_id("d1")],
            inputs: vec![("op".into(), "x".repeat(1000)), ("input 0".into(), "sha256:short".into())],
        };
        let a = CacheConfig::new(vec![layer("b1", "d1")], vec![record("k2"), record("k1")], vec![]);
        let b = CacheConfig::new(vec![layer("b1", "d1"), layer("b1", "d1")], vec![record("k1"), record("k2")], vec![]);
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.records[0].key, key("k1").min(key("k2")));
        assert!(a.records[0].inputs[0].1.starts_with("sha256:") && a.records[0].inputs[0].1.len() == 71);
        assert_eq!(a.records[0].inputs[1].1, "sha256:short");
    }

    /// The document keeps digests, diff ids and keys as plain strings, as it did before they
    /// had types: caches written before read the same.
    #[test]
    fn digests_serialize_as_their_text() {
        let config = CacheConfig::new(
            vec![layer("b1", "d1")],
            vec![RecordEntry { key: key("k"), description: "d".into(), layers: vec![diff_id("d1")], inputs: vec![] }],
            vec![MountEntry { id: "/cache".into(), blob: digest("m") }],
        );
        let expected = format!(
            r#"{{"rbuildCache":1,"layers":[{{"blob":"{}","diffID":"{}","created":1}}],"records":[{{"key":"{}","description":"d","layers":["{}"],"inputs":[]}}],"mounts":[{{"id":"/cache","blob":"{}"}}]}}"#,
            digest("b1"),
            digest("d1"),
            digest("k"),
            digest("d1"),
            digest("m")
        );
        assert_eq!(String::from_utf8(config.to_bytes()).unwrap(), expected);
    }

    #[test]
    fn parsing_checks_every_reference() {
        let config = CacheConfig::new(
            vec![layer("b1", "d1")],
            vec![RecordEntry { key: key("k"), description: "d".into(), layers: vec![diff_id("d1")], inputs: vec![] }],
            vec![MountEntry { id: "/cache".into(), blob: digest("m") }],
        );
        let bytes = config.to_bytes();
        let (b1, m) = (digest("b1"), digest("m"));
        let all: HashSet<&Digest> = [&b1, &m].into();
        assert_eq!(CacheConfig::parse(&bytes, &all).unwrap(), config);
        let no_mount: HashSet<&Digest> = [&b1].into();
        assert!(CacheConfig::parse(&bytes, &no_mount).unwrap_err().contains(&format!("cache mount blob {m}")));
        let none: HashSet<&Digest> = HashSet::new();
        assert!(CacheConfig::parse(&bytes, &none).unwrap_err().contains(&format!("layer blob {b1}")));
        let mut broken = config.clone();
        broken.records[0].layers.push(diff_id("d9"));
        assert!(CacheConfig::parse(&broken.to_bytes(), &all).unwrap_err().contains(&format!("unknown layer {}", diff_id("d9"))));
        assert!(CacheConfig::parse(br#"{"rbuildCache": 9, "layers": [], "records": []}"#, &all).unwrap_err().contains("version 9"));
        let bad_key = String::from_utf8(bytes).unwrap().replace(&key("k").to_string(), "sha256:k");
        assert!(CacheConfig::parse(bad_key.as_bytes(), &all).unwrap_err().contains("invalid digest `sha256:k`"));
    }
}
