//! Registry credentials and `WWW-Authenticate` challenges.
//!
//! Credentials come from Docker's `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`):
//! `credHelpers[host]`, then `credsStore`, then `auths[host]` (`auth` as base64 `user:password`,
//! or `username`/`password`, or `identitytoken`); when Docker has nothing for a host, podman's
//! `auth.json` chain (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`) is asked. Files are read once by [`Credentials::load`];
//! helpers (`docker-credential-<name> get`) run lazily, once per host, and their answer is cached.
//!
//! Decision: a helper that is missing or says "credentials not found" means anonymous access
//! (with a warning for the missing binary) instead of an error, so a stale `credsStore` (for
//! example `desktop` copied onto a CI machine) does not break pulls of public images; a helper
//! that runs and fails otherwise is an error.
//!
//! Invariant: secrets never reach `Debug` output or error messages.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use base64::Engine;
use serde::Deserialize;

use super::error::RegistryError;

/// The server URL Docker uses for Docker Hub in config files and helper calls.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl Credential {
    pub(crate) fn username(&self) -> &str {
        match self {
            Credential::Basic { username, .. } | Credential::IdentityToken { username, .. } => username,
        }
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(formatter, "Basic({username}, <redacted>)"),
            Credential::IdentityToken { username, .. } => write!(formatter, "IdentityToken({username}, <redacted>)"),
        }
    }
}

#[derive(Deserialize, Default)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

struct Source {
    path: PathBuf,
    file: AuthFile,
}

pub struct Credentials {
    /// Docker's config first, then podman's files, in lookup order.
    sources: Vec<Source>,
    /// Answers per canonical host, helpers included (`None` = anonymous).
    cache: Mutex<HashMap<String, Option<Credential>>>,
    /// `PATH` for finding helpers; `None` inherits the process's (tests set their own rather
    /// than mutate the process environment).
    helper_search_path: Option<std::ffi::OsString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<_> = self.sources.iter().map(|source| &source.path).collect();
        formatter.debug_struct("Credentials").field("sources", &paths).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn load() -> Result<Credentials, RegistryError> {
        Credentials::load_with(|name| std::env::var_os(name))
    }

    /// [`Credentials::load`] with the environment given as a function (tests do not mutate the
    /// process environment).
    pub fn load_with(variable: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Credentials, RegistryError> {
        let variable = |name: &str| variable(name).filter(|value| !value.is_empty());
        let home = variable("HOME").map(PathBuf::from);
        let mut paths = Vec::new();
        match variable("DOCKER_CONFIG") {
            Some(directory) => paths.push(PathBuf::from(directory).join("config.json")),
            None => paths.extend(home.as_ref().map(|home| home.join(".docker/config.json"))),
        }
        if let Some(file) = variable("REGISTRY_AUTH_FILE") {
            paths.push(PathBuf::from(file));
        }
        if let Some(runtime) = variable("XDG_RUNTIME_DIR") {
            paths.push(PathBuf::from(runtime).join("containers/auth.json"));
        }
        paths.extend(home.as_ref().map(|home| home.join(".config/containers/auth.json")));
        Credentials::from_files(&paths)
    }

    /// Anonymous access everywhere.
    pub fn anonymous() -> Credentials {
        Credentials { sources: Vec::new(), cache: Mutex::new(HashMap::new()), helper_search_path: None }
    }

    /// Reads the given auth files in lookup order; missing files are skipped.
    pub fn from_files(paths: &[PathBuf]) -> Result<Credentials, RegistryError> {
        let mut sources = Vec::new();
        for path in paths {
            let text = match super::config::read_bounded(path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(RegistryError::ReadCredentials { path: path.clone(), source });
                }
            };
            let file: AuthFile = if text.trim().is_empty() {
                AuthFile::default()
            } else {
                serde_json::from_str(&text).map_err(|source| RegistryError::ParseCredentials { path: path.clone(), source })?
            };
            sources.push(Source { path: path.clone(), file });
        }
        Ok(Credentials { sources, cache: Mutex::new(HashMap::new()), helper_search_path: None })
    }

    /// The credential for the host being contacted (a mirror's own host, or `docker.io` for
    /// `registry-1.docker.io`).
    pub(crate) fn get(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        let host = canonical_host(host);
        // A poisoned lock only means another thread panicked mid-lookup; the map is still valid.
        let mut cache = self.cache.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(answer) = cache.get(&host) {
            return Ok(answer.clone());
        }
        let answer = self.lookup(&host)?;
        cache.insert(host, answer.clone());
        Ok(answer)
    }

