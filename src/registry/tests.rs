//! End-to-end tests of the client against real registries: Debian's distribution registry
//! (`/usr/bin/docker-registry`) on 127.0.0.1, filled with `skopeo copy`, plain HTTP and TLS with
//! htpasswd; plus a scripted HTTP server for what a real registry will not do on demand
//! (bearer tokens, 503s, broken streams, tampered bytes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::manifest::sha256_digest;
use super::*;

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_total_delay: Duration::from_secs(2),
        ..RetryPolicy::default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A distribution registry process, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
    _directory: tempfile::TempDir,
}

struct Tls {
    certificate: PathBuf,
    key: PathBuf,
}

impl Registry {
    fn start(tls: Option<&Tls>, htpasswd: Option<&Path>) -> Registry {
        let directory = tempfile::tempdir().unwrap();
        let storage = directory.path().join("storage");
        let port = free_port();
        // The access log (on stdout) lets tests count the requests the registry served.
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some(tls) = tls {
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.certificate.display(),
                tls.key.display()
            );
        }
        if let Some(htpasswd) = htpasswd {
            config += &format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = directory.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let access_log = std::fs::File::create(directory.path().join("access.log")).unwrap();
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdout(access_log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            port,
            storage,
            _directory: directory,
        };
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return registry;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("registry on port {port} did not start");
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Access-log lines of requests whose request line starts with `prefix` (`PATCH /v2/a/`).
    fn requests(&self, prefix: &str) -> Vec<String> {
        let log = std::fs::read_to_string(self.storage.with_file_name("access.log")).unwrap();
        log.lines()
            .filter(|line| line.contains(&format!("\"{prefix}")))
            .map(str::to_string)
            .collect()
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage
            .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test image in an OCI layout: per platform a one-file layer, a config and a manifest,
/// under an index tagged `multi`; the amd64 manifest alone is also tagged `single`.
struct Image {
    layout: tempfile::TempDir,
    index_digest: String,
    /// (architecture, manifest digest, config digest, layer digest, layer size)
    platforms: Vec<(String, String, String, String, u64)>,
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
        bytes,
    )
    .unwrap();
    digest
}

fn make_image() -> Image {
    let layout = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(layout.path().join("blobs/sha256")).unwrap();
    std::fs::write(layout.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut platforms = Vec::new();
    let mut entries = Vec::new();
    for architecture in ["amd64", "arm64"] {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("hello"),
            format!("hello from {architecture}\n").repeat(2000),
        )
        .unwrap();
        let tarball = layout.path().join("layer.tar.gz");
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(root.path())
            .arg("hello")
            .status()
            .unwrap();
        assert!(status.success());
        let layer = std::fs::read(&tarball).unwrap();
        std::fs::remove_file(&tarball).unwrap();
        let layer_digest = write_blob(layout.path(), &layer);
        let config = format!(
            r#"{{"architecture":"{architecture}","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{}"]}},"config":{{}}}}"#,
            "0".repeat(64)
        );
        let config_digest = write_blob(layout.path(), config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{}}}]}}"#,
            config.len(),
            layer.len()
        );
        let manifest_digest = write_blob(layout.path(), manifest.as_bytes());
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"platform":{{"architecture":"{architecture}","os":"linux"{}}}}}"#,
            manifest.len(),
            if architecture == "arm64" { r#","variant":"v8""# } else { "" }
        ));
        platforms.push((
            architecture.to_string(),
            manifest_digest,
            config_digest,
            layer_digest,
            layer.len() as u64,
        ));
    }
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    let index_digest = write_blob(layout.path(), index.as_bytes());
    let amd64 = &platforms[0];
    let amd64_size = std::fs::metadata(
        layout
            .path()
            .join("blobs/sha256")
            .join(amd64.1.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
    .len();
    let top = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{index_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{amd64_size},"annotations":{{"org.opencontainers.image.ref.name":"single"}}}}]}}"#,
        index.len(),
        amd64.1
    );
    std::fs::write(layout.path().join("index.json"), top).unwrap();
    Image {
        layout,
        index_digest,
        platforms,
    }
}

