//! What every end-to-end test needs: a fresh project (context directory, state root, output
//! directory) in a temp dir, the real `rbuild` binary, and the independent tools that check its
//! outputs (skopeo, umoci, GNU tar, podman). A missing tool fails the test loudly: these tests
//! never skip.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

pub(crate) const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// The fixtures of these tests.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/e2e").join(name)
}

/// Fails the test when `name` is not on PATH (`.ci/run` installs every tool used here).
pub(crate) fn require_tool(name: &str) {
    let found = std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file())).unwrap_or(false);
    assert!(found, "required tool `{name}` is not installed (run .ci/run, which installs skopeo, umoci, podman, tar, zstd)");
}

/// The result of one process.
#[derive(Debug)]
pub(crate) struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub what: String,
}

impl Run {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub(crate) fn ok(self) -> Run {
        assert_eq!(
            self.code,
            0,
            "`{}` failed with exit code {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
            self.what,
            self.code,
            self.stderr,
            self.stdout_text()
        );
        self
    }

    /// Asserts the exit code and returns self.
    #[track_caller]
    pub(crate) fn fails(self, code: i32) -> Run {
        assert_eq!(self.code, code, "`{}` exited with {} instead of {code}\n--- stderr ---\n{}", self.what, self.code, self.stderr);
        self
    }

    #[track_caller]
    pub(crate) fn stderr_has(&self, needle: &str) -> &Run {
        assert!(self.stderr.contains(needle), "stderr of `{}` lacks {needle:?}\n--- stderr ---\n{}", self.what, self.stderr);
        self
    }

    #[track_caller]
    pub(crate) fn stderr_lacks(&self, needle: &str) -> &Run {
        assert!(!self.stderr.contains(needle), "stderr of `{}` has {needle:?}\n--- stderr ---\n{}", self.what, self.stderr);
        self
    }

    /// `(step name, outcome)` of every vertex in `--progress=plain` output, in order of first
    /// appearance; outcome is `CACHED`, `DONE` or `ERROR`.
    pub(crate) fn steps(&self) -> Vec<(String, String)> {
        plain_steps(&self.stderr)
    }

    /// The outcome of the one step whose name contains `needle`.
    #[track_caller]
    pub(crate) fn step(&self, needle: &str) -> String {
        let matching: Vec<_> = self.steps().into_iter().filter(|(name, _)| name.contains(needle)).collect();
        assert_eq!(matching.len(), 1, "expected one step matching {needle:?}, got {matching:?}\n--- stderr ---\n{}", self.stderr);
        matching[0].1.clone()
    }
}

pub(crate) fn plain_steps(stderr: &str) -> Vec<(String, String)> {
    let mut order: Vec<String> = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else { continue };
        let Some((number, text)) = rest.split_once(' ') else { continue };
        if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if !names.contains_key(number) {
            names.insert(number.to_string(), text.to_string());
            order.push(number.to_string());
            continue;
        }
        if text == "CACHED" || text.starts_with("DONE") || text.starts_with("ERROR") {
            let outcome = text.split_whitespace().next().unwrap_or("").trim_end_matches(':').to_string();
            outcomes.insert(number.to_string(), outcome);
        }
    }
    order.into_iter().map(|number| (names[&number].clone(), outcomes.get(&number).cloned().unwrap_or_default())).collect()
}

pub(crate) fn run_command(mut command: Command, stdin: Option<&[u8]>) -> Run {
    let what = format!("{command:?}");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn().unwrap_or_else(|error| panic!("failed to start {what}: {error}"));
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // A process that refuses its input early (a usage error) closes stdin before reading it.
        match pipe.write_all(bytes) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            written => written.unwrap(),
        }
    }
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        what,
    }
}

/// Runs a tool, asserting it exists and succeeds; returns stdout.
#[track_caller]
pub(crate) fn tool(program: &str, args: &[&str]) -> String {
    require_tool(program);
    let mut command = Command::new(program);
    command.args(args);
    run_command(command, None).ok().stdout_text()
}

/// One test's world: `ctx/` (the build context), `root/` (the state root), and room for
/// outputs, all in one temp dir removed at the end.
pub(crate) struct Project {
    pub temp: tempfile::TempDir,
}

impl Project {
    pub(crate) fn new() -> Project {
        let temp = tempfile::Builder::new().prefix("rbuild-e2e-").tempdir().unwrap();
        fs::create_dir(temp.path().join("ctx")).unwrap();
        Project { temp }
    }

    /// A project whose context is a copy of `testdata/e2e/NAME`.
    pub(crate) fn from_fixture(name: &str) -> Project {
        let project = Project::new();
        copy_tree(&fixture(name), &project.ctx());
        project
    }

