//! Pulling base images from a real registry: Debian's `docker-registry` (the CNCF distribution
//! registry) on 127.0.0.1, filled with `skopeo copy` from the busybox test image, reached through
//! a `docker.io` mirror entry so that `FROM busybox` works unchanged.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::images::{BUSYBOX_TAG, DEBIAN_TAG, busybox_layout, debian_layout};
use crate::support::*;

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

/// A registry process on a free port, killed on drop. Its access log (one line per request,
/// `"GET /v2/.../blobs/sha256:... HTTP/1.1" 200`) is kept in a file.
pub(crate) struct Registry {
    child: Child,
    port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    directory: tempfile::TempDir,
}

impl Registry {
    pub(crate) fn start() -> Registry {
        Registry::start_with("")
    }

    /// With extra configuration (`tls:` under `http:`, `auth:`), given as YAML lines.
    pub(crate) fn start_with(extra: &str) -> Registry {
        assert!(
            std::path::Path::new(REGISTRY_BINARY).exists(),
            "{REGISTRY_BINARY} is missing: install Debian's docker-registry package (.ci/run does)"
        );
        let directory = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            directory.path().join("storage").display()
        );
        let config_path = directory.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = directory.path().join("access.log");
        let child = Registry::spawn(&config_path, &log_path, port);
        Registry { child, port, config_path, log_path, directory }
    }

    fn spawn(config_path: &std::path::Path, log_path: &std::path::Path, port: u16) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).unwrap();
        let mut child =
            Command::new(REGISTRY_BINARY).arg("serve").arg(config_path).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        for _ in 0..400 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the registry on port {port} did not start: {}", std::fs::read_to_string(log_path).unwrap_or_default());
    }

    /// Starts the stopped registry again, on the same port with the same storage.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.child = Registry::spawn(&self.config_path, &self.log_path, self.port);
    }

    /// Where the registry keeps blob `digest` (`sha256:...`) on disk.
    pub(crate) fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.directory.path().join(format!("storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// The digests of the blobs served with `GET .../blobs/DIGEST` since the log was cleared.
    pub(crate) fn blob_gets(&self) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut digests = Vec::new();
        for line in log.lines() {
            let Some(start) = line.find("\"GET /v2/") else { continue };
            let request = &line[start..];
            if let Some(at) = request.find("/blobs/sha256:") {
                let digest: String = request[at + "/blobs/".len()..].chars().take(71).collect();
                digests.push(digest);
            }
        }
        digests
    }

    /// Access-log lines of the requests whose request line starts with `prefix`
    /// (`PATCH /v2/a/`).
    pub(crate) fn requests(&self, prefix: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        log.lines().filter(|line| line.contains(&format!("\"{prefix}"))).map(str::to_string).collect()
    }

    pub(crate) fn clear_log(&self) {
        std::fs::OpenOptions::new().write(true).truncate(true).open(&self.log_path).unwrap();
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the busybox test image as `library/busybox:latest`.
    pub(crate) fn push_busybox(&self) {
        self.push_busybox_with(&[]);
    }

    fn push_busybox_with(&self, extra: &[&str]) {
        require_tool("skopeo");
        let source = format!("oci:{}:{BUSYBOX_TAG}", busybox_layout().display());
        let destination = format!("docker://{}/library/busybox:latest", self.host());
        let mut arguments = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        arguments.extend_from_slice(extra);
        arguments.push(&source);
        arguments.push(&destination);
        tool("skopeo", &arguments);
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A config.toml sending docker.io to the registry as a mirror, over plain http.
pub(crate) fn mirror_config(project: &Project, registry: &Registry) -> PathBuf {
    let path = project.dir().join("config.toml");
    let host = registry.host();
    std::fs::write(&path, format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n\n[registry.\"{host}\"]\nhttp = true\n")).unwrap();
    path
}

#[test]
fn from_busybox_pulls_through_a_mirror_then_builds_offline() {
    let mut registry = Registry::start();
    registry.push_busybox();
    let project = Project::new();
    let config = mirror_config(&project, &registry);
    let config = config.to_str().unwrap();
    project.dockerfile("FROM busybox\nRUN echo pulled > /x\n");

    let first = project.build(&["--config", config, "-o", "type=local,dest=out"]).ok();
    let from = first.step("FROM docker.io/library/busybox:latest@sha256:");
    assert!(from.contains("DONE"), "FROM was not pulled: {from}");
    assert_eq!(std::fs::read_to_string(project.out("out").join("x")).unwrap(), "pulled\n");
    assert!(project.out("out").join("bin/busybox").exists(), "the base image's files are in the result");

    // Pulled images stay: the registry is gone and the same build is all CACHED.
    registry.stop();
    let offline = project.build(&["--config", config]).ok();
    for (name, status) in offline.steps() {
        if !name.contains("[internal]") {
            assert!(status.contains("CACHED"), "{name}: {status}");
        }
    }
    // As BuildKit's FROM (testdata/progress/failed-unrun): what the tag resolved to, then CACHED.
    let resolve = offline
        .stderr
        .lines()
        .find(|line| line.contains(" resolve docker.io/library/busybox:latest@sha256:"))
        .unwrap_or_else(|| panic!("no resolve line\n{}", offline.stderr));
    assert!(resolve.starts_with('#') && resolve.ends_with(" done"), "{resolve}");
    // `cache prune` without `-a` keeps the base image whole, its manifest and config included
    // (it removed them, and the next build needed the registry).
    project.cache(&["prune", "-f"]).ok();
    // A new RUN on the cached base works offline too.
    project.dockerfile("FROM busybox\nRUN echo offline > /y\n");
    project.build(&["--config", config, "-o", "type=local,dest=out2"]).ok();
    assert_eq!(std::fs::read_to_string(project.out("out2").join("y")).unwrap(), "offline\n");

    // `--pull` resolves again: with the registry down, that fails with a clear error.
    let failed = project.build(&["--config", config, "--pull"]).fails(1);
    failed.stderr_has("failed to resolve source metadata for docker.io/library/busybox:latest");

    // `-a` removes the base image too: now the registry is needed.
    project.cache(&["prune", "-a", "-f"]).ok();
    project.build(&["--config", config]).fails(1).stderr_has("failed to resolve source metadata for docker.io/library/busybox:latest");
}

/// `--build-context NAME=docker-image://REF` (buildx): the image stands in for `FROM NAME`,
/// `COPY --from=NAME` and `RUN --mount=from=NAME`, with BuildKit's progress names (recorded from
/// the oracle for this Dockerfile: `[context base] load metadata for busybox`, `[first 1/2] RUN
/// ...`) and its errors for a missing tag and an upper-case name.
#[test]
fn docker_image_build_contexts_come_from_the_registry() {
    let registry = Registry::start();
    registry.push_busybox();
    let project = Project::new();
    let config = mirror_config(&project, &registry);
    let config = config.to_str().unwrap();
    project.dockerfile(
        "FROM base AS first\nRUN --mount=from=other,target=/o ls /o/bin/busybox > /listed\n\
         FROM scratch\nCOPY --from=first /listed /listed\nCOPY --from=other /bin/busybox /bb\n",
    );
    let contexts =
        ["--build-context", "base=docker-image://busybox", "--build-context", "other=docker-image://docker.io/library/busybox:latest"];
    let mut args = vec!["--config", config, "-o", "type=local,dest=out"];
    args.extend(contexts);
    let run = project.build(&args).ok();
    assert_eq!(std::fs::read_to_string(project.out("out").join("listed")).unwrap(), "/o/bin/busybox\n");
    assert!(project.out("out").join("bb").is_file());
    let names: Vec<String> = run.steps().into_iter().map(|(name, _)| name).collect();
    for expected in ["[context base] load metadata for busybox", "[first 1/2] RUN --mount=from=other,target=/o ls /o/bin/busybox > /listed"]
    {
        assert!(names.iter().any(|name| name == expected), "no step `{expected}` in {names:?}");
    }

    project.dockerfile("FROM base\n");
    for (reference, message) in [
        (
            "busybox:nosuch",
            "failed to resolve source metadata for docker.io/library/busybox:nosuch: docker.io/library/busybox:nosuch: not found",
        ),
        ("UPPER", "invalid reference format: repository name (library/UPPER) must be lowercase"),
    ] {
        let context = format!("base=docker-image://{reference}");
        let failed = project.build(&["--config", config, "--build-context", &context]).fails(1);
        failed.stderr_has(&format!("ERROR: failed to solve: {message}\n"));
    }
}

#[test]
fn a_missing_image_is_named() {
    let registry = Registry::start();
    let project = Project::new();
    let config = mirror_config(&project, &registry);
    project.dockerfile(&format!("FROM {}/library/nosuchimage:1.0\n", registry.host()));
    let failed = project.build(&["--config", config.to_str().unwrap()]).fails(1);
    failed.stderr_has(&format!("{}/library/nosuchimage:1.0: not found", registry.host()));
    failed.stderr_has("Dockerfile:1");
}

/// `--push -t` and `-o type=registry,name=`: the image lands in the registry, `skopeo` reads it
/// back with the digest `--metadata-file` recorded; a second push uploads nothing new.
#[test]
fn push_lands_in_the_registry_with_the_recorded_digest() {
    let registry = Registry::start();
    registry.push_busybox();
    let project = Project::new();
    let config = mirror_config(&project, &registry);
    let config = config.to_str().unwrap();
    project.write("hello.txt", "pushed by rbuild\n").dockerfile("FROM busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /copy\n");
    let name = format!("{}/team/app:1", registry.host());
    let metadata = project.out("metadata.json");
    project.build(&["--config", config, "--push", "-t", &name, "--metadata-file", metadata.to_str().unwrap()]).ok();
    let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
    let digest = recorded["containerimage.digest"].as_str().unwrap().to_string();
    assert_eq!(recorded["image.name"].as_str(), Some(name.as_str()));
    let inspected: serde_json::Value =
        serde_json::from_str(&tool("skopeo", &["inspect", "--tls-verify=false", &format!("docker://{name}")])).unwrap();
    assert_eq!(inspected["Digest"].as_str(), Some(digest.as_str()));
    // Pulled back, the image has the file.
    let layout = project.out("pulled");
    tool("skopeo", &["copy", "--quiet", "--src-tls-verify=false", &format!("docker://{name}"), &format!("oci:{}:app", layout.display())]);
    let unpacked = project.out("unpacked");
    tool("umoci", &["unpack", "--rootless", "--image", &format!("{}:app", layout.display()), unpacked.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(unpacked.join("rootfs/copy")).unwrap(), "pushed by rbuild\n");

    // Another name through `-o type=registry`: same digest (blobs mounted or already there).
    let second = format!("{}/team/other:2", registry.host());
    project.build(&["--config", config, "-o", &format!("type=registry,name={second}")]).ok();
    let inspected: serde_json::Value =
        serde_json::from_str(&tool("skopeo", &["inspect", "--tls-verify=false", &format!("docker://{second}")])).unwrap();
    assert_eq!(inspected["Digest"].as_str(), Some(digest.as_str()));

    // A base pulled from the same registry: its layers are mounted into the new repository.
    project.dockerfile(&format!("FROM {}/library/busybox:latest\nCOPY hello.txt /hello.txt\n", registry.host()));
    let mounted = format!("{}/team/mounted:1", registry.host());
    project.build(&["--config", config, "--push", "-t", &mounted]).ok();
    let inspected: serde_json::Value =
        serde_json::from_str(&tool("skopeo", &["inspect", "--tls-verify=false", &format!("docker://{mounted}")])).unwrap();
    assert!(inspected["Layers"].as_array().is_some_and(|layers| layers.len() >= 2), "{inspected}");
}

/// A TLS registry with a self-signed CA (given with `ca=`) and htpasswd basic auth, the
/// credentials from a docker config.json: the pull works; wrong credentials give a clear error.
#[test]
fn tls_registry_with_basic_auth_and_credentials_from_docker_config() {
    require_tool("openssl");
    require_tool("htpasswd");
    let project = Project::new();
    let pki = self_signed_pki(&project);
    let htpasswd = Command::new("htpasswd").args(["-Bbn", "alice", "wonderland"]).output().unwrap();
    assert!(htpasswd.status.success());
    std::fs::write(pki.join("htpasswd"), &htpasswd.stdout).unwrap();
    let registry = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: rbuild-e2e\n    path: {}\n",
        pki.join("server.pem").display(),
        pki.join("server.key").display(),
        pki.join("htpasswd").display()
    ));
    registry.push_busybox_with(&["--dest-creds", "alice:wonderland"]);
    let host = registry.host();
    let config = project.dir().join("config.toml");
    std::fs::write(&config, format!("[registry.\"{host}\"]\nhttp = false\nca = [\"{}\"]\n", pki.join("ca.pem").display())).unwrap();
    let docker_config = |user: &str, password: &str| {
        let directory = project.dir().join(format!("docker-{user}-{password}"));
        std::fs::create_dir_all(&directory).unwrap();
        let auth = base64_encode(format!("{user}:{password}").as_bytes());
        std::fs::write(directory.join("config.json"), format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}")).unwrap();
        directory
    };
    project.dockerfile(&format!("FROM {host}/library/busybox:latest\nRUN echo over-tls > /x\n"));
    let build = |docker: &std::path::Path, args: &[&str]| {
        let mut command = project.build_command(&[&["--config", config.to_str().unwrap()], args].concat());
        command.env("DOCKER_CONFIG", docker);
        run_command(command, None)
    };
    let good = docker_config("alice", "wonderland");
    build(&good, &["-o", "type=local,dest=out"]).ok();
    assert_eq!(std::fs::read_to_string(project.out("out").join("x")).unwrap(), "over-tls\n");
    let bad = docker_config("alice", "nope");
    let failed = build(&bad, &["--pull"]).fails(1);
    failed.stderr_has(&format!("pull access denied for {host}/library/busybox:latest"));
}

/// A CA (`ca.pem`) and a server certificate for 127.0.0.1 it signed (`server.pem`,
/// `server.key`), in `PROJECT/pki`.
pub(crate) fn self_signed_pki(project: &Project) -> PathBuf {
    require_tool("openssl");
    let pki = project.dir().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let openssl = |arguments: &[&str]| {
        let output = Command::new("openssl").args(arguments).current_dir(&pki).output().unwrap();
        assert!(output.status.success(), "openssl {arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rbuild e2e ca",
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(pki.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    pki
}

/// Issue 10, point 2: a registry that cannot be reached says why, with the config key that
/// fixes it: HTTPS to a plain-HTTP registry, plain HTTP to an HTTPS one, a CA nobody trusts, a
/// closed port, a host that does not exist. Behind a docker.io mirror, a tag the mirror lacks is
/// the mirror's "not found" (as BuildKit says), not a failure to reach Docker Hub.
#[test]
fn registry_errors_say_why_and_name_the_key() {
    let project = Project::new();
    let config = project.dir().join("config.toml");
    let build = |dockerfile: &str, config_text: &str| {
        std::fs::write(&config, config_text).unwrap();
        project.dockerfile(dockerfile);
        project.build(&["--config", config.to_str().unwrap()]).fails(1)
    };
    let in_config = format!("in `{}`", config.display());

    let plain = Registry::start();
    plain.push_busybox();
    let host = plain.host();
    build(&format!("FROM {host}/library/busybox\n"), &format!("[registry.\"{host}\"]\nhttp = false\n")).stderr_has(&format!(
        "failed to connect to registry `{host}` for {host}/library/busybox:latest: server gave HTTP response to HTTPS client; set `http = true` under `[registry.\"{host}\"]` {in_config}"
    ));

    let pki = self_signed_pki(&project);
    let tls = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        pki.join("server.pem").display(),
        pki.join("server.key").display()
    ));
    let tls_host = tls.host();
    build(&format!("FROM {tls_host}/library/busybox\n"), &format!("[registry.\"{tls_host}\"]\nhttp = false\n")).stderr_has(&format!(
        "failed to connect to registry `{tls_host}` for {tls_host}/library/busybox:latest: certificate signed by unknown authority; set `ca = [\"/path/to/ca.pem\"]` under `[registry.\"{tls_host}\"]` {in_config} (or `insecure = true` to skip verification)"
    ));
    // Localhost is plain HTTP unless configured; the HTTPS registry answers 400.
    build(&format!("FROM {tls_host}/library/busybox\n"), "").stderr_has(&format!(
        "unexpected status `400` from registry `{tls_host}` for {tls_host}/library/busybox:latest (plain HTTP was used; if `{tls_host}` speaks HTTPS, set `http = false` under `[registry.\"{tls_host}\"]` {in_config})"
    ));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    build(&format!("FROM 127.0.0.1:{closed}/app\n"), "")
        .stderr_has(&format!("failed to connect to registry `127.0.0.1:{closed}` for 127.0.0.1:{closed}/app:latest: connection refused"));
    build("FROM no-such-host.invalid/app\n", "").stderr_has("for no-such-host.invalid/app:latest: no such host `no-such-host.invalid`");

    let mirror = format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n[registry.\"{host}\"]\nhttp = true\n");
    let failed = build("FROM busybox:nosuchtag\n", &mirror);
    failed.stderr_has("ERROR: failed to solve: failed to resolve source metadata for docker.io/library/busybox:nosuchtag: docker.io/library/busybox:nosuchtag: not found");
    failed.stderr_lacks("failed to connect");
    // A mistyped stage name in COPY --from is taken for an image, and is not found the same way.
    let failed = build("FROM busybox\nCOPY --from=buidler /x /\n", &mirror);
    failed.stderr_has("docker.io/library/buidler:latest: not found").stderr_lacks("failed to connect");
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let value = chunk.iter().enumerate().fold(0u32, |value, (index, byte)| value | (u32::from(*byte) << (16 - 8 * index)));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(TABLE[(value >> (18 - 6 * index) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `FROM debian:bookworm` through the docker.io mirror: a realistic base (the debootstrap test
/// image, pushed by skopeo) is pulled, and a RUN uses its tools.
#[test]
fn from_debian_pulls_through_a_mirror() {
    let registry = Registry::start();
    require_tool("skopeo");
    let source = format!("oci:{}:{DEBIAN_TAG}", debian_layout().display());
    let destination = format!("docker://{}/library/debian:{DEBIAN_TAG}", registry.host());
    tool("skopeo", &["copy", "--quiet", "--dest-tls-verify=false", &source, &destination]);
    let project = Project::new();
    let config = mirror_config(&project, &registry);
    project.dockerfile(&format!(
        "FROM debian:{DEBIAN_TAG}\nRUN cat /etc/debian_version > /version && dpkg-query -W -f '${{Package}}\\n' bash > /bash\n"
    ));
    let run = project.build(&["--config", config.to_str().unwrap(), "-o", "type=local,dest=out"]).ok();
    assert!(run.step(&format!("FROM docker.io/library/debian:{DEBIAN_TAG}@sha256:")).contains("DONE"));
    let out = project.out("out");
    assert!(std::fs::read_to_string(out.join("version")).unwrap().starts_with("12"), "a Debian 12 root filesystem");
    assert_eq!(std::fs::read_to_string(out.join("bash")).unwrap(), "bash\n");
}

/// Issue 9, point 5: SIGTERM (or Ctrl-C) ends a build whose base image resolve waits on a
/// registry that accepted the connection and says nothing (it was ignored until the read
/// timed out): exit 130 within a second or two.
#[test]
fn sigterm_cancels_a_resolve_stalled_on_a_silent_registry() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let project = Project::new();
    let config = project.dir().join("config.toml");
    let host = format!("127.0.0.1:{port}");
    std::fs::write(&config, format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n\n[registry.\"{host}\"]\nhttp = true\n")).unwrap();
    project.dockerfile("FROM busybox\nRUN true\n");
    let mut build = project
        .build_command(&["--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The resolve reaches the silent registry within milliseconds; then it waits.
    std::thread::sleep(Duration::from_millis(1000));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(build.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let signaled = std::time::Instant::now();
    let status = build.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(build.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(signaled.elapsed() < Duration::from_secs(5), "took {:?} after SIGTERM\n{stderr}", signaled.elapsed());
    assert_eq!(status.code(), Some(130), "{stderr}");
}
