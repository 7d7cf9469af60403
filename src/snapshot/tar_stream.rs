//! Reads an uncompressed tar stream entry by entry: header blocks (checksum, octal and base-256
//! numbers), PAX extended headers, GNU long names, and each entry's data, which the caller
//! copies out before asking for the next entry. [`extract`](super::extract) drives it and owns
//! everything that touches the filesystem.
//!
//! Invariants:
//! - Every byte of the stream is accounted for: data and padding the caller did not copy are
//!   skipped, so the next header is read at a block boundary (`offset` counts the bytes
//!   consumed, for error messages).
//! - PAX records are split by their length prefix, never at newlines, so binary values (xattrs
//!   such as `security.capability`) arrive intact; PAX and GNU long names override the header.
//! - Header-only types (links, devices, directories, fifos) carry no data whatever their size
//!   field says, as in Go's `archive/tar` (which BuildKit uses).
//! - An extension header larger than `MAX_EXTENSION_SIZE` is refused before it is read.
//!
//! Decision: the stream is parsed here (headers decoded with `tar::Header`) instead of with
//! `tar::Archive`: the crate splits PAX records at newlines, which corrupts binary xattr values.
//! Global PAX headers are read and ignored (archive comments in practice), as containerd does.
//! Unknown entry types and GNU sparse files are errors.

use std::io::{self, Read};
use std::path::Path;

use super::extract::ExtractError;