    pub(crate) fn dir(&self) -> &Path {
        self.temp.path()
    }

    pub(crate) fn ctx(&self) -> PathBuf {
        self.dir().join("ctx")
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    /// A path for an output, beside the context.
    pub(crate) fn out(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Writes a file of the context (parents created).
    pub(crate) fn write(&self, relative: &str, content: &str) -> &Project {
        write_file(&self.ctx().join(relative), content);
        self
    }

    pub(crate) fn dockerfile(&self, content: &str) -> &Project {
        self.write("Dockerfile", content)
    }

    /// `rbuild ARGS` with `--root` of this project and no inherited RBUILD/BuildKit variables.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(RBUILD);
        command.args(args);
        command.current_dir(self.dir());
        for variable in ["RBUILD_ROOT", "RBUILD_LOG", "BUILDKIT_PROGRESS", "SOURCE_DATE_EPOCH", "NO_COLOR"] {
            command.env_remove(variable);
        }
        command
    }

    /// `rbuild build --root ROOT --progress=plain ARGS ctx`.
    pub(crate) fn build_command(&self, args: &[&str]) -> Command {
        let root = self.root();
        let mut full: Vec<&str> = vec!["build", "--root", root.to_str().unwrap(), "--progress=plain"];
        full.extend_from_slice(args);
        let ctx = self.ctx();
        full.push(ctx.to_str().unwrap());
        self.command(&full)
    }

    pub(crate) fn build(&self, args: &[&str]) -> Run {
        run_command(self.build_command(args), None)
    }

    /// Builds to `type=oci,dest=NAME` (plus `args`), asserting success; returns the archive.
    #[track_caller]
    pub(crate) fn build_oci(&self, name: &str, args: &[&str]) -> PathBuf {
        let archive = self.out(name);
        let spec = format!("type=oci,dest={}", archive.display());
        let mut full = vec!["-o", spec.as_str()];
        full.extend_from_slice(args);
        self.build(&full).ok();
        assert!(archive.is_file(), "no archive at {}", archive.display());
        archive
    }

    /// Builds to `type=local,dest=NAME`, asserting success; returns the directory.
    #[track_caller]
    pub(crate) fn build_local(&self, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.out(name);
        let spec = format!("type=local,dest={}", dir.display());
        let mut full = vec!["-o", spec.as_str()];
        full.extend_from_slice(args);
        self.build(&full).ok();
        assert!(dir.is_dir(), "no directory at {}", dir.display());
        dir
    }

    /// `rbuild cache SUBCOMMAND... --root ROOT`.
    pub(crate) fn cache(&self, args: &[&str]) -> Run {
        let root = self.root();
        let mut full = vec!["cache"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--root", root.to_str().unwrap()]);
        run_command(self.command(&full), None)
    }
}

pub(crate) fn write_file(path: &Path, content: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub(crate) fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()))
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap_or_else(|error| panic!("fixture {}: {error}", from.display())) {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every path under `dir`, relative, sorted, directories with a trailing `/`, symlinks as
/// `name -> target`.
pub(crate) fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                out.push(format!("{relative} -> {}", fs::read_link(&path).unwrap().display()));
            } else if kind.is_dir() {
                out.push(format!("{relative}/"));
                walk(base, &path, out);
            } else {
                out.push(relative);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub(crate) fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())).permissions().mode() & 0o7777
}

pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}):\n{text}"))
}

/// `skopeo inspect oci-archive:ARCHIVE`.
pub(crate) fn skopeo_inspect(archive: &Path) -> Value {
    json(&tool("skopeo", &["inspect", &format!("oci-archive:{}", archive.display())]))
}

/// The raw image config of an OCI archive (`skopeo inspect --config --raw`), which keeps
/// fields the OCI struct drops (Healthcheck).
pub(crate) fn skopeo_config(archive: &Path) -> Value {
    json(&tool("skopeo", &["inspect", "--config", "--raw", &format!("oci-archive:{}", archive.display())]))
}

/// The raw manifest of an OCI archive.
pub(crate) fn skopeo_manifest(archive: &Path) -> Value {
    json(&tool("skopeo", &["inspect", "--raw", &format!("oci-archive:{}", archive.display())]))
}

/// Extracts an OCI archive into a layout directory beside it (GNU tar).
pub(crate) fn extract_layout(archive: &Path) -> PathBuf {
    let layout = archive.with_extension("layout");
    fs::create_dir_all(&layout).unwrap();
    tool("tar", &["-xf", archive.to_str().unwrap(), "-C", layout.to_str().unwrap()]);
    layout
}

