//! Tests of the client against a scripted HTTP server on 127.0.0.1, for what a real registry
//! will not do on demand: bearer tokens, 503s, broken and resumed streams, tampered bytes, range
//! restarts of uploads, and servers that drip, stay silent, loop, cut a body short or send a bad
//! token realm.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

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
        Answer { status, headers: Vec::new(), body: body.to_vec(), cut_after: None, drip: None, silent_for: None }
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
            if let Some(length) = headers.get("content-length").and_then(|value| value.parse::<usize>().ok()) {
                body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
            }
            let answer = handler(&Request { method, path, headers, body });
            if let Some(silence) = answer.silent_for {
                std::thread::sleep(silence);
                continue;
            }
            let mut head = format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n", answer.status, answer.body.len());
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
        let (blob, config_bytes, digest, manifest) = (blob.clone(), config_bytes.clone(), digest.clone(), manifest.clone());
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
                let expected = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:builder"));
                if request.headers.get("authorization") != Some(&expected) || !request.path.contains("scope=repository%3Ateam%2Fapp%3Apull")
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
                ("HEAD", "/v2/team/app/manifests/v1") => Answer::new(200, b"").header("Docker-Content-Digest", &manifest_digest),
                ("GET", path) if path == format!("/v2/team/app/manifests/{manifest_digest}") => {
                    Answer::new(200, manifest.as_bytes()).header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
                }
                ("GET", path) if path == format!("/v2/team/app/blobs/{config_digest}") => Answer::new(200, &config_bytes),
                ("GET", path) if path == format!("/v2/team/app/blobs/{digest}") => {
                    match server_blob_requests.fetch_add(1, Ordering::SeqCst) {
                        // A 503 with Retry-After, then a stream that breaks halfway, then the rest.
                        0 => Answer::new(503, b"").header("Retry-After", "0"),
                        1 => Answer { cut_after: Some(blob.len() / 2), ..Answer::new(200, &blob) },
                        _ => {
                            let start: usize = request
                                .headers
                                .get("range")
                                .and_then(|range| range.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                                .unwrap_or(0);
                            Answer::new(206, &blob[start..])
                                .header("Content-Range", &format!("bytes {start}-{}/{}", blob.len() - 1, blob.len()))
                        }
                    }
                }
                ("GET", path) if path == format!("/v2/team/app/blobs/{server_tampered}") => Answer::new(200, b"the fake bytes"),
                _ => Answer::new(404, b""),
            }
        })
    };
    *port_cell.lock().unwrap() = port;
    let host = format!("127.0.0.1:{port}");
    let directory = tempfile::tempdir().unwrap();
    let auth_file = directory.path().join("auth.json");
    std::fs::write(&auth_file, format!(r#"{{"auths":{{"{host}":{{"username":"bob","password":"builder"}}}}}}"#)).unwrap();
    let client = Client::new(RegistryConfig::default(), Credentials::from_files(std::slice::from_ref(&auth_file)).unwrap())
        .unwrap()
        .with_retry_policy(fast_retries());
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();

    let resolved = client.resolve(&reference, "linux", "amd64", None).unwrap();
    assert_eq!(resolved.manifest_digest, sha256_digest(manifest.as_bytes()));
    assert_eq!(resolved.manifest_media_type, DOCKER_MANIFEST);
    assert_eq!(resolved.config, config_bytes);
    assert_eq!(resolved.reference.digest.as_deref(), Some(resolved.manifest_digest.as_str()));

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
    assert_eq!(requests.iter().filter(|line| line.starts_with("GET /token")).count(), 1, "one token for the scope, cached");
    assert!(requests.iter().any(|line| line.starts_with("HEAD /v2/team/app/manifests/v1")), "tag resolved with HEAD");
    assert!(!requests.iter().any(|line| line.starts_with("GET /v2/team/app/manifests/v1")), "no GET by tag when HEAD gives the digest");

    // Bytes that do not match their digest.
    let error = fetch(&client, &reference, &tampered_digest, None).unwrap_err();
    assert!(matches!(error, RegistryError::DigestMismatch { .. }), "{error}");

    // Wrong credentials at the token realm.
    std::fs::write(&auth_file, format!(r#"{{"auths":{{"{host}":{{"username":"bob","password":"nope"}}}}}}"#)).unwrap();
    let client =
        Client::new(RegistryConfig::default(), Credentials::from_files(&[auth_file]).unwrap()).unwrap().with_retry_policy(fast_retries());
    let error = client.resolve(&reference, "linux", "amd64", None).unwrap_err().to_string();
    assert_eq!(error, format!("pull access denied for {host}/team/app:v1: authentication failed for `bob` at `{host}`"));
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
        let (log, received, patches, port_cell, digest) =
            (log.clone(), received.clone(), patches.clone(), port_cell.clone(), digest.clone());
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
                return Answer::new(401, b"{}")
                    .header("WWW-Authenticate", &format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="scripted""#));
            }
            let uploads = "/v2/team/app/blobs/uploads/";
            match (request.method.as_str(), request.path.as_str()) {
                ("HEAD", _) => Answer::new(404, b""),
                // The mount is refused with a session (relative Location), whose first PATCH fails.
                ("POST", path) if path.contains("mount=") => Answer::new(202, b"").header("Location", &format!("{uploads}s1")),
                ("PATCH", path) if path.ends_with("/s1") => Answer::new(503, b""),
                ("DELETE", _) => Answer::new(204, b""),
                ("POST", path) if path == uploads => {
                    Answer::new(202, b"").header("Location", &format!("http://127.0.0.1:{port}{uploads}s2?_state=a"))
                }
                ("PATCH", _) => {
                    let start: usize = request.headers["content-range"].split('-').next().unwrap().parse().unwrap();
                    let mut received = received.lock().unwrap();
                    assert_eq!(start, received.len(), "PATCH continues where the registry is");
                    // The first PATCH of the session only half lands.
                    let take = if patches.fetch_add(1, Ordering::SeqCst) == 0 { half - start } else { request.body.len() };
                    received.extend_from_slice(&request.body[..take]);
                    Answer::new(202, b"")
                        .header("Range", &format!("0-{}", received.len() - 1))
                        .header("Location", &format!("{uploads}s3?_state=b"))
                }
                ("PUT", path) if path.starts_with(&format!("{uploads}s3?")) => {
                    assert!(path.contains(&format!("digest={}", digest.replace(':', "%3A"))), "{path}");
                    Answer::new(201, b"").header("Docker-Content-Digest", &digest)
                }
                ("PUT", path) if path.starts_with("/v2/team/app/manifests/") => {
                    Answer::new(403, br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#)
                }
                _ => Answer::new(404, b""),
            }
        })
    };
    *port_cell.lock().unwrap() = port;
    let host = format!("127.0.0.1:{port}");
    let client = Client::new(RegistryConfig::default(), Credentials::anonymous()).unwrap().with_retry_policy(fast_retries());
    let reference = Reference::parse(&format!("{host}/team/app:v1")).unwrap();
    let mut opened = 0;
    let mut calls = Vec::new();
    let uploaded = client
        .push_blob(
            &reference,
            &digest.parse().unwrap(),
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
    let requests: Vec<String> = log.lock().unwrap().iter().filter(|line| !line.starts_with("GET /token")).cloned().collect();
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
    let tokens: Vec<String> = log.lock().unwrap().iter().filter(|line| line.starts_with("GET /token")).cloned().collect();
    assert_eq!(
        tokens,
        [
            "GET /token?scope=repository%3Ateam%2Fapp%3Apull%2Cpush&service=scripted ",
            "GET /token?scope=repository%3Ateam%2Fapp%3Apull%2Cpush&scope=repository%3Abase%2Fimg%3Apull&service=scripted ",
        ],
        "a token per scope set, the mount's with pull on its source"
    );

    let error = client.push_manifest(&reference, OCI_MANIFEST, b"{}").unwrap_err().to_string();
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
        scripted_server(move |request| {
            match request.path.as_str() {
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
        }
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