    fn lookup(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        let server = if host == "docker.io" { DOCKER_HUB_SERVER.to_string() } else { host.to_string() };
        for source in &self.sources {
            let helper = source
                .file
                .cred_helpers
                .iter()
                .find(|(key, _)| canonical_host(key) == host)
                .map(|(_, helper)| helper)
                .or(source.file.creds_store.as_ref());
            if let Some(helper) = helper.filter(|helper| !helper.is_empty())
                && let Some(credential) = run_helper(helper, &server, self.helper_search_path.as_deref())?
            {
                return Ok(Some(credential));
            }
            if let Some((_, entry)) = source.file.auths.iter().find(|(key, _)| canonical_host(key) == host)
                && let Some(credential) = entry_credential(entry, host, &source.path)?
            {
                return Ok(Some(credential));
            }
        }
        Ok(None)
    }
}

fn entry_credential(entry: &AuthEntry, host: &str, path: &Path) -> Result<Option<Credential>, RegistryError> {
    let (mut username, mut password) = (entry.username.clone().unwrap_or_default(), entry.password.clone().unwrap_or_default());
    if let Some(auth) = entry.auth.as_deref().filter(|auth| !auth.is_empty()) {
        let invalid = || RegistryError::InvalidAuthEntry { host: host.to_string(), path: path.to_path_buf() };
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| invalid())?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
        let (user, secret) = decoded.split_once(':').ok_or_else(invalid)?;
        username = user.to_string();
        password = secret.to_string();
    }
    if let Some(token) = entry.identitytoken.as_deref().filter(|token| !token.is_empty()) {
        return Ok(Some(Credential::IdentityToken { username, token: token.to_string() }));
    }
    if username.is_empty() && password.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::Basic { username, password }))
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn run_helper(helper: &str, server: &str, search_path: Option<&std::ffi::OsStr>) -> Result<Option<Credential>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let failure = |message: String| RegistryError::CredentialHelper { helper: helper.to_string(), host: server.to_string(), message };
    let mut command = Command::new(&program);
    if let Some(search_path) = search_path {
        command.env("PATH", search_path);
    }
    let mut child = match command.arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("credential helper `{program}` not found; pulling from `{server}` anonymously");
            return Ok(None);
        }
        Err(error) => return Err(failure(error.to_string())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).map_err(|error| failure(error.to_string()))?;
    }
    let output = child.wait_with_output().map_err(|error| failure(error.to_string()))?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stdout).trim().to_string() + String::from_utf8_lossy(&output.stderr).trim();
        if message.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failure(message));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|error| failure(format!("invalid answer: {error}")))?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if answer.username == "<token>" {
        Credential::IdentityToken { username: String::new(), token: answer.secret }
    } else {
        Credential::Basic { username: answer.username, password: answer.secret }
    }))
}

/// A config key or API host as a bare host: scheme and path dropped, Docker Hub's aliases
/// (`index.docker.io`, `registry-1.docker.io`, `https://index.docker.io/v1/`) become `docker.io`.
pub(crate) fn canonical_host(key: &str) -> String {
    let without_scheme = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lowercase scheme: `bearer` or `basic`.
    pub scheme: String,
    pub parameters: BTreeMap<String, String>,
}

