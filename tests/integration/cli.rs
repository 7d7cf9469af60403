//! The command line outside of builds: completions, `-q`, the default `build` subcommand.

use crate::support::*;

#[test]
fn completion_bash_mentions_the_build_flags() {
    let project = Project::new();
    let run = run_command(project.command(&["completion", "bash"]), None).ok();
    let script = run.stdout_text();
    assert!(script.contains("--build-arg"), "{script}");
    assert!(script.contains("--build-context") && script.contains("--no-cache-filter"), "{script}");
    assert!(script.contains("complete ") && script.contains("rbuild"), "a bash completion script");
    // bash accepts it.
    let checked = tool("bash", &["-n", "-c", &script]);
    assert_eq!(checked, "");
}

/// Issue 10, point 6: the bash script, sourced in a real bash, offers the values of
/// `--progress`, `--network`, `--platform` and `cache du --format`, and the stage names of the
/// Dockerfile (`-f`, else `./Dockerfile`) for `--target`, with or without the `build` word.
#[test]
fn bash_completion_offers_values_and_stage_names() {
    let project = Project::new();
    project.dockerfile("FROM busybox AS build\nFROM build AS test\n").write("Other.df", "FROM scratch AS other\n");
    let script = project.dir().join("rbuild.bash");
    std::fs::write(&script, run_command(project.command(&["completion", "bash"]), None).ok().stdout).unwrap();
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({RBUILD} {words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); \
             _rbuild \"${{COMP_WORDS[0]}}\" \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
            script.display()
        );
        let mut command = std::process::Command::new("bash");
        command.args(["-c", &program]).current_dir(project.ctx());
        run_command(command, None).ok().stdout_text().trim().to_string()
    };
    assert_eq!(complete("--target ''"), "build test");
    assert_eq!(complete("build --target t"), "test");
    assert_eq!(complete("-f Other.df --target ''"), "other");
    assert_eq!(complete("--no-cache-filter b"), "build");
    assert_eq!(complete("--progress ''"), "auto plain tty quiet rawjson");
    assert_eq!(complete("build --network h"), "host");
    assert_eq!(complete("cache du --format ''"), "table pretty json");
    assert_eq!(complete("--platform linux/arm6"), "linux/arm64");
    assert_eq!(complete("--tar"), "--target");
}

#[test]
fn quiet_prints_only_the_image_id_and_build_is_the_default_command() {
    let project = Project::new();
    project.write("a.txt", "a\n").dockerfile("FROM scratch\nCOPY a.txt /a.txt\n");
    let archive = project.out("out.tar");
    let root = project.root();
    let ctx = project.ctx();
    // No `build` word: it is the default subcommand.
    let run = run_command(
        project.command(&[
            "--root",
            root.to_str().unwrap(),
            "-q",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            ctx.to_str().unwrap(),
        ]),
        None,
    )
    .ok();
    // buildx's image id: the config digest.
    let digest = skopeo_manifest(&archive)["config"]["digest"].as_str().unwrap().to_string();
    assert_eq!(run.stdout_text(), format!("{digest}\n"));
    assert!(!run.stderr.contains("#1 "), "quiet shows no progress:\n{}", run.stderr);
    // --progress=quiet is -q; -q with another progress mode is buildx's error.
    let run = run_command(
        project.command(&[
            "--root",
            root.to_str().unwrap(),
            "--progress=quiet",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            ctx.to_str().unwrap(),
        ]),
        None,
    )
    .ok();
    assert_eq!(run.stdout_text(), format!("{digest}\n"));
    run_command(project.command(&["--root", root.to_str().unwrap(), "-q", "--progress=plain", ctx.to_str().unwrap()]), None)
        .fails(2)
        .stderr_has("ERROR: progress=plain and quiet cannot be used together");
}

#[test]
fn missing_context_is_a_usage_error() {
    let project = Project::new();
    let missing = project.out("missing");
    let root = project.root();
    let run = run_command(project.command(&["build", "--root", root.to_str().unwrap(), missing.to_str().unwrap()]), None).fails(2);
    run.stderr_has(&format!("unable to prepare context: path `{}` not found", missing.display()));
}

