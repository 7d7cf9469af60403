//! `RUN`: a command in a container on top of input 0; its diff is the new layer.
//!
//! The container's root filesystem is an overlay mounted by the sandbox: the input's snapshot
//! directories as lower layers, a fresh upper directory in the store's `tmp/`. The upper
//! directory is already in the store's snapshot format (overlay whiteouts and opaque markers),
//! so after the step it is committed as the layer as it is, minus the stubs the sandbox and the
//! mounts left (mount points that did not exist in the image).
//!
//! Mounts: `bind` materializes the source (a stage's files, or the context files selected for
//! it) in a temporary directory, hard-linked when read-only, copied when `rw` (writes are
//! thrown away, as in BuildKit); `cache` is a directory the store keeps across builds
//! (`store::cache_mount`: ids, locks, sharing modes; this file fills a new one);
//! `tmpfs` is the sandbox's.
//!
//! | cache key input                                    | in key | why                          |
//! |----------------------------------------------------|--------|------------------------------|
//! | argv, env, cwd, user, hostname, network, mounts     | yes    | they change the result       |
//! | `--add-host`, `--ulimit`, `--shm-size` (when given) | yes    | they change the result       |
//! | key of the base and of stage mount sources          | yes    | the result builds on them    |
//! | content digest of context files bind-mounted        | yes    | by content, never by mtime   |
//! | proxy variables, cache mount contents               | no     | not part of the result       |

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{CacheInput, Environment, Layer, OpError, Output, file, layer};
use crate::graph::{CacheSharing, ExecMountKind, ExecOp, NetworkMode, Vertex};
use crate::oci::go_quote;
use crate::oci::path::clean_in_root;
use crate::sandbox::{self, MountKind, Network, StepSpec};
use crate::snapshot::flatten::{FileMode, flatten};
use crate::snapshot::tree_diff;
use crate::snapshot::view::LayeredView;
use crate::store::cache_mount::{HeldMount, MountSharing};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The command as BuildKit quotes it (Go's `%q`): `process "/bin/sh -c echo \"a\""`.
    #[error("process {} did not complete successfully: exit code: {code}", go_quote(command))]
    Failed { command: String, code: i32 },
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("failed to prepare mount `{target}`")]
    Mount { target: String, source: io::Error },
    #[error("failed to clean the step's diff")]
    Diff(#[source] io::Error),
    #[error("failed to compute the step's changes")]
    TreeDiff(#[source] crate::snapshot::tree_diff::TreeDiffError),
    #[error("secret {0}: not found")]
    MissingSecret(String),
    #[error("no SSH key or agent given for `{0}`: use --ssh {0}=PATH or --ssh default")]
    MissingSsh(String),
}

/// `/etc/hosts` (generated) and `/etc/resolv.conf` (the host's) for a step without network.
fn network_files(hostname: &str, extra_hosts: &[(String, String)], prepared: &mut Prepared) -> io::Result<()> {
    let directory = sandbox::PrivateDir::new("hosts")?;
    let hosts = directory.path().join("hosts");
    let mut text = format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, address) in extra_hosts {
        text.push_str(&format!("{address}\t{name}\n"));
    }
    write_private(&hosts, text.as_bytes(), 0o644, 0, 0)?;
    prepared.mounts.push(sandbox::Mount { target: "/etc/hosts".into(), kind: MountKind::Bind { source: hosts, readonly: true } });
    let resolv = Path::new("/etc/resolv.conf");
    if resolv.exists() {
        prepared.mounts.push(sandbox::Mount {
            target: "/etc/resolv.conf".into(),
            kind: MountKind::Bind { source: resolv.to_path_buf(), readonly: true },
        });
    }
    prepared._private.push(directory);
    Ok(())
}

