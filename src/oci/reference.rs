//! Image references with Docker's normalization, the one parser of them: `busybox` is
//! `docker.io/library/busybox:latest`, `index.docker.io/x` is `docker.io/library/x`, a first path
//! component with `.` or `:` or equal to `localhost` is a registry host. Invariant: a parsed
//! [`Reference`] always has a tag or a digest (a bare name gets `latest`), and its repository is
//! lowercase and valid. Used for `FROM`, `-t` names, `--cache-to/--cache-from` refs and pushes.

/// A text that is no image reference, with why. An upper-case repository is said in Docker's
/// (and BuildKit's) words, `repository name (library/UPPER) must be lowercase`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format: {}", self.explained())]
pub struct ReferenceError {
    pub text: String,
    pub reason: &'static str,
    /// The normalized repository, for the upper-case message.
    pub repository: Option<String>,
}

impl ReferenceError {
    fn explained(&self) -> String {
        match &self.repository {
            Some(repository) => format!("repository name ({repository}) {}", self.reason),
            None => format!("`{}`: {}", self.text, self.reason),
        }
    }
}

pub const DOCKER_HUB: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host as users write it (`docker.io`, `127.0.0.1:5000`), not the API host.
    pub registry: String,
    /// Repository path inside the registry (`library/busybox`).
    pub repository: String,
    pub tag: Option<String>,
    /// `algorithm:hex`, checked for format only.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let invalid = |reason| ReferenceError { text: text.to_string(), reason, repository: None };
        if text.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        // The tag is after the last `:` that follows the last `/`; a `:` before it is a port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(index) => {
                let split = last_slash + index;
                (&name_and_tag[..split], Some(&name_and_tag[split + 1..]))
            }
            None => (name_and_tag, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') { format!("library/{repository}") } else { repository };

        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError { repository: Some(repository), ..invalid("must be lowercase") });
        }
        if !valid_repository(&repository) {
            return Err(invalid("invalid repository name"));
        }
        if !valid_host(&registry) {
            return Err(invalid("invalid registry host"));
        }
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid("invalid tag"));
        }
        if let Some(digest) = digest
            && !valid_digest(digest)
        {
            return Err(invalid("invalid digest"));
        }
        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Reference { registry, repository, tag, digest: digest.map(str::to_string) })
    }

    /// `registry/repository[:tag][@digest]`, fully qualified (never shortened to `busybox`).
    #[allow(clippy::inherent_to_string_shadow_display)]
    pub fn to_string(&self) -> String {
        let mut text = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
        text
    }

    /// What the manifest endpoint is asked for: the digest when there is one, else the tag.
    pub fn manifest_selector(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or(DEFAULT_TAG)
    }

    /// The name an image store records: `registry/repository` and the digest when there is one,
    /// else the tag (`docker.io/library/busybox:latest`; with both, the digest alone).
    pub fn stored_name(&self) -> String {
        format!("{}/{}{}", self.registry, self.repository, self.suffix())
    }

    /// As `docker images` shows it: Docker Hub's `docker.io/` and `library/` left out
    /// (`busybox:latest`, `me/app:1`, `localhost:5000/app:latest`).
    pub fn familiar_name(&self) -> String {
        let path = if self.registry == DOCKER_HUB {
            self.repository.strip_prefix("library/").unwrap_or(&self.repository).to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        format!("{path}{}", self.suffix())
    }

    /// `@digest`, else `:tag`.
    fn suffix(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => format!("@{digest}"),
            (None, Some(tag)) => format!(":{tag}"),
            (None, None) => format!(":{DEFAULT_TAG}"),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&Reference::to_string(self))
    }
}

/// Components `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`, separated by `/`.
fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|component| {
            let bytes = component.as_bytes();
            let alphanumeric = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
            if bytes.is_empty() || !alphanumeric(bytes[0]) || !alphanumeric(bytes[bytes.len() - 1]) {
                return false;
            }
            let mut index = 0;
            while index < bytes.len() {
                let byte = bytes[index];
                if alphanumeric(byte) {
                    index += 1;
                    continue;
                }
                let start = index;
                while index < bytes.len() && !alphanumeric(bytes[index]) {
                    index += 1;
                }
                let separator = &component[start..index];
                if !(separator == "." || separator == "_" || separator == "__" || separator.bytes().all(|b| b == b'-')) {
                    return false;
                }
            }
            true
        })
}

fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_'))
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'_' | b'-'));
    algorithm_ok && hex_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalizes_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("index.docker.io/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("127.0.0.1:5000/library/busybox:t1", "127.0.0.1:5000/library/busybox:t1"),
            ("ghcr.io/org/team/app:1.0-rc.1", "ghcr.io/org/team/app:1.0-rc.1"),
            ("quay.io/a_b/c__d/e--f", "quay.io/a_b/c__d/e--f:latest"),
        ];
        for (input, expected) in cases {
            assert_eq!(Reference::parse(input).unwrap().to_string(), expected, "{input}");
        }
    }

    #[test]
    fn splits_fields() {
        let reference = Reference::parse(&format!("127.0.0.1:5000/busybox:1.0@{DIGEST}")).unwrap();
        assert_eq!(reference.registry, "127.0.0.1:5000");
        assert_eq!(reference.repository, "busybox");
        assert_eq!(reference.tag.as_deref(), Some("1.0"));
        assert_eq!(reference.digest.as_deref(), Some(DIGEST));
        assert_eq!(reference.manifest_selector(), DIGEST);

        let by_digest = Reference::parse(&format!("busybox@{DIGEST}")).unwrap();
        assert_eq!(by_digest.tag, None);
        assert_eq!(by_digest.to_string(), format!("docker.io/library/busybox@{DIGEST}"));
    }

    #[test]
    fn names_for_image_stores() {
        let busybox = Reference::parse("busybox").unwrap();
        assert_eq!(busybox.stored_name(), "docker.io/library/busybox:latest");
        assert_eq!(busybox.familiar_name(), "busybox:latest");
        assert_eq!(Reference::parse("me/app:1.0").unwrap().familiar_name(), "me/app:1.0");
        let local = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(local.familiar_name(), "localhost:5000/app:latest");
        let pinned = Reference::parse(&format!("app:1@{DIGEST}")).unwrap();
        assert_eq!(pinned.stored_name(), format!("docker.io/library/app@{DIGEST}"));
    }

    #[test]
    fn rejects_invalid() {
        for input in
            ["", "Busybox", "docker.io/Library/x", "busybox:", "busybox:-x", "a//b", "-a", "a-", "busybox@sha256:12", "a..b", ":tag"]
        {
            assert!(Reference::parse(input).is_err(), "{input:?} should be rejected");
        }
        let error = Reference::parse("Busybox").unwrap_err().to_string();
        assert_eq!(error, "invalid reference format: repository name (library/Busybox) must be lowercase");
    }
}
