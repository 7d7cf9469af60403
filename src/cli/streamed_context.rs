//! A build context that arrives as one stream, as buildx and BuildKit take it: `-` (stdin) or an
//! http(s) URL that is not a git repository (BuildKit's "remote build context"). The stream is
//! either a tar archive (plain, gzip, bzip2 or xz), which becomes the context, or a Dockerfile,
//! built with an empty context.
//!
//! buildx tells them apart by the first bytes: a compression magic or a valid tar header is an
//! archive, anything else a Dockerfile. The archive is unpacked with the same hardened reader
//! as layers and `ADD` archives (nothing lands outside the directory) into a private temporary
//! directory that lives as long as the build. A URL is downloaded first (into that directory's
//! sibling, removed at once) with the registry client's transport: the host's
//! `[registry."host"]` settings, retries, redirects, proxies from the environment.

use std::io::Read;

use anyhow::{Context, bail};

use crate::snapshot::extract::{
    ExtractOptions, Ownership, StreamCompression, WhiteoutMode, decompressed, detect_compression, extract, is_tar_header,
};

/// What came in the stream.
pub struct StreamedContext {
    /// The context directory: empty, or the unpacked archive. Removed on drop.
    pub dir: tempfile::TempDir,
    /// The Dockerfile, when the stream was one.
    pub dockerfile: Option<Vec<u8>>,
    /// The URL it came from (`None`: stdin), for the progress line BuildKit shows.
    pub url: Option<String>,
    /// The stream was an archive (the context), not a Dockerfile.
    pub archive: bool,
}

