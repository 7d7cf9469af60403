//! The state root: everything rbuild keeps between runs. Its directories and files are named in
//! `layout.rs` ([`Area`]).
//!
//! Invariants: a file reaches `blobs-v1` or `snapshots-v1` only by an atomic rename of a
//! complete file or directory from `tmp/`, and gets its database row only once it is synced (a
//! snapshot is synced before its rename, or, while a solve runs, before its row is written:
//! [`durable_rows`]). A crash
//! at any point leaves a state the next run accepts: a row without a file is a cache miss, a file
//! without a row is garbage, which `prune` collects, and so does a build that opens the root
//! while no other process holds it. The store owns no policy: ops decide what to record.

pub mod atomic;
pub mod cache_key;
pub mod cache_mount;
pub mod database;
pub mod durable_rows;
pub mod file_hashes;
pub mod filter;
pub mod git_repository;
pub mod layer;
pub mod layout;
mod rows;
mod schema;
pub mod usage;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use cache_key::CacheKey;
pub use database::{BlobRow, Database, DatabaseError, LayerKind, LayerRow, RecordRow};
pub use durable_rows::PendingRow;
pub use layout::Area;

use crate::oci::stage_cpu::{Stage, measure};
use crate::oci::{DiffId, Digest, DigestHasher, FileStamp};

/// Blobs from this size on keep the stat they had when their bytes last matched their digest
/// (written, or read whole by an export): while a blob's stat is the same (size, mtime, ctime,
/// inode and device; ctime cannot be set back, so any write through the filesystem changes it),
/// an export copies it without hashing it again, the cheap stat check of issue 9. A smaller blob
/// hashes in less time than the database takes to remember it.
const CHECK_REMEMBERED_FROM: u64 = 1 << 20;

const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by rbuild.\n\
# For information about cache directory tags see https://bford.info/cachedir/\n";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to prepare the state root `{path}`")]
    Layout { path: String, source: io::Error },
    #[error("failed to lock the state root `{path}`")]
    Lock { path: String, source: io::Error },
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("failed to write to the state root `{path}`")]
    Write { path: String, source: io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Builds: many at once.
    Shared,
    /// Prune: alone.
    Exclusive,
}

