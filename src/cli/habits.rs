//! What users of `docker buildx build` type that rbuild does not take, and what to say to them.
//!
//! Role: [`check`] runs on the raw command line before clap. A flag buildx knows and rbuild does
//! not gets one sentence naming what rbuild does instead (clap's "unexpected argument" left them
//! guessing), and `rbuild du` or `rbuild prune` points to `rbuild cache ...`. Exit code 2, as
//! for any usage error. [`strip_ignored`] drops the old `docker build` flags buildx accepts and
//! ignores (`--rm`, `--force-rm`, `-m`, ...), with a warning each.

use std::ffi::OsString;

/// buildx build flags rbuild refuses, with what to do instead.
const REFUSED_FLAGS: &[(&str, &str)] = &[
    (
        "--load",
        "rbuild has no image store to load into: write a docker archive with `-o type=docker,dest=image.tar`, then `docker load -i image.tar` or `podman load -i image.tar`",
    ),
    ("--provenance", "rbuild does not make attestations; leave the flag out"),
    ("--sbom", "rbuild does not make attestations; leave the flag out"),
    ("--attest", "rbuild does not make attestations; leave the flag out"),
    ("--builder", "rbuild has no builder instances: every run builds in this process; leave the flag out"),
    ("--cgroup-parent", "rbuild does not place RUN steps under a given cgroup; leave the flag out"),
    ("-D", "rbuild's debug output is `--debug`"),
    (
        "--call",
        "rbuild runs no frontend methods (check, outline, targets): it builds, and prints the Dockerfile's lint warnings as it does",
    ),
    (
        "--check",
        "rbuild runs no frontend methods (check, outline, targets): it builds, and prints the Dockerfile's lint warnings as it does",
    ),
];

/// `docker build` flags that buildx accepts and ignores (hidden there): rbuild ignores them too,
/// with a warning, so a script written for `docker build` runs. (flag, takes a value).
const IGNORED_FLAGS: &[(&str, bool)] = &[
    ("--rm", false),
    ("--force-rm", false),
    ("--compress", false),
    ("--squash", false),
    ("--isolation", true),
    ("--security-opt", true),
    ("-m", true),
    ("--memory", true),
    ("--memory-swap", true),
    ("-c", true),
    ("--cpu-shares", true),
    ("--cpu-period", true),
    ("--cpu-quota", true),
    ("--cpuset-cpus", true),
    ("--cpuset-mems", true),
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
            return Some(
                "invalid progress mode `none`: rbuild's silent mode is `--progress=quiet` (or -q), which prints only the image id".into(),
            );
        }
        let name = argument.split('=').next().unwrap_or(&argument);
        if let Some((flag, hint)) = REFUSED_FLAGS.iter().find(|(flag, _)| *flag == name) {
            return Some(format!("unknown flag: {flag}: {hint}"));
        }
    }
    None
}

/// The build command line without the flags buildx ignores, and a warning for each one removed.
pub fn strip_ignored(args: Vec<OsString>) -> (Vec<OsString>, Vec<String>) {
    let first = args.get(1).map(|first| first.to_string_lossy().into_owned());
    if matches!(first.as_deref(), Some("cache" | "completion" | "help") | None) {
        return (args, Vec::new());
    }
    let mut kept = Vec::with_capacity(args.len());
    let mut warnings = Vec::new();
    let mut arguments = args.into_iter();
    kept.extend(arguments.next());
    while let Some(argument) = arguments.next() {
        let text = argument.to_string_lossy().into_owned();
        if text == "--" {
            kept.push(argument);
            kept.extend(arguments);
            break;
        }
        let (name, inline_value) = match text.split_once('=') {
            Some((name, _)) => (name.to_string(), true),
            None => (text.clone(), false),
        };
        match IGNORED_FLAGS.iter().find(|(flag, _)| *flag == name) {
            Some((flag, takes_value)) => {
                if *takes_value && !inline_value {
                    arguments.next();
                }
                warnings.push(format!("{flag} is ignored, as buildx ignores it"));
            }
            None => kept.push(argument),
        }
    }
    (kept, warnings)
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
        assert!(check(&args(&["rbuild", "--check", "."])).unwrap().contains("lint warnings"));
        // After `--` and inside other subcommands nothing is taken for a flag.
        assert!(check(&args(&["rbuild", "cache", "prune", "--load"])).is_none());
        assert!(check(&args(&["rbuild", "build", "--", "--load"])).is_none());
    }

    #[test]
    fn docker_build_flags_buildx_ignores_are_dropped_with_a_warning() {
        let (kept, warnings) =
            strip_ignored(args(&["rbuild", "--rm", "-m", "2g", "--memory=1g", "-t", "a", "--force-rm", ".", "--", "--rm"]));
        assert_eq!(kept, args(&["rbuild", "-t", "a", ".", "--", "--rm"]));
        assert_eq!(
            warnings,
            vec![
                "--rm is ignored, as buildx ignores it",
                "-m is ignored, as buildx ignores it",
                "--memory is ignored, as buildx ignores it",
                "--force-rm is ignored, as buildx ignores it"
            ]
        );
        let (kept, warnings) = strip_ignored(args(&["rbuild", "cache", "prune", "--rm"]));
        assert_eq!(kept.len(), 4);
        assert!(warnings.is_empty());
    }
}
