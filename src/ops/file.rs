//! File ops: `COPY`, `ADD` (local), `WORKDIR`'s mkdir and heredoc files, as one new layer on
//! top of input 0.
//!
//! The new layer is an overlay upper directory: only what the op writes, plus the parent
//! directories it writes into, copied up with their metadata from below (so the layer tar
//! carries them unchanged). Destinations resolve inside the destination filesystem: `..` stays
//! at `/`, symlinks on the way (`/bin` → `usr/bin`) are followed in the image, never on the host.
//! Directory times are set after everything is written, so a layer does not depend on when it
//! was made: directories the op creates get `SOURCE_DATE_EPOCH` or the Unix epoch.
//!
//! Copy rules (as BuildKit): a source directory copies its contents; a destination ending in
//! `/`, or an existing directory, receives sources under their own names, any other is the path
//! each source is copied onto; context files belong to root unless
//! `--chown`; `--chmod` applies to every file and directory copied.
//!
//! | cache key input                                   | in key | why                        |
//! |---------------------------------------------------|--------|----------------------------|
//! | actions (paths, owner, mode, data, timestamps)     | yes    | they change the result     |
//! | key of the destination base and of stage sources   | yes    | the result builds on them  |
//! | content digest of the context files selected       | yes    | by content, never by mtime |
//! | host paths of the context                          | no     | the same files anywhere    |

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::AtFlags;
use nix::sys::stat::fstatat;
use rayon::prelude::*;

use super::incremental_copy::{CopiedFiles, Expected, Previous, link_unchanged};
use super::owner::{self, OwnerError};
use super::source::{SourceEntry, SourceKind, SourceListing, has_wildcard};
use super::{CacheInput, ContextHandle, Environment, Layer, OpError, Output, layer};
use crate::context::selection::{Selection, SelectionError, select};
use crate::graph::{CopyAction, FileAction, MkdirAction, MkfileAction, Vertex};
use crate::oci::path::clean_in_root;
use crate::snapshot::extract::{ExtractOptions, Ownership, WhiteoutMode, extract, is_tar_archive};
use crate::snapshot::flatten::set_times;
use crate::snapshot::view::{LayeredView, Node};

#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error(transparent)]
    Selection(#[from] SelectionError),
    #[error("failed to compute cache key: failed to calculate checksum of ref: \"/{path}\": not found")]
    NotFound { path: String },
    #[error("cannot copy to non-directory: {path}")]
    NotADirectory { path: String },
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error("failed to copy to `{path}`")]
    Write { path: String, source: io::Error },
    #[error("failed to read `{path}`")]
    Read { path: String, source: io::Error },
    #[error("failed to unpack `{path}`")]
    Unpack { path: String, source: crate::snapshot::extract::ExtractError },
    #[error("copy source is not a filesystem")]
    NotAFilesystem,
    #[error("canceled")]
    Canceled,
}

/// Selections of context files made while computing cache keys, reused by `run`.
#[derive(Default)]
pub(crate) struct SelectionMemo {
    selections: Mutex<HashMap<(usize, String), Arc<Selection>>>,
}

fn memo_key(handle: &ContextHandle, sources: &[String], excludes: &[String], parents: bool) -> (usize, String) {
    (handle as *const ContextHandle as usize, format!("{sources:?}|{excludes:?}|{parents}"))
}

fn selection_for(handle: &ContextHandle, action: &CopyAction, environment: &Environment) -> Result<Arc<Selection>, FileError> {
    select_context(handle, &action.sources, &action.excludes, action.parents, environment)
}

