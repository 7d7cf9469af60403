//! Pushing to a real registry (Debian's distribution registry on 127.0.0.1): blobs in chunks,
//! blobs the registry has skipped, cross-repository mounts, and the image checked with skopeo.

use std::io::Write;
use std::process::{Command, Stdio};

use super::*;

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
        let output =
            Command::new("tar").args(["-cf", "-", "--owner=0", "--group=0", "--mtime=@0", "-C"]).arg(path).arg(file).output().unwrap();
        assert!(output.status.success());
        output.stdout
    };
    let small_tar = tar("hello");
    let mut gzip = Command::new("gzip").arg("-nc").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
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
        blobs: [config, small_layer, big_layer].into_iter().map(|bytes| (sha256_digest(&bytes), bytes)).collect(),
        manifest_digest: sha256_digest(&manifest),
        manifest,
    }
}

/// Per blob: whether it was uploaded, and its `progress(done, total)` calls.
type Pushed = Vec<(bool, Vec<(u64, u64)>)>;

fn push_blobs(client: &Client, reference: &Reference, image: &PushImage, mount_from: Option<&str>) -> Result<Pushed, RegistryError> {
    let mut results = Vec::new();
    for (digest, bytes) in &image.blobs {
        let mut calls = Vec::new();
        let uploaded = client.push_blob(
            reference,
            &digest.parse().unwrap(),
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
    assert!(output.status.success(), "skopeo {arguments:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[test]
fn pushes_an_image_then_skips_existing_blobs_and_mounts_across_repositories() {
    let registry = Registry::start();
    let host = registry.host();
    let image = make_push_image();
    let client = Client::new(RegistryConfig::default(), Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();

    // First push: every blob is uploaded; the big one in three chunks.
    let results = push_blobs(&client, &reference, &image, None).unwrap();
    assert!(results.iter().all(|(uploaded, _)| *uploaded));
    let big = image.blobs[2].1.len() as u64;
    assert_eq!(results[2].1, [(0, big), (8 << 20, big), (16 << 20, big), (big, big)], "progress after each chunk");
    assert_eq!(registry.requests("PATCH /v2/team/app/blobs/uploads/").len(), 1 + 1 + 3);
    let closing = registry.requests("PUT /v2/team/app/blobs/uploads/");
    assert_eq!(closing.len(), 3);
    assert!(closing.iter().all(|line| line.contains("\" 201 ")), "{closing:?}");
    assert_eq!(client.push_manifest(&reference, OCI_MANIFEST, &image.manifest).unwrap(), image.manifest_digest);

    // skopeo sees the digest we pushed and copies out the same bytes.
    let inspect: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{host}/team/app:v1")])).unwrap();
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
        std::fs::read(out.path().join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())).unwrap_or_else(|error| {
            panic!("{digest} not copied ({error}): {:?}", std::fs::read_dir(out.path().join("blobs/sha256")).unwrap().collect::<Vec<_>>())
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
    assert_eq!(registry.requests("POST /v2/team/app/blobs/uploads/").len(), uploads_before);
    assert_eq!(client.push_manifest(&reference, OCI_MANIFEST, &image.manifest).unwrap(), image.manifest_digest);

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
        assert_eq!(String::from_utf8_lossy(&status.stdout), "200", "HEAD {digest} in other/app");
    }
    // By digest, and readable through the pull side.
    assert_eq!(client.push_manifest(&other, OCI_MANIFEST, &image.manifest).unwrap(), image.manifest_digest);
    let resolved = client.resolve(&other, "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest, image.manifest);

    // A reference whose digest is not the manifest's is refused before any request.
    let wrong = Reference::parse(&format!("{host}/other/app@{}", image.blobs[0].0)).unwrap();
    assert!(matches!(client.push_manifest(&wrong, OCI_MANIFEST, &image.manifest), Err(RegistryError::DigestMismatch { .. })));
    // A manifest whose blobs the repository lacks: the registry's status and message.
    let third = Reference::parse(&format!("{host}/third/app:v1")).unwrap();
    let error = client.push_manifest(&third, OCI_MANIFEST, &image.manifest).unwrap_err().to_string();
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
            &digest.parse().unwrap(),
            bytes.len() as u64,
            None,
            &mut || Ok(Box::new(std::io::Cursor::new(vec![7u8; 1000]))),
            &mut |_, _| {},
        )
        .unwrap_err();
    assert!(matches!(error, RegistryError::SizeMismatch { actual: 1000, .. }), "{error}");
    let error = client
        .push_blob(
            &third,
            &digest.parse().unwrap(),
            bytes.len() as u64,
            None,
            &mut || Ok(Box::new(std::io::Cursor::new(vec![7u8; bytes.len()]))),
            &mut |_, _| {},
        )
        .unwrap_err();
    assert!(matches!(error, RegistryError::DigestMismatch { .. }), "{error}");
    assert!(registry.requests("PUT /v2/third/app/blobs/").is_empty());
}
