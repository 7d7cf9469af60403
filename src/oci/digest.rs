//! Digests: the names of content. One type, [`Digest`], for every `algorithm:hex` rbuild makes,
//! reads or checks (blobs, manifests, configs, vertex definitions, context files, cache keys),
//! one hasher, [`DigestHasher`], that makes them, and [`DiffId`] for the digest of an
//! uncompressed layer tar, which must never be taken for the digest of the (compressed) blob.
//!
//! Invariant: a [`Digest`] is `sha256:` and 64 lowercase hex digits, or `sha512:` and 128: the
//! algorithms rbuild can verify, in the only form safe to put in a URL or a path. It is checked
//! where text becomes one ([`Digest::parse`], deserialization), so `sha256:../x` from a hostile
//! manifest, index or cache never gets further. Serialized, it is the plain string.
//!
//! Decision: references keep their digest as text (`oci::reference`): go-distribution accepts
//! more there (any algorithm, any length from 32), and a registry's answer says what is wrong
//! with one rbuild cannot check ([`DigestHasher::for_algorithm`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// A checked `algorithm:hex` digest (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Text that is not a digest rbuild accepts; the text is shown cut to 80 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest `{shown}`")]
pub struct InvalidDigest {
    shown: String,
}

impl Digest {
    /// `text` if it is `sha256:` and 64 lowercase hex digits, or `sha512:` and 128.
    pub fn parse(text: &str) -> Result<Digest, InvalidDigest> {
        let (hex, length) = match text.split_once(':') {
            Some(("sha256", hex)) => (hex, 64),
            Some(("sha512", hex)) => (hex, 128),
            _ => return Err(InvalidDigest::of(text)),
        };
        if hex.len() != length || !hex.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
            return Err(InvalidDigest::of(text));
        }
        Ok(Digest(text.to_string()))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(sha2::Sha256::new_with_prefix(bytes))
    }

    /// The digest a sha256 hasher fed elsewhere (a writer that hashes as it writes) ends with.
    pub fn from_sha256(hasher: sha2::Sha256) -> Digest {
        Digest::from_sha256_bytes(&hasher.finalize().into())
    }

    /// The sha256 digest whose 32 bytes these are.
    pub fn from_sha256_bytes(bytes: &[u8; 32]) -> Digest {
        // By hand: `hex::encode` collects characters one by one, which showed in the profile of
        // a no-op rebuild (50,000 digests of remembered files).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(71);
        text.push_str("sha256:");
        for byte in bytes {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
        }
        Digest(text)
    }

    /// The 32 bytes of a sha256 digest; `None` for another algorithm.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let (algorithm, hex) = self.split();
        let mut bytes = [0; 32];
        (algorithm == "sha256" && hex::decode_to_slice(hex, &mut bytes).is_ok()).then_some(bytes)
    }

    /// `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        self.split().0
    }

    /// The lowercase hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        self.split().1
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn split(&self) -> (&str, &str) {
        // Checked when made: there is always exactly one `:`.
        self.0.split_once(':').unwrap_or(("", &self.0))
    }
}