fn push(image: &Image, tag: &str, destination: &str, credentials: Option<&str>) {
    let mut command = Command::new("skopeo");
    command.args([
        "copy",
        "--quiet",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ]);
    if let Some(credentials) = credentials {
        command.arg("--dest-creds").arg(credentials);
    }
    let output = command
        .arg(format!("oci:{}:{tag}", image.layout.path().display()))
        .arg(format!("docker://{destination}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn config_from(text: &str) -> RegistryConfig {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    RegistryConfig::load(Some(&path)).unwrap()
}

/// The blob's bytes and every `progress(done, total)` call.
type Fetched = (Vec<u8>, Vec<(u64, u64)>);

fn fetch(client: &Client, reference: &Reference, digest: &str, size: Option<u64>) -> Result<Fetched, RegistryError> {
    let mut out = Vec::new();
    let mut calls = Vec::new();
    client.fetch_blob(reference, digest, size, &mut out, &mut |done, total| {
        calls.push((done, total))
    })?;
    Ok((out, calls))
}

#[test]
fn resolves_through_a_mirror_and_by_digest_and_fetches_blobs() {
    let registry = Registry::start(None, None);
    let image = make_image();
    push(
        &image,
        "multi",
        &format!("{}/library/busybox:t1", registry.host()),
        None,
    );
    push(
        &image,
        "single",
        &format!("{}/library/busybox:single", registry.host()),
        None,
    );
    let host = registry.host();
    let config = config_from(&format!(
        "[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n[registry.\"{host}\"]\nhttp = true\n"
    ));
    let client = Client::new(config, Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());

    // By tag, through the docker.io mirror, for both platforms.
    let reference = Reference::parse("busybox:t1").unwrap();
    for (architecture, manifest_digest, config_digest, layer_digest, layer_size) in &image.platforms {
        let resolved = client.resolve(&reference, "linux", architecture, None).unwrap();
        assert_eq!(
            resolved.reference.to_string(),
            format!("docker.io/library/busybox:t1@{}", image.index_digest)
        );
        assert_eq!(&resolved.manifest_digest, manifest_digest);
        assert_eq!(sha256_digest(&resolved.manifest), *manifest_digest);
        assert_eq!(resolved.manifest_media_type, OCI_MANIFEST);
        assert_eq!(&resolved.config_digest, config_digest);
        assert_eq!(sha256_digest(&resolved.config), *config_digest);
        assert_eq!(
            resolved.layers,
            [LayerDescriptor {
                digest: layer_digest.clone(),
                size: *layer_size,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into()
            }]
        );

        // Every blob, checked against its digest, with progress up to the full size.
        for (digest, size) in [
            (config_digest, resolved.config.len() as u64),
            (layer_digest, *layer_size),
        ] {
            let (bytes, calls) = fetch(&client, &reference, digest, Some(size)).unwrap();
            assert_eq!(sha256_digest(&bytes), *digest);
            assert_eq!(calls.last(), Some(&(size, size)));
        }
    }
    let error = client
        .resolve(&reference, "linux", "s390x", None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "no match for platform `linux/s390x` in manifest of docker.io/library/busybox:t1@{}",
            image.index_digest
        )
    );

    // By digest, directly at the host (plain HTTP is the default for 127.0.0.1).
    let direct = Client::new(RegistryConfig::default(), Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());
    let by_digest = Reference::parse(&format!("{host}/library/busybox@{}", image.index_digest)).unwrap();
    let resolved = direct.resolve(&by_digest, "linux", "arm64", Some("v8")).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[1].1);
    assert_eq!(resolved.reference, by_digest);

    // A single-platform manifest: its digest is the reference's; the config decides the platform.
    let single = Reference::parse(&format!("{host}/library/busybox:single")).unwrap();
    let resolved = direct.resolve(&single, "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[0].1);
    assert_eq!(
        resolved.reference.digest.as_deref(),
        Some(image.platforms[0].1.as_str())
    );
    assert!(matches!(
        direct.resolve(&single, "linux", "arm64", None),
        Err(RegistryError::NoMatchingPlatform { .. })
    ));

    // Not found: a tag, a repository, a blob.
    let missing_tag = Reference::parse(&format!("{host}/library/busybox:nope")).unwrap();
    assert_eq!(
        direct
            .resolve(&missing_tag, "linux", "amd64", None)
            .unwrap_err()
            .to_string(),
        format!("{host}/library/busybox:nope: not found")
    );
    let missing_repository = Reference::parse(&format!("{host}/library/nothing")).unwrap();
    assert_eq!(
        direct
            .resolve(&missing_repository, "linux", "amd64", None)
            .unwrap_err()
            .to_string(),
        format!("{host}/library/nothing:latest: not found")
    );
    let absent = sha256_digest(b"absent");
    assert_eq!(
        fetch(&direct, &single, &absent, None).unwrap_err().to_string(),
        format!("{host}/library/busybox@{absent}: not found")
    );

    // A tampered blob in the registry's storage is rejected.
    let (_, _, _, layer_digest, layer_size) = &image.platforms[0];
    let data = registry.blob_data(layer_digest);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let error = fetch(&direct, &single, layer_digest, Some(*layer_size)).unwrap_err();
    assert!(
        matches!(&error, RegistryError::DigestMismatch { expected, actual, .. } if expected == layer_digest && *actual == sha256_digest(&bytes)),
        "{error}"
    );
    assert!(error.to_string().starts_with(&format!(
        "digest mismatch for {host}/library/busybox@{layer_digest}: expected"
    )));
}

#[test]
fn mirror_failure_falls_back_to_the_registry() {
    let registry = Registry::start(None, None);
    let image = make_image();
    push(&image, "multi", &format!("{}/library/app:v1", registry.host()), None);
    let dead = free_port();
    let host = registry.host();
    // The mirror refuses connections; the registry itself has the image.
    let config = config_from(&format!("[registry.\"{host}\"]\nmirrors = [\"127.0.0.1:{dead}\"]\n"));
    let client = Client::new(config, Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());
    let resolved = client
        .resolve(
            &Reference::parse(&format!("{host}/library/app:v1")).unwrap(),
            "linux",
            "amd64",
            None,
        )
        .unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[0].1);
    // Nothing anywhere: the first real error (the dead mirror) wins over "not found".
    let error = client
        .resolve(
            &Reference::parse(&format!("{host}/library/app:none")).unwrap(),
            "linux",
            "amd64",
            None,
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("failed to connect to registry `127.0.0.1:{dead}` for {host}/library/app:none")
    );
}