/// Selects context files (memoized per build): what each source names, decided once by the
/// context selection for both the cache key and the copy.
pub(crate) fn select_context(
    handle: &ContextHandle,
    sources: &[String],
    excludes: &[String],
    parents: bool,
    environment: &Environment,
) -> Result<Arc<Selection>, FileError> {
    let key = memo_key(handle, sources, excludes, parents);
    if let Some(found) = environment.selections.selections.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(found.clone());
    }
    let selection = Arc::new(select(&handle.dir, &handle.ignore, sources, excludes, parents, environment.hash_cache)?);
    environment.selections.selections.lock().unwrap_or_else(|p| p.into_inner()).insert(key, selection.clone());
    Ok(selection)
}

/// The selection of a copy about to run, taken out of the memo: the run is its last use (a
/// later step selecting the same again selects anew), and the listing can then move the
/// entries out of it instead of copying them.
fn take_selection(handle: &ContextHandle, action: &CopyAction, environment: &Environment) -> Result<Arc<Selection>, FileError> {
    let key = memo_key(handle, &action.sources, &action.excludes, action.parents);
    let taken = environment.selections.selections.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    match taken {
        Some(selection) => Ok(selection),
        None => selection_for(handle, action, environment),
    }
}

pub(crate) fn cache_inputs(
    actions: &[FileAction],
    inputs: &[(String, Output)],
    environment: &Environment,
) -> Result<Vec<CacheInput>, OpError> {
    let mut cache_inputs = Vec::new();
    for (index, (key, output)) in inputs.iter().enumerate() {
        if matches!(output, Output::Layers(_)) {
            cache_inputs.push((format!("input {index}"), key.clone()));
        }
    }
    for (index, action) in actions.iter().enumerate() {
        if let FileAction::Copy(copy) = action
            && let Some((_, Output::Context(handle))) = inputs.get(copy.source_input)
        {
            let selection = selection_for(handle, copy, environment)?;
            cache_inputs.push((format!("files of action {index} ({})", copy.sources.join(" ")), selection.digest.clone()));
        }
    }
    Ok(cache_inputs)
}

pub(crate) fn run(vertex: &Vertex, actions: &[FileAction], inputs: &[Output], environment: &Environment) -> Result<Vec<Layer>, OpError> {
    let base = inputs.first().ok_or(FileError::NotAFilesystem)?;
    let Output::Layers(base_layers) = base else { return Err(FileError::NotAFilesystem.into()) };
    let upper = environment.store.temp_dir("file-")?;
    let scratch = environment.store.temp_dir("unpack-")?;
    let mut writer = UpperWriter::new(base.layer_paths(), upper.path().to_path_buf(), scratch.path().to_path_buf());
    let copies_context = actions
        .iter()
        .any(|action| matches!(action, FileAction::Copy(copy) if matches!(inputs.get(copy.source_input), Some(Output::Context(_)))));
    if copies_context {
        writer.previous = Previous::load(environment.store, &vertex.digest)?;
    }
    for action in actions {
        environment.check_canceled()?;
        match action {
            FileAction::Mkdir(mkdir) => writer.mkdir(mkdir)?,
            FileAction::Mkfile(mkfile) => writer.mkfile(mkfile)?,
            FileAction::Copy(copy) => {
                let source = inputs.get(copy.source_input).ok_or(FileError::NotAFilesystem)?;
                let (copy, listing) = match source {
                    Output::Context(handle) => {
                        let selection = take_selection(handle, copy, environment)?;
                        (copy.clone(), SourceListing::from_selection(selection))
                    }
                    Output::Layers(_) => {
                        let view = LayeredView::new(source.layer_paths());
                        let listing = SourceListing::from_view(&view, &copy.sources, copy.parents)
                            .map_err(|source| FileError::Read { path: copy.sources.join(" "), source })?;
                        (copy.clone(), listing)
                    }
                };
                writer.copy(&copy, &listing, environment.cancel)?;
            }
        }
    }
    writer.finish()?;
    let mut layers: Vec<Layer> = base_layers.to_vec();
    environment.check_canceled()?;
    let committed = layer::commit(
        environment.store,
        upper,
        &vertex.name,
        crate::store::LayerKind::Regular,
        environment.compress_layer,
        environment.cancel,
    );
    environment.check_canceled()?;
    let committed = committed?;
    if !writer.copied.is_empty() {
        writer.copied.remember(environment.store, &vertex.digest, &committed.diff_id)?;
    }
    layers.push(committed);
    Ok(layers)
}

