//! `ADD <git URL>`: one commit's files, fetched into the remote's shared repository and written
//! out as a layer.
//!
//! **Resolution**, while the key is computed (so a failure is BuildKit's "failed to load cache
//! key"): a full commit id is taken as it is, without asking anyone; anything else is asked of
//! the remote (`ls-remote`): `REF` as a full ref name, else `refs/heads/REF`, else
//! `refs/tags/REF` (an annotated tag peeled to its commit); no `REF` is the remote's `HEAD`. A
//! short commit id is no ref: BuildKit refuses it too ("repository does not contain ref"). The
//! answer is kept for the rest of the build, so the key and the files agree on the commit even
//! when the branch moves meanwhile.
//!
//! **Fetching**, only when the key misses: into the shared bare repository of the remote
//! (`store::git_repository`, held exclusively, so two builds fetching one remote take turns),
//! depth 1: the ref by name, a commit id by itself (a server that refuses an id it does not
//! advertise gives the full history of its branches and tags instead). A commit the repository
//! already has is not fetched again.
//!
//! **Files** are written by rbuild from the commit's tree (libgit2's checkout follows the umask
//! and stamps the time of the checkout): the modes git stores (0644, 0755, symlinks), directories
//! 0755, owner 0:0 (as BuildKit, measured), and as mtime SOURCE_DATE_EPOCH (BuildKit too) or else
//! the commit's committer time: BuildKit stamps the time of its checkout, which no second machine
//! can reproduce, and a layer here is the same wherever it is made. `#REF:SUBDIR` takes that
//! directory's files. A submodule (a gitlink) is an empty directory: BuildKit fetches submodules,
//! rbuild does not yet. `--keep-git-dir` adds a `.git`: the commit's objects, `HEAD` detached at
//! it, the ref it was named by, the remote as `origin`, `shallow`, and an index of the tree.
//!
//! | cache input    | value                                                      |
//! |----------------|------------------------------------------------------------|
//! | `commit`       | the commit id                                              |
//! | `subdir`       | `#REF:SUBDIR`, when given                                  |
//! | `git_dir`      | with `--keep-git-dir`, the ref (the `.git` names it)        |
//! | `timestamp`    | SOURCE_DATE_EPOCH, when given                              |
//!
//! Never the remote's URL: the same commit from two URLs is one result, as in BuildKit (whose key
//! is the commit, `.git` and the ref, and the subdirectory too; with `--keep-git-dir` the
//! `.git/config` names the first URL, there as here).
//!
//! **Credentials** for http(s) remotes come from the build's secrets, as BuildKit's: the first of
//! `GIT_AUTH_HEADER.<host>`, `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER`, `GIT_AUTH_TOKEN` is sent
//! as `Authorization` (a header as it is, a token as `basic base64("x-access-token:TOKEN")`).
//!
//! **Transports** are libgit2's own: `git://`, `http://`, `https://` (OpenSSL). `ssh://` and
//! `user@host:path` are not supported yet: libgit2's ssh needs libssh2.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use base64::Engine;
use git2::{AutotagOption, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository};

use super::layer::{self, Layer};
use super::{CacheInput, Environment, OpError};
use crate::graph::GitSource;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GitError {
    /// BuildKit's words, with the remote named.
    #[error("repository `{remote}` does not contain ref {reference}")]
    UnknownRef { remote: String, reference: String },
    #[error("error fetching default branch for repository `{remote}`: {message}")]
    DefaultBranch { remote: String, message: String },
    #[error("failed to fetch remote `{remote}`: {message}")]
    Fetch { remote: String, message: String },
    #[error("{0}")]
    ChecksumMismatch(String),
    #[error("`{subdir}` is not a directory of commit {commit}")]
    NoSubdir { subdir: String, commit: String },
    #[error("ssh git remotes are not supported yet: `{remote}`")]
    SshUnsupported { remote: String },
    #[error("failed to use the git repository `{path}`: {message}")]
    Repository { path: String, message: String },
    #[error("failed to write the checkout of `{remote}` at `{path}`")]
    Write { remote: String, path: String, source: std::io::Error },
}

