//! Disk usage and pruning of the state root (`rbuild cache du`, `rbuild cache prune`).
//!
//! The unit of accounting is an [`Item`]: a layer (its snapshot directory plus the compressed
//! blobs made from it) or an internal blob (an image config or manifest). Sizes are apparent
//! sizes of every file and directory, each inode counted once, which is what `du -sb` reports for
//! `snapshots-v1` and `blobs-v1`: the total `du` prints is what is on disk.
//! Pruning holds the exclusive lock, so nothing it removes is in use; it deletes rows before
//! files, so a crash in between leaves only garbage, which the next prune collects.
//!
//! Which items a prune takes follows BuildKit's `cache.Manager.Prune`: the candidates are those
//! the filter ([`super::filter`]) and `until` select (without `-a`, not base images); with no
//! space limit all of them go; with one ([`SpaceLimits`], buildx's `--reserved-space`,
//! `--max-used-space`, `--min-free-space`) they go least recently used first until the total
//! fits the limit.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::filter::Filter;
use super::{Area, LayerKind, Store, StoreError, remove_aside, remove_tree};
use crate::oci::{DiffId, Digest};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// The diff id of a layer, or the digest of an internal blob.
    pub id: String,
    /// `regular` for build layers and shared git repositories, `source.image` for base image
    /// layers, `internal` for configs and manifests, `exec.cachemount` for cache mounts.
    pub kind: &'static str,
    pub description: String,
    pub size: u64,
    pub created_at: i64,
    pub last_used_at: i64,
}

impl Item {
    /// The id as `du` shows it and filters see it: without `sha256:`.
    pub fn display_id(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }

    /// A cache mount changes in place, as BuildKit's mutable `exec.cachemount` records do;
    /// layers and blobs never change.
    pub fn mutable(&self) -> bool {
        self.kind == "exec.cachemount"
    }

    /// A filter field and whether it is present, as BuildKit's `adaptUsageInfo`: only the first
    /// element of the path counts. rbuild keeps no parents and holds the exclusive lock when it
    /// prunes, so `parents` is absent, nothing is `inuse` or `shared`, everything is `private`.
    pub fn field(&self, path: &[String]) -> (String, bool) {
        let text = |value: &str| (value.to_string(), !value.is_empty());
        match path.first().map(String::as_str) {
            Some("id") => text(self.display_id()),
            Some("description") => text(&self.description),
            Some("type") => text(self.kind),
            Some("mutable") => (String::new(), self.mutable()),
            Some("immutable") => (String::new(), !self.mutable()),
            Some("private") => (String::new(), true),
            _ => (String::new(), false),
        }
    }
}

/// Every item in the store, most recently used first.
pub fn items(store: &Store) -> Result<Vec<Item>, StoreError> {
    let database = store.database();
    let blobs = database.blobs()?;
    let mut items = Vec::new();
    for layer in database.layers()? {
        let blob_size: u64 = blobs.iter().filter(|blob| blob.diff_id.as_ref() == Some(&layer.diff_id)).map(|blob| blob.size).sum();
        items.push(Item {
            id: layer.diff_id.to_string(),
            kind: match (layer.from_image, layer.kind) {
                (true, _) => "source.image",
                (false, LayerKind::GitCheckout) => "source.git.checkout",
                (false, LayerKind::Regular) => "regular",
            },
            description: layer.description.clone(),
            size: layer.size + blob_size,
            created_at: layer.created_at,
            last_used_at: layer.last_used_at,
        });
    }
    for blob in blobs.iter().filter(|blob| blob.diff_id.is_none()) {
        items.push(Item {
            id: blob.digest.to_string(),
            kind: "internal",
            description: blob.media_type.clone(),
            size: blob.size,
            created_at: blob.last_used_at,
            last_used_at: blob.last_used_at,
        });
    }
    items.extend(cache_mounts(store)?);
    items.extend(super::git_repository::items(store)?);
    items.sort_by(|a, b| b.last_used_at.cmp(&a.last_used_at).then_with(|| a.id.cmp(&b.id)));
    Ok(items)
}