pub struct Store {
    root: PathBuf,
    database: Mutex<Database>,
    /// Rows waiting for their files' sync while a solve runs.
    durable_rows: durable_rows::DurableRows,
    /// What opening the root repaired, for the user to read.
    warnings: Vec<String>,
    _lock: File,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Store {
    /// `$XDG_CACHE_HOME/rbuild`, `~/.cache/rbuild`, or `/var/lib/rbuild` for real root without
    /// XDG variables. Real root is root of the initial user namespace, which the caller says
    /// (`in_user_namespace`): rootless, rbuild runs as uid 0 of its own user namespace, and took
    /// `/var/lib/rbuild` there ("Permission denied" for every user who gave no `--root`).
    pub fn default_root(in_user_namespace: bool) -> PathBuf {
        if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(cache).join("rbuild");
        }
        if nix::unistd::geteuid().is_root() && !in_user_namespace {
            return PathBuf::from("/var/lib/rbuild");
        }
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".cache/rbuild"),
            None => PathBuf::from("/var/lib/rbuild"),
        }
    }

    pub fn open(root: &Path, mode: LockMode) -> Result<Store, StoreError> {
        let layout_error = |path: &Path, source| StoreError::Layout { path: path.display().to_string(), source };
        // Paths in the root are handed to mounts and to processes with another working directory.
        let root = &std::path::absolute(root).map_err(|source| layout_error(root, source))?;
        // A root that is a symlink to a directory not made yet (a dangling link) gets its target.
        if root.is_symlink() && !root.exists() {
            let target = fs::read_link(root).map_err(|source| layout_error(root, source))?;
            let target = root.parent().map(|parent| parent.join(&target)).unwrap_or(target);
            fs::create_dir_all(&target).map_err(|source| layout_error(&target, source))?;
        }
        for area in Area::ALL {
            let path = area.under(root);
            fs::create_dir_all(&path).map_err(|source| layout_error(&path, source))?;
        }
        let tag = root.join(layout::CACHEDIR_TAG_FILE);
        if !tag.exists() {
            atomic::write_file(&tag, CACHEDIR_TAG.as_bytes()).map_err(|source| layout_error(&tag, source))?;
        }
        let lock_path = root.join(layout::LOCK_FILE);
        let open_lock =
            |path: &Path| File::options().create(true).truncate(false).write(true).open(path).map_err(|source| layout_error(path, source));
        let lock = open_lock(&lock_path)?;
        let lock_error = |source| StoreError::Lock { path: lock_path.display().to_string(), source };
        // Every process passes the gate, alone, to take its lock; a prune keeps it while it waits
        // for the exclusive lock, so builds starting meanwhile queue behind it (flock alone lets a
        // stream of shared holders starve an exclusive waiter forever).
        let gate_path = root.join(layout::GATE_FILE);
        let gate = open_lock(&gate_path)?;
        gate.lock().map_err(|source| StoreError::Lock { path: gate_path.display().to_string(), source })?;
        // A build that finds itself alone on the root sweeps what killed processes left (`tmp/`
        // entries, snapshots and blobs without rows) before it takes its shared lock; with other
        // builds running, a later one does, or `cache prune`.
        let mut alone = match mode {
            LockMode::Shared => match lock.try_lock() {
                Ok(()) => true,
                Err(std::fs::TryLockError::WouldBlock) => {
                    lock.lock_shared().map_err(lock_error)?;
                    false
                }
                Err(std::fs::TryLockError::Error(source)) => return Err(lock_error(source)),
            },
            LockMode::Exclusive => {
                lock.lock().map_err(lock_error)?;
                false
            }
        };
        drop(gate);
        let database_path = root.join(layout::DATABASE_FILE);
        let mut warnings = Vec::new();
        let database = match Database::open(&database_path) {
            Err(DatabaseError::Damaged { .. }) => {
                // Only a process alone on the root may replace the database; the others wait
                // (they fail on the same file, or find it replaced).
                if mode == LockMode::Shared && !alone {
                    lock.lock().map_err(lock_error)?;
                    alone = true;
                }
                match Database::open(&database_path) {
                    Err(DatabaseError::Damaged { reason, .. }) => {
                        let aside = move_database_aside(&database_path)
                            .map_err(|source| StoreError::Write { path: database_path.display().to_string(), source })?;
                        warnings.push(format!(
                            "the cache database `{}` was damaged ({reason}); it was moved to `{}` and the build cache starts empty",
                            database_path.display(),
                            aside.display()
                        ));
                        Database::open(&database_path)?
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        let store =
            Store { root: root.to_path_buf(), database: Mutex::new(database), durable_rows: Default::default(), warnings, _lock: lock };
        // Only a shared opener is ever `alone`; it converts its exclusive lock below.
        if alone {
            let swept = usage::collect_garbage(&store);
            // Converting the exclusive lock to a shared one.
            store._lock.lock_shared().map_err(lock_error)?;
            swept?;
        }
        Ok(store)
    }

    /// A read-only connection of its own to this root's database, for a thread that reads
    /// without holding [`Store::database`]'s lock.
    pub fn database_reader(&self) -> Result<Database, DatabaseError> {
        Database::open_reader(&self.root.join(layout::DATABASE_FILE))
    }

    /// The file of the remembered context file digests ([`file_hashes`]).
    pub fn file_hashes_path(&self) -> PathBuf {
        self.root.join(layout::FILE_HASHES_FILE)
    }

    /// The file that keeps the RUN steps' compiled seccomp filter between builds
    /// (the sandbox's `KeptFilter`).
    pub fn seccomp_filter_path(&self) -> PathBuf {
        self.root.join(layout::SECCOMP_FILTER_FILE)
    }

    /// Replaces the remembered context file digests with `known` and `fresh` merged. Renamed
    /// into place, not synced: a file cut short by a crash is found damaged and only costs
    /// reading the files again.
    pub fn save_file_hashes(
        &self,
        known: &file_hashes::RememberedHashes,
        fresh: Vec<(Vec<u8>, file_hashes::Remembered)>,
    ) -> Result<(), StoreError> {
        let target = self.file_hashes_path();
        let write_error = |source| StoreError::Write { path: target.display().to_string(), source };
        let mut file = tempfile::Builder::new().prefix("file-hashes-").tempfile_in(self.area(Area::Tmp)).map_err(write_error)?;
        known.write_merged(fresh, file.as_file_mut()).map_err(write_error)?;
        file.persist(&target).map_err(|error| write_error(error.error))?;
        Ok(())
    }

    /// The directory of `area` in this root.
    pub fn area(&self, area: Area) -> PathBuf {
        area.under(&self.root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What opening the root found damaged and repaired (one line each).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn database(&self) -> MutexGuard<'_, Database> {
        // A panic while holding the lock leaves the connection usable: SQLite rolls back the
        // open transaction when the guard's transaction is dropped.
        self.database.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh directory under `tmp/`, removed when dropped unless moved into place.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, StoreError> {
        let parent = self.area(Area::Tmp);
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&parent)
            .map_err(|source| StoreError::Write { path: parent.display().to_string(), source })
    }

    pub fn snapshot_path(&self, diff_id: &DiffId) -> PathBuf {
        self.area(Area::Snapshots).join(diff_id.hex())
    }

    /// Writes `rows` (of snapshots [`Store::commit_snapshot`] put in place, and records of
    /// them) once their files are on disk: at once when no writer runs (the snapshots were
    /// synced), else by the writer ([`durable_rows`]).
    pub fn put_when_synced(&self, rows: Vec<PendingRow>) -> Result<(), StoreError> {
        if let Some(rows) = self.durable_rows.take(rows) {
            self.database().put_rows(&rows)?;
        }
        Ok(())
    }

    /// The row of the layer `diff_id`: the database's, or the one waiting in this process for
    /// its files' sync ([`durable_rows`]).
    pub fn layer_row(&self, diff_id: &DiffId) -> Result<Option<LayerRow>, StoreError> {
        if let Some(row) = self.database().layer(diff_id)? {
            return Ok(Some(row));
        }
        Ok(self.durable_rows.layer(diff_id))
    }

    /// From now until [`Store::close_durable_rows`], snapshots are put in place unsynced and
    /// their rows wait for [`Store::write_durable_rows`], which is to run meanwhile (a solve
    /// calls the three around its ops).
    pub fn defer_durable_rows(&self) {
        self.durable_rows.start();
    }

    /// The writer of rows waiting for their files: syncs the root's filesystem, then writes
    /// everything that came meanwhile in one transaction, until [`Store::close_durable_rows`].
    pub fn write_durable_rows(&self) -> Result<(), StoreError> {
        self.durable_rows.write_until_closed(|rows| {
            sync_filesystem(&self.root);
            self.database().put_rows(rows)
        })?;
        Ok(())
    }

    /// Has the writer write what is left and return.
    pub fn close_durable_rows(&self) {
        self.durable_rows.close();
    }

    /// Moves a finished snapshot directory into place under its diff id. When another process
    /// committed the same layer first (it has a row, or its row waits in this process), ours is
    /// discarded: the content is the same. A directory there without a row is not trusted (a `cache prune` killed while it
    /// deleted one left half a snapshot, which was then adopted and exported with thousands of
    /// files missing): ours takes its place in one atomic exchange, and it is removed.
    pub fn commit_snapshot(&self, directory: tempfile::TempDir, diff_id: &DiffId) -> Result<PathBuf, StoreError> {
        let target = self.snapshot_path(diff_id);
        // While a writer runs, it syncs before it writes the row.
        let sync = |source: &Path| {
            if !self.durable_rows.deferring() {
                sync_filesystem(source);
            }
        };
        if target.exists() {
            if self.layer_row(diff_id)?.is_some() {
                return Ok(target);
            }
            let source = directory.keep();
            sync(&source);
            let exchanged = nix::fcntl::renameat2(None, &source, None, &target, nix::fcntl::RenameFlags::RENAME_EXCHANGE);
            return match exchanged {
                // `source` now holds the untrusted directory.
                Ok(()) => {
                    let _ = remove_tree(&source);
                    Ok(target)
                }
                Err(error) => {
                    let _ = remove_tree(&source);
                    Err(StoreError::Write { path: target.display().to_string(), source: io::Error::from(error) })
                }
            };
        }
        let source = directory.keep();
        sync(&source);
        match fs::rename(&source, &target) {
            Ok(()) => Ok(target),
            Err(_) if target.exists() => {
                let _ = remove_tree(&source);
                Ok(target)
            }
            Err(error) => {
                let _ = remove_tree(&source);
                Err(StoreError::Write { path: target.display().to_string(), source: error })
            }
        }
    }

    /// Where blob `digest` is (or would be): its hex digits, checked plain when the digest was
    /// made. Blobs are written under their sha256; a sha512 digest names a file that is never
    /// there.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.area(Area::Blobs).join(digest.hex())
    }

    /// Whether a blob is there with the size its row says: the cheap check before reusing one
    /// (a blob cut short by a full disk or a damaged root is then made or fetched again).
    pub fn blob_is_intact(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|metadata| metadata.is_file() && metadata.len() == size)
    }

    /// The digest of the blob `row` records, when the blob is there with the row's size (see
    /// [`Store::blob_is_intact`]).
    pub fn intact_blob(&self, row: &BlobRow) -> Option<Digest> {
        self.blob_is_intact(&row.digest, row.size).then(|| row.digest.clone())
    }

    /// Opens a blob for export: the reader hashes what it reads and, at the end, fails if the
    /// bytes do not match the digest, removing the damaged blob so that the next build makes or
    /// fetches it again. A damaged blob is never exported whole. A blob whose bytes were checked
    /// before and whose stat has not changed since is not hashed again
    /// ([`VerifiedBlob::checked_file`]).
    pub fn open_blob(&self, digest: &Digest) -> io::Result<VerifiedBlob<'_>> {
        let path = self.blob_path(digest);
        let file = File::open(&path)?;
        let stamp = FileStamp::of(&file.metadata()?);
        let hasher = (!self.blob_was_checked(digest, &stamp)).then(|| DigestHasher::for_digest(digest));
        Ok(VerifiedBlob { store: self, file, stamp, hasher, expected: digest.clone(), path, damage: None })
    }

    /// Whether the blob `digest`, whose file has `stamp` now, had the same stat when its bytes
    /// last matched its digest: then they still do, short of damage that leaves the stat alone.
    pub fn blob_was_checked(&self, digest: &Digest, stamp: &FileStamp) -> bool {
        stamp.size >= CHECK_REMEMBERED_FROM && self.database().blob_check(digest).ok().flatten().as_ref() == Some(stamp)
    }

    /// Remembers that the blob `digest`, whose file has `stamp`, holds the bytes its digest
    /// names (for [`Store::open_blob`]). A failure to remember costs one hash at the next export.
    fn remember_checked(&self, digest: &Digest, stamp: &FileStamp) {
        if stamp.size < CHECK_REMEMBERED_FROM {
            return;
        }
        if let Err(error) = self.database().put_blob_check(digest, stamp) {
            tracing::debug!(%error, "could not remember the check of the blob {digest}");
        }
    }

    /// Reads a small blob (a manifest or config) whole, `None` when it is missing or its bytes
    /// do not match its digest (it is removed then).
    pub fn read_blob(&self, digest: &Digest) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut self.open_blob(digest).ok()?, &mut bytes).ok()?;
        Some(bytes)
    }

    /// A writer that hashes what it writes and lands in `blobs-v1` under that digest.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>, StoreError> {
        let parent = self.area(Area::Tmp);
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&parent)
            .map_err(|source| StoreError::Write { path: parent.display().to_string(), source })?;
        Ok(BlobWriter { file: io::BufWriter::with_capacity(1 << 20, file), hasher: DigestHasher::sha256(), size: 0, store: self })
    }

    /// Writes a small blob (config, manifest) and returns its digest and size.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        let mut writer = self.blob_writer()?;
        writer.write_all(bytes).map_err(|source| StoreError::Write { path: self.root.display().to_string(), source })?;
        writer.finish()
    }
}

