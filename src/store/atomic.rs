//! The one way rbuild writes a file that someone may read while it is being written, or after a
//! crash: whole or not at all. Every writer of such files uses it (the exporter's archives and
//! layouts, `--iidfile`, `--metadata-file`, cache layouts, the state root's own small files);
//! `clippy.toml` keeps `std::fs::write` and `File::create` out of the modules that need it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `path` whole or not at all: into a temporary file beside it (the parent must exist),
/// synced, renamed into place, and made an ordinary 0644 file (a tempfile is created 0600). A
/// failure leaves `path` as it was and no temporary file.
pub fn replace_file(path: &Path, write: &mut dyn FnMut(&mut fs::File) -> io::Result<()>) -> io::Result<()> {
    replace(path, true, write)
}

/// [`replace_file`] for an output the user asked for (an archive, a layout's files): whole or not
/// at all for every reader, but not synced, its bytes left to the kernel's writeback. BuildKit's
/// client writes an archive that way (`O_TRUNC`, neither synced nor renamed, measured with the
/// oracle); syncing a 268 MB archive cost rbuild's no-op rebuild 40 to 60 ms. A crash right after
/// the build may leave such a file short; the state root's own files are always synced.
pub fn replace_output_file(path: &Path, write: &mut dyn FnMut(&mut fs::File) -> io::Result<()>) -> io::Result<()> {
    replace(path, false, write)
}

fn replace(path: &Path, synced: bool, write: &mut dyn FnMut(&mut fs::File) -> io::Result<()>) -> io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let mut temporary = tempfile::Builder::new().prefix(".rbuild-").tempfile_in(&parent)?;
    write(temporary.as_file_mut())?;
    if synced {
        temporary.as_file().sync_all()?;
    }
    temporary.persist(path).map_err(|error| error.error)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

/// [`replace_file`] with these bytes.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, &mut |file| file.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("id");
        write_file(&path, b"old").unwrap();
        let failed = replace_file(&path, &mut |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("disk on fire"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(directory.path()).unwrap().count(), 1, "a temporary file was left");
        write_file(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