/// Issue 10, point 2: flags buildx users type that rbuild does not take get a sentence saying
/// what to do instead, and `rbuild du` / `rbuild prune` point to `rbuild cache`; exit 2.
#[test]
fn buildx_habits_get_a_sentence() {
    let project = Project::new();
    project.dockerfile("FROM scratch\n");
    let ctx = project.ctx();
    let ctx = ctx.to_str().unwrap();
    let run = run_command(project.command(&["--load", ctx]), None).fails(2);
    run.stderr_has("ERROR: unknown flag: --load: ").stderr_has("-o type=docker,dest=image.tar");
    for flag in ["--provenance=false", "--sbom=true", "--builder=x", "--cgroup-parent=x", "-D"] {
        let run = run_command(project.command(&["build", flag, ctx]), None).fails(2);
        run.stderr_has(&format!("ERROR: unknown flag: {}: ", flag.split('=').next().unwrap()));
    }
    let run = run_command(project.command(&["build", "--allow", "security.insecure", ctx]), None).fails(2);
    run.stderr_has("ERROR: entitlement `security.insecure` is not supported: rbuild runs every RUN step sandboxed");
    run_command(project.command(&["build", "--allow=net.host", ctx]), None).fails(2).stderr_has("ERROR: invalid entitlement: net.host");
    run_command(project.command(&["build", "--check", ctx]), None).fails(2).stderr_has("ERROR: unknown flag: --check: ");
    // docker build's flags that buildx ignores are ignored, with a warning each.
    let root = project.root();
    let run = run_command(project.command(&["--rm", "--force-rm", "-m", "2g", "--root", root.to_str().unwrap(), ctx]), None).ok();
    run.stderr_has("WARNING: --rm is ignored, as buildx ignores it").stderr_has("WARNING: -m is ignored, as buildx ignores it");
    run_command(project.command(&["du"]), None).fails(2).stderr_has("`rbuild du` is `rbuild cache du`");
    run_command(project.command(&["prune", "-f"]), None).fails(2).stderr_has("`rbuild prune` is `rbuild cache prune`");
}

/// Issue 10, point 2: a context given as `-` is read from stdin as buildx reads it: a tar
/// archive (here gzip) is the context; anything else is the Dockerfile, with an empty context.
#[test]
fn context_from_stdin_is_a_tar_or_a_dockerfile() {
    let project = Project::new();
    let root = project.root();
    let stdin_build =
        |args: &[&str]| project.command(&[&["build", "--root", root.to_str().unwrap(), "--progress=plain"], args, &["-"]].concat());
    project.write("a.txt", "from the archive\n").dockerfile("FROM scratch\nCOPY a.txt /a.txt\n");
    let archive = project.dir().join("context.tar.gz");
    tool("tar", &["-czf", archive.to_str().unwrap(), "-C", project.ctx().to_str().unwrap(), "."]);
    let out = project.out("from-tar");
    let spec = format!("type=local,dest={}", out.display());
    run_command(stdin_build(&["-o", &spec]), Some(&std::fs::read(&archive).unwrap())).ok();
    assert_eq!(read(&out.join("a.txt")), "from the archive\n");

    // A Dockerfile on stdin: the context is empty, so COPY finds nothing.
    let out = project.out("from-dockerfile");
    let spec = format!("type=oci,dest={}", out.display());
    run_command(stdin_build(&["-o", &spec]), Some(b"FROM scratch\nLABEL from=stdin\n")).ok();
    assert_eq!(skopeo_config(&out)["config"]["Labels"]["from"], "stdin");
    let failed = run_command(stdin_build(&[]), Some(b"FROM scratch\nCOPY a.txt /\n")).fails(1);
    failed.stderr_has("\"/a.txt\": not found");

    run_command(stdin_build(&["-f", "-"]), Some(b"FROM scratch\n"))
        .fails(2)
        .stderr_has("ERROR: invalid argument: can't use stdin for both build context and dockerfile");
}
