//! Which `ADD` sources are git repositories, and their parts, by BuildKit's rules
//! (`gitutil.ParseGitRef`, measured with the oracle where they were unclear):
//!
//! - a URL whose scheme is `git://` or `ssh://` (any case);
//! - an `http://` or `https://` URL whose path ends in `.git` (without it, the URL is a file
//!   to download: `ADD https://host/repo#main` is an http source);
//! - the scp form `user@host:path`; without the user (`a:b`) the source is a local path, as
//!   BuildKit's frontend takes it;
//! - never `./x`, `../x`, nor `github.com/x` (a local path for `ADD`, as BuildKit).
//!
//! The fragment says what to take: `#REF:SUBDIR` (both optional), or BuildKit's CSV form
//! `##ref=REF,subdir=SUBDIR,commit=ID`. The remote keeps its spelling, without the fragment.

/// A git source's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GitUrl {
    pub remote: String,
    pub reference: String,
    /// Cleaned and relative: `a/b`, or empty for the whole tree.
    pub subdir: String,
}

/// The git source `source` names, if it names one; an invalid fragment is an error.
pub(super) fn parse(source: &str) -> Option<Result<GitUrl, String>> {
    if source.starts_with("./") || source.starts_with("../") || source.starts_with("github.com/") {
        return None;
    }
    let (remote, fragment) = match source.split_once('#') {
        Some((remote, fragment)) => (remote, Some(fragment)),
        None => (source, None),
    };
    if let Some((scheme, rest)) = remote.split_once("://")
        && !scheme.is_empty()
        && scheme.chars().all(|c| c.is_ascii_alphanumeric())
    {
        let path = rest.split(['?']).next().unwrap_or_default();
        let is_git = match scheme.to_ascii_lowercase().as_str() {
            "git" | "ssh" => true,
            "http" | "https" => path.contains('/') && path.ends_with(".git"),
            _ => false,
        };
        if !is_git {
            return None;
        }
    } else if !is_scp_form(remote) {
        return None;
    }
    Some(split_fragment(fragment.unwrap_or_default()).map(|(reference, subdir)| GitUrl {
        remote: remote.to_string(),
        reference,
        subdir: clean_subdir(&subdir),
    }))
}

/// `user@host:path`, the user and host of BuildKit's `gitSSHRegex`.
fn is_scp_form(text: &str) -> bool {
    let Some((user, rest)) = text.split_once('@') else { return false };
    let Some((host, _path)) = rest.split_once(':') else { return false };
    let user_ok = !user.is_empty() && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    user_ok && host_ok
}

/// `REF:SUBDIR`, or the CSV form after a second `#`.
fn split_fragment(fragment: &str) -> Result<(String, String), String> {
    let Some(fields) = fragment.strip_prefix('#') else {
        let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
        return Ok((reference.to_string(), subdir.to_string()));
    };
    let (mut reference, mut subdir, mut commit) = (String::new(), String::new(), String::new());
    for field in fields.split(',').filter(|field| !field.is_empty()) {
        let Some((key, value)) = field.split_once('=') else {
            return Err(format!("invalid field '{field}' must be a key=value pair"));
        };
        match key.to_ascii_lowercase().as_str() {
            "ref" => reference = value.to_string(),
            "subdir" => subdir = value.to_string(),
            "commit" => commit = value.to_string(),
            other => return Err(format!("unexpected key '{other}' in '{field}' (supported keys: ref, commit, subdir)")),
        }
    }
    if reference.is_empty() {
        reference = commit;
    }
    Ok((reference, subdir))
}

/// A subdirectory as a relative clean path: `/a/./b/` is `a/b`, `/` and `.` are empty.
fn clean_subdir(subdir: &str) -> String {
    let cleaned = crate::oci::path::clean_absolute(&format!("/{subdir}"));
    cleaned.trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(source: &str) -> Option<(String, String, String)> {
        parse(source).map(|parsed| parsed.map(|url| (url.remote, url.reference, url.subdir)).unwrap())
    }

    #[test]
    fn git_sources_are_told_apart_as_buildkit_tells_them() {
        let some = |remote: &str, reference: &str, subdir: &str| Some((remote.into(), reference.into(), subdir.into()));
        assert_eq!(parts("git://h/r.git"), some("git://h/r.git", "", ""));
        assert_eq!(parts("git://h:9418/r#v1:sub/dir/"), some("git://h:9418/r", "v1", "sub/dir"));
        assert_eq!(parts("https://h/r.git#main"), some("https://h/r.git", "main", ""));
        assert_eq!(parts("HTTP://h/r.git"), some("HTTP://h/r.git", "", ""));
        assert_eq!(parts("ssh://git@h/r.git#:/a/../b"), some("ssh://git@h/r.git", "", "b"));
        assert_eq!(parts("git@github.com:moby/buildkit.git#v0.1"), some("git@github.com:moby/buildkit.git", "v0.1", ""));
        assert_eq!(parts("git://h/r.git##ref=v1,subdir=x"), some("git://h/r.git", "v1", "x"));
        assert_eq!(parts("git://h/r.git##commit=abc"), some("git://h/r.git", "abc", ""));
        assert!(parse("git://h/r.git##bogus").unwrap().is_err());
        for local in
            ["https://h/file.tar", "https://h/r#main", "http://h/a.git/x", "a:b", "./x", "github.com/a/b", "ftp://h/r.git", "file.git"]
        {
            assert_eq!(parts(local), None, "{local}");
        }
    }
}
