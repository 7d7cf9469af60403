//! Slash paths inside images and build contexts, cleaned the one way BuildKit cleans them: Go's
//! `path.Clean` ([`clean`]), and its two uses, a path under a root that `..` cannot leave
//! ([`clean_in_root`]) and an absolute path ([`clean_absolute`]). Lexical only: symlinks are the
//! resolvers' business.

/// Go's `path.Clean`: drops empty and `.` elements, resolves `..` lexically (never above a
/// leading `/`), and returns `.` for an empty result.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A path under a root, relative and clean: no leading `/` or `./`, no `.` parts, no trailing
/// `/`, and `..` cannot climb above the root (`""` is the root itself).
pub fn clean_in_root(path: &str) -> String {
    clean(&format!("/{path}")).trim_start_matches('/').to_string()
}

/// An absolute clean path (`a/../b` is `/b`).
pub fn clean_absolute(path: &str) -> String {
    clean(&format!("/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_matches_go_and_stays_in_the_root() {
        for (input, expected) in [
            ("", "."),
            ("a/b/../c", "a/c"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("a//b/./c/", "a/b/c"),
            ("./", "."),
            ("/", "/"),
            ("a/../..", ".."),
        ] {
            assert_eq!(clean(input), expected, "{input:?}");
        }
        assert_eq!(clean_in_root("../../etc/passwd"), "etc/passwd");
        assert_eq!(clean_in_root("./a/b/"), "a/b");
        assert_eq!(clean_in_root("/"), "");
        assert_eq!(clean_absolute("/a/./b/../c/"), "/a/c");
        assert_eq!(clean_absolute("/.."), "/");
        assert_eq!(clean_absolute("a/b"), "/a/b");
    }
}
