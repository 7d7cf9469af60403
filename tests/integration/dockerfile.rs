//! Dockerfile semantics: stages, targets, ARG/ENV, ONBUILD, heredocs, the escape directive,
//! WORKDIR, COPY rules and ADD of local archives. Results are read from `type=local`
//! directories and, for the image config, with skopeo.

use serde_json::json;

use crate::support::*;

/// Builds an OCI archive tagged `app:1` and returns its config (`config` object).
fn image_config(project: &Project, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["-t", "app:1"];
    full.extend_from_slice(args);
    let archive = project.build_oci("image.tar", &full);
    skopeo_config(&archive)["config"].clone()
}

fn env_of(config: &serde_json::Value) -> Vec<String> {
    config["Env"].as_array().unwrap().iter().map(|value| value.as_str().unwrap().to_string()).collect()
}

#[test]
fn multi_stage_copy_from_name_and_index() {
    let project = Project::new();
    project.write("a.txt", "a\n").write("b.txt", "b\n").dockerfile(
        "FROM scratch AS first\nCOPY a.txt /a.txt\n\
         FROM scratch AS second\nCOPY b.txt /b.txt\n\
         FROM scratch\nCOPY --from=first /a.txt /from-name.txt\nCOPY --from=1 /b.txt /from-index.txt\n",
    );
    let dir = project.build_local("out", &[]);
    assert_eq!(tree(&dir), ["from-index.txt", "from-name.txt"]);
    assert_eq!(read(&dir.join("from-name.txt")), "a\n");
    assert_eq!(read(&dir.join("from-index.txt")), "b\n");
}

#[test]
fn target_stops_at_that_stage() {
    let project = Project::new();
    project.write("a.txt", "a\n").write("b.txt", "b\n").dockerfile(
        "FROM scratch AS build\nCOPY a.txt /a.txt\nFROM build AS test\nCOPY b.txt /b.txt\nFROM scratch\nCOPY --from=test /b.txt /b.txt\n",
    );
    let out = project.out("out");
    let run = project.build(&["--target", "build", "-o", &format!("type=local,dest={}", out.display())]).ok();
    assert_eq!(tree(&out), ["a.txt"]);
    run.stderr_lacks("COPY b.txt");
    run.stderr_lacks("COPY --from=test");
    // Stage names match case-insensitively, as BuildKit does.
    let upper = project.out("upper");
    project.build(&["--target", "TEST", "-o", &format!("type=local,dest={}", upper.display())]).ok();
    assert_eq!(tree(&upper), ["a.txt", "b.txt"]);
}

#[test]
fn unused_stages_are_not_built() {
    let project = Project::new();
    project.write("a.txt", "a\n").write("unused.txt", "u\n").dockerfile(
        "FROM scratch AS unused\nCOPY unused.txt /unused.txt\nCOPY missing-file /never\n\
         FROM scratch\nCOPY a.txt /a.txt\n",
    );
    let run = project.build(&["-o", &format!("type=local,dest={}", project.out("out").display())]).ok();
    run.stderr_lacks("unused.txt");
    run.stderr_lacks("missing-file");
    let steps: Vec<String> = run.steps().into_iter().map(|(name, _)| name).collect();
    assert!(steps.iter().any(|name| name.contains("COPY a.txt /a.txt")), "{steps:?}");
    assert!(!steps.iter().any(|name| name.contains("[unused")), "{steps:?}");
    assert_eq!(tree(&project.out("out")), ["a.txt"]);
}

#[test]
fn global_arg_in_from() {
    let project = Project::new();
    project
        .write("a.txt", "a\n")
        .write("b.txt", "b\n")
        .dockerfile("ARG BASE=one\nFROM scratch AS one\nCOPY a.txt /a.txt\nFROM scratch AS two\nCOPY b.txt /b.txt\nFROM ${BASE}\n");
    assert_eq!(tree(&project.build_local("default", &[])), ["a.txt"]);
    assert_eq!(tree(&project.build_local("overridden", &["--build-arg", "BASE=two"])), ["b.txt"]);
}

#[test]
fn build_args_from_value_and_environment() {
    let project = Project::new();
    project.dockerfile("FROM scratch\nARG FROM_VALUE\nARG FROM_ENV\nARG UNSET=default\nENV V=$FROM_VALUE E=$FROM_ENV U=$UNSET\n");
    let mut command = project.build_command(&[
        "--build-arg",
        "FROM_VALUE=given",
        "--build-arg",
        "FROM_ENV",
        "--build-arg",
        "UNSET",
        "-t",
        "app:1",
        "-o",
        &format!("type=oci,dest={}", project.out("image.tar").display()),
    ]);
    command.env("FROM_ENV", "from the environment").env_remove("UNSET");
    run_command(command, None).ok();
    let config = skopeo_config(&project.out("image.tar"))["config"].clone();
    let env = env_of(&config);
    assert!(env.contains(&"V=given".to_string()), "{env:?}");
    assert!(env.contains(&"E=from the environment".to_string()), "{env:?}");
    // A bare KEY not in the environment leaves the Dockerfile default.
    assert!(env.contains(&"U=default".to_string()), "{env:?}");
}

