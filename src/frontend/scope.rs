//! Variables in scope while a stage is lowered, and word expansion against them.
//!
//! Rules (BuildKit's): global ARGs (before the first FROM) are visible in FROM lines, and in a
//! stage only when the stage declares them again (`ARG NAME` takes the global value). Predefined
//! platform ARGs (TARGETPLATFORM, BUILDARCH, ...) are visible in FROM lines and, like globals,
//! in a stage only when declared. `--build-arg` overrides an ARG's default. An ENV of the same
//! name wins over an ARG. Expansion never sees the host environment.

use std::collections::BTreeMap;

use crate::dockerfile::shell::{Lexer, ShellError};
use crate::oci::Platform;

/// The predefined ARGs of a build (platform ones; proxy ones are only for RUN).
pub(crate) fn predefined_args(target: &Platform, build: &Platform) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (prefix, platform) in [("TARGET", target), ("BUILD", build)] {
        args.insert(format!("{prefix}PLATFORM"), platform.to_string());
        args.insert(format!("{prefix}OS"), platform.os.clone());
        args.insert(format!("{prefix}ARCH"), platform.architecture.clone());
        args.insert(format!("{prefix}VARIANT"), platform.variant.clone().unwrap_or_default());
    }
    args
}

/// Names of the proxy ARGs that are predefined (usable without declaration in RUN, never in
/// the image or the cache key).
pub(crate) const PROXY_ARGS: [&str; 8] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy"];

/// Variables of one stage while it is lowered.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Declared ARGs with their values (None: declared without a value and none given).
    pub args: Vec<(String, Option<String>)>,
    /// The stage's environment: the base image's ENV plus ENV instructions, in order.
    pub env: Vec<(String, String)>,
}

impl Scope {
    pub(crate) fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, value)) = self.env.iter().rev().find(|(key, _)| key == name) {
            return Some(value.clone());
        }
        self.args.iter().rev().find(|(key, _)| key == name).and_then(|(_, value)| value.clone())
    }

    pub(crate) fn set_arg(&mut self, name: &str, value: Option<String>) {
        self.args.retain(|(key, _)| key != name);
        self.args.push((name.to_string(), value));
    }

    pub(crate) fn set_env(&mut self, name: &str, value: &str) {
        match self.env.iter_mut().find(|(key, _)| key == name) {
            Some(existing) => existing.1 = value.to_string(),
            None => self.env.push((name.to_string(), value.to_string())),
        }
    }

    pub(crate) fn expand(&self, lexer: &Lexer, word: &str) -> Result<String, ShellError> {
        lexer.process_word(word, &|name| self.lookup(name))
    }

    /// A step's name in progress, as BuildKit shows it ([`Lexer::process_progress_name`]).
    pub(crate) fn progress_name(&self, lexer: &Lexer, text: &str) -> String {
        lexer.process_progress_name(text, &|name| self.lookup(name))
    }

    /// A heredoc body with an unquoted delimiter: quotes are kept as written.
    pub(crate) fn expand_heredoc(&self, lexer: &Lexer, body: &str) -> Result<String, ShellError> {
        lexer.process_heredoc(body, &|name| self.lookup(name))
    }

    pub(crate) fn expand_words(&self, lexer: &Lexer, word: &str) -> Result<Vec<String>, ShellError> {
        lexer.process_words(word, &|name| self.lookup(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_wins_over_arg_of_the_same_name() {
        let mut scope = Scope::default();
        scope.set_arg("V", Some("arg".into()));
        assert_eq!(scope.lookup("V").as_deref(), Some("arg"));
        scope.set_env("V", "env");
        assert_eq!(scope.lookup("V").as_deref(), Some("env"));
        scope.set_arg("V", Some("again".into()));
        assert_eq!(scope.lookup("V").as_deref(), Some("env"));
        scope.set_arg("EMPTY", None);
        assert_eq!(scope.lookup("EMPTY"), None);
        let lexer = Lexer::new('\\');
        assert_eq!(scope.expand(&lexer, "${V}-${EMPTY:-d}").unwrap(), "env-d");
    }

    #[test]
    fn platforms_parse_and_print() {
        let platform = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(platform.to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_none());
        let args = predefined_args(&Platform::parse("linux/arm64").unwrap(), &Platform::parse("linux/amd64").unwrap());
        assert_eq!(args["TARGETARCH"], "arm64");
        assert_eq!(args["BUILDPLATFORM"], "linux/amd64");
        assert_eq!(args["TARGETVARIANT"], "");
    }
}
