//! The size of a context transfer as BuildKit counts it: what `[internal] load build context`
//! shows as `transferring context: 2.03kB`.
//!
//! BuildKit copies the files a build uses from the client with fsutil's sync protocol and counts
//! the protobuf packets it receives: one `STAT` packet per entry (parents of the selected paths
//! included, the context root not), then, for each file it asks for, its data in chunks of
//! 32 KiB and an empty packet that ends it (an empty file costs only that one), then `FIN`.
//! A file the daemon already holds unchanged is not asked for, so a second build of the same
//! context transfers only the stats (recorded from BuildKit in `testdata/progress/context`:
//! one 2,000-byte file is 2.03kB the first time, 27B the next).
//!
//! rbuild reads the context in place: what it "transfers" is what it reads. The count is
//! BuildKit's over the same entries, with data for the files whose content was read (hashed)
//! in this build; a file known by its stat from an earlier build counts as its stat only, as
//! in BuildKit's second build.
//!
//! Approximation: owners are counted as uid and gid 0 (what rootless rbuild sees of the
//! caller's files, and what BuildKit sends for root's), so files owned by someone else count a
//! few bytes short.

use std::cmp::Ordering;
// foldhash: SipHash of every path of a 50,000-file context showed in the profile of a no-op rebuild.
use foldhash::HashMap;

use super::selection::{Entry, EntryKind};

/// fsutil's data chunk.
const CHUNK: u64 = 32 * 1024;

/// Go's `os.ModeDir`, `os.ModeSymlink`, `os.ModeSetuid`, `os.ModeSetgid`, `os.ModeSticky`:
/// fsutil sends a Go file mode.
const GO_MODE_DIR: u64 = 1 << 31;
const GO_MODE_SYMLINK: u64 = 1 << 27;
const GO_MODE_SETUID: u64 = 1 << 23;
const GO_MODE_SETGID: u64 = 1 << 22;
const GO_MODE_STICKY: u64 = 1 << 20;

/// The bytes BuildKit would receive for `entries` (paths relative to the context root; the same
/// path may come more than once, from several selections); `was_read` says whether a file's
/// content was read in this build.
pub fn transfer_size<'a>(entries: impl IntoIterator<Item = &'a Entry>, was_read: impl Fn(&Entry) -> bool) -> u64 {
    // Each path once (the last entry listed for it), with the parents no entry lists.
    let mut paths: HashMap<&str, Option<&Entry>> = HashMap::default();
    for entry in entries {
        if entry.path != "." {
            paths.insert(entry.path.as_str(), Some(entry));
        }
    }
    let listed: Vec<&str> = paths.keys().copied().collect();
    for path in listed {
        let mut parent = path;
        // A parent already there has had (or will have) its own parents added.
        while let Some(cut) = parent.rfind('/') {
            parent = &parent[..cut];
            if paths.contains_key(parent) {
                break;
            }
            paths.insert(parent, None);
        }
    }
    let mut total = 2; // the `FIN` packet (the empty end-of-stats packet encodes to nothing)
    let mut read = Vec::new();
    for (path, entry) in &paths {
        total += stat_packet(path.len() as u64, *entry);
        if let Some(entry) = entry
            && let EntryKind::File { size, .. } = entry.kind
            && was_read(entry)
        {
            read.push((*path, size));
        }
    }
    // A data packet carries the file's number in walk order: only files read need it.
    for (size, id) in walk_ids(&paths, read) {
        total += data_packets(id, size);
    }
    total
}

/// The walk-order numbers of the `read` files among all `paths`: fsutil's walk sends a
/// directory, then what is inside it, names in byte order (so `a/b` comes before `a-c`).
fn walk_ids<T>(paths: &HashMap<&str, T>, read: Vec<(&str, u64)>) -> Vec<(u64, u64)> {
    // A few files are counted against every path; many are numbered by sorting them all.
    if read.len() <= 32 {
        return read
            .into_iter()
            .map(|(path, size)| (size, paths.keys().filter(|other| walk_order(other, path).is_lt()).count() as u64))
            .collect();
    }
    let mut order: Vec<&str> = paths.keys().copied().collect();
    order.sort_unstable_by(|left, right| walk_order(left, right));
    let position: HashMap<&str, u64> = order.iter().enumerate().map(|(index, path)| (*path, index as u64)).collect();
    read.into_iter().map(|(path, size)| (size, position[path])).collect()
}