/// Writes a secret file with its mode and owner, readable by nobody else on the host.
fn write_private(path: &Path, value: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = fs::File::options().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(value)?;
    drop(file);
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// The agent socket for an ssh mount: rbuild's own agent on a socket in memory, serving the
/// given key files, or relaying (list and sign only) to the given agent socket.
fn ssh_socket(sources: &[PathBuf], prepared: &mut Prepared) -> io::Result<PathBuf> {
    let directory = sandbox::PrivateDir::new("ssh")?;
    let socket = directory.path().join("agent.sock");
    let agent = crate::ssh_agent::Agent::start(&socket, sources).map_err(io::Error::other)?;
    prepared._agents.push(agent);
    prepared._private.push(directory);
    Ok(socket)
}

pub(crate) fn cache_inputs(
    vertex: &Vertex,
    op: &ExecOp,
    inputs: &[(String, Output)],
    environment: &Environment,
) -> Result<Vec<CacheInput>, OpError> {
    let mut cache_inputs = vec![("op".to_string(), vertex.op.definition())];
    for (index, (key, output)) in inputs.iter().enumerate() {
        match output {
            Output::Layers(_) => cache_inputs.push((format!("input {index}"), key.clone())),
            Output::Context(handle) => {
                for mount in &op.mounts {
                    if let ExecMountKind::Bind { input, source, .. } = &mount.kind
                        && *input == index
                    {
                        let selection = file::select_context(handle, std::slice::from_ref(source), &[], false, environment)?;
                        cache_inputs.push((format!("files of mount {}", mount.target), selection.digest.clone()));
                    }
                }
            }
        }
    }
    Ok(cache_inputs)
}

/// `--secret` values, by id. Held in memory only; never printed (no `Debug` of values).
#[derive(Default)]
pub struct Secrets {
    values: HashMap<String, Vec<u8>>,
}

impl Secrets {
    pub fn insert(&mut self, id: String, value: Vec<u8>) {
        self.values.insert(id, value);
    }

    pub fn get(&self, id: &str) -> Option<&[u8]> {
        self.values.get(id).map(Vec::as_slice)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.values.keys()).finish()
    }
}

/// `--ssh` sources, by id: agent sockets or private key files.
#[derive(Debug, Default)]
pub struct SshSources {
    pub sources: HashMap<String, Vec<PathBuf>>,
}

/// Temporary directories, locks and agents that live as long as the step.
#[derive(Default)]
struct Prepared {
    mounts: Vec<sandbox::Mount>,
    /// Environment variables the mounts add (`env=` secrets, `SSH_AUTH_SOCK`).
    env: Vec<String>,
    _agents: Vec<crate::ssh_agent::Agent>,
    _temporary: Vec<tempfile::TempDir>,
    _private: Vec<sandbox::PrivateDir>,
    _held_mounts: Vec<HeldMount>,
}

