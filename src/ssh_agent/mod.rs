//! rbuild's own SSH agent, the host side of `RUN --mount=type=ssh`.
//!
//! `rbuild --ssh ID=PATH[,PATH...]` follows buildx: each `PATH` is an OpenSSH private key file or an
//! agent socket, and no paths (`--ssh default`) means `$SSH_AUTH_SOCK`. [`Agent::start`] turns one
//! such list into a Unix socket that the sandbox bind-mounts into the container:
//!
//! - **Keys.** The files are parsed once, up front; the agent answers
//!   `SSH_AGENTC_REQUEST_IDENTITIES` (11) and `SSH_AGENTC_SIGN_REQUEST` (13) from them, and
//!   everything else (add, remove, lock, extensions) with `SSH_AGENT_FAILURE` (5).
//! - **One socket.** Requests 11 and 13 are relayed to the upstream agent, one upstream connection
//!   per client connection, and everything else is refused here. The build therefore sees the
//!   user's keys but can neither add, remove nor lock them (BuildKit's read-only agent does the
//!   same). As in BuildKit, a list holds either keys or a single socket, never both.
//!
//! Invariants:
//! - The socket is created with mode 0600 and never has looser permissions on its final path: it is
//!   bound inside a fresh 0700 directory next to the destination, narrowed, then hard-linked into
//!   place (a bound Unix socket is reached through any link to its inode; no window where another
//!   user can connect).
//! - A frame longer than [`MAX_MESSAGE_LENGTH`] gets `SSH_AGENT_FAILURE` and the connection is closed:
//!   its length is attacker-chosen and we never allocate for it.
//! - Dropping the [`Agent`] stops accepting, shuts down every open client (and upstream) connection,
//!   joins all threads and removes the socket. Nothing outlives the value.
//!
//! Decisions:
//! - Threads, not async: a build has a handful of ssh clients at most, and one thread per
//!   connection keeps the protocol code straight-line.
//! - The listener is non-blocking and polled every [`ACCEPT_POLL_INTERVAL`]. Waking a blocking
//!   `accept` would need either `libc` or a connection to our own path, which hangs forever if the
//!   path was removed or replaced meanwhile; a few idle wake-ups per second are the cheaper price.
//! - RSA signs with SHA-256 or SHA-512 as the client's flags ask. A request without either flag
//!   asks for SHA-1 `ssh-rsa`, which OpenSSH disabled by default in 8.8; it gets
//!   `SSH_AGENT_FAILURE` rather than a signature of another algorithm the client did not ask for.
//! - An identity's comment is the key's own comment, or the file path when that is empty (what
//!   `ssh-add` does), so `ssh-add -l` in the container says which key is which.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rsa::signature::{SignatureEncoding, Signer as _};
use ssh_key::private::KeypairData;
use ssh_key::{Algorithm, HashAlg, PrivateKey, Signature};

/// The longest agent message accepted, in either direction (OpenSSH's own agent uses the same).
pub(crate) const MAX_MESSAGE_LENGTH: usize = 256 * 1024;

