//! The registry client (`rbuild::registry::Client`) against real servers, through its public API
//! only: Debian's distribution registry (`/usr/bin/docker-registry`, started by
//! [`Registry`](crate::registry::Registry)) on 127.0.0.1, filled with `skopeo copy`, plain HTTP and
//! TLS with htpasswd; pushing is in `push.rs`, and what a real registry will not do on demand in
//! `scripted.rs`. The builds that pull and push through the binary are in `registry.rs`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rbuild::oci::Reference;
use rbuild::oci::media_types::{DOCKER_MANIFEST, OCI_MANIFEST};
use rbuild::registry::*;
use sha2::{Digest, Sha256};

use crate::registry::{Registry, self_signed_pki};
use crate::support::{Project, require_tool};

mod push;
mod scripted;

/// `sha256:HEX` of `bytes`.
fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

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
    std::fs::write(layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap()), bytes).unwrap();
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
        std::fs::write(root.path().join("hello"), format!("hello from {architecture}\n").repeat(2000)).unwrap();
        let tarball = layout.path().join("layer.tar.gz");
        let status = Command::new("tar").arg("-czf").arg(&tarball).arg("-C").arg(root.path()).arg("hello").status().unwrap();
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
        platforms.push((architecture.to_string(), manifest_digest, config_digest, layer_digest, layer.len() as u64));
    }
    let index =
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#, entries.join(","));
    let index_digest = write_blob(layout.path(), index.as_bytes());
    let amd64 = &platforms[0];
    let amd64_size = std::fs::metadata(layout.path().join("blobs/sha256").join(amd64.1.strip_prefix("sha256:").unwrap())).unwrap().len();
    let top = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{index_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"multi"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{amd64_size},"annotations":{{"org.opencontainers.image.ref.name":"single"}}}}]}}"#,
        index.len(),
        amd64.1
    );
    std::fs::write(layout.path().join("index.json"), top).unwrap();
    Image { layout, index_digest, platforms }
}

fn push(image: &Image, tag: &str, destination: &str, credentials: Option<&str>) {
    let mut command = Command::new("skopeo");
    command.args(["copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"]);
    if let Some(credentials) = credentials {
        command.arg("--dest-creds").arg(credentials);
    }
    let output =
        command.arg(format!("oci:{}:{tag}", image.layout.path().display())).arg(format!("docker://{destination}")).output().unwrap();
    assert!(output.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&output.stderr));
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
    let digest = rbuild::oci::Digest::parse(digest).expect("the test's digest");
    client.fetch_blob(reference, &digest, size, &mut out, &mut |done, total| calls.push((done, total)))?;
    Ok((out, calls))
}