pub(crate) fn run(vertex: &Vertex, op: &ExecOp, inputs: &[Output], environment: &Environment) -> Result<Vec<Layer>, OpError> {
    let base = inputs.first().ok_or(OpError::Unsupported("RUN without a base"))?;
    let store = environment.store;
    let view = LayeredView::new(base.layer_paths());
    let upper = store.temp_dir("exec-")?;
    // The overlay's `/` takes the upper directory's mode: 0700 would lock out non-root users.
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(upper.path(), fs::Permissions::from_mode(0o755))
            .map_err(|source| ExecError::Mount { target: "/".into(), source })?;
    }
    // The overlay, or where it is not possible (or `RBUILD_SNAPSHOTTER=copy`), a copy of the
    // image that the step changes in place and a tree diff afterwards.
    let (work, rootfs) = match sandbox::snapshotter().map_err(ExecError::from)? {
        sandbox::Snapshotter::Overlay => (Some(store.temp_dir("work-")?), None),
        sandbox::Snapshotter::Copy => {
            let rootfs = store.temp_dir("rootfs-")?;
            let copied = tree_diff::prepare_rootfs(&view, rootfs.path()).map_err(ExecError::TreeDiff)?;
            (None, Some((rootfs, copied)))
        }
    };
    let mut prepared = prepare_mounts(op, inputs, environment)?;
    if op.network == NetworkMode::None || !op.extra_hosts.is_empty() {
        // A fresh network namespace still has names, as in BuildKit: its own /etc/hosts with
        // localhost and the hostname, and the host's resolver configuration. `--add-host`
        // entries go into such a file too, after those lines, in any network mode (as BuildKit
        // writes it, measured with the oracle).
        network_files(&op.hostname, &op.extra_hosts, &mut prepared)
            .map_err(|source| ExecError::Mount { target: "/etc/hosts".into(), source })?;
    }
    let mut env = op.env.clone();
    env.extend(op.proxy_env.iter().cloned());
    for variable in &prepared.env {
        let name = variable.split('=').next().unwrap_or_default();
        env.retain(|existing| existing.split('=').next() != Some(name));
        env.push(variable.clone());
    }
    let spec = StepSpec {
        lowers: base.layer_paths(),
        upper: upper.path().to_path_buf(),
        work: work.as_ref().map_or_else(PathBuf::new, |work| work.path().to_path_buf()),
        args: op.args.clone(),
        env,
        cwd: op.cwd.clone(),
        user: op.user.clone(),
        hostname: op.hostname.clone(),
        network: match op.network {
            NetworkMode::None => Network::None,
            NetworkMode::Default | NetworkMode::Host => Network::Host,
        },
        mounts: prepared.mounts.clone(),
        rootfs: rootfs.as_ref().map(|(rootfs, _)| rootfs.path().to_path_buf()),
        ulimits: op.ulimits.clone(),
        shm_size: op.shm_size,
    };
    let outcome = sandbox::run_step(&spec, &mut |stream, bytes| (environment.log)(stream, bytes), environment.cancel);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(sandbox::SandboxError::Canceled) => return Err(OpError::Canceled),
        Err(error) => return Err(ExecError::from(error).into()),
    };
    drop(prepared);
    if outcome.exit_code != 0 {
        return Err(ExecError::Failed { command: op.args.join(" "), code: outcome.exit_code }.into());
    }
    environment.check_canceled()?;
    if let Some((rootfs, copied)) = rootfs {
        tree_diff::diff(&view, rootfs.path(), upper.path(), Some(copied)).map_err(ExecError::TreeDiff)?;
        let _ = crate::store::remove_tree(rootfs.path());
    }
    let mut stubs: Vec<String> = op.mounts.iter().map(|mount| mount.target.clone()).collect();
    stubs.extend(sandbox::STUBS.iter().map(|stub| stub.to_string()));
    remove_stubs(&view, upper.path(), &stubs).map_err(ExecError::Diff)?;
    let mut layers: Vec<Layer> = base.layers().to_vec();
    layers.push(layer::commit(
        store,
        upper,
        &vertex.name,
        crate::store::LayerKind::Regular,
        environment.compress_layer,
        environment.cancel,
    )?);
    // Only now: the layer is made, and no other overlay may use it while the runner's is up.
    drop(outcome);
    if let Some(work) = work {
        sandbox::discard(work);
    }
    Ok(layers)
}

