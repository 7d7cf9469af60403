//! The conformance corpus: `testdata/conformance/CASE/` holds a Dockerfile, its context and what
//! BuildKit (v0.32.2, `../shared/tools/buildkit/oracle`) built from them, recorded by
//! `testdata/conformance/record.sh`. [`corpus_as_root`], [`corpus_rootless`],
//! [`corpus_with_the_copying_snapshotter`] and [`corpus_rootless_with_the_copying_snapshotter`]
//! build every case with rbuild and compare, path by path and field by field; BuildKit is not
//! needed here.
//!
//! A case directory:
//!
//! | file | meaning |
//! |---|---|
//! | `Dockerfile` | the Dockerfile, built with `-f` (so `Dockerfile.dockerignore` beside it counts) |
//! | `context/` | the build context (may be missing: an empty context) |
//! | `setup.sh` | optional: run with `sh -e` in a copy of the case before building, for what git cannot store (modes, empty directories, fifos, mtimes) |
//! | `args` | optional: extra build flags, one per line (`--build-arg A=1`, `--target x`); relative paths are relative to the case |
//! | `expected/rootfs.txt` | BuildKit's root filesystem ([`Manifest`]), as a difference from the busybox base when that is shorter |
//! | `expected/config.json` | BuildKit's image config ([`config_summary`]) |
//! | `expected/error.txt` | instead of the two above: BuildKit failed, with this message; rbuild must fail too |
//!
//! `RBUILD_CONFORMANCE_CASES=a,b` builds only those cases; `RBUILD_CONFORMANCE_KEEP=1` keeps the
//! work directory of each case that differs (its path is in the report).
//!
//! `testdata/conformance/known-differences.txt` lists the cases rbuild does not build as BuildKit
//! yet, one per line with the reason; a reason starting `[copy]` or `[rootless]` is expected only
//! with the copying snapshotter or rootless. The test fails when any other case differs, and when a
//! listed case no longer differs (so the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::images::{BUSYBOX_TAG, busybox_layout, context_arg};
use crate::support::*;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/conformance")
}

/// Every case, by name, in order.
fn case_names() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(corpus_dir())
        .expect("testdata/conformance")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("Dockerfile").is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if let Ok(only) = std::env::var("RBUILD_CONFORMANCE_CASES")
        && !only.trim().is_empty()
    {
        let wanted: BTreeSet<&str> = only.split(',').map(str::trim).filter(|name| !name.is_empty()).collect();
        names.retain(|name| wanted.contains(name.as_str()));
    }
    names
}

/// `known-differences.txt`: case name → reason.
fn known_differences() -> BTreeMap<String, String> {
    let text = fs::read_to_string(corpus_dir().join("known-differences.txt")).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, reason) = line.split_once(':').unwrap_or((line, ""));
            (name.trim().to_string(), reason.trim().to_string())
        })
        .collect()
}

/// The case copied into `work` (`work/Dockerfile`, `work/context/`, ...); then `before_setup`
/// runs (it may hand the files to another user) and `setup.sh` runs there, as the test user in
/// rootless mode (a `chown` after it would clear set-id bits, and root's 0600 files would be
/// unreadable). Returns the build arguments: `-f work/Dockerfile`, the case's `args`, and last
/// the context directory.
fn prepare(name: &str, work: &Path, mode: crate::run::Mode, before_setup: impl FnOnce()) -> Vec<String> {
    let source = corpus_dir().join(name);
    copy_tree(&source, work);
    let _ = fs::remove_dir_all(work.join("expected"));
    fs::create_dir_all(work.join("context")).unwrap();
    before_setup();
    if work.join("setup.sh").is_file() {
        let mut command = Command::new("sh");
        command.args(["-e", "setup.sh"]).current_dir(work);
        let command = match mode {
            crate::run::Mode::Root => command,
            crate::run::Mode::Rootless => as_test_user(&command),
        };
        run_command(command, None).ok();
    }
    let mut args = vec!["-f".to_string(), work.join("Dockerfile").display().to_string()];
    if let Ok(text) = fs::read_to_string(work.join("args")) {
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
            args.push(line.to_string());
        }
    }
    args.push(work.join("context").display().to_string());
    args
}

