//! Per-registry settings in buildkitd.toml syntax, so a `buildkitd.toml` works unchanged
//! (sections other than `[registry."host"]` are ignored):
//!
//! ```toml
//! [registry."docker.io"]
//! mirrors = ["127.0.0.1:5000"]
//! [registry."127.0.0.1:5000"]
//! http = true
//! insecure = true
//! ca = ["/path/ca.pem"]
//! [[registry."127.0.0.1:5000".keypair]]
//! key = "/path/key.pem"
//! cert = "/path/cert.pem"
//! ```
//!
//! The file is `--config FILE`, else `$XDG_CONFIG_HOME/rbuild/config.toml`
//! (`~/.config/rbuild/config.toml`). A missing default file is an empty config; a missing
//! explicit file is an error. Relative `ca`/`key`/`cert` paths are relative to the file's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::RegistryError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Hosts (optionally `host/path`) tried in order before the registry itself.
    pub mirrors: Vec<String>,
    /// Plain HTTP. Unset in the file means "only for localhost", as BuildKit.
    pub http: bool,
    /// Skip TLS verification (and fall back to plain HTTP when `http` is also set).
    pub insecure: bool,
    /// Extra PEM root certificates, added to the system roots.
    pub ca: Vec<PathBuf>,
    /// Client certificates as (key, cert) PEM files.
    pub keypair: Vec<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Keyed by the host as written in references (`docker.io`, `127.0.0.1:5000`).
    pub hosts: BTreeMap<String, HostConfig>,
    /// The file read (or, when it does not exist, the default one that would be): error hints
    /// name it.
    pub file: Option<PathBuf>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    registry: BTreeMap<String, FileHost>,
}

#[derive(Deserialize)]
struct FileHost {
    #[serde(default)]
    mirrors: Vec<String>,
    http: Option<bool>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    ca: Vec<PathBuf>,
    #[serde(default)]
    keypair: Vec<FileKeypair>,
}

#[derive(Deserialize)]
struct FileKeypair {
    key: PathBuf,
    cert: PathBuf,
}

impl RegistryConfig {
    pub fn load(path: Option<&Path>) -> Result<RegistryConfig, RegistryError> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => match default_path() {
                Some(path) => (path, false),
                None => return Ok(RegistryConfig::default()),
            },
        };
        let text = match read_bounded(&path) {
            Ok(text) => text,
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RegistryConfig { file: Some(path), ..RegistryConfig::default() });
            }
            Err(source) => return Err(RegistryError::ReadConfig { path, source }),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = RegistryConfig::parse(&text, base)
            .map_err(|source| RegistryError::ParseConfig { path: path.clone(), source: Box::new(source) })?;
        config.file = Some(path);
        Ok(config)
    }

    fn parse(text: &str, base: &Path) -> Result<RegistryConfig, toml::de::Error> {
        let file: File = toml::from_str(text)?;
        let hosts = file
            .registry
            .into_iter()
            .map(|(host, entry)| {
                let config = HostConfig {
                    http: entry.http.unwrap_or_else(|| is_localhost(&host)),
                    mirrors: entry.mirrors,
                    insecure: entry.insecure,
                    ca: entry.ca.into_iter().map(|path| base.join(path)).collect(),
                    keypair: entry.keypair.into_iter().map(|pair| (base.join(pair.key), base.join(pair.cert))).collect(),
                };
                (host, config)
            })
            .collect();
        Ok(RegistryConfig { hosts, file: None })
    }

    /// The settings of `host`; a host without a section gets BuildKit's defaults (HTTPS, except
    /// plain HTTP for localhost addresses).
    pub(crate) fn host(&self, host: &str) -> HostConfig {
        self.hosts.get(host).cloned().unwrap_or_else(|| HostConfig { http: is_localhost(host), ..HostConfig::default() })
    }
}

fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(value) if !value.is_empty() => PathBuf::from(value),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("rbuild").join("config.toml"))
}

/// BuildKit (containerd's `MatchLocalhost`) talks plain HTTP to these unless told otherwise.
pub(crate) fn is_localhost(host: &str) -> bool {
    if host == "::1" {
        return true;
    }
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, port)| if port.bytes().all(|b| b.is_ascii_digit()) { name } else { host }),
    };
    name == "localhost" || name == "::1" || name.starts_with("127.")
}

/// The most bytes rbuild reads of a registry config or credentials file.
pub(super) const FILE_LIMIT: u64 = 4 << 20;

/// Reads a config or credentials file of at most [`FILE_LIMIT`] bytes: a symlink to `/dev/zero`
/// or a huge file is an error, never a read without end.
pub(super) fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(std::io::Error::other(format!("larger than the limit of {FILE_LIMIT} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkitd_syntax() {
        let text = r#"
debug = true
[worker.oci]
enabled = true
[registry."docker.io"]
mirrors = ["127.0.0.1:5000", "mirror.example.com/prefix"]
[registry."127.0.0.1:5000"]
insecure = true
[registry."example.com"]
http = true
ca = ["ca.pem", "/abs/ca2.pem"]
[[registry."example.com".keypair]]
key = "client.key"
cert = "/abs/client.pem"
"#;
        let config = RegistryConfig::parse(text, Path::new("/etc/rbuild")).unwrap();
        assert_eq!(config.hosts["docker.io"].mirrors, ["127.0.0.1:5000", "mirror.example.com/prefix"]);
        assert!(!config.hosts["docker.io"].http);
        assert!(config.hosts["127.0.0.1:5000"].http, "localhost defaults to http");
        assert!(config.hosts["127.0.0.1:5000"].insecure);
        let example = &config.hosts["example.com"];
        assert!(example.http);
        assert_eq!(example.ca, [PathBuf::from("/etc/rbuild/ca.pem"), PathBuf::from("/abs/ca2.pem")]);
        assert_eq!(example.keypair, [(PathBuf::from("/etc/rbuild/client.key"), PathBuf::from("/abs/client.pem"))]);
        assert!(!config.host("unknown.example").http);
        assert!(config.host("localhost:5000").http);
    }

    #[test]
    fn load_missing_files() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("nope.toml");
        let error = RegistryConfig::load(Some(&missing)).unwrap_err();
        assert!(error.to_string().starts_with("failed to read registry config"), "{error}");

        let bad = directory.path().join("bad.toml");
        std::fs::write(&bad, "[registry.\"x\"]\nmirrors = 3\n").unwrap();
        let error = RegistryConfig::load(Some(&bad)).unwrap_err();
        assert!(error.to_string().starts_with("failed to parse registry config"), "{error}");
    }

    #[test]
    fn localhost_detection() {
        for host in ["localhost", "localhost:5000", "127.0.0.1", "127.0.0.1:41234", "[::1]:5000", "::1"] {
            assert!(is_localhost(host), "{host}");
        }
        for host in ["docker.io", "example.com:5000", "10.0.0.1:5000"] {
            assert!(!is_localhost(host), "{host}");
        }
    }
}