/// A blob being read for export; see [`Store::open_blob`].
pub struct VerifiedBlob<'a> {
    store: &'a Store,
    file: File,
    /// The file's stat when it was opened.
    stamp: FileStamp,
    /// Taken at the end of the file, when the digest is checked; none for a blob checked before.
    hasher: Option<DigestHasher>,
    expected: Digest,
    path: PathBuf,
    /// What the check found, said again by every later read.
    damage: Option<String>,
}

impl VerifiedBlob<'_> {
    /// The blob's file, unread, when its bytes were checked before and its stat has not changed
    /// since: it may be copied by the kernel (`copy_file_range`) instead of read through the hash.
    pub fn checked_file(&self) -> Option<&File> {
        self.hasher.is_none().then_some(&self.file)
    }
}

impl io::Read for VerifiedBlob<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read(buffer)?;
        if read > 0 || buffer.is_empty() {
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&buffer[..read]);
            }
            return Ok(read);
        }
        if let Some(hasher) = self.hasher.take() {
            let actual = hasher.finish();
            // Remembered only when the file did not change while it was read.
            if actual == self.expected && self.file.metadata().is_ok_and(|metadata| FileStamp::of(&metadata) == self.stamp) {
                self.store.remember_checked(&self.expected, &self.stamp);
            }
            if actual != self.expected {
                let _ = fs::remove_file(&self.path);
                self.damage = Some(format!(
                    "the blob `{}` in the state root was damaged (its bytes hash to {actual}); it was removed, build again to make or fetch it anew",
                    self.path.display()
                ));
            }
        }
        match &self.damage {
            Some(message) => Err(io::Error::new(io::ErrorKind::InvalidData, message.clone())),
            None => Ok(0),
        }
    }
}

