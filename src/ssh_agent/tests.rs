//! Tests of the SSH agent (`mod.rs`), kept apart so the module itself stays readable.

use super::*;
use std::process::{Command, Output};
use std::time::Instant;

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn keygen(directory: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = directory.join(name);
    run(Command::new("ssh-keygen").args(["-q", "-C", &format!("{name}@test"), "-f"]).arg(&path).args(args));
    path
}

fn fingerprint(key: &Path) -> String {
    let output = run(Command::new("ssh-keygen").arg("-lf").arg(key.with_extension("pub")));
    let text = String::from_utf8(output.stdout).expect("utf-8");
    text.split_whitespace().nth(1).expect("fingerprint field").to_owned()
}

fn ssh_add_list(socket: &Path) -> String {
    let output = run(Command::new("ssh-add").arg("-l").env("SSH_AUTH_SOCK", socket));
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Signs through the agent with `ssh-keygen -Y sign -f <public key>` and verifies the result.
fn sign_and_verify(socket: &Path, key: &Path, directory: &Path) {
    let message = directory.join("message");
    fs::write(&message, b"payload for the agent\n").expect("write message");
    let _ = fs::remove_file(directory.join("message.sig"));
    run(Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(key.with_extension("pub"))
        .arg(&message)
        .env("SSH_AUTH_SOCK", socket));
    let public = fs::read_to_string(key.with_extension("pub")).expect("read public key");
    let signers = directory.join("allowed_signers");
    fs::write(&signers, format!("tester {public}")).expect("write allowed signers");
    let verify = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-n", "file", "-I", "tester", "-f"])
        .arg(&signers)
        .arg("-s")
        .arg(directory.join("message.sig"))
        .stdin(fs::File::open(&message).expect("open message"))
        .output()
        .expect("run ssh-keygen -Y verify");
    assert!(verify.status.success(), "verify failed for {key:?}: {}", String::from_utf8_lossy(&verify.stderr));
}

fn request(socket: &Path, body: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).expect("connect");
    write_message(&mut stream, body).expect("write request");
    read_message(&mut stream).expect("read").expect("a response")
}

struct Keys {
    directory: tempfile::TempDir,
    ed25519: PathBuf,
    rsa: PathBuf,
    ecdsa: PathBuf,
}

fn keys() -> Keys {
    let directory = tempfile::tempdir().expect("tempdir");
    let ed25519 = keygen(directory.path(), "ed", &["-t", "ed25519", "-N", ""]);
    let rsa = keygen(directory.path(), "rsa", &["-t", "rsa", "-b", "2048", "-N", ""]);
    let ecdsa = keygen(directory.path(), "ec", &["-t", "ecdsa", "-b", "256", "-N", ""]);
    Keys { directory, ed25519, rsa, ecdsa }
}

