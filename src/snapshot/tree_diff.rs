//! The copying snapshotter's two halves, for hosts where an overlay cannot be mounted: a step's
//! root filesystem is a plain copy of its snapshots ([`prepare_rootfs`]), and after the step
//! [`diff`] writes into an empty directory exactly what an overlay upperdir would hold for the
//! same changes. That directory is then a snapshot like any other (overlay format: whiteouts are
//! character devices 0/0, opaque directories carry `user.overlay.opaque=y`), so
//! `layer_tar::write_layer_tar` turns it into the layer as it does an overlay upperdir.
//!
//! What the diff writes, for each path of the changed tree compared with the lower view:
//! - a path missing below, or whose type changed: written whole (a directory with all its
//!   contents);
//! - a path of the same type whose metadata differs: copied. Compared: file type and permission
//!   bits, owner, group, mtime with nanoseconds, extended attributes (overlay ones aside), the
//!   target of a symlink, the device number of a device, the size of a regular file;
//! - a path in the lower view but not in the changed tree: a whiteout;
//! - a directory present on both sides is merged: only its changed entries are written, and the
//!   directory itself (with its own metadata) only when it changed or something below it did.
//!
//! Decisions:
//! - A regular file with the same size and mtime (to the nanosecond) is unchanged; contents are
//!   never read. Reading them would double the cost of every step (the whole root filesystem read
//!   again). The price: a step that rewrites a file with same-size content and then sets its
//!   mtime back to the old value to the nanosecond (`touch -r`, `cp -p` from a twin, `tar x` of
//!   the same timestamps) is missed. continuity (BuildKit's differ) reads contents only when both
//!   mtimes have zero nanoseconds; image files usually do, so that rule would read nearly all.
//! - Opaque directories, as overlayfs makes them: a directory that replaces a non-directory is
//!   marked opaque (overlayfs marks every directory created over a whiteout). A directory present
//!   on both sides whose lower entries are all gone is marked opaque instead of getting one
//!   whiteout per entry: the merged result is the same, and it is what `rm -rf dir && mkdir dir`
//!   gives in an overlay. An overlay would keep whiteouts where the entries were removed one by
//!   one (`rm dir/*`); both forms mean the same tree.
//! - Hard links: every path of an inode that has several paths in the changed tree is written
//!   when one of them is, as one inode in the upper directory (overlayfs copies up the source of
//!   a `link`). Paths of an inode left untouched stay out.
//! - Directory mtimes in the result are the changed tree's, which may differ from an overlay's
//!   upperdir for the same commands run at another moment; the tree they describe is the same.
//!
//! Invariants: `upper` receives only entries this module creates; the lower snapshots and the
//! changed tree are only read. Ownership is written as found, which needs root; rbuild always runs
//! as root inside its own user namespace, so `chown` works rootless too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};

use super::flatten::{FileMode, FlattenError, flatten, set_times};
use super::layer_tar::{OPAQUE_XATTRS, is_overlay_xattr};
use super::view::{LayeredView, Node, is_whiteout_name};

/// Xattr (name, value) pairs, sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// What [`diff`] found, counted per path written. A directory counts when its own metadata
/// changed, mtime included (so a directory that gained or lost an entry counts); one copied only
/// because something deeper changed does not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffSummary {
    /// Paths missing from the lower view.
    pub added: u64,
    /// Paths present below whose type, metadata or contents changed.
    pub modified: u64,
    /// Paths removed: whiteouts written, plus one per directory made opaque.
    pub deleted: u64,
}

