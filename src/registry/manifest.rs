//! Platform selection in an index (the best match by `oci::Platform::match_rank`, containerd's
//! rules; entries with OS `unknown`, attestations, never match) and the incremental digest every
//! byte that leaves the client is checked with. The documents themselves are `oci::manifest`'s.

use sha2::Digest as _;

pub(crate) use crate::oci::media_types::{MANIFEST_ACCEPT, is_index, is_manifest};
pub(crate) use crate::oci::{Descriptor, Platform};

/// The best entry of an index for the platform (the first of equally good ones).
pub(crate) fn select<'index>(
    entries: &'index [Descriptor],
    os: &str,
    architecture: &str,
    variant: Option<&str>,
) -> Option<&'index Descriptor> {
    entries
        .iter()
        .filter(|entry| is_manifest(&entry.media_type) || entry.media_type.is_empty())
        .filter_map(|entry| Some((entry.platform.as_ref()?.match_rank(&Platform::new(os, architecture, variant))?, entry)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, entry)| entry)
}

/// An incremental digest for the algorithms registries use.
pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// `None` for an algorithm we cannot verify.
    pub(super) fn for_digest(digest: &str) -> Option<Hasher> {
        match digest.split_once(':')?.0 {
            "sha256" => Some(Hasher::Sha256(sha2::Sha256::new())),
            "sha512" => Some(Hasher::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(hasher) => hasher.update(bytes),
            Hasher::Sha512(hasher) => hasher.update(bytes),
        }
    }

    pub(super) fn finish(self) -> String {
        match self {
            Hasher::Sha256(hasher) => format!("sha256:{}", hex_string(&hasher.finalize())),
            Hasher::Sha512(hasher) => format!("sha512:{}", hex_string(&hasher.finalize())),
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::descriptor::sha256_digest;
    use crate::oci::media_types::OCI_MANIFEST;

    fn entry(architecture: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            annotations: Default::default(),
            platform: Some(Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(Into::into) }),
        }
    }

    #[test]
    fn selects_platform() {
        let entries = vec![
            entry("amd64", None, "amd64"),
            entry("arm", Some("v6"), "armv6"),
            entry("arm", Some("v7"), "armv7"),
            entry("arm64", Some("v8"), "arm64"),
            Descriptor {
                media_type: OCI_MANIFEST.into(),
                digest: "attestation".into(),
                size: 1,
                annotations: Default::default(),
                platform: Some(Platform { os: "unknown".into(), architecture: "unknown".into(), variant: None }),
            },
        ];
        let pick = |architecture, variant| select(&entries, "linux", architecture, variant).map(|entry| entry.digest.as_str());
        assert_eq!(pick("amd64", None), Some("amd64"));
        assert_eq!(pick("x86_64", None), Some("amd64"));
        assert_eq!(pick("arm64", None), Some("arm64"));
        assert_eq!(pick("aarch64", Some("v8")), Some("arm64"));
        assert_eq!(pick("arm", None), Some("armv7"));
        assert_eq!(pick("arm", Some("v6")), Some("armv6"));
        assert_eq!(pick("arm", Some("v8")), Some("armv7"), "newest older variant");
        assert_eq!(pick("arm", Some("v5")), None);
        assert_eq!(pick("s390x", None), None);
        assert_eq!(select(&entries, "windows", "amd64", None).map(|entry| entry.digest.as_str()), None);
    }

    #[test]
    fn descriptors_with_unsafe_digests_are_refused() {
        let good = format!("sha256:{}", "a".repeat(64));
        for bad in [
            "sha256:../x",
            "sha256:",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("md5:{}", "a".repeat(32)),
            &format!("sha256:{}/..", "a".repeat(61)),
        ] {
            let text = format!(r#"{{"digest": "{bad}", "size": 1}}"#);
            let error = serde_json::from_str::<Descriptor>(&text).unwrap_err().to_string();
            assert!(error.contains("invalid digest"), "{bad}: {error}");
        }
        let text = format!(r#"{{"digest": "{good}", "size": 1}}"#);
        assert_eq!(serde_json::from_str::<Descriptor>(&text).unwrap().digest, good);
    }

    #[test]
    fn digests() {
        assert_eq!(sha256_digest(b""), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        let mut hasher = Hasher::for_digest("sha256:x").unwrap();
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(hasher.finish(), sha256_digest(b"abc"));
        assert!(Hasher::for_digest("md5:x").is_none());
    }
}