#[test]
fn ssh_add_lists_keys_and_signatures_verify() {
    let keys = keys();
    let socket = keys.directory.path().join("agent.sock");
    let agent = Agent::start(&socket, &[keys.ed25519.clone(), keys.rsa.clone(), keys.ecdsa.clone()]).expect("start agent");
    assert_eq!(agent.socket, socket);
    let mode = fs::metadata(&socket).expect("socket metadata").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let listing = ssh_add_list(&socket);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert!(lines[0].contains(&fingerprint(&keys.ed25519)) && lines[0].contains("ed@test (ED25519)"));
    assert!(lines[1].contains(&fingerprint(&keys.rsa)) && lines[1].contains("rsa@test (RSA)"));
    assert!(lines[2].contains(&fingerprint(&keys.ecdsa)) && lines[2].contains("(ECDSA)"));

    for key in [&keys.ed25519, &keys.rsa, &keys.ecdsa] {
        sign_and_verify(&socket, key, keys.directory.path());
    }

    drop(agent);
    assert!(fs::symlink_metadata(&socket).is_err(), "socket left behind");
    // No staging directory is left next to the socket either.
    let leftovers: Vec<_> = fs::read_dir(keys.directory.path())
        .expect("read dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(".sa"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn rsa_honours_hash_flags_and_refuses_sha1() {
    let keys = keys();
    let socket = keys.directory.path().join("agent.sock");
    let _agent = Agent::start(&socket, std::slice::from_ref(&keys.rsa)).expect("start agent");
    let public = ssh_key::PublicKey::read_openssh_file(&keys.rsa.with_extension("pub")).expect("read public key");
    let blob = public.to_bytes().expect("blob");
    let data = b"session data";
    for (flags, expected) in [(2, "rsa-sha2-256"), (4, "rsa-sha2-512"), (6, "rsa-sha2-512")] {
        let mut body = vec![SSH_AGENTC_SIGN_REQUEST];
        put_string(&mut body, &blob);
        put_string(&mut body, data);
        body.extend_from_slice(&u32::to_be_bytes(flags));
        let response = request(&socket, &body);
        assert_eq!(response[0], SSH_AGENT_SIGN_RESPONSE, "flags {flags}");
        let mut cursor = Cursor(&response[1..]);
        let signature = Signature::try_from(cursor.string().expect("signature")).expect("decode");
        assert_eq!(signature.algorithm().as_str(), expected);
        rsa::signature::Verifier::verify(public.key_data(), data, &signature).expect("signature verifies");
    }
    let mut sha1 = vec![SSH_AGENTC_SIGN_REQUEST];
    put_string(&mut sha1, &blob);
    put_string(&mut sha1, data);
    sha1.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(request(&socket, &sha1), [SSH_AGENT_FAILURE]);
}

#[test]
fn refuses_unknown_keys_other_requests_and_oversized_frames() {
    let keys = keys();
    let socket = keys.directory.path().join("agent.sock");
    let _agent = Agent::start(&socket, std::slice::from_ref(&keys.ed25519)).expect("start agent");

    // A key the agent does not hold.
    let other = ssh_key::PublicKey::read_openssh_file(&keys.rsa.with_extension("pub")).expect("read");
    let mut body = vec![SSH_AGENTC_SIGN_REQUEST];
    put_string(&mut body, &other.to_bytes().expect("blob"));
    put_string(&mut body, b"data");
    body.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(request(&socket, &body), [SSH_AGENT_FAILURE]);
    // Truncated sign request, remove-all (19), lock (22), extension (27).
    assert_eq!(request(&socket, &[SSH_AGENTC_SIGN_REQUEST, 0, 0]), [SSH_AGENT_FAILURE]);
    for kind in [19u8, 22, 27] {
        assert_eq!(request(&socket, &[kind]), [SSH_AGENT_FAILURE], "type {kind}");
    }
    // The key is still there after the refused remove-all.
    assert_eq!(ssh_add_list(&socket).lines().count(), 1);
    let output = Command::new("ssh-add").arg("-D").env("SSH_AUTH_SOCK", &socket).output().expect("run ssh-add -D");
    assert!(!output.status.success());

    // An oversized frame gets a failure and the connection is closed before its body.
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream.write_all(&((MAX_MESSAGE_LENGTH as u32) + 1).to_be_bytes()).expect("write length");
    assert_eq!(read_message(&mut stream).expect("read"), Some(vec![SSH_AGENT_FAILURE]));
    assert_eq!(read_message(&mut stream).expect("read after close"), None);
    // A frame of exactly the limit is read and answered.
    let mut stream = UnixStream::connect(&socket).expect("connect");
    let mut large = vec![99u8; MAX_MESSAGE_LENGTH];
    large[0] = 200;
    write_message(&mut stream, &large).expect("write large");
    assert_eq!(read_message(&mut stream).expect("read"), Some(vec![SSH_AGENT_FAILURE]));
}

#[test]
fn serves_several_clients_at_once() {
    let keys = keys();
    let socket = keys.directory.path().join("agent.sock");
    let agent = Agent::start(&socket, &[keys.ed25519.clone(), keys.rsa.clone()]).expect("start agent");
    // An idle client holds a connection open the whole time; the others are still served.
    let mut idle = UnixStream::connect(&socket).expect("connect idle client");
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let socket = socket.clone();
            thread::spawn(move || ssh_add_list(&socket).lines().count())
        })
        .collect();
    for worker in workers {
        assert_eq!(worker.join().expect("worker"), 2);
    }
    // Dropping the agent with the idle client still connected must not hang, and the client
    // then sees the connection closed.
    let started = Instant::now();
    drop(agent);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(read_message(&mut idle).expect("read"), None);
    assert!(UnixStream::connect(&socket).is_err());
}

