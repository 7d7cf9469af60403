//! The build context: `.dockerignore` (and `<Dockerfile>.dockerignore`), symlinks, a Dockerfile
//! from stdin, named contexts (directories and OCI layouts).

use std::os::unix::fs::symlink;

use serde_json::json;

use crate::support::*;

fn local_spec(project: &Project, name: &str) -> String {
    format!("type=local,dest={}", project.out(name).display())
}

#[test]
fn dockerignored_file_cannot_be_copied() {
    let project = Project::new();
    project
        .write("a.txt", "a\n")
        .write("secret.txt", "s\n")
        .write(".dockerignore", "# comment\n*.log\nsecret.txt\n")
        .dockerfile("FROM scratch\nCOPY a.txt /a.txt\nCOPY secret.txt /secret.txt\n");
    let run = project.build(&["-o", &local_spec(&project, "out")]).fails(1);
    run.stderr_has("   3 | >>> COPY secret.txt /secret.txt\n");
    // The error names the path and the rule that excluded it.
    run.stderr_has("\"/secret.txt\": not found");
    run.stderr_has("secret.txt` on line 3");
    run.stderr_has(".dockerignore");
    assert!(!project.out("out").exists());
}

#[test]
fn dockerignore_excludes_from_a_directory_copy_and_reincludes_with_bang() {
    let project = Project::new();
    project
        .write("keep.txt", "k\n")
        .write("logs/a.log", "a\n")
        .write("logs/keep.log", "kept\n")
        .write("logs/deep/b.log", "b\n")
        .write("build/out.bin", "o\n")
        .write(".dockerignore", "logs\n!logs/keep.log\nbuild/\nDockerfile\n.dockerignore\n")
        .dockerfile("FROM scratch\nCOPY . /all/\n");
    let dir = project.build_local("out", &[]);
    assert_eq!(tree(&dir), ["all/", "all/keep.txt", "all/logs/", "all/logs/keep.log"]);
    assert_eq!(read(&dir.join("all/logs/keep.log")), "kept\n");
}

#[test]
fn dockerfile_specific_dockerignore_wins() {
    let project = Project::new();
    project
        .write("a.txt", "a\n")
        .write("b.txt", "b\n")
        .write(".dockerignore", "a.txt\n")
        .write("docker/App.Dockerfile", "FROM scratch\nCOPY . /all/\n")
        .write("docker/App.Dockerfile.dockerignore", "b.txt\ndocker\n");
    let dockerfile = project.ctx().join("docker/App.Dockerfile");
    let dir = project.build_local("out", &["-f", dockerfile.to_str().unwrap()]);
    // The root .dockerignore is not read at all: a.txt and .dockerignore are in.
    assert_eq!(tree(&dir), ["all/", "all/.dockerignore", "all/a.txt"]);
}

#[test]
fn symlinks_stay_symlinks() {
    let project = Project::new();
    project.write("target.txt", "t\n").write("dir/inner.txt", "i\n").dockerfile("FROM scratch\nCOPY . /all/\nCOPY link /single-link\n");
    symlink("target.txt", project.ctx().join("link")).unwrap();
    symlink("../target.txt", project.ctx().join("dir/up")).unwrap();
    symlink("/does/not/exist", project.ctx().join("dangling")).unwrap();
    let dir = project.build_local("out", &[]);
    let entries = tree(&dir);
    for expected in ["all/link -> target.txt", "all/dir/up -> ../target.txt", "all/dangling -> /does/not/exist"] {
        assert!(entries.contains(&expected.to_string()), "no {expected:?} in {entries:#?}");
    }
    // A source named directly that is a symlink is followed, as BuildKit does.
    assert!(entries.contains(&"single-link".to_string()), "{entries:#?}");
    assert_eq!(read(&dir.join("single-link")), "t\n");
    // The same in the image layer, by GNU tar.
    let archive = project.build_oci("image.tar", &[]);
    let listing = layer_listings(&archive).join("");
    assert!(listing.contains("all/link -> target.txt"), "{listing}");
    assert!(listing.lines().any(|line| line.starts_with('l') && line.ends_with("all/dangling -> /does/not/exist")), "{listing}");
}