impl StreamedContext {
    /// Reads stdin; `dockerfile_limit` bounds a Dockerfile read from it.
    pub fn read(dockerfile_flag: Option<&str>, dockerfile_limit: u64) -> anyhow::Result<StreamedContext> {
        if dockerfile_flag == Some("-") {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        StreamedContext::from_reader(std::io::stdin().lock(), "stdin", dockerfile_flag.is_some(), dockerfile_limit)
    }

    /// Downloads `url` with `client` and reads it as [`StreamedContext::read`] reads stdin.
    /// With an archive, a `-f` Dockerfile is a path in it.
    pub fn download(
        client: &crate::registry::Client,
        url: &str,
        dockerfile_flag: Option<&str>,
        dockerfile_limit: u64,
    ) -> anyhow::Result<StreamedContext> {
        let mut file = tempfile::tempfile().context("failed to make a file for the downloaded context")?;
        client.download(url, &mut file, &mut |_, _| {}).context("failed to read downloaded context")?;
        std::io::Seek::rewind(&mut file).context("failed to read downloaded context")?;
        let mut context = StreamedContext::from_reader(file, &format!("`{url}`"), false, dockerfile_limit)?;
        if context.dockerfile.is_some() && dockerfile_flag.is_some() {
            bail!("ambiguous Dockerfile source: both `{url}` and flag correspond to Dockerfiles");
        }
        context.url = Some(url.to_string());
        Ok(context)
    }

    /// `source` names the stream in messages (`stdin`, or the URL in backticks).
    fn from_reader(
        mut input: impl Read + 'static,
        source: &str,
        dockerfile_flag: bool,
        dockerfile_limit: u64,
    ) -> anyhow::Result<StreamedContext> {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-streamed-context-")
            .tempdir()
            .with_context(|| format!("failed to make a directory for the context from {source}"))?;
        let mut head = Vec::new();
        (&mut input).take(1024).read_to_end(&mut head).with_context(|| format!("failed to peek context header from {source}"))?;
        if is_archive(&head) {
            let whole = std::io::Cursor::new(head).chain(input);
            let reader = decompressed(whole).with_context(|| format!("failed to read the context archive from {source}"))?;
            let ownership = if nix::unistd::geteuid().is_root() { Ownership::FromArchive } else { Ownership::BestEffort };
            extract(reader, dir.path(), &ExtractOptions { whiteouts: WhiteoutMode::Literal, ownership })
                .with_context(|| format!("failed to unpack the context archive from {source}"))?;
            return Ok(StreamedContext { dir, dockerfile: None, url: None, archive: true });
        }
        if dockerfile_flag {
            bail!("ambiguous Dockerfile source: both {source} and flag correspond to Dockerfiles");
        }
        let dockerfile = read_dockerfile(std::io::Cursor::new(head).chain(input), dockerfile_limit)?;
        Ok(StreamedContext { dir, dockerfile: Some(dockerfile), url: None, archive: false })
    }
}

/// Whether a context argument is a git repository, by buildx's rule (`urlutil.IsGitURL`):
/// `git://`, `git@`, `ssh://` or an http(s) URL whose path ends in `.git` (before any `#`).
pub(super) fn is_git_url(text: &str) -> bool {
    if ["git://", "git@", "ssh://"].iter().any(|prefix| text.starts_with(prefix)) {
        return true;
    }
    let before_fragment = text.split('#').next().unwrap_or(text);
    (text.starts_with("http://") || text.starts_with("https://")) && before_fragment.ends_with(".git")
}

/// A Dockerfile from stdin (`-f -`, or `-` that is no archive), at most `limit` bytes: more is
/// an error, never a read without end.
pub(super) fn read_dockerfile(input: impl Read, limit: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(limit + 1).read_to_end(&mut bytes).context("failed to read the Dockerfile from stdin")?;
    if bytes.len() as u64 > limit {
        bail!("failed to read the Dockerfile from stdin: larger than the limit of {limit} bytes");
    }
    Ok(bytes)
}

/// buildx's test: a gzip, bzip2 or xz magic, or a first block that is a valid tar header.
fn is_archive(head: &[u8]) -> bool {
    if matches!(detect_compression(head), StreamCompression::Gzip | StreamCompression::Bzip2 | StreamCompression::Xz) {
        return true;
    }
    is_tar_header(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, content) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, content.as_bytes()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn a_tar_on_stdin_is_the_context_and_anything_else_a_dockerfile() {
        let tar = archive(&[("Dockerfile", "FROM scratch\n"), ("a/b.txt", "b\n")]);
        let context = StreamedContext::from_reader(std::io::Cursor::new(tar.clone()), "stdin", false, 1 << 20).unwrap();
        assert!(context.dockerfile.is_none());
        assert_eq!(std::fs::read_to_string(context.dir.path().join("a/b.txt")).unwrap(), "b\n");

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, &tar).unwrap();
        let context = StreamedContext::from_reader(std::io::Cursor::new(gzip.finish().unwrap()), "stdin", true, 1 << 20).unwrap();
        assert_eq!(std::fs::read_to_string(context.dir.path().join("Dockerfile")).unwrap(), "FROM scratch\n");

        let context =
            StreamedContext::from_reader(std::io::Cursor::new(b"FROM busybox\nRUN true\n".to_vec()), "stdin", false, 1 << 20).unwrap();
        assert_eq!(context.dockerfile.as_deref(), Some(&b"FROM busybox\nRUN true\n"[..]));
        assert_eq!(std::fs::read_dir(context.dir.path()).unwrap().count(), 0, "the context is empty");

        let error = StreamedContext::from_reader(std::io::Cursor::new(b"FROM x\n".to_vec()), "stdin", true, 1 << 20).err().unwrap();
        assert_eq!(error.to_string(), "ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles");
        let error = StreamedContext::from_reader(std::io::Cursor::new(vec![b'#'; 5000]), "stdin", false, 4096).err().unwrap();
        assert!(error.to_string().contains("larger than the limit of 4096 bytes"), "{error}");
    }

    #[test]
    fn git_urls_are_told_apart_as_buildx_tells_them() {
        for git in ["git://h/r", "git@github.com:o/r.git", "ssh://git@h/r", "https://h/o/r.git", "https://h/o/r.git#main:dir"] {
            assert!(is_git_url(git), "{git}");
        }
        for other in ["https://h/ctx.tar.gz", "http://h/Dockerfile", "https://h/r.git/file", "./dir", "-"] {
            assert!(!is_git_url(other), "{other}");
        }
    }
}
