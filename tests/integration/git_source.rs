//! `ADD <git URL>` end to end, against real git servers these tests start on 127.0.0.1: `git
//! daemon` for `git://` and `git http-backend` behind a small HTTP/1.1 server for smart http
//! ([`GitServers`]; both log what they are asked, so a test sees which builds fetched).
//!
//! What BuildKit made of the same Dockerfile and repository is in
//! `testdata/e2e/git-add/expected.txt`, recorded by the ignored test [`record`]
//! (`RBUILD_ORACLE=../shared/tools/buildkit/oracle cargo test --test integration
//! git_source::record -- --ignored`, with the oracle started with a mirror serving busybox). The
//! builds set SOURCE_DATE_EPOCH, which BuildKit gives the checked-out files too, so mtimes
//! compare; the contents of a kept `.git` are left out (git's and libgit2's differ).

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::images::{BUSYBOX_TAG, busybox_context, busybox_layout, context_arg};
use crate::support::{HttpRequest, Project, as_test_user, copy_tree, fixture, give_to_test_user, run_command, serve_http};

/// git with a fixed identity and dates, so the test repository's commit ids never change.
pub(crate) fn run_git(directory: &Path, args: &[&str], date: &str) {
    let status = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(directory)
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .stdout(Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// The repository: `main` with two commits (the first also `other`, `v1` and the annotated
/// `v1a`), an executable, a symlink and a subdirectory.
pub(crate) fn make_repository(work: &Path, served: &Path) {
    fs::create_dir_all(work.join("sub/deep")).unwrap();
    fs::write(work.join("hello.txt"), "hello\n").unwrap();
    fs::write(work.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    fs::set_permissions(work.join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("hello.txt", work.join("link")).unwrap();
    fs::write(work.join("sub/inner.txt"), "inner\n").unwrap();
    fs::write(work.join("sub/deep/d.txt"), "deep\n").unwrap();
    let one = "2023-11-14T22:13:20Z";
    run_git(work, &["init", "-q"], one);
    run_git(work, &["add", "-A"], one);
    run_git(work, &["commit", "-q", "-m", "one"], one);
    run_git(work, &["tag", "v1"], one);
    run_git(work, &["tag", "-a", "v1a", "-m", "annotated"], one);
    run_git(work, &["branch", "other"], one);
    fs::write(work.join("two.txt"), "two\n").unwrap();
    let two = "2023-11-15T22:13:20Z";
    run_git(work, &["add", "two.txt"], two);
    run_git(work, &["commit", "-q", "-m", "two"], two);
    run_git(work, &["clone", "-q", "--bare", ".", &served.join("repo.git").display().to_string()], two);
}

/// The servers run as root over repositories the rootless test gives to its user: git must not
/// refuse them as of "dubious ownership".
const TRUST_SERVED: [(&str, &str); 3] = [("GIT_CONFIG_COUNT", "1"), ("GIT_CONFIG_KEY_0", "safe.directory"), ("GIT_CONFIG_VALUE_0", "*")];

/// A `git daemon` and a smart http server over one directory of bare repositories.
pub(crate) struct GitServers {
    daemon: Child,
    daemon_port: u16,
    daemon_log: PathBuf,
    http_port: u16,
    http_log: Arc<Mutex<Vec<String>>>,
}

impl Drop for GitServers {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

impl GitServers {
    pub(crate) fn start(served: &Path, log_directory: &Path) -> GitServers {
        let daemon_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let daemon_log = log_directory.join("daemon.log");
        // `git daemon` runs `git-daemon` as its child: killing the wrapper would orphan the server.
        let exec_path = String::from_utf8(Command::new("git").arg("--exec-path").output().unwrap().stdout).unwrap();
        let daemon = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--verbose", "--listen=127.0.0.1"])
            .arg(format!("--base-path={}", served.display()))
            .arg(format!("--port={daemon_port}"))
            .arg(served)
            .envs(TRUST_SERVED)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&daemon_log).unwrap())
            .spawn()
            .expect("git daemon starts");
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", daemon_port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let http_log = Arc::new(Mutex::new(Vec::new()));
        let (root, log) = (served.to_path_buf(), http_log.clone());
        let http_port = serve_http(move |stream| serve_git_http(stream, &root, &log, None));
        GitServers { daemon, daemon_port, daemon_log, http_port, http_log }
    }

    pub(crate) fn git_url(&self, path: &str) -> String {
        format!("git://127.0.0.1:{}{path}", self.daemon_port)
    }

    pub(crate) fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// How many upload-pack sessions `git daemon` served so far (an ls-remote is one, a fetch
    /// another).
    pub(crate) fn daemon_sessions(&self) -> usize {
        fs::read_to_string(&self.daemon_log).unwrap_or_default().matches("Request upload-pack").count()
    }

    /// The smart http requests so far (`METHOD PATH [Authorization]`), emptied.
    pub(crate) fn take_http_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.http_log.lock().unwrap())
    }
}

/// One HTTP/1.1 request, answered by `git http-backend` (CGI), then the connection closes.
/// With `required`, a request whose `Authorization` is not that value gets a 401 asking for
/// basic credentials, as a private repository's server answers.
pub(crate) fn serve_git_http(mut stream: impl Read + Write, root: &Path, log: &Mutex<Vec<String>>, required: Option<&str>) {
    let Some(request) = HttpRequest::read_from(&mut stream) else { return };
    let header = |name: &str| request.header(name);
    let (method, target, body) = (request.method.clone(), request.target.clone(), request.body.clone());
    let mut logged = format!("{method} {target}");
    if let Some(authorization) = header("authorization") {
        logged.push_str(&format!(" {authorization}"));
    }
    log.lock().unwrap().push(logged);
    if let Some(required) = required
        && header("authorization").as_deref() != Some(required)
    {
        let _ = write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .envs(TRUST_SERVED)
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1");
    if let Some(encoding) = header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        command.env("GIT_PROTOCOL", protocol);
    }
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let output = child.wait_with_output().unwrap();
    let _ = writer.join();
    let split = output.stdout.windows(4).position(|window| window == b"\r\n\r\n");
    let (head, content) = match split {
        Some(at) => (String::from_utf8_lossy(&output.stdout[..at]).into_owned(), &output.stdout[at + 4..]),
        None => (String::new(), &output.stdout[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for line in head.lines() {
        match line.split_once(": ") {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => status = value.to_string(),
            Some(_) => response_headers.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let _ = write!(stream, "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n", content.len());
    let _ = stream.write_all(content);
}

/// A project with the repository served, and the commit ids of `main` and `other`.
pub(crate) fn project_with_servers() -> (Project, GitServers) {
    crate::support::require_tool("git");
    let project = Project::new();
    let (work, served) = (project.out("work"), project.out("served"));
    fs::create_dir_all(&work).unwrap();
    fs::create_dir_all(&served).unwrap();
    make_repository(&work, &served);
    let servers = GitServers::start(&served, &project.out(""));
    (project, servers)
}

/// The first commit's id (`other`, `v1`, `v1a`), fixed by the repository's dates and identity.
pub(crate) const FIRST_COMMIT: &str = "2bf4e18a47c1f371aca286da99ea2d69dc650446";

/// Every form BuildKit was asked about: the default branch, a branch over smart http, a tag
/// with a subdirectory, an annotated tag with `--keep-git-dir`, a full commit id,
/// `--chown`/`--chmod`, `--link`.
fn dockerfile(servers: &GitServers) -> String {
    dockerfile_for(&servers.git_url("/repo.git"), &servers.http_url("/repo.git"))
}

/// [`dockerfile`] with the repository at `git`, and at `http` for the smart http line.
pub(crate) fn dockerfile_for(git: &str, http: &str) -> String {
    format!(
        "FROM busybox
ADD {git} /a/
ADD {http}#other /b
ADD {git}#v1:sub /c/
ADD --keep-git-dir {git}#v1a /d/
ADD {git}#{FIRST_COMMIT} /e/
ADD --chown=12:34 --chmod=755 {git}#main:sub /f/
ADD --link {git}#other /g/deep/
"
    )
}

const ADDED: &[&str] = &["a", "b", "c", "d", "e", "f", "g"];

/// `path type mode uid:gid mtime [size sha256-prefix | -> target]` of every entry under
/// [`ADDED`] in a root filesystem tar; of a kept `.git`, only the directory itself.
pub(crate) fn listing(tar_path: &Path) -> String {
    listing_of(tar_path, ADDED)
}

/// [`listing`] of the entries under `added`.
pub(crate) fn listing_of(tar_path: &Path, added: &[&str]) -> String {
    let mut archive = tar::Archive::new(fs::File::open(tar_path).unwrap());
    let mut lines = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let parts: Vec<&str> = path.split('/').collect();
        if !added.contains(&parts[0]) || (parts.len() > 2 && parts[1] == ".git") {
            continue;
        }
        let header = entry.header().clone();
        let head = format!(
            "{path} {{}} {:04o} {}:{} {}",
            header.mode().unwrap() & 0o7777,
            header.uid().unwrap(),
            header.gid().unwrap(),
            header.mtime().unwrap()
        );
        let line = if header.entry_type().is_dir() {
            head.replace("{}", "d")
        } else if header.entry_type().is_symlink() {
            format!("{} -> {}", head.replace("{}", "l"), header.link_name().unwrap().unwrap().display())
        } else {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            format!("{} {} {}", head.replace("{}", "f"), content.len(), &hex::encode(Sha256::digest(&content))[..16])
        };
        lines.push(line);
    }
    lines.sort();
    lines.join("\n") + "\n"
}

pub(crate) const EPOCH: &str = "SOURCE_DATE_EPOCH=1000";

/// Builds the project (busybox, [`EPOCH`]) into a root filesystem tar; its path and [`listing`].
pub(crate) fn build_listing(project: &Project, added: &[&str]) -> (PathBuf, String) {
    let tar = project.out("rootfs.tar");
    let output = format!("type=tar,dest={}", tar.display());
    project.build(&["--build-context", &busybox_context(), "--build-arg", EPOCH, "-o", &output]).ok();
    let listed = listing_of(&tar, added);
    (tar, listed)
}

#[test]
fn add_from_git_gives_buildkits_files() {
    let (project, servers) = project_with_servers();
    project.dockerfile(&dockerfile(&servers));
    let (_, listed) = build_listing(&project, ADDED);
    assert_eq!(listed, fs::read_to_string(fixture("git-add/expected.txt")).unwrap());
    // `cache du` shows the shared repositories and the checkouts as BuildKit's `du` does.
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    for description in
        [format!("shared git repo for {}", servers.git_url("/repo.git")), format!("git snapshot for {}#v1", servers.git_url("/repo.git"))]
    {
        assert!(usage.contains(&description), "no `{description}` in\n{usage}");
    }
    // No ref is named by the default branch, as BuildKit's `git snapshot for URL#main`.
    assert!(!usage.contains(&format!("git snapshot for {}\n", servers.git_url("/repo.git"))), "{usage}");
    // Typed as BuildKit types them: the checkouts `source.git.checkout`, the repositories not.
    let checkouts = project.cache(&["du", "--verbose", "--filter", "type=source.git.checkout"]).ok().stdout_text();
    assert!(checkouts.contains(&format!("git snapshot for {}#v1", servers.git_url("/repo.git"))), "{checkouts}");
    assert!(!checkouts.contains("shared git repo"), "{checkouts}");
    // `cache prune` removes the repositories too.
    project.cache(&["prune", "--all", "--force"]).ok();
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    assert!(!usage.contains("shared git repo"), "{usage}");
}

/// The same as an unprivileged user.
#[test]
fn add_from_git_rootless() {
    let (project, servers) = project_with_servers();
    project.dockerfile(&dockerfile(&servers));
    let expected = fs::read_to_string(fixture("git-add/expected.txt")).unwrap();
    assert_eq!(rootless_listing(&project, &[]), expected);
}

/// Builds the project as the test user (busybox from a copy of the layout, SOURCE_DATE_EPOCH
/// set, and `args`) into a root filesystem tar, and gives its [`listing`].
pub(crate) fn rootless_listing(project: &Project, args: &[&str]) -> String {
    let layout = project.out("busybox-layout");
    copy_tree(&busybox_layout(), &layout);
    give_to_test_user(project);
    let tar = project.out("rootfs.tar");
    let output = format!("type=tar,dest={}", tar.display());
    let busybox = context_arg("busybox", &layout, BUSYBOX_TAG);
    let mut all = vec!["--build-context", &busybox, "--build-arg", EPOCH, "-o", &output];
    all.extend_from_slice(args);
    run_command(as_test_user(&project.build_command(&all)), None).ok();
    listing(&tar)
}

/// A second build with the branch unchanged lists the refs and fetches nothing; after a new
/// commit exactly the steps that use it run.
#[test]
fn an_unchanged_branch_is_cached_and_a_new_commit_rebuilt() {
    let (project, servers) = project_with_servers();
    let (git, http) = (servers.git_url("/repo.git"), servers.http_url("/repo.git"));
    project.dockerfile(&format!(
        "FROM busybox\nRUN echo independent > /independent\nADD {git}#main /a/\nADD {http}#main /b/\nRUN cat /a/two.txt /b/two.txt > /copy\n"
    ));
    let local = project.out("out");
    let output = format!("type=local,dest={}", local.display());
    let build = || project.build(&["--build-context", &busybox_context(), "-o", &output]).ok();

    build();
    let sessions = servers.daemon_sessions();
    assert_eq!(sessions, 2, "one ls-remote and one fetch");
    let requests = servers.take_http_log();
    assert!(requests.iter().any(|request| request.starts_with("POST /repo.git/git-upload-pack")), "{requests:?}");

    let second = build();
    assert_eq!(servers.daemon_sessions() - sessions, 1, "only the ls-remote");
    assert_eq!(servers.take_http_log(), ["GET /repo.git/info/refs?service=git-upload-pack"]);
    for (name, outcome) in second.steps() {
        if name.contains("ADD") || name.contains("RUN") {
            assert_eq!(outcome, "CACHED", "{name}\n{}", second.stderr);
        }
    }

    let work = project.out("work");
    fs::write(work.join("two.txt"), "changed\n").unwrap();
    let three = "2023-11-16T22:13:20Z";
    run_git(&work, &["commit", "-q", "-am", "three"], three);
    run_git(&work, &["push", "-q", &project.out("served/repo.git").display().to_string(), "main"], three);
    let third = build();
    assert_eq!(fs::read_to_string(local.join("copy")).unwrap(), "changed\nchanged\n");
    assert_eq!(third.step("RUN cat"), "DONE", "{}", third.stderr);
    assert_eq!(third.step("RUN echo independent"), "CACHED", "{}", third.stderr);
}

/// The same commit from two URLs (and two protocols) is one checkout in the cache.
#[test]
fn the_same_commit_from_two_urls_is_one_result() {
    let (project, servers) = project_with_servers();
    let (git, http) = (servers.git_url("/repo.git"), servers.http_url("/repo.git"));
    project.dockerfile(&format!("FROM busybox\nADD {git}#other /a/\nADD {http}#{FIRST_COMMIT} /b/\n"));
    project.build(&["--build-context", &busybox_context()]).ok();
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    assert_eq!(usage.matches("git snapshot for").count(), 1, "{usage}");
    assert_eq!(usage.matches("shared git repo for").count(), 2, "{usage}");
}

/// Two rbuild processes on one state root fetching the same remote at once (other refs, so both
/// fetch): both builds succeed with their own commit's files, and the shared repository they
/// took turns on holds both commits.
#[test]
fn two_builds_fetching_one_remote_at_once_take_turns() {
    let (project, servers) = project_with_servers();
    let git = servers.git_url("/repo.git");
    let contexts: Vec<_> = [("one", "main"), ("two", FIRST_COMMIT)]
        .into_iter()
        .map(|(name, reference)| {
            let directory = project.out(name);
            fs::create_dir_all(&directory).unwrap();
            fs::write(directory.join("Dockerfile"), format!("FROM busybox\nADD {git}#{reference} /src/\n")).unwrap();
            (name, directory)
        })
        .collect();
    let root = project.root();
    let busybox = busybox_context();
    let children: Vec<_> = contexts
        .iter()
        .map(|(name, directory)| {
            let output = format!("type=local,dest={}", project.out(&format!("{name}-out")).display());
            let args = ["build", "--root", root.to_str().unwrap(), "--progress=plain", "--build-context", &busybox, "-o", &output];
            let mut command = project.command(&args);
            command.arg(directory).stdout(Stdio::null()).stderr(Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    // `main` has two.txt; the first commit has not.
    assert!(project.out("one-out/src/two.txt").is_file());
    assert!(!project.out("two-out/src/two.txt").exists());
    assert!(project.out("two-out/src/hello.txt").is_file());
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    assert_eq!(usage.matches("shared git repo for").count(), 1, "{usage}");
    assert_eq!(usage.matches("git snapshot for").count(), 2, "{usage}");
}

/// `--build-context NAME=GIT-URL`: the commit's files (as BuildKit gives them, measured: the
/// subdirectory's files, no `.git`) for `COPY --from=NAME`, `RUN --mount=from=NAME` and `FROM NAME`, the vertex named
/// BuildKit's `[internal] load git source URL`.
#[test]
fn a_git_build_context_is_the_commits_files() {
    let (project, servers) = project_with_servers();
    let context = format!("src={}#main:sub", servers.git_url("/repo.git"));
    project.dockerfile(
        "FROM busybox AS one\nCOPY --from=src / /x/\nRUN --mount=from=src,target=/m cat /m/deep/d.txt > /mounted\nFROM src AS bare\n",
    );
    let one = project.out("one");
    let output = format!("type=local,dest={}", one.display());
    let run = project.build(&["--build-context", &busybox_context(), "--build-context", &context, "--target", "one", "-o", &output]).ok();
    assert_eq!(fs::read_to_string(one.join("x/inner.txt")).unwrap(), "inner\n");
    assert_eq!(fs::read_to_string(one.join("x/deep/d.txt")).unwrap(), "deep\n");
    assert!(!one.join("x/.git").exists());
    assert_eq!(fs::read_to_string(one.join("mounted")).unwrap(), "deep\n");
    let name = format!("[internal] load git source {}#main:sub", servers.git_url("/repo.git"));
    assert!(run.steps().iter().any(|(step, _)| *step == name), "no `{name}` in {:?}", run.steps());
    let bare = project.out("bare");
    let output = format!("type=local,dest={}", bare.display());
    project.build(&["--build-context", &context, "--target", "bare", "-o", &output]).ok();
    let mut names: Vec<String> =
        fs::read_dir(&bare).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["deep", "inner.txt"]);
}

/// A repository that is a build context: a Dockerfile at the top (listing what `COPY .` took,
/// with modes and file sizes: mtimes are BuildKit's checkout time there), another in `sub/`, a
/// `.dockerignore` that BuildKit does not apply to a git context, and a symlinked Dockerfile.
fn make_context_repository(project: &Project) {
    let work = project.out("context-work");
    fs::create_dir_all(work.join("sub/dir")).unwrap();
    fs::write(work.join("Dockerfile"), "FROM busybox\nCOPY . /ctx/\nRUN cd /ctx && (find . -type d -exec stat -c '%n %A' {} +; find . ! -type d -exec stat -c '%n %A %s' {} +) | sort > /list\n").unwrap();
    fs::write(work.join("sub/Dockerfile.sub"), "FROM busybox\nCOPY . /ctx/\nRUN cd /ctx && find . | sort > /list\n").unwrap();
    fs::write(work.join(".dockerignore"), "ignored.txt\n").unwrap();
    fs::write(work.join("ignored.txt"), "not ignored\n").unwrap();
    fs::write(work.join("sub/dir/c.txt"), "c\n").unwrap();
    std::os::unix::fs::symlink("sub/Dockerfile.sub", work.join("Dockerfile.link")).unwrap();
    let date = "2023-11-14T22:13:20Z";
    run_git(&work, &["init", "-q"], date);
    run_git(&work, &["add", "-A"], date);
    run_git(&work, &["commit", "-q", "-m", "context"], date);
    run_git(&work, &["clone", "-q", "--bare", ".", &project.out("served/context.git").display().to_string()], date);
}

/// A git URL as the build's context (PATH): the Dockerfile is read from the commit (`-f` a path
/// in it, through symlinks), `COPY .` takes the commit's files with no `.dockerignore` applied,
/// and the steps are BuildKit's (`[internal] load git source URL`, no `load build definition`).
/// The listing is BuildKit's, recorded by [`record_git_context`].
#[test]
fn a_git_url_is_the_build_context() {
    let (project, servers) = project_with_servers();
    make_context_repository(&project);
    let url = servers.git_url("/context.git");
    let build = |args: &[&str], context: &str| {
        let root = project.root();
        let mut full = vec!["build", "--root", root.to_str().unwrap(), "--progress=plain", "--build-context"];
        let busybox = busybox_context();
        full.push(&busybox);
        full.extend_from_slice(args);
        full.push(context);
        run_command(project.command(&full), None)
    };
    let out = project.out("top");
    let run = build(&["-o", &format!("type=local,dest={}", out.display())], &url).ok();
    assert_eq!(fs::read_to_string(out.join("list")).unwrap(), fs::read_to_string(fixture("git-context/expected.txt")).unwrap());
    let steps: Vec<String> = run.steps().into_iter().map(|(step, _)| step).collect();
    assert_eq!(steps[0], format!("[internal] load git source {url}"), "{steps:?}");
    assert!(!steps.iter().any(|step| step.starts_with("[internal] load build definition")), "{steps:?}");
    assert!(!steps.iter().any(|step| step.starts_with("[internal] load .dockerignore")), "{steps:?}");

    // A subdirectory, with `-f` a path in it; over smart http too.
    let out = project.out("sub");
    let sub = format!("{}#main:sub", servers.http_url("/context.git"));
    build(&["-f", "Dockerfile.sub", "-o", &format!("type=local,dest={}", out.display())], &sub).ok();
    assert_eq!(fs::read_to_string(out.join("list")).unwrap(), ".\n./Dockerfile.sub\n./dir\n./dir/c.txt\n");

    // `-f` through a symlink of the commit; an error names the path as given.
    let out = project.out("linked");
    build(&["-f", "sub/../Dockerfile.link", "-o", &format!("type=local,dest={}", out.display())], &url).ok();
    assert!(fs::read_to_string(out.join("list")).unwrap().contains("./sub/dir/c.txt\n"));
    build(&["-f", "Nope"], &url)
        .fails(1)
        .stderr_has("ERROR: failed to solve: failed to read dockerfile: open Nope: no such file or directory");
    build(&[], &format!("{url}#nope"))
        .fails(1)
        .stderr_has(&format!("failed to read dockerfile: failed to load cache key: repository `{url}` does not contain ref nope"));
}

/// Failures name the remote and the ref, at the Dockerfile line.
#[test]
fn unknown_refs_and_unreachable_remotes_fail_clearly() {
    let (project, servers) = project_with_servers();
    let git = servers.git_url("/repo.git");
    let cases = [
        (format!("ADD {git}#nope /x/"), format!("repository `{git}` does not contain ref nope")),
        // A short commit id is no ref, for BuildKit either.
        (format!("ADD {git}#2bf4e18a /x/"), format!("repository `{git}` does not contain ref 2bf4e18a")),
        (
            "ADD git://127.0.0.1:1/repo.git /x/".to_string(),
            "error fetching default branch for repository `git://127.0.0.1:1/repo.git`: ".to_string(),
        ),
        (format!("ADD --checksum=0000000 {git}#v1 /x/"), format!("expected checksum to match 0000000, got {FIRST_COMMIT}")),
    ];
    for (line, message) in cases {
        project.dockerfile(&format!("FROM busybox\n{line}\n"));
        let run = project.build(&["--build-context", &busybox_context()]).fails(1);
        run.stderr_has(&format!("ERROR: failed to solve: {message}"));
        run.stderr_has("Dockerfile:2\n");
    }
    project.dockerfile(&format!("FROM busybox\nADD --checksum={FIRST_COMMIT} {git}#v1 /x/\n"));
    project.build(&["--build-context", &busybox_context()]).ok();
}

/// Records BuildKit's result for [`add_from_git_gives_buildkits_files`].
#[test]
#[ignore = "needs the oracle (RBUILD_ORACLE) started with a mirror serving busybox"]
fn record() {
    let (project, servers) = project_with_servers();
    project.dockerfile(&dockerfile(&servers));
    record_listing(&project, "git-add", ADDED);
}

/// Builds the project's Dockerfile with the oracle's BuildKit (SOURCE_DATE_EPOCH set) and writes
/// the [`listing`] of `added` to `testdata/e2e/NAME/expected.txt`.
pub(crate) fn record_listing(project: &Project, name: &str, added: &[&str]) {
    let oracle = std::env::var("RBUILD_ORACLE").expect("RBUILD_ORACLE names the oracle script");
    let tar = project.out("buildkit.tar");
    let output = format!("type=tar,dest={}", tar.display());
    let mut command = Command::new(oracle);
    command.args(["build", "--progress=plain", "--build-arg", EPOCH, "-o", &output]).arg(project.ctx());
    run_command(command, None).ok();
    fs::create_dir_all(fixture(name)).unwrap();
    fs::write(fixture(&format!("{name}/expected.txt")), listing_of(&tar, added)).unwrap();
}

/// Records BuildKit's listing for [`a_git_url_is_the_build_context`]: the oracle's BuildKit given
/// the repository as its context (buildx sends a git context as the `context` option).
#[test]
#[ignore = "needs the oracle (RBUILD_ORACLE) started with a mirror serving busybox"]
fn record_git_context() {
    let oracle = std::env::var("RBUILD_ORACLE").expect("RBUILD_ORACLE names the oracle script");
    let (project, servers) = project_with_servers();
    make_context_repository(&project);
    let out = project.out("buildkit");
    let mut command = Command::new(oracle);
    command
        .args(["buildctl", "build", "--frontend", "dockerfile.v0", "--progress=plain"])
        .arg("--opt")
        .arg(format!("context={}", servers.git_url("/context.git")))
        .arg("--output")
        .arg(format!("type=local,dest={}", out.display()));
    run_command(command, None).ok();
    fs::create_dir_all(fixture("git-context")).unwrap();
    fs::copy(out.join("list"), fixture("git-context/expected.txt")).unwrap();
}