/// `RUN --mount=type=cache` directories: `mounts-v1/<hex>/` with `<hex>.id` (the mount id) and
/// `<hex>.lock` (touched on each use: its mtime is the last use).
fn cache_mounts(store: &Store) -> Result<Vec<Item>, StoreError> {
    let directory = store.area(Area::Mounts);
    let read_error = |source| StoreError::Write { path: directory.display().to_string(), source };
    let mut items = Vec::new();
    for name in read_dir(&directory).map_err(read_error)? {
        let path = directory.join(&name);
        if !path.is_dir() {
            continue;
        }
        let id = fs::read_to_string(directory.join(format!("{name}.id"))).unwrap_or_default();
        let time = |path: &Path| fs::metadata(path).map(|m| m.mtime()).unwrap_or(0);
        let size = tree_size(&path).map_err(|source| StoreError::Write { path: path.display().to_string(), source })?;
        items.push(Item {
            id: name.clone(),
            kind: "exec.cachemount",
            description: format!("cached mount {id}"),
            size,
            created_at: time(&path),
            last_used_at: time(&directory.join(format!("{name}.lock"))).max(time(&path)),
        });
    }
    Ok(items)
}

/// Which items a prune removes.
#[derive(Debug, Clone, Default)]
pub struct PrunePolicy {
    /// Also base images: their layers, manifests and configs (`-a`).
    pub all: bool,
    /// Only items unused for at least this many seconds (`--filter until=`).
    pub unused_for: Option<i64>,
    /// Only items this filter matches (`--filter`).
    pub filter: Filter,
    /// How much the cache may keep.
    pub space: SpaceLimits,
}

/// buildx's space flags of `prune`, in bytes; 0 is "not set".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceLimits {
    /// `--reserved-space` (and its old name `--keep-storage`): never prune below this.
    pub reserved: u64,
    /// `--max-used-space`: prune down to this.
    pub max_used: u64,
    /// `--min-free-space`: prune until the file system of the state root has this much free.
    pub min_free: u64,
}

impl SpaceLimits {
    /// How many bytes the cache may keep, given its `total` and the `free` bytes of its file
    /// system; `None` without a limit. BuildKit's `calculateKeepBytes`: start from the maximum,
    /// lower it by what is missing from the free space, never below the reserve (nor below 0,
    /// when more is missing than the cache holds: then every candidate goes).
    pub fn keep_bytes(&self, total: u64, free: u64) -> Option<i128> {
        if *self == SpaceLimits::default() {
            return None;
        }
        let (total, reserved, max_used, min_free) = (total as i128, self.reserved as i128, self.max_used as i128, self.min_free as i128);
        let mut keep = max_used;
        let excess = min_free - free as i128;
        if excess > 0 {
            keep = if keep == 0 { total - excess } else { keep.min(total - excess) };
        } else if min_free != 0 && keep == 0 {
            // Enough is free already: nothing goes.
            keep = total;
        }
        Some(keep.max(reserved))
    }
}

/// Free bytes of the file system holding `path`, as BuildKit's `disk.GetDiskStat` counts them
/// (`f_bfree × f_bsize`: blocks reserved for root included).
pub fn free_space(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok((stat.blocks_free() as u64).saturating_mul(stat.block_size() as u64))
}

/// Removes what `policy` selects, then garbage (files without rows, leftovers in `tmp/`).
/// Returns the removed items.
pub fn prune(store: &Store, policy: &PrunePolicy, now: i64) -> Result<Vec<Item>, StoreError> {
    let all_items = items(store)?;
    // Without `-a` a base image stays whole: its layers, and the manifest and config a build
    // reads before it reaches a registry (offline builds go on).
    let base_image_blobs = store.database().image_tag_blobs()?;
    let mut candidates: Vec<&Item> = all_items
        .iter()
        .filter(|item| {
            policy.all || (item.kind != "source.image" && !Digest::parse(&item.id).is_ok_and(|digest| base_image_blobs.contains(&digest)))
        })
        .filter(|item| policy.unused_for.is_none_or(|age| now - item.last_used_at >= age))
        .filter(|item| policy.filter.matches(|path| item.field(path)))
        .collect();
    let total: u64 = all_items.iter().map(|item| item.size).sum();
    let free = if policy.space.min_free == 0 {
        0
    } else {
        free_space(store.root()).map_err(|source| StoreError::Write { path: store.root().display().to_string(), source })?
    };
    if let Some(keep) = policy.space.keep_bytes(total, free) {
        // Least recently used go first, until what stays fits. BuildKit stops when the total is
        // below the limit (`<`), which removes one more item when it is exactly at the limit and
        // contradicts its own "if only minFreeSpace is set and it doesn't match then we don't
        // delete anything": a total at the limit fits here.
        candidates.sort_by(|a, b| a.last_used_at.cmp(&b.last_used_at).then_with(|| a.id.cmp(&b.id)));
        let mut total = total as i128;
        candidates.retain(|item| {
            if total <= keep {
                return false;
            }
            total -= item.size as i128;
            true
        });
    }
    let mut removed = Vec::new();
    for item in candidates {
        remove_item(store, item)?;
        removed.push(item.clone());
    }
    collect_garbage(store)?;
    Ok(removed)
}

