//! Submodules of an `ADD <git URL>` checkout, as BuildKit's `git submodule update --init
//! --recursive --depth=1` gives them (measured with the oracle): every gitlink of the commit
//! (of `#REF:SUBDIR`, or the submodule SUBDIR runs into) is filled with the files of the commit
//! it pins, recursively, modes and mtimes as the parent's files.
//!
//! **Where from.** The URL is the one `.gitmodules` of the commit that holds the gitlink gives
//! for its path; `./` and `../` are relative to that commit's remote, as git resolves them (so a
//! nested submodule is relative to its parent submodule's URL). The commit is fetched as the
//! source's is (depth 1, by id, falling back to the branches and tags) into the shared repository
//! of the submodule's own remote, so a submodule used by many projects is fetched once.
//!
//! **Hostile `.gitmodules`.** Only the transports git allows a submodule by default (BuildKit
//! runs git with `protocol.file.allow=user`): `git://`, `http(s)://`, `ssh://` and the scp form;
//! `file://`, a local path and `ext::` (a command) are refused with git's words, "transport
//! `file` not allowed". A name with a `..` component is ignored as git ignores it ("suspicious
//! submodule name"), and a gitlink without a URL is an error, as in BuildKit. Paths come from
//! the tree, never from `.gitmodules`: a gitlink's path is made of the names `write_tree`
//! accepts, so nothing lands outside the checkout. A chain of submodules can not loop (a commit
//! would have to contain its own id) but can be long: more than [`MAX_DEPTH`] levels is an error.
//!
//! **Credentials.** The source's `Authorization` header goes only where BuildKit's git sends it
//! (`http.<remote>.extraheader`): URLs under the source's remote, or any `https://github.com/`
//! repository when the source is one. A `.gitmodules` can not make rbuild send a token elsewhere.
//!
//! **Locks.** A build holds at most one shared repository at a time: the parent's is let go once
//! its files are written and its `.gitmodules` read, then each submodule's is held in turn. Two
//! processes can therefore never wait on each other (each waits for one lock while holding
//! none), and a submodule whose remote is the parent's own does not wait on itself. The root's
//! shared lock is taken first by every build, before any repository's.
//!
//! **`--keep-git-dir`** (without a subdirectory) writes what `git submodule update` leaves:
//! `.git/modules/NAME` (nested: `.git/modules/A/modules/B`) holding the commit, its directory's
//! `.git` file pointing there, and `submodule.NAME.url`/`active` in the parent's config. Without
//! it BuildKit leaves a `.git` file in each submodule pointing into its own snapshot directory
//! (`gitdir: ../../../1282/fs/modules/sub`), dangling in the image and different on every
//! machine: rbuild leaves it out.
//!
//! **Cache key.** Unchanged: the parent commit's tree pins every submodule's commit id, and
//! `.gitmodules` (the URLs) is part of that tree, so the parent's commit id says it all.

use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::git::{self, Gitlink, Kept, Wanted, WriteError};
use super::{Environment, OpError};
use crate::graph::GitSource;
use crate::store::Store;

/// How deep submodules may nest below the source.
pub(super) const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmoduleError {
    #[error("no url found for submodule path `{0}` in .gitmodules")]
    NoUrl(String),
    #[error("transport `{transport}` not allowed for submodule `{path}` (`{url}`)")]
    Transport { transport: String, path: String, url: String },
    #[error("submodule `{path}`: url `{url}` climbs above the host of `{base}`")]
    Climbs { path: String, url: String, base: String },
    #[error("submodule `{0}` is nested more than {MAX_DEPTH} levels deep")]
    TooDeep(String),
    #[error("failed to read .gitmodules: {0}")]
    Gitmodules(String),
}

/// A submodule to fill: where from, which commit, where to.
pub(super) struct Pending {
    name: String,
    remote: String,
    commit: Oid,
    /// Relative to the checkout's root.
    directory: PathBuf,
    subdir: String,
    /// `--keep-git-dir`: the git directory of the repository that holds the gitlink, relative
    /// to the root (`.git`, `.git/modules/A`).
    parent_git_dir: Option<PathBuf>,
    depth: usize,
}