/// `umoci unpack --rootless` of `archive` at `tag`; returns the root filesystem.
pub(crate) fn umoci_unpack(archive: &Path, tag: &str) -> PathBuf {
    let layout = extract_layout(archive);
    let bundle = archive.with_extension("bundle");
    tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:{tag}", layout.display()), bundle.to_str().unwrap()]);
    bundle.join("rootfs")
}

/// `tar --numeric-owner -tvf` of every layer of an OCI archive, one listing per layer.
pub(crate) fn layer_listings(archive: &Path) -> Vec<String> {
    let layout = extract_layout(archive);
    let manifest = skopeo_manifest(archive);
    manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|layer| {
            let digest = layer["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
            let blob = layout.join("blobs/sha256").join(digest);
            tool("tar", &["--numeric-owner", "-tvf", blob.to_str().unwrap()])
        })
        .collect()
}

/// The line of a `tar -tv` listing naming `path` exactly.
#[track_caller]
pub(crate) fn listing_line<'a>(listing: &'a str, path: &str) -> &'a str {
    listing
        .lines()
        .find(|line| line.split_whitespace().nth(5) == Some(path) || line.ends_with(&format!(" {path}")))
        .unwrap_or_else(|| panic!("no {path:?} in listing:\n{listing}"))
}

/// `(mode string, owner)` of a `tar -tv` line, e.g. `("-rwxr-xr-x", "1000/1000")`.
pub(crate) fn listing_fields(line: &str) -> (String, String) {
    let mut fields = line.split_whitespace();
    (fields.next().unwrap().to_string(), fields.next().unwrap().to_string())
}

/// A private podman storage in `dir` (vfs, no daemon).
pub(crate) struct Podman {
    pub root: PathBuf,
    pub runroot: PathBuf,
}

impl Podman {
    pub(crate) fn new(dir: &Path) -> Podman {
        require_tool("podman");
        let podman = Podman { root: dir.join("podman-root"), runroot: dir.join("podman-runroot") };
        fs::create_dir_all(&podman.root).unwrap();
        fs::create_dir_all(&podman.runroot).unwrap();
        podman
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        let mut command = Command::new("podman");
        command.args(["--root", self.root.to_str().unwrap(), "--runroot", self.runroot.to_str().unwrap(), "--storage-driver", "vfs"]);
        command.args(args);
        run_command(command, None)
    }
}

/// The unprivileged user that rootless end-to-end tests run rbuild as.
pub(crate) const TEST_USER: &str = "rbuild-test";
/// Its subordinate id range (`/etc/subuid` and `/etc/subgid`): `rbuild-test:200000:65536`.
pub(crate) const TEST_SUBID_START: u32 = 200000;
pub(crate) const TEST_SUBID_COUNT: u32 = 65536;

/// Makes sure [`TEST_USER`] exists (`useradd -m`) with subordinate uid and gid ranges, and returns
/// its `(uid, gid)`. Idempotent; serialized across threads and processes by a lock file
/// (`/run/lock/rbuild-test-user.lock`, else the temp dir). Needs root; fails loudly otherwise.
pub(crate) fn ensure_test_user() -> (u32, u32) {
    static USER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *USER.get_or_init(|| {
        assert!(nix::unistd::geteuid().is_root(), "the rootless tests create the user `{TEST_USER}`, which needs root");
        for program in ["useradd", "runuser", "newuidmap", "newgidmap"] {
            let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|dir| Path::new(dir).join(program).is_file());
            assert!(found, "required tool `{program}` is not installed (useradd: passwd, runuser: util-linux, newuidmap: uidmap)");
        }
        let lock_dir = if Path::new("/run/lock").is_dir() { PathBuf::from("/run/lock") } else { std::env::temp_dir() };
        let lock_path = lock_dir.join("rbuild-test-user.lock");
        let _lock = lock_exclusive(&lock_path);
        if nix::unistd::User::from_name(TEST_USER).unwrap().is_none() {
            let mut command = Command::new("/usr/sbin/useradd");
            command.args(["-m", "-s", "/bin/sh", TEST_USER]);
            run_command(command, None).ok();
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = fs::read_to_string(file).unwrap_or_default();
            let wanted = format!("{TEST_USER}:{TEST_SUBID_START}:{TEST_SUBID_COUNT}");
            if text.lines().any(|line| line.trim() == wanted) {
                continue;
            }
            // Drop any other range of the user (useradd may have allocated one), keep the rest.
            let mut kept: String =
                text.lines().filter(|line| !line.starts_with(&format!("{TEST_USER}:"))).map(|line| format!("{line}\n")).collect();
            kept.push_str(&wanted);
            kept.push('\n');
            let tmp = format!("{file}.rbuild-test-tmp");
            fs::write(&tmp, kept).unwrap();
            set_mode(Path::new(&tmp), 0o644);
            fs::rename(&tmp, file).unwrap();
        }
        let user = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap_or_else(|| panic!("user {TEST_USER} missing after useradd"));
        (user.uid.as_raw(), user.gid.as_raw())
    })
}