/// Component by component, as a directory walk meets paths: bytes compared with `/` below any
/// byte a name can hold.
fn walk_order(left: &str, right: &str) -> Ordering {
    let key = |byte: u8| if byte == b'/' { 0 } else { byte };
    let (left, right) = (left.as_bytes(), right.as_bytes());
    match left.iter().zip(right).position(|(a, b)| a != b) {
        Some(index) => key(left[index]).cmp(&key(right[index])),
        None => left.len().cmp(&right.len()),
    }
}

/// A `STAT` packet: `Packet { stat: Stat { path, mode, size, mod_time, linkname } }`. A parent
/// directory the selection does not list is sent all the same, its time unknown here: counted
/// like a recent one (nine bytes of nanoseconds).
fn stat_packet(path_length: u64, entry: Option<&Entry>) -> u64 {
    let (mode, size, nanos, link) = match entry {
        None => (GO_MODE_DIR | 0o755, 0, 1_700_000_000_000_000_000, ""),
        Some(entry) => {
            let nanos = (entry.mtime as u64).wrapping_mul(1_000_000_000).wrapping_add(u64::from(entry.mtime_nanos));
            let mode = go_mode(entry.mode);
            match &entry.kind {
                EntryKind::Directory => (mode | GO_MODE_DIR, 0, nanos, ""),
                EntryKind::File { size, .. } => (mode, *size, nanos, ""),
                // Lstat's size of a link is the length of its target.
                EntryKind::Symlink { target } => (mode | GO_MODE_SYMLINK, target.len() as u64, nanos, target.as_str()),
            }
        }
    };
    let stat = bytes_field(path_length) + varint_field(mode) + varint_field(size) + varint_field(nanos) + bytes_field(link.len() as u64);
    embedded(stat)
}

/// The `DATA` packets of one file: `Packet { type: DATA, id, data }` per chunk, and one without
/// data that ends the file.
fn data_packets(id: u64, size: u64) -> u64 {
    let header = varint_field(2) + varint_field(id);
    let mut total = header;
    let mut left = size;
    while left > 0 {
        let chunk = left.min(CHUNK);
        total += header + bytes_field(chunk);
        left -= chunk;
    }
    total
}

/// Permission bits (with setuid, setgid, sticky as Unix has them) as a Go file mode.
fn go_mode(mode: u32) -> u64 {
    let mut go = u64::from(mode & 0o777);
    for (unix, go_bit) in [(0o4000, GO_MODE_SETUID), (0o2000, GO_MODE_SETGID), (0o1000, GO_MODE_STICKY)] {
        if mode & unix != 0 {
            go |= go_bit;
        }
    }
    go
}

fn varint_len(value: u64) -> u64 {
    u64::from((64 - value.leading_zeros()).max(1).div_ceil(7))
}

/// A varint field: proto3 leaves out a zero.
fn varint_field(value: u64) -> u64 {
    if value == 0 { 0 } else { 1 + varint_len(value) }
}

/// A string or bytes field of `length` bytes; empty ones are left out.
fn bytes_field(length: u64) -> u64 {
    if length == 0 { 0 } else { 1 + varint_len(length) + length }
}