pub struct BlobWriter<'a> {
    file: io::BufWriter<tempfile::NamedTempFile>,
    hasher: DigestHasher,
    size: u64,
    store: &'a Store,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = measure(Stage::Write, || self.file.write(buffer))?;
        measure(Stage::Hash, || self.hasher.update(&buffer[..written]));
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter<'_> {
    /// Syncs and renames the blob into place; returns its sha256 digest and the size. The
    /// blob's bytes are the ones hashed, which the store remembers with the file's stat.
    pub fn finish(self) -> Result<(Digest, u64), StoreError> {
        let digest = self.hasher.finish();
        let target = self.store.blob_path(&digest);
        let write_error = |source| StoreError::Write { path: target.display().to_string(), source };
        let file = measure(Stage::Write, || self.file.into_inner()).map_err(|error| write_error(error.into_error()))?;
        measure(Stage::Write, || file.as_file().sync_all()).map_err(write_error)?;
        // Replaces whatever is there: the same bytes from another process, or a damaged blob.
        let file = file.persist(&target).map_err(|error| write_error(error.error))?;
        // The stat after the rename, which sets the ctime.
        if let Ok(metadata) = file.metadata() {
            self.store.remember_checked(&digest, &FileStamp::of(&metadata));
        }
        Ok((digest, self.size))
    }
}

