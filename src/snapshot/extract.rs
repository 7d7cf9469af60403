//! Safe extraction of tar archives (OCI layers, archives given to `ADD`) into a snapshot
//! directory, plus compression detection by magic bytes.
//!
//! Invariants:
//! - Nothing is written outside the target directory. Names are cleaned lexically: leading
//!   `/`, `.` components and `..` that would climb above the root are dropped (containerd
//!   clamps the same way). A parent directory of an entry is never resolved through a
//!   symlink: an entry whose parent path goes through a symlink is refused with
//!   [`ExtractError::ThroughSymlink`] (archives made by `tar` or by a layer diff never have
//!   such entries; only crafted ones do). The entry itself replaces whatever is at its name,
//!   without following it. Hardlink targets are cleaned the same way and must already exist
//!   inside the directory, reached without symlinks.
//! - Directory modes and mtimes are applied after the whole archive, deepest first, so a
//!   read-only directory can still receive its children and its mtime is not disturbed by
//!   them. Before that, each directory is checked again (not through symlinks).
//! - Per entry the order is: chown, chmod (chown clears setuid bits), xattrs (chown clears
//!   `security.capability`), mtime (atime is set to the mtime, for determinism).
//! - Overlay xattrs (`user.overlay.*`, `trusted.overlay.*`) from an archive are never applied:
//!   an untrusted layer could otherwise steer overlayfs (redirects, origins).
//!
//! Decisions:
//! - The tar stream is read by our own reader (`tar_stream.rs`: headers, PAX records, GNU long
//!   names, entry data), not by `tar::Archive`, which corrupts binary xattr values; this file
//!   only decides what each entry becomes on disk.
//! - In [`WhiteoutMode::ToOverlay`] a whiteout `.wh.<name>` becomes a character device 0/0
//!   (mode 0, owner and mtime from the entry) unless `<name>` already exists: per the OCI
//!   spec a whiteout only hides lower layers, never an entry of its own layer. `.wh..wh..opq`
//!   sets `user.overlay.opaque=y` on its directory (the `userxattr` form rbuild mounts with);
//!   other `.wh..wh.` names (aufs internals) are skipped.
//! - Character and block devices that the kernel refuses to create (EPERM: not root, or in a
//!   user namespace) are skipped and counted, as containerd does in a user namespace.
//! - Xattrs the filesystem refuses (unsupported, not permitted, invalid) are skipped and
//!   counted; an opaque marker that cannot be set is an error, because dropping it would
//!   silently change the image.
//! - Unknown entry types are an error (as in containerd); GNU sparse files are not supported.
//! - [`extract`] reads an uncompressed stream; wrap the reader with [`decompressed`] first.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::layer_tar::{OPAQUE_MARKER, WHITEOUT_PREFIX, is_overlay_xattr};
pub use super::tar_stream::is_tar_header;
use super::tar_stream::{ArchiveEntry, ArchiveReader, BLOCK_SIZE, EntryKind, read_full};

/// The xattr that makes an overlay directory opaque on a `userxattr` mount.
const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The compression a stream to unpack comes in, read from its magic bytes: every format `ADD`
/// and a streamed context accept, bzip2 and xz among them. Not [`crate::oci::Compression`],
/// which is what a layer blob is written in and what its media type names (gzip, zstd or none):
/// no media type names bzip2 or xz, and nothing is ever written in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCompression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The compression of a stream, from its first bytes (6 are enough for every format).
pub fn detect_compression(head: &[u8]) -> StreamCompression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        StreamCompression::Gzip
    } else if head.starts_with(b"BZh") {
        StreamCompression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        StreamCompression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        StreamCompression::Zstd
    } else {
        StreamCompression::None
    }
}