#[test]
fn resolves_through_a_mirror_and_by_digest_and_fetches_blobs() {
    let registry = Registry::start();
    let image = make_image();
    push(&image, "multi", &format!("{}/library/busybox:t1", registry.host()), None);
    push(&image, "single", &format!("{}/library/busybox:single", registry.host()), None);
    let host = registry.host();
    let config = config_from(&format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n[registry.\"{host}\"]\nhttp = true\n"));
    let client = Client::new(config, Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());

    // By tag, through the docker.io mirror, for both platforms.
    let reference = Reference::parse("busybox:t1").unwrap();
    for (architecture, manifest_digest, config_digest, layer_digest, layer_size) in &image.platforms {
        let resolved = client.resolve(&reference, "linux", architecture, None).unwrap();
        assert_eq!(resolved.reference.to_string(), format!("docker.io/library/busybox:t1@{}", image.index_digest));
        assert_eq!(&resolved.manifest_digest, manifest_digest);
        assert_eq!(sha256_digest(&resolved.manifest), *manifest_digest);
        assert_eq!(resolved.manifest_media_type, OCI_MANIFEST);
        assert_eq!(&resolved.config_digest, config_digest);
        assert_eq!(sha256_digest(&resolved.config), *config_digest);
        assert_eq!(
            resolved.layers,
            [rbuild::oci::Descriptor::new("application/vnd.oci.image.layer.v1.tar+gzip", layer_digest.parse().unwrap(), *layer_size)]
        );

        // Every blob, checked against its digest, with progress up to the full size.
        for (digest, size) in [(config_digest, resolved.config.len() as u64), (layer_digest, *layer_size)] {
            let (bytes, calls) = fetch(&client, &reference, digest, Some(size)).unwrap();
            assert_eq!(sha256_digest(&bytes), *digest);
            assert_eq!(calls.last(), Some(&(size, size)));
        }
    }
    let error = client.resolve(&reference, "linux", "s390x", None).unwrap_err().to_string();
    assert_eq!(error, format!("no match for platform `linux/s390x` in manifest of docker.io/library/busybox:t1@{}", image.index_digest));

    // By digest, directly at the host (plain HTTP is the default for 127.0.0.1).
    let direct = Client::new(RegistryConfig::default(), Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());
    let by_digest = Reference::parse(&format!("{host}/library/busybox@{}", image.index_digest)).unwrap();
    let resolved = direct.resolve(&by_digest, "linux", "arm64", Some("v8")).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[1].1);
    assert_eq!(resolved.reference, by_digest);

    // A single-platform manifest: its digest is the reference's; the config decides the platform.
    let single = Reference::parse(&format!("{host}/library/busybox:single")).unwrap();
    let resolved = direct.resolve(&single, "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[0].1);
    assert_eq!(resolved.reference.digest.as_deref(), Some(image.platforms[0].1.as_str()));
    assert!(matches!(direct.resolve(&single, "linux", "arm64", None), Err(RegistryError::NoMatchingPlatform { .. })));

    // Not found: a tag, a repository, a blob.
    let missing_tag = Reference::parse(&format!("{host}/library/busybox:nope")).unwrap();
    assert_eq!(
        direct.resolve(&missing_tag, "linux", "amd64", None).unwrap_err().to_string(),
        format!("{host}/library/busybox:nope: not found")
    );
    let missing_repository = Reference::parse(&format!("{host}/library/nothing")).unwrap();
    assert_eq!(
        direct.resolve(&missing_repository, "linux", "amd64", None).unwrap_err().to_string(),
        format!("{host}/library/nothing:latest: not found")
    );
    let absent = sha256_digest(b"absent");
    assert_eq!(fetch(&direct, &single, &absent, None).unwrap_err().to_string(), format!("{host}/library/busybox@{absent}: not found"));

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
    assert!(error.to_string().starts_with(&format!("digest mismatch for {host}/library/busybox@{layer_digest}: expected")));
}

#[test]
fn mirror_failure_falls_back_to_the_registry() {
    let registry = Registry::start();
    let image = make_image();
    push(&image, "multi", &format!("{}/library/app:v1", registry.host()), None);
    let dead = free_port();
    let host = registry.host();
    // The mirror refuses connections; the registry itself has the image.
    let config = config_from(&format!("[registry.\"{host}\"]\nmirrors = [\"127.0.0.1:{dead}\"]\n"));
    let client = Client::new(config, Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());
    let resolved = client.resolve(&Reference::parse(&format!("{host}/library/app:v1")).unwrap(), "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[0].1);
    // Nothing anywhere: the registry's "not found" is the answer; the dead mirror only could
    // not be asked (as BuildKit reports a tag its mirror lacks while Docker Hub is unreachable).
    let error = client.resolve(&Reference::parse(&format!("{host}/library/app:none")).unwrap(), "linux", "amd64", None).unwrap_err();
    assert_eq!(error.to_string(), format!("{host}/library/app:none: not found"));
    // With no host answering at all, the first failure is the error, with its cause.
    let config = config_from(&format!("[registry.\"127.0.0.1:{dead}\"]\nmirrors = [\"127.0.0.1:{dead}\"]\n"));
    let client = Client::new(config, Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());
    let error = client.resolve(&Reference::parse(&format!("127.0.0.1:{dead}/app:v1")).unwrap(), "linux", "amd64", None).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("failed to connect to registry `127.0.0.1:{dead}` for 127.0.0.1:{dead}/app:v1: connection refused")
    );
}