/// What a source's ref is, for this build.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    commit: Oid,
    /// The full ref name it was found by (`refs/heads/main`), none for a commit id.
    full_ref: Option<String>,
    /// The annotated tag object the ref names, if it names one.
    tag: Option<Oid>,
}

/// The resolutions of this process, by (remote, ref): one `ls-remote` per build and source, and
/// the key and the files agree on the commit. A build is one process, so this is one build's.
static RESOLVED: Mutex<Option<HashMap<(String, String), Resolved>>> = Mutex::new(None);

/// The key's inputs: the commit and what is taken of it.
pub(crate) fn cache_inputs(source: &GitSource, environment: &Environment) -> Result<Vec<CacheInput>, OpError> {
    let resolved = resolve(source, environment)?;
    check_checksum(source, &resolved)?;
    let mut inputs = vec![("commit".to_string(), resolved.commit.to_string())];
    if !source.subdir.is_empty() {
        inputs.push(("subdir".to_string(), source.subdir.clone()));
    }
    if source.keep_git_dir {
        inputs.push(("git_dir".to_string(), source.reference.clone()));
    }
    if let Some(timestamp) = source.timestamp {
        inputs.push(("timestamp".to_string(), timestamp.to_string()));
    }
    Ok(inputs)
}

/// The layer of the commit's files, fetched first when the shared repository lacks the commit.
pub(crate) fn run(source: &GitSource, environment: &Environment) -> Result<Vec<Layer>, OpError> {
    let resolved = resolve(source, environment)?;
    let held = environment.store.hold_git_repository(&source.remote)?;
    let repository_error =
        |error: git2::Error| GitError::Repository { path: held.directory.display().to_string(), message: error.message().to_string() };
    let repository = match Repository::open_bare(&held.directory) {
        Ok(repository) => repository,
        Err(_) => Repository::init_bare(&held.directory).map_err(repository_error)?,
    };
    if repository.find_commit(resolved.commit).is_err() {
        fetch(&repository, source, &resolved, environment)?;
    }
    environment.check_canceled()?;
    let directory = environment.store.temp_dir("git-")?;
    write_files(&repository, source, &resolved, directory.path()).map_err(|error| match error {
        WriteError::Git(error) => GitError::Repository { path: held.directory.display().to_string(), message: error.message().to_string() },
        WriteError::Io(path, error) => GitError::Write { remote: source.remote.clone(), path, source: error },
        WriteError::NoSubdir => GitError::NoSubdir { subdir: source.subdir.clone(), commit: resolved.commit.to_string() },
    })?;
    drop(held);
    // As BuildKit describes the record of a git checkout in `du`.
    let shown = if source.reference.is_empty() { source.remote.clone() } else { format!("{}#{}", source.remote, source.reference) };
    let layer = layer::commit(environment.store, directory, &format!("git snapshot for {shown}"), false, environment.cancel)?;
    Ok(vec![layer])
}

/// The source's commit: a full commit id as it is, else the remote's answer (asked once).
fn resolve(source: &GitSource, environment: &Environment) -> Result<Resolved, GitError> {
    if is_ssh(&source.remote) {
        return Err(GitError::SshUnsupported { remote: source.remote.clone() });
    }
    if source.reference.len() == 40
        && let Ok(commit) = Oid::from_str(&source.reference)
    {
        return Ok(Resolved { commit, full_ref: None, tag: None });
    }
    let key = (source.remote.clone(), source.reference.clone());
    if let Some(resolved) = RESOLVED.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_default().get(&key) {
        return Ok(resolved.clone());
    }
    let resolved = list_remote(source, environment)?;
    RESOLVED.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_default().insert(key, resolved.clone());
    Ok(resolved)
}

