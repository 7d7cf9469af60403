//! `ADD <git URL>`: one commit's files, fetched into the remote's shared repository and written
//! out as a layer.
//!
//! **Resolution**, while the key is computed (so a failure is BuildKit's "failed to load cache
//! key"): a full commit id is taken as it is, without asking anyone; anything else is asked of
//! the remote (`ls-remote`): `REF` as a full ref name, else `refs/heads/REF`, else
//! `refs/tags/REF` (an annotated tag peeled to its commit); no `REF` is the remote's default
//! branch (the branch `HEAD` names, else `HEAD` itself). A
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
//! directory's files (a SUBDIR inside a submodule too). Submodules are fetched and written in,
//! recursively, as BuildKit's `git submodule update` does (`git_submodule`: URLs, hostile
//! `.gitmodules`, locks). `--keep-git-dir` adds a `.git`: the commit's objects, `HEAD` detached at
//! it, the ref it was named by, the remote as `origin`, `shallow`, and an index of the tree.
//!
//! | cache input    | value                                                      |
//! |----------------|------------------------------------------------------------|
//! | `commit`       | the commit id                                              |
//! | `subdir`       | `#REF:SUBDIR`, when given                                  |
//! | `git_dir`      | with `--keep-git-dir`, the ref (the `.git` names it)        |
//! | `timestamp`    | SOURCE_DATE_EPOCH, when given                              |
//!
//! Never the submodules' commits nor URLs: the commit's tree pins both (gitlinks and
//! `.gitmodules`). Never the remote's URL: the same commit from two URLs is one result, as in
//! BuildKit (whose key is the commit, `.git` and the ref, and the subdirectory too; with
//! `--keep-git-dir` the `.git/config` names the first URL, there as here). `cache du` types the
//! result `source.git.checkout`, as BuildKit's.
//!
//! **Credentials** for http(s) remotes come from the build's secrets, as BuildKit's: the first of
//! `GIT_AUTH_HEADER.<host>`, `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER`, `GIT_AUTH_TOKEN` is sent
//! as `Authorization` (a header as it is, a token as `basic base64("x-access-token:TOKEN")`);
//! `<host>` is the URL's host with its port, as BuildKit's `url.Host`. A submodule gets it only
//! where BuildKit's git would send it (`git_submodule`). A remote that wants credentials and got
//! none (or refused them) is said so, naming the secrets, rather than in libgit2's words.
//! https trusts the system's roots and what OpenSSL's `SSL_CERT_FILE` / `SSL_CERT_DIR` name
//! (measured end to end): the `ca` of rbuild's registry config is the registry client's only.
//!
//! **Transports**: `git://`, `http://`, `https://` (OpenSSL) are libgit2's own; `ssh://` and
//! `user@host:path` run the system's `ssh` signed in through the agent of `--ssh default`
//! (`ops::git_ssh`, which argues why). Every talk with a remote goes through
//! `git_ssh::connect`, so a canceled build ends a hanging ssh too.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

use base64::Engine;
use git2::{AutotagOption, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository};

use super::git_ssh;
use super::git_submodule::{self, SubmoduleError};
use super::layer::{self, Layer};
use super::{CacheInput, Environment, OpError, Resources};
use crate::graph::GitSource;
use crate::store::LayerKind;
use crate::store::git_repository::HeldRepository;

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
    /// BuildKit's words; an ssh remote needs the ssh id `default`.
    #[error(
        "no SSH key \"default\" forwarded from the client: the ssh remote `{remote}` needs `--ssh default` (the agent at $SSH_AUTH_SOCK) or `--ssh default=KEY`"
    )]
    NoSshKey { remote: String },
    #[error("failed to serve the ssh agent for `{remote}`: {message}")]
    SshAgent { remote: String, message: String },
    #[error("`{path}` of `{remote}` is larger than {limit} bytes")]
    TooLarge { remote: String, path: String, limit: u64 },
    #[error("failed to use the git repository `{path}`: {message}")]
    Repository { path: String, message: String },
    /// BuildKit's words.
    #[error("failed to update submodules for `{remote}`: {error}")]
    Submodule { remote: String, error: SubmoduleError },
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
    let resolved = resolve(source, environment).map_err(|error| match environment.check_canceled() {
        Err(canceled) => canceled,
        Ok(()) => error.into(),
    })?;
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

