//! `ADD <http URL>` end to end, against a small HTTP/1.1 server on 127.0.0.1 that these tests
//! start ([`FileServer`]: `ETag`, `Last-Modified`, 304, 404, redirects; every request logged).
//!
//! What BuildKit made of the same Dockerfile and server is in `testdata/e2e/http-add/expected.txt`,
//! recorded by the ignored test [`record`] (`RBUILD_ORACLE=../shared/tools/buildkit/oracle cargo
//! test --test integration http_source::record -- --ignored`, with the oracle started with a
//! mirror serving the busybox test image). Directory mtimes are left out of the comparison:
//! BuildKit stamps directories a copy creates with the time of the build, rbuild with the epoch
//! (or SOURCE_DATE_EPOCH), for every COPY and ADD alike.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::images::{BUSYBOX_TAG, busybox_context, busybox_layout, context_arg};
use crate::support::{HttpRequest, Project, as_test_user, copy_tree, fixture, give_to_test_user, run_command, serve_http};

/// The `Last-Modified` of every file the server sends (but under `/nolm/`).
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

/// Serves a directory over HTTP/1.1, one request per connection:
/// - `GET`/`HEAD /PATH`: the file, with `ETag` (16 hex digits of its sha256, quoted) and
///   `Last-Modified`; `If-None-Match` with the current `ETag` gives 304; a missing file 404;
///   a path ending in `/` serves `index`;
/// - `/redirect/PATH`: 302 to `/PATH`; `/nolm/PATH`: no `Last-Modified`; `/noetag/PATH`: no
///   `ETag`, and 304 for `If-Modified-Since` with the `Last-Modified` it sends;
///   `/disposition/PATH`: with `Content-Disposition: attachment; filename="other-name.txt"`.
struct FileServer {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    fn start(root: PathBuf) -> FileServer {
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        let port = serve_http(move |stream| serve(stream, &root, &shared));
        FileServer { port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The requests so far (`METHOD PATH [If-None-Match]`), emptied.
    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn serve(mut stream: TcpStream, root: &Path, log: &Mutex<Vec<String>>) {
    let Some(request) = HttpRequest::read(&stream) else { return };
    let (method, target) = (request.method.clone(), request.target.clone());
    let if_none_match = request.header("if-none-match");
    let if_modified_since = request.header("if-modified-since");
    let mut logged = format!("{method} {target}");
    for value in [&if_none_match, &if_modified_since].into_iter().flatten() {
        logged.push_str(&format!(" {value}"));
    }
    log.lock().unwrap().push(logged);

    let mut path = target.split('?').next().unwrap_or_default().to_string();
    let mut extra = String::new();
    if let Some(rest) = path.strip_prefix("/redirect/") {
        let _ = write!(stream, "HTTP/1.1 302 Found\r\nLocation: /{rest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let mut last_modified = true;
    let mut etag_sent = true;
    if let Some(rest) = path.strip_prefix("/noetag/") {
        path = format!("/{rest}");
        etag_sent = false;
    }
    if let Some(rest) = path.strip_prefix("/nolm/") {
        path = format!("/{rest}");
        last_modified = false;
    }
    if let Some(rest) = path.strip_prefix("/disposition/") {
        path = format!("/{rest}");
        extra.push_str("Content-Disposition: attachment; filename=\"other-name.txt\"\r\n");
    }
    if path.ends_with('/') {
        path.push_str("index");
    }
    let Ok(body) = fs::read(root.join(path.trim_start_matches('/'))) else {
        let _ = write!(stream, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..16]);
    if etag_sent && if_none_match.as_deref() == Some(etag.as_str()) {
        let _ = write!(stream, "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n");
        return;
    }
    if !etag_sent && if_modified_since.as_deref() == Some(LAST_MODIFIED) {
        let _ = write!(stream, "HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n");
        return;
    }
    if etag_sent {
        extra.push_str(&format!("ETag: {etag}\r\n"));
    }
    if last_modified {
        extra.push_str(&format!("Last-Modified: {LAST_MODIFIED}\r\n"));
    }
    let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", body.len());
    if method == "GET" {
        let _ = stream.write_all(&body);
    }
}

/// Every form of `ADD <url>` BuildKit was asked about: a name from the URL, a query, the root
/// (`__unnamed__`), an archive kept or unpacked, `--chmod`/`--chown`, a redirect, no
/// `Last-Modified`, `--checksum`, several URLs, a destination that exists, `--link`.
fn dockerfile(server: &FileServer) -> String {
    let base = server.url("");
    let sum = format!("sha256:{}", hex::encode(Sha256::digest(b"hello http\n")));
    format!(
        "FROM busybox
ADD {base}/dir/file.txt /a/
ADD {base}/dir/file.txt /b
ADD {base}/disposition/dir/file.txt /c/
ADD {base}/ /d/
ADD {base}/dir/file.txt?x=1&y=2 /e/
ADD {base}/pkg.tar.gz /f/
ADD --unpack=true {base}/pkg.tar.gz /g/
ADD --chmod=755 --chown=12:34 {base}/dir/file.txt /h/
ADD {base}/redirect/dir/file.txt /i/
ADD {base}/nolm/nolm-only.txt /j/
ADD --checksum={sum} {base}/dir/file.txt /k/
ADD {base}/dir/file.txt {base}/pkg.tar.gz /multi/
RUN mkdir /exist
ADD {base}/dir/file.txt /exist
ADD --link {base}/dir/file.txt /linked/deep/
"
    )
}

/// The top-level directories the Dockerfile adds to.
const ADDED: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "multi", "exist", "linked"];

/// `path type mode uid:gid [size mtime sha256-prefix]` of every entry under [`ADDED`] in a root
/// filesystem tar (files with their mtime and content, directories without a time).
fn listing(tar_path: &Path) -> String {
    let mut archive = tar::Archive::new(fs::File::open(tar_path).unwrap());
    let mut lines = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let top = path.split('/').next().unwrap_or_default().to_string();
        if !ADDED.contains(&top.as_str()) {
            continue;
        }
        let header = entry.header().clone();
        let owner = format!("{}:{}", header.uid().unwrap(), header.gid().unwrap());
        let mode = format!("{:04o}", header.mode().unwrap() & 0o7777);
        let line = if header.entry_type().is_dir() {
            format!("{path} d {mode} {owner}")
        } else {
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            let digest = &hex::encode(Sha256::digest(&content))[..16];
            format!("{path} f {mode} {owner} {} {} {digest}", content.len(), header.mtime().unwrap())
        };
        lines.push(line);
    }
    lines.sort();
    lines.join("\n") + "\n"
}

fn project_with_server() -> (Project, FileServer) {
    let project = Project::new();
    let files = project.out("files");
    copy_tree(&fixture("http-add/files"), &files);
    let server = FileServer::start(files);
    project.dockerfile(&dockerfile(&server));
    (project, server)
}

#[test]
fn add_from_urls_gives_buildkits_files() {
    let (project, server) = project_with_server();
    let tar = project.out("rootfs.tar");
    let output = format!("type=tar,dest={}", tar.display());
    project.build(&["--build-context", &busybox_context(), "-o", &output]).ok();
    let expected = fs::read_to_string(fixture("http-add/expected.txt")).unwrap();
    assert_eq!(listing(&tar), expected);
    // `cache du` shows each download as BuildKit's `du` does.
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    let description = format!("http url {}", server.url("/pkg.tar.gz"));
    let record =
        usage.split("\n\n").find(|record| record.contains(&description)).unwrap_or_else(|| panic!("no `{description}` in\n{usage}"));
    assert!(record.lines().any(|line| line.split_whitespace().eq(["Type:", "regular"])), "{record}");
}

/// The same as an unprivileged user: the download runs in rbuild's user namespace, the files
/// keep the owners the image gives them.
#[test]
fn add_from_urls_rootless() {
    let (project, _server) = project_with_server();
    let layout = project.out("busybox-layout");
    copy_tree(&busybox_layout(), &layout);
    give_to_test_user(&project);
    let tar = project.out("rootfs.tar");
    let output = format!("type=tar,dest={}", tar.display());
    let busybox = context_arg("busybox", &layout, BUSYBOX_TAG);
    run_command(as_test_user(&project.build_command(&["--build-context", &busybox, "-o", &output])), None).ok();
    let expected = fs::read_to_string(fixture("http-add/expected.txt")).unwrap();
    assert_eq!(listing(&tar), expected);
}

/// A second build asks the server with `If-None-Match` (a `HEAD`, as BuildKit) and downloads
/// nothing; a changed file is downloaded again and the steps after it run.
#[test]
fn an_unchanged_url_is_revalidated_and_a_changed_one_fetched() {
    let project = Project::new();
    let files = project.out("files");
    copy_tree(&fixture("http-add/files"), &files);
    let server = FileServer::start(files.clone());
    let url = server.url("/dir/file.txt");
    project.dockerfile(&format!("FROM busybox\nADD {url} /a/\nRUN cat /a/file.txt > /copy\n"));
    let local = project.out("out");
    let output = format!("type=local,dest={}", local.display());
    let build = || project.build(&["--build-context", &busybox_context(), "-o", &output]).ok();

    build();
    assert_eq!(server.take_log(), ["GET /dir/file.txt"]);
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(b"hello http\n"))[..16]);