/// Moves a damaged database (and its write-ahead log) to `<name>.damaged`, replacing an earlier
/// one, so the next open starts a fresh one. Returns where it went.
fn move_database_aside(path: &Path) -> io::Result<PathBuf> {
    let aside = path.with_extension("sqlite.damaged");
    fs::rename(path, &aside)?;
    let sibling = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
    let _ = fs::rename(sibling("-wal"), PathBuf::from(format!("{}-wal", aside.display())));
    let _ = fs::remove_file(sibling("-shm"));
    Ok(aside)
}

/// Flushes the filesystem holding `path`, so a renamed directory is complete after a crash.
fn sync_filesystem(path: &Path) {
    if let Ok(file) = File::open(path) {
        use std::os::fd::AsRawFd;
        let _ = nix::unistd::syncfs(file.as_raw_fd());
    }
}

/// Removes a directory of the store so that it is never seen half-removed: first renamed into
/// `tmp/` (atomic; what a kill leaves there is swept later), then removed.
pub fn remove_aside(store_root: &Path, path: &Path) -> io::Result<()> {
    let aside = tempfile::Builder::new().prefix("removing-").tempdir_in(Area::Tmp.under(store_root))?.keep();
    match fs::rename(path, aside.join("tree")) {
        Ok(()) => remove_tree(&aside),
        Err(error) if error.kind() == io::ErrorKind::NotFound => remove_tree(&aside),
        Err(error) => {
            let _ = fs::remove_dir(&aside);
            Err(error)
        }
    }
}

