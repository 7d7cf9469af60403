//! The ssh transport of `ADD <git URL>` (`ssh://[user@]host[:port]/path` and `user@host:path`):
//! the system's `ssh` client, speaking git's protocol to `git-upload-pack` on the host over its
//! stdin and stdout, while libgit2 does the rest of the fetch.
//!
//! **Why a process, not libgit2's ssh.** libgit2's own ssh (libssh2, not built here) reaches an
//! agent only through the process-wide `SSH_AUTH_SOCK`, which one build step may not change
//! while other steps run on other threads, and knows nothing of the agent rbuild serves for
//! `--ssh`. Git itself and BuildKit run `ssh`; so does rbuild: a custom smart transport for
//! `ssh://` is registered with libgit2 once per process (libgit2 hands the scp form to it too),
//! and each connection is `ssh ... HOST "git-upload-pack 'PATH'"` with `SSH_AUTH_SOCK` set in
//! that child's environment only.
//!
//! **Authentication** as BuildKit's Dockerfile frontend asks for it: the ssh id `default`
//! (`--ssh default` for `$SSH_AUTH_SOCK`, `--ssh default=KEY|SOCKET`), served to `ssh` by
//! rbuild's read-only agent ([`crate::ssh_agent`]) on a private socket for as long as the
//! remote is talked to. Without it the build fails with BuildKit's words (`no SSH key "default"
//! forwarded from the client`) before anything connects. `ssh` runs with `-F /dev/null` (no
//! user configuration, as BuildKit), `IdentityFile=none` (the keys the build was given, never
//! the host user's key files) and `BatchMode=yes` (it never prompts).
//!
//! **Host keys.** BuildKit's frontend scans the host's key (best effort) and trusts what it
//! found, else runs ssh with `StrictHostKeyChecking=no`: either way the key the host presents
//! is accepted. So here, measured with the oracle against a host key nobody had seen; no
//! `known_hosts` is read or written, so a build leaves the user's files alone.
//!
//! **Processes.** Every ssh child belongs to the [`connect`] call that started it: a watcher
//! thread kills them when the build is canceled (Ctrl-C, a failure elsewhere), which ends the
//! blocked read, and each is reaped when libgit2 drops its stream. ssh's stderr goes to an
//! anonymous temporary file; when ssh fails, its text ("Permission denied (publickey).") is the
//! error libgit2 reports.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};

use super::Environment;
use super::git::GitError;

/// The ssh id a Dockerfile's git source authenticates with (BuildKit's `MountSSHSock` default).
const SSH_ID: &str = "default";

/// How often the watcher looks at the build's cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// How long ssh may take to exit after its stream is done before it is killed.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// The most of ssh's stderr kept for an error message.
const MAX_STDERR: u64 = 16 * 1024;

/// Whether `remote` is reached over ssh: `ssh://`, or the scp form (no scheme).
fn is_ssh(remote: &str) -> bool {
    match remote.split_once("://") {
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("ssh"),
        None => true,
    }
}

/// Runs `body`, whose libgit2 calls on this thread talk to `remote`, with what an ssh remote
/// needs: the agent for the ssh id `default` and the watcher that kills ssh on cancel. Every
/// libgit2 use of a remote goes through here, so the transport is registered before any.
pub(crate) fn connect<T, E: From<GitError>>(remote: &str, environment: &Environment, body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    register();
    if !is_ssh(remote) {
        return body();
    }
    let sources = environment.ssh.sources.get(SSH_ID).ok_or_else(|| GitError::NoSshKey { remote: remote.to_string() })?;
    let agent_error = |message: String| GitError::SshAgent { remote: remote.to_string(), message };
    let directory = crate::sandbox::PrivateDir::new("git-ssh").map_err(|error| agent_error(error.to_string()))?;
    let socket = directory.path().join("agent.sock");
    let _agent = crate::ssh_agent::Agent::start(&socket, sources).map_err(|error| agent_error(error_chain(&error)))?;
    let session = Arc::new(Session { agent: socket, children: Mutex::default() });
    let _current = Current::enter(Arc::clone(&session));
    let (done, finished) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || watch(&session, environment.cancel, finished));
        let result = body();
        drop(done);
        result
    })
}

/// `error: cause: cause`, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Registers the transport, once per process. Every caller passes here before libgit2 makes
/// a transport, and a second caller waits for the first: no transport is made while the
/// registration runs, which is what libgit2 asks.
#[allow(unsafe_code)] // `git2::transport::register`: see the SAFETY note
fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `git_transport_register` must not run while libgit2 creates a transport.
        // Transports are created only by `ops::git`, always after `connect` called this, and
        // `call_once` makes every such caller wait until the registration is done.
        let registered = unsafe {
            git2::transport::register("ssh", |remote| {
                let session = CURRENT.with(|current| current.borrow().clone());
                Transport::smart(remote, false, Subtransport { session })
            })
        };
        if let Err(error) = registered {
            tracing::warn!("failed to register the ssh transport for git: {}", error.message());
        }
    });
}