/// A source named directly that is a symlink to a directory copies that directory's contents
/// (and a change inside it invalidates the step); links out of the context lead nowhere.
#[test]
fn a_named_link_to_a_directory_copies_its_contents() {
    let project = Project::new();
    project.write("real/a.txt", "a\n").write("real/sub/b.txt", "b\n").dockerfile("FROM scratch\nCOPY current /app\n");
    symlink("real", project.ctx().join("current")).unwrap();
    let dir = project.build_local("out", &[]);
    assert_eq!(read(&dir.join("app/a.txt")), "a\n");
    assert_eq!(read(&dir.join("app/sub/b.txt")), "b\n");
    project.write("real/a.txt", "changed\n");
    let dir = project.build_local("again", &[]);
    assert_eq!(read(&dir.join("app/a.txt")), "changed\n", "the step did not see the change behind the link");
    // A link that leaves the context is resolved inside it, where there is no `etc`: "not
    // found", as BuildKit says (conformance case symlink-pointing-out-explicit); the host's /etc
    // is never read.
    symlink("../../../../etc", project.ctx().join("escape")).unwrap();
    project.dockerfile("FROM scratch\nCOPY escape /etc-copy\n");
    let spec = format!("type=local,dest={}", project.out("escaped").display());
    project.build(&["-o", &spec]).fails(1).stderr_has("\"/escape\": not found");
    assert!(!project.out("escaped").join("etc-copy").exists());
}

#[test]
fn dockerfile_from_stdin() {
    let project = Project::new();
    project.write("a.txt", "a\n");
    let command = project.build_command(&["-f", "-", "-o", &local_spec(&project, "out")]);
    let run = run_command(command, Some(b"FROM scratch\nCOPY a.txt /from-stdin.txt\n")).ok();
    run.stderr_has("[internal] load build definition from Dockerfile");
    assert_eq!(tree(&project.out("out")), ["from-stdin.txt"]);
}

#[test]
fn named_context_directory_in_copy_from_and_from() {
    let project = Project::new();
    let extra = project.out("extra");
    write_file(&extra.join("lib/x.txt"), "extra\n");
    project.write("a.txt", "a\n").dockerfile(
        "FROM scratch AS copied\nCOPY --from=x /lib/x.txt /x.txt\nCOPY a.txt /a.txt\n\
         FROM x AS based\nCOPY a.txt /a.txt\n",
    );
    let spec = format!("x={}", extra.display());
    let copied = project.build_local("copied", &["--build-context", &spec, "--target", "copied"]);
    assert_eq!(tree(&copied), ["a.txt", "x.txt"]);
    assert_eq!(read(&copied.join("x.txt")), "extra\n");
    let based = project.build_local("based", &["--build-context", &spec, "--target", "based"]);
    assert_eq!(tree(&based), ["a.txt", "lib/", "lib/x.txt"]);
}

/// An OCI layout made by umoci, tagged `base`, with `/etc/base.conf`, ENV FROM_BASE=umoci and
/// WORKDIR /srv. `insert` uses `umoci insert` (whose layer tar ends without the padding of its
/// last file: Go's archive/tar, hence BuildKit and containerd, read it), otherwise
/// `umoci unpack` + `umoci repack`.
fn umoci_layout(project: &Project, insert: bool) -> String {
    let layout = project.out("layout");
    let image = format!("{}:base", layout.display());
    tool("umoci", &["init", "--layout", layout.to_str().unwrap()]);
    tool("umoci", &["new", "--image", &image]);
    if insert {
        let base_files = project.out("base-files");
        write_file(&base_files.join("etc/base.conf"), "base\n");
        tool("umoci", &["insert", "--rootless", "--image", &image, base_files.join("etc").to_str().unwrap(), "/etc"]);
    } else {
        let bundle = project.out("base-bundle");
        tool("umoci", &["unpack", "--rootless", "--image", &image, bundle.to_str().unwrap()]);
        write_file(&bundle.join("rootfs/etc/base.conf"), "base\n");
        tool("umoci", &["repack", "--image", &image, bundle.to_str().unwrap()]);
    }
    tool("umoci", &["config", "--image", &image, "--config.env", "FROM_BASE=umoci", "--config.workingdir", "/srv"]);
    image
}