/// How often the accept loop looks for new clients and for the stop flag.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Key files larger than this are not OpenSSH private keys (a 16384-bit RSA key is about 13 KiB);
/// the cap keeps a path like `/dev/zero` from reading forever.
const MAX_KEY_FILE_LENGTH: u64 = 1024 * 1024;

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;
const SSH_AGENT_RSA_SHA2_256: u32 = 2;
const SSH_AGENT_RSA_SHA2_512: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AgentError {
    #[error("no ssh agent: `SSH_AUTH_SOCK` is not set; start one or pass `--ssh ID=PATH` with a key")]
    NoDefaultAgent,
    #[error("failed to read ssh key or agent socket `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to parse ssh private key `{path}`")]
    Parse {
        path: PathBuf,
        #[source]
        source: ssh_key::Error,
    },
    #[error(
        "ssh key `{path}` is in the legacy PEM format; rewrite it as an OpenSSH key with \
         `ssh-keygen -p -f {path}`, or load it into an ssh agent and pass the agent socket"
    )]
    LegacyPem { path: PathBuf },
    #[error(
        "ssh key `{path}` is encrypted with a passphrase; load it into an ssh agent (`ssh-add`) \
         and use `--ssh default` or `--ssh ID=$SSH_AUTH_SOCK` instead"
    )]
    Encrypted { path: PathBuf },
    #[error("ssh key `{path}` has unsupported type `{algorithm}`")]
    UnsupportedKey { path: PathBuf, algorithm: String },
    #[error("ssh key `{path}` is not a valid RSA key")]
    InvalidRsaKey {
        path: PathBuf,
        #[source]
        source: rsa::Error,
    },
    #[error("only one agent socket is allowed per ssh id, got `{first}` and `{second}`")]
    MultipleSockets { first: PathBuf, second: PathBuf },
    #[error("cannot mix ssh keys and agent sockets in one ssh id (`{socket}`)")]
    KeysAndSocket { socket: PathBuf },
    #[error("ssh agent socket `{path}` already exists")]
    SocketExists { path: PathBuf },
    #[error("failed to create ssh agent socket `{path}`")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to start ssh agent thread")]
    Spawn(#[source] io::Error),
}