/// The checkout that met the gitlinks: its remote, its directory and git directory (for
/// `--keep-git-dir`) relative to the root, and how deep it is.
pub(super) struct Holder<'a> {
    pub remote: &'a str,
    pub directory: &'a Path,
    pub git_dir: Option<&'a Path>,
    pub depth: usize,
}

impl Pending {
    /// The gitlinks a checkout of `commit` met, with their URLs from the commit's `.gitmodules`.
    pub(super) fn of(
        store: &Store,
        repository: &Repository,
        commit: Oid,
        holder: &Holder,
        gitlinks: Vec<Gitlink>,
    ) -> Result<Vec<Pending>, WriteError> {
        if gitlinks.is_empty() {
            return Ok(Vec::new());
        }
        let modules = read_gitmodules(store, repository, commit)?;
        let mut pending = Vec::new();
        for gitlink in gitlinks {
            let submodule = |error| WriteError::Submodule(error);
            let module = modules
                .iter()
                .find(|module| module.path.as_deref() == Some(gitlink.path.as_str()) && module.url.is_some())
                .ok_or_else(|| submodule(SubmoduleError::NoUrl(gitlink.path.clone())))?;
            let url = module.url.as_deref().unwrap_or_default();
            let resolved = resolve_url(holder.remote, url).ok_or_else(|| {
                submodule(SubmoduleError::Climbs { path: gitlink.path.clone(), url: url.to_string(), base: holder.remote.to_string() })
            })?;
            check_transport(&resolved).map_err(|transport| {
                submodule(SubmoduleError::Transport { transport, path: gitlink.path.clone(), url: resolved.clone() })
            })?;
            if holder.depth >= MAX_DEPTH {
                return Err(submodule(SubmoduleError::TooDeep(gitlink.path)));
            }
            pending.push(Pending {
                name: module.name.clone(),
                remote: resolved,
                commit: gitlink.commit,
                directory: holder.directory.join(gitlink.directory),
                subdir: gitlink.subdir,
                parent_git_dir: holder.git_dir.map(Path::to_path_buf),
                depth: holder.depth + 1,
            });
        }
        Ok(pending)
    }
}

/// Fills the submodules under `root`, one shared repository held at a time (see the module
/// docs), breadth first.
pub(super) fn update(
    pending: Vec<Pending>,
    source: &GitSource,
    headers: &[String],
    root: &Path,
    environment: &Environment,
) -> Result<(), OpError> {
    let mut queue: VecDeque<Pending> = pending.into();
    while let Some(submodule) = queue.pop_front() {
        environment.check_canceled()?;
        let held = environment.store.hold_git_repository(&submodule.remote)?;
        let repository = git::open_shared(&held)?;
        if repository.find_commit(submodule.commit).is_err() {
            let reference = submodule.commit.to_string();
            let wanted = Wanted { remote: &submodule.remote, full_ref: None, commit: submodule.commit, reference: &reference };
            let headers = if in_token_scope(&source.remote, &submodule.remote) { headers } else { &[] };
            git::fetch(&repository, &wanted, headers, environment)?;
        }
        let failed = |error| git::write_error(error, &held, &submodule.remote, &submodule.subdir, submodule.commit);
        let directory = root.join(&submodule.directory);
        let gitlinks = git::checkout(&repository, submodule.commit, &submodule.subdir, &directory).map_err(failed)?;
        let git_dir = match &submodule.parent_git_dir {
            Some(parent) => Some(keep_git_dir(&repository, &submodule, parent, root).map_err(failed)?),
            None => None,
        };
        let holder =
            Holder { remote: &submodule.remote, directory: &submodule.directory, git_dir: git_dir.as_deref(), depth: submodule.depth };
        let nested = Pending::of(environment.store, &repository, submodule.commit, &holder, gitlinks).map_err(failed)?;
        queue.extend(nested);
    }
    Ok(())
}

