//! `ADD <git URL>` of a repository with submodules, against the servers of [`git_source`]:
//! `parent` holds `mods/sub` (`../sub.git`, which holds `nest`, `../nested.git`: relative to
//! the submodule's own URL), `absmod` (an absolute `git://` URL) and `dir/inner`.
//!
//! BuildKit's result is `testdata/e2e/git-submodules/expected.txt`, recorded by the ignored test
//! [`record`] as [`git_source::record`] records its own. Two differences are expected and
//! filtered: without `--keep-git-dir` BuildKit leaves a `.git` file in each submodule pointing
//! into its own snapshot directory (dangling in the image, different on every machine), which
//! rbuild leaves out; and the parent's `.gitmodules` names the daemon's port, which differs from
//! run to run, so its size and digest are not compared.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::git_source::{GitServers, build_listing, project_with_servers, record_listing, run_git};
use crate::images::busybox_context;
use crate::support::{Project, fixture};

const DATE: &str = "2023-11-14T22:13:20Z";

/// A commit of `files` (and of `gitlinks`, path to commit id) pushed to `served/NAME.git`; its id.
fn make(project: &Project, name: &str, files: &[(&str, &str)], gitlinks: &[(&str, &str)]) -> String {
    let work = project.out(&format!("work-{name}"));
    fs::create_dir_all(&work).unwrap();
    run_git(&work, &["init", "-q"], DATE);
    for (path, content) in files {
        let path = work.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
    }
    run_git(&work, &["add", "-A"], DATE);
    for (path, commit) in gitlinks {
        run_git(&work, &["update-index", "--add", "--cacheinfo", &format!("160000,{commit},{path}")], DATE);
    }
    run_git(&work, &["commit", "-q", "-m", name], DATE);
    let served = project.out(&format!("served/{name}.git"));
    run_git(&work, &["clone", "-q", "--bare", ".", &served.display().to_string()], DATE);
    let output = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(&work).output().unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The repositories of the module docs, served.
fn project_with_submodules() -> (Project, GitServers) {
    let (project, servers) = project_with_servers();
    let nested = make(&project, "nested", &[("n.txt", "nested\n")], &[]);
    let nest_modules = "[submodule \"nest\"]\n\tpath = nest\n\turl = ../nested.git\n";
    let sub = make(&project, "sub", &[("s.txt", "sub\n"), ("x.sh", "#!/bin/sh\n"), (".gitmodules", nest_modules)], &[("nest", &nested)]);
    let absolute = make(&project, "abs", &[("a.txt", "abs\n")], &[]);
    let modules = format!(
        "[submodule \"mods/sub\"]\n\tpath = mods/sub\n\turl = ../sub.git\n[submodule \"absmod\"]\n\tpath = absmod\n\turl = {}\n\
         [submodule \"dir/inner\"]\n\tpath = dir/inner\n\turl = ../nested.git\n",
        servers.git_url("/abs.git")
    );
    let files = [("top.txt", "top\n"), ("dir/d.txt", "d\n"), (".gitmodules", modules.as_str())];
    make(&project, "parent", &files, &[("mods/sub", &sub), ("absmod", &absolute), ("dir/inner", &nested)]);
    (project, servers)
}

/// The whole tree, with `--keep-git-dir`, a subdirectory holding a submodule, a subdirectory
/// that is a submodule, and the whole tree over smart http (relative URLs then resolve to http).
fn dockerfile(servers: &GitServers) -> String {
    let (git, http) = (servers.git_url("/parent.git"), servers.http_url("/parent.git"));
    format!(
        "FROM busybox\nADD {git} /a/\nADD --keep-git-dir {git} /b/\nADD {git}#main:dir /c/\nADD {git}#main:mods/sub /d/\nADD {http} /e/\n"
    )
}

const ADDED: &[&str] = &["a", "b", "c", "d", "e"];

/// The listing with the differences of the module docs taken out.
fn comparable(listing: &str) -> String {
    let mut lines = Vec::new();
    for line in listing.lines() {
        let path = line.split(' ').next().unwrap_or_default();
        let parts: Vec<&str> = path.split('/').collect();
        if parts[0] != "b" && parts.len() >= 2 && parts.last() == Some(&".git") {
            continue;
        }
        if parts.len() == 2 && parts[1] == ".gitmodules" {
            lines.push(line.split(' ').take(5).collect::<Vec<_>>().join(" "));
            continue;
        }
        lines.push(line.to_string());
    }
    lines.join("\n") + "\n"
}

#[test]
fn submodules_are_fetched_as_buildkit_fetches_them() {
    let (project, servers) = project_with_submodules();
    project.dockerfile(&dockerfile(&servers));
    let (tar, listed) = build_listing(&project, ADDED);
    let expected = fs::read_to_string(fixture("git-submodules/expected.txt")).unwrap();
    assert_eq!(comparable(&listed), comparable(&expected));
    // Each submodule's remote has its own shared repository; the nested one was fetched once
    // over git:// (`dir/inner` and `nest` pin the same commit) and once over http.
    let usage = project.cache(&["du", "--verbose"]).ok().stdout_text();
    for remote in [servers.git_url("/sub.git"), servers.git_url("/nested.git"), servers.http_url("/nested.git")] {
        assert!(usage.contains(&format!("shared git repo for {remote}")), "no repository for `{remote}` in\n{usage}");
    }
    // The kept `.git` is a repository git understands, submodules and all.
    let out = project.out("kept");
    fs::create_dir_all(&out).unwrap();
    let extracted = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&out).arg("b").status().unwrap();
    assert!(extracted.success());
    let status = Command::new("git").args(["submodule", "status", "--recursive"]).current_dir(out.join("b")).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    for path in ["absmod", "dir/inner", "mods/sub", "mods/sub/nest"] {
        assert!(status.lines().any(|line| line.starts_with(' ') && line.contains(&format!(" {path} "))), "{path}: {status}");
    }
}