/// Metadata to give a path the op writes.
#[derive(Debug, Clone, Copy)]
struct Metadata {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nanos: u32,
}

/// A directory of the upper directory that files are placed in: its real path, and the
/// directory open for looking at and linking names in it without walking the path again.
#[derive(Clone)]
struct Parent {
    real: PathBuf,
    directory: Arc<fs::File>,
}

/// Writes into the upper directory with the base below it.
struct UpperWriter {
    base: Vec<PathBuf>,
    upper: PathBuf,
    /// Where `ADD` unpacks archives before placing their entries.
    scratch: PathBuf,
    /// Destination parent directories already resolved and made, by written path. Copies
    /// write many files into few directories.
    parents: HashMap<String, Parent>,
    /// Where each hard-linked source file was first written, so later links link to it.
    links: HashMap<(u64, u64), PathBuf>,
    /// Archives unpacked so far (names their staging directories).
    unpacked: usize,
    /// Directory times to set at the end, by real path.
    directory_times: BTreeMap<PathBuf, (i64, u32)>,
    /// The last snapshot this step made, to link unchanged context files from.
    previous: Option<Previous>,
    /// The context files written so far, for the next run of the step.
    copied: CopiedFiles,
    /// Unchanged files to link from `previous`, made together at the end of the copy.
    pending: PendingLinks,
}

/// Links from the previous snapshot a copy has decided on but not made yet: made in parallel,
/// a batch at a time, at the end of the copy, when [`Self::BATCH`] are waiting, or before
/// anything is placed where it could see them (links into one directory wait for each other in
/// the kernel; a copy walks its directories one after another, so a batch spreads its links
/// over several).
#[derive(Default)]
struct PendingLinks {
    links: Vec<PendingLink>,
    /// Their real target paths (as bytes: a `Path`'s hash splits it into components).
    targets: HashSet<std::ffi::OsString>,
}

impl PendingLinks {
    /// Links waiting at most: each holds its source entry, so one batch for all 50,000 files of
    /// the benchmark context raised the peak RSS of a one-file edit from 88 MB to 117 MB.
    const BATCH: usize = 4096;
}

struct PendingLink {
    /// What to place the long way if the link cannot be made, and where.
    entry: SourceEntry,
    target: String,
    source_directory: Arc<fs::File>,
    source_name: String,
    expected: Expected,
    target_directory: Arc<fs::File>,
    name: String,
    /// Its path in the layer, to remember (with the entry's content) once it is linked.
    relative: String,
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError::Write { path: path.display().to_string(), source }
}

impl UpperWriter {
    fn new(base: Vec<PathBuf>, upper: PathBuf, scratch: PathBuf) -> UpperWriter {
        UpperWriter {
            base,
            upper,
            scratch,
            parents: HashMap::new(),
            links: HashMap::new(),
            unpacked: 0,
            directory_times: BTreeMap::new(),
            previous: None,
            copied: CopiedFiles::default(),
            pending: PendingLinks::default(),
        }
    }

    /// The merged view of the base and what was written so far.
    fn view(&self) -> LayeredView {
        let mut layers = self.base.clone();
        layers.push(self.upper.clone());
        LayeredView::new(layers)
    }

    fn base_view(&self) -> LayeredView {
        LayeredView::new(self.base.clone())
    }