/// `.git/modules/NAME` for the submodule, its `.git` file and the parent's config entry; the
/// git directory, relative to the root.
fn keep_git_dir(repository: &Repository, submodule: &Pending, parent_git_dir: &Path, root: &Path) -> Result<PathBuf, WriteError> {
    let git_dir = parent_git_dir.join("modules").join(&submodule.name);
    let up = |path: &Path| "../".repeat(path.components().count());
    let worktree = format!("{}{}", up(&git_dir), submodule.directory.display());
    let tree = repository.find_commit(submodule.commit)?.tree()?;
    let absolute = root.join(&git_dir);
    fs::create_dir_all(&absolute).map_err(|error| WriteError::Io(absolute.display().to_string(), error))?;
    let kept = Kept {
        git_dir: &absolute,
        commit: submodule.commit,
        tag: None,
        full_ref: None,
        remote: &submodule.remote,
        worktree: Some(&worktree),
    };
    git::write_git_dir(repository, &kept, &tree)?;
    let link = root.join(&submodule.directory).join(".git");
    let text = format!("gitdir: {}{}\n", up(&submodule.directory), git_dir.display());
    fs::write(&link, text).map_err(|error| WriteError::Io(link.display().to_string(), error))?;
    let mut config = git2::Config::open(&root.join(parent_git_dir).join("config"))?;
    config.set_bool(&format!("submodule.{}.active", submodule.name), true)?;
    config.set_str(&format!("submodule.{}.url", submodule.name), &submodule.remote)?;
    Ok(git_dir)
}

/// One `[submodule "NAME"]` section.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Module {
    name: String,
    path: Option<String>,
    url: Option<String>,
}

/// The submodules `.gitmodules` of `commit` declares, read by libgit2's config parser (git's
/// syntax: quoting, escapes, comments). Suspicious names are left out, as git leaves them.
fn read_gitmodules(store: &Store, repository: &Repository, commit: Oid) -> Result<Vec<Module>, WriteError> {
    let tree = repository.find_commit(commit)?.tree()?;
    let Some(entry) = tree.get_name(".gitmodules") else { return Ok(Vec::new()) };
    let blob = repository.find_blob(entry.id())?;
    let scratch = store.temp_dir("gitmodules-").map_err(|error| WriteError::Submodule(SubmoduleError::Gitmodules(error.to_string())))?;
    let path = scratch.path().join("gitmodules");
    fs::write(&path, blob.content()).map_err(|error| WriteError::Io(path.display().to_string(), error))?;
    let config = git2::Config::open(&path)?;
    let mut modules: Vec<Module> = Vec::new();
    let mut entries = config.entries(Some("^submodule\\."))?;
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let (Ok(name), Ok(value)) = (entry.name(), entry.value()) else { continue };
        let Some((module, key)) = name.strip_prefix("submodule.").and_then(|rest| rest.rsplit_once('.')) else { continue };
        if !is_sane_name(module) {
            continue;
        }
        let index = match modules.iter().position(|known| known.name == module) {
            Some(index) => index,
            None => {
                modules.push(Module { name: module.to_string(), ..Module::default() });
                modules.len() - 1
            }
        };
        match key {
            "path" => modules[index].path = Some(value.trim_end_matches('/').to_string()),
            "url" => modules[index].url = Some(value.to_string()),
            _ => {}
        }
    }
    Ok(modules)
}

/// Git's `check_submodule_name`: not empty, no `..` component (the name is a directory under
/// `.git/modules`).
fn is_sane_name(name: &str) -> bool {
    !name.is_empty() && !name.split(['/', '\\']).any(|component| component == "..")
}

/// A `.gitmodules` URL as git resolves it against the remote of the repository that holds it:
/// `./x` and `../x` are relative to the remote (each `../` takes off one path component), any
/// other URL is itself. None when `../` would climb over the host.
fn resolve_url(remote: &str, url: &str) -> Option<String> {
    if !(url.starts_with("./") || url.starts_with("../") || url == "." || url == "..") {
        return Some(url.to_string());
    }
    let mut base = remote.trim_end_matches('/').to_string();
    // Where the path starts: after `scheme://host`, or after `host:` in the scp form.
    let path_start = match base.find("://") {
        Some(at) => base[at + 3..].find('/').map(|slash| at + 3 + slash)?,
        None => base.find(':')? + 1,
    };
    let mut rest = url;
    loop {
        if let Some(after) = rest.strip_prefix("./") {
            rest = after;
        } else if let Some(after) = rest.strip_prefix("../").or(if rest == ".." { Some("") } else { None }) {
            let cut = base[path_start..].rfind('/').map(|slash| path_start + slash);
            match cut {
                Some(cut) => base.truncate(cut),
                // The scp form's first component: `host:repo.git` + `../x` is `host:x`.
                None if base.len() > path_start => base.truncate(path_start),
                None => return None,
            }
            rest = after;
        } else if rest == "." {
            rest = "";
        } else {
            break;
        }
    }
    Some(match (rest.is_empty(), base.ends_with(':')) {
        (true, _) => base,
        (false, true) => format!("{base}{rest}"),
        (false, false) => format!("{base}/{rest}"),
    })
}