/// One path of a root filesystem: `PATH TYPE MODE UID:GID DETAIL`, where TYPE is `d` `f` `l`
/// `h` `c` `b` `p`, MODE the permission and special bits in octal, and DETAIL the size and
/// the first 16 hex digits of the sha256 of a file, a link's target, or a device's numbers.
type Manifest = BTreeMap<String, String>;

/// The manifest of a tar stream of a root filesystem (later entries win, `.` is left out).
fn tar_manifest(reader: impl Read) -> Manifest {
    let mut manifest = Manifest::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("tar path").to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").trim_end_matches('/').to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let owner = format!("{}:{}", header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        let link = || header.link_name().ok().flatten().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        let (kind, detail) = match header.entry_type() {
            tar::EntryType::Directory => ("d", "-".to_string()),
            tar::EntryType::Symlink => ("l", link()),
            tar::EntryType::Link => ("h", link().trim_start_matches("./").to_string()),
            tar::EntryType::Char | tar::EntryType::Block => {
                let numbers =
                    format!("{},{}", header.device_major().ok().flatten().unwrap_or(0), header.device_minor().ok().flatten().unwrap_or(0));
                (if header.entry_type() == tar::EntryType::Char { "c" } else { "b" }, numbers)
            }
            tar::EntryType::Fifo => ("p", "-".to_string()),
            _ => {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).expect("tar file content");
                ("f", format!("{} {}", bytes.len(), &hex::encode(Sha256::digest(&bytes))[..16]))
            }
        };
        manifest.insert(path, format!("{kind} {mode:04o} {owner} {detail}"));
    }
    manifest
}