fn openssl(arguments: &[&str], directory: &Path) {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(directory)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn tls_registry_with_htpasswd_and_custom_ca() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path();
    openssl(
        &[
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
            "/CN=rbuild test ca",
        ],
        path,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        path,
    );
    std::fs::write(path.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        &[
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
        ],
        path,
    );
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "alice", "wonderland"])
        .output()
        .unwrap();
    assert!(htpasswd.status.success());
    std::fs::write(path.join("htpasswd"), &htpasswd.stdout).unwrap();

    let tls = Tls {
        certificate: path.join("server.pem"),
        key: path.join("server.key"),
    };
    let registry = Registry::start(Some(&tls), Some(&path.join("htpasswd")));
    let host = registry.host();
    let image = make_image();
    push(
        &image,
        "multi",
        &format!("{host}/team/app:v1"),
        Some("alice:wonderland"),
    );
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();
    let config_text = format!(
        "[registry.\"{host}\"]\nhttp = false\nca = [\"{}\"]\n",
        path.join("ca.pem").display()
    );

    // Right credentials, found through $DOCKER_CONFIG.
    let docker_config = path.join("docker");
    std::fs::create_dir(&docker_config).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:wonderland");
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    let environment = BTreeMap::from([("DOCKER_CONFIG", docker_config.clone()), ("HOME", path.join("home"))]);
    let credentials =
        Credentials::load_with(|name| environment.get(name).map(|value| value.clone().into_os_string())).unwrap();
    let client = Client::new(config_from(&config_text), credentials)
        .unwrap()
        .with_retry_policy(fast_retries());
    let resolved = client.resolve(&reference, "linux", "arm64", None).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[1].1);
    let (bytes, _) = fetch(
        &client,
        &reference,
        &resolved.layers[0].digest,
        Some(resolved.layers[0].size),
    )
    .unwrap();
    assert_eq!(sha256_digest(&bytes), resolved.layers[0].digest);

    // Pushing the arm64 image to another repository with the same credentials, then reading it.
    let pushed = Reference::parse(&format!("{host}/team/pushed:v1")).unwrap();
    let layout_blob =
        |digest: &str| std::fs::read(image.layout.path().join("blobs/sha256").join(&digest[7..])).unwrap();
    let push_one = |client: &Client, digest: &str| {
        let bytes = layout_blob(digest);
        client.push_blob(
            &pushed,
            digest,
            bytes.len() as u64,
            None,
            &mut || Ok(Box::new(std::io::Cursor::new(bytes.clone()))),
            &mut |_, _| {},
        )
    };
    let (_, manifest_digest, config_digest, layer_digest, _) = &image.platforms[1];
    assert!(push_one(&client, config_digest).unwrap());
    assert!(push_one(&client, layer_digest).unwrap());
    assert!(!push_one(&client, layer_digest).unwrap(), "already there");
    assert_eq!(
        client
            .push_manifest(&pushed, OCI_MANIFEST, &layout_blob(manifest_digest))
            .unwrap(),
        *manifest_digest
    );
    let resolved = client.resolve(&pushed, "linux", "arm64", None).unwrap();
    assert_eq!(&resolved.manifest_digest, manifest_digest);

    // Wrong credentials, and none.
    std::fs::write(
        docker_config.join("config.json"),
        r#"{"auths":{"HOST":{"username":"alice","password":"wrong"}}}"#.replace("HOST", &host),
    )
    .unwrap();
    let wrong = Credentials::from_files(&[docker_config.join("config.json")]).unwrap();
    let client = Client::new(config_from(&config_text), wrong)
        .unwrap()
        .with_retry_policy(fast_retries());
    let error = client
        .resolve(&reference, "linux", "arm64", None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("pull access denied for {host}/team/app:v1: authentication failed for `alice` at `{host}`")
    );
    let error = push_one(&client, config_digest).unwrap_err().to_string();
    assert_eq!(
        error,
        format!("push access denied for {host}/team/pushed:v1: authentication failed for `alice` at `{host}`")
    );
    let error = client
        .push_manifest(&pushed, OCI_MANIFEST, &layout_blob(manifest_digest))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("push access denied for {host}/team/pushed:v1: authentication failed for `alice` at `{host}`")
    );
    let client = Client::new(config_from(&config_text), Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());
    let error = client
        .resolve(&reference, "linux", "arm64", None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("pull access denied for {host}/team/app:v1: authentication required")
    );
    let error = push_one(&client, config_digest).unwrap_err().to_string();
    assert_eq!(
        error,
        format!("push access denied for {host}/team/pushed:v1: authentication required")
    );

    // Without the CA the certificate is not trusted; `insecure` skips verification.
    let client = Client::new(
        config_from(&format!("[registry.\"{host}\"]\nhttp = false\n")),
        Credentials::anonymous(),
    )
    .unwrap()
    .with_retry_policy(fast_retries());
    let error = client.resolve(&reference, "linux", "arm64", None).unwrap_err();
    assert!(matches!(error, RegistryError::Connect { .. }), "{error}");
    let insecure = Credentials::from_files(&[docker_config.join("config.json")]).unwrap();
    let client = Client::new(
        config_from(&format!("[registry.\"{host}\"]\nhttp = false\ninsecure = true\n")),
        insecure,
    )
    .unwrap()
    .with_retry_policy(fast_retries());
    assert!(
        matches!(
            client.resolve(&reference, "linux", "arm64", None),
            Err(RegistryError::AccessDenied { .. })
        ),
        "TLS passed, auth failed"
    );
}

