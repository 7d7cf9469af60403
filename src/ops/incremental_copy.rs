//! Incremental copies: a `COPY` from the build context whose sources changed in a few files
//! builds its layer from the last snapshot the same step made, linking the files that did not
//! change instead of copying them, so a one-file edit in a large context costs the edited file,
//! the directories and the links, not a copy of every byte.
//!
//! **What "the same step" is.** The vertex digest: the instruction, its flags, its destination
//! and its inputs' vertices, never the content of the files (that is the cache key's part). The
//! store keeps, per step, the layer its last run made and the content digest of each context
//! file that run wrote, by path inside the layer (`copy_snapshot` table, [`CopiedFiles`]).
//!
//! **When a file is linked.** A context file is placed by hard-linking the previous snapshot's
//! file at the same path when the previous run wrote that path from a context file with the
//! same content digest, and that file still has exactly the mode, owner, times and size a copy
//! would give it now (checked with `lstat`). The layer is then what a full copy makes: the same
//! bytes and metadata at every path, and every link made here joins one path to the same path
//! in another snapshot, so no two paths of one layer share an inode that a copy would not have
//! shared (files with several links in the context are always copied). A file the previous run
//! overwrote or removed later in the same op is forgotten when it is ([`CopiedFiles::forget`]).
//!
//! **Why linking is safe.** Snapshots are never written after they are committed: steps see
//! them as overlay lower directories (a write copies the file up) or as copies (the copying
//! snapshotter's root filesystem and writable mounts are copied, never linked), so a `RUN` after
//! an incremental copy cannot change the earlier snapshot through the shared inode. A link that
//! cannot be made (the previous snapshot pruned meanwhile, `EPERM` under
//! `protected_hardlinks`) falls back to a copy. A file is recorded only when its source's
//! modification time after the copy is the one the selection saw, so a file edited during the
//! copy is never remembered under the old content's digest.
//!
//! **How the links are made.** The copy decides which files to link as it goes and makes the
//! links at the end, in parallel ([`link_unchanged`] on each; links into one directory wait for
//! each other in the kernel, and a batch spans many), or earlier when something is about to be
//! placed where a pending link would be seen: the order of a full copy is kept.
//!
//! **What it costs.** Disk space is shared between the snapshots; `cache du` lists each layer
//! with the size of all its files, shared ones included, so its total can exceed the disk
//! space used until the older snapshot is pruned.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;
use nix::unistd::linkat;

use crate::oci::root_path::open_beneath;
use crate::oci::{DiffId, Digest};
use crate::store::{Store, StoreError};

/// The previous run of a step: its snapshot and what it copied there.
pub(super) struct Previous {
    /// The snapshot directory, open: files are looked at and linked relative to their
    /// directories, opened below it without following a symlink.
    root: File,
    files: HashMap<String, Digest>,
    /// The snapshot's directories opened so far, by path (`None`: not one to link from).
    directories: HashMap<String, Option<Arc<File>>>,
}

/// What a file placed by a copy must look like on disk (mode with setuid, setgid and sticky).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expected {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nanos: u32,
    pub size: u64,
}

impl Previous {
    /// The last snapshot `step` made with the files it copied, if the store still has it.
    pub(super) fn load(store: &Store, step: &Digest) -> Result<Option<Previous>, StoreError> {
        let database = store.database();
        let Some((diff_id, files)) = database.copy_snapshot(step)? else { return Ok(None) };
        if database.layer(&diff_id)?.is_none() {
            return Ok(None);
        }
        drop(database);
        let Some(files) = CopiedFiles::decode(&files) else { return Ok(None) };
        let Ok(root) = File::open(store.snapshot_path(&diff_id)) else { return Ok(None) };
        Ok(Some(Previous { root, files, directories: HashMap::new() }))
    }

    /// Where the previous snapshot holds `relative` (its directory, open, and its name there)
    /// when the previous run copied `content` to it; the caller links it with [`link_unchanged`].
    pub(super) fn source(&mut self, relative: &str, content: &Digest) -> Option<(Arc<File>, String)> {
        if self.files.get(relative) != Some(content) {
            return None;
        }
        let (parent, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        if !self.directories.contains_key(parent) {
            let opened = open_beneath(&self.root, Path::new(parent)).ok().map(Arc::new);
            self.directories.insert(parent.to_string(), opened);
        }
        let directory = self.directories.get(parent)?.as_ref()?;
        Some((directory.clone(), name.to_string()))
    }
}

/// Links `name` of the previous snapshot's `directory` as `target_name` of `target_directory`
/// (where nothing has that name) when it is a regular file exactly as `expected`; false when
/// it is not or the link cannot be made (the caller copies). Touches nothing else, so links
/// into different directories are made on several threads at once.
pub(super) fn link_unchanged(directory: &File, name: &str, expected: &Expected, target_directory: &File, target_name: &str) -> bool {
    let Ok(stat) = fstatat(Some(directory.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) else { return false };
    let found = Expected {
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        mtime: stat.st_mtime,
        mtime_nanos: stat.st_mtime_nsec as u32,
        size: stat.st_size as u64,
    };
    stat.st_mode & libc::S_IFMT == libc::S_IFREG
        && found == *expected
        && linkat(Some(directory.as_raw_fd()), name, Some(target_directory.as_raw_fd()), target_name, AtFlags::empty()).is_ok()
}

/// The context files a run of a copy step wrote, by path inside its layer, with their content
/// digests.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CopiedFiles {
    files: BTreeMap<String, Digest>,
}

impl CopiedFiles {
    pub(super) fn record(&mut self, relative: String, content: Digest) {
        self.files.insert(relative, content);
    }