/// The transports git lets a submodule use by default; `Err` names the refused one.
fn check_transport(url: &str) -> Result<(), String> {
    if let Some((transport, _)) = url.split_once("::") {
        return Err(transport.to_string());
    }
    if let Some((scheme, _)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        return match scheme.as_str() {
            "git" | "http" | "https" | "ssh" | "git+ssh" | "ssh+git" => Ok(()),
            _ => Err(scheme),
        };
    }
    // The scp form `[user@]host:path` (a `:` before any `/`), else a local path.
    match url.find(':') {
        Some(colon) if !url.starts_with('-') && !url[..colon].contains('/') && colon > 0 => Ok(()),
        _ => Err("file".to_string()),
    }
}

/// Whether BuildKit's `http.<scope>.extraheader` reaches `url`: the source's remote and what is
/// under it, or every github.com repository for a github.com source (`tokenScope`).
fn in_token_scope(remote: &str, url: &str) -> bool {
    let scope = ["https://github.com/", "https://www.github.com/"].into_iter().find(|prefix| remote.starts_with(prefix)).unwrap_or(remote);
    url == scope || (url.starts_with(scope) && (scope.ends_with('/') || url[scope.len()..].starts_with('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_as_git_resolves_them() {
        let cases = [
            ("git://h:9418/parent.git", "../sub.git", Some("git://h:9418/sub.git")),
            ("git://h/org/parent.git/", "../sub.git", Some("git://h/org/sub.git")),
            ("https://h/org/parent.git", "./sub.git", Some("https://h/org/parent.git/sub.git")),
            ("https://h/org/parent.git", "../../other/sub.git", Some("https://h/other/sub.git")),
            ("git@h:org/parent.git", "../sub.git", Some("git@h:org/sub.git")),
            ("git@h:parent.git", "../sub.git", Some("git@h:sub.git")),
            ("https://h/parent.git", "https://elsewhere/x.git", Some("https://elsewhere/x.git")),
            // Over the host: refused rather than guessed.
            ("https://h/parent.git", "../../x.git", None),
            ("git@h:parent.git", "../../x.git", None),
        ];
        for (remote, url, expected) in cases {
            assert_eq!(resolve_url(remote, url).as_deref(), expected, "{remote} + {url}");
        }
    }

    #[test]
    fn only_the_transports_git_allows_submodules_pass() {
        for url in ["git://h/x", "https://h/x.git", "HTTP://h/x", "ssh://git@h/x", "git@h:x.git", "h:x.git"] {
            assert_eq!(check_transport(url), Ok(()), "{url}");
        }
        let refused = [
            ("file:///etc/x.git", "file"),
            ("/srv/x.git", "file"),
            ("x.git", "file"),
            ("ext::sh -c touch% /tmp/pwned", "ext"),
            ("fd::3", "fd"),
            ("ftp://h/x.git", "ftp"),
            ("-uhelp:x", "file"),
            ("a/b:c", "file"),
        ];
        for (url, transport) in refused {
            assert_eq!(check_transport(url), Err(transport.to_string()), "{url}");
        }
    }

    #[test]
    fn suspicious_names_are_left_out() {
        assert!(is_sane_name("mods/sub"));
        for name in ["", "..", "../../evil", "a/../b", "a\\..\\b"] {
            assert!(!is_sane_name(name), "{name}");
        }
    }

    #[test]
    fn credentials_reach_only_buildkits_scope() {
        let remote = "https://h/org/parent.git";
        assert!(in_token_scope(remote, remote));
        assert!(in_token_scope(remote, "https://h/org/parent.git/inner.git"));
        assert!(!in_token_scope(remote, "https://h/org/parent.git-evil"));
        assert!(!in_token_scope(remote, "https://h/org/sub.git"));
        assert!(!in_token_scope(remote, "https://evil/org/parent.git"));
        assert!(in_token_scope("https://github.com/a/b.git", "https://github.com/c/d.git"));
    }
}
