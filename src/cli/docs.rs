//! Shell completions and man pages, generated from the clap definition. The committed copies
//! under `completions/` and `man/` are checked against a fresh generation by a test; run
//! `RBUILD_WRITE_DOCS=1 cargo test --lib docs` to refresh them after changing a flag.


use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The committed completion files: (file name, shell).
pub const COMPLETIONS: [(&str, Shell); 5] = [
    ("rbuild.bash", Shell::Bash),
    ("_rbuild", Shell::Zsh),
    ("rbuild.fish", Shell::Fish),
    ("rbuild.elv", Shell::Elvish),
    ("_rbuild.ps1", Shell::PowerShell),
];

pub fn completion(shell: Shell) -> Vec<u8> {
    super::completion::script(shell)
}

/// One man page per command and subcommand: (file name, roff).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let command = Cli::command();
    collect(&command, "rbuild", &mut pages);
    pages
}

fn collect(command: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    let mut out = Vec::new();
    let page = command.clone().name(name.to_string().leak() as &str);
    // Rendering into a Vec cannot fail.
    let _ = clap_mangen::Man::new(page).render(&mut out);
    pages.push((format!("{name}.1"), out));
    for subcommand in command.get_subcommands() {
        if subcommand.get_name() == "help" {
            continue;
        }
        collect(subcommand, &format!("{name}-{}", subcommand.get_name()), pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn check(path: &Path, expected: &[u8], drifted: &mut Vec<String>) {
        if std::env::var_os("RBUILD_WRITE_DOCS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, expected).unwrap();
            return;
        }
        if std::fs::read(path).ok().as_deref() != Some(expected) {
            drifted.push(path.display().to_string());
        }
    }

    #[test]
    fn docs_match_the_cli() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut drifted = Vec::new();
        for (file, shell) in COMPLETIONS {
            check(&root.join("completions").join(file), &completion(shell), &mut drifted);
        }
        for (file, page) in man_pages() {
            check(&root.join("man").join(file), &page, &mut drifted);
        }
        assert!(
            drifted.is_empty(),
            "completions/man pages drifted from the CLI: {drifted:?}; run `RBUILD_WRITE_DOCS=1 cargo test --lib docs`"
        );
    }
}