/// The layer of the commit's files, fetched first when the shared repository lacks the commit,
/// with its submodules (`git_submodule`) written in after the parent's lock is let go.
pub(crate) fn run(source: &GitSource, environment: &Environment) -> Result<Vec<Layer>, OpError> {
    let resolved = resolve(source, environment)?;
    let directory = environment.store.temp_dir("git-")?;
    let headers = authorization(source, environment);
    let commit_time;
    let submodules = {
        let (held, repository) = holding_commit(source, &resolved, &headers, environment)?;
        commit_time = repository.find_commit(resolved.commit).map_err(repository_error(&held))?.committer().when().seconds();
        let written = write_files(&repository, source, &resolved, directory.path())
            .map_err(|error| write_error(error, &held, &source.remote, &source.subdir, resolved.commit))?;
        // Submodules' repositories go into `.git/modules` only where git would put them.
        let git_dir = (source.keep_git_dir && source.subdir.is_empty()).then(|| Path::new(".git"));
        let holder = git_submodule::Holder { remote: &source.remote, directory: Path::new(""), git_dir, depth: 0 };
        git_submodule::Pending::of(environment.store, &repository, resolved.commit, &holder, written)
            .map_err(|error| write_error(error, &held, &source.remote, &source.subdir, resolved.commit))?
    };
    git_submodule::update(submodules, source, &headers, directory.path(), environment)?;
    stamp(directory.path(), source.timestamp.unwrap_or(commit_time)).map_err(|(path, error)| GitError::Write {
        remote: source.remote.clone(),
        path,
        source: error,
    })?;
    // As BuildKit describes the record of a git checkout in `du`.
    let reference = match (&resolved.full_ref, source.reference.is_empty()) {
        (Some(full_ref), true) => full_ref.strip_prefix("refs/heads/").unwrap_or(full_ref).to_string(),
        (None, true) => resolved.commit.to_string(),
        (_, false) => source.reference.clone(),
    };
    let shown = format!("{}#{reference}", source.remote);
    let layer = layer::commit(
        environment.store,
        directory,
        &format!("git snapshot for {shown}"),
        LayerKind::GitCheckout,
        false,
        environment.cancel,
    )?;
    Ok(vec![layer])
}

/// The shared repository a holder holds, made on first use.
pub(super) fn open_shared(held: &HeldRepository) -> Result<Repository, GitError> {
    match Repository::open_bare(&held.directory) {
        Ok(repository) => Ok(repository),
        Err(_) => Repository::init_bare(&held.directory).map_err(repository_error(held)),
    }
}

pub(super) fn repository_error(held: &HeldRepository) -> impl Fn(git2::Error) -> GitError + '_ {
    move |error| GitError::Repository { path: held.directory.display().to_string(), message: error.message().to_string() }
}

/// A checkout's failure as the source's error.
pub(super) fn write_error(error: WriteError, held: &HeldRepository, remote: &str, subdir: &str, commit: Oid) -> GitError {
    match error {
        WriteError::Git(error) => repository_error(held)(error),
        WriteError::Io(path, error) => GitError::Write { remote: remote.to_string(), path, source: error },
        WriteError::NoSubdir => GitError::NoSubdir { subdir: subdir.to_string(), commit: commit.to_string() },
        WriteError::Submodule(error) => GitError::Submodule { remote: remote.to_string(), error },
    }
}

/// The remote's shared repository, held, with the resolved commit in it: fetched when missing.
fn holding_commit(
    source: &GitSource,
    resolved: &Resolved,
    headers: &[String],
    environment: &Environment,
) -> Result<(HeldRepository, Repository), OpError> {
    let held = environment.store.hold_git_repository(&source.remote)?;
    let repository = open_shared(&held)?;
    if repository.find_commit(resolved.commit).is_err() {
        let reference = if source.reference.is_empty() { resolved.commit.to_string() } else { source.reference.clone() };
        let wanted =
            Wanted { remote: &source.remote, full_ref: resolved.full_ref.as_deref(), commit: resolved.commit, reference: &reference };
        fetch(&repository, &wanted, headers, environment)?;
    }
    environment.check_canceled()?;
    Ok((held, repository))
}