/// Parses `Bearer realm="...",service="...",scope="a,b"` (quoted values may hold commas and
/// escaped quotes). Only the first challenge of a header is used, as containerd does.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = match header.split_once(char::is_whitespace) {
        Some((scheme, rest)) => (scheme, rest.trim_start()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut parameters = BTreeMap::new();
    while !rest.is_empty() {
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut characters = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((index, character)) = characters.next() {
                match character {
                    '\\' => {
                        if let Some((_, escaped)) = characters.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = index + 1;
                        break;
                    }
                    other => value.push(other),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        parameters.insert(name, value);
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge { scheme: scheme.to_ascii_lowercase(), parameters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(directory: &Path, name: &str, text: &str) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn docker_config_entries() {
        let directory = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let docker = write(
            directory.path(),
            "config.json",
            &format!(
                r#"{{"auths": {{
                    "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                    "registry.example.com": {{"username": "bob", "password": "pw"}},
                    "token.example.com": {{"identitytoken": "refresh"}},
                    "broken.example.com": {{"auth": "%%%"}}
                }}}}"#
            ),
        );
        let podman = write(
            directory.path(),
            "auth.json",
            r#"{"auths": {"quay.io/org": {"auth": "Y2Fyb2w6cHc="}, "registry.example.com": {"auth": "bm90OnVzZWQ="}}}"#,
        );
        let credentials = Credentials::from_files(&[docker, podman, directory.path().join("missing.json")]).unwrap();

        let hub = Credential::Basic { username: "alice".into(), password: "s3cr:et".into() };
        assert_eq!(credentials.get("docker.io").unwrap(), Some(hub.clone()));
        assert_eq!(credentials.get("registry-1.docker.io").unwrap(), Some(hub));
        assert_eq!(
            credentials.get("registry.example.com").unwrap(),
            Some(Credential::Basic { username: "bob".into(), password: "pw".into() }),
            "docker's config wins over podman's"
        );
        assert_eq!(credentials.get("quay.io").unwrap(), Some(Credential::Basic { username: "carol".into(), password: "pw".into() }));
        assert!(
            matches!(credentials.get("token.example.com").unwrap(), Some(Credential::IdentityToken { token, .. }) if token == "refresh")
        );
        assert_eq!(credentials.get("other.example.com").unwrap(), None);
        let error = credentials.get("broken.example.com").unwrap_err().to_string();
        assert!(error.starts_with("invalid `auth` entry for `broken.example.com`"), "{error}");
        assert!(!format!("{:?}", credentials.get("docker.io").unwrap()).contains("s3cr"), "debug output hides secrets");
    }

    #[test]
    fn credential_helper_protocol() {
        let directory = tempfile::tempdir().unwrap();
        let helper = directory.path().join("docker-credential-rbuildtest");
        // Answers for `helper.example.com` only; records what it was asked.
        std::fs::write(
            &helper,
            format!(
                "#!/bin/sh\nread -r server || true\necho \"$1 $server\" >> {}/calls\nif [ \"$server\" = helper.example.com ]; then echo '{{\"ServerURL\":\"x\",\"Username\":\"dave\",\"Secret\":\"pw\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
                directory.path().display()
            ),
        )
        .unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&helper).status().unwrap();
        let config = write(
            directory.path(),
            "config.json",
            r#"{"credHelpers": {"helper.example.com": "rbuildtest", "gone.example.com": "rbuild-missing-helper"}, "credsStore": "rbuildtest", "auths": {"docker.io": {}}}"#,
        );
        let old_path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(std::iter::once(directory.path().to_path_buf()).chain(std::env::split_paths(&old_path))).unwrap();
        let mut credentials = Credentials::from_files(&[config]).unwrap();
        credentials.helper_search_path = Some(path);
        assert_eq!(
            credentials.get("helper.example.com").unwrap(),
            Some(Credential::Basic { username: "dave".into(), password: "pw".into() })
        );
        assert_eq!(credentials.get("helper.example.com").unwrap().map(|c| c.username().to_string()), Some("dave".into()));
        assert_eq!(credentials.get("docker.io").unwrap(), None, "credsStore says not found");
        assert_eq!(credentials.get("gone.example.com").unwrap(), None, "missing helper is anonymous");
        let calls = std::fs::read_to_string(directory.path().join("calls")).unwrap();
        assert_eq!(calls, "get helper.example.com\nget https://index.docker.io/v1/\n", "one call per host, cached");
    }

    #[test]
    fn challenges() {
        let challenge = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(challenge.scheme, "bearer");
        assert_eq!(challenge.parameters["realm"], "https://auth.docker.io/token");
        assert_eq!(challenge.parameters["service"], "registry.docker.io");
        assert_eq!(challenge.parameters["scope"], "repository:library/busybox:pull,push");
        let basic = parse_challenge(r#"Basic realm="Registry \"Realm\"""#).unwrap();
        assert_eq!(basic.scheme, "basic");
        assert_eq!(basic.parameters["realm"], "Registry \"Realm\"");
        let bare = parse_challenge("Basic").unwrap();
        assert!(bare.parameters.is_empty());
        assert_eq!(canonical_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(canonical_host("http://Example.com:5000/v2/"), "example.com:5000");
    }
}
