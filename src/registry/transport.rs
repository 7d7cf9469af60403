//! Why a request never got an answer, said the way a user can act on: the cause found under a
//! transport error (connection refused, no such host, a TLS verdict, plain HTTP where HTTPS was
//! spoken) and, where a registry config key fixes it, that key for that host in that file.
//!
//! reqwest reports all of these as "error sending request"; the cause sits several sources
//! down: an `io::Error` of kind `ConnectionRefused`, hyper's "dns error", or a `rustls::Error`
//! wrapped in an `io::Error`. BuildKit prints Go's texts for the same failures ("connection
//! refused", "no such host", "certificate signed by unknown authority", "server gave HTTP
//! response to HTTPS client"); rbuild uses those words and adds the key.

use std::error::Error;
use std::path::Path;

/// What broke underneath a transport failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cause {
    Refused,
    NoSuchHost,
    /// The server answered a TLS hello with plain HTTP.
    HttpToHttps,
    UnknownAuthority,
    /// rustls's own sentence (it names the expected and the presented names).
    WrongName(String),
    Expired,
    /// Any other TLS failure, in rustls's words.
    Tls(String),
    /// Something else: the innermost message.
    Other(String),
}

impl Cause {
    /// The cause of `error`, read from its sources.
    pub(super) fn of(error: &(dyn Error + 'static)) -> Cause {
        let mut innermost = error.to_string();
        let mut current: Option<&(dyn Error + 'static)> = Some(error);
        while let Some(this) = current {
            if this.to_string() == "dns error" {
                return Cause::NoSuchHost;
            }
            if let Some(io) = this.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return Cause::Refused;
                }
                // io::Error::source skips the error it wraps; look at it directly.
                if let Some(inner) = io.get_ref() {
                    if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                        return Cause::from_tls(tls);
                    }
                    if let Some(inner_io) = inner.downcast_ref::<std::io::Error>() {
                        current = Some(inner_io);
                        innermost = inner_io.to_string();
                        continue;
                    }
                }
            }
            if let Some(tls) = this.downcast_ref::<rustls::Error>() {
                return Cause::from_tls(tls);
            }
            innermost = this.to_string();
            current = this.source();
        }
        Cause::Other(innermost)
    }

    fn from_tls(error: &rustls::Error) -> Cause {
        use rustls::{CertificateError, Error as Tls, InvalidMessage};
        match error {
            Tls::InvalidMessage(InvalidMessage::InvalidContentType) => Cause::HttpToHttps,
            Tls::InvalidCertificate(CertificateError::UnknownIssuer) => Cause::UnknownAuthority,
            Tls::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => {
                Cause::WrongName(error.to_string().trim_start_matches("invalid peer certificate: ").to_string())
            }
            Tls::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => Cause::Expired,
            other => Cause::Tls(other.to_string()),
        }
    }

    /// `: CAUSE` and, where a key of the registry config fixes it, `; set KEY ...` for `host`.
    pub(super) fn describe(&self, host: &str, config_file: Option<&Path>) -> String {
        let set = |key: &str| config_hint(key, host, config_file);
        match self {
            Cause::Refused => ": connection refused".to_string(),
            Cause::NoSuchHost => format!(": no such host `{}`", host_name(host)),
            Cause::HttpToHttps => format!(": server gave HTTP response to HTTPS client; {}", set("http = true")),
            Cause::UnknownAuthority => format!(
                ": certificate signed by unknown authority; {} (or `insecure = true` to skip verification)",
                set("ca = [\"/path/to/ca.pem\"]")
            ),
            Cause::WrongName(text) => format!(": {text}; {} skips verification", set("insecure = true")),
            Cause::Expired => format!(": certificate has expired; {} skips verification", set("insecure = true")),
            Cause::Tls(text) => format!(": TLS handshake failed: {text}"),
            Cause::Other(text) => format!(": {text}"),
        }
    }
}

/// `set KEY for `HOST` in FILE` (the file rbuild read, or would read, its registry config from).
pub(super) fn config_hint(key: &str, host: &str, config_file: Option<&Path>) -> String {
    let file = match config_file {
        Some(path) => format!("`{}`", path.display()),
        None => "the registry config (`--config FILE`)".to_string(),
    };
    format!("set `{key}` under `[registry.\"{host}\"]` in {file}")
}

/// The name part of `host[:port]` (IPv6 in brackets kept whole).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(name, _)| &name[1..]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_found_under_wrappers() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Cause::of(&refused), Cause::Refused);
        let unknown = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(Cause::of(&unknown), Cause::UnknownAuthority);
        let plain =
            std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
        assert_eq!(Cause::of(&plain), Cause::HttpToHttps);
        assert_eq!(Cause::of(&std::io::Error::other("weird")), Cause::Other("weird".into()));
    }

    #[test]
    fn hints_name_the_key_the_host_and_the_file() {
        let file = Path::new("/home/u/.config/rbuild/config.toml");
        assert_eq!(
            Cause::HttpToHttps.describe("reg.local:5000", Some(file)),
            ": server gave HTTP response to HTTPS client; set `http = true` under `[registry.\"reg.local:5000\"]` in `/home/u/.config/rbuild/config.toml`"
        );
        assert!(
            Cause::UnknownAuthority
                .describe("h", None)
                .contains("set `ca = [\"/path/to/ca.pem\"]` under `[registry.\"h\"]` in the registry config (`--config FILE`)")
        );
        assert_eq!(Cause::NoSuchHost.describe("no.such.invalid:5000", None), ": no such host `no.such.invalid`");
        assert_eq!(host_name("[::1]:5000"), "::1");
    }
}