#[test]
fn env_wins_over_arg_in_expansion() {
    let project = Project::new();
    project.dockerfile(
        "FROM scratch\nARG X=from-arg\nENV X=from-env\nENV SEEN_X=$X\nARG Y=default\nENV SEEN_Y=${Y}\nENV SEEN_Z=${Z:-fallback}\n",
    );
    let config = image_config(&project, &["--build-arg", "X=from-cli", "--build-arg", "Y=from-cli"]);
    let env = env_of(&config);
    assert!(env.contains(&"SEEN_X=from-env".to_string()), "ENV beats ARG and --build-arg: {env:?}");
    assert!(env.contains(&"SEEN_Y=from-cli".to_string()), "--build-arg beats the ARG default: {env:?}");
    assert!(env.contains(&"SEEN_Z=fallback".to_string()), "{env:?}");
    // ARG values are not part of the image.
    assert!(!env.iter().any(|entry| entry.starts_with("Y=")), "{env:?}");
}

#[test]
fn required_variable_error() {
    let project = Project::new();
    project.dockerfile("FROM scratch\nARG X\nENV A=\"${X:?x is required}\"\n");
    let run = project.build(&["-o", &format!("type=local,dest={}", project.out("out").display())]).fails(1);
    run.stderr_has("X: x is required");
    run.stderr_has("Dockerfile:3\n");
    run.stderr_has("   3 | >>> ENV A=\"${X:?x is required}\"\n");
    // Given, it builds.
    let config = image_config(&project, &["--build-arg", "X=1"]);
    assert!(env_of(&config).contains(&"A=1".to_string()));
}

#[test]
fn onbuild_triggers_run_in_the_child_stage() {
    let project = Project::new();
    project
        .write("trigger.txt", "t\n")
        .write("child.txt", "c\n")
        .dockerfile("FROM scratch AS parent\nONBUILD COPY trigger.txt /from-trigger.txt\nFROM parent\nCOPY child.txt /child.txt\n");
    assert_eq!(tree(&project.build_local("out", &[])), ["child.txt", "from-trigger.txt"]);
    // Triggers are consumed by the child: the image does not carry them on.
    let config = image_config(&project, &[]);
    assert!(config.get("OnBuild").is_none_or(|value| value.is_null() || value == &json!([])), "{config:#}");
    // The parent itself records the trigger without running it.
    let parent = image_config(&project, &["--target", "parent"]);
    assert_eq!(parent["OnBuild"], json!(["COPY trigger.txt /from-trigger.txt"]));
}

#[test]
fn heredoc_copy_expands_unless_quoted() {
    let project = Project::new();
    project.dockerfile(
        "FROM scratch\nARG NAME=world\nCOPY <<EOF /expanded\nhello $NAME\nEOF\nCOPY <<\"EOF\" /quoted\nhello $NAME\nEOF\n\
         COPY <<one <<two /both/\nfirst\none\nsecond\ntwo\n",
    );
    let dir = project.build_local("out", &[]);
    assert_eq!(read(&dir.join("expanded")), "hello world\n");
    assert_eq!(read(&dir.join("quoted")), "hello $NAME\n");
    assert_eq!(read(&dir.join("both/one")), "first\n");
    assert_eq!(read(&dir.join("both/two")), "second\n");
}

#[test]
fn escape_directive_changes_the_continuation_character() {
    let project = Project::new();
    project.write("a.txt", "a\n").dockerfile("# escape=`\nFROM scratch\nCOPY a.txt `\n     /dest\\with-backslash.txt\n");
    let dir = project.build_local("out", &[]);
    assert_eq!(tree(&dir), ["dest\\with-backslash.txt"]);
}

#[test]
fn relative_workdir_builds_on_the_previous_one() {
    let project = Project::new();
    project.write("a.txt", "a\n").dockerfile("FROM scratch\nWORKDIR /one\nWORKDIR two\nWORKDIR three\nCOPY a.txt .\n");
    let config = image_config(&project, &[]);
    assert_eq!(config["WorkingDir"], "/one/two/three");
    assert_eq!(tree(&project.build_local("out", &[])), ["one/", "one/two/", "one/two/three/", "one/two/three/a.txt"]);
}