/// `chown -R UID:GID PATH` (symlinks themselves, not their targets).
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let mut command = Command::new("chown");
    command.args(["-R", "-h", &format!("{uid}:{gid}"), path.to_str().unwrap()]);
    run_command(command, None).ok();
}

/// Hands a project to [`TEST_USER`]: the whole temp dir (context, state root, outputs) becomes
/// theirs. Call again after writing new context files if they must be writable by the user
/// (root-written files are readable anyway).
pub(crate) fn give_to_test_user(project: &Project) {
    let (uid, gid) = ensure_test_user();
    chown_tree(project.dir(), uid, gid);
}

/// The same command, run as [`TEST_USER`] by `runuser -u rbuild-test -- PROGRAM ARGS` (same
/// cwd and environment changes; `runuser` sets HOME, USER, LOGNAME and SHELL for the user).
pub(crate) fn as_test_user(command: &Command) -> Command {
    ensure_test_user();
    let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .expect("required tool `runuser` (util-linux) is not installed");
    let mut wrapped = wrapped_command(runuser, &["-u", TEST_USER, "--"], command);
    // The user's own cache/config directories, not root's.
    for variable in ["XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR", "XDG_DATA_HOME", "TMPDIR"] {
        wrapped.env_remove(variable);
    }
    wrapped
}

/// `PROGRAM PREFIX... COMMAND ARGS...` with the command's working directory and environment
/// changes: the command run by another one (`runuser`, `unshare`).
pub(crate) fn wrapped_command(program: &str, prefix: &[&str], command: &Command) -> Command {
    let mut wrapped = Command::new(program);
    wrapped.args(prefix);
    wrapped.arg(command.get_program());
    wrapped.args(command.get_args());
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// Asserts BuildKit's snippet: `Dockerfile:N`, a dashed rule, the numbered lines with `>>>` on
/// line `line`, and the rule again.
#[track_caller]
pub(crate) fn assert_snippet(stderr: &str, line: usize, text: &str) {
    let header = format!("Dockerfile:{line}\n--------------------\n");
    let start = stderr.find(&header).unwrap_or_else(|| panic!("no {header:?} in stderr:\n{stderr}"));
    let snippet = &stderr[start + header.len()..];
    let end = snippet.find("--------------------\n").unwrap_or_else(|| panic!("snippet not closed:\n{stderr}"));
    let body = &snippet[..end];
    let marked = format!("{line:>4} | >>> {text}\n");
    assert!(body.contains(&marked), "no {marked:?} in snippet:\n{body}");
    assert_eq!(body.matches(">>>").count(), 1, "one marked line:\n{body}");
}

/// An exclusive flock on `path` (created if missing), held until the returned value is dropped:
/// serialises work shared by test threads and test processes.
pub(crate) fn lock_exclusive(path: &Path) -> nix::fcntl::Flock<fs::File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, errno)| panic!("flock {}: {errno}", path.display()))
}

/// One HTTP/1.1 request as the tests' small servers read it: method, target, headers (names in
/// lower case) and its body (`Content-Length` bytes).
pub(crate) struct HttpRequest {
    pub method: String,
    pub target: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// Reads one request from `stream`; `None` when the client sent none whole.
    pub(crate) fn read(stream: &std::net::TcpStream) -> Option<HttpRequest> {
        HttpRequest::read_from(stream.try_clone().ok()?)
    }

    /// Reads one request from any stream (a TLS one too); what follows it is dropped.
    pub(crate) fn read_from(stream: impl std::io::Read) -> Option<HttpRequest> {
        use std::io::{BufRead, Read};
        let mut reader = std::io::BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).ok()?;
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length = headers.get("content-length").and_then(|length| length.parse().ok()).unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        let mut words = request_line.split_whitespace();
        let (method, target) = (words.next()?.to_string(), words.next()?.to_string());
        Some(HttpRequest { method, target, headers, body })
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).cloned()
    }
}

/// Serves connections on a free port of 127.0.0.1, each on a thread of its own with `serve`;
/// returns the port.
pub(crate) fn serve_http(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// A child process (a server, an agent) that is killed and reaped when this is dropped.
pub(crate) struct KilledOnDrop(pub std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