fn remove_item(store: &Store, item: &Item) -> Result<(), StoreError> {
    let write_error = |path: &Path, source| StoreError::Write { path: path.display().to_string(), source };
    if item.kind == "exec.cachemount" {
        let directory = store.area(Area::Mounts);
        for suffix in [".id", ".lock"] {
            let path = directory.join(format!("{}{suffix}", item.id));
            remove_file(&path).map_err(|source| write_error(&path, source))?;
        }
        let path = directory.join(&item.id);
        return remove_aside(store.root(), &path).map_err(|source| write_error(&path, source));
    }
    if super::git_repository::is_repository(store, item) {
        return super::git_repository::remove(store, item);
    }
    if item.kind == "internal" {
        // Internal items and layers are made from their rows, whose ids are checked digests.
        let Ok(digest) = Digest::parse(&item.id) else { return Ok(()) };
        {
            let mut database = store.database();
            database.delete_image_tags_using(&digest)?;
            database.delete_blob(&digest)?;
        }
        let path = store.blob_path(&digest);
        return remove_file(&path).map_err(|source| write_error(&path, source));
    }
    let Ok(diff_id) = DiffId::parse(&item.id) else { return Ok(()) };
    let blobs: Vec<Digest> = {
        let mut database = store.database();
        let blobs = database
            .blobs()?
            .into_iter()
            .filter(|blob| blob.diff_id.as_ref() == Some(&diff_id))
            .map(|blob| blob.digest)
            .collect::<Vec<_>>();
        for blob in &blobs {
            database.delete_blob(blob)?;
        }
        database.delete_layer(&diff_id)?;
        blobs
    };
    for blob in &blobs {
        let path = store.blob_path(blob);
        remove_file(&path).map_err(|source| write_error(&path, source))?;
    }
    let snapshot = store.snapshot_path(&diff_id);
    remove_aside(store.root(), &snapshot).map_err(|source| write_error(&snapshot, source))
}

/// Removes snapshot directories and blobs that have no row, and everything under `tmp/`.
/// Only sound under the exclusive lock.
pub(super) fn collect_garbage(store: &Store) -> Result<(), StoreError> {
    let write_error = |path: &Path, source| StoreError::Write { path: path.display().to_string(), source };
    let (layers, blobs): (HashSet<String>, HashSet<String>) = {
        let mut database = store.database();
        database.delete_unbacked()?;
        let layers = database.layers()?.iter().map(|layer| layer.diff_id.hex().to_string()).collect();
        let blobs = database.blobs()?.iter().map(|blob| blob.digest.hex().to_string()).collect();
        (layers, blobs)
    };
    let snapshots = store.area(Area::Snapshots);
    for entry in read_dir(&snapshots).map_err(|source| write_error(&snapshots, source))? {
        if !layers.contains(&entry) {
            let path = snapshots.join(&entry);
            remove_aside(store.root(), &path).map_err(|source| write_error(&path, source))?;
        }
    }
    let blob_directory = store.area(Area::Blobs);
    for entry in read_dir(&blob_directory).map_err(|source| write_error(&blob_directory, source))? {
        if !blobs.contains(&entry) {
            let path = blob_directory.join(&entry);
            remove_file(&path).map_err(|source| write_error(&path, source))?;
        }
    }
    let tmp = store.area(Area::Tmp);
    for entry in read_dir(&tmp).map_err(|source| write_error(&tmp, source))? {
        let path = tmp.join(&entry);
        let removed = if path.is_dir() { remove_tree(&path) } else { remove_file(&path) };
        removed.map_err(|source| write_error(&path, source))?;
    }
    Ok(())
}