#[test]
fn forwards_an_agent_socket_read_only() {
    let keys = keys();
    let upstream_socket = keys.directory.path().join("upstream.sock");
    let _upstream = Agent::start(&upstream_socket, &[keys.ed25519.clone(), keys.rsa.clone()]).expect("start upstream agent");
    let socket = keys.directory.path().join("agent.sock");
    let agent = Agent::start(&socket, std::slice::from_ref(&upstream_socket)).expect("start forwarding agent");

    let listing = ssh_add_list(&socket);
    assert!(listing.contains(&fingerprint(&keys.ed25519)), "{listing}");
    assert!(listing.contains(&fingerprint(&keys.rsa)), "{listing}");
    sign_and_verify(&socket, &keys.rsa, keys.directory.path());
    sign_and_verify(&socket, &keys.ed25519, keys.directory.path());
    assert_eq!(request(&socket, &[19]), [SSH_AGENT_FAILURE]);
    assert_eq!(ssh_add_list(&upstream_socket).lines().count(), 2);
    drop(agent);
    assert!(!socket.exists());
}

#[test]
#[allow(unsafe_code)] // `std::env::set_var` is unsafe (edition 2024); the test needs the variable set
fn empty_key_list_means_ssh_auth_sock() {
    let keys = keys();
    let upstream_socket = keys.directory.path().join("upstream.sock");
    let _upstream = Agent::start(&upstream_socket, std::slice::from_ref(&keys.ed25519)).expect("start upstream");
    // SAFETY: `set_var` races with C code reading the environment on other threads; the other
    // tests read it only through std (`Command`), which takes std's environment lock, and they
    // pass `SSH_AUTH_SOCK` to their children explicitly.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &upstream_socket) };
    let socket = keys.directory.path().join("agent.sock");
    let agent = Agent::start(&socket, &[]).expect("start default agent");
    assert!(ssh_add_list(&socket).contains(&fingerprint(&keys.ed25519)));
    drop(agent);
    let stale = keys.directory.path().join("gone.sock");
    // SAFETY: as above.
    unsafe { std::env::set_var("SSH_AUTH_SOCK", &stale) };
    let error = Agent::start(&socket, &[]).expect_err("stale SSH_AUTH_SOCK");
    assert!(matches!(&error, AgentError::Read { path, .. } if *path == stale), "{error}");
}

#[test]
fn rejects_bad_key_lists_with_clear_errors() {
    let keys = keys();
    let directory = keys.directory.path();
    let socket = directory.join("agent.sock");

    let encrypted = keygen(directory, "locked", &["-t", "ed25519", "-N", "secret"]);
    let error = Agent::start(&socket, &[keys.ed25519.clone(), encrypted.clone()]).expect_err("encrypted");
    assert!(matches!(&error, AgentError::Encrypted { path } if *path == encrypted));
    let message = error.to_string();
    assert!(message.contains(&format!("`{}`", encrypted.display())), "{message}");
    assert!(message.contains("ssh agent"), "{message}");
    assert!(!socket.exists(), "no socket after a failed start");

    let encrypted_pem = keygen(directory, "locked-pem", &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "secret"]);
    let error = Agent::start(&socket, &[encrypted_pem]).expect_err("encrypted pem");
    assert!(matches!(error, AgentError::Encrypted { .. }), "{error}");
    let pem = keygen(directory, "plain-pem", &["-t", "rsa", "-b", "2048", "-m", "PEM", "-N", ""]);
    let error = Agent::start(&socket, &[pem]).expect_err("legacy pem");
    assert!(matches!(error, AgentError::LegacyPem { .. }), "{error}");

    let error = Agent::start(&socket, &[keys.ed25519.with_extension("pub")]).expect_err("public key");
    assert!(matches!(error, AgentError::Parse { .. }), "{error}");
    let error = Agent::start(&socket, &[directory.join("missing")]).expect_err("missing");
    assert!(matches!(error, AgentError::Read { .. }), "{error}");

    let upstream_socket = directory.join("upstream.sock");
    let _upstream = Agent::start(&upstream_socket, std::slice::from_ref(&keys.ed25519)).expect("upstream");
    let error = Agent::start(&socket, &[keys.rsa.clone(), upstream_socket.clone()]).expect_err("mixed");
    assert!(matches!(error, AgentError::KeysAndSocket { .. }), "{error}");
    let error = Agent::start(&socket, &[upstream_socket.clone(), upstream_socket.clone()]).expect_err("two sockets");
    assert!(matches!(error, AgentError::MultipleSockets { .. }), "{error}");

    fs::write(&socket, b"").expect("occupy path");
    let error = Agent::start(&socket, std::slice::from_ref(&keys.ed25519)).expect_err("existing path");
    assert!(matches!(error, AgentError::SocketExists { .. }), "{error}");
    assert_eq!(fs::read(&socket).expect("file untouched"), b"");
}
