//! Image names as Docker normalizes them: `busybox` → `docker.io/library/busybox:latest`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/busybox:latest`
    pub full: String,
    /// `busybox:latest`, as `docker images` shows it.
    pub familiar: String,
    /// `latest`, or the digest for a digest reference.
    pub tag: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reference format: `{0}`")]
pub struct ReferenceError(pub String);

pub fn normalize(name: &str) -> Result<Reference, ReferenceError> {
    let invalid = || ReferenceError(name.to_string());
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_ascii_uppercase() && !name.contains('@')) {
        return Err(invalid());
    }
    let (path, digest) = match name.split_once('@') {
        Some((path, digest)) => (path, Some(digest)),
        None => (name, None),
    };
    // A tag is after the last `:` that comes after the last `/` (a port is before a `/`).
    let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repository, tag) = match path[last_slash..].rfind(':') {
        Some(colon) => (&path[..last_slash + colon], Some(&path[last_slash + colon + 1..])),
        None => (path, None),
    };
    if repository.is_empty() || tag.is_some_and(|t| t.is_empty()) {
        return Err(invalid());
    }
    let first = repository.split('/').next().unwrap_or("");
    let has_domain = repository.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let (domain, remainder) = if has_domain {
        let (domain, rest) = repository.split_once('/').ok_or_else(invalid)?;
        (domain.to_string(), rest.to_string())
    } else {
        ("docker.io".to_string(), repository.to_string())
    };
    let remainder = if domain == "docker.io" && !remainder.contains('/') { format!("library/{remainder}") } else { remainder };
    let suffix = match (tag, digest) {
        (_, Some(digest)) => format!("@{digest}"),
        (Some(tag), None) => format!(":{tag}"),
        (None, None) => ":latest".to_string(),
    };
    let full = format!("{domain}/{remainder}{suffix}");
    let familiar_path = if domain == "docker.io" {
        remainder.strip_prefix("library/").unwrap_or(&remainder).to_string()
    } else {
        format!("{domain}/{remainder}")
    };
    Ok(Reference {
        familiar: format!("{familiar_path}{suffix}"),
        full,
        tag: digest.map(String::from).or(tag.map(String::from)).unwrap_or_else(|| "latest".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        let busybox = normalize("busybox").unwrap();
        assert_eq!(busybox.full, "docker.io/library/busybox:latest");
        assert_eq!(busybox.familiar, "busybox:latest");
        assert_eq!(normalize("me/app:1.0").unwrap().full, "docker.io/me/app:1.0");
        let local = normalize("localhost:5000/app").unwrap();
        assert_eq!(local.full, "localhost:5000/app:latest");
        assert_eq!(local.familiar, "localhost:5000/app:latest");
        assert_eq!(normalize("ghcr.io/o/r:t").unwrap().tag, "t");
        assert!(normalize("Upper").is_err());
        assert!(normalize("a:").is_err());
    }
}