fn build_on_umoci_layout(project: &Project, image: &str) {
    project.write("a.txt", "a\n").dockerfile("FROM base\nENV MINE=1\nCOPY a.txt ./a.txt\n");
    let spec = format!("base=oci-layout://{image}");
    let archive = project.build_oci("out.tar", &["--build-context", &spec, "-t", "app:1"]);
    let config = skopeo_config(&archive);
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(env.contains(&json!("FROM_BASE=umoci")), "the base image's ENV reaches the stage: {env:?}");
    assert!(env.contains(&json!("MINE=1")), "{env:?}");
    assert_eq!(config["config"]["WorkingDir"], "/srv");
    let rootfs = umoci_unpack(&archive, "1");
    assert_eq!(tree(&rootfs), ["etc/", "etc/base.conf", "srv/", "srv/a.txt"]);
    assert_eq!(read(&rootfs.join("etc/base.conf")), "base\n");
    // The base layers come first, unchanged.
    let base_config = json(&tool("skopeo", &["inspect", "--config", "--raw", &format!("oci:{image}")]));
    let base_layers = base_config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(&config["rootfs"]["diff_ids"].as_array().unwrap()[..base_layers.len()], &base_layers[..]);
}

#[test]
fn named_context_from_an_umoci_layout() {
    let project = Project::new();
    let image = umoci_layout(&project, false);
    build_on_umoci_layout(&project, &image);
}

#[test]
fn named_context_from_an_umoci_insert_layout() {
    let project = Project::new();
    let image = umoci_layout(&project, true);
    build_on_umoci_layout(&project, &image);
}

#[test]
fn named_context_from_an_rbuild_layout() {
    let project = Project::new();
    project.write("base.txt", "from base\n").write("a.txt", "a\n");
    project.write("Base.Dockerfile", "FROM scratch\nENV BASE_ENV=yes\nLABEL base=1\nCOPY base.txt /base.txt\n");
    let layout = project.out("layout");
    let base_dockerfile = project.ctx().join("Base.Dockerfile");
    project
        .build(&[
            "-f",
            base_dockerfile.to_str().unwrap(),
            "-t",
            "base:base",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ])
        .ok();
    project.dockerfile("FROM base\nCOPY a.txt /a.txt\n");
    let spec = format!("base=oci-layout://{}:base", layout.display());
    let archive = project.build_oci("out.tar", &["--build-context", &spec, "-t", "app:1"]);
    let config = skopeo_config(&archive);
    assert!(config["config"]["Env"].as_array().unwrap().contains(&json!("BASE_ENV=yes")), "{config:#}");
    assert_eq!(config["config"]["Labels"]["base"], "1");
    assert_eq!(tree(&umoci_unpack(&archive, "1")), ["a.txt", "base.txt"]);
    // The base history comes first.
    assert_eq!(config["history"][0]["created_by"], "ENV BASE_ENV=yes");
}

/// The context cannot reach out (issue 9, point 3; BuildKit did the same with these files, asked
/// with the oracle): a `.dockerignore` that links inside the context is followed, one that
/// links out (to `/dev/zero`, which read until memory ran out, or to a host file) counts as
/// absent; a default Dockerfile that links out of its directory is "no such file", and one
/// that links inside it is read.
#[test]
fn links_out_of_the_context_lead_nowhere() {
    let project = Project::new();
    project
        .write("a.txt", "a\n")
        .write("b.txt", "b\n")
        .write("real-ignore", "a.txt\n")
        .write("real-dockerfile", "FROM scratch\nCOPY . /\n");
    let ctx = project.ctx();
    symlink("real-dockerfile", ctx.join("Dockerfile")).unwrap();
    symlink("real-ignore", ctx.join(".dockerignore")).unwrap();
    let inside = project.build_local("inside", &[]);
    assert!(!inside.join("a.txt").exists() && inside.join("b.txt").exists(), "{:?}", tree(&inside));
    for target in ["/dev/zero", "/etc/hostname"] {
        std::fs::remove_file(ctx.join(".dockerignore")).unwrap();
        symlink(target, ctx.join(".dockerignore")).unwrap();
        let spec = format!("type=local,dest={}", project.out("out").display());
        let command = project.build_command(&["-o", &spec]);
        let run = run_command(command, None).ok();
        assert!(project.out("out").join("a.txt").exists(), "{target}: the link was followed\n{}", run.stderr);
    }
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    symlink("/dev/zero", ctx.join("Dockerfile")).unwrap();
    project.build(&[]).fails(2).stderr_has("failed to read dockerfile: open Dockerfile: no such file or directory");
}

/// A bind mount's `source=` that links out of the context is "not found", as in BuildKit; the
/// host directory is never mounted.
#[test]
fn a_bind_source_linking_out_of_the_context_is_not_found() {
    let project = Project::new();
    project.dockerfile(
        "FROM scratch
RUN --mount=type=bind,source=out,target=/x true
",
    );
    symlink("../../../../../etc", project.ctx().join("out")).unwrap();
    project.build(&[]).fails(1).stderr_has("\"/out\": not found");
}
