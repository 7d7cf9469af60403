//! `ADD https://.../repo.git` end to end: `git http-backend` behind TLS (rustls, a certificate
//! of the test's own CA from [`self_signed_pki`]) and basic auth that demands the token, as a
//! private repository's host does.
//!
//! rbuild's git speaks https through libgit2 and OpenSSL, which trust the system's roots and
//! what `SSL_CERT_FILE` / `SSL_CERT_DIR` name (measured here: the build is given the test CA
//! through `SSL_CERT_FILE`); a registry's `ca` in rbuild's config is the registry client's and
//! does not reach git. The token comes from BuildKit's secrets (`GIT_AUTH_TOKEN`,
//! `GIT_AUTH_TOKEN.<host:port>`, `GIT_AUTH_HEADER`), as BuildKit's Dockerfile frontend names them.
//! Without one, BuildKit's git says "could not read Username ... terminal prompts disabled"
//! (measured); rbuild says the remote wants credentials and which secrets give them.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;

use crate::git_source::{project_with_servers, serve_git_http};
use crate::images::busybox_context;
use crate::registry::self_signed_pki;
use crate::support::Project;

const TOKEN: &str = "s3cret-token";

/// Serves the project's repositories over https on a free port, answering only requests with
/// the token's `Authorization`; returns the port.
fn serve_https(served: &Path, pki: &Path) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certificates: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(pki.join("server.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = served.to_path_buf();
    let required = format!("basic {}", base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}")));
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, root, required) = (config.clone(), root.clone(), required.clone());
            std::thread::spawn(move || {
                let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                serve_git_http(&mut tls, &root, &Mutex::new(Vec::new()), Some(&required));
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

/// The test repository served over https, a Dockerfile adding its `main`; the PKI directory,
/// the port and the URL.
fn https_project() -> (Project, PathBuf, u16, String) {
    let (project, _servers) = project_with_servers();
    let pki = self_signed_pki(&project);
    let port = serve_https(&project.out("served"), &pki);
    let url = format!("https://127.0.0.1:{port}/repo.git");
    project.dockerfile(&format!("FROM busybox\nADD {url}#main /src/\n"));
    (project, pki, port, url)
}

#[test]
fn https_with_a_token_from_the_secrets() {
    let (project, pki, port, url) = https_project();
    let token_file = project.out("token");
    fs::write(&token_file, TOKEN).unwrap();
    let header_file = project.out("header");
    let header = format!("basic {}", base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}")));
    fs::write(&header_file, header).unwrap();
    let wrong_file = project.out("wrong");
    fs::write(&wrong_file, "wrong").unwrap();
    let ca = pki.join("ca.pem");
    let out = project.out("out");
    let build = |secret: Option<&str>| {
        let _ = fs::remove_dir_all(&out);
        let output = format!("type=local,dest={}", out.display());
        let mut command = project.build_command(&["--build-context", &busybox_context(), "--no-cache", "-o", &output]);
        command.env("SSL_CERT_FILE", &ca);
        command.args(secret.map(|secret| ["--secret", secret]).iter().flatten());
        crate::support::run_command(command, None)
    };

    let run = build(None).fails(1);
    run.stderr_has(&format!(
        "ERROR: failed to solve: failed to fetch remote `{url}`: authentication required: pass a token as `--secret id=GIT_AUTH_TOKEN"
    ));
    run.stderr_has("Dockerfile:2\n");
    let run = build(Some(&format!("id=GIT_AUTH_TOKEN,src={}", wrong_file.display()))).fails(1);
    run.stderr_has(&format!("failed to fetch remote `{url}`: authentication failed: the remote refused the credentials"));

    // The secret names BuildKit reads (measured with the oracle: `GIT_AUTH_TOKEN.127.0.0.1`
    // without the port is not used).
    for secret in [
        format!("id=GIT_AUTH_TOKEN,src={}", token_file.display()),
        format!("id=GIT_AUTH_TOKEN.127.0.0.1:{port},src={}", token_file.display()),
        format!("id=GIT_AUTH_HEADER,src={}", header_file.display()),
    ] {
        build(Some(&secret)).ok();
        assert_eq!(fs::read_to_string(out.join("src/two.txt")).unwrap(), "two\n", "{secret}");
    }
}

/// Without the CA the server's certificate is refused, by name.
#[test]
fn https_with_an_unknown_certificate_authority_fails_clearly() {
    let (project, _pki, _port, url) = https_project();
    let run = project.build(&["--build-context", &busybox_context()]).fails(1);
    run.stderr_has(&format!("ERROR: failed to solve: failed to fetch remote `{url}`: "));
    run.stderr_has("SSL_CERT_FILE");
    run.stderr_has("Dockerfile:2\n");
}
