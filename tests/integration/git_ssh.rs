//! `ADD <ssh git URL>` end to end: a real `sshd` on 127.0.0.1 that each test starts (its own
//! configuration, host key and authorized key; `openssh-server`), serving the repository of
//! `git_source` through `git-upload-pack`, and a real `ssh-agent` holding the client's key.
//!
//! What BuildKit gives for the same Dockerfile over ssh (`--ssh default=SOCKET`) is what it gives
//! over `git://`, measured with the oracle: the listing in `testdata/e2e/git-add/expected.txt`.
//! The ignored test [`buildkit_agrees`] asks BuildKit again (`RBUILD_ORACLE=... cargo test --test
//! integration git_ssh::buildkit_agrees -- --ignored`, the oracle started with a mirror serving
//! busybox).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::git_source::{EPOCH, FIRST_COMMIT, GitServers, dockerfile_for, listing, make_repository, rootless_listing};
use crate::images::busybox_context;
use crate::support::{KilledOnDrop, Project, fixture, require_tool, run_command};

const SSHD: &str = "/usr/sbin/sshd";

/// An `sshd` on 127.0.0.1 letting in the client key as root, with the keys it was made with.
struct SshServer {
    _child: KilledOnDrop,
    port: u16,
    log: PathBuf,
    /// The private key `authorized_keys` lets in.
    client_key: PathBuf,
    /// A key it does not.
    wrong_key: PathBuf,
}

fn keygen(path: &Path, comment: &str) {
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"]).arg(path);
    run_command(command, None).ok();
}

impl SshServer {
    fn start(directory: &Path) -> SshServer {
        assert!(Path::new(SSHD).is_file(), "required tool `{SSHD}` is not installed (openssh-server; run .ci/run)");
        require_tool("ssh-keygen");
        fs::create_dir_all(directory).unwrap();
        // sshd as root wants its privilege separation directory (the package's service makes it).
        fs::create_dir_all("/run/sshd").unwrap();
        let key = |name: &str| directory.join(name);
        for (name, comment) in [("host", "host"), ("client", "client"), ("wrong", "wrong")] {
            keygen(&key(name), comment);
        }
        fs::copy(key("client.pub"), key("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = key("sshd_config");
        // The served repositories belong to the rootless test's user: git must not refuse them.
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPidFile none\n\
                 PermitRootLogin prohibit-password\n\
                 SetEnv GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory GIT_CONFIG_VALUE_0=*\n",
                key("host").display(),
                key("authorized_keys").display()
            ),
        )
        .unwrap();
        let log = key("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("sshd starts");
        let server = SshServer { _child: KilledOnDrop(child), port, log, client_key: key("client"), wrong_key: key("wrong") };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("sshd did not listen on {port}: {}", fs::read_to_string(&server.log).unwrap_or_default());
    }

    /// `ssh://root@127.0.0.1:PORT/PATH`.
    fn url(&self, path: &Path) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, path.display())
    }

    /// How many ssh sessions were let in so far (an ls-remote is one, a fetch another).
    fn sessions(&self) -> usize {
        fs::read_to_string(&self.log).unwrap_or_default().matches("Accepted publickey").count()
    }
}

/// An `ssh-agent` holding one key, on a socket of its own.
struct Agent {
    _child: KilledOnDrop,
    socket: PathBuf,
}

impl Agent {
    fn start(socket: PathBuf, key: &Path) -> Agent {
        require_tool("ssh-agent");
        let child = Command::new("ssh-agent").arg("-D").arg("-a").arg(&socket).stdout(Stdio::null()).spawn().expect("ssh-agent starts");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut add = Command::new("ssh-add");
        add.arg(key).env("SSH_AUTH_SOCK", &socket).stderr(Stdio::null());
        run_command(add, None).ok();
        Agent { _child: KilledOnDrop(child), socket }
    }

    fn ssh_argument(&self) -> String {
        format!("default={}", self.socket.display())
    }
}

/// A project with the repository served over ssh (and `git://`), the agent holding the key
/// that is let in, and the ssh URL of the repository.
fn project_with_ssh() -> (Project, SshServer, Agent, String) {
    require_tool("git");
    let project = Project::new();
    let (work, served) = (project.out("work"), project.out("served"));
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&served).unwrap();
    make_repository(&work, &served);
    let server = SshServer::start(&project.out("ssh"));
    let agent = Agent::start(project.out("ssh/agent.sock"), &server.client_key);
    let url = server.url(&served.join("repo.git"));
    (project, server, agent, url)
}

/// Every form the `git://` test builds, over ssh: BuildKit's files.
#[test]
fn add_over_ssh_gives_buildkits_files() {
    let (project, _server, agent, url) = project_with_ssh();
    project.dockerfile(&dockerfile_for(&url, &url));
    let tar = project.out("rootfs.tar");
    let output = format!("type=tar,dest={}", tar.display());
    project.build(&["--build-context", &busybox_context(), "--ssh", &agent.ssh_argument(), "--build-arg", EPOCH, "-o", &output]).ok();
    assert_eq!(listing(&tar), fs::read_to_string(fixture("git-add/expected.txt")).unwrap());
}

/// The same as an unprivileged user, with the key file given to `--ssh` (rbuild's own agent
/// serves it).
#[test]
fn add_over_ssh_rootless_with_a_key_file() {
    let (project, server, _agent, url) = project_with_ssh();
    project.dockerfile(&dockerfile_for(&url, &url));
    let ssh = format!("default={}", server.client_key.display());
    assert_eq!(rootless_listing(&project, &["--ssh", &ssh]), fs::read_to_string(fixture("git-add/expected.txt")).unwrap());
}

