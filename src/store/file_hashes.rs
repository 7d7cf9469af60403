//! The remembered content digest of each build-context file, by its absolute path and stamp
//! ([`FileStamp`]): one file, `file-hashes-v1`, read whole by every build and replaced whole by a
//! build that hashed a file. A file whose stamp is unchanged is not read again.
//!
//! Why a file of its own and not rows of the database (where they were): every build reads them
//! all, and a 50,000-file context had 50,000 rows. Reading them was 60 ms of CPU (SQLite's row
//! machinery, a `String` per path and per digest, a map built of them) on a thread beside the
//! context walk, which it slowed by 40 ms on two cores; their pages were 16 MB of the database,
//! which `PRAGMA quick_check` reads at every open (16 ms before anything else could start). Here
//! they are one read of a few megabytes, indexed by the hash of each path (no copy of the
//! paths; binary search in the sorted entries cost the lookups 16 comparisons each, 10 ms more
//! than a hash), and the database is small again. A selection looks its files up in path order,
//! a few sorted runs, so each thread first tries the entry after the one it found last: nearly
//! every lookup is one comparison of neighbouring bytes. Nothing here needs a transaction: two builds saving at
//! once each rename a whole file into place, the last one stays, and the other's fresh digests
//! are only read again next time.
//!
//! Format, little endian:
//!
//! ```text
//! "rbuild file hashes v1\n"
//! entry count                       u64
//! entries, sorted by path bytes:    path length u32, path bytes, size u64,
//!                                   mtime ns i128, ctime ns i128, inode u64, device u64,
//!                                   sha256 of the content [32]
//! sha256 of all the bytes above     [32]
//! ```
//!
//! A file whose header, lengths or checksum do not hold (damaged, cut short by a crash: it is
//! renamed into place but not synced) is as if it were not there: it costs reading the files
//! again, and the next save replaces it.

use std::cmp::Ordering;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::oci::FileStamp;

const MAGIC: &[u8] = b"rbuild file hashes v1\n";
/// Everything of an entry but its path's bytes.
const FIXED_LENGTH: usize = 4 + 8 + 16 + 16 + 8 + 8 + 32;
const CHECKSUM_LENGTH: usize = 32;
/// Larger than any real file (ten million files with long paths), to refuse what is not one.
const MAX_LENGTH: u64 = 4 << 30;

thread_local! {
    /// The entry this thread looks at first: the one after its last found. Only a guess, checked
    /// like any other, so it may come from any table.
    static NEXT_LOOKUP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A file's remembered digest: the sha256 of its content, when it had this stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remembered {
    pub stamp: FileStamp,
    pub sha256: [u8; 32],
}

/// The remembered digests as read, looked up in place.
#[derive(Debug, Default)]
pub struct RememberedHashes {
    bytes: Vec<u8>,
    /// Where each entry starts in `bytes`, in path order.
    offsets: Vec<usize>,
    /// The entry (its index in `offsets`) of each path's hash: the first path with that hash.
    by_hash: foldhash::HashMap<u64, usize>,
    /// Entries whose path's hash an earlier path had (almost never any).
    collided: Vec<usize>,
    hasher: foldhash::fast::RandomState,
}

impl RememberedHashes {
    /// Reads the file at `path`: empty when there is none, or when it is damaged (said at
    /// `warn` level, for `--debug`: nothing else comes of it).
    pub fn read(path: &Path) -> RememberedHashes {
        let bytes = match read_regular_file(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return RememberedHashes::default(),
            Err(error) => {
                tracing::warn!("failed to read the remembered file hashes `{}`: {error}", path.display());
                return RememberedHashes::default();
            }
        };
        RememberedHashes::parse(bytes).unwrap_or_else(|| {
            tracing::warn!("the remembered file hashes `{}` were damaged; they are read again from the files", path.display());
            RememberedHashes::default()
        })
    }

