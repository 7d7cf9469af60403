//! Shell completions and man pages, generated from the clap definition (and, for the man
//! pages, the sections of `manual.rs`). The committed copies
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
    pages.push((format!("{name}.1"), render(command, name)));
    for subcommand in command.get_subcommands() {
        if subcommand.get_name() == "help" {
            continue;
        }
        collect(subcommand, &format!("{name}-{}", subcommand.get_name()), pages);
    }
}

/// clap_mangen's sections (title, name, synopsis, description, options, subcommands), then
/// the manual's own (examples, environment, files, exit status, see also), then the version.
fn render(command: &clap::Command, name: &str) -> Vec<u8> {
    let page = command.clone().name(name.to_string().leak() as &str);
    let man = clap_mangen::Man::new(page.clone());
    let mut out = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    if page.get_arguments().any(|argument| !argument.is_hide_set()) {
        let _ = man.render_options_section(&mut out);
    }
    if page.get_subcommands().any(|subcommand| !subcommand.is_hide_set()) {
        let _ = man.render_subcommands_section(&mut out);
    }
    out.extend_from_slice(super::manual::sections(name).as_bytes());
    if page.get_version().is_some() {
        let _ = man.render_version_section(&mut out);
    }
    out
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
    fn man_pages_have_every_section_and_no_dangling_reference() {
        let pages = man_pages();
        let names: Vec<String> = pages.iter().map(|(file, _)| file.trim_end_matches(".1").replace('-', "\\-")).collect();
        for (file, page) in &pages {
            let page = String::from_utf8_lossy(page);
            for section in [
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH EXAMPLES",
                ".SH \"ENVIRONMENT\"",
                ".SH \"FILES\"",
                ".SH \"EXIT STATUS\"",
                ".SH \"SEE ALSO\"",
            ] {
                assert!(page.contains(section), "{file} lacks {section}");
            }
            for reference in page.split("\\fB").skip(1).filter_map(|rest| rest.split_once("\\fR(1)")).map(|(name, _)| name) {
                assert!(names.iter().any(|name| name == reference), "{file} refers to {reference}(1), which is not a page of man/");
            }
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