impl DiffSummary {
    pub fn is_empty(&self) -> bool {
        self.added == 0 && self.modified == 0 && self.deleted == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeDiffError {
    #[error("failed to read `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write `{path}`")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to copy the snapshots into `{path}`")]
    Prepare {
        path: PathBuf,
        #[source]
        source: FlattenError,
    },
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> TreeDiffError + use<> {
    let path = path.to_path_buf();
    move |source| TreeDiffError::Read { path, source }
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> TreeDiffError + use<> {
    let path = path.to_path_buf();
    move |source| TreeDiffError::Write { path, source }
}

fn errno(errno: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

/// Fills `directory` (created if missing, else expected empty) with a copy of the view: the root
/// filesystem of a step under the copying snapshotter. Ownership, modes, times (nanoseconds),
/// xattrs and hard links within a layer are kept, so an untouched copy diffs as empty.
///
/// The root directory itself becomes `0755` owned by `0:0`, as in images: the snapshot
/// directories' own roots are store temp directories (`0700`), which would shut out every
/// `USER` but root. A layer never carries the root's metadata, so the diff ignores it.
pub fn prepare_rootfs(view: &LayeredView, directory: &Path) -> Result<(), TreeDiffError> {
    flatten(view, directory, FileMode::Copy).map_err(|source| TreeDiffError::Prepare {
        path: directory.to_path_buf(),
        source,
    })?;
    // flatten copies the xattrs of files only; a directory without its xattrs would show up in
    // every diff as modified (and lose them in the layer).
    let root = view.root().map_err(read_error(directory))?;
    copy_directory_xattrs(view, &root, directory)?;
    lchown(directory, Some(0), Some(0)).map_err(write_error(directory))?;
    fs::set_permissions(directory, fs::Permissions::from_mode(0o755))
        .map_err(write_error(directory))
}

fn copy_directory_xattrs(
    view: &LayeredView,
    node: &Node,
    target: &Path,
) -> Result<(), TreeDiffError> {
    for (name, child) in view.read_dir(node).map_err(read_error(target))? {
        let Node::Directory { stack, .. } = &child else {
            continue;
        };
        if is_whiteout_name(&name) {
            continue;
        }
        let child_target = target.join(&name);
        if let Some(top) = stack.first() {
            for (key, value) in content_xattrs(top)? {
                xattr::set(&child_target, OsStr::from_bytes(&key), &value)
                    .map_err(write_error(&child_target))?;
            }
        }
        copy_directory_xattrs(view, &child, &child_target)?;
    }
    Ok(())
}

/// Writes into `upper` (an existing, empty directory) the overlay upperdir that turns `lower`
/// into the tree at `changed`. See the module docs for the rules.
pub fn diff(
    lower: &LayeredView,
    changed: &Path,
    upper: &Path,
) -> Result<DiffSummary, TreeDiffError> {
    let mut differ = Differ {
        view: lower,
        forced_inodes: HashSet::new(),
        written_inodes: HashMap::new(),
        summary: DiffSummary::default(),
    };
    differ.find_forced_links(changed)?;
    let root = lower.root().map_err(read_error(changed))?;
    // The root cannot be opaque: a layer has no entry for it.
    differ.directory(Some(&root), changed, upper, false)?;
    Ok(differ.summary)
}

struct Differ<'a> {
    view: &'a LayeredView,
    /// Inodes of the changed tree (device, inode) whose paths must all be written: one of them
    /// differs from below.
    forced_inodes: HashSet<(u64, u64)>,
    /// Inode of the changed tree → its first path written into the upper directory.
    written_inodes: HashMap<(u64, u64), PathBuf>,
    summary: DiffSummary,
}

/// What a directory's walk did to the upper directory.
struct DirectoryOutcome {
    wrote: bool,
    opaque: bool,
}

impl Differ<'_> {
    /// Finds the hard-linked inodes of `changed` of which some path differs from below.
    fn find_forced_links(&mut self, changed: &Path) -> Result<(), TreeDiffError> {
        let mut groups: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
        for entry in walkdir::WalkDir::new(changed).min_depth(1) {
            let entry = entry.map_err(|error| {
                let path = error.path().unwrap_or(changed).to_path_buf();
                TreeDiffError::Read {
                    path,
                    source: io::Error::other(error),
                }
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let metadata = entry.metadata().map_err(|error| TreeDiffError::Read {
                path: entry.path().to_path_buf(),
                source: io::Error::other(error),
            })?;
            if metadata.nlink() > 1 {
                groups
                    .entry((metadata.dev(), metadata.ino()))
                    .or_default()
                    .push(entry.path().to_path_buf());
            }
        }
        for (inode, paths) in groups {
            if paths.len() < 2 {
                continue;
            }
            for path in &paths {
                let relative = path.strip_prefix(changed).unwrap_or(path);
                let below = self.lower_node(relative).map_err(read_error(path))?;
                let metadata = fs::symlink_metadata(path).map_err(read_error(path))?;
                let same = match &below {
                    Node::Leaf {
                        path: lower_path,
                        metadata: lower_metadata,
                    } => same_entry(lower_path, lower_metadata, path, &metadata)?,
                    _ => false,
                };
                if !same {
                    self.forced_inodes.insert(inode);
                    break;
                }
            }
        }
        Ok(())
    }

    /// The lower node at `relative`, without following symlinks on the way.
    fn lower_node(&self, relative: &Path) -> io::Result<Node> {
        let mut node = self.view.root()?;
        for component in relative.components() {
            node = self.view.child(&node, component.as_os_str())?;
            if !node.exists() {
                break;
            }
        }
        Ok(node)
    }

    fn directory(
        &mut self,
        lower: Option<&Node>,
        changed: &Path,
        upper: &Path,
        may_be_opaque: bool,
    ) -> Result<DirectoryOutcome, TreeDiffError> {
        let mut lower_entries: BTreeMap<OsString, Node> = match lower {
            Some(node) => self.view.read_dir(node).map_err(read_error(changed))?,
            None => BTreeMap::new(),
        };
        lower_entries.retain(|name, _| !is_whiteout_name(name));
        let mut names = Vec::new();
        for entry in fs::read_dir(changed).map_err(read_error(changed))? {
            names.push(entry.map_err(read_error(changed))?.file_name());
        }
        names.sort();
        let all_gone = may_be_opaque
            && !lower_entries.is_empty()
            && names.iter().all(|name| !lower_entries.contains_key(name));
        let mut wrote = false;
        for name in &names {
            let changed_path = changed.join(name);
            let upper_path = upper.join(name);
            let metadata =
                fs::symlink_metadata(&changed_path).map_err(read_error(&changed_path))?;
            let below = lower_entries.remove(name);
            if metadata.is_dir() {
                wrote |=
                    self.child_directory(below.as_ref(), &changed_path, &metadata, &upper_path)?;
                continue;
            }
            let same = match &below {
                Some(Node::Leaf {
                    path,
                    metadata: lower_metadata,
                }) => same_entry(path, lower_metadata, &changed_path, &metadata)?,
                _ => false,
            };
            let forced = metadata.nlink() > 1
                && self
                    .forced_inodes
                    .contains(&(metadata.dev(), metadata.ino()));
            if same && !forced {
                continue;
            }
            if !same {
                if below.is_some() {
                    self.summary.modified += 1
                } else {
                    self.summary.added += 1
                }
            }
            self.write_leaf(&changed_path, &metadata, &upper_path)?;
            wrote = true;
        }
        if all_gone {
            self.summary.deleted += 1;
            return Ok(DirectoryOutcome {
                wrote: true,
                opaque: true,
            });
        }
        for name in lower_entries.keys() {
            let path = upper.join(name);
            nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .map_err(errno)
            .map_err(write_error(&path))?;
            self.summary.deleted += 1;
            wrote = true;
        }
        Ok(DirectoryOutcome {
            wrote,
            opaque: false,
        })
    }

    /// Handles a directory of the changed tree; returns whether anything was written for it.
    fn child_directory(
        &mut self,
        below: Option<&Node>,
        changed: &Path,
        metadata: &Metadata,
        upper: &Path,
    ) -> Result<bool, TreeDiffError> {
        // Created before its contents are known and removed again when nothing was written:
        // cheaper than a second walk to decide up front. Writable while it fills.
        fs::create_dir(upper).map_err(write_error(upper))?;
        fs::set_permissions(upper, fs::Permissions::from_mode(0o700))
            .map_err(write_error(upper))?;
        let (outcome, changed_itself, replaces) = match below {
            Some(
                node @ Node::Directory {
                    stack,
                    metadata: lower_metadata,
                },
            ) => {
                let outcome = self.directory(Some(node), changed, upper, true)?;
                let same = match stack.first() {
                    Some(top) => same_entry(top, lower_metadata, changed, metadata)?,
                    None => false,
                };
                (outcome, !same, false)
            }
            other => {
                let outcome = self.directory(None, changed, upper, true)?;
                (outcome, true, other.is_some())
            }
        };
        if !outcome.wrote && !changed_itself {
            fs::remove_dir(upper).map_err(write_error(upper))?;
            return Ok(false);
        }
        if changed_itself {
            if below.is_some() {
                self.summary.modified += 1
            } else {
                self.summary.added += 1
            }
        }
        // A directory over a removed non-directory is opaque in an overlay too.
        self.finish_directory(changed, metadata, upper, outcome.opaque || replaces)?;
        Ok(true)
    }

    /// Sets a written directory's metadata; times last, after its contents.
    fn finish_directory(
        &self,
        changed: &Path,
        metadata: &Metadata,
        upper: &Path,
        opaque: bool,
    ) -> Result<(), TreeDiffError> {
        lchown(upper, Some(metadata.uid()), Some(metadata.gid())).map_err(write_error(upper))?;
        fs::set_permissions(upper, fs::Permissions::from_mode(metadata.mode() & 0o7777))
            .map_err(write_error(upper))?;
        copy_xattrs(changed, upper)?;
        if opaque {
            xattr::set(upper, OPAQUE_XATTRS[0], b"y").map_err(write_error(upper))?;
        }
        set_times(upper, metadata.mtime(), metadata.mtime_nsec()).map_err(write_error(upper))
    }

    fn write_leaf(
        &mut self,
        changed: &Path,
        metadata: &Metadata,
        upper: &Path,
    ) -> Result<(), TreeDiffError> {
        let inode = (metadata.dev(), metadata.ino());
        if metadata.nlink() > 1 {
            if let Some(first) = self.written_inodes.get(&inode) {
                return fs::hard_link(first, upper).map_err(write_error(upper));
            }
            self.written_inodes.insert(inode, upper.to_path_buf());
        }
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(changed).map_err(read_error(changed))?;
            symlink(&target, upper).map_err(write_error(upper))?;
        } else if file_type.is_file() {
            fs::copy(changed, upper).map_err(write_error(upper))?;
        } else {
            // Devices, fifos and sockets.
            let kind = nix::sys::stat::SFlag::from_bits_truncate(metadata.mode() & libc::S_IFMT);
            let permissions = nix::sys::stat::Mode::from_bits_truncate(metadata.mode() & 0o7777);
            nix::sys::stat::mknod(upper, kind, permissions, metadata.rdev())
                .map_err(errno)
                .map_err(write_error(upper))?;
        }
        lchown(upper, Some(metadata.uid()), Some(metadata.gid())).map_err(write_error(upper))?;
        if !file_type.is_symlink() {
            // After the chown, which clears set-id bits.
            fs::set_permissions(upper, fs::Permissions::from_mode(metadata.mode() & 0o7777))
                .map_err(write_error(upper))?;
        }
        copy_xattrs(changed, upper)?;
        set_times(upper, metadata.mtime(), metadata.mtime_nsec()).map_err(write_error(upper))
    }
}

/// Whether two entries of the same path are the same for a layer (see the module docs).
fn same_entry(
    lower: &Path,
    lower_metadata: &Metadata,
    changed: &Path,
    metadata: &Metadata,
) -> Result<bool, TreeDiffError> {
    if lower_metadata.mode() != metadata.mode()
        || lower_metadata.uid() != metadata.uid()
        || lower_metadata.gid() != metadata.gid()
        || lower_metadata.mtime() != metadata.mtime()
        || lower_metadata.mtime_nsec() != metadata.mtime_nsec()
    {
        return Ok(false);
    }
    let file_type = metadata.file_type();
    // Directory sizes depend on the filesystem and on past entries, not on the tree.
    if file_type.is_file() && lower_metadata.len() != metadata.len() {
        return Ok(false);
    }
    if (file_type.is_char_device() || file_type.is_block_device())
        && lower_metadata.rdev() != metadata.rdev()
    {
        return Ok(false);
    }
    if file_type.is_symlink()
        && fs::read_link(lower).map_err(read_error(lower))?
            != fs::read_link(changed).map_err(read_error(changed))?
    {
        return Ok(false);
    }
    Ok(content_xattrs(lower)? == content_xattrs(changed)?)
}

/// The xattrs of `path` (not following a symlink) that describe the file, sorted; overlay
/// xattrs describe the snapshot format and are left out.
fn content_xattrs(path: &Path) -> Result<Xattrs, TreeDiffError> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(error) if error.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(error) => return Err(read_error(path)(error)),
    };
    let mut xattrs = Vec::new();
    for name in names {
        if is_overlay_xattr(name.as_bytes()) {
            continue;
        }
        if let Some(value) = xattr::get(path, &name).map_err(read_error(path))? {
            xattrs.push((name.as_bytes().to_vec(), value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

fn copy_xattrs(source: &Path, target: &Path) -> Result<(), TreeDiffError> {
    for (name, value) in content_xattrs(source)? {
        xattr::set(target, OsStr::from_bytes(&name), &value).map_err(write_error(target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::ffi::OsStringExt;

    use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
    use crate::snapshot::view;

    const FROZEN: i64 = 1_600_000_000;

    fn write(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn whiteout(path: &Path) {
        nix::sys::stat::mknod(
            path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .expect("mknod needs root (tests run as root)");
    }

    /// Whole-second mtimes on everything, as layers extracted from image tars have.
    fn freeze_times(root: &Path) {
        for entry in walkdir::WalkDir::new(root)
            .min_depth(1)
            .contents_first(true)
        {
            set_times(entry.unwrap().path(), FROZEN, 0).unwrap();
        }
    }

    /// Two snapshot directories in overlay format, bottom first.
    fn lowers() -> (tempfile::TempDir, tempfile::TempDir) {
        let base = tempfile::tempdir().unwrap();
        let root = base.path();
        write(&root.join("bin/tool"), "tool");
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        write(&root.join("etc/config"), "old config");
        write(&root.join("etc/obsolete"), "x");
        write(&root.join("etc/hosts.base"), "hosts");
        write(&root.join("etc/xattrfile"), "x");
        xattr::set(root.join("etc/xattrfile"), "user.test", b"old").unwrap();
        write(&root.join("etc/removed"), "removed by the second layer");
        write(&root.join("home/user/file"), "f");
        lchown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
        write(&root.join("var/cache/apt/pkg"), "p");
        write(&root.join("var/cache/index"), "i");
        write(
            &root.join("var/log/hidden"),
            "hidden by an opaque directory",
        );
        write(&root.join("opt/thing"), "thing");
        write(&root.join("srv/data/inner"), "inner");
        write(&root.join("usr/lib/a"), "linked");
        fs::hard_link(root.join("usr/lib/a"), root.join("usr/lib/b")).unwrap();
        write(&root.join("emptied/one"), "1");
        write(&root.join("emptied/two"), "2");
        fs::create_dir_all(root.join("dev")).unwrap();
        nix::sys::stat::mknod(
            &root.join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            libc::makedev(1, 3),
        )
        .unwrap();
        fs::create_dir_all(root.join("tagged")).unwrap();
        xattr::set(root.join("tagged"), "user.tag", b"directory").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        freeze_times(root);

        let second = tempfile::tempdir().unwrap();
        let root = second.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        whiteout(&root.join("etc/removed"));
        write(&root.join("var/log/new.log"), "log");
        xattr::set(root.join("var/log"), "user.overlay.opaque", b"y").unwrap();
        write(&root.join("etc/config"), "old config"); // same size as below: the top one counts
        freeze_times(root);
        set_times(&root.join("etc/config"), FROZEN + 5, 0).unwrap();
        set_times(&root.join("etc"), FROZEN, 0).unwrap();
        (base, second)
    }

    fn view_of(layers: &[&Path]) -> LayeredView {
        LayeredView::new(layers.iter().map(|path| path.to_path_buf()))
    }

    /// The same changes, done on the copy or through an overlay mount.
    fn apply_changes(root: &Path) {
        fs::write(root.join("new.txt"), "new").unwrap();
        fs::write(root.join("etc/config"), "new config, longer").unwrap();
        fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
        lchown(root.join("home/user/file"), Some(1000), Some(1000)).unwrap();
        fs::remove_file(root.join("etc/obsolete")).unwrap();
        fs::remove_dir_all(root.join("var/cache")).unwrap();
        fs::remove_file(root.join("opt/thing")).unwrap();
        fs::create_dir(root.join("opt/thing")).unwrap();
        fs::write(root.join("opt/thing/child"), "child").unwrap();
        fs::remove_dir_all(root.join("srv/data")).unwrap();
        fs::write(root.join("srv/data"), "now a file").unwrap();
        symlink("../etc/config", root.join("usr/link")).unwrap();
        fs::write(root.join("usr/one"), "pair").unwrap();
        fs::hard_link(root.join("usr/one"), root.join("usr/two")).unwrap();
        fs::hard_link(root.join("etc/hosts.base"), root.join("etc/hosts.link")).unwrap();
        xattr::set(root.join("etc/xattrfile"), "user.test", b"new").unwrap();
    }

    #[derive(Debug, PartialEq, Eq)]
    struct TreeEntry {
        path: PathBuf,
        kind: u32,
        mode: u32,
        owner: (u32, u32),
        mtime: (i64, i64),
        content: Vec<u8>,
        xattrs: Xattrs,
        device: u64,
        /// The first path (in walk order) of the same inode, for hard links.
        first_link: PathBuf,
    }

    fn tree(root: &Path) -> Vec<TreeEntry> {
        let mut first_paths: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut entries = Vec::new();
        for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let metadata = fs::symlink_metadata(path).unwrap();
            let file_type = metadata.file_type();
            let content = if file_type.is_symlink() {
                fs::read_link(path).unwrap().into_os_string().into_vec()
            } else if file_type.is_file() {
                fs::read(path).unwrap()
            } else {
                Vec::new()
            };
            let first_link = if metadata.is_dir() {
                relative.clone()
            } else {
                first_paths
                    .entry((metadata.dev(), metadata.ino()))
                    .or_insert_with(|| relative.clone())
                    .clone()
            };
            entries.push(TreeEntry {
                kind: metadata.mode() & libc::S_IFMT,
                mode: metadata.mode() & 0o7777,
                owner: (metadata.uid(), metadata.gid()),
                mtime: (metadata.mtime(), metadata.mtime_nsec()),
                content,
                xattrs: content_xattrs(path).unwrap(),
                device: if file_type.is_char_device() || file_type.is_block_device() {
                    metadata.rdev()
                } else {
                    0
                },
                first_link,
                path: relative,
            });
        }
        entries
    }

    fn assert_same_trees(expected: &Path, actual: &Path) {
        let expected = tree(expected);
        let actual = tree(actual);
        for (left, right) in expected.iter().zip(&actual) {
            assert_eq!(left, right);
        }
        assert_eq!(expected.len(), actual.len(), "{expected:#?}\n{actual:#?}");
    }

    fn names(directory: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_untouched_copy_diffs_as_empty() {
        let (base, second) = lowers();
        let view = view_of(&[base.path(), second.path()]);
        let changed = tempfile::tempdir().unwrap();
        prepare_rootfs(&view, changed.path()).unwrap();
        let root = fs::metadata(changed.path()).unwrap();
        assert_eq!(
            (root.mode() & 0o7777, root.uid(), root.gid()),
            (0o755, 0, 0)
        );
        assert_eq!(
            xattr::get(changed.path().join("tagged"), "user.tag")
                .unwrap()
                .unwrap(),
            b"directory"
        );
        assert!(!changed.path().join("etc/removed").exists());
        assert_eq!(names(&changed.path().join("var/log")), ["new.log"]);

        let upper = tempfile::tempdir().unwrap();
        let summary = diff(&view, changed.path(), upper.path()).unwrap();
        assert_eq!(summary, DiffSummary::default());
        assert!(names(upper.path()).is_empty());
    }

    #[test]
    fn scripted_changes_round_trip_through_a_layered_view() {
        let (base, second) = lowers();
        let view = view_of(&[base.path(), second.path()]);
        let changed = tempfile::tempdir().unwrap();
        prepare_rootfs(&view, changed.path()).unwrap();
        apply_changes(changed.path());
        // Beyond the overlay script: every entry of a directory removed one by one.
        fs::remove_file(changed.path().join("emptied/one")).unwrap();
        fs::remove_file(changed.path().join("emptied/two")).unwrap();
        fs::write(changed.path().join("emptied/three"), "3").unwrap();
        // A directory whose own metadata alone changed.
        fs::set_permissions(
            changed.path().join("tagged"),
            fs::Permissions::from_mode(0o700),
        )
        .unwrap();

        let upper = tempfile::tempdir().unwrap();
        let summary = diff(&view, changed.path(), upper.path()).unwrap();

        let upper_root = upper.path();
        assert_eq!(
            names(upper_root),
            [
                "bin", "emptied", "etc", "home", "new.txt", "opt", "srv", "tagged", "usr", "var"
            ]
        );
        assert_eq!(
            names(&upper_root.join("etc")),
            [
                "config",
                "hosts.base",
                "hosts.link",
                "obsolete",
                "xattrfile"
            ]
        );
        assert!(view::is_whiteout(
            &fs::symlink_metadata(upper_root.join("etc/obsolete")).unwrap()
        ));
        assert!(view::is_whiteout(
            &fs::symlink_metadata(upper_root.join("var/cache")).unwrap()
        ));
        assert_eq!(names(&upper_root.join("var")), ["cache"]);
        assert!(view::is_opaque(&upper_root.join("emptied")));
        assert_eq!(names(&upper_root.join("emptied")), ["three"]);
        assert!(view::is_opaque(&upper_root.join("opt/thing")));
        assert!(!view::is_opaque(&upper_root.join("etc")));
        assert!(upper_root.join("srv/data").is_file());
        assert_eq!(names(&upper_root.join("usr")), ["link", "one", "two"]);
        assert!(names(&upper_root.join("tagged")).is_empty());
        let hosts = fs::metadata(upper_root.join("etc/hosts.base")).unwrap();
        assert_eq!(
            hosts.ino(),
            fs::metadata(upper_root.join("etc/hosts.link"))
                .unwrap()
                .ino()
        );
        assert_eq!(hosts.mtime(), FROZEN);
        assert_eq!(
            summary,
            // added: new.txt, hosts.link, opt/thing/child, usr/link, usr/one, usr/two, emptied/three;
            // modified: config, tool, file, xattrfile, opt/thing, srv/data, tagged, and the
            // directories whose entries changed (etc, var, opt, srv, usr, emptied);
            // deleted: obsolete, var/cache, emptied (opaque).
            DiffSummary {
                added: 7,
                modified: 13,
                deleted: 3
            }
        );

        let merged = tempfile::tempdir().unwrap();
        let stacked = view_of(&[base.path(), second.path(), upper_root]);
        // prepare_rootfs rather than bare flatten, which leaves directory xattrs behind.
        prepare_rootfs(&stacked, merged.path()).unwrap();
        assert_same_trees(changed.path(), merged.path());
    }

    /// An overlay mount, unmounted on drop (also when a test fails).
    struct OverlayMount(PathBuf);

    impl Drop for OverlayMount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    struct TarEntry {
        name: Vec<u8>,
        kind: u8,
        mode: u32,
        owner: (u64, u64),
        size: u64,
        link: Vec<u8>,
        xattrs: Xattrs,
        content: Vec<u8>,
    }

    /// The layer tar of a snapshot, entry by entry; mtimes left out.
    fn layer_entries(snapshot: &Path) -> Vec<TarEntry> {
        let mut bytes = Vec::new();
        write_layer_tar(snapshot, &mut bytes, &LayerTarOptions::default()).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut xattrs = Vec::new();
            if let Some(extensions) = entry.pax_extensions().unwrap() {
                for extension in extensions {
                    let extension = extension.unwrap();
                    if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                        xattrs.push((name.to_vec(), extension.value_bytes().to_vec()));
                    }
                }
            }
            let header = entry.header().clone();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            entries.push(TarEntry {
                name: entry.path_bytes().into_owned(),
                kind: header.entry_type().as_byte(),
                mode: header.mode().unwrap(),
                owner: (header.uid().unwrap(), header.gid().unwrap()),
                size: header.size().unwrap(),
                link: entry
                    .link_name_bytes()
                    .map(|link| link.into_owned())
                    .unwrap_or_default(),
                xattrs,
                content,
            });
        }
        entries
    }

    #[test]
    fn overlay_and_tree_diff_write_the_same_layer() {
        let (base, second) = lowers();
        let view = view_of(&[base.path(), second.path()]);

        let copy = tempfile::tempdir().unwrap();
        prepare_rootfs(&view, copy.path()).unwrap();
        apply_changes(copy.path());
        let tree_upper = tempfile::tempdir().unwrap();
        diff(&view, copy.path(), tree_upper.path()).unwrap();

        let scratch = tempfile::tempdir().unwrap();
        let [overlay_upper, work, merged] =
            ["upper", "work", "merged"].map(|name| scratch.path().join(name));
        for path in [&overlay_upper, &work, &merged] {
            fs::create_dir(path).unwrap();
        }
        let options = format!(
            "lowerdir={}:{},upperdir={},workdir={},userxattr",
            second.path().display(),
            base.path().display(),
            overlay_upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("overlay mounts need root (tests run as root)");
        let mount = OverlayMount(merged.clone());
        apply_changes(&merged);
        drop(mount);

        let from_overlay = layer_entries(&overlay_upper);
        let from_tree_diff = layer_entries(tree_upper.path());
        let listing = |entries: &[TarEntry]| -> Vec<String> {
            entries
                .iter()
                .map(|entry| String::from_utf8_lossy(&entry.name).into_owned())
                .collect()
        };
        assert_eq!(listing(&from_tree_diff), listing(&from_overlay));
        for (tree_entry, overlay_entry) in from_tree_diff.iter().zip(&from_overlay) {
            assert_eq!(tree_entry, overlay_entry);
        }
        assert!(listing(&from_overlay).contains(&"opt/thing/.wh..wh..opq".to_string()));
    }
}
