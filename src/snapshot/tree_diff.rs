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
//! - Contents are never read: reading them would double the cost of every step (the whole root
//!   filesystem read again). A regular file is changed when its size or mtime differ, or, for a
//!   tree made by [`prepare_rootfs`], when its ctime is later than the moment the copy was
//!   complete ([`Prepared::settled`]): the kernel sets ctime on every write, chmod, link or
//!   `touch -d`, and no program can set it back. Without that a step that rewrote a file with
//!   same-size content and then set its mtime back (`echo bbbb > f && touch -d @0 f`, or
//!   `groupadd` on `/etc/group-`) was missed, where overlay (and BuildKit) copy it up.
//!   [`prepare_rootfs`] waits until the clock that stamps ctime has moved past its last write
//!   (the coarse clock: a few milliseconds at most), so a change can never share that stamp.
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
pub fn prepare_rootfs(view: &LayeredView, directory: &Path) -> Result<Prepared, TreeDiffError> {
    flatten(view, directory, FileMode::Copy).map_err(|source| TreeDiffError::Prepare { path: directory.to_path_buf(), source })?;
    // flatten copies the xattrs of files only; a directory without its xattrs would show up in
    // every diff as modified (and lose them in the layer).
    let root = view.root().map_err(read_error(directory))?;
    copy_directory_xattrs(view, &root, directory)?;
    lchown(directory, Some(0), Some(0)).map_err(write_error(directory))?;
    fs::set_permissions(directory, fs::Permissions::from_mode(0o755)).map_err(write_error(directory))?;
    let settled = settle_clock(directory).map_err(write_error(directory))?;
    Ok(Prepared { settled })
}

/// What [`diff`] needs to know of a tree made by [`prepare_rootfs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// The ctime (seconds, nanoseconds) of the copy's last write: a file whose ctime is later
    /// was changed after the copy.
    pub settled: (i64, i64),
}

/// The ctime stamp of a file created now in `directory`, returned once a newer file gets a
/// strictly later stamp (so nothing written afterwards can carry it). The probe files are
/// removed; the directory's own times change, which no layer carries.
fn settle_clock(directory: &Path) -> io::Result<(i64, i64)> {
    let probe = directory.join(".rbuild-clock-probe");
    let stamp = |path: &Path| -> io::Result<(i64, i64)> {
        fs::File::create(path)?;
        let metadata = fs::symlink_metadata(path)?;
        fs::remove_file(path)?;
        Ok((metadata.ctime(), metadata.ctime_nsec()))
    };
    let settled = stamp(&probe)?;
    // The coarse clock ticks every few milliseconds; 2,000 tries of 1 ms bound a stuck clock.
    for _ in 0..2000 {
        if stamp(&probe)? > settled {
            return Ok(settled);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(io::Error::other("the file time stamps did not advance"))
}

fn copy_directory_xattrs(view: &LayeredView, node: &Node, target: &Path) -> Result<(), TreeDiffError> {
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
                xattr::set(&child_target, OsStr::from_bytes(&key), &value).map_err(write_error(&child_target))?;
            }
        }
        copy_directory_xattrs(view, &child, &child_target)?;
    }
    Ok(())
}

/// Writes into `upper` (an existing, empty directory) the overlay upperdir that turns `lower`
/// into the tree at `changed`. See the module docs for the rules.
pub fn diff(lower: &LayeredView, changed: &Path, upper: &Path, prepared: Option<Prepared>) -> Result<DiffSummary, TreeDiffError> {
    let mut differ =
        Differ { view: lower, prepared, forced_inodes: HashSet::new(), written_inodes: HashMap::new(), summary: DiffSummary::default() };
    differ.find_forced_links(changed)?;
    let root = lower.root().map_err(read_error(changed))?;
    // The root cannot be opaque: a layer has no entry for it.
    differ.directory(Some(&root), changed, upper, false)?;
    Ok(differ.summary)
}