/// A request as the scripted server sees it.
struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// What the handler wants written: status, headers, body, and how many body bytes to send
/// before closing the connection (to break a stream).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    cut_after: Option<usize>,
    /// Send the body a byte at a time, this far apart.
    drip: Option<Duration>,
    /// Say nothing for this long, then close.
    silent_for: Option<Duration>,
}

impl Answer {
    fn new(status: u16, body: &[u8]) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
            cut_after: None,
            drip: None,
            silent_for: None,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A one-connection-at-a-time HTTP/1.1 server on 127.0.0.1 running `handler` per request.
fn scripted_server(handler: impl Fn(&Request) -> Answer + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or_default().to_string();
            let path = parts.next().unwrap_or_default().to_string();
            let mut headers = BTreeMap::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
            let mut body = Vec::new();
            if let Some(length) = headers
                .get("content-length")
                .and_then(|value| value.parse::<usize>().ok())
            {
                body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
            }
            let answer = handler(&Request {
                method,
                path,
                headers,
                body,
            });
            if let Some(silence) = answer.silent_for {
                std::thread::sleep(silence);
                continue;
            }
            let mut head = format!(
                "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                answer.status,
                answer.body.len()
            );
            for (name, value) in &answer.headers {
                head += &format!("{name}: {value}\r\n");
            }
            head += "\r\n";
            let _ = stream.write_all(head.as_bytes());
            let body = &answer.body[..answer.cut_after.unwrap_or(answer.body.len())];
            match answer.drip {
                Some(pause) => {
                    let _ = stream.flush();
                    for byte in body {
                        if stream.write_all(std::slice::from_ref(byte)).and_then(|()| stream.flush()).is_err() {
                            break;
                        }
                        std::thread::sleep(pause);
                    }
                }
                None => {
                    let _ = stream.write_all(body);
                    let _ = stream.flush();
                }
            }
        }
    });
    port
}

#[test]
fn bearer_tokens_retries_and_resumed_streams() {
    let blob: Vec<u8> = (0..100_000u32).map(|value| (value % 251) as u8).collect();
    let digest = sha256_digest(&blob);
    let config_bytes = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = sha256_digest(&config_bytes);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{digest}","size":{}}}]}}"#,
        config_bytes.len(),
        blob.len()
    );
    let manifest_digest = sha256_digest(manifest.as_bytes());
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let blob_requests = Arc::new(AtomicUsize::new(0));
    let port_cell = Arc::new(Mutex::new(0u16));
    let server_log = log.clone();
    let server_port = port_cell.clone();
    let server_blob_requests = blob_requests.clone();
    let tampered_digest = sha256_digest(b"the real bytes");
    let server_tampered = tampered_digest.clone();
    let port = {
        let (blob, config_bytes, digest, manifest) =
            (blob.clone(), config_bytes.clone(), digest.clone(), manifest.clone());
        scripted_server(move |request| {
            let port = *server_port.lock().unwrap();
            server_log.lock().unwrap().push(format!(
                "{} {} {}",
                request.method,
                request.path,
                request.headers.get("range").map_or("", String::as_str)
            ));
            if request.path.starts_with("/token") {
                // Basic auth for bob:builder only.
                let expected = format!(
                    "Basic {}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:builder")
                );
                if request.headers.get("authorization") != Some(&expected)
                    || !request.path.contains("scope=repository%3Ateam%2Fapp%3Apull")
                {
                    return Answer::new(401, b"{}");
                }
                return Answer::new(200, br#"{"token":"good-token"}"#);
            }
            if request.headers.get("authorization").map(String::as_str) != Some("Bearer good-token") {
                return Answer::new(401, br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="scripted",scope="repository:team/app:pull""#),
            );
            }
            match (request.method.as_str(), request.path.as_str()) {
                ("HEAD", "/v2/team/app/manifests/v1") => {
                    Answer::new(200, b"").header("Docker-Content-Digest", &manifest_digest)
                }
                ("GET", path) if path == format!("/v2/team/app/manifests/{manifest_digest}") => {
                    Answer::new(200, manifest.as_bytes())
                        .header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
                }
                ("GET", path) if path == format!("/v2/team/app/blobs/{config_digest}") => {
                    Answer::new(200, &config_bytes)
                }
                ("GET", path) if path == format!("/v2/team/app/blobs/{digest}") => {
                    match server_blob_requests.fetch_add(1, Ordering::SeqCst) {
                        // A 503 with Retry-After, then a stream that breaks halfway, then the rest.
                        0 => Answer::new(503, b"").header("Retry-After", "0"),
                        1 => Answer {
                            cut_after: Some(blob.len() / 2),
                            ..Answer::new(200, &blob)
                        },
                        _ => {
                            let start: usize = request
                                .headers
                                .get("range")
                                .and_then(|range| range.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                                .unwrap_or(0);
                            Answer::new(206, &blob[start..]).header(
                                "Content-Range",
                                &format!("bytes {start}-{}/{}", blob.len() - 1, blob.len()),
                            )
                        }
                    }
                }
                ("GET", path) if path == format!("/v2/team/app/blobs/{server_tampered}") => {
                    Answer::new(200, b"the fake bytes")
                }
                _ => Answer::new(404, b""),
            }
        })
    };
    *port_cell.lock().unwrap() = port;
    let host = format!("127.0.0.1:{port}");
    let directory = tempfile::tempdir().unwrap();
    let auth_file = directory.path().join("auth.json");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{host}":{{"username":"bob","password":"builder"}}}}}}"#),
    )
    .unwrap();
    let client = Client::new(
        RegistryConfig::default(),
        Credentials::from_files(std::slice::from_ref(&auth_file)).unwrap(),
    )
    .unwrap()
    .with_retry_policy(fast_retries());
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();

    let resolved = client.resolve(&reference, "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest_digest, sha256_digest(manifest.as_bytes()));
    assert_eq!(resolved.manifest_media_type, DOCKER_MANIFEST);
    assert_eq!(resolved.config, config_bytes);
    assert_eq!(
        resolved.reference.digest.as_deref(),
        Some(resolved.manifest_digest.as_str())
    );

    let (bytes, calls) = fetch(&client, &reference, &digest, Some(blob.len() as u64)).unwrap();
    assert_eq!(bytes, blob, "resumed stream is the whole blob, once");
    assert_eq!(calls.last(), Some(&(blob.len() as u64, blob.len() as u64)));
    let requests = log.lock().unwrap().clone();
    let blob_log: Vec<_> = requests.iter().filter(|line| line.contains(&digest)).cloned().collect();
    assert_eq!(
        blob_log,
        [
            format!("GET /v2/team/app/blobs/{digest} "),
            format!("GET /v2/team/app/blobs/{digest} "),
            format!("GET /v2/team/app/blobs/{digest} bytes={}-", blob.len() / 2),
        ]
    );
    assert_eq!(
        requests.iter().filter(|line| line.starts_with("GET /token")).count(),
        1,
        "one token for the scope, cached"
    );
    assert!(
        requests
            .iter()
            .any(|line| line.starts_with("HEAD /v2/team/app/manifests/v1")),
        "tag resolved with HEAD"
    );
    assert!(
        !requests
            .iter()
            .any(|line| line.starts_with("GET /v2/team/app/manifests/v1")),
        "no GET by tag when HEAD gives the digest"
    );

    // Bytes that do not match their digest.
    let error = fetch(&client, &reference, &tampered_digest, None).unwrap_err();
    assert!(matches!(error, RegistryError::DigestMismatch { .. }), "{error}");

    // Wrong credentials at the token realm.
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{host}":{{"username":"bob","password":"nope"}}}}}}"#),
    )
    .unwrap();
    let client = Client::new(
        RegistryConfig::default(),
        Credentials::from_files(&[auth_file]).unwrap(),
    )
    .unwrap()
    .with_retry_policy(fast_retries());
    let error = client
        .resolve(&reference, "linux", "amd64", None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("pull access denied for {host}/team/app:v1: authentication failed for `bob` at `{host}`")
    );
}