/// The root filesystem of the busybox test image: its layers applied in order (the image has
/// no whiteouts).
fn busybox_manifest() -> &'static Manifest {
    static MANIFEST: std::sync::OnceLock<Manifest> = std::sync::OnceLock::new();
    MANIFEST.get_or_init(|| {
        let layout = busybox_layout();
        let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        let index = json(&fs::read_to_string(layout.join("index.json")).unwrap());
        let manifest = json(&fs::read_to_string(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap());
        let mut rootfs = Manifest::new();
        for layer in manifest["layers"].as_array().unwrap() {
            let file = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
            let media_type = layer["mediaType"].as_str().unwrap_or("");
            let reader: Box<dyn Read> =
                if media_type.ends_with("gzip") { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
            rootfs.extend(tar_manifest(reader));
        }
        rootfs
    })
}

/// The manifest with the content of the busybox binary written `busybox` instead of its size
/// and digest, so a case that copies the binary does not depend on the busybox-static version.
fn mask_busybox(manifest: &Manifest) -> Manifest {
    let base = busybox_manifest();
    let Some(binary) = base.get("bin/busybox").and_then(|line| line.split_once(' ').map(|(_, rest)| rest.to_string())) else {
        return manifest.clone();
    };
    let content = binary.splitn(3, ' ').nth(2).unwrap_or("").to_string();
    manifest
        .iter()
        .map(|(path, line)| {
            (
                path.clone(),
                if line.starts_with("f ") && line.ends_with(&content) {
                    format!("{} busybox", line.rsplitn(3, ' ').nth(2).unwrap_or(line))
                } else {
                    line.clone()
                },
            )
        })
        .collect()
}

/// The text of `expected/rootfs.txt` for a manifest: `base busybox` and the lines that differ
/// from the busybox base (`-PATH` for a base path that is gone), or `base scratch` and every
/// line, whichever is shorter.
fn manifest_text(manifest: &Manifest) -> String {
    let base = &mask_busybox(busybox_manifest());
    let manifest = &mask_busybox(manifest);
    let mut against_busybox = String::from("base busybox\n");
    let mut paths: BTreeSet<&String> = manifest.keys().collect();
    paths.extend(base.keys());
    let mut changed = 0;
    for path in paths {
        match (manifest.get(path), base.get(path)) {
            (Some(line), Some(base_line)) if line == base_line => continue,
            (Some(line), _) => against_busybox.push_str(&format!("{path} {line}\n")),
            (None, _) => against_busybox.push_str(&format!("-{path}\n")),
        }
        changed += 1;
    }
    if changed < manifest.len() {
        return against_busybox;
    }
    let mut full = String::from("base scratch\n");
    for (path, line) in manifest {
        full.push_str(&format!("{path} {line}\n"));
    }
    full
}

/// The parts of an image config that a Dockerfile decides, from an OCI archive (as the oracle's
/// `compare`): the runtime config, history (`created_by`, `empty_layer`), the layer count and
/// the platform.
fn config_summary(oci_archive: &Path) -> Value {
    let mut archive = tar::Archive::new(fs::File::open(oci_archive).unwrap());
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
        let wanted = path == "index.json" || entry.header().size().unwrap_or(0) < (1 << 20) && path.starts_with("blobs/");
        if wanted && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            files.insert(path, bytes);
        }
    }
    let blob = |digest: &Value| -> Value {
        let path = format!("blobs/{}", digest.as_str().unwrap().replacen(':', "/", 1));
        serde_json::from_slice(files.get(&path).unwrap_or_else(|| panic!("{path} missing in {}", oci_archive.display()))).unwrap()
    };
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let mut manifest = blob(&index["manifests"][0]["digest"]);
    if manifest["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        manifest = blob(&manifest["manifests"][0]["digest"]);
    }
    let config = blob(&manifest["config"]["digest"]);
    let runtime = &config["config"];
    let keys = [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
        "ArgsEscaped",
    ];
    let runtime: serde_json::Map<String, Value> =
        keys.iter().map(|key| (key.to_string(), runtime.get(*key).cloned().unwrap_or(Value::Null))).collect();
    let history: Vec<Value> = config["history"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| json!({"created_by": entry.get("created_by").cloned().unwrap_or(Value::Null), "empty_layer": entry.get("empty_layer").and_then(Value::as_bool).unwrap_or(false)}))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "config": runtime,
        "history": history,
        "layers": config["rootfs"]["diff_ids"].as_array().map_or(0, Vec::len),
        "os": config["os"],
        "architecture": config["architecture"],
        "variant": config.get("variant").cloned().unwrap_or(Value::Null),
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap() + "\n"
}

/// What a builder made of a case.
enum Outcome {
    Built { rootfs: String, config: String },
    Failed { message: String },
}

/// The outcome from a rootfs tar and an OCI archive (the build succeeded), or from a failed
/// build's output.
fn outcome_of(succeeded: bool, tar_path: &Path, oci_path: &Path, log: &str) -> Outcome {
    if !succeeded {
        let message = log.lines().rev().find(|line| line.contains("ERROR") || line.starts_with("error:")).unwrap_or("").trim().to_string();
        return Outcome::Failed { message };
    }
    let rootfs = manifest_text(&tar_manifest(fs::File::open(tar_path).unwrap()));
    Outcome::Built { rootfs, config: pretty(&config_summary(oci_path)) }
}

/// The differences between the recording of `name` and `actual`, empty when they agree.
fn compare(name: &str, actual: &Outcome) -> String {
    let expected_dir = corpus_dir().join(name).join("expected");
    let read = |file: &str| fs::read_to_string(expected_dir.join(file)).ok();
    match (read("error.txt"), actual) {
        (Some(_), Outcome::Failed { .. }) => String::new(),
        (Some(message), Outcome::Built { .. }) => format!("BuildKit failed ({}), rbuild built it\n", message.trim()),
        (None, Outcome::Failed { message }) => format!("BuildKit built it, rbuild failed: {message}\n"),
        (None, Outcome::Built { rootfs, config }) => {
            let expected_rootfs = read("rootfs.txt").unwrap_or_else(|| panic!("{name}: no expected/rootfs.txt (record it)"));
            let expected_config = read("config.json").unwrap_or_else(|| panic!("{name}: no expected/config.json (record it)"));
            let mut report = line_diff("rootfs", &expected_rootfs, rootfs);
            report.push_str(&line_diff("config", &expected_config, config));
            report
        }
    }
}