struct Differ<'a> {
    view: &'a LayeredView,
    /// Set when `changed` was made by [`prepare_rootfs`]: ctimes then tell changes apart.
    prepared: Option<Prepared>,
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
                TreeDiffError::Read { path, source: io::Error::other(error) }
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let metadata = entry
                .metadata()
                .map_err(|error| TreeDiffError::Read { path: entry.path().to_path_buf(), source: io::Error::other(error) })?;
            if metadata.nlink() > 1 {
                groups.entry((metadata.dev(), metadata.ino())).or_default().push(entry.path().to_path_buf());
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
                    Node::Leaf { path: lower_path, metadata: lower_metadata } => {
                        same_entry(lower_path, lower_metadata, path, &metadata, self.prepared)?
                    }
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
        let all_gone = may_be_opaque && !lower_entries.is_empty() && names.iter().all(|name| !lower_entries.contains_key(name));
        let mut wrote = false;
        for name in &names {
            let changed_path = changed.join(name);
            let upper_path = upper.join(name);
            let metadata = fs::symlink_metadata(&changed_path).map_err(read_error(&changed_path))?;
            let below = lower_entries.remove(name);
            if metadata.is_dir() {
                wrote |= self.child_directory(below.as_ref(), &changed_path, &metadata, &upper_path)?;
                continue;
            }
            let same = match &below {
                Some(Node::Leaf { path, metadata: lower_metadata }) => {
                    same_entry(path, lower_metadata, &changed_path, &metadata, self.prepared)?
                }
                _ => false,
            };
            let forced = metadata.nlink() > 1 && self.forced_inodes.contains(&(metadata.dev(), metadata.ino()));
            if same && !forced {
                continue;
            }
            if !same {
                if below.is_some() { self.summary.modified += 1 } else { self.summary.added += 1 }
            }
            self.write_leaf(&changed_path, &metadata, &upper_path)?;
            wrote = true;
        }
        if all_gone {
            self.summary.deleted += 1;
            return Ok(DirectoryOutcome { wrote: true, opaque: true });
        }
        for name in lower_entries.keys() {
            let path = upper.join(name);
            nix::sys::stat::mknod(&path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
                .map_err(errno)
                .map_err(write_error(&path))?;
            self.summary.deleted += 1;
            wrote = true;
        }
        Ok(DirectoryOutcome { wrote, opaque: false })
    }

    /// Handles a directory of the changed tree; returns whether anything was written for it.
    fn child_directory(&mut self, below: Option<&Node>, changed: &Path, metadata: &Metadata, upper: &Path) -> Result<bool, TreeDiffError> {
        // Created before its contents are known and removed again when nothing was written:
        // cheaper than a second walk to decide up front. Writable while it fills.
        fs::create_dir(upper).map_err(write_error(upper))?;
        fs::set_permissions(upper, fs::Permissions::from_mode(0o700)).map_err(write_error(upper))?;
        let (outcome, changed_itself, replaces) = match below {
            Some(node @ Node::Directory { stack, metadata: lower_metadata }) => {
                let outcome = self.directory(Some(node), changed, upper, true)?;
                let same = match stack.first() {
                    Some(top) => same_entry(top, lower_metadata, changed, metadata, self.prepared)?,
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
            if below.is_some() { self.summary.modified += 1 } else { self.summary.added += 1 }
        }
        // A directory over a removed non-directory is opaque in an overlay too.
        self.finish_directory(changed, metadata, upper, outcome.opaque || replaces)?;
        Ok(true)
    }

    /// Sets a written directory's metadata; times last, after its contents.
    fn finish_directory(&self, changed: &Path, metadata: &Metadata, upper: &Path, opaque: bool) -> Result<(), TreeDiffError> {
        lchown(upper, Some(metadata.uid()), Some(metadata.gid())).map_err(write_error(upper))?;
        fs::set_permissions(upper, fs::Permissions::from_mode(metadata.mode() & 0o7777)).map_err(write_error(upper))?;
        copy_xattrs(changed, upper)?;
        if opaque {
            xattr::set(upper, OPAQUE_XATTRS[0], b"y").map_err(write_error(upper))?;
        }
        set_times(upper, metadata.mtime(), metadata.mtime_nsec()).map_err(write_error(upper))
    }

    fn write_leaf(&mut self, changed: &Path, metadata: &Metadata, upper: &Path) -> Result<(), TreeDiffError> {
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
            nix::sys::stat::mknod(upper, kind, permissions, metadata.rdev()).map_err(errno).map_err(write_error(upper))?;
        }
        lchown(upper, Some(metadata.uid()), Some(metadata.gid())).map_err(write_error(upper))?;
        if !file_type.is_symlink() {
            // After the chown, which clears set-id bits.
            fs::set_permissions(upper, fs::Permissions::from_mode(metadata.mode() & 0o7777)).map_err(write_error(upper))?;
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
    prepared: Option<Prepared>,
) -> Result<bool, TreeDiffError> {
    if let Some(prepared) = prepared
        && metadata.is_file()
        && (metadata.ctime(), metadata.ctime_nsec()) > prepared.settled
    {
        return Ok(false);
    }
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
    if (file_type.is_char_device() || file_type.is_block_device()) && lower_metadata.rdev() != metadata.rdev() {
        return Ok(false);
    }
    if file_type.is_symlink() && fs::read_link(lower).map_err(read_error(lower))? != fs::read_link(changed).map_err(read_error(changed))? {
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
#[path = "tree_diff_tests.rs"]
mod tests;