/// The file name of a row's digest (a row that names none keeps no file).
fn read_dir(path: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(path)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Apparent size of a tree: every file, directory and link, each inode once (`du -sb`).
pub fn tree_size(path: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.map_err(io::Error::other)?;
        let metadata = entry.path().symlink_metadata()?;
        if metadata.nlink() > 1 && !metadata.is_dir() && !seen.insert((metadata.dev(), metadata.ino())) {
            continue;
        }
        total += metadata.len();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{LayerRow, LockMode, PendingRow, now};

    fn layer_diff_id(name: &str) -> DiffId {
        DiffId::new(Digest::sha256_of(name.as_bytes()))
    }

    fn add_layer(store: &Store, name: &str, bytes: usize, last_used_at: i64, from_image: bool) {
        let directory = store.temp_dir("snapshot-").unwrap();
        fs::write(directory.path().join("file"), vec![b'x'; bytes]).unwrap();
        let diff_id = layer_diff_id(name);
        let path = store.commit_snapshot(directory, &diff_id).unwrap();
        store
            .put_when_synced(vec![PendingRow::Layer(LayerRow {
                diff_id,
                size: tree_size(&path).unwrap(),
                created_at: last_used_at,
                last_used_at,
                from_image,
                description: name.into(),
                kind: LayerKind::Regular,
            })])
            .unwrap();
    }

    #[test]
    fn prune_keeps_base_layers_unless_all_and_removes_garbage() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        add_layer(&store, "old", 1000, 100, false);
        add_layer(&store, "new", 1000, 900, false);
        add_layer(&store, "base", 1000, 100, true);
        let (manifest, _) = store.put_blob(b"{\"manifest\":1}").unwrap();
        let (config, _) = store.put_blob(b"{\"config\":1}").unwrap();
        for digest in [&manifest, &config] {
            store
                .database()
                .put_blob(&crate::store::BlobRow {
                    digest: digest.clone(),
                    diff_id: None,
                    compression: "none".into(),
                    level: 0,
                    media_type: "m".into(),
                    size: 12,
                    last_used_at: 100,
                })
                .unwrap();
        }
        store.database().put_image_tag("docker.io/library/base:latest linux/amd64", &manifest, &config, 100).unwrap();
        fs::create_dir(root.path().join("snapshots-v1/orphan")).unwrap();
        fs::write(root.path().join("tmp/leftover"), "x").unwrap();
        let on_disk = tree_size(&root.path().join("snapshots-v1")).unwrap()
            - fs::metadata(root.path().join("snapshots-v1")).unwrap().len()
            - fs::metadata(root.path().join("snapshots-v1/orphan")).unwrap().len();
        let total: u64 = items(&store).unwrap().iter().filter(|item| item.kind != "internal").map(|item| item.size).sum();
        assert_eq!(total, on_disk);

        let removed = prune(&store, &PrunePolicy { unused_for: Some(500), ..Default::default() }, 1000).unwrap();
        assert_eq!(removed.iter().map(|item| item.description.as_str()).collect::<Vec<_>>(), ["old"]);
        // The base image's manifest and config stay with its layers.
        assert!(store.blob_path(&manifest).exists() && store.blob_path(&config).exists());
        assert!(store.database().image_tag("docker.io/library/base:latest linux/amd64").unwrap().is_some());
        assert!(!store.snapshot_path(&layer_diff_id("old")).exists());
        assert!(!root.path().join("snapshots-v1/orphan").exists());
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);

        prune(&store, &PrunePolicy { all: true, ..Default::default() }, 1000).unwrap();
        assert!(items(&store).unwrap().is_empty());
        assert!(store.database().image_tag("docker.io/library/base:latest linux/amd64").unwrap().is_none());
        assert_eq!(fs::read_dir(root.path().join("snapshots-v1")).unwrap().count(), 0);
    }

    #[test]
    fn cache_mounts_are_listed_and_pruned() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        let mounts = root.path().join("mounts-v1");
        fs::create_dir(mounts.join("abc")).unwrap();
        fs::write(mounts.join("abc/data"), vec![b'x'; 5000]).unwrap();
        fs::write(mounts.join("abc.id"), "/root/.cache").unwrap();
        fs::write(mounts.join("abc.lock"), "").unwrap();
        let listed = items(&store).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].kind, "exec.cachemount");
        assert_eq!(listed[0].description, "cached mount /root/.cache");
        assert_eq!(listed[0].size, tree_size(&mounts.join("abc")).unwrap());
        prune(&store, &PrunePolicy::default(), now()).unwrap();
        assert_eq!(fs::read_dir(&mounts).unwrap().count(), 0);
    }

    /// BuildKit's `calculateKeepBytes`, case by case.
    #[test]
    fn space_limits_give_what_stays() {
        let limits = |reserved, max_used, min_free| SpaceLimits { reserved, max_used, min_free };
        assert_eq!(limits(0, 0, 0).keep_bytes(1000, 50), None);
        assert_eq!(limits(0, 600, 0).keep_bytes(1000, 50), Some(600));
        assert_eq!(limits(800, 600, 0).keep_bytes(1000, 50), Some(800));
        assert_eq!(limits(300, 0, 0).keep_bytes(1000, 50), Some(300));
        // 250 bytes short of the free space: keep 250 less than there is.
        assert_eq!(limits(0, 0, 300).keep_bytes(1000, 50), Some(750));
        assert_eq!(limits(0, 600, 300).keep_bytes(1000, 50), Some(600));
        assert_eq!(limits(0, 900, 300).keep_bytes(1000, 50), Some(750));
        assert_eq!(limits(800, 0, 300).keep_bytes(1000, 50), Some(800));
        // Enough free: everything stays.
        assert_eq!(limits(0, 0, 30).keep_bytes(1000, 50), Some(1000));
        // More missing than the cache holds: all candidates go.
        assert_eq!(limits(0, 0, 5000).keep_bytes(1000, 50), Some(0));
    }

    #[test]
    fn prune_takes_what_the_filter_matches_and_min_free_space_what_is_missing() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        for (name, time) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
            add_layer(&store, name, 1000, time, false);
        }
        let filter = crate::store::filter::RecordFilter::from_flags(&["description~=^b$".into()], |_| Err("no duration here".into()))
            .unwrap()
            .filter;
        let removed = prune(&store, &PrunePolicy { filter, ..Default::default() }, 10).unwrap();
        assert_eq!(removed.iter().map(|item| item.description.as_str()).collect::<Vec<_>>(), ["b"]);
        // Enough free already (1 byte wanted): nothing goes.
        let space = |min_free| PrunePolicy { space: SpaceLimits { min_free, ..Default::default() }, ..Default::default() };
        assert!(prune(&store, &space(1), 10).unwrap().is_empty());
        // More wanted than the disk holds: everything goes, oldest first. (Between the two the
        // amount depends on the free space, which other processes change: see
        // `space_limits_give_what_stays`.)
        assert!(free_space(root.path()).unwrap() > 0);
        let removed = prune(&store, &space(u64::MAX / 4), 10).unwrap();
        assert_eq!(removed.iter().map(|item| item.description.as_str()).collect::<Vec<_>>(), ["a", "c", "d"]);
    }

    #[test]
    fn keep_storage_removes_least_recently_used_first() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path(), LockMode::Shared).unwrap();
        add_layer(&store, "a", 10_000, 1, false);
        add_layer(&store, "b", 10_000, 2, false);
        add_layer(&store, "c", 10_000, 3, false);
        // Each item is 10 000 bytes of file plus its directory entry; 30 000 keeps two.
        let policy = PrunePolicy { space: SpaceLimits { max_used: 30_000, ..Default::default() }, ..Default::default() };
        let removed = prune(&store, &policy, 10).unwrap();
        assert_eq!(removed.iter().map(|item| item.description.as_str()).collect::<Vec<_>>(), ["a"]);
    }
}
