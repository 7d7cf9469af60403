//! Shell completion: the scripts clap generates, the values rbuild offers for its flags, and
//! the stage names of the Dockerfile for `--target` and `--no-cache-filter`.
//!
//! Values: [`Suggested`] is a value parser that accepts any text (rbuild checks the value
//! itself, with its own message) and tells clap the values to offer, so `--progress`,
//! `--network`, `--platform` and `cache du --format` complete in every shell.
//!
//! Stage names depend on the Dockerfile on the command line, which a static script cannot
//! know: the bash, zsh and fish scripts are patched to ask `rbuild __complete-stages FILE`
//! (hidden; it needs no namespace and no state root) with the `-f` of the command line, else
//! `Dockerfile`. Elvish and PowerShell complete values but not stage names.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap::builder::{PossibleValue, TypedValueParser};
use clap_complete::Shell;

use super::Cli;

/// The hidden command the scripts call: `rbuild __complete-stages DOCKERFILE`. It is not a
/// clap subcommand, so no generated script offers it.
const STAGES_COMMAND: &str = "__complete-stages";

/// Runs `__complete-stages` when that is the command line: prints the stage names, one per
/// line, and returns the exit code (0, whatever the Dockerfile holds).
pub fn maybe_list_stages(args: &[std::ffi::OsString]) -> Option<i32> {
    if args.get(1).is_none_or(|first| first != STAGES_COMMAND) {
        return None;
    }
    let dockerfile = args.get(2).map_or_else(|| Path::new("Dockerfile").to_path_buf(), std::path::PathBuf::from);
    let mut out = std::io::stdout().lock();
    for name in stage_names(&dockerfile) {
        let _ = writeln!(out, "{name}");
    }
    Some(0)
}

/// A value parser that takes any string and suggests `values` for completion.
#[derive(Clone)]
pub struct Suggested(pub &'static [&'static str]);

impl TypedValueParser for Suggested {
    type Value = String;

    fn parse_ref(&self, _: &clap::Command, _: Option<&clap::Arg>, value: &OsStr) -> Result<String, clap::Error> {
        value.to_str().map(str::to_string).ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidUtf8))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().map(|value| PossibleValue::new(*value))))
    }
}

/// `--progress` modes (checked by `progress::Mode`).
pub const PROGRESS: Suggested = Suggested(&["auto", "plain", "tty", "quiet", "rawjson"]);
/// `--network` modes.
pub const NETWORK: Suggested = Suggested(&["default", "none", "host"]);
/// `cache du --format`.
pub const DU_FORMAT: Suggested = Suggested(&["table", "pretty", "json"]);
/// Common `--platform` values (any `os/arch[/variant]` is taken).
pub const PLATFORM: Suggested = Suggested(&[
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
]);

/// The stage names of the Dockerfile at `path`, in order (nothing when it cannot be read or
/// parsed: a completion never prints an error).
pub fn stage_names(path: &Path) -> Vec<String> {
    use crate::dockerfile::instruction::{Command, commands};
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let Ok(dockerfile) = crate::dockerfile::syntax::parse("Dockerfile", &bytes) else { return Vec::new() };
    let Ok(located) = commands(&dockerfile) else { return Vec::new() };
    located
        .into_iter()
        .filter_map(|command| match command.value {
            Command::From { name, .. } => name,
            _ => None,
        })
        .collect()
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rbuild", &mut out);
    let text = String::from_utf8(out).unwrap_or_default();
    let patched = match shell {
        Shell::Bash => patch_bash(&text),
        Shell::Zsh => patch_zsh(&text),
        Shell::Fish => patch_fish(&text),
        _ => text,
    };
    patched.into_bytes()
}

pub fn write_script(shell: Shell, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(&script(shell))
}

const BASH_STAGES: &str = r#"_rbuild_stages() {
    local file=Dockerfile i
    for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
        case "${COMP_WORDS[i]}" in
            -f|--file) file="${COMP_WORDS[i+1]}" ;;
            --file=*) file="${COMP_WORDS[i]#--file=}" ;;
        esac
    done
    "${COMP_WORDS[0]}" __complete-stages "$file" 2>/dev/null
}

"#;