/// A refspec that matches no ref: a fetch of it only lists the remote's refs.
const NOTHING: &str = "refs/rbuild/nothing:refs/rbuild/nothing";

/// `ls-remote`: the ref's commit, as BuildKit finds it.
fn list_remote(source: &GitSource, environment: &Environment) -> Result<Resolved, GitError> {
    let remote_error = |error: git2::Error| {
        let message = error.message().to_string();
        if source.reference.is_empty() {
            GitError::DefaultBranch { remote: source.remote.clone(), message }
        } else {
            GitError::Fetch { remote: source.remote.clone(), message }
        }
    };
    // libgit2 sends custom headers only on a fetch, so the listing is a fetch of a ref no remote
    // has into a scratch repository: it connects, lists the refs and wants nothing.
    let scratch = environment
        .store
        .temp_dir("git-ls-remote-")
        .map_err(|error| GitError::Repository { path: environment.store.root().display().to_string(), message: error.to_string() })?;
    let repository = Repository::init_bare(scratch.path())
        .map_err(|error| GitError::Repository { path: scratch.path().display().to_string(), message: error.message().to_string() })?;
    let mut remote = repository.remote_anonymous(&source.remote).map_err(remote_error)?;
    let headers = authorization(source, environment);
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(environment)).download_tags(AutotagOption::None).custom_headers(&header_refs);
    remote.download(&[NOTHING], Some(&mut options)).map_err(remote_error)?;
    let heads: Vec<(String, Oid)> = remote.list().map_err(remote_error)?.iter().map(|head| (head.name().to_string(), head.oid())).collect();
    let _ = remote.disconnect();
    let find = |name: &str| heads.iter().find(|(head, _)| head == name).map(|(_, oid)| *oid);
    let reference = source.reference.as_str();
    let candidates: Vec<String> = if reference.is_empty() {
        vec!["HEAD".to_string()]
    } else {
        vec![reference.to_string(), format!("refs/heads/{reference}"), format!("refs/tags/{reference}")]
    };
    for candidate in candidates {
        let Some(target) = find(&candidate) else { continue };
        // An annotated tag is advertised with its peeled commit as `NAME^{}`.
        return Ok(match find(&format!("{candidate}^{{}}")) {
            Some(commit) => Resolved { commit, full_ref: Some(candidate), tag: Some(target) },
            None => Resolved { commit: target, full_ref: Some(candidate), tag: None },
        });
    }
    Err(GitError::UnknownRef { remote: source.remote.clone(), reference: reference.to_string() })
}

/// `--checksum`: the commit id, or the annotated tag's, starts with it (BuildKit's rule).
fn check_checksum(source: &GitSource, resolved: &Resolved) -> Result<(), GitError> {
    let Some(expected) = &source.checksum else { return Ok(()) };
    let wanted = expected.to_ascii_lowercase();
    let matches = |oid: &Oid| oid.to_string().starts_with(&wanted);
    if matches(&resolved.commit) || resolved.tag.as_ref().is_some_and(matches) {
        return Ok(());
    }
    Err(GitError::ChecksumMismatch(match resolved.tag {
        Some(tag) => format!("expected checksum to match {expected}, got {tag} or {}", resolved.commit),
        None => format!("expected checksum to match {expected}, got {}", resolved.commit),
    }))
}