#[test]
fn tls_registry_with_htpasswd_and_custom_ca() {
    require_tool("htpasswd");
    let project = Project::new();
    let path = &self_signed_pki(&project);
    let htpasswd = Command::new("htpasswd").args(["-Bbn", "alice", "wonderland"]).output().unwrap();
    assert!(htpasswd.status.success());
    std::fs::write(path.join("htpasswd"), &htpasswd.stdout).unwrap();

    let registry = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
        path.join("server.pem").display(),
        path.join("server.key").display(),
        path.join("htpasswd").display()
    ));
    let host = registry.host();
    let image = make_image();
    push(&image, "multi", &format!("{host}/team/app:v1"), Some("alice:wonderland"));
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();
    let config_text = format!("[registry.\"{host}\"]\nhttp = false\nca = [\"{}\"]\n", path.join("ca.pem").display());

    // Right credentials, found through $DOCKER_CONFIG.
    let docker_config = path.join("docker");
    std::fs::create_dir(&docker_config).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:wonderland");
    std::fs::write(docker_config.join("config.json"), format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    let environment = BTreeMap::from([("DOCKER_CONFIG", docker_config.clone()), ("HOME", path.join("home"))]);
    let credentials = Credentials::load_with(|name| environment.get(name).map(|value| value.clone().into_os_string())).unwrap();
    let client = Client::new(config_from(&config_text), credentials).unwrap().with_retry_policy(fast_retries());
    let resolved = client.resolve(&reference, "linux", "arm64", None).unwrap();
    assert_eq!(resolved.manifest_digest, image.platforms[1].1);
    let (bytes, _) = fetch(&client, &reference, resolved.layers[0].digest.as_str(), Some(resolved.layers[0].size)).unwrap();
    assert_eq!(sha256_digest(&bytes), resolved.layers[0].digest);

    // Pushing the arm64 image to another repository with the same credentials, then reading it.
    let pushed = Reference::parse(&format!("{host}/team/pushed:v1")).unwrap();
    let layout_blob = |digest: &str| std::fs::read(image.layout.path().join("blobs/sha256").join(&digest[7..])).unwrap();
    let push_one = |client: &Client, digest: &str| {
        let bytes = layout_blob(digest);
        client.push_blob(
            &pushed,
            &digest.parse().unwrap(),
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
    assert_eq!(client.push_manifest(&pushed, OCI_MANIFEST, &layout_blob(manifest_digest)).unwrap(), *manifest_digest);
    let resolved = client.resolve(&pushed, "linux", "arm64", None).unwrap();
    assert_eq!(&resolved.manifest_digest, manifest_digest);

    // Wrong credentials, and none.
    std::fs::write(
        docker_config.join("config.json"),
        r#"{"auths":{"HOST":{"username":"alice","password":"wrong"}}}"#.replace("HOST", &host),
    )
    .unwrap();
    let wrong = Credentials::from_files(&[docker_config.join("config.json")]).unwrap();
    let client = Client::new(config_from(&config_text), wrong).unwrap().with_retry_policy(fast_retries());
    let error = client.resolve(&reference, "linux", "arm64", None).unwrap_err().to_string();
    assert_eq!(error, format!("pull access denied for {host}/team/app:v1: authentication failed for `alice` at `{host}`"));
    let error = push_one(&client, config_digest).unwrap_err().to_string();
    assert_eq!(error, format!("push access denied for {host}/team/pushed:v1: authentication failed for `alice` at `{host}`"));
    let error = client.push_manifest(&pushed, OCI_MANIFEST, &layout_blob(manifest_digest)).unwrap_err().to_string();
    assert_eq!(error, format!("push access denied for {host}/team/pushed:v1: authentication failed for `alice` at `{host}`"));
    let client = Client::new(config_from(&config_text), Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());
    let error = client.resolve(&reference, "linux", "arm64", None).unwrap_err().to_string();
    assert_eq!(error, format!("pull access denied for {host}/team/app:v1: authentication required"));
    let error = push_one(&client, config_digest).unwrap_err().to_string();
    assert_eq!(error, format!("push access denied for {host}/team/pushed:v1: authentication required"));

    // Without the CA the certificate is not trusted; `insecure` skips verification.
    let client = Client::new(config_from(&format!("[registry.\"{host}\"]\nhttp = false\n")), Credentials::anonymous())
        .unwrap()
        .with_retry_policy(fast_retries());
    let error = client.resolve(&reference, "linux", "arm64", None).unwrap_err();
    assert!(matches!(error, RegistryError::Connect { .. }), "{error}");
    assert!(error.to_string().contains("certificate signed by unknown authority; set `ca = "), "{error}");
    let insecure = Credentials::from_files(&[docker_config.join("config.json")]).unwrap();
    let client = Client::new(config_from(&format!("[registry.\"{host}\"]\nhttp = false\ninsecure = true\n")), insecure)
        .unwrap()
        .with_retry_policy(fast_retries());
    assert!(
        matches!(client.resolve(&reference, "linux", "arm64", None), Err(RegistryError::AccessDenied { .. })),
        "TLS passed, auth failed"
    );
}