fn patch_bash(text: &str) -> String {
    let stage_flag = |flag: &str| {
        (
            format!("                {flag})\n                    COMPREPLY=($(compgen -f \"${{cur}}\"))"),
            format!("                {flag})\n                    COMPREPLY=($(compgen -W \"$(_rbuild_stages)\" -- \"${{cur}}\"))"),
        )
    };
    // `rbuild -f F --target ...` is `rbuild build ...`: a first word that is not a subcommand
    // selects the build command, as `with_default_subcommand` does.
    let default_build = "            *)\n                ;;\n        esac\n    done\n";
    let mut patched = format!("{BASH_STAGES}{}", text.replacen(
        default_build,
        &format!("            rbuild,-*|rbuild,.*|rbuild,/*)\n                cmd=\"rbuild__subcmd__build\"\n                ;;\n{default_build}"),
        1,
    ));
    for flag in ["--target", "--no-cache-filter"] {
        let (from, to) = stage_flag(flag);
        patched = patched.replace(&from, &to);
    }
    // The first word may be a build flag too.
    let build_opts = patched
        .split("        rbuild__subcmd__build)\n            opts=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string);
    if let Some(build_opts) = build_opts {
        patched = patched.replacen(
            "        rbuild)\n            opts=\"-h -V --help --version build cache completion help\"",
            &format!("        rbuild)\n            opts=\"-V --version build cache completion help {build_opts}\""),
            1,
        );
    }
    // In the build case, "the first word after the command" offers the flags only after an
    // explicit `build`: without it the second word may be a flag's value.
    if let Some(start) = patched.find("        rbuild__subcmd__build)\n") {
        let end = patched[start..].find(";;\n        rbuild__").map_or(patched.len(), |at| start + at);
        let section = patched[start..end].replacen("${COMP_CWORD} -eq 2 ]]", "${COMP_CWORD} -eq 2 && \"${COMP_WORDS[1]}\" == build ]]", 1);
        patched.replace_range(start..end, &section);
    }
    patched
}

fn patch_zsh(text: &str) -> String {
    let stages = r#"{compadd -- ${(f)"$(${words[1]} __complete-stages ${opt_args[-f]:-${opt_args[--file]:-Dockerfile}} 2>/dev/null)"}}"#;
    text.replace(":STAGE:_default'", &format!(":STAGE:{stages}'"))
}

const FISH_STAGES: &str = r#"function __fish_rbuild_stages
    set -l tokens (commandline -opc)
    set -l file Dockerfile
    for i in (seq (count $tokens))
        if contains -- $tokens[$i] -f --file; and test $i -lt (count $tokens)
            set file $tokens[(math $i + 1)]
        end
    end
    $tokens[1] __complete-stages $file 2>/dev/null
end

"#;

fn patch_fish(text: &str) -> String {
    let mut patched = format!("{FISH_STAGES}{text}");
    for flag in ["target", "no-cache-filter"] {
        patched = patched
            .lines()
            .map(|line| {
                if line.contains(&format!(" -l {flag} ")) && line.ends_with(" -r") {
                    format!("{line} -f -a '(__fish_rbuild_stages)'")
                } else {
                    line.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
    }
    patched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_come_from_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Dockerfile");
        std::fs::write(&path, "FROM busybox AS Build\nRUN true\nFROM scratch\nFROM build AS final\n").unwrap();
        assert_eq!(stage_names(&path), vec!["build", "final"]);
        assert!(stage_names(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn scripts_offer_values_and_ask_for_stages() {
        let bash = String::from_utf8(script(Shell::Bash)).unwrap();
        assert!(bash.contains("compgen -W \"$(_rbuild_stages)\""), "the --target case was not patched");
        assert!(bash.contains("rbuild,-*|rbuild,.*|rbuild,/*)"), "the default build command was not patched");
        assert!(bash.contains("opts=\"-V --version build cache completion help -f -t"), "the first word offers build flags");
        assert!(bash.contains("${COMP_CWORD} -eq 2 && \"${COMP_WORDS[1]}\" == build ]]"));
        assert!(bash.contains("auto plain tty quiet rawjson"), "--progress values");
        let zsh = String::from_utf8(script(Shell::Zsh)).unwrap();
        assert!(zsh.contains("__complete-stages"));
        let fish = String::from_utf8(script(Shell::Fish)).unwrap();
        assert!(fish.contains("-l target") && fish.contains("(__fish_rbuild_stages)"));
    }
}