/// Fetches the commit into the shared repository, depth 1, under a ref of its own so it stays.
fn fetch(repository: &Repository, source: &GitSource, resolved: &Resolved, environment: &Environment) -> Result<(), OpError> {
    let fetch_error = |error: git2::Error| GitError::Fetch { remote: source.remote.clone(), message: error.message().to_string() };
    let headers = authorization(source, environment);
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let options = |depth: i32| {
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(environment)).download_tags(AutotagOption::None).custom_headers(&header_refs).depth(depth);
        options
    };
    let kept = format!("refs/rbuild/{}", resolved.commit);
    let wanted = match &resolved.full_ref {
        Some(full_ref) => format!("+{full_ref}:{kept}"),
        None => format!("+{}:{kept}", resolved.commit),
    };
    let mut remote = repository.remote_anonymous(&source.remote).map_err(fetch_error)?;
    let fetched = remote.fetch(&[wanted.as_str()], Some(&mut options(1)), None);
    environment.check_canceled()?;
    // The ref may have moved since it was resolved, or the server refuses an id it does not
    // advertise: then the whole history of its branches and tags, which holds the commit if the
    // remote has it at all.
    if fetched.is_err() || repository.find_commit(resolved.commit).is_err() {
        let everything = ["+refs/heads/*:refs/rbuild/heads/*", "+refs/tags/*:refs/rbuild/tags/*"];
        remote.fetch(&everything, Some(&mut options(0)), None).map_err(fetch_error)?;
        environment.check_canceled()?;
    }
    let commit = repository.find_commit(resolved.commit).map_err(|_| GitError::UnknownRef {
        remote: source.remote.clone(),
        reference: if source.reference.is_empty() { resolved.commit.to_string() } else { source.reference.clone() },
    })?;
    repository.reference(&kept, commit.id(), true, "rbuild fetch").map_err(fetch_error)?;
    Ok(())
}

fn callbacks<'a>(environment: &'a Environment) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    // Ctrl-C or a failure elsewhere ends a transfer at its next progress report.
    callbacks.transfer_progress(move |_| !environment.cancel.load(std::sync::atomic::Ordering::Relaxed));
    callbacks
}