/// One [`connect`] call's ssh: the agent socket and the running ssh processes.
struct Session {
    agent: PathBuf,
    children: Mutex<Vec<Arc<Mutex<Child>>>>,
}

thread_local! {
    /// The session of the [`connect`] running on this thread: libgit2 makes the transport on
    /// the thread that connects, which is how the factory finds it.
    static CURRENT: RefCell<Option<Arc<Session>>> = const { RefCell::new(None) };
}

/// The current session for as long as it lives.
struct Current;

impl Current {
    fn enter(session: Arc<Session>) -> Current {
        CURRENT.with(|current| *current.borrow_mut() = Some(session));
        Current
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = None);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every holder leaves the value whole (a push, a remove, a kill or a wait).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Kills the session's ssh processes once the build is canceled, until `finished` says the
/// [`connect`] call is over.
fn watch(session: &Session, cancel: &AtomicBool, finished: mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(CANCEL_POLL) {
        if cancel.load(Ordering::Relaxed) {
            for child in lock(&session.children).iter() {
                let _ = lock(child).kill();
            }
        }
    }
}

struct Subtransport {
    session: Option<Arc<Session>>,
}

impl SmartSubtransport for Subtransport {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        if !matches!(action, Service::UploadPackLs | Service::UploadPack) {
            return Err(git2::Error::from_str("rbuild only fetches from ssh remotes"));
        }
        let Some(session) = &self.session else {
            return Err(git2::Error::from_str("an ssh remote outside of a build step"));
        };
        let target = SshTarget::parse(url).map_err(|message| git2::Error::from_str(&message))?;
        let connection = Connection::start(&target, session).map_err(|error| git2::Error::from_str(&error.to_string()))?;
        Ok(Box::new(connection))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// Where an ssh remote is, as `ssh` is told.
#[derive(Debug, PartialEq, Eq)]
struct SshTarget {
    /// `host` or `user@host`.
    destination: String,
    port: Option<String>,
    /// The repository's path on the host, as git-upload-pack takes it.
    path: String,
}

impl SshTarget {
    /// `ssh://[user@]host[:port]/path` (`/~user/...` is relative to a home, as git takes it)
    /// or `user@host:path`. A user or host starting with `-` is refused: `ssh` would read it as
    /// an option.
    fn parse(url: &str) -> Result<SshTarget, String> {
        let invalid = || format!("invalid ssh remote `{url}`");
        let (user, host, port, path) = match url.split_once("://") {
            Some((_, rest)) => {
                let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
                let (user, host_port) = authority.rsplit_once('@').map_or((None, authority), |(user, host)| (Some(user), host));
                let (host, port) = match host_port.strip_prefix('[') {
                    Some(bracketed) => {
                        let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
                        (host, after.strip_prefix(':'))
                    }
                    None => host_port.split_once(':').map_or((host_port, None), |(host, port)| (host, Some(port))),
                };
                let path = if path.starts_with("/~") { &path[1..] } else { path };
                (user, host, port.filter(|port| !port.is_empty()), path)
            }
            None => {
                let (user, rest) = url.split_once('@').ok_or_else(invalid)?;
                let (host, path) = rest.split_once(':').ok_or_else(invalid)?;
                (Some(user), host, None, path)
            }
        };
        let bad = |part: &str| part.is_empty() || part.starts_with('-');
        if bad(host) || user.is_some_and(bad) || path.is_empty() || port.is_some_and(|port| !port.bytes().all(|b| b.is_ascii_digit())) {
            return Err(invalid());
        }
        let destination = user.map_or_else(|| host.to_string(), |user| format!("{user}@{host}"));
        Ok(SshTarget { destination, port: port.map(str::to_string), path: path.to_string() })
    }