/// A running agent; see the module docs. Dropping it stops the agent and removes its socket.
#[derive(Debug)]
pub(crate) struct Agent {
    socket: PathBuf,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// Serves `keys` (OpenSSH private key files, or a single agent socket; empty means
    /// `$SSH_AUTH_SOCK`) over the SSH agent protocol on a new Unix socket at `socket`, mode 0600,
    /// from a background thread. `socket` must not exist; its parent directory must.
    pub(crate) fn start(socket: &Path, keys: &[PathBuf]) -> Result<Agent, AgentError> {
        let backend = Arc::new(load_backend(keys)?);
        let listener = bind_private(socket)?;
        let shared = Arc::new(Shared { stopping: AtomicBool::new(false), streams: Mutex::new(HashMap::new()) });
        let accept_thread = {
            let shared = Arc::clone(&shared);
            thread::Builder::new().name("ssh-agent".to_owned()).spawn(move || accept_loop(&listener, &backend, &shared))
        };
        match accept_thread {
            Ok(handle) => Ok(Agent { socket: socket.to_owned(), shared, accept_thread: Some(handle) }),
            Err(error) => {
                let _ = fs::remove_file(socket);
                Err(AgentError::Spawn(error))
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accept_thread.take() {
            // A panic in the accept loop has already been reported on stderr; nothing to add.
            let _ = handle.join();
        }
        let _ = fs::remove_file(&self.socket);
    }
}

/// What the agent answers from.
enum Backend {
    Keys(Vec<Identity>),
    Upstream(PathBuf),
}

struct Identity {
    /// The public key in wire format, as sent in identity answers and sign requests.
    blob: Vec<u8>,
    comment: String,
    signer: IdentitySigner,
}

enum IdentitySigner {
    /// Ed25519 and ECDSA: the key's algorithm fixes the signature algorithm.
    Fixed(PrivateKey),
    /// Converted once at load time; the conversion checks the key and precomputes CRT values.
    Rsa(rsa::RsaPrivateKey),
}

/// State shared by the [`Agent`] handle and its threads.
#[derive(Debug)]
struct Shared {
    stopping: AtomicBool,
    /// Every open client and upstream stream, by connection number, so a stop can shut them down
    /// and unblock the threads reading them.
    streams: Mutex<HashMap<u64, Vec<UnixStream>>>,
}

impl Shared {
    fn streams(&self) -> MutexGuard<'_, HashMap<u64, Vec<UnixStream>>> {
        // The map stays consistent even if a holder panicked: every update is a single insert,
        // push or remove.
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a stream of connection `id`; false when the agent is stopping (the stream is then
    /// shut down instead, as the stop pass may already have run).
    fn register(&self, id: u64, stream: &UnixStream) -> bool {
        let mut streams = self.streams();
        if self.stopping.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return false;
        }
        match stream.try_clone() {
            Ok(clone) => {
                streams.entry(id).or_default().push(clone);
                true
            }
            Err(_) => false,
        }
    }

    fn shut_down_all(&self) {
        for stream in self.streams().values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn load_backend(paths: &[PathBuf]) -> Result<Backend, AgentError> {
    let default_paths;
    let paths = if paths.is_empty() {
        // Checked below like any listed path, so a stale `SSH_AUTH_SOCK` fails here, at start,
        // rather than as a silent connection close inside the build.
        match std::env::var_os("SSH_AUTH_SOCK") {
            Some(socket) if !socket.is_empty() => {
                default_paths = [PathBuf::from(socket)];
                &default_paths[..]
            }
            _ => return Err(AgentError::NoDefaultAgent),
        }
    } else {
        paths
    };
    let mut socket: Option<&PathBuf> = None;
    let mut identities = Vec::new();
    for path in paths {
        // `metadata` follows symlinks on purpose: a key or socket may be reached through one.
        let metadata = fs::metadata(path).map_err(|source| AgentError::Read { path: path.clone(), source })?;
        if metadata.file_type().is_socket() {
            if let Some(first) = socket {
                return Err(AgentError::MultipleSockets { first: first.clone(), second: path.clone() });
            }
            socket = Some(path);
            continue;
        }
        let identity = load_identity(path)?;
        if !identities.iter().any(|known: &Identity| known.blob == identity.blob) {
            identities.push(identity);
        }
    }
    match socket {
        Some(socket) if !identities.is_empty() => Err(AgentError::KeysAndSocket { socket: socket.clone() }),
        Some(socket) => Ok(Backend::Upstream(socket.clone())),
        None => Ok(Backend::Keys(identities)),
    }
}

fn load_identity(path: &Path) -> Result<Identity, AgentError> {
    let read_error = |source| AgentError::Read { path: path.to_owned(), source };
    let mut text = Vec::new();
    fs::File::open(path).and_then(|file| file.take(MAX_KEY_FILE_LENGTH).read_to_end(&mut text)).map_err(read_error)?;
    if is_legacy_pem(&text) {
        return Err(if contains(&text, b"Proc-Type: 4,ENCRYPTED") {
            AgentError::Encrypted { path: path.to_owned() }
        } else {
            AgentError::LegacyPem { path: path.to_owned() }
        });
    }
    let key = PrivateKey::from_openssh(&text).map_err(|source| AgentError::Parse { path: path.to_owned(), source })?;
    if key.is_encrypted() {
        return Err(AgentError::Encrypted { path: path.to_owned() });
    }
    let blob = key.public_key().to_bytes().map_err(|source| AgentError::Parse { path: path.to_owned(), source })?;
    let comment = if key.comment().is_empty() { path.display().to_string() } else { key.comment().to_owned() };
    let signer = match key.key_data() {
        KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) => IdentitySigner::Fixed(key),
        KeypairData::Rsa(keypair) => {
            IdentitySigner::Rsa(rsa_private_key(keypair).map_err(|source| AgentError::InvalidRsaKey { path: path.to_owned(), source })?)
        }
        _ => {
            return Err(AgentError::UnsupportedKey { path: path.to_owned(), algorithm: key.algorithm().to_string() });
        }
    };
    Ok(Identity { blob, comment, signer })
}

/// ssh-key 0.6.7's own conversion passes `p` twice instead of `p` and `q`, so every real key fails
/// validation; build the key from its components here.
fn rsa_private_key(keypair: &ssh_key::private::RsaKeypair) -> Result<rsa::RsaPrivateKey, rsa::Error> {
    let unsigned = |value: &ssh_key::Mpint| value.as_positive_bytes().map(rsa::BigUint::from_bytes_be).ok_or(rsa::Error::InvalidArguments);
    rsa::RsaPrivateKey::from_components(
        unsigned(&keypair.public.n)?,
        unsigned(&keypair.public.e)?,
        unsigned(&keypair.private.d)?,
        vec![unsigned(&keypair.private.p)?, unsigned(&keypair.private.q)?],
    )
}

fn is_legacy_pem(text: &[u8]) -> bool {
    [
        &b"-----BEGIN RSA PRIVATE KEY-----"[..],
        b"-----BEGIN EC PRIVATE KEY-----",
        b"-----BEGIN DSA PRIVATE KEY-----",
        b"-----BEGIN PRIVATE KEY-----",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----",
    ]
    .iter()
    .any(|header| contains(text, header))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Binds `socket` with mode 0600 from the start; see the module docs for why a rename.
fn bind_private(socket: &Path) -> Result<UnixListener, AgentError> {
    let bind_error = |source| AgentError::Bind { path: socket.to_owned(), source };
    if fs::symlink_metadata(socket).is_ok() {
        return Err(AgentError::SocketExists { path: socket.to_owned() });
    }
    let parent = match socket.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let staging = create_staging_directory(parent).map_err(bind_error)?;
    let staged = staging.join("s");
    let result = UnixListener::bind(&staged)
        .and_then(|listener| {
            fs::set_permissions(&staged, fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            // `rename` would replace a file created since the check above; `hard_link` refuses,
            // and works for sockets like for any inode.
            fs::hard_link(&staged, socket)?;
            Ok(listener)
        })
        .map_err(bind_error);
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&staging);
    result
}

fn create_staging_directory(parent: &Path) -> io::Result<PathBuf> {
    // Short names: the whole staged path must fit in `sun_path` (108 bytes).
    for attempt in 0..100u32 {
        let candidate = parent.join(format!(".sa{}-{attempt}", std::process::id()));
        match fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free staging directory name"))
}

fn accept_loop(listener: &UnixListener, backend: &Arc<Backend>, shared: &Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id: u64 = 0;
    while !shared.stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                connections.retain(|handle| !handle.is_finished());
                let id = next_id;
                next_id += 1;
                if stream.set_nonblocking(false).is_err() || !shared.register(id, &stream) {
                    continue;
                }
                let backend = Arc::clone(backend);
                let thread_shared = Arc::clone(shared);
                let spawned = thread::Builder::new().name("ssh-agent-client".to_owned()).spawn(move || {
                    serve_connection(stream, &backend, &thread_shared, id);
                    thread_shared.streams().remove(&id);
                });
                match spawned {
                    Ok(handle) => connections.push(handle),
                    // Out of threads: this client is dropped (it sees the connection close); the
                    // agent keeps serving the others.
                    Err(_) => {
                        shared.streams().remove(&id);
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL_INTERVAL);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // Transient failures (EMFILE, ECONNABORTED): back off and keep serving.
            Err(_) => thread::sleep(ACCEPT_POLL_INTERVAL),
        }
    }
    shared.shut_down_all();
    for handle in connections {
        let _ = handle.join();
    }
}

fn serve_connection(mut client: UnixStream, backend: &Backend, shared: &Shared, id: u64) {
    let mut upstream = match backend {
        Backend::Keys(_) => None,
        Backend::Upstream(path) => match UnixStream::connect(path) {
            Ok(stream) if shared.register(id, &stream) => Some(stream),
            // The client sees the connection close, as it would with a dead agent.
            _ => return,
        },
    };
    loop {
        let request = match read_message(&mut client) {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                if error.kind() == io::ErrorKind::InvalidData {
                    let _ = write_message(&mut client, &[SSH_AGENT_FAILURE]);
                }
                return;
            }
        };
        let response = match (backend, upstream.as_mut()) {
            (Backend::Keys(identities), _) => answer(identities, &request),
            (Backend::Upstream(_), Some(upstream)) => match relay(upstream, &request) {
                Ok(response) => response,
                Err(_) => return,
            },
            (Backend::Upstream(_), None) => return,
        };
        if write_message(&mut client, &response).is_err() {
            return;
        }
    }
}

/// Forwards the read-only requests to the upstream agent and refuses the rest.
fn relay(upstream: &mut UnixStream, request: &[u8]) -> io::Result<Vec<u8>> {
    match request.first() {
        Some(&SSH_AGENTC_REQUEST_IDENTITIES | &SSH_AGENTC_SIGN_REQUEST) => {
            write_message(upstream, request)?;
            read_message(upstream)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
        }
        _ => Ok(vec![SSH_AGENT_FAILURE]),
    }
}

/// The response body to one request body; failures of any kind are `SSH_AGENT_FAILURE`.
fn answer(identities: &[Identity], request: &[u8]) -> Vec<u8> {
    let response = match request.split_first() {
        Some((&SSH_AGENTC_REQUEST_IDENTITIES, [])) => Some(identities_answer(identities)),
        Some((&SSH_AGENTC_SIGN_REQUEST, body)) => sign_response(identities, body),
        _ => None,
    };
    response.unwrap_or_else(|| vec![SSH_AGENT_FAILURE])
}

fn identities_answer(identities: &[Identity]) -> Vec<u8> {
    let mut response = vec![SSH_AGENT_IDENTITIES_ANSWER];
    put_u32(&mut response, identities.len());
    for identity in identities {
        put_string(&mut response, &identity.blob);
        put_string(&mut response, identity.comment.as_bytes());
    }
    response
}

fn sign_response(identities: &[Identity], body: &[u8]) -> Option<Vec<u8>> {
    let mut cursor = Cursor(body);
    let blob = cursor.string()?;
    let data = cursor.string()?;
    let flags = cursor.u32()?;
    if !cursor.0.is_empty() {
        return None;
    }
    let identity = identities.iter().find(|identity| identity.blob == blob)?;
    let signature = sign(&identity.signer, data, flags)?;
    let encoded = Vec::<u8>::try_from(signature).ok()?;
    let mut response = vec![SSH_AGENT_SIGN_RESPONSE];
    put_string(&mut response, &encoded);
    Some(response)
}

fn sign(signer: &IdentitySigner, data: &[u8], flags: u32) -> Option<Signature> {
    match signer {
        IdentitySigner::Fixed(key) => rsa::signature::Signer::try_sign(key, data).ok(),
        IdentitySigner::Rsa(key) => {
            // SHA-512 wins when both flags are set, as in OpenSSH's agent.
            let (hash, bytes) = if flags & SSH_AGENT_RSA_SHA2_512 != 0 {
                let signing_key = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha512>::new(key.clone());
                (HashAlg::Sha512, signing_key.try_sign(data).ok()?.to_vec())
            } else if flags & SSH_AGENT_RSA_SHA2_256 != 0 {
                let signing_key = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key.clone());
                (HashAlg::Sha256, signing_key.try_sign(data).ok()?.to_vec())
            } else {
                return None;
            };
            Signature::new(Algorithm::Rsa { hash: Some(hash) }, bytes).ok()
        }
    }
}

/// Reads one length-prefixed message body. `Ok(None)` on a clean end of stream before a frame;
/// `InvalidData` for an empty or oversized frame.
fn read_message(stream: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match stream.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length == 0 || length > MAX_MESSAGE_LENGTH {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("ssh agent message of `{length}` bytes")));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_message(stream: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_MESSAGE_LENGTH {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("ssh agent response of `{}` bytes", body.len())));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    put_u32(&mut frame, body.len());
    frame.extend_from_slice(body);
    stream.write_all(&frame)
}

/// Callers only pass lengths bounded by [`MAX_MESSAGE_LENGTH`] or a key count, far below
/// `u32::MAX`; saturating keeps this total anyway.
fn put_u32(buffer: &mut Vec<u8>, value: usize) {
    let value = u32::try_from(value).unwrap_or(u32::MAX);
    buffer.extend_from_slice(&value.to_be_bytes());
}

fn put_string(buffer: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(buffer, bytes.len());
    buffer.extend_from_slice(bytes);
}

/// A reader over an agent message body; `None` when the body is shorter than its fields claim.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let length = self.u32()? as usize;
        if length > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(length);
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests;