/// `< BuildKit` and `> rbuild` lines of two texts, compared as sets of lines (both are sorted
/// or fixed-order, so this names every difference).
fn line_diff(what: &str, expected: &str, actual: &str) -> String {
    if expected == actual {
        return String::new();
    }
    let expected_lines: BTreeSet<&str> = expected.lines().collect();
    let actual_lines: BTreeSet<&str> = actual.lines().collect();
    let mut report = format!("{what}:\n");
    for line in expected_lines.difference(&actual_lines) {
        report.push_str(&format!("  < {line}\n"));
    }
    for line in actual_lines.difference(&expected_lines) {
        report.push_str(&format!("  > {line}\n"));
    }
    if expected_lines == actual_lines {
        report.push_str("  (same lines in another order)\n");
    }
    report
}

/// Builds every case with rbuild in `mode` (three at a time) and checks the results against the
/// recordings and `known-differences.txt`.
fn run_corpus(mode: crate::run::Mode, snapshotter: Option<&str>) {
    let names = case_names();
    assert!(!names.is_empty() || std::env::var("RBUILD_CONFORMANCE_CASES").is_ok(), "no cases in testdata/conformance");
    // An entry tagged `[copy]` or `[rootless]` is expected to differ only in that run.
    let run_tag = match (mode, snapshotter) {
        (_, Some("copy")) => "[copy]",
        (crate::run::Mode::Rootless, _) => "[rootless]",
        _ => "",
    };
    let known: BTreeMap<String, String> = known_differences()
        .into_iter()
        .filter(|(_, reason)| !reason.starts_with('[') || (!run_tag.is_empty() && reason.starts_with(run_tag)))
        .collect();
    let queue = Mutex::new(names.clone());
    let results: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                loop {
                    let Some(name) = queue.lock().unwrap().pop() else { break };
                    let report = build_case(&name, mode, snapshotter);
                    results.lock().unwrap().insert(name, report);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut failures = String::new();
    for (name, report) in &results {
        match (report.is_empty(), known.get(name)) {
            (false, None) => failures.push_str(&format!("== {name} differs from BuildKit ({mode:?}, {snapshotter:?}):\n{report}")),
            (true, Some(reason)) => failures.push_str(&format!(
                "== {name} now builds as BuildKit ({mode:?}, {snapshotter:?}): remove it from known-differences.txt ({reason})\n"
            )),
            _ => {}
        }
    }
    let same = results.values().filter(|report| report.is_empty()).count();
    eprintln!("conformance ({mode:?}, {snapshotter:?}): {same} of {} cases as BuildKit, {} known differences", results.len(), known.len());
    assert!(failures.is_empty(), "{failures}");
}

/// Builds one case to a rootfs tar and an OCI archive in one run; returns the differences.
fn build_case(name: &str, mode: crate::run::Mode, snapshotter: Option<&str>) -> String {
    let project = Project::new();
    let work = project.out("case");
    let tar_path = project.out("rootfs.tar");
    let oci_path = project.out("image.tar");
    let busybox = match mode {
        crate::run::Mode::Root => context_arg("busybox", &busybox_layout(), BUSYBOX_TAG),
        crate::run::Mode::Rootless => {
            let layout = project.out("busybox-layout");
            tool("cp", &["-a", busybox_layout().to_str().unwrap(), layout.to_str().unwrap()]);
            context_arg("busybox", &layout, BUSYBOX_TAG)
        }
    };
    let args = prepare(name, &work, mode, || {
        if mode == crate::run::Mode::Rootless {
            give_to_test_user(&project);
        }
    });
    let root = project.root();
    let tar_spec = format!("type=tar,dest={}", tar_path.display());
    let oci_spec = format!("type=oci,dest={}", oci_path.display());
    let mut full: Vec<&str> =
        vec!["build", "--root", root.to_str().unwrap(), "--progress=plain", "--build-context", &busybox, "-o", &tar_spec, "-o", &oci_spec];
    full.extend(args.iter().map(String::as_str));
    let mut command = project.command(&full);
    command.current_dir(&work);
    if let Some(snapshotter) = snapshotter {
        command.env("RBUILD_SNAPSHOTTER", snapshotter);
    }
    let command = match mode {
        crate::run::Mode::Root => command,
        crate::run::Mode::Rootless => as_test_user(&command),
    };
    let run = run_command(command, None);
    let outcome = outcome_of(run.code == 0, &tar_path, &oci_path, &run.stderr);
    let mut report = compare(name, &outcome);
    if !report.is_empty() && std::env::var_os("RBUILD_CONFORMANCE_KEEP").is_some() {
        report.push_str(&format!("  kept: {}\n", project.temp.keep().display()));
        return report;
    }
    if !report.is_empty() && run.code != 0 {
        let tail: Vec<&str> = run.stderr.lines().rev().take(12).collect();
        report.push_str(&format!("  rbuild's output ends:\n    {}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")));
    }
    report
}

