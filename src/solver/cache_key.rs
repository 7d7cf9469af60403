//! Cache keys: the identity of a vertex's result across runs and machines.
//!
//! key = sha256 of (format version, op kind, and the op's named cache inputs in order). The
//! inputs come from each op's `cache_inputs` (documented as a table in the op's module): the
//! canonical op definition after ARG expansion, the keys of the inputs, and for context files the
//! content digest of exactly the files used. Never host paths, mtimes, host uids, Dockerfile line
//! numbers, secrets or proxy variables. The named inputs are kept in the record, so a miss can be
//! explained by comparing them with an earlier record of the same step.

use crate::oci::{Digest, DigestHasher};
use crate::store::CacheKey;

/// Bump when the meaning of a key changes: old records then simply miss.
const FORMAT: &str = "rbuild.cache.v1";

pub(crate) fn compute(kind: &str, inputs: &[(String, String)]) -> CacheKey {
    let mut hasher = DigestHasher::sha256();
    hasher.update(FORMAT.as_bytes());
    hasher.update(&[0]);
    hasher.update(kind.as_bytes());
    for (name, value) in inputs {
        hasher.update(&[0]);
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    CacheKey::new(hasher.finish())
}

/// The step as a user names it, without the `[stage 2/3]` position (which moves when lines are
/// added): what records of "the same step" share.
pub(crate) fn description(name: &str) -> String {
    match name.strip_prefix('[').and_then(|rest| rest.split_once("] ")) {
        Some((_, step)) => step.to_string(),
        None => name.to_string(),
    }
}

/// Names the inputs that differ between an earlier record and now, for `--debug-cache`.
pub(crate) fn explain_miss(previous: &[(String, String)], current: &[(String, String)]) -> Vec<String> {
    let mut reasons = Vec::new();
    for (name, value) in current {
        match previous.iter().find(|(previous_name, _)| previous_name == name) {
            // An imported record keeps long values as their digest (`remote_cache::format`).
            Some((_, old)) if old == value || Digest::sha256_of(value.as_bytes()) == old.as_str() => {}
            Some((_, old)) => reasons.push(format!("{name} changed: {} -> {}", short(old), short(value))),
            None => reasons.push(format!("{name} is new")),
        }
    }
    for (name, _) in previous {
        if !current.iter().any(|(current_name, _)| current_name == name) {
            reasons.push(format!("{name} is gone"));
        }
    }
    reasons
}

fn short(value: &str) -> String {
    if value.len() > 80 {
        format!("{}…", &value[..value.char_indices().nth(77).map(|(i, _)| i).unwrap_or(value.len())])
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_names_and_values() {
        let a = compute("file", &[("ab".into(), "c".into())]);
        let b = compute("file", &[("a".into(), "bc".into())]);
        assert_ne!(a, b);
        assert_eq!(a, compute("file", &[("ab".into(), "c".into())]));
        assert_ne!(a, compute("image", &[("ab".into(), "c".into())]));
    }

    #[test]
    fn descriptions_drop_the_position() {
        assert_eq!(description("[stage-1 2/3] COPY a /b"), "COPY a /b");
        assert_eq!(description("COPY a /b"), "COPY a /b");
    }

    #[test]
    fn misses_name_what_changed() {
        let before = vec![("op".to_string(), "x".to_string()), ("files".to_string(), "sha256:1".to_string())];
        let after = vec![("op".to_string(), "x".to_string()), ("files".to_string(), "sha256:2".to_string())];
        assert_eq!(explain_miss(&before, &after), vec!["files changed: sha256:1 -> sha256:2".to_string()]);
    }
}