/// A message field holding `length` bytes.
fn embedded(length: u64) -> u64 {
    1 + varint_len(length) + length
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry { path: path.into(), real: path.into(), kind, mode, mtime: 1_796_349_580, mtime_nanos: 890_439_290 }
    }

    fn file(path: &str, size: u64) -> Entry {
        entry(path, EntryKind::File { size, digest: crate::oci::Digest::sha256_of(b""), hard_link: None }, 0o644)
    }

    /// `testdata/progress/context/buildkit.rawjson`: `COPY a.txt /a.txt` of a 2,000-byte file
    /// is 2034 bytes the first time, 27 the next.
    #[test]
    fn one_file_counts_as_buildkit_counted_it() {
        let entries = [file("a.txt", 2000)];
        assert_eq!(transfer_size(&entries, |_| true), 2034);
        assert_eq!(transfer_size(&entries, |_| false), 27);
    }

    /// `testdata/progress/context-tree`: `COPY dir /dir` of a directory holding an empty file,
    /// a symlink, a 100-byte file and a subdirectory with a 40,000-byte file (two chunks).
    #[test]
    fn a_tree_counts_stats_links_empty_files_and_chunks_as_buildkit_did() {
        let entries = [
            entry("dir", EntryKind::Directory, 0o755),
            file("dir/empty", 0),
            entry("dir/link", EntryKind::Symlink { target: "small".into() }, 0o777),
            file("dir/small", 100),
            entry("dir/sub", EntryKind::Directory, 0o755),
            file("dir/sub/big", 40_000),
        ];
        assert_eq!(transfer_size(&entries, |_| true), 40_307);
    }

    #[test]
    fn parents_are_sent_once_and_the_root_never() {
        let alone = transfer_size(&[file("a/b/c", 1)], |_| false);
        let with_root = transfer_size(&[entry(".", EntryKind::Directory, 0o755), file("a/b/c", 1), file("a/b/c", 1)], |_| false);
        assert_eq!(alone, with_root);
        assert!(alone > transfer_size(&[file("c", 1)], |_| false) + 2 * 20);
    }

    /// The count as a walk makes it: every path and its parents once, in a `BTreeMap` of
    /// components (the walk's order), numbered as they come.
    fn counted_by_walking(entries: &[Entry], was_read: impl Fn(&Entry) -> bool) -> u64 {
        let mut walk: std::collections::BTreeMap<Vec<&str>, Option<&Entry>> = std::collections::BTreeMap::new();
        for entry in entries.iter().filter(|entry| entry.path != ".") {
            let components: Vec<&str> = entry.path.split('/').collect();
            for depth in 1..components.len() {
                walk.entry(components[..depth].to_vec()).or_insert(None);
            }
            walk.insert(components, Some(entry));
        }
        let mut total = 2;
        for (id, (components, entry)) in walk.iter().enumerate() {
            total += stat_packet(components.join("/").len() as u64, *entry);
            if let Some(entry) = entry
                && let EntryKind::File { size, .. } = entry.kind
                && was_read(entry)
            {
                total += data_packets(id as u64, size);
            }
        }
        total
    }

    /// 20,000 paths whose names sort differently by bytes and by components (`a-b`, `a.b` beside
    /// `a/`), none read, a few (counted one by one) or many (sorted): the same count as the
    /// walk's, whose file numbers pass 127 and 16,383 (one more varint byte each).
    #[test]
    fn numbering_in_walk_order_counts_as_the_walk() {
        let names = ["a", "a-b", "a.b", "a b", "a0", "b", "\u{e9}"];
        let mut entries = Vec::new();
        for (index, first) in names.iter().enumerate() {
            entries.push(entry(first, EntryKind::Directory, 0o755));
            for second in 0..60 {
                for third in names {
                    entries.push(file(&format!("{first}/{second}/{third}.{index}"), (second * 5000 + index) as u64));
                }
            }
        }
        entries.push(file("top-file", 100_000));
        entries.push(file("a", 7)); // listed again, as a file this time: the last entry counts
        let none = |_: &Entry| false;
        let one = |entry: &Entry| entry.path == "b/59/a.5";
        let many = |entry: &Entry| entry.path.len().is_multiple_of(3);
        assert_eq!(transfer_size(&entries, none), counted_by_walking(&entries, none));
        assert_eq!(transfer_size(&entries, one), counted_by_walking(&entries, one));
        assert_eq!(transfer_size(&entries, many), counted_by_walking(&entries, many));
        let few: Vec<&str> = entries.iter().filter(|entry| entry.path.ends_with(".6")).take(20).map(|entry| entry.path.as_str()).collect();
        let few_read = |entry: &Entry| few.contains(&entry.path.as_str());
        assert_eq!(transfer_size(&entries, few_read), counted_by_walking(&entries, few_read));
        assert_eq!(walk_order("a/b", "a-c"), Ordering::Less);
        assert_eq!(walk_order("a", "a/b"), Ordering::Less);
        assert_eq!(walk_order("a.b", "a/z"), Ordering::Greater);
    }

    #[test]
    fn varints_and_modes_encode_as_protobuf_and_go() {
        assert_eq!([0, 1, 127, 128, 16_383, 16_384, u64::MAX].map(varint_len), [1, 1, 1, 2, 2, 3, 10]);
        assert_eq!(go_mode(0o4755), 0o755 | GO_MODE_SETUID);
        assert_eq!(go_mode(0o1777), 0o777 | GO_MODE_STICKY);
    }
}