    fn parse(bytes: Vec<u8>) -> Option<RememberedHashes> {
        let body_end = bytes.len().checked_sub(CHECKSUM_LENGTH)?;
        if !bytes.starts_with(MAGIC) || Sha256::digest(&bytes[..body_end]).as_slice() != &bytes[body_end..] {
            return None;
        }
        let mut at = MAGIC.len();
        let count = usize::try_from(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?)).ok()?;
        at += 8;
        // Each entry takes at least its fixed part: a count beyond that is damage, not a size
        // to allocate.
        if count > (body_end - at) / FIXED_LENGTH {
            return None;
        }
        let mut offsets = Vec::with_capacity(count);
        for _ in 0..count {
            let path_length = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            let end = at.checked_add(FIXED_LENGTH)?.checked_add(path_length)?;
            if end > body_end {
                return None;
            }
            offsets.push(at);
            at = end;
        }
        if at != body_end {
            return None;
        }
        let mut hashes = RememberedHashes { bytes, offsets, ..RememberedHashes::default() };
        // Sorted without repeats, as written: a file that is not is damaged (a merge of it
        // would not be sorted either).
        if !hashes.offsets.windows(2).all(|pair| hashes.path_at(pair[0]) < hashes.path_at(pair[1])) {
            return None;
        }
        hashes.by_hash.reserve(hashes.offsets.len());
        for (index, &offset) in hashes.offsets.iter().enumerate() {
            let hash = hashes.hasher.hash_one(hashes.path_at(offset));
            if let Some(first) = hashes.by_hash.insert(hash, index) {
                hashes.by_hash.insert(hash, first);
                hashes.collided.push(index);
            }
        }
        Some(hashes)
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// What is remembered of the file at the absolute path `path` (its bytes).
    pub fn get(&self, path: &[u8]) -> Option<Remembered> {
        let hinted = NEXT_LOOKUP.get();
        let index = if self.offsets.get(hinted).is_some_and(|&offset| self.path_at(offset) == path) {
            hinted
        } else {
            let first = self.by_hash.get(&self.hasher.hash_one(path)).copied();
            first.into_iter().chain(self.collided.iter().copied()).find(|&index| self.path_at(self.offsets[index]) == path)?
        };
        NEXT_LOOKUP.set(index + 1);
        Some(self.remembered_at(self.offsets[index]))
    }

    fn path_at(&self, offset: usize) -> &[u8] {
        let length = u32::from_le_bytes(self.bytes[offset..offset + 4].try_into().unwrap_or_default()) as usize;
        &self.bytes[offset + 4..offset + 4 + length]
    }

    fn remembered_at(&self, offset: usize) -> Remembered {
        let mut at = offset + 4 + self.path_at(offset).len();
        let mut take = |length: usize| {
            let field = &self.bytes[at..at + length];
            at += length;
            field
        };
        let u64_of = |field: &[u8]| u64::from_le_bytes(field.try_into().unwrap_or_default());
        let i128_of = |field: &[u8]| i128::from_le_bytes(field.try_into().unwrap_or_default());
        let size = u64_of(take(8));
        let mtime_nanos = i128_of(take(16));
        let ctime_nanos = i128_of(take(16));
        let inode = u64_of(take(8));
        let device = u64_of(take(8));
        let sha256 = take(32).try_into().unwrap_or_default();
        Remembered { stamp: FileStamp { size, mtime_nanos, ctime_nanos, inode, device }, sha256 }
    }

    /// These entries with `fresh` (absolute paths as bytes; they win over what is remembered of
    /// the same path), written whole to `out`.
    pub fn write_merged(&self, mut fresh: Vec<(Vec<u8>, Remembered)>, out: &mut dyn Write) -> io::Result<()> {
        // The last of several digests of one path is the newest.
        fresh.reverse();
        fresh.sort_by(|(left, _), (right, _)| left.cmp(right));
        fresh.dedup_by(|(later, _), (first, _)| later == first);

        let mut body = Vec::with_capacity(self.bytes.len() + fresh.iter().map(|(path, _)| path.len() + FIXED_LENGTH).sum::<usize>() + 64);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&[0; 8]);
        let mut count: u64 = 0;
        let mut old = self.offsets.iter().map(|&offset| (self.path_at(offset), offset)).peekable();
        let mut new = fresh.iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((old_path, _)), Some((new_path, _))) => old_path.cmp(&new_path.as_slice()),
            };
            if order == Ordering::Less {
                if let Some((path, offset)) = old.next() {
                    append_entry(&mut body, path, &self.remembered_at(offset))?;
                }
            } else {
                if order == Ordering::Equal {
                    old.next();
                }
                if let Some((path, remembered)) = new.next() {
                    append_entry(&mut body, path, remembered)?;
                }
            }
            count += 1;
        }
        body[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&count.to_le_bytes());
        let checksum = Sha256::digest(&body);
        out.write_all(&body)?;
        out.write_all(&checksum)
    }
}

/// The bytes of the regular file at `path`, at most [`MAX_LENGTH`]: whatever else is there (a
/// link to `/dev/zero`, a fifo, a file grown past any real size) is refused, never read
/// without end or waited on.
fn read_regular_file(path: &Path) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() || metadata.len() > MAX_LENGTH {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file of a sane size"));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(MAX_LENGTH + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LENGTH {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "grew past a sane size while read"));
    }
    Ok(bytes)
}