    /// `ssh`'s arguments for running `program` on the repository.
    fn arguments(&self, program: &str) -> Vec<String> {
        let mut arguments: Vec<String> = ["-F", "/dev/null"].map(String::from).into();
        for option in [
            "BatchMode=yes",
            "IdentityFile=none",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
        ] {
            arguments.extend(["-o".to_string(), option.to_string()]);
        }
        if let Some(port) = &self.port {
            arguments.extend(["-p".to_string(), port.clone()]);
        }
        arguments.extend(["--".to_string(), self.destination.clone(), format!("{program} {}", shell_quote(&self.path))]);
        arguments
    }
}

/// `text` in single quotes for the remote shell, as git quotes it (`'` and `!` outside them).
fn shell_quote(text: &str) -> String {
    let mut quoted = String::from("'");
    for character in text.chars() {
        match character {
            '\'' | '!' => quoted.push_str(&format!("'\\{character}'")),
            _ => quoted.push(character),
        }
    }
    quoted.push('\'');
    quoted
}

/// One running `ssh`, the stream libgit2 reads and writes.
struct Connection {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: File,
    session: Arc<Session>,
}

impl Connection {
    fn start(target: &SshTarget, session: &Arc<Session>) -> io::Result<Connection> {
        let stderr = tempfile::tempfile()?;
        let mut command = Command::new("ssh");
        command
            .args(target.arguments("git-upload-pack"))
            .env_clear()
            .env("SSH_AUTH_SOCK", &session.agent)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone()?);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let mut child = command.spawn().map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => io::Error::other("`ssh` not found: ssh git remotes need OpenSSH's client (openssh-client)"),
            _ => io::Error::other(format!("failed to run `ssh`: {error}")),
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("`ssh` started without pipes"));
        };
        let child = Arc::new(Mutex::new(child));
        lock(&session.children).push(Arc::clone(&child));
        Ok(Connection { child, stdin: Some(stdin), stdout, stderr, session: Arc::clone(session) })
    }

    /// ssh's exit status once it has exited, killing it after `grace`.
    fn exit_status(&self, grace: Duration) -> io::Result<ExitStatus> {
        let deadline = std::time::Instant::now() + grace;
        loop {
            let mut child = lock(&self.child);
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                return child.wait();
            }
            drop(child);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The stream ended (`broken` is none) or broke: fine if it ended and ssh succeeded, else
    /// ssh's stderr as the error.
    fn finish(&mut self, broken: Option<io::Error>) -> io::Result<()> {
        let status = self.exit_status(EXIT_GRACE)?;
        let mut text = String::new();
        let _ = self.stderr.rewind();
        let _ = (&mut self.stderr).take(MAX_STDERR).read_to_string(&mut text);
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        match broken {
            None if status.success() => Ok(()),
            _ if !lines.is_empty() => Err(io::Error::other(format!("ssh failed ({status}): {}", lines.join(" ")))),
            Some(error) => Err(error),
            None => Err(io::Error::other(format!("ssh ended the connection ({status})"))),
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self.stdout.read(buffer) {
            Ok(0) if !buffer.is_empty() => self.finish(None).map(|()| 0),
            Ok(read) => Ok(read),
            Err(error) => self.finish(Some(error)).map(|()| 0),
        }
    }
}

impl Write for Connection {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let written = match &mut self.stdin {
            Some(stdin) => stdin.write(buffer),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        };
        match written {
            Ok(written) => Ok(written),
            Err(error) => self.finish(Some(error)).map(|()| 0),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The end of its input lets ssh and git-upload-pack finish on their own.
        self.stdin.take();
        let _ = self.exit_status(EXIT_GRACE);
        lock(&self.session.children).retain(|child| !Arc::ptr_eq(child, &self.child));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(destination: &str, port: Option<&str>, path: &str) -> Result<SshTarget, String> {
        Ok(SshTarget { destination: destination.to_string(), port: port.map(str::to_string), path: path.to_string() })
    }

    #[test]
    fn ssh_remotes_are_parsed_as_git_reads_them() {
        assert_eq!(SshTarget::parse("ssh://git@h/r.git"), target("git@h", None, "/r.git"));
        assert_eq!(SshTarget::parse("SSH://h:2222/a/r"), target("h", Some("2222"), "/a/r"));
        assert_eq!(SshTarget::parse("ssh://u@[::1]:22/r"), target("u@::1", Some("22"), "/r"));
        assert_eq!(SshTarget::parse("ssh://u@h/~u/r.git"), target("u@h", None, "~u/r.git"));
        assert_eq!(SshTarget::parse("ssh://h:/r"), target("h", None, "/r"));
        assert_eq!(SshTarget::parse("git@github.com:moby/buildkit.git"), target("git@github.com", None, "moby/buildkit.git"));
        assert_eq!(SshTarget::parse("u@h:/abs/r"), target("u@h", None, "/abs/r"));
        for invalid in ["ssh://-oProxyCommand=x/r", "ssh://-u@h/r", "-u@h:r", "ssh://h", "ssh://h:x/r", "ssh:///r", "u@h:", "ssh://[::1/r"]
        {
            assert!(SshTarget::parse(invalid).is_err(), "{invalid}");
        }
    }

    #[test]
    fn the_path_is_quoted_for_the_remote_shell() {
        assert_eq!(shell_quote("/a b/r.git"), "'/a b/r.git'");
        assert_eq!(shell_quote("it's!"), "'it'\\''s'\\!''");
        let arguments = SshTarget::parse("ssh://u@h:2222/r.git").unwrap().arguments("git-upload-pack");
        let tail: Vec<&str> = arguments.iter().rev().take(5).rev().map(String::as_str).collect();
        assert_eq!(tail, ["-p", "2222", "--", "u@h", "git-upload-pack '/r.git'"]);
        assert_eq!(&arguments[..2], ["-F", "/dev/null"]);
    }

    #[test]
    fn only_ssh_and_the_scp_form_are_ssh() {
        for remote in ["ssh://h/r", "SSH://h/r", "git@h:r"] {
            assert!(is_ssh(remote), "{remote}");
        }
        for remote in ["git://h/r", "https://h/r.git", "http://h/r.git"] {
            assert!(!is_ssh(remote), "{remote}");
        }
    }
}
