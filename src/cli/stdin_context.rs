//! A build context given as `-`, as buildx takes it: stdin is either a tar archive (plain,
//! gzip, bzip2 or xz), which becomes the context, or a Dockerfile, built with an empty context.
//!
//! buildx tells them apart by the first bytes: a compression magic or a valid tar header is an
//! archive, anything else a Dockerfile. The archive is unpacked with the same hardened reader
//! as layers and `ADD` archives (nothing lands outside the directory) into a private temporary
//! directory that lives as long as the build.

use std::io::Read;

use anyhow::{Context, bail};

use crate::snapshot::extract::{
    Compression, ExtractOptions, Ownership, WhiteoutMode, decompressed, detect_compression, extract, is_tar_header,
};

/// What came on stdin.
pub struct StdinContext {
    /// The context directory: empty, or the unpacked archive. Removed on drop.
    pub dir: tempfile::TempDir,
    /// The Dockerfile, when stdin was one.
    pub dockerfile: Option<Vec<u8>>,
}

impl StdinContext {
    /// Reads stdin; `dockerfile_limit` bounds a Dockerfile read from it.
    pub fn read(dockerfile_flag: Option<&str>, dockerfile_limit: u64) -> anyhow::Result<StdinContext> {
        if dockerfile_flag == Some("-") {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        StdinContext::from_reader(std::io::stdin().lock(), dockerfile_flag.is_some(), dockerfile_limit)
    }

    fn from_reader(mut input: impl Read + 'static, dockerfile_flag: bool, dockerfile_limit: u64) -> anyhow::Result<StdinContext> {
        let dir = tempfile::Builder::new()
            .prefix("rbuild-stdin-context-")
            .tempdir()
            .context("failed to make a directory for the context from stdin")?;
        let mut head = Vec::new();
        (&mut input).take(1024).read_to_end(&mut head).context("failed to peek context header from STDIN")?;
        if is_archive(&head) {
            let whole = std::io::Cursor::new(head).chain(input);
            let reader = decompressed(whole).context("failed to read the context archive from stdin")?;
            let ownership = if nix::unistd::geteuid().is_root() { Ownership::FromArchive } else { Ownership::BestEffort };
            extract(reader, dir.path(), &ExtractOptions { whiteouts: WhiteoutMode::Literal, ownership })
                .context("failed to unpack the context archive from stdin")?;
            return Ok(StdinContext { dir, dockerfile: None });
        }
        if dockerfile_flag {
            bail!("ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles");
        }
        let dockerfile = read_dockerfile(std::io::Cursor::new(head).chain(input), dockerfile_limit)?;
        Ok(StdinContext { dir, dockerfile: Some(dockerfile) })
    }
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
    if matches!(detect_compression(head), Compression::Gzip | Compression::Bzip2 | Compression::Xz) {
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
        let context = StdinContext::from_reader(std::io::Cursor::new(tar.clone()), false, 1 << 20).unwrap();
        assert!(context.dockerfile.is_none());
        assert_eq!(std::fs::read_to_string(context.dir.path().join("a/b.txt")).unwrap(), "b\n");

        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, &tar).unwrap();
        let context = StdinContext::from_reader(std::io::Cursor::new(gzip.finish().unwrap()), true, 1 << 20).unwrap();
        assert_eq!(std::fs::read_to_string(context.dir.path().join("Dockerfile")).unwrap(), "FROM scratch\n");

        let context = StdinContext::from_reader(std::io::Cursor::new(b"FROM busybox\nRUN true\n".to_vec()), false, 1 << 20).unwrap();
        assert_eq!(context.dockerfile.as_deref(), Some(&b"FROM busybox\nRUN true\n"[..]));
        assert_eq!(std::fs::read_dir(context.dir.path()).unwrap().count(), 0, "the context is empty");

        let error = StdinContext::from_reader(std::io::Cursor::new(b"FROM x\n".to_vec()), true, 1 << 20).err().unwrap();
        assert_eq!(error.to_string(), "ambiguous Dockerfile source: both stdin and flag correspond to Dockerfiles");
        let error = StdinContext::from_reader(std::io::Cursor::new(vec![b'#'; 5000]), false, 4096).err().unwrap();
        assert!(error.to_string().contains("larger than the limit of 4096 bytes"), "{error}");
    }
}