/// `--ssh default` takes `$SSH_AUTH_SOCK`; a second build with the branch unchanged only lists
/// the refs (one ssh session, no fetch) and is all CACHED.
#[test]
fn an_unchanged_branch_over_ssh_fetches_nothing() {
    let (project, server, agent, url) = project_with_ssh();
    project.dockerfile(&format!("FROM busybox\nADD {url}#main /a/\nRUN cat /a/two.txt > /copy\n"));
    let local = project.out("out");
    let output = format!("type=local,dest={}", local.display());
    let build = || {
        let mut command = project.build_command(&["--build-context", &busybox_context(), "--ssh", "default", "-o", &output]);
        command.env("SSH_AUTH_SOCK", &agent.socket);
        run_command(command, None).ok()
    };
    build();
    assert_eq!(fs::read_to_string(local.join("copy")).unwrap(), "two\n");
    assert_eq!(server.sessions(), 2, "one ls-remote and one fetch");
    let second = build();
    assert_eq!(server.sessions(), 3, "only the ls-remote");
    for (name, outcome) in second.steps() {
        if name.contains("ADD") || name.contains("RUN") {
            assert_eq!(outcome, "CACHED", "{name}\n{}", second.stderr);
        }
    }
}

/// The same commit over ssh and over `git://` is one checkout in the cache: the key is the
/// commit, never the URL. A build taking it over ssh, then one taking it by id over `git://`:
/// the second is CACHED without asking the `git://` server anything.
#[test]
fn the_same_commit_over_ssh_and_git_is_one_result() {
    let (project, _server, agent, url) = project_with_ssh();
    let servers = GitServers::start(&project.out("served"), &project.out(""));
    project.dockerfile(&format!("FROM busybox\nADD {url}#other /a/\n"));
    project.build(&["--build-context", &busybox_context(), "--ssh", &agent.ssh_argument()]).ok();
    let git = servers.git_url("/repo.git");
    project.dockerfile(&format!("FROM busybox\nADD {git}#{FIRST_COMMIT} /a/\n"));
    let second = project.build(&["--build-context", &busybox_context()]).ok();
    assert!(second.steps().iter().all(|(name, outcome)| !name.contains("ADD") || outcome == "CACHED"), "{}", second.stderr);
    assert_eq!(servers.daemon_sessions(), 0);
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    assert_eq!(usage.matches("git snapshot for").count(), 1, "{usage}");
}

/// No `--ssh default`: BuildKit's words, before anything connects. A key the host does not let
/// in, or a repository it does not have: ssh's own words. Each at the Dockerfile line.
#[test]
fn ssh_failures_are_clear() {
    let (project, server, agent, url) = project_with_ssh();
    project.dockerfile(&format!("FROM busybox\nADD {url}#main /a/\n"));
    let run = project.build(&["--build-context", &busybox_context()]).fails(1);
    run.stderr_has(&format!("ERROR: failed to solve: no SSH key \"default\" forwarded from the client: the ssh remote `{url}` needs"));
    run.stderr_has("Dockerfile:2\n");
    assert_eq!(server.sessions(), 0);

    let wrong = format!("default={}", server.wrong_key.display());
    let run = project.build(&["--build-context", &busybox_context(), "--ssh", &wrong]).fails(1);
    run.stderr_has(&format!("ERROR: failed to solve: failed to fetch remote `{url}`: ssh failed (exit status: 255): "));
    run.stderr_has("root@127.0.0.1: Permission denied (publickey).");
    run.stderr_has("Dockerfile:2\n");

    let missing = server.url(&project.out("served/missing.git"));
    project.dockerfile(&format!("FROM busybox\nADD {missing}#main /a/\n"));
    let run = project.build(&["--build-context", &busybox_context(), "--ssh", &agent.ssh_argument()]).fails(1);
    run.stderr_has(&format!("ERROR: failed to solve: failed to fetch remote `{missing}`: ssh failed (exit status: 128): fatal: "));
    run.stderr_has("does not appear to be a git repository");
}

/// BuildKit, asked over ssh: the files of `git-add/expected.txt`, and its error without `--ssh`.
#[test]
#[ignore = "needs the oracle (RBUILD_ORACLE) started with a mirror serving busybox"]
fn buildkit_agrees() {
    let oracle = std::env::var("RBUILD_ORACLE").expect("RBUILD_ORACLE names the oracle script");
    let (project, _server, agent, url) = project_with_ssh();
    project.dockerfile(&dockerfile_for(&url, &url));
    let buildctl = |extra: &[&str]| {
        let context = project.ctx();
        let mut command = Command::new(&oracle);
        command.args(["buildctl", "build", "--frontend", "dockerfile.v0", "--progress=plain"]);
        command.arg(format!("--local=context={}", context.display())).arg(format!("--local=dockerfile={}", context.display()));
        command.args(["--opt", &format!("build-arg:{EPOCH}")]).args(extra);
        run_command(command, None)
    };
    let tar = project.out("buildkit.tar");
    buildctl(&["--ssh", &agent.ssh_argument(), "--output", &format!("type=tar,dest={}", tar.display())]).ok();
    assert_eq!(listing(&tar), fs::read_to_string(fixture("git-add/expected.txt")).unwrap());
    buildctl(&[]).fails(1).stderr_has("no SSH key \"default\" forwarded from the client");
}