impl InvalidDigest {
    fn of(text: &str) -> InvalidDigest {
        InvalidDigest { shown: text.chars().take(80).collect() }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = InvalidDigest;

    fn from_str(text: &str) -> Result<Digest, InvalidDigest> {
        Digest::parse(text)
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl PartialEq<Digest> for String {
    fn eq(&self, other: &Digest) -> bool {
        *self == other.0
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The digest of an uncompressed layer tar (OCI's "diff id"): what snapshots, the image
/// config's `rootfs.diff_ids` and cache records name a layer by. A blob of that layer has
/// another digest (its compressed bytes); the two types keep them apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiffId(Digest);

impl DiffId {
    /// `digest` taken as the digest of an uncompressed tar.
    pub fn new(digest: Digest) -> DiffId {
        DiffId(digest)
    }

    /// Checked as [`Digest::parse`].
    pub fn parse(text: &str) -> Result<DiffId, InvalidDigest> {
        Digest::parse(text).map(DiffId)
    }

    pub fn digest(&self) -> &Digest {
        &self.0
    }

    pub fn hex(&self) -> &str {
        self.0.hex()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for DiffId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A digest computed as bytes go by (a download, an upload, a blob read back), in the algorithm
/// of the digest it is checked against.
#[derive(Clone)]
pub struct DigestHasher(Running);

#[derive(Clone)]
enum Running {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl DigestHasher {
    pub fn sha256() -> DigestHasher {
        DigestHasher(Running::Sha256(sha2::Sha256::new()))
    }

    /// A hasher of `digest`'s algorithm, to check bytes against it.
    pub fn for_digest(digest: &Digest) -> DigestHasher {
        match digest.algorithm() {
            "sha512" => DigestHasher(Running::Sha512(sha2::Sha512::new())),
            _ => DigestHasher::sha256(),
        }
    }

    /// A hasher for the algorithm `algorithm` (of a digest given as text, as a reference's
    /// is); `None` for one rbuild cannot verify.
    pub fn for_algorithm(algorithm: &str) -> Option<DigestHasher> {
        match algorithm {
            "sha256" => Some(DigestHasher::sha256()),
            "sha512" => Some(DigestHasher(Running::Sha512(sha2::Sha512::new()))),
            _ => None,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            Running::Sha256(hasher) => hasher.update(bytes),
            Running::Sha512(hasher) => hasher.update(bytes),
        }
    }

    pub fn finish(self) -> Digest {
        match self.0 {
            Running::Sha256(hasher) => Digest::from_sha256(hasher),
            Running::Sha512(hasher) => Digest(format!("sha512:{}", hex::encode(hasher.finalize()))),
        }
    }
}

/// A reader or a writer that hashes (sha256) and counts the bytes that pass through it: a layer
/// tar as it is written, a download as it lands, a layer as it is unpacked.
pub struct Hashing<T> {
    inner: T,
    hasher: DigestHasher,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn sha256(inner: T) -> Hashing<T> {
        Hashing { inner, hasher: DigestHasher::sha256(), bytes: 0 }
    }

    /// The inner reader or writer, the digest and the count of what passed.
    pub fn finish(self) -> (T, Digest, u64) {
        (self.inner, self.hasher.finish(), self.bytes)
    }
}

impl<R: std::io::Read> std::io::Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        self.bytes += count as u64;
        Ok(count)
    }
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let count = self.inner.write(buffer)?;
        super::stage_cpu::measure(super::stage_cpu::Stage::Hash, || self.hasher.update(&buffer[..count]));
        self.bytes += count as u64;
        Ok(count)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_counts_and_hashes_both_ways() {
        use std::io::{Read, Write};
        let mut writer = Hashing::sha256(Vec::new());
        writer.write_all(b"abc").unwrap();
        let (written, digest, bytes) = writer.finish();
        assert_eq!((written.as_slice(), bytes), (&b"abc"[..], 3));
        assert_eq!(digest, Digest::sha256_of(b"abc"));
        let mut reader = Hashing::sha256(&b"abc"[..]);
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!(reader.finish().1, Digest::sha256_of(b"abc"));
    }

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn only_verifiable_digests_in_plain_characters_parse() {
        let sha256 = format!("sha256:{}", "a".repeat(64));
        let digest = Digest::parse(&sha256).unwrap();
        assert_eq!((digest.algorithm(), digest.hex(), digest.as_str()), ("sha256", &*"a".repeat(64), sha256.as_str()));
        assert_eq!(digest.to_string(), sha256);
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:../x".to_string(),
            "sha256:".into(),
            "a".repeat(64),
            format!("sha256:{}", "A".repeat(64)),
            format!("md5:{}", "a".repeat(32)),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}/..", "a".repeat(61)),
        ] {
            assert_eq!(Digest::parse(&bad).unwrap_err().to_string(), format!("invalid digest `{}`", &bad[..bad.len().min(80)]));
        }
        let long = format!("sha256:{}", "x".repeat(200));
        assert_eq!(long.parse::<Digest>().unwrap_err().to_string(), format!("invalid digest `{}`", &long[..80]));
    }

    #[test]
    fn digests_serialize_as_strings_and_deserialize_checked() {
        let digest = Digest::sha256_of(b"");
        assert_eq!(digest, EMPTY_SHA256);
        assert_eq!(serde_json::to_string(&digest).unwrap(), format!("\"{EMPTY_SHA256}\""));
        assert_eq!(serde_json::from_str::<Digest>(&format!("\"{EMPTY_SHA256}\"")).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>(r#""sha256:../../etc""#).unwrap_err().to_string().contains("invalid digest"));
        let diff_id = DiffId::new(digest.clone());
        assert_eq!(serde_json::to_string(&diff_id).unwrap(), format!("\"{EMPTY_SHA256}\""));
        assert_eq!(diff_id.digest(), &digest);
    }

    #[test]
    fn hashers_make_the_digest_of_what_went_through_them() {
        let mut hasher = DigestHasher::for_digest(&Digest::sha256_of(b"x"));
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(hasher.finish(), Digest::sha256_of(b"abc"));
        let mut sha512 = DigestHasher::for_algorithm("sha512").unwrap();
        sha512.update(b"abc");
        let digest = sha512.finish();
        assert_eq!((digest.algorithm(), digest.hex().len()), ("sha512", 128));
        assert_eq!(Digest::parse(digest.as_str()), Ok(digest));
        assert!(DigestHasher::for_algorithm("md5").is_none());
    }
}