/// Wraps `reader` in the matching decompressor, detected from the first bytes. Multi-member
/// gzip, bzip2 and xz streams and multi-frame zstd streams are read to their end.
pub fn decompressed(mut reader: impl Read + 'static) -> io::Result<Box<dyn Read>> {
    let mut head = [0u8; 6];
    let mut filled = 0;
    while filled < head.len() {
        match reader.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    let compression = detect_compression(&head[..filled]);
    let whole = io::Cursor::new(head[..filled].to_vec()).chain(reader);
    Ok(match compression {
        StreamCompression::None => Box::new(whole),
        StreamCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        StreamCompression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        StreamCompression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(whole)),
        StreamCompression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
    })
}

/// Whether `path` is a tar archive (plain or compressed), judged by content as `ADD` does: a
/// regular file (not a symlink) whose decompressed content starts with a valid tar header.
/// Errors opening the file are returned; content that does not decompress is not an archive.
pub fn is_tar_archive(path: &Path) -> io::Result<bool> {
    if !fs::symlink_metadata(path)?.is_file() {
        return Ok(false);
    }
    let file = File::open(path)?;
    let Ok(mut content) = decompressed(file) else {
        return Ok(false);
    };
    let mut block = [0u8; BLOCK_SIZE];
    if read_full(&mut content, &mut block).is_err() {
        return Ok(false);
    }
    Ok(is_tar_header(&block))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// OCI layer: `.wh.<name>` becomes an overlay whiteout, `.wh..wh..opq` the opaque xattr.
    ToOverlay,
    /// `ADD` of an archive: names are kept literally.
    Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Chown to the archive's uid/gid (as root, or inside a user namespace); failure is an error.
    FromArchive,
    /// Chown everything, implicit parent directories included, to this uid/gid (`ADD --chown`).
    Fixed { uid: u32, gid: u32 },
    /// Try the archive's uid/gid; where the kernel refuses (EPERM, or EINVAL for an id outside
    /// the user namespace) the file stays owned by the extracting user.
    BestEffort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractOptions {
    pub whiteouts: WhiteoutMode,
    pub ownership: Ownership,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    /// Archive entries processed (PAX and GNU extension headers not counted).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Device nodes the kernel did not allow to create.
    pub skipped_devices: u64,
    /// Xattrs the filesystem refused.
    pub skipped_xattrs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("failed to read archive")]
    ReadArchive(#[source] io::Error),
    #[error("archive is truncated")]
    Truncated,
    #[error("invalid tar header checksum at byte `{offset}`")]
    Checksum { offset: u64 },
    #[error("invalid tar header field `{field}` for entry `{name}`")]
    InvalidHeader { name: String, field: &'static str },
    #[error("tar entry `{name}` has unsupported type `{type_flag}`")]
    UnsupportedType { name: String, type_flag: char },
    #[error("tar extension header of `{size}` bytes is too large")]
    ExtensionTooLarge { size: u64 },
    #[error("refusing tar entry `{name}`: its parent `{symlink}` is a symlink")]
    ThroughSymlink { name: String, symlink: String },
    #[error("refusing tar entry `{name}`: `{parent}` is not a directory")]
    ParentNotDirectory { name: String, parent: String },
    #[error("refusing hardlink `{name}`: target `{target}` is not a file inside the directory")]
    InvalidHardlink { name: String, target: String },
    #[error("failed to {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExtractError + 'a {
    move |source| ExtractError::Io { action, path: path.to_path_buf(), source }
}

fn nix_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> ExtractError + 'a {
    move |errno| ExtractError::Io { action, path: path.to_path_buf(), source: io::Error::from(errno) }
}

/// Extracts the uncompressed tar stream `reader` into `dir` (which must exist) and returns
/// what was done. On error, `dir` holds a partial result that the caller discards.
pub fn extract<R: Read>(reader: R, dir: &Path, options: &ExtractOptions) -> Result<ExtractSummary, ExtractError> {
    let mut archive = ArchiveReader::new(reader);
    let mut extractor = Extractor {
        root: dir.to_path_buf(),
        options: *options,
        summary: ExtractSummary::default(),
        verified_directories: HashSet::new(),
        deferred_directories: BTreeMap::new(),
    };
    while let Some(entry) = archive.next_entry()? {
        extractor.summary.entries += 1;
        extractor.extract_entry(&entry, &mut archive)?;
    }
    extractor.finish_directories()?;
    Ok(extractor.summary)
}

/// Cleans an archive name into components below the root: empty and `.` components are
/// dropped, `..` removes the previous component and is dropped at the root.
fn clean_components(name: &[u8]) -> Vec<&[u8]> {
    let mut components: Vec<&[u8]> = Vec::new();
    for component in name.split(|byte| *byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                components.pop();
            }
            component => components.push(component),
        }
    }
    components
}