fn append_entry(body: &mut Vec<u8>, path: &[u8], remembered: &Remembered) -> io::Result<()> {
    let length = u32::try_from(path.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path of 4 GiB"))?;
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(path);
    let stamp = &remembered.stamp;
    body.extend_from_slice(&stamp.size.to_le_bytes());
    body.extend_from_slice(&stamp.mtime_nanos.to_le_bytes());
    body.extend_from_slice(&stamp.ctime_nanos.to_le_bytes());
    body.extend_from_slice(&stamp.inode.to_le_bytes());
    body.extend_from_slice(&stamp.device.to_le_bytes());
    body.extend_from_slice(&remembered.sha256);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remembered(seed: u8) -> Remembered {
        let stamp = FileStamp {
            size: u64::from(seed) * 1000,
            mtime_nanos: -(i128::from(seed) << 70),
            ctime_nanos: i128::from(seed) << 80,
            inode: u64::MAX - u64::from(seed),
            device: 7,
        };
        Remembered { stamp, sha256: [seed; 32] }
    }

    fn written(hashes: &RememberedHashes, fresh: Vec<(&[u8], Remembered)>) -> Vec<u8> {
        let mut out = Vec::new();
        hashes.write_merged(fresh.into_iter().map(|(path, remembered)| (path.to_vec(), remembered)).collect(), &mut out).unwrap();
        out
    }

    #[test]
    fn what_is_written_is_read_back_merged_the_fresh_winning() {
        let first = RememberedHashes::parse(written(
            &RememberedHashes::default(),
            vec![(b"/c/b", remembered(2)), (b"/c/a", remembered(1)), (b"/c/\xff", remembered(3)), (b"/c/a", remembered(4))],
        ))
        .expect("parses");
        assert_eq!(first.len(), 3);
        // The last digest given for a path is the one kept; a path need not be UTF-8.
        assert_eq!(first.get(b"/c/a"), Some(remembered(4)));
        assert_eq!(first.get(b"/c/b"), Some(remembered(2)));
        assert_eq!(first.get(b"/c/\xff"), Some(remembered(3)));
        assert_eq!(first.get(b"/c/c"), None);
        assert_eq!(first.get(b"/c"), None);

        let second = RememberedHashes::parse(written(&first, vec![(b"/c/b", remembered(9)), (b"/a", remembered(5))])).expect("parses");
        assert_eq!(second.len(), 4);
        assert_eq!(second.get(b"/a"), Some(remembered(5)));
        assert_eq!(second.get(b"/c/a"), Some(remembered(4)));
        assert_eq!(second.get(b"/c/b"), Some(remembered(9)));
        assert_eq!(second.get(b"/c/\xff"), Some(remembered(3)));
    }

    /// Two paths with one hash (never seen, but possible) are both found.
    #[test]
    fn paths_whose_hashes_collide_are_found() {
        let paths: [&[u8]; 3] = [b"/p/a", b"/p/b", b"/p/c"];
        let mut hashes = RememberedHashes::parse(written(
            &RememberedHashes::default(),
            paths.iter().zip(1..).map(|(path, seed)| (*path, remembered(seed))).collect(),
        ))
        .expect("parses");
        // As if all three had the first one's hash.
        hashes.by_hash.retain(|_, index| *index == 0);
        hashes.collided = vec![1, 2];
        for (path, seed) in paths.iter().zip(1..=3).rev() {
            assert_eq!(hashes.get(path), Some(remembered(seed)));
        }
        assert_eq!(hashes.get(b"/p/d"), None);
    }

    #[test]
    fn a_damaged_or_cut_file_is_none() {
        let good = written(&RememberedHashes::default(), vec![(b"/x/one", remembered(1)), (b"/x/two", remembered(2))]);
        assert!(RememberedHashes::parse(good.clone()).is_some());
        for cut in [0, 5, MAGIC.len() + 3, good.len() / 2, good.len() - 1] {
            assert!(RememberedHashes::parse(good[..cut].to_vec()).is_none(), "cut at {cut}");
        }
        for flipped in [0, MAGIC.len() + 1, good.len() / 2, good.len() - 1] {
            let mut damaged = good.clone();
            damaged[flipped] ^= 0x20;
            assert!(RememberedHashes::parse(damaged).is_none(), "byte {flipped} flipped");
        }
        // A count far beyond the bytes, with a checksum that holds: refused, not allocated.
        let mut lying = good[..good.len() - CHECKSUM_LENGTH].to_vec();
        lying[MAGIC.len()..MAGIC.len() + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let checksum = Sha256::digest(&lying);
        lying.extend_from_slice(&checksum);
        assert!(RememberedHashes::parse(lying).is_none());
    }

    #[test]
    fn a_missing_file_is_empty() {
        let directory = tempfile::tempdir().unwrap();
        assert!(RememberedHashes::read(&directory.path().join("none")).is_empty());
        std::fs::write(directory.path().join("junk"), b"junk").unwrap();
        assert!(RememberedHashes::read(&directory.path().join("junk")).is_empty());
    }

    /// A state root whose file is a link or a fifo: refused at once (a link to `/dev/zero` was
    /// read without end, a fifo waited on for a writer).
    #[test]
    fn what_is_not_a_regular_file_is_empty_at_once() {
        let directory = tempfile::tempdir().unwrap();
        let good = directory.path().join("good");
        std::fs::write(&good, written(&RememberedHashes::default(), vec![(b"/x/one", remembered(1))])).unwrap();
        assert_eq!(RememberedHashes::read(&good).len(), 1);
        let link = directory.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(RememberedHashes::read(&link).is_empty());
        let zero = directory.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(RememberedHashes::read(&zero).is_empty());
        let fifo = directory.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(RememberedHashes::read(&fifo).is_empty());
    }
}