/// What BuildKit refuses, refused with the line: a gitlink without a URL, the `file` and `ext`
/// transports (the `ext` command never runs), a name that climbs out of `.git/modules`.
#[test]
fn hostile_gitmodules_are_refused() {
    let (project, servers) = project_with_servers();
    let nested = make(&project, "nested", &[("n.txt", "nested\n")], &[]);
    let pwned = project.out("pwned");
    let cases = [
        ("none", String::new(), "no url found for submodule path `m` in .gitmodules".to_string()),
        (
            "file",
            format!("[submodule \"m\"]\n\tpath = m\n\turl = file://{}\n", project.out("served/nested.git").display()),
            "transport `file` not allowed for submodule `m`".to_string(),
        ),
        (
            "local",
            format!("[submodule \"m\"]\n\tpath = m\n\turl = {}\n", project.out("served/nested.git").display()),
            "transport `file` not allowed for submodule `m`".to_string(),
        ),
        (
            "ext",
            format!("[submodule \"m\"]\n\tpath = m\n\turl = ext::sh -c touch% {}\n", pwned.display()),
            "transport `ext` not allowed for submodule `m`".to_string(),
        ),
        (
            "name",
            "[submodule \"../../evil\"]\n\tpath = m\n\turl = ../nested.git\n".to_string(),
            "no url found for submodule path `m`".to_string(),
        ),
    ];
    for (name, modules, message) in cases {
        let files: Vec<(&str, &str)> = if modules.is_empty() { vec![("x", "x\n")] } else { vec![(".gitmodules", modules.as_str())] };
        make(&project, name, &files, &[("m", &nested)]);
        let url = servers.git_url(&format!("/{name}.git"));
        project.dockerfile(&format!("FROM busybox\nADD --keep-git-dir {url} /x/\n"));
        let run = project.build(&["--build-context", &busybox_context()]).fails(1);
        run.stderr_has(&format!("ERROR: failed to solve: failed to update submodules for `{url}`: {message}"));
        run.stderr_has("Dockerfile:2\n");
    }
    assert!(!Path::new(&pwned).exists(), "the ext:: command ran");
}

/// Records BuildKit's result for [`submodules_are_fetched_as_buildkit_fetches_them`].
#[test]
#[ignore = "needs the oracle (RBUILD_ORACLE) started with a mirror serving busybox"]
fn record() {
    let (project, servers) = project_with_submodules();
    project.dockerfile(&dockerfile(&servers));
    record_listing(&project, "git-submodules", ADDED);
}