/// An image made for pushing: a config, a gzipped layer and an uncompressed layer of 20 MiB of
/// noise (more than two upload chunks of 8 MiB), with its OCI manifest.
struct PushImage {
    /// (digest, bytes): config, small layer, big layer.
    blobs: Vec<(String, Vec<u8>)>,
    manifest: Vec<u8>,
    manifest_digest: String,
}

fn make_push_image() -> PushImage {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path();
    std::fs::write(path.join("hello"), "hello, push\n".repeat(500)).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..20 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(path.join("noise"), &noise).unwrap();
    let tar = |file: &str| {
        let output = Command::new("tar")
            .args(["-cf", "-", "--owner=0", "--group=0", "--mtime=@0", "-C"])
            .arg(path)
            .arg(file)
            .output()
            .unwrap();
        assert!(output.status.success());
        output.stdout
    };
    let small_tar = tar("hello");
    let mut gzip = Command::new("gzip")
        .arg("-nc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    gzip.stdin.take().unwrap().write_all(&small_tar).unwrap();
    let small_layer = gzip.wait_with_output().unwrap().stdout;
    let big_layer = tar("noise");
    assert!(big_layer.len() > 2 * (8 << 20));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}},"config":{{"Cmd":["/bin/sh"]}}}}"#,
        sha256_digest(&small_tar),
        sha256_digest(&big_layer)
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        sha256_digest(&config),
        config.len(),
        sha256_digest(&small_layer),
        small_layer.len(),
        sha256_digest(&big_layer),
        big_layer.len()
    )
    .into_bytes();
    PushImage {
        blobs: [config, small_layer, big_layer]
            .into_iter()
            .map(|bytes| (sha256_digest(&bytes), bytes))
            .collect(),
        manifest_digest: sha256_digest(&manifest),
        manifest,
    }
}

/// Per blob: whether it was uploaded, and its `progress(done, total)` calls.
type Pushed = Vec<(bool, Vec<(u64, u64)>)>;

fn push_blobs(
    client: &Client,
    reference: &Reference,
    image: &PushImage,
    mount_from: Option<&str>,
) -> Result<Pushed, RegistryError> {
    let mut results = Vec::new();
    for (digest, bytes) in &image.blobs {
        let mut calls = Vec::new();
        let uploaded = client.push_blob(
            reference,
            digest,
            bytes.len() as u64,
            mount_from,
            &mut || Ok(Box::new(std::io::Cursor::new(bytes.clone()))),
            &mut |done, total| calls.push((done, total)),
        )?;
        results.push((uploaded, calls));
    }
    Ok(results)
}