fn prepare_mounts(op: &ExecOp, inputs: &[Output], environment: &Environment) -> Result<Prepared, OpError> {
    let store = environment.store;
    let mut prepared = Prepared::default();
    for mount in &op.mounts {
        let mount_error = |source| ExecError::Mount { target: mount.target.clone(), source };
        let kind = match &mount.kind {
            ExecMountKind::Tmpfs { size } => MountKind::Tmpfs { size: *size },
            ExecMountKind::Inline { data, mode } => {
                let directory = sandbox::PrivateDir::new("script").map_err(mount_error)?;
                let path = directory.path().join("script");
                write_private(&path, data, *mode, 0, 0).map_err(mount_error)?;
                prepared._private.push(directory);
                MountKind::Bind { source: path, readonly: true }
            }
            ExecMountKind::Secret { id, file, env, required, mode, uid, gid } => {
                let Some(value) = environment.secrets.get(id) else {
                    if *required {
                        return Err(ExecError::MissingSecret(id.clone()).into());
                    }
                    continue;
                };
                if let Some(name) = env {
                    prepared.env.push(format!("{name}={}", String::from_utf8_lossy(value)));
                }
                if !file {
                    continue;
                }
                let directory = sandbox::PrivateDir::new("secret").map_err(mount_error)?;
                let path = directory.path().join("secret");
                write_private(&path, value, *mode, *uid, *gid).map_err(mount_error)?;
                prepared._private.push(directory);
                MountKind::Bind { source: path, readonly: true }
            }
            ExecMountKind::Ssh { id, required, mode, uid, gid } => {
                let sources = environment.ssh.sources.get(id).cloned().unwrap_or_default();
                if sources.is_empty() {
                    if *required {
                        return Err(ExecError::MissingSsh(id.clone()).into());
                    }
                    continue;
                }
                let socket = ssh_socket(&sources, &mut prepared).map_err(mount_error)?;
                // The socket is rbuild's own agent's: it takes the mount's mode and owner.
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&socket, fs::Permissions::from_mode(*mode)).map_err(mount_error)?;
                std::os::unix::fs::chown(&socket, Some(*uid), Some(*gid)).map_err(mount_error)?;
                if !op.env.iter().any(|variable| variable.starts_with("SSH_AUTH_SOCK=")) {
                    prepared.env.push(format!("SSH_AUTH_SOCK={}", mount.target));
                }
                MountKind::Bind { source: socket, readonly: false }
            }
            ExecMountKind::Bind { input, source, readwrite } => {
                let staging = store.temp_dir("bind-")?;
                let directory = staging.path().join("root");
                materialize(&inputs[*input], source, &directory, *readwrite, environment)?;
                prepared._temporary.push(staging);
                MountKind::Bind { source: directory, readonly: !readwrite }
            }
            ExecMountKind::Cache { id, sharing, mode, uid, gid, from } => {
                // Seeded `from` a stage or context, the cache is another one than the plain `id`,
                // one per seed (as BuildKit keys it by id and source ref; measured with the oracle).
                let directory = match from {
                    None => store.cache_mount_dir(id),
                    Some((input, source)) => {
                        let seed = seed_identity(&inputs[*input], source, environment)?;
                        store.cache_mount_dir(&format!("{id}\0from {seed} {source}"))
                    }
                };
                if let Some(fresh) = environment.fresh_mounts {
                    fresh.reset_once(store, &directory).map_err(mount_error)?;
                }
                store.make_cache_mount(&directory, |fresh: &Path| -> Result<(), OpError> {
                    match from {
                        Some((input, source)) => materialize(&inputs[*input], source, fresh, true, environment)?,
                        None => {
                            fs::create_dir(fresh).map_err(mount_error)?;
                            // A mount exported with `--cache-to ...,cache-mounts=true` starts warm.
                            if let Some(remote) = environment.imported.mounts.get(id) {
                                super::lazy::unpack_mount(store, remote, fresh, environment.status)?;
                            }
                        }
                    }
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(fresh, fs::Permissions::from_mode(*mode)).map_err(mount_error)?;
                    let _ = std::os::unix::fs::chown(fresh, Some(*uid), Some(*gid));
                    Ok(())
                })?;
                let sharing = match sharing {
                    CacheSharing::Shared => MountSharing::Shared,
                    CacheSharing::Locked => MountSharing::Locked,
                    CacheSharing::Private => MountSharing::Private,
                };
                let held = store.hold_cache_mount(&directory, id, sharing)?;
                let source = held.directory.clone();
                prepared._held_mounts.push(held);
                MountKind::Bind { source, readonly: false }
            }
        };
        prepared.mounts.push(sandbox::Mount { target: mount.target.clone(), kind });
    }
    Ok(prepared)
}

/// What a cache mount's seed is made of: the layers' diff ids, or the selected context files.
fn seed_identity(input: &Output, source: &str, environment: &Environment) -> Result<String, OpError> {
    Ok(match input {
        Output::Layers(layers) => {
            crate::oci::Digest::sha256_of(layers.iter().map(|layer| layer.diff_id.as_str()).collect::<Vec<_>>().join(",").as_bytes())
                .hex()
                .to_string()
        }
        Output::Context(handle) => file::select_context(handle, &[source.to_string()], &[], false, environment)?.digest.clone(),
    })
}