pub(super) const BLOCK_SIZE: usize = 512;
/// Largest PAX or GNU long-name block accepted; Go's `archive/tar` allows 1 MiB, xattrs may
/// need more.
const MAX_EXTENSION_SIZE: u64 = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryKind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// One archive entry with its PAX and GNU extensions applied.
pub(super) struct ArchiveEntry {
    pub(super) name: Vec<u8>,
    pub(super) link_name: Vec<u8>,
    pub(super) kind: EntryKind,
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: i64,
    pub(super) size: u64,
    pub(super) device_major: u32,
    pub(super) device_minor: u32,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ArchiveEntry {
    pub(super) fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

pub(super) struct ArchiveReader<R> {
    reader: R,
    offset: u64,
    /// Bytes of the current entry's data and padding not yet consumed.
    pending: u64,
    /// What entries' data is copied through.
    buffer: Vec<u8>,
}

pub(super) fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    if filled == 0 || filled == buffer.len() { Ok(filled) } else { Err(io::Error::from(io::ErrorKind::UnexpectedEof)) }
}

fn is_zero_block(block: &[u8; BLOCK_SIZE]) -> bool {
    block.iter().all(|byte| *byte == 0)
}

/// Whether `head` starts with a tar header block (not zero, checksum right).
pub fn is_tar_header(head: &[u8]) -> bool {
    head.first_chunk::<BLOCK_SIZE>().is_some_and(|block| !is_zero_block(block) && checksum_matches(block))
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
        let byte = if (148..156).contains(&index) { b' ' } else { *byte };
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
        let Some(length) = std::str::from_utf8(&data[..space]).ok().and_then(|text| text.parse::<usize>().ok()) else {
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
    Some(if whole.starts_with('-') && has_fraction { seconds - 1 } else { seconds })
}

/// A numeric header field: octal text (surrounded by spaces or NULs; empty means 0) or, with
/// the high bit of the first byte set, big-endian base-256 (negative when the first byte is
/// 0xff), as Go's archive/tar reads them.
fn parse_numeric(field: &[u8]) -> Option<i64> {
    if let Some(first) = field.first().filter(|first| **first & 0x80 != 0) {
        let negative = *first == 0xff;
        let mut value: i64 = if negative { -1 } else { i64::from(*first & 0x7f) };
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
    let end = bytes.iter().position(|byte| *byte == 0).unwrap_or(bytes.len());
    bytes[..end].to_vec()
}

impl<R: Read> ArchiveReader<R> {
    pub(super) fn new(reader: R) -> Self {
        ArchiveReader { reader, offset: 0, pending: 0, buffer: vec![0; COPY_BUFFER] }
    }

    fn skip_pending(&mut self) -> Result<(), ExtractError> {
        if self.pending > 0 {
            let skipped = io::copy(&mut (&mut self.reader).take(self.pending), &mut io::sink()).map_err(ExtractError::ReadArchive)?;
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
    pub(super) fn copy_data(&mut self, size: u64, out: &mut impl io::Write, path: &Path) -> Result<(), ExtractError> {
        let copied = copy_content(&mut self.reader, out, size, &mut self.buffer).map_err(|failure| match failure {
            CopyFailure::Read(error) => ExtractError::ReadArchive(error),
            CopyFailure::Write(source) => ExtractError::Io { action: "write", path: path.to_path_buf(), source },
        })?;
        self.offset += copied;
        self.pending -= copied;
        if copied != size {
            return Err(ExtractError::Truncated);
        }
        self.skip_pending()
    }

    pub(super) fn next_entry(&mut self) -> Result<Option<ArchiveEntry>, ExtractError> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link_name: Option<Vec<u8>> = None;
        loop {
            self.skip_pending()?;
            let mut block = [0u8; BLOCK_SIZE];
            let header_offset = self.offset;
            let read = read_full(&mut self.reader, &mut block).map_err(|error| match error.kind() {
                io::ErrorKind::UnexpectedEof => ExtractError::Truncated,
                _ => ExtractError::ReadArchive(error),
            })?;
            self.offset += read as u64;
            // A missing end-of-archive marker is tolerated, as GNU tar and Go do.
            if read == 0 || is_zero_block(&block) {
                return Ok(None);
            }
            if !checksum_matches(&block) {
                return Err(ExtractError::Checksum { offset: header_offset });
            }
            let header = tar::Header::from_byte_slice(&block);
            let type_flag = header.entry_type().as_byte();
            let header_name = header.path_bytes().into_owned();
            let invalid = |field| ExtractError::InvalidHeader { name: String::from_utf8_lossy(&header_name).into_owned(), field };
            let numeric = |range: std::ops::Range<usize>, field| parse_numeric(&block[range]).ok_or_else(|| invalid(field));
            let unsigned = |range: std::ops::Range<usize>, field| {
                numeric(range, field).and_then(|value| u64::try_from(value).map_err(|_| invalid(field)))
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
            let mut link_name =
                long_link_name.take().unwrap_or_else(|| header.link_name_bytes().map(|bytes| bytes.into_owned()).unwrap_or_default());
            let mut uid = unsigned(108..116, "uid")?;
            let mut gid = unsigned(116..124, "gid")?;
            let mut mtime = numeric(136..148, "mtime")?;
            let mut xattrs = Vec::new();
            for (key, value) in pax.drain(..) {
                let number = || std::str::from_utf8(&value).ok().and_then(|text| text.parse::<u64>().ok());
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
                        return Err(ExtractError::UnsupportedType { name: String::from_utf8_lossy(&name).into_owned(), type_flag: 'S' });
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
            let (device_major, device_minor) = if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
                let major = unsigned(329..337, "devmajor")?;
                let minor = unsigned(337..345, "devminor")?;
                (u32::try_from(major).map_err(|_| invalid("devmajor"))?, u32::try_from(minor).map_err(|_| invalid("devminor"))?)
            } else {
                (0, 0)
            };
            let mode = (unsigned(100..108, "mode")? & 0o7777) as u32;
            self.pending = padded(size);
            return Ok(Some(ArchiveEntry { name, link_name, kind, mode, uid, gid, mtime, size, device_major, device_minor, xattrs }));
        }
    }
}

/// The size of the buffer [`copy_content`] copies through.
pub(super) const COPY_BUFFER: usize = 64 * 1024;

/// Which side of [`copy_content`] failed.
pub(super) enum CopyFailure {
    Read(io::Error),
    Write(io::Error),
}

/// Copies at most `size` bytes of an entry's content from `reader` to `out` (a file into a
/// layer tar, a tar entry into a file), retrying reads a signal interrupted; returns how many
/// were copied, fewer when `reader` ended first (the caller says what that means). `buffer` is
/// the caller's, kept from entry to entry (a new one for each of 50,000 files cost 3 GB of
/// zeroing).
pub(super) fn copy_content(reader: impl Read, out: &mut impl io::Write, size: u64, buffer: &mut [u8]) -> Result<u64, CopyFailure> {
    let mut content = reader.take(size);
    let mut copied = 0u64;
    loop {
        let count = match content.read(buffer) {
            Ok(0) => return Ok(copied),
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CopyFailure::Read(error)),
        };
        out.write_all(&buffer[..count]).map_err(CopyFailure::Write)?;
        copied += count as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
