//! RUN steps in real containers, as root and as an unprivileged user (`rbuild-test`, with
//! subordinate ids, through `runuser`): the forms of RUN, the process environment, USER,
//! WORKDIR, the hostname, the diff (ownership, whiteouts, opaque directories, no mount-point
//! stubs), `--mount`, `--network`, failures, Ctrl-C, parallel stages, the cache, and a real
//! Debian `apt-get install` loaded into podman.
//!
//! Every busybox test runs its body once per [`Mode`] with [`both`] and asserts the same results.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::images::{BUSYBOX_TAG, busybox_layout, context_arg, debian_context};
use crate::support::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// rbuild run by root (this test process).
    Root,
    /// rbuild run by `rbuild-test` through `runuser`, with its own subordinate ids.
    Rootless,
}

/// One project and the mode its builds run in. In rootless mode the whole project dir (context,
/// state root, outputs, and a copy of the busybox layout) belongs to the test user.
pub(crate) struct Case {
    pub(crate) project: Project,
    pub(crate) mode: Mode,
    /// `busybox=oci-layout://...`, the `--build-context` every build of the case gets.
    pub(crate) busybox: String,
}

impl Case {
    pub(crate) fn new(mode: Mode) -> Case {
        let project = Project::new();
        let busybox = match mode {
            Mode::Root => context_arg("busybox", &busybox_layout(), BUSYBOX_TAG),
            Mode::Rootless => {
                let layout = project.out("busybox-layout");
                tool("cp", &["-a", busybox_layout().to_str().unwrap(), layout.to_str().unwrap()]);
                give_to_test_user(&project);
                context_arg("busybox", &layout, BUSYBOX_TAG)
            }
        };
        Case { project, mode, busybox }
    }

    pub(crate) fn dockerfile(&self, content: &str) -> &Case {
        self.project.dockerfile(content);
        self
    }

    pub(crate) fn write(&self, relative: &str, content: &str) -> &Case {
        self.project.write(relative, content);
        self
    }

    pub(crate) fn out(&self, name: &str) -> PathBuf {
        self.project.out(name)
    }

    /// `rbuild build --root ROOT --progress=plain --build-context busybox=... ARGS ctx`, as this
    /// case's user.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut full = vec!["--build-context", self.busybox.as_str()];
        full.extend_from_slice(args);
        let command = self.project.build_command(&full);
        match self.mode {
            Mode::Root => command,
            Mode::Rootless => as_test_user(&command),
        }
    }

    /// [`Case::command`] without the switch to the test user: for a test that starts rbuild as
    /// that user its own way.
    pub(crate) fn command_as_caller(&self, args: &[&str]) -> Command {
        let mut full = vec!["--build-context", self.busybox.as_str()];
        full.extend_from_slice(args);
        self.project.build_command(&full)
    }

    pub(crate) fn build(&self, args: &[&str]) -> Run {
        let mut run = run_command(self.command(args), None);
        run.what = format!("[{:?}] {}", self.mode, run.what);
        run
    }

    /// Builds to `type=oci,dest=NAME` and `type=local,dest=DIR` at once; returns both.
    #[track_caller]
    fn build_both(&self, name: &str, dir: &str, args: &[&str]) -> (PathBuf, PathBuf) {
        let archive = self.out(name);
        let local = self.out(dir);
        let oci = format!("type=oci,dest={}", archive.display());
        let local_spec = format!("type=local,dest={}", local.display());
        let mut full = vec!["-o", oci.as_str(), "-o", local_spec.as_str()];
        full.extend_from_slice(args);
        self.build(&full).ok();
        assert!(archive.is_file(), "[{:?}] no archive at {}", self.mode, archive.display());
        assert!(local.is_dir(), "[{:?}] no directory at {}", self.mode, local.display());
        (archive, local)
    }

    #[track_caller]
    pub(crate) fn build_local(&self, dir: &str, args: &[&str]) -> PathBuf {
        let local = self.out(dir);
        let spec = format!("type=local,dest={}", local.display());
        let mut full = vec!["-o", spec.as_str()];
        full.extend_from_slice(args);
        self.build(&full).ok();
        assert!(local.is_dir(), "[{:?}] no directory at {}", self.mode, local.display());
        local
    }
}

/// Runs `test` as root, then rootless, each in a fresh project.
pub(crate) fn both(test: impl Fn(&Case)) {
    for mode in [Mode::Root, Mode::Rootless] {
        eprintln!("=== mode {mode:?}");
        let case = Case::new(mode);
        test(&case);
    }
}

/// The content of `dir/relative`.
#[track_caller]
fn file(dir: &Path, relative: &str) -> String {
    read(&dir.join(relative))
}