fn skopeo(arguments: &[&str]) -> Vec<u8> {
    let output = Command::new("skopeo").args(arguments).output().unwrap();
    assert!(
        output.status.success(),
        "skopeo {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[test]
fn pushes_an_image_then_skips_existing_blobs_and_mounts_across_repositories() {
    let registry = Registry::start(None, None);
    let host = registry.host();
    let image = make_push_image();
    let client = Client::new(RegistryConfig::default(), Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();

    // First push: every blob is uploaded; the big one in three chunks.
    let results = push_blobs(&client, &reference, &image, None).unwrap();
    assert!(results.iter().all(|(uploaded, _)| *uploaded));
    let big = image.blobs[2].1.len() as u64;
    assert_eq!(
        results[2].1,
        [(0, big), (8 << 20, big), (16 << 20, big), (big, big)],
        "progress after each chunk"
    );
    assert_eq!(registry.requests("PATCH /v2/team/app/blobs/uploads/").len(), 1 + 1 + 3);
    let closing = registry.requests("PUT /v2/team/app/blobs/uploads/");
    assert_eq!(closing.len(), 3);
    assert!(closing.iter().all(|line| line.contains("\" 201 ")), "{closing:?}");
    assert_eq!(
        client.push_manifest(&reference, OCI_MANIFEST, &image.manifest).unwrap(),
        image.manifest_digest
    );

    // skopeo sees the digest we pushed and copies out the same bytes.
    let inspect: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/team/app:v1"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], image.manifest_digest.as_str());
    let out = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--quiet",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{host}/team/app:v1"),
        &format!("oci:{}:v1", out.path().display()),
    ]);
    let copied = |digest: &str| {
        std::fs::read(
            out.path()
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap_or_else(|error| {
            panic!(
                "{digest} not copied ({error}): {:?}",
                std::fs::read_dir(out.path().join("blobs/sha256"))
                    .unwrap()
                    .collect::<Vec<_>>()
            )
        })
    };
    assert_eq!(copied(&image.manifest_digest), image.manifest);
    for (digest, bytes) in &image.blobs {
        assert!(copied(digest) == *bytes, "blob {digest} differs");
    }

    // Second push: nothing is uploaded; the manifest gets the same digest.
    let uploads_before = registry.requests("POST /v2/team/app/blobs/uploads/").len();
    let results = push_blobs(&client, &reference, &image, None).unwrap();
    assert!(results.iter().all(|(uploaded, calls)| !uploaded && calls.is_empty()));
    assert_eq!(
        registry.requests("POST /v2/team/app/blobs/uploads/").len(),
        uploads_before
    );
    assert_eq!(
        client.push_manifest(&reference, OCI_MANIFEST, &image.manifest).unwrap(),
        image.manifest_digest
    );

    // Another repository: every blob is mounted from the first, nothing uploaded.
    let other = Reference::parse(&format!("{host}/other/app@{}", image.manifest_digest)).unwrap();
    let results = push_blobs(&client, &other, &image, Some("team/app")).unwrap();
    assert!(results.iter().all(|(uploaded, _)| !uploaded));
    let mounts = registry.requests("POST /v2/other/app/blobs/uploads/?mount=");
    assert_eq!(mounts.len(), 3);
    assert!(mounts.iter().all(|line| line.contains("\" 201 ")), "{mounts:?}");
    assert!(registry.requests("PATCH /v2/other/app/").is_empty());
    for (digest, _) in &image.blobs {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
            .arg(format!("http://{host}/v2/other/app/blobs/{digest}"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&status.stdout),
            "200",
            "HEAD {digest} in other/app"
        );
    }
    // By digest, and readable through the pull side.
    assert_eq!(
        client.push_manifest(&other, OCI_MANIFEST, &image.manifest).unwrap(),
        image.manifest_digest
    );
    let resolved = client.resolve(&other, "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest, image.manifest);

    // A reference whose digest is not the manifest's is refused before any request.
    let wrong = Reference::parse(&format!("{host}/other/app@{}", image.blobs[0].0)).unwrap();
    assert!(matches!(
        client.push_manifest(&wrong, OCI_MANIFEST, &image.manifest),
        Err(RegistryError::DigestMismatch { .. })
    ));
    // A manifest whose blobs the repository lacks: the registry's status and message.
    let third = Reference::parse(&format!("{host}/third/app:v1")).unwrap();
    let error = client
        .push_manifest(&third, OCI_MANIFEST, &image.manifest)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "unexpected status `400` from registry `{host}` for {host}/third/app:v1: server message: manifest_blob_unknown: blob unknown to registry"
        )
    );
    // A reader that gives other bytes than the digest says: nothing is committed.
    let (digest, bytes) = &image.blobs[1];
    let error = client
        .push_blob(
            &third,
            digest,
            bytes.len() as u64,
            None,
            &mut || Ok(Box::new(std::io::Cursor::new(vec![7u8; 1000]))),
            &mut |_, _| {},
        )
        .unwrap_err();
    assert!(
        matches!(error, RegistryError::SizeMismatch { actual: 1000, .. }),
        "{error}"
    );
    let error = client
        .push_blob(
            &third,
            digest,
            bytes.len() as u64,
            None,
            &mut || Ok(Box::new(std::io::Cursor::new(vec![7u8; bytes.len()]))),
            &mut |_, _| {},
        )
        .unwrap_err();
    assert!(matches!(error, RegistryError::DigestMismatch { .. }), "{error}");
    assert!(registry.requests("PUT /v2/third/app/blobs/").is_empty());
}

