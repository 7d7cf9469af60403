//! Descriptors: what points at a blob (a layer, a config, a manifest) by media type, digest and
//! size, with annotations and, for a manifest in an index, its platform. One type for what
//! rbuild writes (layouts, archives, pushes, cache manifests) and what it reads from registries.
//!
//! Invariant: a descriptor read from JSON has a digest in the only form safe to put in a URL or
//! a path (`sha256:` and 64 lowercase hex digits, or `sha512:` and 128); `sha256:../x` never
//! gets past deserialization.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::Platform;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(deserialize_with = "checked_digest")]
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set on an image manifest's descriptor in an index (`index.json`, the metadata file);
    /// never on layers or configs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor without annotations or platform.
    pub fn new(media_type: impl Into<String>, digest: impl Into<String>, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest: digest.into(), size, annotations: BTreeMap::new(), platform: None }
    }
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits, or `sha512:` and 128: the
/// algorithms rbuild can verify, in the only form safe to put in a URL or a path.
pub fn is_valid_digest(digest: &str) -> bool {
    let (hex, length) = match digest.split_once(':') {
        Some(("sha256", hex)) => (hex, 64),
        Some(("sha512", hex)) => (hex, 128),
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// What go-digest's `Parse` says of `digest`, in its words (`ADD --checksum` shows them):
/// `None` for a well-formed sha256, sha384 or sha512 digest.
pub fn digest_problem(digest: &str) -> Option<&'static str> {
    const FORMAT: &str = "invalid checksum digest format";
    let Some((algorithm, encoded)) = digest.split_once(':').filter(|(algorithm, encoded)| !algorithm.is_empty() && !encoded.is_empty())
    else {
        return Some(FORMAT);
    };
    let length = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            // go-digest's `DigestRegexp`: an algorithm of lowercase words joined by `.+_-`.
            let words_ok = algorithm
                .split(['.', '+', '_', '-'])
                .all(|word| !word.is_empty() && word.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit()));
            let encoded_ok = encoded.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"=_-".contains(&byte));
            return Some(if words_ok && encoded_ok { "unsupported digest algorithm" } else { FORMAT });
        }
    };
    if encoded.len() != length {
        return Some("invalid checksum digest length");
    }
    if !encoded.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
        return Some(FORMAT);
    }
    None
}

/// The sha256 digest of `bytes`, as manifests name blobs (`sha256:` and 64 lowercase hex digits).
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn checked_digest<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let digest = String::deserialize(deserializer)?;
    if !is_valid_digest(&digest) {
        let shown: String = digest.chars().take(80).collect();
        return Err(serde::de::Error::custom(format!("invalid digest `{shown}`")));
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_serialize_as_buildkit_writes_them_and_refuse_unsafe_digests() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let mut descriptor = Descriptor::new("application/vnd.oci.image.manifest.v1+json", digest.clone(), 3);
        descriptor.platform = Some(Platform::new("linux", "amd64", None));
        let json = serde_json::to_string(&descriptor).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":3,"platform":{{"architecture":"amd64","os":"linux"}}}}"#
            )
        );
        assert_eq!(serde_json::from_str::<Descriptor>(&json).unwrap(), descriptor);
        let hostile = r#"{"mediaType":"x","digest":"sha256:../../etc","size":1}"#;
        assert!(serde_json::from_str::<Descriptor>(hostile).unwrap_err().to_string().contains("invalid digest"));
        assert!(!is_valid_digest(&format!("sha256:{}", "A".repeat(64))));
    }

    /// go-digest's answers, as BuildKit gave them for `ADD --checksum=...`.
    #[test]
    fn digest_problems_are_go_digests() {
        let sha256 = format!("sha256:{}", "2f".repeat(32));
        assert_eq!(digest_problem(&sha256), None);
        assert_eq!(digest_problem(&format!("sha512:{}", "0".repeat(128))), None);
        assert_eq!(digest_problem("sha256:abc"), Some("invalid checksum digest length"));
        assert_eq!(digest_problem("sha512:00"), Some("invalid checksum digest length"));
        assert_eq!(digest_problem(&sha256.to_uppercase().replacen("SHA256", "sha256", 1)), Some("invalid checksum digest format"));
        assert_eq!(digest_problem(&"2f".repeat(32)), Some("invalid checksum digest format"));
        assert_eq!(digest_problem("md5:abc"), Some("unsupported digest algorithm"));
        assert_eq!(digest_problem("MD5:abc"), Some("invalid checksum digest format"));
        assert_eq!(digest_problem("sha256:"), Some("invalid checksum digest format"));
    }
}
