//! Writes a deterministic OCI layer tar from a snapshot directory in overlay format (a whiteout
//! is a character device 0/0, an opaque directory carries `user.overlay.opaque` or
//! `trusted.overlay.opaque` = `y`), and computes its diff id while writing.
//!
//! Invariants:
//! - The same tree gives the same bytes. Entry order is a depth-first walk with the entries of
//!   each directory sorted by the bytes of their tar names (the order of GNU `tar --sort=name`
//!   and of BuildKit's walk), so a directory always comes before its children. Only numeric
//!   owners are written (no user or group names), times are whole seconds, PAX records carry no
//!   atime or ctime and are sorted by key.
//! - A whiteout becomes an empty regular file `.wh.<name>` (mode 0600, owner and mtime of the
//!   device, as moby writes it) and is sorted under that name. An opaque directory is followed
//!   at once by `<dir>/.wh..wh..opq` (directory's owner, permission bits and mtime), before its
//!   children, as moby writes it.
//! - The second and later paths of one inode (in walk order) are hardlink entries to the first;
//!   xattrs are written once, on the first path. Directories are never hardlinks.
//! - Overlay xattrs (`user.overlay.*`, `trusted.overlay.*`) are never written: they describe the
//!   snapshot's on-disk format, not the image.
//!
//! Decisions:
//! - Headers are USTAR with PAX extended headers only where USTAR cannot hold a value (long
//!   name or link name, xattrs, large ids or sizes, negative mtimes); names that fit are split
//!   into USTAR prefix and name as Go's `archive/tar` does. The stream is written by hand from
//!   `tar::Header` blocks rather than through `tar::Builder`, whose path helpers drop the
//!   trailing `/` of directory names and fall back to GNU long-name entries.
//! - Sockets cannot be represented in a tar and are skipped (Go's `archive/tar` refuses them).
//! - Mtimes newer than `clamp_mtime` are clamped (BuildKit's `rewrite-timestamp`); older ones
//!   are kept, so clamping never makes a tree newer.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::tar_stream::{COPY_BUFFER, CopyFailure, EntryKind, copy_content};
use crate::oci::root_path::open_beneath;
use crate::oci::stage_cpu::{self, Measured, Stage, measure};
use crate::oci::{DiffId, Hashing};

/// Name of the marker entry that makes a directory opaque in an OCI layer.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of a whiteout entry in an OCI layer.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Overlay xattrs that mark a directory opaque (`userxattr` mounts use the first).
pub const OPAQUE_XATTRS: [&str; 2] = ["user.overlay.opaque", "trusted.overlay.opaque"];

const BLOCK_SIZE: u64 = 512;