#[test]
fn push_honours_range_restarts_sessions_and_asks_push_scopes() {
    let blob: Vec<u8> = (0..1000u32).map(|value| (value % 241) as u8).collect();
    let digest = sha256_digest(&blob);
    let half = blob.len() / 2;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let received = Arc::new(Mutex::new(Vec::<u8>::new()));
    let patches = Arc::new(AtomicUsize::new(0));
    let port_cell = Arc::new(Mutex::new(0u16));
    let port = {
        let (log, received, patches, port_cell, digest) = (
            log.clone(),
            received.clone(),
            patches.clone(),
            port_cell.clone(),
            digest.clone(),
        );
        scripted_server(move |request| {
            let port = *port_cell.lock().unwrap();
            log.lock().unwrap().push(format!(
                "{} {} {}",
                request.method,
                request.path,
                request.headers.get("content-range").map_or("", String::as_str)
            ));
            if request.path.starts_with("/token") {
                return Answer::new(200, br#"{"token":"push-token"}"#);
            }
            if request.headers.get("authorization").map(String::as_str) != Some("Bearer push-token") {
                return Answer::new(401, b"{}").header(
                    "WWW-Authenticate",
                    &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="scripted""#),
                );
            }
            let uploads = "/v2/team/app/blobs/uploads/";
            match (request.method.as_str(), request.path.as_str()) {
                ("HEAD", _) => Answer::new(404, b""),
                // The mount is refused with a session (relative Location), whose first PATCH fails.
                ("POST", path) if path.contains("mount=") => {
                    Answer::new(202, b"").header("Location", &format!("{uploads}s1"))
                }
                ("PATCH", path) if path.ends_with("/s1") => Answer::new(503, b""),
                ("DELETE", _) => Answer::new(204, b""),
                ("POST", path) if path == uploads => {
                    Answer::new(202, b"").header("Location", &format!("http://127.0.0.1:{port}{uploads}s2?_state=a"))
                }
                ("PATCH", _) => {
                    let start: usize = request.headers["content-range"]
                        .split('-')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap();
                    let mut received = received.lock().unwrap();
                    assert_eq!(start, received.len(), "PATCH continues where the registry is");
                    // The first PATCH of the session only half lands.
                    let take = if patches.fetch_add(1, Ordering::SeqCst) == 0 {
                        half - start
                    } else {
                        request.body.len()
                    };
                    received.extend_from_slice(&request.body[..take]);
                    Answer::new(202, b"")
                        .header("Range", &format!("0-{}", received.len() - 1))
                        .header("Location", &format!("{uploads}s3?_state=b"))
                }
                ("PUT", path) if path.starts_with(&format!("{uploads}s3?")) => {
                    assert!(
                        path.contains(&format!("digest={}", digest.replace(':', "%3A"))),
                        "{path}"
                    );
                    Answer::new(201, b"").header("Docker-Content-Digest", &digest)
                }
                ("PUT", path) if path.starts_with("/v2/team/app/manifests/") => Answer::new(
                    403,
                    br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
                ),
                _ => Answer::new(404, b""),
            }
        })
    };
    *port_cell.lock().unwrap() = port;
    let host = format!("127.0.0.1:{port}");
    let client = Client::new(RegistryConfig::default(), Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();
    let mut opened = 0;
    let mut calls = Vec::new();
    let uploaded = client
        .push_blob(
            &reference,
            &digest,
            blob.len() as u64,
            Some("base/img"),
            &mut || {
                opened += 1;
                Ok(Box::new(std::io::Cursor::new(blob.clone())))
            },
            &mut |done, total| calls.push((done, total)),
        )
        .unwrap();
    assert!(uploaded);
    assert_eq!(*received.lock().unwrap(), blob, "the registry got every byte once");
    assert_eq!(opened, 2, "the failed session restarted from a fresh reader");
    assert_eq!(calls, [(0, 1000), (0, 1000), (1000, 1000)]);
    let requests: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| !line.starts_with("GET /token"))
        .cloned()
        .collect();
    let uploads = "/v2/team/app/blobs/uploads/";
    let expected = [
        format!("HEAD /v2/team/app/blobs/{digest} "),
        format!("HEAD /v2/team/app/blobs/{digest} "),
        format!("POST {uploads}?mount={digest}&from=base/img "),
        format!("POST {uploads}?mount={digest}&from=base/img "),
        format!("PATCH {uploads}s1 0-999"),
        format!("DELETE {uploads}s1 "),
        format!("POST {uploads} "),
        format!("PATCH {uploads}s2?_state=a 0-999"),
        format!("PATCH {uploads}s3?_state=b 500-999"),
        format!("PUT {uploads}s3?_state=b&digest={} ", digest.replace(':', "%3A")),
    ];
    assert_eq!(requests, expected);
    let tokens: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.starts_with("GET /token"))
        .cloned()
        .collect();
    assert_eq!(
        tokens,
        [
            "GET /token?scope=repository%3Ateam%2Fapp%3Apull%2Cpush&service=scripted ",
            "GET /token?scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository%3Abase%2Fimg%3Apull&service=scripted ",
        ],
        "a token per scope set, the mount's with pull on its source"
    );

    let error = client
        .push_manifest(&reference, OCI_MANIFEST, b"{}")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "push access denied for {host}/team/app:v1: insufficient scope: server message: denied: requested access to the resource is denied"
        )
    );
}