    let second = build();
    assert_eq!(server.take_log(), [format!("HEAD /dir/file.txt {etag}")]);
    // The download's vertex shows its revalidation as done (as BuildKit's http source does),
    // the copy and the RUN after it are cached.
    let mut adds: Vec<String> = second.steps().into_iter().filter(|(name, _)| name.contains("ADD")).map(|(_, outcome)| outcome).collect();
    adds.sort();
    assert_eq!(adds, ["CACHED", "DONE"], "{}", second.stderr);
    assert_eq!(second.step("RUN cat"), "CACHED", "{}", second.stderr);

    fs::write(files.join("dir/file.txt"), "changed\n").unwrap();
    let third = build();
    assert_eq!(server.take_log(), [format!("HEAD /dir/file.txt {etag}"), "GET /dir/file.txt".to_string()]);
    assert_eq!(fs::read_to_string(local.join("copy")).unwrap(), "changed\n");
    assert_eq!(third.step("RUN cat"), "DONE", "{}", third.stderr);
}

/// A server without `ETag`s is asked with `If-Modified-Since` (BuildKit downloads again).
#[test]
fn a_url_without_etag_is_revalidated_by_date() {
    let (project, server) = project_with_server();
    project.dockerfile(&format!("FROM busybox\nADD {} /a/\n", server.url("/noetag/dir/file.txt")));
    project.build(&["--build-context", &busybox_context()]).ok();
    assert_eq!(server.take_log(), ["GET /noetag/dir/file.txt"]);
    project.build(&["--build-context", &busybox_context()]).ok();
    assert_eq!(server.take_log(), [format!("HEAD /noetag/dir/file.txt {LAST_MODIFIED}")]);
}

/// An http(s) URL as the build context (BuildKit's remote build context): an archive is the
/// context (and `-f` a path in it), anything else the Dockerfile with an empty context; a git
/// URL is refused for now; a missing one says so.
#[test]
fn a_url_context_is_an_archive_or_a_dockerfile() {
    let (project, server) = project_with_server();
    let files = project.out("files");
    let archive = fs::File::create(files.join("ctx.tar.gz")).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(archive, flate2::Compression::default()));
    for (name, content) in [
        ("Dockerfile", "FROM busybox\nCOPY hello.txt /hello.txt\n"),
        ("sub/Other", "FROM busybox\nCOPY hello.txt /other.txt\n"),
        ("hello.txt", "hi from tar\n"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, content.as_bytes()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
    fs::write(files.join("Dockerfile.txt"), "FROM busybox\nRUN echo plain > /plain\n").unwrap();

    let root = project.root();
    let busybox = busybox_context();
    let build = |url: String, extra: &[&str], out: &str| {
        let output = format!("type=local,dest={}", project.out(out).display());
        let mut args = vec!["build", "--root", root.to_str().unwrap(), "--progress=plain", "--build-context", &busybox, "-o", &output];
        args.extend_from_slice(extra);
        args.push(&url);
        run_command(project.command(&args), None)
    };
    let run = build(server.url("/ctx.tar.gz"), &[], "from-archive").ok();
    assert_eq!(fs::read_to_string(project.out("from-archive").join("hello.txt")).unwrap(), "hi from tar\n");
    let names: Vec<String> = run.steps().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names[..2], ["[internal] load remote build context".to_string(), "copy /context /".to_string()], "{names:?}");
    build(server.url("/ctx.tar.gz"), &["-f", "sub/Other"], "other").ok();
    assert_eq!(fs::read_to_string(project.out("other").join("other.txt")).unwrap(), "hi from tar\n");
    build(server.url("/Dockerfile.txt"), &[], "from-dockerfile").ok();
    assert_eq!(fs::read_to_string(project.out("from-dockerfile").join("plain")).unwrap(), "plain\n");

    let missing = server.url("/missing.tar");
    // Like a missing local context, a context that cannot be had stops the build before it starts.
    build(missing.clone(), &[], "x")
        .fails(2)
        .stderr_has(&format!("failed to read downloaded context: `{missing}`: invalid response status 404"));
    // A URL whose path ends in `.git` is a git repository (buildx's rule), fetched as one: this
    // server speaks no git.
    build(server.url("/repo.git#main"), &[], "x").fails(1).stderr_has(&format!(
        "ERROR: failed to solve: failed to read dockerfile: failed to load cache key: failed to fetch remote `{}`",
        server.url("/repo.git")
    ));
}

/// `--build-context NAME=URL`: as in BuildKit (measured with the oracle), the downloaded file
/// itself, named `context`, 0600, never unpacked, in `COPY --from` and `FROM`.
#[test]
fn a_named_url_context_is_the_file_named_context() {
    let (project, server) = project_with_server();
    let context = format!("other={}", server.url("/pkg.tar.gz"));
    project.dockerfile("FROM busybox AS copied\nCOPY --from=other / /x/\nFROM other AS bare\n");
    let tar = project.out("copied.tar");
    let output = format!("type=tar,dest={}", tar.display());
    project.build(&["--build-context", &busybox_context(), "--build-context", &context, "--target", "copied", "-o", &output]).ok();
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    let entry = archive.entries().unwrap().map(Result::unwrap).find(|entry| entry.path().unwrap().to_str() == Some("x/context"));
    let header = entry.expect("x/context in the image").header().clone();
    assert_eq!((header.mode().unwrap() & 0o7777, header.mtime().unwrap(), header.size().unwrap()), (0o600, 1_700_000_000, 146));
    let bare = project.out("bare");
    let output = format!("type=local,dest={}", bare.display());
    project.build(&["--build-context", &busybox_context(), "--build-context", &context, "--target", "bare", "-o", &output]).ok();
    let names: Vec<String> = fs::read_dir(&bare).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["context"]);
}