/// Makes `directory` hold what `source` names in `input`: its tree for a directory, or, for a
/// single file, the file itself at that path (so the mount is a file, as in BuildKit).
/// Read-only mounts hard-link where they can; writable ones copy, so nothing writes through.
fn materialize(input: &Output, source: &str, directory: &Path, writable: bool, environment: &Environment) -> Result<(), OpError> {
    let mode = if writable { FileMode::Copy } else { FileMode::HardLink };
    let mount_error = |error: io::Error| ExecError::Mount { target: source.into(), source: error };
    match input {
        Output::Layers(_) => {
            let view = LayeredView::new(input.layer_paths());
            let (node, _) = view.resolve(&format!("/{}", clean_in_root(source)), true).map_err(mount_error)?;
            match node {
                // A view rooted at the source directory: its stack is the layers' directories there.
                crate::snapshot::view::Node::Directory { stack, .. } => {
                    let sub_view = LayeredView::new(stack.into_iter().rev());
                    flatten(&sub_view, directory, mode).map_err(|error| mount_error(io::Error::other(error)))?;
                }
                crate::snapshot::view::Node::Leaf { path, metadata } if metadata.is_file() => {
                    place_file(&path, directory, writable).map_err(mount_error)?;
                }
                _ => return Err(mount_error(io::Error::from(io::ErrorKind::NotFound)).into()),
            }
        }
        Output::Context(handle) => {
            let selection = file::select_context(handle, &[source.to_string()], &[], false, environment)?;
            let prefix = clean_in_root(source);
            let single_file = selection
                .entries
                .iter()
                .find(|entry| entry.path == prefix && matches!(entry.kind, crate::context::selection::EntryKind::File { .. }));
            if let Some(entry) = single_file {
                place_file(&entry.real, directory, writable).map_err(mount_error)?;
                return Ok(());
            }
            fs::create_dir_all(directory).map_err(mount_error)?;
            for entry in &selection.entries {
                let relative = entry.path.strip_prefix(&prefix).unwrap_or(&entry.path).trim_start_matches('/');
                if relative.is_empty() || entry.path == "." {
                    continue;
                }
                // `entry.real`, never `context/path`: that could go through a link out of the context.
                let to = directory.join(relative);
                let copied = match &entry.kind {
                    crate::context::selection::EntryKind::Directory => fs::create_dir_all(&to),
                    crate::context::selection::EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &to),
                    crate::context::selection::EntryKind::File { .. } => place_file(&entry.real, &to, writable),
                };
                copied.map_err(mount_error)?;
            }
        }
    }
    Ok(())
}

/// A file at `to`: a hard link of `from` when read-only and possible, else a copy.
fn place_file(from: &Path, to: &Path, writable: bool) -> io::Result<()> {
    if !writable && fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map(|_| ())
}

/// Removes from the diff the mount points that did not exist in the image: empty directories
/// or files at `paths` (and their parents the step created only for them).
fn remove_stubs(base: &LayeredView, upper: &Path, paths: &[String]) -> io::Result<()> {
    for path in paths {
        let relative = clean_in_root(path);
        if relative.is_empty() {
            continue;
        }
        let mut current = PathBuf::from(&relative);
        loop {
            let real = upper.join(&current);
            let Ok(metadata) = fs::symlink_metadata(&real) else {
                // Already gone (the sandbox removes its stubs): look at the parent it may have left.
                match current.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => {
                        current = parent.to_path_buf();
                        continue;
                    }
                    _ => break,
                }
            };
            let (below, _) = base.resolve(&format!("/{}", current.display()), false)?;
            if let Some(lower) = below.metadata() {
                // A directory copied up only to hold a stub, unchanged otherwise, is no change.
                use std::os::unix::fs::MetadataExt;
                let unchanged = metadata.is_dir()
                    && lower.is_dir()
                    && (metadata.mode(), metadata.uid(), metadata.gid(), metadata.mtime())
                        == (lower.mode(), lower.uid(), lower.gid(), lower.mtime())
                    && !crate::snapshot::view::is_opaque(&real)
                    && fs::read_dir(&real)?.next().is_none();
                if !unchanged {
                    break;
                }
            }
            let empty = if metadata.is_dir() { fs::read_dir(&real)?.next().is_none() } else { metadata.is_file() && metadata.len() == 0 };
            if !empty {
                break;
            }
            if metadata.is_dir() {
                fs::remove_dir(&real)?
            } else {
                fs::remove_file(&real)?
            }
            match current.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => current = parent.to_path_buf(),
                _ => break,
            }
        }
    }
    Ok(())
}