/// Issue 9, point 5: a server that drips a manifest or a blob, or says nothing, ends in a timeout
/// error (a drip of one byte every 20 s waited without end); a redirect loop and a body cut short
/// are named as such; a cancel ends a wait at once.
#[test]
fn slow_or_silent_servers_time_out_and_a_cancel_ends_the_wait() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#.to_vec();
    let blob = vec![7u8; 4096];
    let blob_digest = sha256_digest(&blob);
    let port = {
        let (manifest, blob) = (manifest.clone(), blob.clone());
        scripted_server(move |request| match request.path.as_str() {
            "/v2/drip/manifests/v1" => Answer { drip: Some(Duration::from_millis(100)), ..Answer::new(200, &manifest) }
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            path if path.starts_with("/v2/drip/blobs/") => Answer { drip: Some(Duration::from_millis(100)), ..Answer::new(200, &blob) },
            "/v2/loop/manifests/v1" => Answer::new(307, b"").header("Location", "/v2/loop/manifests/v1"),
            "/v2/badrealm/manifests/v1" => Answer::new(401, b"").header("WWW-Authenticate", r#"Bearer realm="not a url",service="x""#),
            "/v2/big/manifests/v1" => Answer::new(200, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":40000000},"layers":[]}"#)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            "/v2/cut/manifests/v1" => Answer { cut_after: Some(20), ..Answer::new(200, &manifest) }
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
            _ => Answer { silent_for: Some(Duration::from_secs(4)), ..Answer::new(200, b"") },
        })
    };
    let policy = RetryPolicy {
        attempts: 1,
        response_deadline: Duration::from_millis(700),
        small_body_deadline: Duration::from_millis(700),
        stall_window: Duration::from_millis(700),
        stall_min_bytes: 1024,
        ..fast_retries()
    };
    let client = Client::new(RegistryConfig::default(), Credentials::anonymous()).unwrap().with_retry_policy(policy);
    let host = format!("127.0.0.1:{port}");
    let dripped = Reference::parse(&format!("{host}/drip:v1")).unwrap();

    let started = std::time::Instant::now();
    let error = client.resolve(&dripped, "linux", "amd64", None).unwrap_err();
    assert!(matches!(error, RegistryError::Timeout { .. }), "{error}");
    assert!(error.to_string().starts_with("timed out: "), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    let error = fetch(&client, &dripped, &blob_digest, Some(blob.len() as u64)).unwrap_err();
    assert!(matches!(error, RegistryError::Stalled { .. }), "{error}");

    // A redirect loop and a body cut short say so, not "failed to connect".
    let looping = Reference::parse(&format!("{host}/loop:v1")).unwrap();
    let error = client.resolve(&looping, "linux", "amd64", None).unwrap_err();
    assert!(error.to_string().starts_with("too many redirects from registry"), "{error}");
    let cut = Reference::parse(&format!("{host}/cut:v1")).unwrap();
    let error = client.resolve(&cut, "linux", "amd64", None).unwrap_err();
    assert!(error.to_string().starts_with("the response was cut short by registry"), "{error}");
    // A token realm that is no URL is named, with why.
    let bad_realm = Reference::parse(&format!("{host}/badrealm:v1")).unwrap();
    let error = client.resolve(&bad_realm, "linux", "amd64", None).unwrap_err();
    assert!(error.to_string().starts_with("failed to get an auth token from `not a url`"), "{error}");
    assert!(error.to_string().contains("relative URL without a base"), "{error}");
    // An oversized config is named as the config (it was called the manifest).
    let big = Reference::parse(&format!("{host}/big:v1")).unwrap();
    let error = client.resolve(&big, "linux", "amd64", None).unwrap_err();
    assert!(error.to_string().starts_with("the config of "), "{error}");

    let silent = Reference::parse(&format!("{host}/silent:v1")).unwrap();
    let error = client.resolve(&silent, "linux", "amd64", None).unwrap_err();
    assert!(matches!(error, RegistryError::Timeout { .. }), "{error}");


    // Default (long) deadlines: only the cancel ends the wait.
    std::thread::sleep(Duration::from_secs(4));
    let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = Client::new(RegistryConfig::default(), Credentials::anonymous())
        .unwrap()
        .with_retry_policy(RetryPolicy { attempts: 1, ..RetryPolicy::default() })
        .with_cancel(cancel.clone());
    let setter = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            cancel.store(true, Ordering::SeqCst);
        })
    };
    let started = std::time::Instant::now();
    let error = client.resolve(&silent, "linux", "amd64", None).unwrap_err();
    setter.join().unwrap();
    assert!(matches!(error, RegistryError::Canceled), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "the cancel took {:?}", started.elapsed());
}
