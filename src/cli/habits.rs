//! What users of `docker buildx build` type that rbuild does not take, and what to say to them.
//!
//! Role: [`check`] runs on the raw command line before clap. A flag buildx knows and rbuild does
//! not gets one sentence naming what rbuild does instead (clap's "unexpected argument" left them
//! guessing), and `rbuild du` or `rbuild prune` points to `rbuild cache ...`. Exit code 2, as
//! for any usage error.

use std::ffi::OsString;

/// buildx build flags rbuild refuses, with what to do instead.
const REFUSED_FLAGS: &[(&str, &str)] = &[
    ("--load", "rbuild has no image store to load into: write a docker archive with `-o type=docker,dest=image.tar`, then `docker load -i image.tar` or `podman load -i image.tar`"),
    ("--provenance", "rbuild does not make attestations; leave the flag out"),
    ("--sbom", "rbuild does not make attestations; leave the flag out"),
    ("--attest", "rbuild does not make attestations; leave the flag out"),
    ("--builder", "rbuild has no builder instances: every run builds in this process; leave the flag out"),
    ("--cgroup-parent", "rbuild does not place RUN steps under a given cgroup; leave the flag out"),
    ("-D", "rbuild's debug output is `--debug`"),
];

/// buildx commands that are `rbuild cache ...` here.
const CACHE_COMMANDS: &[&str] = &["du", "prune"];

/// The sentence for a habit on this command line (`args[0]` is the program), if any.
pub fn check(args: &[OsString]) -> Option<String> {
    let first = args.get(1)?.to_string_lossy();
    if CACHE_COMMANDS.contains(&first.as_ref()) {
        return Some(format!("`rbuild {first}` is `rbuild cache {first}`"));
    }
    // Other subcommands have flags of their own.
    if matches!(first.as_ref(), "cache" | "completion" | "help") {
        return None;
    }
    for argument in args.iter().skip(1) {
        let argument = argument.to_string_lossy();
        if argument == "--" {
            break;
        }
        if argument == "--progress=none" || (argument == "--progress" && next_is(args, &argument, "none")) {
            return Some("invalid progress mode `none`: rbuild's silent mode is `--progress=quiet` (or -q), which prints only the image id".into());
        }
        let name = argument.split('=').next().unwrap_or(&argument);
        if let Some((flag, hint)) = REFUSED_FLAGS.iter().find(|(flag, _)| *flag == name) {
            return Some(format!("unknown flag: {flag}: {hint}"));
        }
    }
    None
}

/// Whether the argument after the first `flag` in `args` is `value`.
fn next_is(args: &[OsString], flag: &str, value: &str) -> bool {
    let position = args.iter().position(|argument| argument.to_string_lossy() == flag);
    position.and_then(|at| args.get(at + 1)).is_some_and(|next| next.to_string_lossy() == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn buildx_flags_get_a_sentence_and_cache_commands_a_pointer() {
        let load = check(&args(&["rbuild", "build", "--load", "."])).unwrap();
        assert!(load.starts_with("unknown flag: --load: ") && load.contains("-o type=docker,dest="), "{load}");
        assert!(check(&args(&["rbuild", "--provenance=false", "."])).unwrap().contains("attestations"));
        assert_eq!(check(&args(&["rbuild", "du"])).unwrap(), "`rbuild du` is `rbuild cache du`");
        assert_eq!(check(&args(&["rbuild", "prune", "-f"])).unwrap(), "`rbuild prune` is `rbuild cache prune`");
        assert!(check(&args(&["rbuild", "-f", "Dockerfile", "."])).is_none());
        assert!(check(&args(&["rbuild", "--progress", "none", "."])).unwrap().contains("--progress=quiet"));
        assert!(check(&args(&["rbuild", "--progress=none", "."])).unwrap().contains("--progress=quiet"));
        assert!(check(&args(&["rbuild", "--progress", "plain", "."])).is_none());
        // After `--` and inside other subcommands nothing is taken for a flag.
        assert!(check(&args(&["rbuild", "cache", "prune", "--load"])).is_none());
        assert!(check(&args(&["rbuild", "build", "--", "--load"])).is_none());
    }
}