#[test]
fn copy_follows_buildkit_path_rules() {
    let project = Project::from_fixture("copy");
    let dir = project.build_local("out", &[]);
    assert_eq!(
        tree(&dir),
        [
            "contents/",
            "contents/notes.md",
            "contents/one.txt",
            "contents/sub/",
            "contents/sub/three.txt",
            "contents/two.txt",
            "excluded/",
            "excluded/Dockerfile",
            "excluded/src/",
            "excluded/src/one.txt",
            "excluded/src/sub/",
            "excluded/src/sub/three.txt",
            "excluded/src/two.txt",
            "into/",
            "into/README.md",
            "linked/",
            "linked/one.txt",
            "parents/",
            "parents/src/",
            "parents/src/sub/",
            "parents/src/sub/three.txt",
            "renamed",
            "wild/",
            "wild/one.txt",
            "wild/two.txt",
        ]
    );
    assert_eq!(read(&dir.join("renamed")), "readme\n");
    assert_eq!(read(&dir.join("contents/sub/three.txt")), "three\n");
}

#[test]
fn copy_of_several_sources_onto_a_path_without_slash_keeps_the_last() {
    // BuildKit v0.32 accepts a destination without a trailing slash and copies each source onto
    // it (conformance case copy-many-without-slash-fails, recorded from the oracle).
    let project = Project::new();
    project.write("a", "a\n").write("b", "b\n").dockerfile("FROM scratch\nCOPY a b /dest\n");
    let dir = project.build_local("out", &[]);
    assert_eq!(tree(&dir), ["dest"]);
    assert_eq!(read(&dir.join("dest")), "b\n");
}

/// A context holding `a.tar.gz` and `b.tar.xz`, each with `dir/inside.txt` and `top.txt`.
fn archive_project() -> Project {
    let project = Project::new();
    let payload = project.out("payload");
    write_file(&payload.join("dir/inside.txt"), "inside\n");
    write_file(&payload.join("top.txt"), "top\n");
    tool("tar", &["-czf", project.ctx().join("a.tar.gz").to_str().unwrap(), "-C", payload.to_str().unwrap(), "dir", "top.txt"]);
    tool("tar", &["-cJf", project.ctx().join("b.tar.xz").to_str().unwrap(), "-C", payload.to_str().unwrap(), "dir", "top.txt"]);
    project
}

#[test]
fn add_extracts_local_archives() {
    let project = archive_project();
    project.write("plain.txt", "plain\n");
    project.dockerfile("FROM scratch\nADD a.tar.gz /gz/\nADD b.tar.xz /xz/\nADD plain.txt /plain/\n");
    let dir = project.build_local("out", &[]);
    assert_eq!(
        tree(&dir),
        [
            "gz/",
            "gz/dir/",
            "gz/dir/inside.txt",
            "gz/top.txt",
            "plain/",
            "plain/plain.txt",
            "xz/",
            "xz/dir/",
            "xz/dir/inside.txt",
            "xz/top.txt",
        ]
    );
    assert_eq!(read(&dir.join("gz/dir/inside.txt")), "inside\n");
    assert_eq!(read(&dir.join("xz/top.txt")), "top\n");
}

#[test]
fn copy_does_not_extract_archives() {
    let project = Project::new();
    let payload = project.out("payload");
    write_file(&payload.join("top.txt"), "top\n");
    tool("tar", &["-czf", project.ctx().join("a.tar.gz").to_str().unwrap(), "-C", payload.to_str().unwrap(), "top.txt"]);
    project.dockerfile("FROM scratch\nCOPY a.tar.gz /\n");
    assert_eq!(tree(&project.build_local("out", &[])), ["a.tar.gz"]);
}

#[test]
fn add_archive_to_a_path_without_slash_unpacks_into_it() {
    // BuildKit unpacks `ADD a.tar.gz /gz` into the directory `/gz`, as with `/gz/`.
    let project = archive_project();
    project.dockerfile("FROM scratch\nADD a.tar.gz /gz\nADD b.tar.xz /xz\n");
    assert_eq!(
        tree(&project.build_local("out", &[])),
        ["gz/", "gz/dir/", "gz/dir/inside.txt", "gz/top.txt", "xz/", "xz/dir/", "xz/dir/inside.txt", "xz/top.txt"]
    );
}

/// Issue 11: one platform normaliser. `--platform linux/x86_64` is `linux/amd64` in the build
/// arguments, as the oracle printed (`TARGETPLATFORM=linux/amd64 TARGETARCH=amd64`, no variant),
/// and it selects the amd64 image of a layout; rbuild gave `TARGETARCH=x86_64`.
#[test]
fn platform_names_are_normalised_as_buildkit_does() {
    let project = Project::new();
    project.dockerfile(
        "FROM busybox\nARG TARGETPLATFORM\nARG TARGETARCH\nARG TARGETVARIANT\nRUN echo \"$TARGETPLATFORM $TARGETARCH [$TARGETVARIANT]\" > /p\n",
    );
    let busybox = crate::images::busybox_context();
    let dir = project.build_local("out", &["--build-context", &busybox, "--platform", "linux/x86_64"]);
    assert_eq!(read(&dir.join("p")), "linux/amd64 amd64 []\n");
}