fn relative_path(components: &[&[u8]]) -> PathBuf {
    let mut path = PathBuf::new();
    for component in components {
        path.push(std::ffi::OsStr::from_bytes(component));
    }
    path
}

struct DeferredDirectory {
    mode: u32,
    mtime: i64,
}

struct Extractor {
    root: PathBuf,
    options: ExtractOptions,
    summary: ExtractSummary,
    /// Relative paths known to be real directories (not symlinks) below the root. Cleared
    /// whenever anything is removed, since a removal may invalidate any of them.
    verified_directories: HashSet<PathBuf>,
    /// Directories whose mode and mtime are applied at the end, by relative path.
    deferred_directories: BTreeMap<PathBuf, DeferredDirectory>,
}

fn set_mtime(path: &Path, mtime: i64) -> Result<(), ExtractError> {
    let time = TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink).map_err(nix_error("set mtime of", path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ExtractError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error("set mode of", path))
}

impl Extractor {
    /// Ensures every parent directory of `components` exists as a real directory (creating
    /// missing ones) and returns the absolute parent path.
    fn prepare_parents(&mut self, components: &[&[u8]], entry: &ArchiveEntry) -> Result<PathBuf, ExtractError> {
        let mut relative = PathBuf::new();
        let parents = &components[..components.len().saturating_sub(1)];
        for component in parents {
            relative.push(std::ffi::OsStr::from_bytes(component));
            if self.verified_directories.contains(&relative) {
                continue;
            }
            let absolute = self.root.join(&relative);
            match fs::symlink_metadata(&absolute) {
                Ok(metadata) if metadata.is_dir() => {}
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    return Err(ExtractError::ThroughSymlink { name: entry.display_name(), symlink: relative.display().to_string() });
                }
                Ok(_) => {
                    return Err(ExtractError::ParentNotDirectory { name: entry.display_name(), parent: relative.display().to_string() });
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(0o755).create(&absolute).map_err(io_error("create directory", &absolute))?;
                    // Independent of the umask, so a rewritten layer does not depend on it.
                    set_mode(&absolute, 0o755)?;
                    if let Ownership::Fixed { uid, gid } = self.options.ownership {
                        std::os::unix::fs::lchown(&absolute, Some(uid), Some(gid)).map_err(io_error("change owner of", &absolute))?;
                    }
                }
                Err(error) => return Err(io_error("inspect", &absolute)(error)),
            }
            self.verified_directories.insert(relative.clone());
        }
        Ok(self.root.join(&relative))
    }

    /// Removes whatever is at `path` (without following it); a directory goes with its
    /// contents.
    fn remove_existing(&mut self, path: &Path, relative: &Path) -> Result<(), ExtractError> {
        let Ok(metadata) = fs::symlink_metadata(path) else {
            return Ok(());
        };
        if metadata.is_dir() {
            // std's remove_dir_all does not follow symlinks inside the tree.
            fs::remove_dir_all(path).map_err(io_error("remove", path))?;
            self.deferred_directories.retain(|deferred, _| !deferred.starts_with(relative));
        } else {
            fs::remove_file(path).map_err(io_error("remove", path))?;
        }
        self.verified_directories.clear();
        Ok(())
    }

    fn extract_entry<R: Read>(&mut self, entry: &ArchiveEntry, archive: &mut ArchiveReader<R>) -> Result<(), ExtractError> {
        let components = clean_components(&entry.name);
        let Some(last) = components.last().copied() else {
            // The root itself: only a directory entry means something (its metadata).
            if entry.kind == EntryKind::Directory {
                let root = self.root.clone();
                self.apply_ownership(&root, entry)?;
                self.apply_xattrs(&root, entry)?;
                self.deferred_directories.insert(PathBuf::new(), DeferredDirectory { mode: entry.mode, mtime: entry.mtime });
            }
            return Ok(());
        };
        let parent = self.prepare_parents(&components, entry)?;
        let relative = relative_path(&components);

        if self.options.whiteouts == WhiteoutMode::ToOverlay && last.starts_with(WHITEOUT_PREFIX) {
            return self.extract_whiteout(entry, &parent, last);
        }

        let path = self.root.join(&relative);
        match entry.kind {
            EntryKind::Directory => {
                match fs::symlink_metadata(&path) {
                    Ok(metadata) if metadata.is_dir() => {}
                    _ => {
                        self.remove_existing(&path, &relative)?;
                        fs::DirBuilder::new().mode(0o700).create(&path).map_err(io_error("create directory", &path))?;
                    }
                }
                self.verified_directories.insert(relative.clone());
                self.apply_ownership(&path, entry)?;
                self.apply_xattrs(&path, entry)?;
                self.deferred_directories.insert(relative, DeferredDirectory { mode: entry.mode, mtime: entry.mtime });
                Ok(())
            }
            EntryKind::Regular => {
                self.remove_existing(&path, &relative)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_error("create", &path))?;
                archive.copy_data(entry.size, &mut file, &path)?;
                drop(file);
                self.summary.bytes += entry.size;
                self.apply_metadata(&path, entry)
            }
            EntryKind::Symlink => {
                self.remove_existing(&path, &relative)?;
                let target = std::ffi::OsStr::from_bytes(&entry.link_name);
                std::os::unix::fs::symlink(target, &path).map_err(io_error("create symlink", &path))?;
                self.apply_metadata(&path, entry)
            }
            EntryKind::HardLink => self.extract_hardlink(entry, &path, &relative),
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                self.remove_existing(&path, &relative)?;
                let kind = match entry.kind {
                    EntryKind::CharDevice => SFlag::S_IFCHR,
                    EntryKind::BlockDevice => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let device = nix::sys::stat::makedev(entry.device_major.into(), entry.device_minor.into());
                match nix::sys::stat::mknod(&path, kind, Mode::from_bits_truncate(0o600), device) {
                    Ok(()) => self.apply_metadata(&path, entry),
                    Err(nix::Error::EPERM) if entry.kind != EntryKind::Fifo => {
                        self.summary.skipped_devices += 1;
                        Ok(())
                    }
                    Err(errno) => Err(nix_error("create device", &path)(errno)),
                }
            }
        }
    }

    fn extract_whiteout(&mut self, entry: &ArchiveEntry, parent: &Path, last: &[u8]) -> Result<(), ExtractError> {
        if last == OPAQUE_MARKER {
            return xattr::set(parent, OPAQUE_XATTR, b"y").map_err(io_error("mark opaque", parent));
        }
        let hidden = &last[WHITEOUT_PREFIX.len()..];
        // `.wh..wh.*` names other than the opaque marker are aufs internals; an empty or
        // dot name hides nothing.
        if hidden.starts_with(WHITEOUT_PREFIX) || matches!(hidden, b"" | b"." | b"..") {
            return Ok(());
        }
        let path = parent.join(std::ffi::OsStr::from_bytes(hidden));
        if fs::symlink_metadata(&path).is_ok() {
            // Created by this same layer: a whiteout hides only lower layers.
            return Ok(());
        }
        nix::sys::stat::mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0).map_err(nix_error("create whiteout", &path))?;
        self.apply_ownership(&path, entry)?;
        set_mtime(&path, entry.mtime)
    }

    fn extract_hardlink(&mut self, entry: &ArchiveEntry, path: &Path, relative: &Path) -> Result<(), ExtractError> {
        let invalid =
            || ExtractError::InvalidHardlink { name: entry.display_name(), target: String::from_utf8_lossy(&entry.link_name).into_owned() };
        let target_components = clean_components(&entry.link_name);
        if target_components.is_empty() {
            return Err(invalid());
        }
        // The target's parents must be real directories: a link through a symlink could
        // reach a file outside the root.
        let mut target = self.root.clone();
        for component in &target_components[..target_components.len() - 1] {
            target.push(std::ffi::OsStr::from_bytes(component));
            match fs::symlink_metadata(&target) {
                Ok(metadata) if metadata.is_dir() => {}
                _ => return Err(invalid()),
            }
        }
        target.push(std::ffi::OsStr::from_bytes(target_components[target_components.len() - 1]));
        let target_metadata = match fs::symlink_metadata(&target) {
            Ok(metadata) if !metadata.is_dir() => metadata,
            _ => return Err(invalid()),
        };
        if let Ok(existing) = fs::symlink_metadata(path)
            && existing.dev() == target_metadata.dev()
            && existing.ino() == target_metadata.ino()
        {
            return Ok(());
        }
        self.remove_existing(path, relative)?;
        // link(2) does not follow a symlink target: the link names the symlink itself.
        fs::hard_link(&target, path).map_err(io_error("create hardlink", path))
    }

    /// Ownership, mode, xattrs and mtime of a non-directory just created at `path`.
    fn apply_metadata(&mut self, path: &Path, entry: &ArchiveEntry) -> Result<(), ExtractError> {
        self.apply_ownership(path, entry)?;
        if entry.kind != EntryKind::Symlink {
            set_mode(path, entry.mode)?;
        }
        self.apply_xattrs(path, entry)?;
        set_mtime(path, entry.mtime)
    }

    fn apply_ownership(&self, path: &Path, entry: &ArchiveEntry) -> Result<(), ExtractError> {
        let archive_ids = || -> Result<(u32, u32), ExtractError> {
            let invalid = |field| ExtractError::InvalidHeader { name: entry.display_name(), field };
            Ok((u32::try_from(entry.uid).map_err(|_| invalid("uid"))?, u32::try_from(entry.gid).map_err(|_| invalid("gid"))?))
        };
        let (uid, gid) = match self.options.ownership {
            Ownership::Fixed { uid, gid } => (uid, gid),
            Ownership::FromArchive | Ownership::BestEffort => archive_ids()?,
        };
        match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            Ok(()) => Ok(()),
            Err(error)
                if self.options.ownership == Ownership::BestEffort && matches!(error.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) =>
            {
                Ok(())
            }
            Err(error) => Err(io_error("change owner of", path)(error)),
        }
    }

    fn apply_xattrs(&mut self, path: &Path, entry: &ArchiveEntry) -> Result<(), ExtractError> {
        for (name, value) in &entry.xattrs {
            if is_overlay_xattr(name) {
                continue;
            }
            match xattr::set(path, std::ffi::OsStr::from_bytes(name), value) {
                Ok(()) => {}
                Err(error)
                    if matches!(
                        error.raw_os_error(),
                        Some(libc::ENOTSUP | libc::EPERM | libc::EACCES | libc::EINVAL | libc::ERANGE | libc::E2BIG)
                    ) =>
                {
                    self.summary.skipped_xattrs += 1;
                }
                Err(error) => return Err(io_error("set xattr on", path)(error)),
            }
        }
        Ok(())
    }

    /// Applies deferred directory modes and mtimes, children before parents, to directories
    /// still reachable without symlinks.
    fn finish_directories(&mut self) -> Result<(), ExtractError> {
        let deferred = std::mem::take(&mut self.deferred_directories);
        for (relative, directory) in deferred.iter().rev() {
            if !self.is_real_directory(relative) {
                continue;
            }
            let path = self.root.join(relative);
            set_mode(&path, directory.mode)?;
            set_mtime(&path, directory.mtime)?;
        }
        Ok(())
    }

    fn is_real_directory(&self, relative: &Path) -> bool {
        let mut path = self.root.clone();
        for component in relative.components() {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.is_dir() => {}
                _ => return false,
            }
        }
        true
    }
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