/// Removes a directory tree, making read-only directories writable first (layers may contain
/// directories with mode 0555 that `remove_dir_all` cannot empty).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            use std::os::unix::fs::PermissionsExt;
            for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
                if entry.file_type().is_dir() {
                    let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
                }
            }
            fs::remove_dir_all(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_land_under_their_digest() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        let (digest, size) = store.put_blob(b"hello").unwrap();
        assert_eq!(digest, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(size, 5);
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), b"hello");
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
        assert!(root.path().join("CACHEDIR.TAG").exists());
    }

    #[test]
    fn a_second_commit_of_the_same_layer_keeps_the_first() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        let first = store.temp_dir("snapshot-").unwrap();
        fs::write(first.path().join("a"), "1").unwrap();
        let diff_id = DiffId::new(Digest::sha256_of(b"abc"));
        let path = store.commit_snapshot(first, &diff_id).unwrap();
        record_layer(&store, &diff_id);
        let second = store.temp_dir("snapshot-").unwrap();
        fs::write(second.path().join("a"), "2").unwrap();
        assert_eq!(store.commit_snapshot(second, &diff_id).unwrap(), path);
        assert_eq!(fs::read_to_string(path.join("a")).unwrap(), "1");
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
    }

    fn record_layer(store: &Store, diff_id: &DiffId) {
        store.put_when_synced(vec![PendingRow::Layer(LayerRow::example(diff_id.clone()))]).unwrap();
    }

    /// Regression: a `cache prune` killed while it deleted a snapshot left half of it without a
    /// record; the next build's commit adopted it and exported an image missing files.
    #[test]
    fn a_snapshot_without_a_record_is_replaced_not_adopted() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        let diff_id = DiffId::new(Digest::sha256_of(b"abc"));
        let half = store.snapshot_path(&diff_id);
        fs::create_dir_all(&half).unwrap();
        fs::write(half.join("a"), "1").unwrap();
        let fresh = store.temp_dir("snapshot-").unwrap();
        fs::write(fresh.path().join("a"), "1").unwrap();
        fs::write(fresh.path().join("b"), "2").unwrap();
        let path = store.commit_snapshot(fresh, &diff_id).unwrap();
        assert_eq!(fs::read_to_string(path.join("b")).unwrap(), "2", "the half snapshot was adopted");
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn removal_goes_through_tmp() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        let snapshot = store.snapshot_path(&DiffId::new(Digest::sha256_of(b"abc")));
        fs::create_dir_all(snapshot.join("deep/er")).unwrap();
        remove_aside(store.root(), &snapshot).unwrap();
        assert!(!snapshot.exists());
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
        remove_aside(store.root(), &snapshot).unwrap();
    }

    #[test]
    fn a_dangling_symlink_root_gets_its_target() {
        let parent = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("target", parent.path().join("root")).unwrap();
        Store::open(&parent.path().join("root"), LockMode::Shared).unwrap();
        assert!(parent.path().join("target/blobs-v1/sha256").is_dir());
    }

    #[test]
    fn shared_locks_coexist() {
        let root = tempfile::tempdir().unwrap();
        let _first = Store::open(root.path(), LockMode::Shared).unwrap();
        let _second = Store::open(root.path(), LockMode::Shared).unwrap();
    }
}