/// The number of layers of the busybox image.
fn busybox_layer_count() -> usize {
    let layout = busybox_layout();
    let index = json(&read(&layout.join("index.json")));
    let digest = index["manifests"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let manifest = json(&read(&layout.join("blobs/sha256").join(digest)));
    manifest["layers"].as_array().unwrap().len()
}

/// The paths of a `tar -tv` listing (6th field on; symlinks keep ` -> target`).
fn listing_paths(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            // mode owner size date time path; the size is right-aligned, so skip fields loosely.
            let mut rest = line;
            for _ in 0..5 {
                rest = rest.trim_start();
                let end = rest.find(char::is_whitespace)?;
                rest = &rest[end..];
            }
            Some(rest.trim_start().trim_start_matches("./").to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Forms, environment, USER, WORKDIR, hostname
// ---------------------------------------------------------------------------------------------

const FORMS: &str = r#"FROM busybox
ARG A=from-arg
ARG B
ENV E=from-env
RUN echo "shell $0" > /shell-form
RUN ["/bin/sh", "-c", "echo \"$0 $1\" > /exec-form", "zero", "one"]
RUN ["touch", "/exec-path"]
RUN echo "flags:$-" > /flags-default
SHELL ["/bin/sh", "-ec"]
RUN echo "$0 flags:$-" > /flags-shell
RUN <<EOF
echo line1 > /heredoc
echo "line2 $E" >> /heredoc
EOF
RUN env > /env
USER app
RUN id > /home/app/id-name
USER 1000
RUN id > /home/app/id-uid
USER 1000:50
RUN id > /home/app/id-uid-gid
USER root
WORKDIR /new/work/dir
RUN pwd > /pwd && touch here && ls -ld /new/work/dir | cut -c1-10 > /workdir-mode
RUN hostname > /hostname
RUN cat /proc/self/uid_map > /uid_map && cat /proc/self/gid_map > /gid_map
"#;

#[test]
fn run_forms_environment_user_workdir_hostname() {
    both(|case| {
        case.dockerfile(FORMS);
        let (archive, out) = case.build_both("img.tar", "out", &["--build-arg", "B=from-cli"]);

        // Shell form through the default `/bin/sh -c`.
        assert_eq!(file(&out, "shell-form"), "shell /bin/sh\n");
        // Exec form: argv as written, no shell in between; PATH lookup of the program.
        assert_eq!(file(&out, "exec-form"), "zero one\n");
        assert!(out.join("exec-path").is_file());
        // SHELL ["/bin/sh", "-ec"]: the shell runs with -e.
        let default_flags = file(&out, "flags-default");
        assert!(default_flags.starts_with("flags:") && !default_flags.contains('e'), "{default_flags:?}");
        let shell_flags = file(&out, "flags-shell");
        assert!(
            shell_flags.starts_with("/bin/sh flags:") && shell_flags.trim_end().rsplit(':').next().unwrap().contains('e'),
            "{shell_flags:?}"
        );
        // Heredoc: the body is the script.
        assert_eq!(file(&out, "heredoc"), "line1\nline2 from-env\n");

        // ENV and ARG (declared with a default, and from --build-arg) in the process environment.
        let env = file(&out, "env");
        let lines: Vec<&str> = env.lines().collect();
        for wanted in
            ["A=from-arg", "B=from-cli", "E=from-env", "HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        {
            assert!(lines.contains(&wanted), "no {wanted} in the RUN environment:\n{env}");
        }
        for line in &lines {
            assert!(
                !line.starts_with("CARGO") && !line.starts_with("RUST") && !line.starts_with("SUDO"),
                "host variable {line} leaked:\n{env}"
            );
        }
        // ...but build args are not in the image config.
        let config = skopeo_config(&archive);
        let image_env: Vec<String> =
            config["config"]["Env"].as_array().unwrap().iter().map(|value| value.as_str().unwrap().to_string()).collect();
        assert!(image_env.contains(&"E=from-env".to_string()), "{image_env:?}");
        assert!(!image_env.iter().any(|entry| entry.starts_with("A=") || entry.starts_with("B=")), "build args in Env: {image_env:?}");

        // USER by name and by uid: the primary group from /etc/passwd, the supplementary groups
        // from /etc/group (app is a member of staff) plus the primary one, as BuildKit does (the
        // oracle's output). With an explicit group, that group alone.
        assert_eq!(file(&out, "home/app/id-name"), "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)\n");
        assert_eq!(file(&out, "home/app/id-uid"), "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)\n");
        assert_eq!(file(&out, "home/app/id-uid-gid"), "uid=1000(app) gid=50(staff) groups=50(staff)\n");

        // WORKDIR created when missing, and the cwd.
        assert_eq!(file(&out, "pwd"), "/new/work/dir\n");
        assert!(out.join("new/work/dir/here").is_file());
        assert_eq!(file(&out, "workdir-mode"), "drwxr-xr-x\n");

        // BuildKit's hostname.
        assert_eq!(file(&out, "hostname"), "buildkitsandbox\n");

        // Rootless for real: the caller is container root, its subordinate ids above it.
        let maps = |name: &str| -> Vec<Vec<String>> {
            file(&out, name).lines().map(|line| line.split_whitespace().map(str::to_string).collect()).collect()
        };
        let (uid_map, gid_map) = (maps("uid_map"), maps("gid_map"));
        match case.mode {
            Mode::Root => {
                assert_eq!(uid_map, vec![vec!["0", "0", "4294967295"]]);
                assert_eq!(gid_map, vec![vec!["0", "0", "4294967295"]]);
            }
            Mode::Rootless => {
                let (uid, gid) = ensure_test_user();
                let start = TEST_SUBID_START.to_string();
                let count = TEST_SUBID_COUNT.to_string();
                assert_eq!(
                    uid_map,
                    vec![vec!["0".to_string(), uid.to_string(), "1".into()], vec!["1".into(), start.clone(), count.clone()]]
                );
                assert_eq!(gid_map, vec![vec!["0".to_string(), gid.to_string(), "1".into()], vec!["1".into(), start, count]]);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 2. Ownership and the diff
// ---------------------------------------------------------------------------------------------

const DIFF: &str = "FROM busybox
RUN mkdir -p /d && touch /d/a /d/b && echo x > /gone && mkdir /keep && echo k > /keep/k
RUN rm /gone
RUN rm -rf /d && mkdir /d && touch /d/c
RUN true
RUN touch /f && chown 1000:50 /f
";

#[test]
fn run_diff_ownership_whiteouts_opaque_and_kept_mount_points() {
    let base = busybox_layer_count();
    both(|case| {
        case.dockerfile(DIFF);
        let (archive, out) = case.build_both("img.tar", "out", &[]);
        let listings = layer_listings(&archive);
        assert_eq!(listings.len(), base + 5, "one layer per RUN on top of busybox's {base}");
        let runs = &listings[base..];

        // chown inside the container → container-side owner in the layer, rootless too.
        let last = runs.last().unwrap();
        let (mode, owner) = listing_fields(listing_line(last, "f"));
        assert_eq!((mode.as_str(), owner.as_str()), ("-rw-r--r--", "1000/50"), "{last}");
        // The first RUN's files are root's.
        assert_eq!(listing_fields(listing_line(&runs[0], "keep/k")).1, "0/0", "{}", runs[0]);

        // Deleted in a later RUN: a whiteout in that layer, absent from the filesystem.
        let deleted = listing_paths(&runs[1]);
        assert!(deleted.contains(&".wh.gone".to_string()), "no whiteout for /gone in:\n{}", runs[1]);
        assert!(!out.join("gone").exists(), "/gone was deleted yet is in -o type=local");
        assert!(out.join("keep/k").is_file());

        // Removed and recreated directory: an opaque marker, only the new content.
        let recreated = listing_paths(&runs[2]);
        assert!(recreated.contains(&"d/.wh..wh..opq".to_string()), "no opaque marker for /d in:\n{}", runs[2]);
        assert!(recreated.contains(&"d/c".to_string()), "{}", runs[2]);
        assert_eq!(tree(&out.join("d")), vec!["c"]);

        // The first RUN on busybox (which has no /dev, /proc, /sys) leaves those mount points in
        // its layer as empty directories, as BuildKit does; no other stub, in no RUN layer; a RUN
        // that changes nothing gives an empty layer.
        for (index, listing) in runs.iter().enumerate() {
            for path in listing_paths(listing) {
                let mount_point =
                    ["proc", "dev", "sys"].iter().any(|stub| path == format!("{stub}/") || path.starts_with(&format!("{stub}/")));
                let stub = path == "etc/hosts" || path == "etc/resolv.conf";
                assert!(!stub && (!mount_point || index == 0), "mount-point stub {path} in RUN layer {index}:\n{listing}");
            }
        }
        for mount_point in ["proc/", "dev/", "sys/"] {
            assert!(listing_paths(&runs[0]).contains(&mount_point.to_string()), "no {mount_point} in the first RUN layer:\n{}", runs[0]);
        }
        assert_eq!(listing_paths(&runs[3]), Vec::<String>::new(), "`RUN true` changed nothing, yet its layer has:\n{}", runs[3]);
        for mount_point in ["proc", "dev", "sys"] {
            assert_eq!(tree(&out.join(mount_point)), Vec::<String>::new(), "{mount_point} in -o type=local");
        }
        for stub in ["etc/hosts", "etc/resolv.conf"] {
            assert!(!out.join(stub).exists(), "stub {stub} in -o type=local");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Mounts
// ---------------------------------------------------------------------------------------------

const BIND: &str = "FROM busybox AS stagename
RUN mkdir /x && echo from-stage > /x/s

FROM busybox
RUN --mount=type=bind,target=/src cat /src/a.txt /src/sub/b.txt > /bind-read
RUN --mount=type=bind,target=/src sh -c 'if touch /src/new 2>/dev/null; then echo writable; else echo read-only; fi' > /bind-ro
RUN --mount=type=bind,from=stagename,source=/x,target=/m cat /m/s > /from-stage
RUN --mount=type=bind,target=/src,rw sh -c 'echo changed > /src/a.txt && cat /src/a.txt' > /bind-rw
RUN --mount=type=bind,target=/src cat /src/a.txt > /bind-after
";

#[test]
fn run_bind_mounts() {
    both(|case| {
        case.write("a.txt", "context a\n").write("sub/b.txt", "context b\n").dockerfile(BIND);
        let (archive, out) = case.build_both("img.tar", "out", &[]);
        assert_eq!(file(&out, "bind-read"), "context a\ncontext b\n");
        assert_eq!(file(&out, "bind-ro"), "read-only\n");
        assert_eq!(file(&out, "from-stage"), "from-stage\n");
        assert_eq!(file(&out, "bind-rw"), "changed\n");
        // rw: writes are thrown away, in the next step and on the host.
        assert_eq!(file(&out, "bind-after"), "context a\n");
        assert_eq!(read(&case.project.ctx().join("a.txt")), "context a\n");
        // The mount points are not in the image.
        for absent in ["src", "m", "x"] {
            assert!(!out.join(absent).exists(), "/{absent} in the image");
        }
        for listing in layer_listings(&archive) {
            for path in listing_paths(&listing) {
                assert!(!path.starts_with("src") && !path.starts_with("m/") && path != "m", "mount {path} in a layer:\n{listing}");
            }
        }
    });
}

const CACHE_MOUNT: &str = "FROM busybox
ARG BUILD
RUN --mount=type=cache,target=/cache sh -c 'echo run $BUILD >> /cache/log; wc -l < /cache/log > /count'
RUN --mount=type=cache,target=/locked,sharing=locked sh -c 'echo x > /locked/y && cat /locked/y > /locked-seen'
RUN --mount=type=cache,target=/owned,uid=1000,gid=50,mode=0750 stat -c '%u %g %a' /owned > /owned-stat
";

#[test]
fn run_cache_mounts_survive_builds() {
    both(|case| {
        case.dockerfile(CACHE_MOUNT);
        let first = case.build_local("first", &[]);
        assert_eq!(file(&first, "count").trim(), "1");
        assert_eq!(file(&first, "locked-seen"), "x\n");
        assert_eq!(file(&first, "owned-stat"), "1000 50 750\n");
        // The cache's content is not in the image.
        assert!(!first.join("cache/log").exists(), "cache mount content in the image");
        assert!(!first.join("locked/y").exists(), "cache mount content in the image");

        // A step that runs again (here: another build argument) sees the first build's cache.
        let second = case.build_local("second", &["--build-arg", "BUILD=2"]);
        assert_eq!(file(&second, "count").trim(), "2", "the rebuild does not see the first build's cache");
        assert_eq!(file(&second, "owned-stat"), "1000 50 750\n");
    });
}

const TMPFS: &str = "FROM busybox
RUN --mount=type=tmpfs,target=/t sh -c 'echo x > /t/file && cat /t/file > /tmpfs-seen && grep \" /t \" /proc/mounts | cut -d\" \" -f3 > /tmpfs-type'
";

#[test]
fn run_tmpfs_mount_leaves_nothing() {
    both(|case| {
        case.dockerfile(TMPFS);
        let (archive, out) = case.build_both("img.tar", "out", &[]);
        assert_eq!(file(&out, "tmpfs-seen"), "x\n");
        assert_eq!(file(&out, "tmpfs-type"), "tmpfs\n");
        assert!(!out.join("t/file").exists(), "a tmpfs file in the image");
        let listings = layer_listings(&archive);
        let last = listings.last().unwrap();
        assert!(!listing_paths(last).iter().any(|path| path.starts_with("t/")), "tmpfs content in the layer:\n{last}");
    });
}

// ---------------------------------------------------------------------------------------------
// 4. Network
// ---------------------------------------------------------------------------------------------

/// The interface names of a `/proc/net/dev`.
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    proc_net_dev.lines().skip(2).filter_map(|line| line.split(':').next()).map(|name| name.trim().to_string()).collect()
}

#[test]
fn run_network_none() {
    both(|case| {
        case.dockerfile(
            "FROM busybox\nRUN --network=none cat /proc/net/dev > /none\nRUN cat /proc/net/dev > /default\nRUN --network=host cat /proc/net/dev > /host\n",
        );
        // RUN --network=host needs the network.host entitlement, as in BuildKit.
        let refused = case.build(&[]).fails(1);
        assert_snippet(&refused.stderr, 4, "RUN --network=host cat /proc/net/dev > /host");
        refused.stderr_has("ERROR: failed to solve: network.host is not allowed: RUN --network=host needs `--allow network.host`");
        let host_before = interfaces(&read(Path::new("/proc/net/dev")));
        let out = case.build_local("out", &["--allow", "network.host"]);
        assert_eq!(interfaces(&file(&out, "none")), vec!["lo"]);
        // Default: the host's network, as rootless BuildKit. Other tests (podman) add and remove
        // interfaces meanwhile, so compare with the interfaces the host had before and after.
        let after = interfaces(&read(Path::new("/proc/net/dev")));
        let stable: Vec<&String> = host_before.iter().filter(|name| after.contains(name)).collect();
        assert!(stable.len() > 1, "this host has only lo; the default network cannot be told apart");
        for name in ["default", "host"] {
            let seen = interfaces(&file(&out, name));
            for interface in &stable {
                assert!(seen.contains(interface), "[{:?}] RUN ({name} network) lacks the host's {interface}: {seen:?}", case.mode);
            }
            for interface in &seen {
                assert!(host_before.contains(interface) || after.contains(interface), "[{:?}] {interface} is not the host's", case.mode);
            }
        }

        // --network=none on the command line: the default for RUN.
        let case_cli = Case::new(case.mode);
        case_cli.dockerfile("FROM busybox\nRUN cat /proc/net/dev > /default\n");
        let out = case_cli.build_local("out", &["--network=none"]);
        assert_eq!(interfaces(&file(&out, "default")), vec!["lo"]);

        // --network=host on the command line grants the entitlement, as buildx's does.
        let case_host = Case::new(case.mode);
        case_host.dockerfile("FROM busybox\nRUN --network=host cat /proc/net/dev > /host\n");
        let out = case_host.build_local("out", &["--network=host"]);
        assert!(interfaces(&file(&out, "host")).len() > 1);
    });
}

// ---------------------------------------------------------------------------------------------
// 5. Failure and cancel
// ---------------------------------------------------------------------------------------------

#[test]
fn run_failure_shows_snippet_and_exit_code() {
    both(|case| {
        case.dockerfile("FROM busybox\nRUN echo before-failing && exit 3\nRUN echo never > /never\n");
        let out = case.out("out");
        let run = case.build(&["-o", &format!("type=local,dest={}", out.display())]).fails(1);
        assert_snippet(&run.stderr, 2, "RUN echo before-failing && exit 3");
        run.stderr_has("process \"/bin/sh -c echo before-failing && exit 3\" did not complete successfully: exit code: 3");
        run.stderr_has("before-failing");
        assert_eq!(run.step("RUN echo before-failing"), "ERROR");
        assert!(run.stderr.lines().any(|line| line.starts_with("ERROR: failed to solve: ")), "{}", run.stderr);
        assert!(!run.stderr.contains("#4 [3/3] RUN echo never"), "the step after the failure ran:\n{}", run.stderr);
        assert!(!out.exists(), "a failed build wrote its output");
    });
}

/// A build of three steps, the last reading what the first two wrote (`/both`: "one\ntwo\n"),
/// `--no-cache`, to a local directory; the command and that directory.
fn three_steps(case: &Case) -> (Command, PathBuf) {
    case.dockerfile("FROM busybox\nRUN echo one > /one\nRUN echo two > /two\nRUN cat /one /two > /both\n");
    let out = case.out("out");
    let spec = format!("type=local,dest={}", out.display());
    (case.command(&["--no-cache", "-o", &spec]), out)
}

/// With stderr a pipe nobody reads (`| head` gone, a closed log), every message and debug event
/// is lost and the build still ends, with its own exit code. Writing there used to panic a worker
/// (tracing's report of the failed write is an `eprintln!`), and the build waited forever for the
/// step the panic took away.
#[test]
fn a_build_whose_stderr_reader_is_gone_finishes_with_its_own_exit_code() {
    both(|case| {
        let (mut command, out) = three_steps(case);
        command.env("RBUILD_LOG", "debug").stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        drop(child.stderr.take());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("[{:?}] the build hung with its stderr closed", case.mode);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "[{:?}] {status}", case.mode);
        assert_eq!(file(&out, "both"), "one\ntwo\n");
    });
}

/// Each step's runner unmounts the step's overlay before it reports (`unmounted=true` in the
/// debug log), so that the step's layer is free to be the next step's lower at once, while the
/// runner still exits: the next step used to wait for that exit (its mount namespace's
/// teardown), or find the upper directory still in use by an overlay.
#[test]
fn each_step_overlay_is_unmounted_before_the_step_reports() {
    both(|case| {
        let (mut command, out) = three_steps(case);
        command.env("RBUILD_LOG", "rbuild::sandbox=debug");
        let mut run = run_command(command, None);
        run.what = format!("[{:?}] {}", case.mode, run.what);
        let run = run.ok();
        let finished: Vec<String> = run.stderr.lines().map(without_colors).filter(|line| line.contains("step finished")).collect();
        assert_eq!(finished.len(), 3, "[{:?}] {}", case.mode, run.stderr);
        for line in &finished {
            assert!(line.contains("unmounted=true"), "[{:?}] {line}", case.mode);
        }
        assert_eq!(file(&out, "both"), "one\ntwo\n");
    });
}

/// `line` without its terminal color sequences (`ESC [ ... m`).
fn without_colors(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('\u{1b}') {
        plain.push_str(&rest[..start]);
        rest = &rest[start..];
        rest = rest.find('m').map_or("", |end| &rest[end + 1..]);
    }
    plain.push_str(rest);
    plain
}

fn pgrep(pattern: &str) -> Vec<String> {
    let mut command = Command::new("pgrep");
    command.args(["-a", "-f", pattern]);
    let run = run_command(command, None);
    assert!(run.code == 0 || run.code == 1, "pgrep failed: {}", run.stderr);
    run.stdout_text().lines().map(str::to_string).collect()
}

/// Reads a child's output to its end on a thread of its own; join for the text.
fn read_in_background(output: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(output).lines() {
            text.push_str(&line.unwrap());
            text.push('\n');
        }
        text
    })
}

/// The pids of the children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace().map(|pid| pid.parse().unwrap()).collect()
}

#[test]
fn run_interrupt_cancels_the_container() {
    require_tool("pgrep");
    both(|case| {
        // A duration no other test uses, so pgrep sees only this container.
        let marker = match case.mode {
            Mode::Root => "sleep 37",
            Mode::Rootless => "sleep 38",
        };
        case.dockerfile(&format!("FROM busybox\nRUN {marker}\n"));
        let output = case.out("img.tar");
        let mut child = case
            .command(&["-o", &format!("type=oci,dest={}", output.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let reader = read_in_background(stderr);
        // Wait for the container's process.
        let started = Instant::now();
        while pgrep(marker).is_empty() {
            assert!(started.elapsed() < Duration::from_secs(30), "`{marker}` never started");
            std::thread::sleep(Duration::from_millis(100));
        }
        // SIGINT to the rbuild process itself (under runuser when rootless).
        let target = match case.mode {
            Mode::Root => child.id(),
            Mode::Rootless => {
                let kids = children(child.id());
                assert_eq!(kids.len(), 1, "runuser should have one child (rbuild), has {kids:?}");
                kids[0]
            }
        };
        let signaled = Instant::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(target as i32), nix::sys::signal::Signal::SIGINT).unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if signaled.elapsed() > Duration::from_secs(10) {
                child.kill().ok();
                child.wait().ok();
                panic!("[{:?}] rbuild still running 10 s after SIGINT", case.mode);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let elapsed = signaled.elapsed();
        let stderr = reader.join().unwrap();
        assert_eq!(status.code(), Some(130), "[{:?}] exit status after SIGINT\n{stderr}", case.mode);
        assert!(elapsed < Duration::from_secs(5), "[{:?}] took {elapsed:?} to stop", case.mode);
        let left = pgrep(marker);
        assert!(left.is_empty(), "[{:?}] processes left after the cancel: {left:?}", case.mode);
        let dir = case.project.dir().to_string_lossy().into_owned();
        let mounts: Vec<String> =
            read(Path::new("/proc/self/mountinfo")).lines().filter(|line| line.contains(&dir)).map(str::to_string).collect();
        assert!(mounts.is_empty(), "[{:?}] mounts left under the project: {mounts:?}", case.mode);
        let tmp = case.project.root().join("tmp");
        let leftovers: Vec<_> =
            fs::read_dir(&tmp).unwrap_or_else(|error| panic!("{}: {error}", tmp.display())).map(|entry| entry.unwrap().path()).collect();
        assert!(leftovers.is_empty(), "[{:?}] tmp/ keeps {leftovers:?}", case.mode);
        assert!(!output.exists(), "a canceled build wrote {}", output.display());

        // The state root the cancel left is usable.
        case.dockerfile("FROM busybox\nRUN echo after-cancel > /after\n");
        let out = case.build_local("out", &[]);
        assert_eq!(file(&out, "after"), "after-cancel\n");
    });
}

// ---------------------------------------------------------------------------------------------
// 6. Parallel stages, 7. cache
// ---------------------------------------------------------------------------------------------

const PARALLEL: &str = "FROM busybox AS a
RUN sleep 2 && echo a > /a
FROM busybox AS b
RUN sleep 2 && echo b > /b
FROM busybox AS c
RUN sleep 2 && echo c > /c
FROM busybox AS d
RUN sleep 2 && echo d > /d
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
COPY --from=c /c /c
COPY --from=d /d /d
";

#[test]
fn run_independent_stages_in_parallel() {
    both(|case| {
        case.dockerfile(PARALLEL);
        let started = Instant::now();
        let out = case.build_local("out", &[]);
        let elapsed = started.elapsed();
        for name in ["a", "b", "c", "d"] {
            assert_eq!(file(&out, name), format!("{name}\n"));
        }
        assert!(elapsed < Duration::from_secs(6), "[{:?}] four parallel `sleep 2` stages took {elapsed:?}", case.mode);
    });
}

#[test]
fn run_rebuild_is_cached_and_identical() {
    both(|case| {
        case.write("a.txt", "a\n")
            .dockerfile("FROM busybox\nRUN echo one > /one\nRUN --mount=type=bind,target=/src cp /src/a.txt /a\nRUN date +%s%N > /stamp\n");
        let first = case.out("first.tar");
        let second = case.out("second.tar");
        let run = case.build(&["-o", &format!("type=oci,dest={}", first.display())]).ok();
        for step in ["RUN echo one", "RUN --mount", "RUN date"] {
            assert_eq!(run.step(step), "DONE", "{}", run.stderr);
        }
        let run = case.build(&["-o", &format!("type=oci,dest={}", second.display())]).ok();
        for step in ["RUN echo one", "RUN --mount", "RUN date"] {
            assert_eq!(run.step(step), "CACHED", "[{:?}] second build\n{}", case.mode, run.stderr);
        }
        let digest = |archive: &Path| skopeo_inspect(archive)["Digest"].as_str().unwrap().to_string();
        assert_eq!(digest(&first), digest(&second));
    });
}

// ---------------------------------------------------------------------------------------------
// 8. Debian: apt-get install, loaded and run by podman
// ---------------------------------------------------------------------------------------------

#[test]
fn run_debian_apt_get_install_hello_runs_in_podman() {
    let context = debian_context();
    let project = Project::new();
    project.dockerfile("FROM debian\nRUN apt-get update && apt-get install -y --no-install-recommends hello\n");
    let archive = project.out("x.tar");
    project.build(&["--build-context", &context, "-o", &format!("type=docker,dest={}", archive.display()), "-t", "hello-test"]).ok();
    let podman = Podman::new(project.dir());
    podman.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    // This machine is not podman-friendly: its cgroups are hybrid with a controller in the cgroup2
    // hierarchy (crun refuses: "cgroups in hybrid mode not supported"), so podman runs in a
    // private mount namespace without /sys/fs/cgroup/unified; and its hard RLIMIT_NOFILE is below
    // podman's default, which crun may not raise, so the limits are set explicitly.
    require_tool("unshare");
    let mut command = Command::new("unshare");
    command.args([
        "-m",
        "sh",
        "-c",
        "if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi; exec podman \"$@\"",
        "sh",
        "--root",
        podman.root.to_str().unwrap(),
        "--runroot",
        podman.runroot.to_str().unwrap(),
        "--storage-driver",
        "vfs",
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--network",
        "none",
        "hello-test",
        "hello",
    ]);
    let run = run_command(command, None).ok();
    assert_eq!(run.stdout_text(), "Hello, world!\n");
}

const SECRETS: &str = "FROM busybox
RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /file-length && stat -c '%a %u' /run/secrets/token > /file-stat
RUN --mount=type=secret,id=token,env=TOKEN,required=true sh -c 'echo ${#TOKEN} > /env-length'
RUN --mount=type=secret,id=token,target=/s,mode=0440,uid=1000 stat -c '%a %u' /s > /custom-stat
RUN --mount=type=secret,id=absent echo optional > /optional
";

/// Every file under `dir` whose bytes contain `needle` (reading through permission bits).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file()
            && let Ok(bytes) = fs::read(entry.path())
            && bytes.windows(needle.len()).any(|window| window == needle)
        {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

/// Secrets reach RUN as files and variables and nowhere else: not in the image (layers, config,
/// history), not in the state root, not in the progress output.
#[test]
fn run_secrets_never_leave_the_step() {
    both(|case| {
        let value = format!("s3cr3t-{}", std::process::id());
        case.dockerfile(SECRETS).write("../token.txt", &value);
        if case.mode == Mode::Rootless {
            give_to_test_user(&case.project);
        }
        let token_file = case.project.dir().join("token.txt");
        let secret = format!("id=token,src={}", token_file.display());
        let archive = case.out("image.tar");
        let local = case.out("local");
        let oci = format!("type=oci,dest={}", archive.display());
        let local_spec = format!("type=local,dest={}", local.display());
        let run = case.build(&["--secret", &secret, "-o", &oci, "-o", &local_spec]).ok();
        assert_eq!(file(&local, "file-length").trim(), value.len().to_string());
        assert_eq!(file(&local, "file-stat"), "400 0\n");
        assert_eq!(file(&local, "env-length").trim(), value.len().to_string());
        assert_eq!(file(&local, "custom-stat"), "440 1000\n");
        assert_eq!(file(&local, "optional"), "optional\n");
        assert!(!local.join("run").exists(), "the secret's mount point stayed in the image");
        assert!(!run.stderr.contains(&value), "the secret is in the progress output");
        let unpacked = case.out("unpacked");
        fs::create_dir_all(&unpacked).unwrap();
        tool("tar", &["-xf", archive.to_str().unwrap(), "-C", unpacked.to_str().unwrap()]);
        for blob in fs::read_dir(unpacked.join("blobs/sha256")).unwrap() {
            let path = blob.unwrap().path();
            let listing = Command::new("tar").args(["-xzOf", path.to_str().unwrap()]).output().unwrap();
            let bytes = if listing.status.success() { listing.stdout } else { fs::read(&path).unwrap() };
            assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "the secret is in blob {}", path.display());
        }
        let in_root = files_containing(&case.project.root(), value.as_bytes());
        assert!(in_root.is_empty(), "the secret is in the state root: {in_root:?}");

        // A required secret that is not given fails the build with its id.
        case.dockerfile("FROM busybox\nRUN --mount=type=secret,id=missing,required=true true\n");
        let failed = case.build(&[]).fails(1);
        failed.stderr_has("secret missing: not found");
    });
}

/// `--ssh ID=KEYFILE`: rbuild's own agent answers inside the step; `--ssh default` forwards
/// `$SSH_AUTH_SOCK`.
#[test]
fn run_ssh_mounts_serve_an_agent() {
    require_tool("ssh-keygen");
    both(|case| {
        let key = case.project.dir().join("id_test");
        tool("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", "rbuild-test-key", "-f", key.to_str().unwrap()]);
        if case.mode == Mode::Rootless {
            give_to_test_user(&case.project);
        }
        case.dockerfile(
            "FROM busybox\nRUN --mount=type=ssh,id=deploy sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /sock && stat -c \"%a %u:%g\" \"$SSH_AUTH_SOCK\" > /default'\n\
             RUN --mount=type=ssh,id=deploy,mode=0660,uid=1000,gid=1001 stat -c '%a %u:%g' /run/buildkit/ssh_agent.0 > /chosen\n",
        );
        let spec = format!("deploy={}", key.display());
        let local = case.build_local("local", &["--ssh", &spec]);
        assert_eq!(file(&local, "sock"), "/run/buildkit/ssh_agent.0\n");
        assert_eq!(file(&local, "default"), "600 0:0\n", "BuildKit's default mode and owner");
        assert_eq!(file(&local, "chosen"), "660 1000:1001\n");
        assert!(!local.join("run").exists(), "the agent's mount point stayed in the image");
    });
}

/// BuildKit v0.32 starts a `--no-cache` step with an empty cache mount, which then replaces the
/// old one. Recorded with the oracle (the same Dockerfile, builds N=1..4, the third with
/// `--no-cache`): `/before` lists ``, `stamp-1`, ``, `stamp-3`.
#[test]
fn no_cache_starts_cache_mounts_empty() {
    both(|case| {
        case.dockerfile("FROM busybox\nARG N\nRUN --mount=type=cache,target=/c,id=nc ls /c > /before; touch /c/stamp-$N\n");
        let mut seen = Vec::new();
        for n in 1..=4 {
            let arg = format!("N={n}");
            let mut args = vec!["--build-arg", arg.as_str()];
            if n == 3 {
                args.push("--no-cache");
            }
            let out = case.build_local(&format!("out{n}"), &args);
            seen.push(file(&out, "before"));
        }
        assert_eq!(seen, ["", "stamp-1\n", "", "stamp-3\n"], "[{:?}]", case.mode);
    });
}

/// Regression: /sys was bound read-only at its top only, so the host's cgroup hierarchies below
/// it stayed writable from a RUN step as root (`echo 7 > /sys/fs/cgroup/pids/NAME/pids.max`
/// changed a host cgroup). Every mount under /sys is read-only now, as under BuildKit, where
/// the same probe says `Read-only file system`.
#[test]
fn sys_and_the_host_cgroups_are_read_only() {
    both(|case| {
        case.dockerfile(
            "FROM busybox\nRUN awk '$5 ~ \"^/sys\" {print $5, $6}' /proc/self/mountinfo > /sys-mounts; mkdir /sys/fs/cgroup/rbuild-probe 2> /mkdir-error || true\n",
        );
        let out = case.build_local("out", &[]);
        let mounts = file(&out, "sys-mounts");
        assert!(mounts.lines().any(|line| line.starts_with("/sys/fs/cgroup")), "[{:?}] no cgroup mount seen:\n{mounts}", case.mode);
        for line in mounts.lines() {
            let options = line.split_whitespace().nth(1).unwrap_or("");
            assert!(options.split(',').any(|option| option == "ro"), "[{:?}] writable: {line}\n{mounts}", case.mode);
        }
        assert!(file(&out, "mkdir-error").contains("Read-only file system"), "[{:?}] {}", case.mode, file(&out, "mkdir-error"));
    });
}

/// Regression: as root a RUN step could reach host devices (`mknod /blk b 7 0 && echo x > /blk`
/// wrote into a host loop device; a layer carrying `/dev/kmsg` wrote into the host's kernel
/// log). Now, as under BuildKit (whose outputs for this Dockerfile were the same, recorded with
/// the oracle): other devices can be made but not opened, the allowed ones work, and a device
/// node that comes in a layer does not open either.
#[test]
fn host_devices_are_out_of_reach() {
    both(|case| {
        case.dockerfile(
            "FROM busybox\nRUN (mknod /blk b 7 0 && echo x > /blk) 2>/dev/null; echo $? > /blk-status; \
             (mknod /tmp/null c 1 3 && echo x > /tmp/null && echo allowed) > /null-status 2>&1; \
             echo hi > /dev/null && echo dev-null-ok > /dev-null-status; rm -f /blk /tmp/null\n",
        );
        let out = case.build_local("out", &[]);
        assert_eq!(file(&out, "blk-status"), "1\n", "[{:?}] a host block device opened", case.mode);
        assert_eq!(file(&out, "dev-null-status"), "dev-null-ok\n", "[{:?}]", case.mode);
        if case.mode == Mode::Root {
            // Rootless cannot make device nodes at all (outside the initial user namespace).
            assert_eq!(file(&out, "null-status"), "allowed\n", "an allowed device did not work");
        }
    });
    // A layer with a device node (/kmsg, char 1:11, made on the host and added from a tar).
    let case = Case::new(Mode::Root);
    let payload = case.out("payload");
    std::fs::create_dir_all(&payload).unwrap();
    let node = payload.join("kmsg");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 11),
    )
    .unwrap();
    tool("tar", &["-C", payload.to_str().unwrap(), "-cf", case.project.ctx().join("dev.tar").to_str().unwrap(), "kmsg"]);
    case.dockerfile("FROM busybox\nADD dev.tar /\nRUN (echo from-a-step > /kmsg) 2>/dev/null; echo $? > /kmsg-status\n");
    let out = case.build_local("out", &[]);
    assert_eq!(file(&out, "kmsg-status"), "1\n", "a device node from a layer opened");
    // Without a devices cgroup (cgroup v2 hosts; here: the v1 controller unmounted in a mount
    // namespace of the build's own) the guard is no CAP_MKNOD and `nodev` mounts.
    if std::path::Path::new("/sys/fs/cgroup/devices").is_dir() {
        let dest = case.out("no-devices-cgroup");
        let spec = format!("type=local,dest={}", dest.display());
        let build = case.command(&["--no-cache", "-o", &spec]);
        let command = wrapped_command("unshare", &["-m", "sh", "-c", "umount -l /sys/fs/cgroup/devices && exec \"$@\"", "sh"], &build);
        run_command(command, None).ok();
        assert_eq!(file(&dest, "kmsg-status"), "1\n", "a device node from a layer opened without a devices cgroup");
    }
}

/// Issue 13: the compiled seccomp filter is kept in the state root (`seccomp-filter-v1`: a key,
/// the program's digest, the program), and a damaged one makes no weaker filter: the next build
/// compiles it again, its step is confined as before (no user namespace, as BuildKit's profile
/// has it: testdata/conformance/run-seccomp-probes), and the file is whole again.
#[test]
fn a_damaged_kept_seccomp_filter_is_compiled_again() {
    both(|case| {
        case.dockerfile(
            "FROM busybox\nRUN grep ^Seccomp: /proc/self/status > /seccomp; unshare -U true 2> /dev/null; echo $? > /unshare\n",
        );
        let first = case.build_local("first", &[]);
        let kept_path = case.project.root().join("seccomp-filter-v1");
        let kept = fs::read(&kept_path).expect("no kept filter after a build with a RUN step");
        assert!(kept.len() > 64 && (kept.len() - 64) % 8 == 0, "[{:?}] {} bytes", case.mode, kept.len());
        let mut damaged = kept.clone();
        // The program's last instruction: its action.
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        fs::write(&kept_path, &damaged).unwrap();
        let second = case.build_local("second", &["--no-cache"]);
        for out in [&first, &second] {
            assert_eq!(file(out, "seccomp"), "Seccomp:\t2\n", "[{:?}]", case.mode);
            assert_eq!(file(out, "unshare"), "1\n", "[{:?}] a step made a user namespace", case.mode);
        }
        assert_eq!(fs::read(&kept_path).unwrap(), kept, "[{:?}] the damaged filter was not replaced", case.mode);
    });
}

/// Secrets stay secret on the host too (issue 9, point 8): while a step with an `env=` secret
/// and a `mode=0444` secret file runs, another host user finds the value in no file of rbuild's
/// (the step's files in /dev/shm were 0755 and 0644 and held it).
#[test]
fn another_host_user_cannot_read_a_running_steps_secrets() {
    let case = Case::new(Mode::Root);
    // Made at run time: the value must not be in this file or the test binary, which the
    // search would find.
    let value = format!("rbuild-secret-{}-{:?}", std::process::id(), std::time::SystemTime::now());
    let value = value.as_str();
    case.write("secret.txt", value);
    // The user's own file is private, as a secret file should be.
    set_mode(&case.project.ctx().join("secret.txt"), 0o600);
    case.dockerfile("FROM busybox\nRUN --mount=type=secret,id=s,env=SEC --mount=type=secret,id=s,target=/s,mode=0444 sleep 3\n");
    let secret = format!("id=s,src={}", case.project.ctx().join("secret.txt").display());
    let mut build = case.command(&["--secret", &secret]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut search = Command::new("runuser");
    search.args(["-u", "nobody", "--", "grep", "-rl", value, "/dev/shm"]).arg(case.project.dir());
    let found = run_command(search, None);
    assert!(build.wait().unwrap().success(), "the build failed");
    assert!(!found.stdout_text().contains('/'), "another user read the secret in: {}", found.stdout_text());
}

/// Every process below `pid` (by parent pid, whichever thread started it).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
        let parent: u32 = after_comm.split_whitespace().nth(1).unwrap().parse().unwrap();
        parents.push((child, parent));
    }
    let mut found = vec![pid];
    let mut index = 0;
    while index < found.len() {
        let current = found[index];
        found.extend(parents.iter().filter(|(_, parent)| *parent == current).map(|(child, _)| *child));
        index += 1;
    }
    found.remove(0);
    found
}

/// The parent of the process `pid`.
/// The cgroup v1 devices cgroup of the process `pid` when it is one of rbuild's (`/rbuild/...`,
/// which a root runner joins before its step).
fn devices_cgroup_of(pid: u32) -> Option<PathBuf> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cgroups.lines().find_map(|line| line.split_once(":devices:").map(|(_, path)| path.to_string()))?;
    path.starts_with("/rbuild/").then(|| Path::new("/sys/fs/cgroup/devices").join(path.trim_start_matches('/')))
}

fn parent_of(pid: u32) -> u32 {
    let stat = read(&PathBuf::from(format!("/proc/{pid}/stat")));
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether the process `pid` is a step runner (named `rbuild-runner`).
fn is_runner(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == "rbuild-runner")
}

/// The step directory of the runner `pid`: its working directory while it waits for its step,
/// the overlay's scratch directory in it during the step.
fn step_directory_of(pid: u32) -> PathBuf {
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    cwd.ancestors()
        .find(|path| path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("rbuild-step-")))
        .unwrap_or_else(|| panic!("runner {pid} works in {}, not in a step directory", cwd.display()))
        .to_path_buf()
}

/// Issue 9, points 7 and 8: a build killed with SIGKILL, every process of it at once (runner and
/// container included, so nothing can clean up), leaves its step directory in /dev/shm, its work
/// in `tmp/` and, as root on a cgroup v1 host, a cgroup per controller. None of it holds the
/// `env=` secret (the step spec and the container's spec are memory files), and the next build
/// on the root sweeps all of it.
#[test]
fn a_killed_build_leaves_no_secret_and_the_next_build_sweeps_its_leftovers() {
    both(|case| {
        let value = format!("rbuild-killed-secret-{}-{:?}", std::process::id(), std::time::SystemTime::now());
        case.write("secret.txt", &value);
        if case.mode == Mode::Rootless {
            give_to_test_user(&case.project);
        }
        case.dockerfile("FROM busybox\nRUN --mount=type=secret,id=s,env=SEC sleep 61\n");
        let secret = format!("id=s,src={}", case.project.ctx().join("secret.txt").display());
        let mut build = case.command(&["--secret", &secret]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        let runner = loop {
            // The runner whose container started (another may wait in standby for a next step).
            let runner = descendants(build.id()).into_iter().find(|pid| is_runner(*pid) && !descendants(*pid).is_empty());
            if let Some(runner) = runner {
                break runner;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "[{:?}] the step did not start", case.mode);
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(300));
        let step_directory = step_directory_of(runner);
        let cgroup = devices_cgroup_of(runner);
        assert_eq!(cgroup.is_some(), case.mode == Mode::Root, "[{:?}] the runner's own devices cgroup", case.mode);
        let mut tree = descendants(build.id());
        tree.push(build.id());
        for signal in [nix::sys::signal::Signal::SIGSTOP, nix::sys::signal::Signal::SIGKILL] {
            for pid in &tree {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
            }
        }
        build.wait().unwrap();
        for pid in &tree {
            while Path::new(&format!("/proc/{pid}")).exists()
                && fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        let tmp = case.project.root().join("tmp");
        // The step directory in /dev/shm and the cgroup are left too, unless a build of another
        // test running now swept them already (the sweep's unit tests pin which go).
        assert!(fs::read_dir(&tmp).unwrap().count() > 0, "[{:?}] the kill left nothing in tmp/", case.mode);
        let cgroup_left = cgroup.as_ref().is_some_and(|cgroup| cgroup.is_dir());
        let mut search = Command::new("grep");
        search.args(["-rl", &value, "/dev/shm"]).arg(case.project.root());
        let found = run_command(search, None);
        assert!(!found.stdout_text().contains('/'), "[{:?}] the secret is in a file: {}", case.mode, found.stdout_text());

        case.dockerfile("FROM busybox\nRUN echo after > /after\n");
        case.build(&[]).ok();
        assert!(!step_directory.exists(), "[{:?}] the killed build's step directory stayed", case.mode);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "[{:?}] tmp/ was not swept", case.mode);
        if let Some(cgroup) = cgroup.filter(|_| cgroup_left) {
            assert!(!cgroup.exists(), "the killed runner's cgroup stayed: {}", cgroup.display());
        }
    });
}

/// rbuild as this case's user, started the way a shell starts it: its own process group, no
/// process in between (rootless: `setpriv`, which execs, with a clean environment).
fn spawn_in_own_group(case: &Case, args: &[&str]) -> (std::process::Child, std::thread::JoinHandle<String>) {
    use std::os::unix::process::CommandExt;
    let command = case.command_as_caller(args);
    let mut command = match case.mode {
        Mode::Root => command,
        Mode::Rootless => {
            let (uid, gid) = ensure_test_user();
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).unwrap().unwrap();
            let ids = [format!("--reuid={uid}"), format!("--regid={gid}")];
            let mut wrapped = wrapped_command("setpriv", &[&ids[0], &ids[1], "--init-groups", "--"], &command);
            wrapped.env_clear().env("HOME", &user.dir).env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin");
            wrapped
        }
    };
    command.process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = read_in_background(stderr);
    (child, reader)
}

fn wait_for_process(marker: &str) {
    let started = Instant::now();
    while pgrep(marker).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "`{marker}` never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 9, point 9: a signal to the whole process group (a CI runner stopping a job, `kill -INT
/// -PGID`) reaches a rootless build directly and again through its waiter; it must count once:
/// one orderly cancel (CANCELED, nothing left in tmp/), never the immediate exit a second signal
/// means (3 of 5 tries skipped the cancel). And kill -9 of the process the user started (the
/// rootless waiter) leaves no build behind: the build, its runner and its container stop too.
#[test]
fn a_group_signal_cancels_once_and_a_killed_waiter_leaves_no_build() {
    require_tool("pgrep");
    require_tool("setpriv");
    for mode in [Mode::Root, Mode::Rootless] {
        let case = Case::new(mode);
        let marker = match mode {
            Mode::Root => "sleep 43",
            Mode::Rootless => "sleep 44",
        };
        case.dockerfile(&format!("FROM busybox\nRUN {marker}\n"));
        let output = case.out("img.tar");
        let output_arg = format!("type=oci,dest={}", output.display());
        for attempt in 0..3 {
            let (mut child, reader) = spawn_in_own_group(&case, &["-o", &output_arg]);
            wait_for_process(marker);
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
            let status = child.wait().unwrap();
            let stderr = reader.join().unwrap();
            assert_eq!(status.code(), Some(130), "[{mode:?} #{attempt}] exit status\n{stderr}");
            assert!(stderr.contains(" CANCELED"), "[{mode:?} #{attempt}] no orderly cancel\n{stderr}");
            let tmp = fs::read_dir(case.project.root().join("tmp")).unwrap().count();
            assert_eq!(tmp, 0, "[{mode:?} #{attempt}] tmp/ kept entries\n{stderr}");
            assert!(pgrep(marker).is_empty(), "[{mode:?} #{attempt}] the container outlived the cancel");
        }
        if mode == Mode::Rootless {
            let (mut waiter, reader) = spawn_in_own_group(&case, &["-o", &output_arg]);
            wait_for_process(marker);
            waiter.kill().unwrap();
            waiter.wait().unwrap();
            drop(reader);
            let killed = Instant::now();
            while !pgrep(marker).is_empty() {
                assert!(killed.elapsed() < Duration::from_secs(10), "the build outlived its killed waiter");
                std::thread::sleep(Duration::from_millis(50));
            }
            let root = case.project.root().display().to_string();
            while !pgrep(&root).is_empty() {
                assert!(killed.elapsed() < Duration::from_secs(10), "rbuild outlived its killed waiter: {:?}", pgrep(&root));
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(!output.exists(), "the orphaned build wrote its output");
        }
    }
}

/// Issue 10, point 1: an unprivileged user with subordinate ids runs rbuild with nothing set
/// (no `--root`, no `RBUILD_ROOT`, no `XDG_*`, a clean environment) and it works, its state in
/// `~/.cache/rbuild`. rbuild chose its default root inside its user namespace, where it is uid 0,
/// took `/var/lib/rbuild`, and failed with "Permission denied".
#[test]
fn a_rootless_user_builds_with_no_flags_and_state_in_the_home_cache() {
    let case = Case::new(Mode::Rootless);
    case.dockerfile("FROM busybox\nRUN echo laptop > /where\n");
    let (uid, gid) = ensure_test_user();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).unwrap().unwrap();
    let archive = case.out("laptop.tar");
    let ids = [format!("--reuid={uid}"), format!("--regid={gid}")];
    let home = format!("HOME={}", user.dir.display());
    let output = format!("type=oci,dest={}", archive.display());
    let mut command = Command::new("setpriv");
    // `env -i`: HOME and PATH are the whole environment rbuild sees.
    command.args([&ids[0], &ids[1], "--init-groups", "--", "env", "-i", &home, "PATH=/usr/bin:/bin", RBUILD]);
    command.args(["-o", &output, "--build-context", &case.busybox]).arg(case.project.ctx());
    run_command(command, None).ok();
    assert!(archive.is_file(), "no archive at {}", archive.display());
    let root = user.dir.join(".cache/rbuild");
    assert!(root.join("db-v1.sqlite").is_file(), "no state root at {}", root.display());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(&root).unwrap().uid(), uid, "the state root belongs to the user");
}

/// Issue 10, points 1 and 2, rootless with a clean environment: the registry config is read from
/// `~/.config/rbuild/config.toml` (`FROM busybox` through the docker.io mirror it names), the
/// state goes to `~/.cache/rbuild`, and a Dockerfile on stdin (`-`) builds.
#[test]
fn a_rootless_user_reads_the_home_config_and_a_dockerfile_from_stdin() {
    let registry = crate::registry::Registry::start();
    registry.push_busybox();
    let case = Case::new(Mode::Rootless);
    let (uid, gid) = ensure_test_user();
    // A home of its own: other tests run as the same user at the same time.
    let home = case.project.dir().join("home");
    let host = registry.host();
    write_file(
        &home.join(".config/rbuild/config.toml"),
        &format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n[registry.\"{host}\"]\nhttp = true\n"),
    );
    chown_tree(&home, uid, gid);
    let archive = case.out("stdin.tar");
    let ids = [format!("--reuid={uid}"), format!("--regid={gid}")];
    let home_variable = format!("HOME={}", home.display());
    let output = format!("type=oci,dest={}", archive.display());
    let mut command = Command::new("setpriv");
    command.args([&ids[0], &ids[1], "--init-groups", "--", "env", "-i", &home_variable, "PATH=/usr/bin:/bin", RBUILD]);
    command.args(["--progress=plain", "-o", &output, "-"]).current_dir(case.project.dir());
    run_command(command, Some(b"FROM busybox\nRUN echo from-stdin > /where\n")).ok();
    let config = skopeo_config(&archive);
    let last = config["history"].as_array().unwrap().last().unwrap()["created_by"].as_str().unwrap().to_string();
    assert!(last.contains("echo from-stdin > /where"), "the last step is the RUN of the Dockerfile on stdin: {last}");
    assert!(
        config["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["created_by"] == "COPY --chmod=0755 busybox /bin/busybox # buildkit"),
        "FROM busybox came from the mirror"
    );
    assert!(home.join(".cache/rbuild/db-v1.sqlite").is_file(), "no state root in the given home");
}

/// Issue 10, point 1: a user whose /etc/subuid and /etc/subgid hold the same range twice (as
/// after `useradd` plus a manual entry) builds rootless, with `USER 1000` and `chown`: the ranges
/// are merged (newuidmap failed with "Invalid argument").
#[test]
fn repeated_subordinate_ranges_are_merged() {
    const USER: &str = "rbuild-test-dup";
    let lock = lock_exclusive(Path::new("/run/lock/rbuild-test-dup.lock"));
    if nix::unistd::User::from_name(USER).unwrap().is_none() {
        let mut command = Command::new("/usr/sbin/useradd");
        command.args(["--create-home", "--no-user-group", "--gid", "100", USER]);
        run_command(command, None).ok();
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        // useradd may have given the user a range already: that line, written a second time.
        let text = fs::read_to_string(file).unwrap_or_default();
        let line = text.lines().find(|line| line.starts_with(&format!("{USER}:"))).map_or(format!("{USER}:400000:65536"), str::to_string);
        let copies = text.lines().filter(|existing| *existing == line).count();
        let missing = format!("{line}\n").repeat(2usize.saturating_sub(copies));
        let text = if text.is_empty() || text.ends_with('\n') { text } else { format!("{text}\n") };
        fs::write(file, format!("{text}{missing}")).unwrap();
    }
    drop(lock);
    let user = nix::unistd::User::from_name(USER).unwrap().unwrap();
    let project = Project::new();
    let layout = project.out("busybox-layout");
    tool("cp", &["-a", busybox_layout().to_str().unwrap(), layout.to_str().unwrap()]);
    project.dockerfile("FROM busybox\nRUN mkdir /owned && chown 1000:1000 /owned\nUSER 1000\nRUN id -u > /tmp/uid\n");
    chown_tree(project.dir(), user.uid.as_raw(), user.gid.as_raw());
    let build = project.build_command(&[
        "--build-context",
        &context_arg("busybox", &layout, BUSYBOX_TAG),
        "-o",
        &format!("type=local,dest={}", project.out("out").display()),
    ]);
    let ids = [format!("--reuid={}", user.uid), format!("--regid={}", user.gid)];
    let mut command = wrapped_command("setpriv", &[&ids[0], &ids[1], "--init-groups", "--"], &build);
    command.env_clear().env("HOME", &user.dir).env("PATH", "/usr/bin:/bin");
    let run = run_command(command, None).ok();
    run.stderr_lacks("subordinate ids");
    assert_eq!(file(&project.out("out"), "tmp/uid"), "1000\n");
}

/// Issue 10, point 2: `--add-host` puts its entries into /etc/hosts of every RUN step, after
/// the localhost lines, as BuildKit writes it (golden recorded with the oracle:
/// testdata/e2e/add-host), and is part of the steps' cache key; a bad address is a usage error.
#[test]
fn add_host_entries_reach_run_steps() {
    let expected = read(&fixture("add-host").join("hosts.expected"));
    both(|case| {
        case.dockerfile(&read(&fixture("add-host").join("Dockerfile")));
        let out = case.build_local("out", &["--add-host", "myhost:10.1.2.3", "--add-host", "other=1.1.1.1"]);
        assert_eq!(file(&out, "hosts.txt"), expected, "[{:?}]", case.mode);
        let again = case.build(&["--add-host", "myhost:10.9.9.9"]).ok();
        assert!(again.step("RUN cat /etc/hosts").contains("DONE"), "[{:?}] another --add-host hit the cache", case.mode);
        case.build(&["--add-host", "myhost:10.1.2"]).fails(2).stderr_has("invalid IP address in add-host: `10.1.2`");
    });
}

/// Issue 10, point 2: `--ulimit` and `--shm-size` reach RUN steps as under BuildKit (golden
/// recorded with the oracle: testdata/e2e/ulimit); bad values are usage errors.
#[test]
fn ulimit_and_shm_size_reach_run_steps() {
    let expected = read(&fixture("ulimit").join("limits.expected"));
    both(|case| {
        case.dockerfile(&read(&fixture("ulimit").join("Dockerfile")));
        let out = case.build_local("out", &["--ulimit", "nofile=1024:2048", "--ulimit", "nproc=4000:8000", "--shm-size", "128m"]);
        assert_eq!(file(&out, "limits.txt"), expected, "[{:?}]", case.mode);
    });
    let case = Case::new(Mode::Root);
    case.dockerfile("FROM busybox\n");
    case.build(&["--ulimit", "nofile=10:5"]).fails(2).stderr_has("the soft limit is above the hard limit");
    case.build(&["--ulimit", "files=10"]).fails(2).stderr_has("invalid --ulimit `files=10`");
    case.build(&["--shm-size", "lots"]).fails(2).stderr_has("invalid --shm-size `lots`");
}

/// Issue 13, point 4: as root on a cgroup v1 host the runner joins the step's cgroups itself,
/// before its step, and the container sees them as BuildKit's do (golden recorded with the
/// oracle: testdata/e2e/cgroup-view): the same names in /sys/fs/cgroup, each its own cgroup,
/// read-only, BuildKit's devices allow list, and /proc/self/cgroup in them all (v2 too). Known
/// differences the probe leaves out: the names are links to the mounts (a mount named like a
/// controller would be libcontainer's to join again), and the tmpfs under them is read-only
/// where BuildKit's is writable.
#[test]
fn a_root_step_sees_its_own_cgroups_as_under_buildkit() {
    assert!(
        Path::new("/sys/fs/cgroup/devices/devices.list").exists(),
        "this test needs a cgroup v1 devices controller at /sys/fs/cgroup/devices (the CI machine's hybrid cgroups)"
    );
    let expected = read(&fixture("cgroup-view").join("view.expected"));
    let case = Case::new(Mode::Root);
    case.dockerfile(&read(&fixture("cgroup-view").join("Dockerfile")));
    let out = case.build_local("out", &[]);
    assert_eq!(file(&out, "view.txt"), expected);
}

/// Issue 13, point 4: while a step runs, the next step's runner is already started and waits in
/// standby (no container yet); when the build ends it is dismissed: the process is gone, its step
/// directory removed and, as root on a cgroup v1 host, its cgroups too.
#[test]
fn the_standby_runner_waits_during_a_step_and_goes_with_the_build() {
    both(|case| {
        case.dockerfile("FROM busybox\nRUN true\nRUN sleep 2\n");
        let mut build = case.command(&[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = read_in_background(build.stderr.take().unwrap());
        let started = Instant::now();
        let standby = loop {
            let runners: Vec<u32> = descendants(build.id()).into_iter().filter(|pid| is_runner(*pid)).collect();
            let sleeping = runners.iter().any(|runner| {
                descendants(*runner)
                    .iter()
                    .any(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.starts_with(b"sleep")))
            });
            let waiting = runners.iter().copied().find(|runner| descendants(*runner).is_empty());
            if let (true, Some(waiting)) = (sleeping, waiting) {
                break waiting;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "[{:?}] no runner waited in standby during `sleep 2`", case.mode);
            std::thread::sleep(Duration::from_millis(20));
        };
        let directory = step_directory_of(standby);
        assert!(directory.is_dir(), "[{:?}] the standby runner has no step directory {}", case.mode, directory.display());
        let cgroup = devices_cgroup_of(standby);
        assert_eq!(cgroup.is_some(), case.mode == Mode::Root, "[{:?}] the standby runner's own devices cgroup", case.mode);
        // On a hybrid host, born in the v2 cgroup of the same name (`clone3` into it).
        let unified = cgroup.as_ref().filter(|_| Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()).map(|cgroup| {
            let name = cgroup.file_name().unwrap().to_string_lossy().into_owned();
            let own = read(&PathBuf::from(format!("/proc/{standby}/cgroup")));
            assert!(own.lines().any(|line| line == format!("0::/rbuild/{name}")), "not in its v2 cgroup {name}:\n{own}");
            Path::new("/sys/fs/cgroup/unified/rbuild").join(name)
        });
        // Forked by rbuild's fork server, not started as a program.
        let server = parent_of(standby);
        assert_eq!(read(&PathBuf::from(format!("/proc/{server}/comm"))).trim_end(), "rbuild-forks", "[{:?}]", case.mode);
        let status = build.wait().unwrap();
        let stderr = stderr.join().unwrap();
        assert!(status.success(), "[{:?}] {stderr}", case.mode);
        assert!(!is_runner(standby), "[{:?}] the standby runner outlived its build", case.mode);
        assert!(!Path::new(&format!("/proc/{server}")).exists(), "[{:?}] the fork server outlived its build", case.mode);
        assert!(!directory.exists(), "[{:?}] the standby runner's step directory stayed", case.mode);
        for cgroup in cgroup.iter().chain(&unified) {
            assert!(!cgroup.exists(), "[{:?}] the standby runner's cgroup stayed: {}", case.mode, cgroup.display());
        }
    });
}