/// Xattr (name, value) pairs; names without their `SCHILY.xattr.` prefix.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;
/// Largest value a 12-byte octal header field (size, mtime) holds.
const MAX_OCTAL_12: u64 = 0o77_777_777_777;
/// Largest value an 8-byte octal header field (uid, gid) holds.
const MAX_OCTAL_8: u64 = 0o7_777_777;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerTarOptions {
    /// rewrite-timestamp: mtimes newer than this (seconds since the epoch) are set to it.
    pub clamp_mtime: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerTarSummary {
    /// Tar entries written, PAX extended headers not counted.
    pub entries: u64,
    /// Length of the tar stream in bytes.
    pub bytes: u64,
    /// The sha256 of the uncompressed tar stream.
    pub diff_id: DiffId,
    /// The apparent size of the snapshot directory, as `store::usage::tree_size` counts it
    /// (every file, directory and link, each inode once, the directory itself too), found by
    /// the same walk.
    pub apparent_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerTarError {
    #[error("failed to read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write layer tar")]
    Write(#[source] io::Error),
    #[error("file `{path}` changed size while it was archived")]
    SizeChanged { path: PathBuf },
}

/// Writes the layer tar of the snapshot `dir` to `out` and returns its summary. `out` is not
/// flushed beyond what the writes themselves do; the caller owns buffering and fsync. Its CPU
/// and bytes count in the tar stage of `oci::stage_cpu`, whoever writes it.
pub fn write_layer_tar<W: Write>(dir: &Path, out: W, options: &LayerTarOptions) -> Result<LayerTarSummary, LayerTarError> {
    let mut hashing = Hashing::sha256(out);
    let tree = measure(Stage::Tar, || write_tree(dir, &mut hashing, options))?;
    let (_, digest, bytes) = hashing.finish();
    Ok(tree.summary(bytes, DiffId::new(digest)))
}

/// As [`write_layer_tar`], to an `out` that takes the stream's sha256 itself: the one pass hashes
/// on its writer thread, beside the compression, where the tar's thread had the most to do.
/// [`TarredTree::summary`] makes the summary with the length and digest `out` found.
pub(crate) fn write_layer_tar_unhashed<W: Write>(dir: &Path, out: W, options: &LayerTarOptions) -> Result<TarredTree, LayerTarError> {
    measure(Stage::Tar, || write_tree(dir, out, options))
}

/// What writing a layer tar found of the tree, beside the stream's length and digest.
#[derive(Debug)]
pub(crate) struct TarredTree {
    entries: u64,
    apparent_size: u64,
}

impl TarredTree {
    /// The summary of the tar stream of `bytes` bytes whose sha256 is `diff_id`.
    pub(crate) fn summary(self, bytes: u64, diff_id: DiffId) -> LayerTarSummary {
        stage_cpu::add_tar_bytes(bytes);
        LayerTarSummary { entries: self.entries, bytes, diff_id, apparent_size: self.apparent_size }
    }
}

fn write_tree<W: Write>(dir: &Path, out: W, options: &LayerTarOptions) -> Result<TarredTree, LayerTarError> {
    let mut writer = LayerWriter {
        out,
        clamp_mtime: options.clamp_mtime,
        first_paths: HashMap::new(),
        entries: 0,
        buffer: vec![0; COPY_BUFFER],
        apparent_size: fs::symlink_metadata(dir).map_err(|source| LayerTarError::Read { path: dir.to_path_buf(), source })?.len(),
    };
    writer.write_directory(dir, &[])?;
    // Two zero blocks end a tar archive.
    writer.out.write_all(&[0; 2 * BLOCK_SIZE as usize]).map_err(LayerTarError::Write)?;
    Ok(TarredTree { entries: writer.entries, apparent_size: writer.apparent_size })
}

/// Whether the snapshot `dir` has nothing in it, so its layer would add nothing (BuildKit
/// skips such layers when the instruction allows it).
pub fn is_empty_layer(dir: &Path) -> Result<bool, LayerTarError> {
    let mut entries = fs::read_dir(dir).map_err(|source| LayerTarError::Read { path: dir.to_path_buf(), source })?;
    Ok(entries.next().is_none())
}

struct Child {
    file_name: OsString,
    /// Name of the entry in the tar (the whiteout name for a whiteout device).
    tar_component: Vec<u8>,
    metadata: Metadata,
}

impl EntryKind {
    fn type_flag(self) -> u8 {
        match self {
            EntryKind::Regular => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::CharDevice => b'3',
            EntryKind::BlockDevice => b'4',
            EntryKind::Directory => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// Everything one tar entry says about a file, before it is encoded.
struct EntryHeader<'a> {
    name: &'a [u8],
    kind: EntryKind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    link_name: &'a [u8],
    device: (u64, u64),
    xattrs: Xattrs,
}

struct LayerWriter<W> {
    out: W,
    clamp_mtime: Option<i64>,
    /// Tar name of the first path seen for each multiply linked inode, by (device, inode).
    first_paths: HashMap<(u64, u64), Vec<u8>>,
    entries: u64,
    /// What file contents are copied through.
    buffer: Vec<u8>,
    /// [`LayerTarSummary::apparent_size`] so far.
    apparent_size: u64,
}

fn is_whiteout(metadata: &Metadata) -> bool {
    metadata.file_type().is_char_device() && metadata.rdev() == 0
}

impl<W: Write> LayerWriter<W> {
    fn write_directory(&mut self, disk_dir: &Path, tar_prefix: &[u8]) -> Result<(), LayerTarError> {
        let read_error = |source| LayerTarError::Read { path: disk_dir.to_path_buf(), source };
        let mut children = Vec::new();
        // Children are looked at and opened relative to the directory (one path walk for all).
        let directory = fs::File::open(disk_dir).map_err(read_error)?;
        for dir_entry in fs::read_dir(disk_dir).map_err(read_error)? {
            let dir_entry = dir_entry.map_err(read_error)?;
            // `lstat` of the entry, relative to the listed directory.
            let metadata = dir_entry.metadata().map_err(|source| LayerTarError::Read { path: dir_entry.path(), source })?;
            let file_name = dir_entry.file_name();
            let tar_component =
                if is_whiteout(&metadata) { [WHITEOUT_PREFIX, file_name.as_bytes()].concat() } else { file_name.as_bytes().to_vec() };
            children.push(Child { file_name, tar_component, metadata });
        }
        children.sort_by(|left, right| left.tar_component.cmp(&right.tar_component));

        for child in children {
            // Each inode once: a non-directory with more links counts where it is first met.
            let counted_before = child.metadata.nlink() > 1
                && !child.metadata.is_dir()
                && self.first_paths.contains_key(&(child.metadata.dev(), child.metadata.ino()));
            if !counted_before {
                self.apparent_size += child.metadata.len();
            }
            let path = disk_dir.join(&child.file_name);
            let mut name = [tar_prefix, &child.tar_component].concat();
            let file_type = child.metadata.file_type();
            if file_type.is_dir() {
                name.push(b'/');
                let (xattrs, opaque) = read_xattrs(&path)?;
                self.write_entry(None, &path, &child.metadata, &name, EntryKind::Directory, &[], xattrs)?;
                if opaque {
                    let marker = [name.as_slice(), OPAQUE_MARKER].concat();
                    let header = EntryHeader {
                        name: &marker,
                        kind: EntryKind::Regular,
                        mode: child.metadata.mode() & 0o777,
                        uid: child.metadata.uid().into(),
                        gid: child.metadata.gid().into(),
                        mtime: self.clamped(child.metadata.mtime()),
                        size: 0,
                        link_name: &[],
                        device: (0, 0),
                        xattrs: Vec::new(),
                    };
                    self.append(&header, None)?;
                }
                self.write_directory(&path, &name)?;
            } else if is_whiteout(&child.metadata) {
                let header = EntryHeader {
                    name: &name,
                    kind: EntryKind::Regular,
                    mode: 0o600,
                    uid: child.metadata.uid().into(),
                    gid: child.metadata.gid().into(),
                    mtime: self.clamped(child.metadata.mtime()),
                    size: 0,
                    link_name: &[],
                    device: (0, 0),
                    xattrs: Vec::new(),
                };
                self.append(&header, None)?;
            } else if file_type.is_socket() {
                continue;
            } else {
                self.write_non_directory(&directory, &child.file_name, &path, &child.metadata, &name)?;
            }
        }
        Ok(())
    }

    /// Writes `file_name` of `directory` (at `path`), which is no directory.
    fn write_non_directory(
        &mut self,
        directory: &File,
        file_name: &OsStr,
        path: &Path,
        metadata: &Metadata,
        name: &[u8],
    ) -> Result<(), LayerTarError> {
        if metadata.nlink() > 1 {
            let inode = (metadata.dev(), metadata.ino());
            if let Some(first) = self.first_paths.get(&inode) {
                let first = first.clone();
                return self.write_entry(None, path, metadata, name, EntryKind::HardLink, &first, Vec::new());
            }
            self.first_paths.insert(inode, name.to_vec());
        }
        let file_type = metadata.file_type();
        if file_type.is_file() && metadata.len() > 0 {
            // Opened once, for its xattrs and its bytes; never through a symlink.
            let file = open_at(directory, file_name, path)?;
            let (xattrs, _) = xattrs_of(path, xattr::FileExt::list_xattr(&file), |name| xattr::FileExt::get_xattr(&file, name))?;
            return self.write_entry(Some(file), path, metadata, name, EntryKind::Regular, &[], xattrs);
        }
        let (xattrs, _) = read_xattrs(path)?;
        if file_type.is_symlink() {
            let target = fs::read_link(path).map_err(|source| LayerTarError::Read { path: path.to_path_buf(), source })?;
            self.write_entry(None, path, metadata, name, EntryKind::Symlink, target.as_os_str().as_bytes(), xattrs)
        } else if file_type.is_char_device() {
            self.write_entry(None, path, metadata, name, EntryKind::CharDevice, &[], xattrs)
        } else if file_type.is_block_device() {
            self.write_entry(None, path, metadata, name, EntryKind::BlockDevice, &[], xattrs)
        } else if file_type.is_fifo() {
            self.write_entry(None, path, metadata, name, EntryKind::Fifo, &[], xattrs)
        } else {
            // An empty regular file: no bytes to read, so it is not opened.
            self.write_entry(None, path, metadata, name, EntryKind::Regular, &[], xattrs)
        }
    }

    fn clamped(&self, mtime: i64) -> i64 {
        match self.clamp_mtime {
            Some(limit) if mtime > limit => limit,
            _ => mtime,
        }
    }

    /// `file`: a regular file's content, opened by the caller (a regular file with content
    /// always comes with it).
    #[allow(clippy::too_many_arguments)]
    fn write_entry(
        &mut self,
        file: Option<File>,
        path: &Path,
        metadata: &Metadata,
        name: &[u8],
        kind: EntryKind,
        link_name: &[u8],
        xattrs: Xattrs,
    ) -> Result<(), LayerTarError> {
        let device = if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            let device = metadata.rdev();
            (u64::from(libc::major(device)), u64::from(libc::minor(device)))
        } else {
            (0, 0)
        };
        let size = if kind == EntryKind::Regular { metadata.len() } else { 0 };
        let header = EntryHeader {
            name,
            kind,
            mode: metadata.mode() & 0o7777,
            uid: metadata.uid().into(),
            gid: metadata.gid().into(),
            mtime: self.clamped(metadata.mtime()),
            size,
            link_name,
            device,
            xattrs,
        };
        self.append(&header, file.map(|file| (file, path)))
    }

    fn append(&mut self, entry: &EntryHeader<'_>, data: Option<(File, &Path)>) -> Result<(), LayerTarError> {
        let mut header = tar::Header::new_ustar();
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();

        if !set_ustar_name(&mut header, entry.name) {
            records.push((b"path".to_vec(), entry.name.to_vec()));
        }
        if entry.link_name.len() > 100 {
            records.push((b"linkpath".to_vec(), entry.link_name.to_vec()));
            header.as_old_mut().linkname.copy_from_slice(&entry.link_name[..100]);
        } else {
            header.as_old_mut().linkname[..entry.link_name.len()].copy_from_slice(entry.link_name);
        }
        if entry.uid > MAX_OCTAL_8 {
            records.push((b"uid".to_vec(), entry.uid.to_string().into_bytes()));
        }
        if entry.gid > MAX_OCTAL_8 {
            records.push((b"gid".to_vec(), entry.gid.to_string().into_bytes()));
        }
        if entry.size > MAX_OCTAL_12 {
            records.push((b"size".to_vec(), entry.size.to_string().into_bytes()));
        }
        let mtime = u64::try_from(entry.mtime).unwrap_or(0);
        if entry.mtime < 0 || mtime > MAX_OCTAL_12 {
            records.push((b"mtime".to_vec(), entry.mtime.to_string().into_bytes()));
        }
        for (key, value) in &entry.xattrs {
            records.push(([b"SCHILY.xattr.".as_slice(), key].concat(), value.clone()));
        }

        header.set_entry_type(tar::EntryType::new(entry.kind.type_flag()));
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_size(entry.size);
        header.set_mtime(mtime);
        // USTAR device fields are 8 octal bytes; larger numbers need PAX, which no reader we
        // target understands for devices, so such nodes keep the truncated number.
        header.set_device_major(u32::try_from(entry.device.0).unwrap_or(u32::MAX)).map_err(LayerTarError::Write)?;
        header.set_device_minor(u32::try_from(entry.device.1).unwrap_or(u32::MAX)).map_err(LayerTarError::Write)?;
        header.set_cksum();

        if !records.is_empty() {
            self.write_pax_header(entry.name, records)?;
        }
        self.out.write_all(header.as_bytes()).map_err(LayerTarError::Write)?;
        if let Some((file, path)) = data {
            self.copy_content(file, path, entry.size)?;
            self.pad(entry.size)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Copies exactly `size` bytes of `file`: the header already promised that many.
    fn copy_content(&mut self, file: File, path: &Path, size: u64) -> Result<(), LayerTarError> {
        let file = Measured { inner: file, stage: Stage::Read };
        let copied = copy_content(file, &mut self.out, size, &mut self.buffer).map_err(|failure| match failure {
            CopyFailure::Read(source) => LayerTarError::Read { path: path.to_path_buf(), source },
            CopyFailure::Write(error) => LayerTarError::Write(error),
        })?;
        if copied != size {
            return Err(LayerTarError::SizeChanged { path: path.to_path_buf() });
        }
        Ok(())
    }

    fn write_pax_header(&mut self, name: &[u8], mut records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), LayerTarError> {
        records.sort();
        let mut data = Vec::new();
        for (key, value) in &records {
            // A record is "<length> <key>=<value>\n" where the length counts its own digits.
            let rest = key.len() + value.len() + 3;
            let mut length = rest + 1;
            while rest + length.to_string().len() != length {
                length = rest + length.to_string().len();
            }
            data.extend_from_slice(length.to_string().as_bytes());
            data.push(b' ');
            data.extend_from_slice(key);
            data.push(b'=');
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        // Go's archive/tar names the extended header `<dir>/PaxHeaders.0/<base>`, mode, owner
        // and mtime zero; readers ignore the name, any fixed choice keeps the output stable.
        let trimmed = name.strip_suffix(b"/").unwrap_or(name);
        let (directory, base) = match trimmed.iter().rposition(|byte| *byte == b'/') {
            Some(index) => (&trimmed[..=index], &trimmed[index + 1..]),
            None => (&trimmed[..0], trimmed),
        };
        let pax_name = [directory, b"PaxHeaders.0/", base].concat();
        let mut header = tar::Header::new_ustar();
        let length = pax_name.len().min(100);
        header.as_old_mut().name[..length].copy_from_slice(&pax_name[..length]);
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.out.write_all(header.as_bytes()).map_err(LayerTarError::Write)?;
        self.out.write_all(&data).map_err(LayerTarError::Write)?;
        self.pad(data.len() as u64)
    }

    fn pad(&mut self, size: u64) -> Result<(), LayerTarError> {
        let remainder = (size % BLOCK_SIZE) as usize;
        if remainder != 0 {
            let zeros = [0u8; BLOCK_SIZE as usize];
            self.out.write_all(&zeros[remainder..]).map_err(LayerTarError::Write)?;
        }
        Ok(())
    }
}

/// Puts `name` in the USTAR name (and prefix) fields; false when it does not fit, in which
/// case the name field holds its first 100 bytes and a PAX `path` record is needed.
fn set_ustar_name(header: &mut tar::Header, name: &[u8]) -> bool {
    let Some(ustar) = header.as_ustar_mut() else {
        return false;
    };
    if name.len() <= ustar.name.len() {
        ustar.name[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at the last `/` that leaves a prefix of at most 155 bytes, as Go does.
    let search_end = name.len().min(ustar.prefix.len() + 1);
    if let Some(index) = name[..search_end].iter().rposition(|byte| *byte == b'/') {
        let (prefix, rest) = (&name[..index], &name[index + 1..]);
        if !prefix.is_empty() && !rest.is_empty() && rest.len() <= ustar.name.len() {
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
            ustar.name[..rest.len()].copy_from_slice(rest);
            return true;
        }
    }
    let length = ustar.name.len();
    ustar.name.copy_from_slice(&name[..length]);
    false
}

/// The xattrs of `path` (not following a symlink) that belong in the layer, sorted by name,
/// and whether an overlay opaque xattr marks it. A filesystem without xattrs has none.
fn read_xattrs(path: &Path) -> Result<(Xattrs, bool), LayerTarError> {
    xattrs_of(path, xattr::list(path), |name| xattr::get(path, name))
}

/// `name` of `directory`, opened for reading without following a symlink.
fn open_at(directory: &File, name: &OsStr, path: &Path) -> Result<File, LayerTarError> {
    open_beneath(directory, Path::new(name)).map_err(|source| LayerTarError::Read { path: path.to_path_buf(), source })
}

/// [`read_xattrs`] from the listed names and a reader of values (by path or by descriptor).
fn xattrs_of(
    path: &Path,
    listed: io::Result<xattr::XAttrs>,
    get: impl Fn(&OsStr) -> io::Result<Option<Vec<u8>>>,
) -> Result<(Xattrs, bool), LayerTarError> {
    let read_error = |source| LayerTarError::Read { path: path.to_path_buf(), source };
    let names = match listed {
        Ok(names) => names,
        Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => {
            return Ok((Vec::new(), false));
        }
        Err(error) => return Err(read_error(error)),
    };
    let mut xattrs = Vec::new();
    let mut opaque = false;
    for name in names {
        // `None`: removed between list and get, nothing to write.
        let Some(value) = get(&name).map_err(read_error)? else {
            continue;
        };
        let name = name.as_bytes();
        if OPAQUE_XATTRS.iter().any(|opaque_name| name == opaque_name.as_bytes()) {
            opaque |= value == b"y";
        } else if !is_overlay_xattr(name) {
            xattrs.push((name.to_vec(), value));
        }
    }
    xattrs.sort();
    Ok((xattrs, opaque))
}

/// Whether an xattr describes the overlay format rather than the file.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay.")
}

#[cfg(test)]
#[path = "layer_tar_tests.rs"]
mod tests;