/// The `Authorization` header for an http(s) remote from the build's secrets, BuildKit's names
/// in BuildKit's order.
fn authorization(source: &GitSource, environment: &Environment) -> Vec<String> {
    let Some(rest) = source
        .remote
        .split_once("://")
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        .map(|(_, rest)| rest)
    else {
        return Vec::new();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let names = [
        (format!("GIT_AUTH_HEADER.{host}"), false),
        (format!("GIT_AUTH_TOKEN.{host}"), true),
        ("GIT_AUTH_HEADER".to_string(), false),
        ("GIT_AUTH_TOKEN".to_string(), true),
    ];
    for (name, is_token) in names {
        let Some(value) = environment.secrets.get(&name) else { continue };
        let value = String::from_utf8_lossy(value).trim().to_string();
        return vec![if is_token {
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{value}"));
            format!("Authorization: basic {encoded}")
        } else {
            format!("Authorization: {value}")
        }];
    }
    Vec::new()
}

fn is_ssh(remote: &str) -> bool {
    match remote.split_once("://") {
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("ssh"),
        None => true,
    }
}

enum WriteError {
    Git(git2::Error),
    Io(String, std::io::Error),
    NoSubdir,
}

impl From<git2::Error> for WriteError {
    fn from(error: git2::Error) -> WriteError {
        WriteError::Git(error)
    }
}

/// Writes the commit's files (of the subdirectory, with `.git` when kept) into `root`, every
/// entry stamped with the source's time.
fn write_files(repository: &Repository, source: &GitSource, resolved: &Resolved, root: &Path) -> Result<(), WriteError> {
    let commit = repository.find_commit(resolved.commit)?;
    let mut tree = commit.tree()?;
    if !source.subdir.is_empty() {
        let entry = tree.get_path(Path::new(&source.subdir)).map_err(|_| WriteError::NoSubdir)?;
        tree = entry.to_object(repository)?.into_tree().map_err(|_| WriteError::NoSubdir)?;
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| WriteError::Io(path, error)
    };
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(io(root))?;
    write_tree(repository, &tree, root)?;
    if source.keep_git_dir {
        write_git_dir(repository, source, resolved, &tree, root)?;
    }
    let time = source.timestamp.unwrap_or(commit.committer().when().seconds());
    let stamp = nix::sys::time::TimeSpec::new(time, 0);
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.map_err(|error| WriteError::Io(root.display().to_string(), error.into()))?;
        nix::sys::stat::utimensat(None, entry.path(), &stamp, &stamp, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
            .map_err(|error| WriteError::Io(entry.path().display().to_string(), error.into()))?;
    }
    Ok(())
}

/// One tree's entries under `directory`, with git's modes. Names git forbids in a checkout
/// (`.`, `..`, `.git`, anything with a `/`) are left out, so nothing lands outside `directory`.
fn write_tree(repository: &Repository, tree: &git2::Tree, directory: &Path) -> Result<(), WriteError> {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        if name.is_empty() || name == b"." || name == b".." || name.eq_ignore_ascii_case(b".git") || name.contains(&b'/') {
            continue;
        }
        let path = directory.join(OsStr::from_bytes(name));
        let io = |error| WriteError::Io(path.display().to_string(), error);
        match entry.filemode() {
            0o040000 => {
                fs::create_dir(&path).map_err(io)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io)?;
                write_tree(repository, &repository.find_tree(entry.id())?, &path)?;
            }
            0o120000 => {
                let blob = repository.find_blob(entry.id())?;
                std::os::unix::fs::symlink(OsStr::from_bytes(blob.content()), &path).map_err(io)?;
            }
            // A submodule: its directory, empty (see the module docs).
            0o160000 => {
                fs::create_dir(&path).map_err(io)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io)?;
            }
            mode => {
                let blob = repository.find_blob(entry.id())?;
                fs::write(&path, blob.content()).map_err(io)?;
                let permissions = if mode == 0o100755 { 0o755 } else { 0o644 };
                fs::set_permissions(&path, fs::Permissions::from_mode(permissions)).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// `--keep-git-dir`: a repository at `root` holding the commit (shallow), `HEAD` detached at it,
/// the ref it was named by, `origin`, and an index of the tree.
fn write_git_dir(
    repository: &Repository,
    source: &GitSource,
    resolved: &Resolved,
    tree: &git2::Tree,
    root: &Path,
) -> Result<(), WriteError> {
    // Without the host's git templates (hooks, description): the layer is the same on every host.
    let kept = Repository::init_opts(root, git2::RepositoryInitOptions::new().external_template(false))?;
    let (from, to) = (repository.odb()?, kept.odb()?);
    let mut objects = vec![resolved.commit];
    objects.extend(resolved.tag);
    let commit_tree = repository.find_commit(resolved.commit)?.tree_id();
    let mut trees = vec![commit_tree];
    while let Some(tree_id) = trees.pop() {
        objects.push(tree_id);
        for entry in repository.find_tree(tree_id)?.iter() {
            match entry.kind() {
                Some(ObjectType::Tree) => trees.push(entry.id()),
                Some(ObjectType::Blob) => objects.push(entry.id()),
                _ => {}
            }
        }
    }
    for oid in objects {
        let object = from.read(oid)?;
        to.write(object.kind(), object.data())?;
    }
    if let Some(full_ref) = &resolved.full_ref
        && full_ref.starts_with("refs/")
    {
        kept.reference(full_ref, resolved.tag.unwrap_or(resolved.commit), true, "")?;
    }
    kept.set_head_detached(resolved.commit)?;
    kept.remote("origin", &source.remote)?;
    let shallow = root.join(".git/shallow");
    fs::write(&shallow, format!("{}\n", resolved.commit)).map_err(|error| WriteError::Io(shallow.display().to_string(), error))?;
    // The reflog would hold this host's user and time; BuildKit's is empty too.
    let logs = root.join(".git/logs");
    if logs.exists() {
        fs::remove_dir_all(&logs).map_err(|error| WriteError::Io(logs.display().to_string(), error))?;
    }
    let mut index = kept.index()?;
    index.read_tree(tree)?;
    index.write()?;
    Ok(())
}
