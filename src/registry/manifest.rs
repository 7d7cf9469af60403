//! Platform selection in an index (the best match by `oci::Platform::match_rank`, containerd's
//! rules; entries with OS `unknown`, attestations, never match). The documents themselves are
//! `oci::manifest`'s; the digest every byte that leaves the client is checked with is
//! `oci::DigestHasher`.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;
    use crate::oci::media_types::OCI_MANIFEST;

    fn entry(architecture: &str, variant: Option<&str>, name: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::sha256_of(name.as_bytes()),
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
                digest: Digest::sha256_of(b"attestation"),
                size: 1,
                annotations: Default::default(),
                platform: Some(Platform { os: "unknown".into(), architecture: "unknown".into(), variant: None }),
            },
        ];
        let pick = |architecture, variant| select(&entries, "linux", architecture, variant).map(|entry| entry.digest.clone());
        let named = |name: &str| Some(Digest::sha256_of(name.as_bytes()));
        assert_eq!(pick("amd64", None), named("amd64"));
        assert_eq!(pick("x86_64", None), named("amd64"));
        assert_eq!(pick("arm64", None), named("arm64"));
        assert_eq!(pick("aarch64", Some("v8")), named("arm64"));
        assert_eq!(pick("arm", None), named("armv7"));
        assert_eq!(pick("arm", Some("v6")), named("armv6"));
        assert_eq!(pick("arm", Some("v8")), named("armv7"), "newest older variant");
        assert_eq!(pick("arm", Some("v5")), None);
        assert_eq!(pick("s390x", None), None);
        assert_eq!(select(&entries, "windows", "amd64", None).map(|entry| entry.digest.clone()), None);
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
        assert_eq!(serde_json::from_str::<Descriptor>(&text).unwrap().digest, good.as_str());
    }
}
