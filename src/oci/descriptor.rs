//! Descriptors: what points at a blob (a layer, a config, a manifest) by media type, digest and
//! size, with annotations and, for a manifest in an index, its platform. One type for what
//! rbuild writes (layouts, archives, pushes, cache manifests) and what it reads from registries.
//!
//! Invariant: a descriptor's digest is a [`Digest`], checked when read from JSON; `sha256:../x`
//! never gets past deserialization.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Digest, Platform};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
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
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Descriptor {
        Descriptor { media_type: media_type.into(), digest, size, annotations: BTreeMap::new(), platform: None }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_serialize_as_buildkit_writes_them_and_refuse_unsafe_digests() {
        let digest = Digest::sha256_of(b"a");
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
