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
//! - The tar stream is parsed here (headers decoded with `tar::Header`) instead of with
//!   `tar::Archive`: the crate splits PAX records at newlines, which corrupts binary xattr
//!   values such as `security.capability`. Header-only types (links, devices, directories,
//!   fifos) carry no data whatever their size field says, as in Go's `archive/tar`.
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

const BLOCK_SIZE: usize = 512;
/// Largest PAX or GNU long-name block accepted; Go's `archive/tar` allows 1 MiB, xattrs may
/// need more.
const MAX_EXTENSION_SIZE: u64 = 8 << 20;
/// The xattr that makes an overlay directory opaque on a `userxattr` mount.
const OPAQUE_XATTR: &str = "user.overlay.opaque";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The compression of a stream, from its first bytes (6 are enough for every format).
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
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
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
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
    Ok(!is_zero_block(&block) && checksum_matches(&block))
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

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ExtractError + 'a {
    move |source| ExtractError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn nix_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(nix::Error) -> ExtractError + 'a {
    move |errno| ExtractError::Io {
        action,
        path: path.to_path_buf(),
        source: io::Error::from(errno),
    }
}

/// Extracts the uncompressed tar stream `reader` into `dir` (which must exist) and returns
/// what was done. On error, `dir` holds a partial result that the caller discards.
pub fn extract<R: Read>(
    reader: R,
    dir: &Path,
    options: &ExtractOptions,
) -> Result<ExtractSummary, ExtractError> {
    let mut archive = ArchiveReader {
        reader,
        offset: 0,
        pending: 0,
    };
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// One archive entry with its PAX and GNU extensions applied.
struct ArchiveEntry {
    name: Vec<u8>,
    link_name: Vec<u8>,
    kind: EntryKind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    size: u64,
    device_major: u32,
    device_minor: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ArchiveEntry {
    fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

struct ArchiveReader<R> {
    reader: R,
    offset: u64,
    /// Bytes of the current entry's data and padding not yet consumed.
    pending: u64,
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    if filled == 0 || filled == buffer.len() {
        Ok(filled)
    } else {
        Err(io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

fn is_zero_block(block: &[u8; BLOCK_SIZE]) -> bool {
    block.iter().all(|byte| *byte == 0)
}

/// The header checksum, computed unsigned or signed (old writers), with the checksum field
/// counted as spaces.
fn checksum_matches(block: &[u8; BLOCK_SIZE]) -> bool {
    let header = tar::Header::from_byte_slice(block);
    let Ok(recorded) = header.cksum() else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (index, byte) in block.iter().enumerate() {
        let byte = if (148..156).contains(&index) {
            b' '
        } else {
            *byte
        };
        unsigned += u32::from(byte);
        signed += i64::from(byte as i8);
    }
    recorded == unsigned || i64::from(recorded) == signed
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64) * BLOCK_SIZE as u64
}

/// Parses PAX records (`<length> <key>=<value>\n`), honouring each record's length so values
/// may hold any byte, newlines included.
fn parse_pax_records(mut data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut records = Vec::new();
    while let Some(space) = data.iter().position(|byte| *byte == b' ') {
        let Some(length) = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
        else {
            break;
        };
        if length <= space + 1 || length > data.len() || data[length - 1] != b'\n' {
            break;
        }
        let record = &data[space + 1..length - 1];
        if let Some(equals) = record.iter().position(|byte| *byte == b'=') {
            records.push((record[..equals].to_vec(), record[equals + 1..].to_vec()));
        }
        data = &data[length..];
    }
    records
}

/// Seconds of a PAX time (`1234`, `1234.5`, `-1.5`), rounded down.
fn parse_pax_time(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = whole.parse().ok()?;
    let has_fraction = fraction.bytes().any(|digit| digit != b'0');
    Some(if whole.starts_with('-') && has_fraction {
        seconds - 1
    } else {
        seconds
    })
}

/// A numeric header field: octal text (surrounded by spaces or NULs; empty means 0) or, with
/// the high bit of the first byte set, big-endian base-256 (negative when the first byte is
/// 0xff), as Go's archive/tar reads them.
fn parse_numeric(field: &[u8]) -> Option<i64> {
    if let Some(first) = field.first().filter(|first| **first & 0x80 != 0) {
        let negative = *first == 0xff;
        let mut value: i64 = if negative {
            -1
        } else {
            i64::from(*first & 0x7f)
        };
        for byte in &field[1..] {
            value = value.checked_mul(256)? | i64::from(*byte);
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|character| character == ' ' || character == '\0');
    let text = text.split('\0').next().unwrap_or("");
    if text.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(text, 8).ok()
}

fn trim_nul(bytes: &[u8]) -> Vec<u8> {
    let end = bytes
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

impl<R: Read> ArchiveReader<R> {
    fn skip_pending(&mut self) -> Result<(), ExtractError> {
        if self.pending > 0 {
            let skipped = io::copy(&mut (&mut self.reader).take(self.pending), &mut io::sink())
                .map_err(ExtractError::ReadArchive)?;
            self.offset += skipped;
            // Only padding can be missing here (data is checked in `copy_data`): an archive that
            // ends right after its last file's data (umoci's `insert` writes such layers) is
            // accepted, as Go's archive/tar accepts it; the next header read then sees the end.
            self.pending = 0;
        }
        Ok(())
    }

    /// Reads the data of an extension header (PAX or GNU long name) whole.
    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>, ExtractError> {
        if size > MAX_EXTENSION_SIZE {
            return Err(ExtractError::ExtensionTooLarge { size });
        }
        let mut data = vec![0u8; padded(size) as usize];
        let read = read_full(&mut self.reader, &mut data).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => ExtractError::Truncated,
            _ => ExtractError::ReadArchive(error),
        })?;
        if read != data.len() {
            return Err(ExtractError::Truncated);
        }
        self.offset += read as u64;
        data.truncate(size as usize);
        Ok(data)
    }

    /// Copies the current entry's data to `out`, then consumes its padding.
    fn copy_data(
        &mut self,
        size: u64,
        out: &mut impl io::Write,
        path: &Path,
    ) -> Result<(), ExtractError> {
        let mut content = (&mut self.reader).take(size);
        let mut buffer = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        loop {
            let count = match content.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(ExtractError::ReadArchive(error)),
            };
            out.write_all(&buffer[..count])
                .map_err(io_error("write", path))?;
            copied += count as u64;
        }
        self.offset += copied;
        self.pending -= copied;
        if copied != size {
            return Err(ExtractError::Truncated);
        }
        self.skip_pending()
    }

    fn next_entry(&mut self) -> Result<Option<ArchiveEntry>, ExtractError> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link_name: Option<Vec<u8>> = None;
        loop {
            self.skip_pending()?;
            let mut block = [0u8; BLOCK_SIZE];
            let header_offset = self.offset;
            let read =
                read_full(&mut self.reader, &mut block).map_err(|error| match error.kind() {
                    io::ErrorKind::UnexpectedEof => ExtractError::Truncated,
                    _ => ExtractError::ReadArchive(error),
                })?;
            self.offset += read as u64;
            // A missing end-of-archive marker is tolerated, as GNU tar and Go do.
            if read == 0 || is_zero_block(&block) {
                return Ok(None);
            }
            if !checksum_matches(&block) {
                return Err(ExtractError::Checksum {
                    offset: header_offset,
                });
            }
            let header = tar::Header::from_byte_slice(&block);
            let type_flag = header.entry_type().as_byte();
            let header_name = header.path_bytes().into_owned();
            let invalid = |field| ExtractError::InvalidHeader {
                name: String::from_utf8_lossy(&header_name).into_owned(),
                field,
            };
            let numeric = |range: std::ops::Range<usize>, field| {
                parse_numeric(&block[range]).ok_or_else(|| invalid(field))
            };
            let unsigned = |range: std::ops::Range<usize>, field| {
                numeric(range, field)
                    .and_then(|value| u64::try_from(value).map_err(|_| invalid(field)))
            };
            let mut size = unsigned(124..136, "size")?;
            match type_flag {
                b'x' => {
                    let data = self.read_extension(size)?;
                    pax.extend(parse_pax_records(&data));
                    continue;
                }
                b'L' => {
                    long_name = Some(trim_nul(&self.read_extension(size)?));
                    continue;
                }
                b'K' => {
                    long_link_name = Some(trim_nul(&self.read_extension(size)?));
                    continue;
                }
                b'g' => {
                    // Global PAX headers hold archive comments in practice; ignored, as
                    // containerd does.
                    self.read_extension(size)?;
                    continue;
                }
                _ => {}
            }

            let mut name = long_name.take().unwrap_or(header_name.clone());
            let mut link_name = long_link_name.take().unwrap_or_else(|| {
                header
                    .link_name_bytes()
                    .map(|bytes| bytes.into_owned())
                    .unwrap_or_default()
            });
            let mut uid = unsigned(108..116, "uid")?;
            let mut gid = unsigned(116..124, "gid")?;
            let mut mtime = numeric(136..148, "mtime")?;
            let mut xattrs = Vec::new();
            for (key, value) in pax.drain(..) {
                let number = || {
                    std::str::from_utf8(&value)
                        .ok()
                        .and_then(|text| text.parse::<u64>().ok())
                };
                match key.as_slice() {
                    b"path" => name = value,
                    b"linkpath" => link_name = value,
                    b"size" => size = number().ok_or_else(|| invalid("size"))?,
                    b"uid" => uid = number().ok_or_else(|| invalid("uid"))?,
                    b"gid" => gid = number().ok_or_else(|| invalid("gid"))?,
                    b"mtime" => mtime = parse_pax_time(&value).ok_or_else(|| invalid("mtime"))?,
                    _ if key.starts_with(b"SCHILY.xattr.") => {
                        xattrs.push((key[b"SCHILY.xattr.".len()..].to_vec(), value));
                    }
                    _ if key.starts_with(b"GNU.sparse.") => {
                        return Err(ExtractError::UnsupportedType {
                            name: String::from_utf8_lossy(&name).into_owned(),
                            type_flag: 'S',
                        });
                    }
                    _ => {}
                }
            }
            let kind = match type_flag {
                b'0' | b'7' => EntryKind::Regular,
                // Old archives mark directories with a trailing `/` only.
                b'\0' if name.ends_with(b"/") => EntryKind::Directory,
                b'\0' => EntryKind::Regular,
                b'1' => EntryKind::HardLink,
                b'2' => EntryKind::Symlink,
                b'3' => EntryKind::CharDevice,
                b'4' => EntryKind::BlockDevice,
                b'5' => EntryKind::Directory,
                b'6' => EntryKind::Fifo,
                other => {
                    return Err(ExtractError::UnsupportedType {
                        name: String::from_utf8_lossy(&name).into_owned(),
                        type_flag: char::from(other),
                    });
                }
            };
            // Header-only types have no data blocks whatever the size field says, as in Go's
            // archive/tar (which BuildKit uses).
            if kind != EntryKind::Regular {
                size = 0;
            }
            let (device_major, device_minor) =
                if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
                    let major = unsigned(329..337, "devmajor")?;
                    let minor = unsigned(337..345, "devminor")?;
                    (
                        u32::try_from(major).map_err(|_| invalid("devmajor"))?,
                        u32::try_from(minor).map_err(|_| invalid("devminor"))?,
                    )
                } else {
                    (0, 0)
                };
            let mode = (unsigned(100..108, "mode")? & 0o7777) as u32;
            self.pending = padded(size);
            return Ok(Some(ArchiveEntry {
                name,
                link_name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                size,
                device_major,
                device_minor,
                xattrs,
            }));
        }
    }
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
    nix::sys::stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
        .map_err(nix_error("set mtime of", path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ExtractError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_error("set mode of", path))
}

impl Extractor {
    /// Ensures every parent directory of `components` exists as a real directory (creating
    /// missing ones) and returns the absolute parent path.
    fn prepare_parents(
        &mut self,
        components: &[&[u8]],
        entry: &ArchiveEntry,
    ) -> Result<PathBuf, ExtractError> {
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
                    return Err(ExtractError::ThroughSymlink {
                        name: entry.display_name(),
                        symlink: relative.display().to_string(),
                    });
                }
                Ok(_) => {
                    return Err(ExtractError::ParentNotDirectory {
                        name: entry.display_name(),
                        parent: relative.display().to_string(),
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&absolute)
                        .map_err(io_error("create directory", &absolute))?;
                    // Independent of the umask, so a rewritten layer does not depend on it.
                    set_mode(&absolute, 0o755)?;
                    if let Ownership::Fixed { uid, gid } = self.options.ownership {
                        std::os::unix::fs::lchown(&absolute, Some(uid), Some(gid))
                            .map_err(io_error("change owner of", &absolute))?;
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
            self.deferred_directories
                .retain(|deferred, _| !deferred.starts_with(relative));
        } else {
            fs::remove_file(path).map_err(io_error("remove", path))?;
        }
        self.verified_directories.clear();
        Ok(())
    }

    fn extract_entry<R: Read>(
        &mut self,
        entry: &ArchiveEntry,
        archive: &mut ArchiveReader<R>,
    ) -> Result<(), ExtractError> {
        let components = clean_components(&entry.name);
        let Some(last) = components.last().copied() else {
            // The root itself: only a directory entry means something (its metadata).
            if entry.kind == EntryKind::Directory {
                let root = self.root.clone();
                self.apply_ownership(&root, entry)?;
                self.apply_xattrs(&root, entry)?;
                self.deferred_directories.insert(
                    PathBuf::new(),
                    DeferredDirectory {
                        mode: entry.mode,
                        mtime: entry.mtime,
                    },
                );
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
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&path)
                            .map_err(io_error("create directory", &path))?;
                    }
                }
                self.verified_directories.insert(relative.clone());
                self.apply_ownership(&path, entry)?;
                self.apply_xattrs(&path, entry)?;
                self.deferred_directories.insert(
                    relative,
                    DeferredDirectory {
                        mode: entry.mode,
                        mtime: entry.mtime,
                    },
                );
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
                std::os::unix::fs::symlink(target, &path)
                    .map_err(io_error("create symlink", &path))?;
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
                let device =
                    nix::sys::stat::makedev(entry.device_major.into(), entry.device_minor.into());
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

    fn extract_whiteout(
        &mut self,
        entry: &ArchiveEntry,
        parent: &Path,
        last: &[u8],
    ) -> Result<(), ExtractError> {
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
        nix::sys::stat::mknod(&path, SFlag::S_IFCHR, Mode::empty(), 0)
            .map_err(nix_error("create whiteout", &path))?;
        self.apply_ownership(&path, entry)?;
        set_mtime(&path, entry.mtime)
    }

    fn extract_hardlink(
        &mut self,
        entry: &ArchiveEntry,
        path: &Path,
        relative: &Path,
    ) -> Result<(), ExtractError> {
        let invalid = || ExtractError::InvalidHardlink {
            name: entry.display_name(),
            target: String::from_utf8_lossy(&entry.link_name).into_owned(),
        };
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
        target.push(std::ffi::OsStr::from_bytes(
            target_components[target_components.len() - 1],
        ));
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
            let invalid = |field| ExtractError::InvalidHeader {
                name: entry.display_name(),
                field,
            };
            Ok((
                u32::try_from(entry.uid).map_err(|_| invalid("uid"))?,
                u32::try_from(entry.gid).map_err(|_| invalid("gid"))?,
            ))
        };
        let (uid, gid) = match self.options.ownership {
            Ownership::Fixed { uid, gid } => (uid, gid),
            Ownership::FromArchive | Ownership::BestEffort => archive_ids()?,
        };
        match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            Ok(()) => Ok(()),
            Err(error)
                if self.options.ownership == Ownership::BestEffort
                    && matches!(error.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) =>
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
                        Some(
                            libc::ENOTSUP
                                | libc::EPERM
                                | libc::EACCES
                                | libc::EINVAL
                                | libc::ERANGE
                                | libc::E2BIG
                        )
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
mod tests {
    use super::*;
    use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, symlink};
    use std::process::Command;

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root (mknod, chown to other ids): run it as root"
        );
    }

    const LAYER: ExtractOptions = ExtractOptions {
        whiteouts: WhiteoutMode::ToOverlay,
        ownership: Ownership::FromArchive,
    };
    const LITERAL: ExtractOptions = ExtractOptions {
        whiteouts: WhiteoutMode::Literal,
        ownership: Ownership::FromArchive,
    };

    /// Builds a tar with the tar crate; each entry is (name, type, mode, uid, data or link
    /// name). Names are written raw (no cleaning), GNU headers so long and odd names pass.
    fn build(entries: &[(&str, tar::EntryType, u32, u64, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, mode, uid, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_uid(*uid);
            header.set_gid(*uid);
            header.set_mtime(1_650_000_000);
            let name_field = &mut header.as_old_mut().name;
            name_field[..name.len()].copy_from_slice(name.as_bytes());
            if kind.is_symlink() || kind.is_hard_link() {
                header.set_link_name_literal(data).unwrap();
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, &[][..]).unwrap();
            } else {
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, *data).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    fn write_layer(dir: &Path) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_layer_tar(dir, &mut bytes, &LayerTarOptions::default()).unwrap();
        bytes
    }

    fn set_time(path: &Path, seconds: i64) {
        let time = TimeSpec::new(seconds, 987_654_321);
        nix::sys::stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink)
            .unwrap();
    }

    fn rich_tree(root: &Path) {
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("readonly/inner")).unwrap();
        fs::create_dir(root.join("opaque")).unwrap();
        fs::write(root.join("opaque/new"), b"new").unwrap();
        xattr::set(root.join("opaque"), "user.overlay.opaque", b"y").unwrap();
        fs::write(root.join("usr/bin/tool"), vec![1u8; 70_000]).unwrap();
        // chown clears setuid bits: chown first.
        std::os::unix::fs::lchown(root.join("usr/bin/tool"), Some(0), Some(50)).unwrap();
        fs::set_permissions(
            root.join("usr/bin/tool"),
            fs::Permissions::from_mode(0o6755),
        )
        .unwrap();
        xattr::set(
            root.join("usr/bin/tool"),
            "user.binary",
            &[0, b'\n', 255, b'=', b' '],
        )
        .unwrap();
        fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/alias")).unwrap();
        fs::write(root.join("readonly/inner/file"), b"r").unwrap();
        fs::set_permissions(
            root.join("readonly/inner"),
            fs::Permissions::from_mode(0o555),
        )
        .unwrap();
        fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o500)).unwrap();
        symlink("/etc/passwd", root.join("absolute-link")).unwrap();
        symlink("usr/bin/tool", root.join("relative-link")).unwrap();
        std::os::unix::fs::lchown(root.join("relative-link"), Some(3), Some(4)).unwrap();
        mknod(&root.join("whiteout"), SFlag::S_IFCHR, 0, 0o000);
        std::os::unix::fs::lchown(root.join("whiteout"), Some(12), Some(13)).unwrap();
        mknod(
            &root.join("zero"),
            SFlag::S_IFCHR,
            nix::sys::stat::makedev(1, 5),
            0o666,
        );
        mknod(
            &root.join("disk"),
            SFlag::S_IFBLK,
            nix::sys::stat::makedev(8, 1),
            0o660,
        );
        nix::unistd::mkfifo(&root.join("pipe"), Mode::from_bits_truncate(0o600)).unwrap();
        let deep = root
            .join("n".repeat(100))
            .join("m".repeat(100))
            .join("o".repeat(60));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("p".repeat(120)), b"deep").unwrap();
        std::os::unix::fs::lchown(root.join("n".repeat(100)), Some(3_000_000), Some(3_000_001))
            .unwrap();
        symlink("t".repeat(200), root.join("long-target")).unwrap();
        let mut time = 1_500_000_000;
        for entry in walkdir::WalkDir::new(root).contents_first(true) {
            time += 7;
            set_time(entry.unwrap().path(), time);
        }
    }

    fn mknod(path: &Path, kind: SFlag, device: u64, mode: u32) {
        nix::sys::stat::mknod(path, kind, Mode::empty(), device).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn write_extract_write_round_trips_byte_for_byte() {
        require_root();
        let source = tempfile::tempdir().unwrap();
        rich_tree(source.path());
        let first = write_layer(source.path());
        let target = tempfile::tempdir().unwrap();
        let summary = extract(&first[..], target.path(), &LAYER).unwrap();
        assert_eq!(summary.skipped_devices + summary.skipped_xattrs, 0);
        assert_eq!(summary.bytes, 70_000 + 3 + 1 + 4);
        let second = write_layer(target.path());
        assert_eq!(first.len(), second.len());
        assert!(first == second, "rewritten layer differs");

        let tool = fs::metadata(target.path().join("usr/bin/tool")).unwrap();
        let alias = fs::metadata(target.path().join("usr/bin/alias")).unwrap();
        assert_eq!(
            (tool.ino(), tool.nlink(), tool.mode() & 0o7777, tool.gid()),
            (alias.ino(), 2, 0o6755, 50)
        );
        assert_eq!(
            xattr::get(target.path().join("usr/bin/tool"), "user.binary")
                .unwrap()
                .unwrap(),
            vec![0, b'\n', 255, b'=', b' ']
        );
        let whiteout = fs::symlink_metadata(target.path().join("whiteout")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(
            (whiteout.rdev(), whiteout.uid(), whiteout.mode() & 0o7777),
            (0, 12, 0)
        );
        assert_eq!(
            xattr::get(target.path().join("opaque"), "user.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(
            fs::read_link(target.path().join("absolute-link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs::metadata(target.path().join("readonly")).unwrap().mode() & 0o7777,
            0o500
        );
    }

    #[test]
    fn layer_whiteout_markers_become_overlay_whiteouts() {
        require_root();
        let archive = build(&[
            ("dir/", tar::EntryType::Directory, 0o755, 0, b""),
            ("dir/.wh..wh..opq", tar::EntryType::Regular, 0o755, 0, b""),
            ("dir/kept", tar::EntryType::Regular, 0o644, 0, b"k"),
            (".wh.removed", tar::EntryType::Regular, 0o600, 5, b""),
            // A whiteout for a name of this same layer does not hide it.
            ("same", tar::EntryType::Regular, 0o644, 0, b"s"),
            (".wh.same", tar::EntryType::Regular, 0o600, 0, b""),
            ("other/.wh..wh.plnk", tar::EntryType::Regular, 0o600, 0, b""),
        ]);
        let target = tempfile::tempdir().unwrap();
        extract(&archive[..], target.path(), &LAYER).unwrap();
        let removed = fs::symlink_metadata(target.path().join("removed")).unwrap();
        assert!(removed.file_type().is_char_device());
        assert_eq!(
            (removed.rdev(), removed.uid(), removed.mtime()),
            (0, 5, 1_650_000_000)
        );
        assert!(!target.path().join(".wh.removed").exists());
        assert_eq!(fs::read(target.path().join("same")).unwrap(), b"s");
        assert_eq!(
            xattr::get(target.path().join("dir"), "user.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
        assert!(!target.path().join("dir/.wh..wh..opq").exists());
        assert!(
            fs::read_dir(target.path().join("other"))
                .unwrap()
                .next()
                .is_none()
        );

        // ADD keeps the names literally.
        let literal = tempfile::tempdir().unwrap();
        extract(&archive[..], literal.path(), &LITERAL).unwrap();
        assert!(literal.path().join(".wh.removed").is_file());
        assert!(literal.path().join("dir/.wh..wh..opq").is_file());
        assert!(!literal.path().join("removed").exists());
        assert_eq!(
            xattr::get(literal.path().join("dir"), "user.overlay.opaque").unwrap(),
            None
        );
    }

    #[test]
    fn names_with_dot_dot_and_absolute_names_stay_inside() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("root");
        fs::create_dir(&target).unwrap();
        let archive = build(&[
            ("../../escape", tar::EntryType::Regular, 0o644, 0, b"1"),
            ("/absolute", tar::EntryType::Regular, 0o644, 0, b"2"),
            ("./a/../../../b", tar::EntryType::Regular, 0o644, 0, b"3"),
        ]);
        extract(&archive[..], &target, &LITERAL).unwrap();
        let mut names: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec!["absolute", "b", "escape"]);
        assert_eq!(
            fs::read_dir(outer.path()).unwrap().count(),
            1,
            "nothing written beside the root"
        );
    }

    #[test]
    fn a_file_through_a_symlink_is_refused() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("root");
        let victim = outer.path().join("victim");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&victim).unwrap();
        let victim_name = victim.to_str().unwrap().as_bytes();
        for archive in [
            build(&[
                ("evil", tar::EntryType::Symlink, 0o777, 0, victim_name),
                ("evil/planted", tar::EntryType::Regular, 0o644, 0, b"x"),
            ]),
            build(&[
                ("up", tar::EntryType::Symlink, 0o777, 0, b"../victim"),
                ("up/planted", tar::EntryType::Regular, 0o644, 0, b"x"),
            ]),
            build(&[
                ("dir/", tar::EntryType::Directory, 0o755, 0, b""),
                ("dir", tar::EntryType::Symlink, 0o777, 0, victim_name),
                ("dir/planted", tar::EntryType::Directory, 0o755, 0, b""),
            ]),
        ] {
            let error = extract(&archive[..], &target, &LITERAL).unwrap_err();
            assert!(
                matches!(error, ExtractError::ThroughSymlink { .. }),
                "{error:?}"
            );
            assert!(
                fs::read_dir(&victim).unwrap().next().is_none(),
                "wrote through a symlink"
            );
        }
        // The symlink itself is kept as a symlink; replacing it does not follow it either.
        let replace = build(&[
            ("link", tar::EntryType::Symlink, 0o777, 0, victim_name),
            ("link", tar::EntryType::Regular, 0o644, 0, b"replaced"),
        ]);
        extract(&replace[..], &target, &LITERAL).unwrap();
        assert_eq!(fs::read(target.join("link")).unwrap(), b"replaced");
        assert!(fs::read_dir(&victim).unwrap().next().is_none());
    }

    #[test]
    fn directory_mode_is_not_applied_through_a_later_symlink() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("root");
        let victim = outer.path().join("victim");
        fs::create_dir(&target).unwrap();
        fs::create_dir(&victim).unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
        let archive = build(&[
            ("a/", tar::EntryType::Directory, 0o777, 0, b""),
            (
                "a",
                tar::EntryType::Symlink,
                0o777,
                0,
                victim.to_str().unwrap().as_bytes(),
            ),
        ]);
        extract(&archive[..], &target, &LITERAL).unwrap();
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn hardlinks_must_point_inside() {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("root");
        fs::create_dir(&target).unwrap();
        fs::write(outer.path().join("secret"), b"secret").unwrap();
        let escape = build(&[("copy", tar::EntryType::Link, 0o644, 0, b"../secret")]);
        let error = extract(&escape[..], &target, &LITERAL).unwrap_err();
        assert!(
            matches!(error, ExtractError::InvalidHardlink { .. }),
            "{error:?}"
        );
        let absolute = outer.path().join("secret");
        let escape = build(&[(
            "copy",
            tar::EntryType::Link,
            0o644,
            0,
            absolute.to_str().unwrap().as_bytes(),
        )]);
        assert!(extract(&escape[..], &target, &LITERAL).is_err());
        let through_symlink = build(&[
            ("up", tar::EntryType::Symlink, 0o777, 0, b".."),
            ("copy", tar::EntryType::Link, 0o644, 0, b"up/secret"),
        ]);
        let error = extract(&through_symlink[..], &target, &LITERAL).unwrap_err();
        assert!(
            matches!(error, ExtractError::InvalidHardlink { .. }),
            "{error:?}"
        );
        assert!(!target.join("copy").exists());

        let inside = build(&[
            ("file", tar::EntryType::Regular, 0o644, 0, b"data"),
            ("dir/link", tar::EntryType::Link, 0o644, 0, b"./file"),
        ]);
        extract(&inside[..], &target, &LITERAL).unwrap();
        let file = fs::metadata(target.join("file")).unwrap();
        assert_eq!(
            file.ino(),
            fs::metadata(target.join("dir/link")).unwrap().ino()
        );
    }

    #[test]
    fn later_entries_replace_earlier_ones_and_children_may_come_first() {
        let target = tempfile::tempdir().unwrap();
        let archive = build(&[
            ("d/sub/file", tar::EntryType::Regular, 0o644, 0, b"child"),
            ("d/sub/", tar::EntryType::Directory, 0o700, 0, b""),
            ("d/", tar::EntryType::Directory, 0o555, 0, b""),
            ("x", tar::EntryType::Directory, 0o755, 0, b""),
            ("x/inside", tar::EntryType::Regular, 0o644, 0, b""),
            ("x", tar::EntryType::Regular, 0o644, 0, b"file now"),
            ("y", tar::EntryType::Regular, 0o644, 0, b"first"),
            ("y", tar::EntryType::Regular, 0o600, 0, b"second"),
        ]);
        extract(&archive[..], target.path(), &LITERAL).unwrap();
        assert_eq!(
            fs::read(target.path().join("d/sub/file")).unwrap(),
            b"child"
        );
        let directory = fs::metadata(target.path().join("d")).unwrap();
        assert_eq!(
            (directory.mode() & 0o7777, directory.mtime()),
            (0o555, 1_650_000_000)
        );
        assert_eq!(
            fs::metadata(target.path().join("d/sub")).unwrap().mtime(),
            1_650_000_000
        );
        assert_eq!(fs::read(target.path().join("x")).unwrap(), b"file now");
        assert_eq!(fs::read(target.path().join("y")).unwrap(), b"second");
        assert_eq!(
            fs::metadata(target.path().join("y")).unwrap().mode() & 0o7777,
            0o600
        );
    }

    #[test]
    fn fixed_ownership_applies_to_every_entry() {
        require_root();
        let target = tempfile::tempdir().unwrap();
        let archive = build(&[
            ("implicit/file", tar::EntryType::Regular, 0o644, 7, b""),
            ("link", tar::EntryType::Symlink, 0o777, 7, b"implicit/file"),
        ]);
        let options = ExtractOptions {
            whiteouts: WhiteoutMode::Literal,
            ownership: Ownership::Fixed {
                uid: 1000,
                gid: 1001,
            },
        };
        extract(&archive[..], target.path(), &options).unwrap();
        for name in ["implicit", "implicit/file", "link"] {
            let metadata = fs::symlink_metadata(target.path().join(name)).unwrap();
            assert_eq!((metadata.uid(), metadata.gid()), (1000, 1001), "{name}");
        }
        let from_archive = tempfile::tempdir().unwrap();
        extract(&archive[..], from_archive.path(), &LITERAL).unwrap();
        assert_eq!(
            fs::symlink_metadata(from_archive.path().join("link"))
                .unwrap()
                .uid(),
            7
        );
    }

    #[test]
    fn archives_from_system_tar_extract_in_every_compression() {
        let source = tempfile::tempdir().unwrap();
        fs::create_dir_all(source.path().join("pkg/share")).unwrap();
        fs::write(source.path().join("pkg/share/data"), vec![42u8; 10_000]).unwrap();
        symlink("share/data", source.path().join("pkg/link")).unwrap();
        fs::hard_link(
            source.path().join("pkg/share/data"),
            source.path().join("pkg/hard"),
        )
        .unwrap();
        fs::write(source.path().join("pkg").join("l".repeat(150)), b"long").unwrap();
        let work = tempfile::tempdir().unwrap();
        for (flag, extension, expected) in [
            ("", "tar", Compression::None),
            ("--gzip", "tar.gz", Compression::Gzip),
            ("--bzip2", "tar.bz2", Compression::Bzip2),
            ("--xz", "tar.xz", Compression::Xz),
            ("--zstd", "tar.zst", Compression::Zstd),
        ] {
            let archive = work.path().join(format!("archive.{extension}"));
            let mut command = Command::new("tar");
            command
                .arg("-cf")
                .arg(&archive)
                .arg("-C")
                .arg(source.path());
            if !flag.is_empty() {
                command.arg(flag);
            }
            let status = command.arg("pkg").status().unwrap();
            assert!(status.success(), "tar {flag} failed");
            let head = fs::read(&archive).unwrap();
            assert_eq!(
                detect_compression(&head[..head.len().min(6)]),
                expected,
                "{extension}"
            );
            assert!(is_tar_archive(&archive).unwrap(), "{extension}");

            let target = work.path().join(format!("out-{extension}"));
            fs::create_dir(&target).unwrap();
            let reader = decompressed(File::open(&archive).unwrap()).unwrap();
            extract(reader, &target, &LITERAL).unwrap();
            assert_eq!(
                fs::read(target.join("pkg/share/data")).unwrap(),
                vec![42u8; 10_000]
            );
            assert_eq!(
                fs::read_link(target.join("pkg/link")).unwrap(),
                Path::new("share/data")
            );
            assert_eq!(
                fs::metadata(target.join("pkg/hard")).unwrap().ino(),
                fs::metadata(target.join("pkg/share/data")).unwrap().ino()
            );
            assert_eq!(
                fs::read(target.join("pkg").join("l".repeat(150))).unwrap(),
                b"long"
            );
        }
    }

    #[test]
    fn non_archives_are_recognised() {
        let work = tempfile::tempdir().unwrap();
        let text = work.path().join("text.txt");
        fs::write(&text, "just text, long enough to fill a block? no").unwrap();
        assert!(!is_tar_archive(&text).unwrap());
        let big_text = work.path().join("big.txt");
        fs::write(&big_text, vec![b'a'; 4096]).unwrap();
        assert!(!is_tar_archive(&big_text).unwrap());
        let gzip_text = work.path().join("text.gz");
        let mut encoder = flate2::write::GzEncoder::new(
            File::create(&gzip_text).unwrap(),
            flate2::Compression::default(),
        );
        encoder.write_all(&[b'x'; 2048]).unwrap();
        encoder.finish().unwrap();
        assert!(
            !is_tar_archive(&gzip_text).unwrap(),
            "compressed non-tar content"
        );
        let broken = work.path().join("broken.gz");
        fs::write(&broken, [0x1f, 0x8b, 0x08, 0, 1, 2, 3]).unwrap();
        assert!(!is_tar_archive(&broken).unwrap());
        let empty = work.path().join("empty");
        fs::write(&empty, b"").unwrap();
        assert!(!is_tar_archive(&empty).unwrap());
        let archive = work.path().join("a.tar");
        fs::write(
            &archive,
            build(&[("f", tar::EntryType::Regular, 0o644, 0, b"x")]),
        )
        .unwrap();
        assert!(is_tar_archive(&archive).unwrap());
        let link = work.path().join("link.tar");
        symlink(&archive, &link).unwrap();
        assert!(
            !is_tar_archive(&link).unwrap(),
            "a symlink is not extracted by ADD"
        );
        assert!(is_tar_archive(&work.path().join("missing")).is_err());
        assert_eq!(detect_compression(b""), Compression::None);
    }

    #[test]
    fn numeric_fields_are_read_like_go() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b" 644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(&[0x80, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        assert_eq!(parse_numeric(b"89\0"), None);
    }

    #[test]
    fn pax_records_keep_binary_values_and_times() {
        let records = b"29 SCHILY.xattr.user.a=x\ny\0z\n16 mtime=-12.25\n10 path=a\n";
        let parsed = parse_pax_records(records);
        assert_eq!(
            parsed,
            vec![
                (b"SCHILY.xattr.user.a".to_vec(), b"x\ny\0z".to_vec()),
                (b"mtime".to_vec(), b"-12.25".to_vec()),
                (b"path".to_vec(), b"a".to_vec()),
            ]
        );
        assert_eq!(parse_pax_time(b"-12.25"), Some(-13));
        assert_eq!(parse_pax_time(b"1650000000.999"), Some(1_650_000_000));
        assert_eq!(parse_pax_time(b"7"), Some(7));
    }

    #[test]
    fn overlay_xattrs_from_an_archive_are_dropped_and_truncation_is_an_error() {
        let mut builder = tar::Builder::new(Vec::new());
        builder
            .append_pax_extensions([
                ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
                ("SCHILY.xattr.user.kept", &b"v"[..]),
            ])
            .unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("dir").unwrap();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, &[][..]).unwrap();
        let archive = builder.into_inner().unwrap();
        let target = tempfile::tempdir().unwrap();
        extract(&archive[..], target.path(), &LAYER).unwrap();
        let names: Vec<_> = xattr::list(target.path().join("dir")).unwrap().collect();
        assert_eq!(names, vec![std::ffi::OsString::from("user.kept")]);

        let file = build(&[("file", tar::EntryType::Regular, 0o644, 0, &[5u8; 2000])]);
        let truncated = &file[..1200];
        let other = tempfile::tempdir().unwrap();
        let error = extract(truncated, other.path(), &LITERAL).unwrap_err();
        assert!(matches!(error, ExtractError::Truncated), "{error:?}");
        let mut corrupt = file.clone();
        corrupt[10] ^= 1;
        assert!(matches!(
            extract(&corrupt[..], other.path(), &LITERAL),
            Err(ExtractError::Checksum { offset: 0 })
        ));
    }
}