/// Failures say what BuildKit says, at the Dockerfile line.
#[test]
fn bad_urls_and_checksums_fail_with_buildkits_words() {
    let (project, server) = project_with_server();
    let zeros = format!("sha256:{}", "0".repeat(64));
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(b"hello http\n")));
    let cases = [
        (format!("ADD {} /x/", server.url("/missing.txt")), format!("`{}`: invalid response status 404", server.url("/missing.txt"))),
        (format!("ADD --checksum={zeros} {} /x/", server.url("/dir/file.txt")), format!("digest mismatch {actual}: {zeros}")),
        (format!("ADD --checksum=sha256:abc {} /x/", server.url("/dir/file.txt")), "invalid checksum digest length".to_string()),
        (format!("ADD --checksum=md5:abc {} /x/", server.url("/dir/file.txt")), "unsupported digest algorithm".to_string()),
        (format!("ADD --checksum={zeros} Dockerfile /x/"), "checksum requires HTTP(S) or Git sources".to_string()),
        ("ADD http://127.0.0.1:1/x.txt /x/".to_string(), "failed to connect to `http://127.0.0.1:1/x.txt`: connection refused".to_string()),
    ];
    for (line, message) in cases {
        project.dockerfile(&format!("FROM busybox\n{line}\n"));
        let run = project.build(&["--build-context", &busybox_context()]).fails(1);
        run.stderr_has(&format!("ERROR: failed to solve: {message}\n"));
        run.stderr_has("Dockerfile:2\n");
    }
}

/// Records BuildKit's result for [`add_from_urls_gives_buildkits_files`].
#[test]
#[ignore = "needs the oracle (RBUILD_ORACLE) started with a mirror serving busybox"]
fn record() {
    let oracle = std::env::var("RBUILD_ORACLE").expect("RBUILD_ORACLE names the oracle script");
    let (project, _server) = project_with_server();
    let tar = project.out("buildkit.tar");
    let output = format!("type=tar,dest={}", tar.display());
    let mut command = std::process::Command::new(oracle);
    command.args(["build", "--progress=plain", "-o", &output]).arg(project.ctx());
    run_command(command, None).ok();
    fs::write(fixture("http-add/expected.txt"), listing(&tar)).unwrap();
}
