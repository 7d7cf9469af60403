//! Issue 10, point 6: every example command of the README (its `sh` blocks) and of the man
//! pages (their EXAMPLES) runs, as written, and succeeds.
//!
//! The commands run with `sh -c` in a project directory holding a Dockerfile with a `build`
//! stage and an OCI layout `./base:latest` (the busybox test image), with `HOME`, the state root
//! and the registry config of a fresh user: docker.io is mirrored by a real registry the test
//! starts, and `registry.example.com` in a command stands for that registry (the only change
//! made to a command). podman keeps its storage in the test's directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::images::{BUSYBOX_TAG, busybox_layout};
use crate::registry::Registry;
use crate::support::*;

/// The commands of a text: backslash continuations joined, comments and blank lines dropped,
/// kept when `rbuild` is the command (first word, or after `|` or `&&`).
fn rbuild_commands(lines: &[String]) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = line.trim();
        if let Some(continued) = line.strip_suffix('\\') {
            current.push_str(continued.trim_end());
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .into_iter()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter(|line| line.starts_with("rbuild ") || line.contains("| rbuild ") || line.contains("&& rbuild "))
        .collect()
}

/// The lines of the README's ```sh blocks.
fn readme_commands() -> Vec<String> {
    let readme = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"));
    let mut lines = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim_end() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            text if in_sh => lines.push(text.to_string()),
            _ => {}
        }
    }
    rbuild_commands(&lines)
}

/// The lines between `.nf` and `.fi` of the EXAMPLES of every man page, unescaped.
fn man_commands() -> Vec<(String, String)> {
    let mut commands = Vec::new();
    let man = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&man).unwrap().map(|entry| entry.unwrap().path()).collect();
    pages.sort();
    for page in pages {
        let text = read(&page);
        let Some(examples) = text.split(".SH EXAMPLES\n").nth(1) else { continue };
        let examples = examples.split("\n.SH ").next().unwrap_or_default();
        let mut lines = Vec::new();
        let mut in_example = false;
        for line in examples.lines() {
            match line {
                ".nf" => in_example = true,
                ".fi" => in_example = false,
                text if in_example => lines.push(text.replace("\\-", "-").replace("\\&", "").replace("\\e", "\\")),
                _ => {}
            }
        }
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        commands.extend(rbuild_commands(&lines).into_iter().map(|command| (name.clone(), command)));
    }
    commands
}

#[test]
fn every_example_of_the_readme_and_the_man_pages_runs() {
    let registry = Registry::start();
    registry.push_busybox();
    let project = Project::new();
    project.dockerfile("FROM busybox AS build\nRUN echo built > /built\nFROM busybox\nCOPY --from=build /built /built\n");
    let work = project.ctx();
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            &format!("oci:{}:{BUSYBOX_TAG}", busybox_layout().display()),
            &format!("oci:{}:latest", work.join("base").display()),
        ],
    );

    let home = project.dir().join("home");
    let host = registry.host();
    write_file(
        &home.join(".config/rbuild/config.toml"),
        &format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n\n[registry.\"{host}\"]\nhttp = true\n"),
    );
    let storage = project.dir().join("podman");
    write_file(
        &storage.join("storage.conf"),
        &format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n", storage.display()),
    );
    let bin = project.dir().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(RBUILD, bin.join("rbuild")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let readme = readme_commands();
    let man = man_commands();
    assert!(readme.len() >= 15, "the README's sh blocks hold only {} rbuild commands: {readme:#?}", readme.len());
    assert!(man.len() >= 10, "the man pages hold only {} example commands: {man:#?}", man.len());
    let all = readme.iter().map(|command| ("README.md".to_string(), command.clone())).chain(man);
    let mut failures = Vec::new();
    for (source, command) in all {
        let command = command.replace("registry.example.com", &host);
        let mut shell = Command::new("sh");
        shell
            .args(["-c", &command])
            .current_dir(&work)
            .env_clear()
            .env("PATH", &path)
            .env("HOME", &home)
            .env("RBUILD_ROOT", project.root())
            .env("CONTAINERS_STORAGE_CONF", storage.join("storage.conf"))
            .env("COMMIT", "0123abc");
        let run = run_command(shell, None);
        eprintln!("{source}: `{command}`: exit {}", run.code);
        if run.code != 0 {
            failures.push(format!("{source}: `{command}` exited {}:\n{}", run.code, run.stderr));
        }
    }
    assert!(failures.is_empty(), "examples failed:\n{}", failures.join("\n"));
}