/// How many symbolic links a Dockerfile path may pass through, as the kernel's limit.
const MAX_LINKS: usize = 40;

/// The Dockerfile of a git build context: the bytes of `path` (under `#REF:SUBDIR`) in the
/// source's commit, fetched as [`run`] fetches it (so the files' fetch finds it there), at most
/// `limit` bytes. Symbolic links are followed inside the commit's tree, as BuildKit reads the
/// file from its checkout; `None` when there is no such file, or a link leads out of the tree.
pub(crate) fn read_file(
    source: &GitSource,
    path: &str,
    limit: u64,
    resources: &Resources,
    cancel: &AtomicBool,
) -> Result<Option<Vec<u8>>, OpError> {
    let selections = super::file::SelectionMemo::default();
    let environment = Environment {
        store: resources.store,
        hash_cache: resources.hash_cache,
        cancel,
        selections: &selections,
        secrets: resources.secrets,
        ssh: resources.ssh,
        registry: resources.registry,
        imported: resources.imported,
        status: &|_, _, _, _| {},
        log: &|_, _| {},
        fresh_mounts: None,
        context_copies: &[],
        compress_layer: false,
    };
    let resolved = resolve(source, &environment)?;
    let (held, repository) = holding_commit(source, &resolved, &authorization(source, &environment), &environment)?;
    let repository_error = repository_error(&held);
    let tree = repository.find_commit(resolved.commit).and_then(|commit| commit.tree()).map_err(&repository_error)?;
    let mut wanted: Vec<String> = Vec::new();
    let mut pending: Vec<String> = source.subdir.split('/').chain(path.split('/')).rev().map(String::from).collect();
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "" | "." => continue,
            ".." => {
                if wanted.pop().is_none() {
                    return Ok(None);
                }
                continue;
            }
            _ => wanted.push(component),
        }
        let Ok(entry) = tree.get_path(Path::new(&wanted.join("/"))) else { return Ok(None) };
        match entry.filemode() {
            0o120000 => {
                links += 1;
                let target = repository.find_blob(entry.id()).map_err(&repository_error)?;
                let target = String::from_utf8_lossy(target.content()).into_owned();
                if links > MAX_LINKS || target.starts_with('/') {
                    return Ok(None);
                }
                wanted.pop();
                pending.extend(target.split('/').rev().map(String::from));
            }
            0o040000 => {}
            0o100644 | 0o100755 | 0o100664 if pending.iter().all(|rest| rest.is_empty() || rest == ".") => {
                let blob = repository.find_blob(entry.id()).map_err(&repository_error)?;
                if blob.size() as u64 > limit {
                    return Err(GitError::TooLarge { remote: source.remote.clone(), path: path.to_string(), limit }.into());
                }
                return Ok(Some(blob.content().to_vec()));
            }
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The source's commit: a full commit id as it is, else the remote's answer (asked once).
fn resolve(source: &GitSource, environment: &Environment) -> Result<Resolved, GitError> {
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
    let headers = authorization(source, environment);
    let remote_error = |error: git2::Error| match fetch_failure(&source.remote, !headers.is_empty(), error) {
        GitError::Fetch { remote, message } if source.reference.is_empty() => GitError::DefaultBranch { remote, message },
        other => other,
    };
    // libgit2 sends custom headers only on a fetch, so the listing is a fetch of a ref no remote
    // has into a scratch repository: it connects, lists the refs and wants nothing.
    let scratch = environment
        .store
        .temp_dir("git-ls-remote-")
        .map_err(|error| GitError::Repository { path: environment.store.root().display().to_string(), message: error.to_string() })?;
    let repository = Repository::init_bare(scratch.path())
        .map_err(|error| GitError::Repository { path: scratch.path().display().to_string(), message: error.message().to_string() })?;
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let (heads, default_branch): (Vec<(String, Oid)>, Option<String>) = git_ssh::connect(&source.remote, environment, || {
        let mut remote = repository.remote_anonymous(&source.remote).map_err(remote_error)?;
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(environment)).download_tags(AutotagOption::None).custom_headers(&header_refs);
        remote.download(&[NOTHING], Some(&mut options)).map_err(remote_error)?;
        let listed = remote.list().map_err(remote_error)?;
        let heads = listed.iter().map(|head| (head.name().to_string(), head.oid())).collect();
        let default_branch = listed.iter().find(|head| head.name() == "HEAD").and_then(|head| head.symref_target()).map(String::from);
        let _ = remote.disconnect();
        Ok::<_, GitError>((heads, default_branch))
    })?;
    let find = |name: &str| heads.iter().find(|(head, _)| head == name).map(|(_, oid)| *oid);
    let reference = source.reference.as_str();
    // No ref is the default branch, by name when the remote says which (`ls-remote --symref`,
    // as BuildKit asks): the `du` description and a kept `.git` name it, as BuildKit's do.
    let candidates: Vec<String> = if reference.is_empty() {
        default_branch.into_iter().chain(["HEAD".to_string()]).collect()
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

/// What to fetch: the commit, by its full ref when it was named by one.
pub(super) struct Wanted<'a> {
    pub remote: &'a str,
    pub full_ref: Option<&'a str>,
    pub commit: Oid,
    /// How the user (or `.gitmodules`) named it, for the error when the remote lacks it.
    pub reference: &'a str,
}

/// Fetches the commit into the shared repository, depth 1, under a ref of its own so it stays.
pub(super) fn fetch(repository: &Repository, wanted: &Wanted, headers: &[String], environment: &Environment) -> Result<(), OpError> {
    let fetch_error = |error: git2::Error| fetch_failure(wanted.remote, !headers.is_empty(), error);
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let options = |depth: i32| {
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(environment)).download_tags(AutotagOption::None).custom_headers(&header_refs).depth(depth);
        options
    };
    let kept = format!("refs/rbuild/{}", wanted.commit);
    let refspec = match wanted.full_ref {
        Some(full_ref) => format!("+{full_ref}:{kept}"),
        None => format!("+{}:{kept}", wanted.commit),
    };
    git_ssh::connect(wanted.remote, environment, || {
        let mut remote = repository.remote_anonymous(wanted.remote).map_err(fetch_error)?;
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut options(1)), None);
        environment.check_canceled()?;
        // The ref may have moved since it was resolved, or the server refuses an id it does not
        // advertise: then the whole history of its branches and tags, which holds the commit if
        // the remote has it at all.
        if fetched.is_err() || repository.find_commit(wanted.commit).is_err() {
            let everything = ["+refs/heads/*:refs/rbuild/heads/*", "+refs/tags/*:refs/rbuild/tags/*"];
            let fetched = remote.fetch(&everything, Some(&mut options(0)), None);
            environment.check_canceled()?;
            fetched.map_err(fetch_error)?;
        }
        Ok::<_, OpError>(())
    })?;
    let commit = repository
        .find_commit(wanted.commit)
        .map_err(|_| GitError::UnknownRef { remote: wanted.remote.to_string(), reference: wanted.reference.to_string() })?;
    repository.reference(&kept, commit.id(), true, "rbuild fetch").map_err(fetch_error)?;
    Ok(())
}