#[test]
fn corpus_as_root() {
    run_corpus(crate::run::Mode::Root, None);
}

#[test]
fn corpus_rootless() {
    run_corpus(crate::run::Mode::Rootless, None);
}

/// The copying snapshotter (where overlay is not available) must give the same layers.
#[test]
fn corpus_with_the_copying_snapshotter() {
    run_corpus(crate::run::Mode::Root, Some("copy"));
}

/// The copying snapshotter rootless: a laptop whose state directory cannot hold an overlay.
#[test]
fn corpus_rootless_with_the_copying_snapshotter() {
    run_corpus(crate::run::Mode::Rootless, Some("copy"));
}

/// Records BuildKit's results: `testdata/conformance/record.sh` runs this with `RBUILD_ORACLE`
/// naming the oracle script, after starting it with a mirror that serves the busybox test
/// image. `RBUILD_CONFORMANCE_CASES=a,b` records only those cases.
#[test]
#[ignore = "records from BuildKit: run testdata/conformance/record.sh"]
fn record() {
    let oracle = std::env::var("RBUILD_ORACLE").expect("RBUILD_ORACLE names the oracle script");
    for name in case_names() {
        let temp = tempfile::Builder::new().prefix("rbuild-record-").tempdir().unwrap();
        let work = temp.path().join("case");
        let args = prepare(&name, &work, crate::run::Mode::Root, || {});
        let tar_path = temp.path().join("rootfs.tar");
        let oci_path = temp.path().join("image.tar");
        let mut log = String::new();
        let mut succeeded = true;
        for output in [format!("type=tar,dest={}", tar_path.display()), format!("type=oci,dest={}", oci_path.display())] {
            let mut command = Command::new(&oracle);
            command.args(["build", "--progress", "plain", "-o", &output]).args(&args).current_dir(&work);
            let run = run_command(command, None);
            log.push_str(&run.stderr);
            if run.code != 0 {
                succeeded = false;
                break;
            }
        }
        let expected = corpus_dir().join(&name).join("expected");
        let _ = fs::remove_dir_all(&expected);
        fs::create_dir_all(&expected).unwrap();
        match outcome_of(succeeded, &tar_path, &oci_path, &log) {
            Outcome::Built { rootfs, config } => {
                fs::write(expected.join("rootfs.txt"), rootfs).unwrap();
                fs::write(expected.join("config.json"), config).unwrap();
                eprintln!("recorded {name}: built");
            }
            Outcome::Failed { message } => {
                fs::write(expected.join("error.txt"), format!("{message}\n")).unwrap();
                eprintln!("recorded {name}: failed: {message}");
            }
        }
    }
}