    /// Resolves a destination path in the merged view: the resolved absolute path and its node.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<(Node, String), FileError> {
        self.view().resolve(path, follow_last).map_err(|source| FileError::Read { path: path.into(), source })
    }

    /// Makes sure the resolved absolute directory `path` exists in the upper directory: parts
    /// that exist below are copied up with their metadata, missing parts are created with
    /// `created`. Returns the real path.
    fn ensure_directory(&mut self, path: &str, created: Metadata) -> Result<PathBuf, FileError> {
        let base_view = self.base_view();
        let mut virtual_path = String::new();
        let mut real = self.upper.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            virtual_path.push('/');
            virtual_path.push_str(part);
            real.push(part);
            match fs::symlink_metadata(&real) {
                Ok(existing) if existing.is_dir() => continue,
                Ok(_) => self.remove(&real)?,
                Err(_) => {}
            }
            let (below, _) =
                base_view.resolve(&virtual_path, false).map_err(|source| FileError::Read { path: virtual_path.clone(), source })?;
            let metadata = match below.metadata() {
                Some(metadata) if below.is_directory() => {
                    use std::os::unix::fs::MetadataExt;
                    Metadata {
                        mode: metadata.mode() & 0o7777,
                        uid: metadata.uid(),
                        gid: metadata.gid(),
                        mtime: metadata.mtime(),
                        mtime_nanos: metadata.mtime_nsec() as u32,
                    }
                }
                _ => created,
            };
            fs::create_dir(&real).map_err(write_error(&real))?;
            self.apply(&real, &metadata, true)?;
        }
        Ok(real)
    }

    fn apply(&mut self, real: &Path, metadata: &Metadata, is_directory: bool) -> Result<(), FileError> {
        set_owner(real, metadata.uid, metadata.gid)?;
        fs::set_permissions(real, fs::Permissions::from_mode(metadata.mode)).map_err(write_error(real))?;
        if is_directory {
            self.directory_times.insert(real.to_path_buf(), (metadata.mtime, metadata.mtime_nanos));
        } else {
            set_time(real, metadata.mtime, metadata.mtime_nanos)?;
        }
        Ok(())
    }

    /// A directory a COPY creates on the way to its destination: `--chmod` and `--chown` apply
    /// to it as to what is copied (measured with the oracle: `COPY --chmod=640 a /dst/` makes
    /// `/dst` 0640).
    fn created_directory(action: &CopyAction, owner: Option<(u32, u32)>) -> Metadata {
        let mode = action.chmod.as_ref().map_or(0o755, |chmod| chmod.apply(0o755, true));
        Self::created(owner, action.timestamp, mode)
    }

    fn created(owner: Option<(u32, u32)>, timestamp: Option<i64>, mode: u32) -> Metadata {
        let (uid, gid) = owner.unwrap_or((0, 0));
        Metadata { mode, uid, gid, mtime: timestamp.unwrap_or(0), mtime_nanos: 0 }
    }

    fn owner(&self, owner: &Option<crate::graph::Owner>) -> Result<Option<(u32, u32)>, FileError> {
        match owner {
            None => Ok(None),
            Some(owner) => Ok(Some(owner::resolve(&self.base_view(), owner)?)),
        }
    }

    fn mkdir(&mut self, mkdir: &MkdirAction) -> Result<(), FileError> {
        let owner = self.owner(&mkdir.owner)?;
        let (node, resolved) = self.resolve(&mkdir.path, true)?;
        if node.is_directory() {
            return Ok(());
        }
        let created = Self::created(owner, mkdir.timestamp, mkdir.mode);
        self.ensure_directory(&resolved, created)?;
        Ok(())
    }

    fn mkfile(&mut self, mkfile: &MkfileAction) -> Result<(), FileError> {
        let owner = self.owner(&mkfile.owner)?;
        let (parent, name) = split_parent(&mkfile.path);
        let (_, parent_resolved) = self.resolve(&parent, true)?;
        let parent_real = self.ensure_directory(&parent_resolved, Self::created(owner, mkfile.timestamp, 0o755))?;
        let target = parent_real.join(name);
        self.remove(&target)?;
        fs::write(&target, &mkfile.data).map_err(write_error(&target))?;
        let mode = match &mkfile.chmod {
            Some(chmod) => chmod.apply(mkfile.mode, false),
            None => mkfile.mode,
        };
        self.apply(&target, &Self::created(owner, mkfile.timestamp, mode), false)
    }

    fn copy(&mut self, action: &CopyAction, listing: &SourceListing, cancel: &AtomicBool) -> Result<(), FileError> {
        let owner = self.owner(&action.owner)?;
        // Only a trailing `/` or an existing directory makes the destination a directory, as in
        // BuildKit v0.32 (measured with the oracle): otherwise every source, however many the
        // sources or wildcard matches, is copied onto the destination path itself, the last
        // one winning (`COPY f*.go foo2.go` writes the file `foo2.go`).
        let dest_is_directory_by_syntax = action.dest.ends_with('/') || action.dest.ends_with("/.");
        let (dest_node, dest_resolved) = self.resolve(&action.dest, true)?;
        let dest_is_directory = dest_is_directory_by_syntax || dest_node.is_directory();
        for (index, source) in action.sources.iter().enumerate() {
            let pattern = clean_in_root(source);
            let roots = listing.roots.get(index).map(Vec::as_slice).unwrap_or_default();
            let matches: Vec<&SourceEntry> = roots.iter().filter_map(|root| listing.entries.get(root)).collect();
            if roots.iter().any(String::is_empty) {
                // The source root: its contents go into the destination directory.
                self.ensure_directory(&dest_resolved, Self::created_directory(action, owner))?;
                for entry in listing.descendants("") {
                    self.place(action, owner, entry, &format!("{dest_resolved}/{}", entry.path))?;
                }
                continue;
            }
            if matches.is_empty() && !has_wildcard(source) {
                return Err(FileError::NotFound { path: pattern });
            }
            for entry in matches {
                let relative_root = if action.parents { parents_path(source, &entry.path) } else { String::new() };
                if entry.kind == SourceKind::Directory {
                    let target_dir = if action.parents { format!("{dest_resolved}/{relative_root}") } else { dest_resolved.clone() };
                    // A directory copies its contents; a created destination takes its metadata.
                    let (existing, target_resolved) = self.resolve(&target_dir, true)?;
                    if existing.exists() && !existing.is_directory() {
                        return Err(FileError::NotADirectory { path: target_resolved });
                    }
                    let metadata = if existing.is_directory() { None } else { Some(self.entry_metadata(action, owner, entry)) };
                    let real = self.ensure_directory(&target_resolved, Self::created_directory(action, owner))?;
                    if let Some(metadata) = metadata {
                        self.apply(&real, &metadata, true)?;
                    }
                    let prefix_length = if entry.path.is_empty() { 0 } else { entry.path.len() + 1 };
                    for child in listing.descendants(&entry.path) {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(FileError::Canceled);
                        }
                        let relative = &child.path[prefix_length..];
                        self.place(action, owner, child, &format!("{target_resolved}/{relative}"))?;
                    }
                } else {
                    if action.unpack && entry.kind == SourceKind::File && is_tar_archive(&entry.real).unwrap_or(false) {
                        // An archive unpacks into the destination itself, slash or not, over
                        // what was placed before it.
                        self.link_pending(action, owner)?;
                        self.unpack(action, entry, &dest_resolved, owner)?;
                        continue;
                    }
                    let target = if action.parents {
                        format!("{dest_resolved}/{relative_root}")
                    } else if dest_is_directory {
                        format!("{dest_resolved}/{}", file_name(&entry.path))
                    } else {
                        dest_resolved.clone()
                    };
                    self.place(action, owner, entry, &target)?;
                }
            }
        }
        self.link_pending(action, owner)
    }

    /// Makes the pending links, in parallel; a file whose link cannot be made is copied.
    fn link_pending(&mut self, action: &CopyAction, owner: Option<(u32, u32)>) -> Result<(), FileError> {
        let pending = std::mem::take(&mut self.pending);
        let linked: Vec<bool> = pending
            .links
            .par_iter()
            .map(|link| link_unchanged(&link.source_directory, &link.source_name, &link.expected, &link.target_directory, &link.name))
            .collect();
        for (link, linked) in pending.links.into_iter().zip(linked) {
            if linked && let Some((content, _)) = link.entry.content {
                self.copied.record(link.relative, content);
            } else {
                self.place_entry(action, owner, &link.entry, &link.target, false)?;
            }
        }
        Ok(())
    }

    fn entry_metadata(&self, action: &CopyAction, owner: Option<(u32, u32)>, entry: &SourceEntry) -> Metadata {
        let (uid, gid) = owner.unwrap_or((entry.uid, entry.gid));
        let is_directory = entry.kind == SourceKind::Directory;
        let mode = match &action.chmod {
            Some(chmod) => chmod.apply(entry.mode, is_directory),
            None => entry.mode,
        };
        Metadata { mode, uid, gid, mtime: entry.mtime, mtime_nanos: entry.mtime_nanos }
    }

    /// Writes one source entry at the absolute destination path `target` (or decides to link it
    /// from the step's previous snapshot: see [`PendingLinks`]).
    fn place(&mut self, action: &CopyAction, owner: Option<(u32, u32)>, entry: &SourceEntry, target: &str) -> Result<(), FileError> {
        self.place_entry(action, owner, entry, target, true)
    }

    fn place_entry(
        &mut self,
        action: &CopyAction,
        owner: Option<(u32, u32)>,
        entry: &SourceEntry,
        target: &str,
        may_link: bool,
    ) -> Result<(), FileError> {
        let (parent_path, name) = split_parent(target);
        let parent = match self.parents.get(&parent_path) {
            Some(known) => known.clone(),
            None => {
                let (_, parent_resolved) = self.resolve(&parent_path, true)?;
                let real = self.ensure_directory(&parent_resolved, Self::created_directory(action, owner))?;
                let directory = Arc::new(fs::File::open(&real).map_err(write_error(&real))?);
                let parent = Parent { real, directory };
                self.parents.insert(parent_path, parent.clone());
                parent
            }
        };
        let real = parent.real.join(&name);
        let metadata = self.entry_metadata(action, owner, entry);
        if self.pending.targets.contains(real.as_os_str()) {
            // Placed again (several sources, one destination): the earlier one goes first.
            self.link_pending(action, owner)?;
        }
        // A context file with one link, unchanged since the step's last run: linked from that
        // run's snapshot. The link is made only where nothing has the name yet (it fails where
        // something has, and the file goes the long way).
        let reusable = match (&entry.kind, &entry.content, entry.link) {
            (SourceKind::File, Some((content, size)), None) => Some((content.clone(), *size, self.relative(&real))),
            _ => None,
        };
        if may_link
            && let (Some((content, size, relative)), Some(previous)) = (&reusable, &mut self.previous)
            && let Some((source_directory, source_name)) = previous.source(relative, content)
        {
            let expected = Expected {
                mode: metadata.mode,
                uid: metadata.uid,
                gid: metadata.gid,
                mtime: metadata.mtime,
                mtime_nanos: metadata.mtime_nanos,
                size: *size,
            };
            self.pending.targets.insert(real.into_os_string());
            self.pending.links.push(PendingLink {
                entry: entry.clone(),
                target: target.to_string(),
                source_directory,
                source_name,
                expected,
                target_directory: parent.directory.clone(),
                name,
                relative: relative.clone(),
            });
            if self.pending.links.len() >= PendingLinks::BATCH {
                self.link_pending(action, owner)?;
            }
            return Ok(());
        }
        // What is there already, if anything (`Some(true)`: a directory); one `lstat`, relative
        // to the open parent.
        let existing = fstatat(Some(parent.directory.as_raw_fd()), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if existing.is_some() && !self.pending.links.is_empty() {
            // Something there is replaced (and a directory with all below it): the links
            // decided on before come first, as they would have without waiting.
            self.link_pending(action, owner)?;
        }
        if !matches!(entry.kind, SourceKind::Directory) {
            // A non-directory may replace a directory or become a symlink that later paths go
            // through: what was resolved before may no longer hold.
            if existing == Some(true) || matches!(entry.kind, SourceKind::Symlink(_)) {
                self.parents.clear();
            }
        }
        match &entry.kind {
            SourceKind::Directory => {
                match existing {
                    Some(true) => {}
                    Some(false) => {
                        self.remove(&real)?;
                        fs::create_dir(&real).map_err(write_error(&real))?;
                    }
                    None => fs::create_dir(&real).map_err(write_error(&real))?,
                }
                self.apply(&real, &metadata, true)
            }
            SourceKind::File => {
                if existing.is_some() {
                    self.remove(&real)?;
                }
                if let Some(first) = entry.link.and_then(|link| self.links.get(&link))
                    && fs::hard_link(first, &real).is_ok()
                {
                    return Ok(());
                }
                fs::copy(&entry.real, &real).map_err(|source| {
                    // One call reads the source and writes the copy: say which side failed.
                    let writing = matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG | libc::EROFS));
                    let path = if writing { &real } else { &entry.real };
                    let path = path.display().to_string();
                    if writing { FileError::Write { path, source } } else { FileError::Read { path, source } }
                })?;
                if let Some(link) = entry.link {
                    self.links.insert(link, real.clone());
                }
                self.apply(&real, &metadata, false)?;
                // Remembered only when the source did not change while it was copied.
                if let Some((content, size, relative)) = reusable
                    && fs::symlink_metadata(&entry.real).is_ok_and(|now| {
                        use std::os::unix::fs::MetadataExt;
                        now.len() == size && now.mtime() == entry.mtime && now.mtime_nsec() as u32 == entry.mtime_nanos
                    })
                {
                    self.copied.record(relative, content);
                }
                Ok(())
            }
            SourceKind::Symlink(link) => {
                if existing.is_some() {
                    self.remove(&real)?;
                }
                symlink(link, &real).map_err(write_error(&real))?;
                set_owner(&real, metadata.uid, metadata.gid)?;
                set_time(&real, metadata.mtime, metadata.mtime_nanos)
            }
            SourceKind::Special { mode, device } => {
                if existing.is_some() {
                    self.remove(&real)?;
                }
                let kind = nix::sys::stat::SFlag::from_bits_truncate(mode & libc::S_IFMT);
                let permissions = nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777);
                nix::sys::stat::mknod(&real, kind, permissions, *device)
                    .map_err(|errno| io::Error::from_raw_os_error(errno as i32))
                    .map_err(write_error(&real))?;
                self.apply(&real, &metadata, false)
            }
        }
    }

    /// `ADD archive.tar /dest/`: extracts into the directory the file would have gone to.
    ///
    /// The archive is unpacked aside first and its entries are then placed like copied files,
    /// so its paths resolve through the image: `lib/x` in the archive lands in `/usr/lib/x`
    /// when `/lib` is a symlink to `usr/lib`, as BuildKit does, instead of hiding `/lib`.
    fn unpack(&mut self, action: &CopyAction, entry: &SourceEntry, directory: &str, owner: Option<(u32, u32)>) -> Result<(), FileError> {
        self.ensure_directory(directory, Self::created_directory(action, owner))?;
        self.unpacked += 1;
        let staging = self.scratch.join(format!("archive-{}", self.unpacked));
        fs::create_dir_all(&staging).map_err(write_error(&staging))?;
        let read_error = |source| FileError::Read { path: entry.real.display().to_string(), source };
        let file = fs::File::open(&entry.real).map_err(read_error)?;
        let reader = crate::snapshot::extract::decompressed(file).map_err(read_error)?;
        let ownership = match owner {
            Some((uid, gid)) => Ownership::Fixed { uid, gid },
            None if nix::unistd::geteuid().is_root() => Ownership::FromArchive,
            None => Ownership::BestEffort,
        };
        extract(reader, &staging, &ExtractOptions { whiteouts: WhiteoutMode::Literal, ownership })
            .map_err(|source| FileError::Unpack { path: entry.path.clone(), source })?;
        let view = LayeredView::new([staging.clone()]);
        let listing = SourceListing::from_view(&view, &[String::new()], false).map_err(read_error)?;
        // Archive entries keep their own modes; `--chmod` is for copied files.
        let placed = CopyAction { chmod: None, unpack: false, ..action.clone() };
        for archived in listing.descendants("") {
            self.place(&placed, owner, archived, &format!("{}/{}", directory.trim_end_matches('/'), archived.path))?;
        }
        // The staging inodes are freed now and may be reused: forget them as link identities.
        self.links.clear();
        crate::store::remove_tree(&staging).map_err(write_error(&staging))
    }

    /// Removes what is at `real` (a file or a whole directory), which is no longer a copy.
    fn remove(&mut self, real: &Path) -> Result<(), FileError> {
        let relative = self.relative(real);
        self.copied.forget(&relative);
        remove_existing(real)
    }

    /// A path of the upper directory relative to it, as the layer names it.
    fn relative(&self, real: &Path) -> String {
        real.strip_prefix(&self.upper).unwrap_or(real).to_string_lossy().into_owned()
    }

    /// Sets directory times, deepest first, now that nothing more is written into them.
    fn finish(&mut self) -> Result<(), FileError> {
        for (path, (seconds, nanos)) in self.directory_times.iter().rev() {
            set_time(path, *seconds, *nanos)?;
        }
        Ok(())
    }
}