    /// `relative` was removed or overwritten: it, and everything below it, is no longer a copy.
    pub(super) fn forget(&mut self, relative: &str) {
        self.files.remove(relative);
        let below = format!("{relative}/");
        let doomed: Vec<String> =
            self.files.range(below.clone()..).take_while(|(path, _)| path.starts_with(&below)).map(|(path, _)| path.clone()).collect();
        for path in doomed {
            self.files.remove(&path);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Remembers them as `step`'s last run, which made layer `diff_id`.
    pub(super) fn remember(&self, store: &Store, step: &Digest, diff_id: &DiffId) -> Result<(), StoreError> {
        store.database().put_copy_snapshot(step, diff_id, &self.encode())?;
        Ok(())
    }

    /// `path NUL digest NUL` for each file: paths may hold any byte but NUL.
    fn encode(&self) -> Vec<u8> {
        let mut encoded = Vec::with_capacity(self.files.len() * 100);
        for (path, digest) in &self.files {
            encoded.extend_from_slice(path.as_bytes());
            encoded.push(0);
            encoded.extend_from_slice(digest.as_str().as_bytes());
            encoded.push(0);
        }
        encoded
    }

    /// The files of [`encode`](Self::encode)'s bytes; `None` for bytes it did not write.
    fn decode(encoded: &[u8]) -> Option<HashMap<String, Digest>> {
        let mut files = HashMap::new();
        let mut fields = encoded.split(|byte| *byte == 0);
        loop {
            let path = fields.next()?;
            if path.is_empty() {
                // The end: an encoding ends with NUL, so the last field is empty.
                return fields.next().is_none().then_some(files);
            }
            let digest = Digest::parse(std::str::from_utf8(fields.next()?).ok()?).ok()?;
            files.insert(String::from_utf8(path.to_vec()).ok()?, digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> Digest {
        Digest::sha256_of(text.as_bytes())
    }

    #[test]
    fn copied_files_round_trip_and_forget_whole_subtrees() {
        let mut files = CopiedFiles::default();
        files.record("app/a".into(), digest("a"));
        files.record("app/dir/b".into(), digest("b"));
        files.record("app/dir/c/d".into(), digest("d"));
        files.record("app/dir-x".into(), digest("x"));
        files.record("odd\nname".into(), digest("o"));
        let decoded = CopiedFiles::decode(&files.encode()).unwrap();
        assert_eq!(decoded.len(), 5);
        assert_eq!(decoded["odd\nname"], digest("o"));
        files.forget("app/dir");
        let decoded = CopiedFiles::decode(&files.encode()).unwrap();
        let mut paths: Vec<&String> = decoded.keys().collect();
        paths.sort();
        assert_eq!(paths, ["app/a", "app/dir-x", "odd\nname"]);
        assert_eq!(CopiedFiles::decode(&CopiedFiles::default().encode()).unwrap().len(), 0);
    }

    #[test]
    fn bytes_it_did_not_write_decode_to_nothing() {
        assert!(CopiedFiles::decode(b"path\0not-a-digest\0").is_none());
        assert!(CopiedFiles::decode(b"path\0").is_none());
        assert!(CopiedFiles::decode(&[0xff, 0, 0]).is_none());
    }

    #[test]
    fn a_file_is_linked_only_with_its_content_and_metadata() {
        use std::fs;
        use std::os::unix::fs::MetadataExt;
        let directory = tempfile::tempdir().unwrap();
        let previous_dir = directory.path().join("previous");
        fs::create_dir_all(previous_dir.join("app")).unwrap();
        fs::write(previous_dir.join("app/f"), "content").unwrap();
        let metadata = fs::metadata(previous_dir.join("app/f")).unwrap();
        let expected = Expected {
            mode: metadata.mode() & 0o7777,
            uid: metadata.uid(),
            gid: metadata.gid(),
            mtime: metadata.mtime(),
            mtime_nanos: metadata.mtime_nsec() as u32,
            size: 7,
        };
        std::os::unix::fs::symlink("app", previous_dir.join("link")).unwrap();
        let files = HashMap::from([("app/f".to_string(), digest("content")), ("link/f".to_string(), digest("content"))]);
        let mut previous = Previous { root: File::open(&previous_dir).unwrap(), files, directories: HashMap::new() };
        let target_directory = File::open(directory.path()).unwrap();
        let mut link = |relative: &str, content: &str, expected: &Expected| {
            previous
                .source(relative, &digest(content))
                .is_some_and(|(directory, name)| link_unchanged(&directory, &name, expected, &target_directory, "t"))
        };
        assert!(!link("app/f", "other", &expected));
        assert!(!link("app/g", "content", &expected));
        assert!(!link("app/f", "content", &Expected { mode: expected.mode ^ 0o100, ..expected }));
        assert!(!link("app/f", "content", &Expected { mtime_nanos: expected.mtime_nanos ^ 1, ..expected }));
        // A symlink on the way is never followed, even to the very file.
        assert!(!link("link/f", "content", &expected));
        assert!(!directory.path().join("t").exists());
        assert!(link("app/f", "content", &expected));
        assert_eq!(fs::metadata(directory.path().join("t")).unwrap().ino(), metadata.ino());
    }
}
