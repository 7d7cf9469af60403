//! How a layer blob is compressed: the `compression=` value of `-o` and `--cache-to`, the name
//! recorded beside a blob in the store, and what a layer's media type says. (Archives given to
//! `ADD` may also be bzip2 or xz; reading those is the extractor's business, by magic bytes.)

/// A layer's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Uncompressed,
}

impl Compression {
    /// `compression=` as BuildKit's exporters take it.
    pub fn parse(text: &str) -> Option<Compression> {
        match text {
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            "uncompressed" => Some(Compression::Uncompressed),
            _ => None,
        }
    }

    /// The name `parse` takes, and the store records beside a blob.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Uncompressed => "uncompressed",
        }
    }

    /// The compression a layer media type says (`...+zstd`, `...+gzip`, Docker's `.tar.gzip`);
    /// anything else is taken as uncompressed.
    pub fn of_media_type(media_type: &str) -> Compression {
        if media_type.ends_with("zstd") {
            Compression::Zstd
        } else if media_type.ends_with("gzip") {
            Compression::Gzip
        } else {
            Compression::Uncompressed
        }
    }

    /// The layer media type for this compression, in OCI's or Docker's types (Docker has no
    /// zstd type: zstd is always OCI's).
    pub fn layer_media_type(self, oci: bool) -> &'static str {
        use super::media_types::*;
        match (self, oci) {
            (Compression::Gzip, true) => OCI_LAYER_GZIP,
            (Compression::Zstd, _) => OCI_LAYER_ZSTD,
            (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
            (Compression::Uncompressed, true) => OCI_LAYER,
            (Compression::Uncompressed, false) => DOCKER_LAYER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_compressions_agree() {
        for compression in [Compression::Gzip, Compression::Zstd, Compression::Uncompressed] {
            assert_eq!(Compression::parse(compression.name()), Some(compression));
            for oci in [true, false] {
                assert_eq!(Compression::of_media_type(compression.layer_media_type(oci)), compression, "{compression:?} {oci}");
            }
        }
        assert_eq!(Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"), Compression::Gzip);
        assert_eq!(Compression::parse("none"), None);
    }
}