/// `--parents`: the path kept under the destination. A `/./` in the source marks where the
/// kept part starts; otherwise it is the whole matched path.
fn parents_path(source: &str, matched: &str) -> String {
    match source.find("/./").or_else(|| source.starts_with("./").then_some(0)) {
        Some(index) if index > 0 => {
            let pivot_depth = clean_in_root(&source[..index]).split('/').filter(|p| !p.is_empty()).count();
            matched.split('/').skip(pivot_depth).collect::<Vec<_>>().join("/")
        }
        _ => matched.to_string(),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn split_parent(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, name)) => (if parent.is_empty() { "/".into() } else { parent.into() }, name.into()),
        None => ("/".into(), trimmed.into()),
    }
}

fn remove_existing(path: &Path) -> Result<(), FileError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => crate::store::remove_tree(path).map_err(write_error(path)),
        Ok(_) => fs::remove_file(path).map_err(write_error(path)),
        Err(_) => Ok(()),
    }
}

fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<(), FileError> {
    match lchown(path, Some(uid), Some(gid)) {
        Ok(()) => Ok(()),
        // Unprivileged without a user namespace: the owner cannot be kept on disk.
        Err(error) if error.raw_os_error() == Some(libc::EPERM) && !nix::unistd::geteuid().is_root() => Ok(()),
        Err(error) => Err(FileError::Write { path: path.display().to_string(), source: error }),
    }
}

fn set_time(path: &Path, seconds: i64, nanos: u32) -> Result<(), FileError> {
    set_times(path, seconds, i64::from(nanos)).map_err(write_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_keep_the_path_after_the_pivot() {
        assert_eq!(parents_path("a/b/c.txt", "a/b/c.txt"), "a/b/c.txt");
        assert_eq!(parents_path("a/./b/*.txt", "a/b/c.txt"), "b/c.txt");
        assert_eq!(split_parent("/a/b/"), ("/a".to_string(), "b".to_string()));
        assert_eq!(split_parent("/a"), ("/".to_string(), "a".to_string()));
    }
}