/// A failed transfer, said plainly when the remote wants credentials (libgit2 words it as a
/// missing callback: rbuild has none to offer, the secrets are all it sends).
fn fetch_failure(remote: &str, sent_credentials: bool, error: git2::Error) -> GitError {
    let message = if error.code() == git2::ErrorCode::Auth || error.message().contains("authentication required") {
        if sent_credentials {
            "authentication failed: the remote refused the credentials from the build's secrets".to_string()
        } else {
            "authentication required: pass a token as `--secret id=GIT_AUTH_TOKEN,env=...` (or `GIT_AUTH_TOKEN.<host>`, `GIT_AUTH_HEADER`)"
                .to_string()
        }
    } else if error.code() == git2::ErrorCode::Certificate || error.class() == git2::ErrorClass::Ssl {
        // libgit2's OpenSSL trusts the system's roots and what these variables name; the
        // registry client's `ca` settings are not its.
        format!("{}; to trust a private certificate authority, name its PEM file in `SSL_CERT_FILE`", error.message())
    } else {
        error.message().to_string()
    };
    GitError::Fetch { remote: remote.to_string(), message }
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

pub(super) enum WriteError {
    Git(git2::Error),
    Io(String, std::io::Error),
    NoSubdir,
    Submodule(SubmoduleError),
}

impl From<git2::Error> for WriteError {
    fn from(error: git2::Error) -> WriteError {
        WriteError::Git(error)
    }
}

/// A submodule a checkout met: its gitlink's path in the repository, the directory it goes to
/// (relative to the checkout's root), the commit it pins, and what of it is wanted.
pub(super) struct Gitlink {
    pub path: String,
    pub directory: PathBuf,
    pub commit: Oid,
    /// The rest of `#REF:SUBDIR` when SUBDIR goes into the submodule, else empty.
    pub subdir: String,
}

/// Writes the source's files (of the subdirectory, with `.git` when kept) into `root`; the
/// submodules met are returned, their directories made and empty.
fn write_files(repository: &Repository, source: &GitSource, resolved: &Resolved, root: &Path) -> Result<Vec<Gitlink>, WriteError> {
    let gitlinks = checkout(repository, resolved.commit, &source.subdir, root)?;
    if source.keep_git_dir {
        let commit = repository.find_commit(resolved.commit)?;
        let mut tree = commit.tree()?;
        if !source.subdir.is_empty() {
            tree = tree.get_path(Path::new(&source.subdir))?.to_object(repository)?.into_tree().map_err(|_| WriteError::NoSubdir)?;
        }
        let kept = Kept {
            git_dir: &root.join(".git"),
            commit: resolved.commit,
            tag: resolved.tag,
            full_ref: resolved.full_ref.as_deref(),
            remote: &source.remote,
            worktree: None,
        };
        write_git_dir(repository, &kept, &tree)?;
    }
    Ok(gitlinks)
}

/// One commit's files (of `subdir`) into the existing directory `root`, 0755. A `subdir` that
/// runs into a submodule writes nothing: the submodule is returned with the rest of the path.
pub(super) fn checkout(repository: &Repository, commit: Oid, subdir: &str, root: &Path) -> Result<Vec<Gitlink>, WriteError> {
    let mut tree = repository.find_commit(commit)?.tree()?;
    let mut prefix = String::new();
    let mut components = subdir.split('/').filter(|component| !component.is_empty());
    while let Some(component) = components.next() {
        let (mode, id) = tree.get_name(component).map(|entry| (entry.filemode(), entry.id())).ok_or(WriteError::NoSubdir)?;
        prefix = if prefix.is_empty() { component.to_string() } else { format!("{prefix}/{component}") };
        match mode {
            0o040000 => tree = repository.find_tree(id)?,
            0o160000 => {
                let subdir = components.collect::<Vec<_>>().join("/");
                return Ok(vec![Gitlink { path: prefix, directory: PathBuf::new(), commit: id, subdir }]);
            }
            _ => return Err(WriteError::NoSubdir),
        }
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(|error| WriteError::Io(root.display().to_string(), error))?;
    let mut gitlinks = Vec::new();
    write_tree(repository, &tree, root, &Place { path: &prefix, directory: Path::new("") }, &mut gitlinks)?;
    Ok(gitlinks)
}

/// Stamps every entry under `root` with `time`, as the module docs say.
fn stamp(root: &Path, time: i64) -> Result<(), (String, std::io::Error)> {
    let stamp = nix::sys::time::TimeSpec::new(time, 0);
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.map_err(|error| (root.display().to_string(), error.into()))?;
        nix::sys::stat::utimensat(None, entry.path(), &stamp, &stamp, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
            .map_err(|error| (entry.path().display().to_string(), error.into()))?;
    }
    Ok(())
}

/// Where a tree is written: its path in the repository and its directory under the root.
struct Place<'a> {
    path: &'a str,
    directory: &'a Path,
}

/// One tree's entries under `root`/`place.directory`, with git's modes. Names git forbids in a
/// checkout (`.`, `..`, `.git`, anything with a `/`) are left out, so nothing lands outside it.
fn write_tree(
    repository: &Repository,
    tree: &git2::Tree,
    root: &Path,
    place: &Place,
    gitlinks: &mut Vec<Gitlink>,
) -> Result<(), WriteError> {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        if name.is_empty() || name == b"." || name == b".." || name.eq_ignore_ascii_case(b".git") || name.contains(&b'/') {
            continue;
        }
        let directory = place.directory.join(OsStr::from_bytes(name));
        let path = root.join(&directory);
        let io = |error| WriteError::Io(path.display().to_string(), error);
        let name = String::from_utf8_lossy(name);
        let in_repository = if place.path.is_empty() { name.into_owned() } else { format!("{}/{name}", place.path) };
        match entry.filemode() {
            0o040000 => {
                fs::create_dir(&path).map_err(io)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io)?;
                let inner = Place { path: &in_repository, directory: &directory };
                write_tree(repository, &repository.find_tree(entry.id())?, root, &inner, gitlinks)?;
            }
            0o120000 => {
                let blob = repository.find_blob(entry.id())?;
                std::os::unix::fs::symlink(OsStr::from_bytes(blob.content()), &path).map_err(io)?;
            }
            // A submodule: its directory, filled later (`git_submodule`).
            0o160000 => {
                fs::create_dir(&path).map_err(io)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io)?;
                gitlinks.push(Gitlink { path: in_repository, directory, commit: entry.id(), subdir: String::new() });
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

/// A repository `--keep-git-dir` writes: the source's at `.git`, or a submodule's at
/// `.git/modules/NAME` (with `core.worktree` pointing back at its directory, as git does).
pub(super) struct Kept<'a> {
    pub git_dir: &'a Path,
    pub commit: Oid,
    pub tag: Option<Oid>,
    pub full_ref: Option<&'a str>,
    pub remote: &'a str,
    /// For a submodule: its directory, relative to `git_dir`.
    pub worktree: Option<&'a str>,
}

/// `--keep-git-dir`: a repository holding the commit (shallow), `HEAD` detached at it, the ref
/// it was named by, `origin`, and an index of the tree.
pub(super) fn write_git_dir(repository: &Repository, kept: &Kept, tree: &git2::Tree) -> Result<(), WriteError> {
    // Without the host's git templates (hooks, description): the layer is the same on every host.
    let mut options = git2::RepositoryInitOptions::new();
    options.external_template(false);
    let written = match kept.worktree {
        None => Repository::init_opts(kept.git_dir.parent().unwrap_or(kept.git_dir), &options)?,
        Some(worktree) => {
            Repository::init_opts(kept.git_dir, options.bare(true))?;
            let mut config = git2::Config::open(&kept.git_dir.join("config"))?;
            config.set_bool("core.bare", false)?;
            config.set_str("core.worktree", worktree)?;
            Repository::open(kept.git_dir)?
        }
    };
    let (from, to) = (repository.odb()?, written.odb()?);
    let mut objects = vec![kept.commit];
    objects.extend(kept.tag);
    let commit_tree = repository.find_commit(kept.commit)?.tree_id();
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
    if let Some(full_ref) = kept.full_ref
        && full_ref.starts_with("refs/")
    {
        written.reference(full_ref, kept.tag.unwrap_or(kept.commit), true, "")?;
    }
    written.set_head_detached(kept.commit)?;
    written.remote("origin", kept.remote)?;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| WriteError::Io(path, error)
    };
    let shallow = kept.git_dir.join("shallow");
    fs::write(&shallow, format!("{}\n", kept.commit)).map_err(io(&shallow))?;
    // The reflog would hold this host's user and time; BuildKit's is empty too.
    let logs = kept.git_dir.join("logs");
    if logs.exists() {
        fs::remove_dir_all(&logs).map_err(io(&logs))?;
    }
    let mut index = written.index()?;
    index.read_tree(tree)?;
    index.write()?;
    Ok(())
}
