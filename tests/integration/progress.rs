//! Progress as BuildKit prints it, against what the reference BuildKit printed for the same
//! builds (`testdata/progress/`, see its README): the context transfer's size, the extraction
//! of base layers, the end of a failed build, the graph in the rawjson stream, the warnings
//! summary and the quoting of a failed command. Lines are compared by shape: times differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::images::busybox_context;
use crate::support::*;

fn golden(case: &str, file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/progress").join(case).join(file);
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn golden_context(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/progress").join(case).join("context")
}

/// The lines of the plain block(s) of the vertex named `name` (`#N` replaced by `#N`, times by
/// `X.Xs`), as the golden files are normalised.
fn block(stderr: &str, name: &str) -> Vec<String> {
    let Some(number) = stderr.lines().find_map(|line| {
        let (number, text) = line.strip_prefix('#')?.split_once(' ')?;
        (text.starts_with(name) && number.chars().all(|c| c.is_ascii_digit())).then(|| number.to_string())
    }) else {
        panic!("no vertex {name:?} in\n{stderr}");
    };
    let prefix = format!("#{number} ");
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter(|text| !text.starts_with(name) && *text != "...")
        .map(normalise)
        .collect()
}

/// The lines of a block without the status lines of a transfer still open: a transfer slower
/// than BuildKit's 100 ms batch shows those too, in rbuild as in BuildKit.
fn settled(lines: Vec<String>) -> Vec<String> {
    lines.into_iter().filter(|line| line.ends_with(" done") || line.starts_with("DONE ") || line == "CACHED").collect()
}

/// Times as the golden files write them.
fn normalise(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|word| {
            let time = word.strip_suffix('s').is_some_and(|number| {
                number.split_once('.').is_some_and(|(whole, fraction)| {
                    !whole.is_empty() && fraction.len() == 1 && (whole.to_owned() + fraction).chars().all(|c| c.is_ascii_digit())
                })
            });
            if time { "X.Xs".to_owned() } else { word.to_owned() }
        })
        .collect();
    words.join(" ")
}

/// A project with the golden `context` and a builder of it on busybox.
fn golden_context_project() -> (Project, impl Fn(&Project) -> Run) {
    let project = Project::new();
    copy_tree(&golden_context("context"), &project.ctx());
    let context = busybox_context();
    (project, move |project: &Project| project.build(&["--build-context", &context]).ok())
}

/// The `[internal] load build context` block of a run, times settled.
fn context_load(run: &Run) -> Vec<String> {
    settled(block(&run.stderr, "[internal] load build context"))
}

#[test]
fn the_context_load_shows_the_bytes_buildkit_transfers_then_only_the_stats() {
    let (project, build) = golden_context_project();
    let first = build(&project);
    // BuildKit: `transferring context: 2.03kB done`, `DONE X.Xs`.
    let expected = block(&golden("context", "buildkit.plain"), "[internal] load build context");
    assert_eq!(expected, ["transferring context: 2.03kB done", "DONE X.Xs"]);
    assert_eq!(context_load(&first), expected, "{}", first.stderr);

    // Unchanged files are not read again: stats only, BuildKit's 27 bytes.
    let second = build(&project);
    assert!(golden("context", "buildkit.second.rawjson").contains("\"current\":27,"));
    assert_eq!(context_load(&second), ["transferring context: 27B done", "DONE X.Xs"]);
}

/// The remembered file digests (`file-hashes-v1` in the root) only save reading files: damaged,
/// the build reads the files again (the transfer counts their bytes, as the first build's) and
/// replaces them, and the next build reads stats only.
#[test]
fn damaged_remembered_file_digests_are_read_again_and_replaced() {
    let (project, build) = golden_context_project();
    let first = build(&project);
    let remembered = project.root().join("file-hashes-v1");
    let mut bytes = std::fs::read(&remembered).expect("the build remembered its file digests");
    // The last byte of the last entry's digest (the file's checksum follows): trusted, it would
    // give that file another digest and the COPY another cache key.
    let last_digest_byte = bytes.len() - 33;
    bytes[last_digest_byte] ^= 0x55;
    std::fs::write(&remembered, &bytes).unwrap();

    let second = build(&project);
    assert_eq!(context_load(&second), ["transferring context: 2.03kB done", "DONE X.Xs"], "{}", second.stderr);
    // The same digests, read again: every step is the first build's.
    let outcomes =
        |run: &Run| run.steps().into_iter().filter(|(name, _)| name.contains("COPY")).map(|(_, outcome)| outcome).collect::<Vec<_>>();
    assert!(!outcomes(&first).is_empty() && outcomes(&first).iter().all(|outcome| outcome == "DONE"), "{}", first.stderr);
    assert!(outcomes(&second).iter().all(|outcome| outcome == "CACHED"), "{}", second.stderr);
    let third = build(&project);
    assert_eq!(context_load(&third), ["transferring context: 27B done", "DONE X.Xs"], "{}", third.stderr);
}

#[test]
fn the_context_load_counts_a_tree_as_buildkit_did() {
    let project = Project::new();
    project
        .dockerfile("FROM busybox\nCOPY dir /dir\n")
        .write("dir/small", &"s".repeat(100))
        .write("dir/empty", "")
        .write("dir/sub/big", &"b".repeat(40_000))
        .write("unused", &"u".repeat(5000));
    std::os::unix::fs::symlink("small", project.ctx().join("dir/link")).unwrap();
    let run = project.build(&["--build-context", &busybox_context()]).ok();
    let expected = block(&golden("context-tree", "buildkit.plain"), "[internal] load build context");
    assert_eq!(expected, ["transferring context: 40.31kB done", "DONE X.Xs"]);
    assert_eq!(context_load(&run), expected, "{}", run.stderr);
}

/// A `sha256:<64 hex>` word, replaced as the golden files write random digests.
fn digests_replaced(line: &str) -> String {
    line.split(' ')
        .map(|word| match word.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => "sha256:DIGEST",
            _ => word,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The shape of a base image's block: its blobs, then one `extracting` line per layer.
fn extraction_shape(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| digests_replaced(line))
        .filter(|line| !line.starts_with("resolve "))
        .map(|line| {
            if line.starts_with("sha256:DIGEST ") && line.ends_with(" done") {
                "sha256:DIGEST SIZE / SIZE done".to_owned()
            } else {
                line.replace(" X.Xs done", " done")
            }
        })
        .collect()
}

#[test]
fn a_base_image_new_to_the_root_shows_its_layers_extracting() {
    let project = Project::new();
    project.dockerfile("FROM busybox\nRUN true\n");
    let context = busybox_context();
    let run = project.build(&["--build-context", &context]).ok();
    let lines = block(&run.stderr, "[1/2] FROM ");
    let done: Vec<&String> = lines.iter().filter(|line| line.starts_with("extracting sha256:") && line.ends_with(" done")).collect();
    assert!(!done.is_empty(), "{}", run.stderr);
    // As BuildKit: each layer once, done (`testdata/progress/extracting`); a slow one (over
    // BuildKit's 100 ms batch) also shows while open, before its done line.
    let golden_lines = block(&golden("extracting", "buildkit.plain"), "[stage-0 1/2] FROM docker.io/library/rbuild-extract-golden");
    let golden_shape = extraction_shape(&golden_lines);
    assert!(golden_shape.contains(&"extracting sha256:DIGEST done".to_owned()), "{golden_shape:?}");
    for line in extraction_shape(&lines).iter().filter(|line| line.starts_with("extracting") && line.ends_with(" done")) {
        assert!(golden_shape.contains(line), "{line:?} is not a line BuildKit prints ({golden_shape:?})\n{}", run.stderr);
    }
    let digest = |line: &str| line.split(' ').nth(1).map(str::to_owned);
    let unique: BTreeSet<_> = done.iter().map(|line| digest(line)).collect();
    assert_eq!(unique.len(), done.len(), "{}", run.stderr);
    for (index, line) in lines.iter().enumerate().filter(|(_, line)| line.starts_with("extracting sha256:") && !line.ends_with(" done")) {
        assert!(
            lines[index..].iter().any(|later| later.ends_with(" done") && digest(later) == digest(line)),
            "{line:?} never ends\n{}",
            run.stderr
        );
    }

    // The next build has the layers: nothing to extract.
    let again = project.build(&["--build-context", &context, "--no-cache"]).ok();
    again.stderr_lacks("extracting sha256:");
}

fn build_with_progress(project: &Project, progress: &str, args: &[&str]) -> Run {
    let root = project.root();
    let ctx = project.ctx();
    let mut full = vec!["build", "--root", root.to_str().unwrap(), "--progress", progress];
    full.extend_from_slice(args);
    full.push(ctx.to_str().unwrap());
    run_command(project.command(&full), None)
}

/// The header of the final tty frame: `[+] Building X.Xs (6/8)`, with ` FINISHED` or not.
fn final_header(stderr: &str) -> String {
    let start = stderr.rfind("[+] Building").unwrap_or_else(|| panic!("no tty frame in\n{stderr}"));
    normalise(stderr[start..].lines().next().unwrap_or_default().trim_end())
}

#[test]
fn a_failed_build_that_left_steps_unrun_does_not_say_finished() {
    let project = Project::new();
    fs::copy(golden_context("failed-unrun").join("Dockerfile"), project.ctx().join("Dockerfile")).unwrap();
    let context = busybox_context();
    let run = build_with_progress(&project, "tty", &["--build-context", &context, "--no-cache"]).fails(1);
    // BuildKit: `[+] Building X.Xs (6/8)`: two COPYs never ran.
    let golden_header = final_header(&golden("failed-unrun", "buildkit.tty"));
    assert_eq!(golden_header, "[+] Building X.Xs (6/8)");
    let header = final_header(&run.stderr);
    assert!(!header.ends_with("FINISHED"), "{}", run.stderr);
    let counts = header.trim_start_matches("[+] Building X.Xs (").trim_end_matches(')');
    let (completed, total) = counts.split_once('/').unwrap_or_else(|| panic!("{header:?}"));
    let (completed, total): (usize, usize) = (completed.parse().unwrap(), total.parse().unwrap());
    assert!(completed < total, "{header:?}");

    // Plain output never says FINISHED, failed or not.
    let plain = project.build(&["--build-context", &context, "--no-cache"]).fails(1);
    plain.stderr_lacks("FINISHED");
}

#[test]
fn a_failed_build_whose_vertices_all_ended_says_finished_and_quotes_the_command() {
    let project = Project::new();
    fs::copy(golden_context("failed").join("Dockerfile"), project.ctx().join("Dockerfile")).unwrap();
    let context = busybox_context();
    let run = build_with_progress(&project, "tty", &["--build-context", &context]).fails(1);
    let golden_tty = golden("failed", "buildkit.tty");
    assert!(final_header(&golden_tty).ends_with(") FINISHED"));
    assert!(final_header(&run.stderr).ends_with(") FINISHED"), "{}", run.stderr);

    // The command as Go's %q writes it, on the step's ERROR line and the last line.
    let plain = project.build(&["--build-context", &context]).fails(1);
    let golden_plain = golden("failed", "buildkit.plain");
    let error_line = |text: &str| block(text, "[2/2] RUN echo").into_iter().find(|line| line.starts_with("ERROR: ")).unwrap_or_default();
    let expected = error_line(&golden_plain);
    assert_eq!(expected, r#"ERROR: process "/bin/sh -c echo \"a b\" && exit 3" did not complete successfully: exit code: 3"#);
    assert_eq!(error_line(&plain.stderr), expected, "{}", plain.stderr);
    let last = |text: &str| text.lines().last().and_then(|line| line.split_once("failed to solve: ")).map(|(_, rest)| rest.to_owned());
    assert_eq!(last(&plain.stderr), last(&golden_plain), "{}", plain.stderr);
}

/// The vertices of a rawjson stream: digest → (name, input digests).
type Vertices = BTreeMap<String, (String, Vec<String>)>;

/// Each vertex of a rawjson stream, and every digest that was an input.
fn rawjson_graph(stream: &str) -> (Vertices, BTreeSet<String>) {
    let mut vertices = BTreeMap::new();
    let mut inputs = BTreeSet::new();
    for line in stream.lines().filter(|line| line.starts_with('{')) {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"));
        for vertex in object["vertexes"].as_array().into_iter().flatten() {
            let digest = vertex["digest"].as_str().unwrap_or_default().to_owned();
            let its_inputs: Vec<String> =
                vertex["inputs"].as_array().into_iter().flatten().filter_map(|input| input.as_str().map(String::from)).collect();
            inputs.extend(its_inputs.iter().cloned());
            let name = vertex["name"].as_str().unwrap_or_default().to_owned();
            if let Some((known_name, known_inputs)) = vertices.get(&digest) {
                assert_eq!((known_name, known_inputs), (&name, &its_inputs), "vertex {digest} changed in {line}");
            }
            vertices.insert(digest, (name, its_inputs));
        }
    }
    (vertices, inputs)
}

/// The graph's edges by step (`[2/3]`, `[internal] load build context`): the name up to the
/// first `]`, which BuildKit and rbuild write alike.
fn edges(vertices: &Vertices) -> BTreeSet<(String, String)> {
    let step = |name: &str| name.split_inclusive(']').next().unwrap_or(name).to_owned();
    let mut edges = BTreeSet::new();
    for (name, inputs) in vertices.values() {
        for input in inputs {
            edges.insert((step(&vertices[input].0), step(name)));
        }
    }
    edges
}

#[test]
fn the_rawjson_stream_carries_the_graph_with_real_digests() {
    let project = Project::new();
    copy_tree(&golden_context("context"), &project.ctx());
    let context = busybox_context();
    let run = build_with_progress(&project, "rawjson", &["--build-context", &context]).ok();
    let (vertices, inputs) = rawjson_graph(&run.stderr);
    for input in &inputs {
        assert!(vertices.contains_key(input), "input {input} is no vertex of the stream\n{}", run.stderr);
    }
    for digest in vertices.keys() {
        assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    }
    // The same graph as BuildKit's for this Dockerfile: FROM and the context into COPY, COPY
    // into RUN.
    let (golden_vertices, golden_inputs) = rawjson_graph(&golden("context", "buildkit.second.rawjson"));
    assert!(golden_inputs.iter().all(|input| golden_vertices.contains_key(input)));
    let expected = edges(&golden_vertices);
    assert_eq!(
        expected,
        BTreeSet::from([
            ("[1/3]".to_owned(), "[2/3]".to_owned()),
            ("[internal]".to_owned(), "[2/3]".to_owned()),
            ("[2/3]".to_owned(), "[3/3]".to_owned()),
        ])
    );
    assert_eq!(edges(&vertices), expected, "{}", run.stderr);

    // Content-addressed: the next build names every vertex the same.
    let again = build_with_progress(&project, "rawjson", &["--build-context", &context]).ok();
    assert_eq!(rawjson_graph(&again.stderr).0, vertices);
}

#[test]
fn the_warnings_summary_names_rbuilds_flag() {
    let project = Project::new();
    project.dockerfile("FROM busybox\n");
    let missing = project.out("no-cache-here");
    let cache_from = format!("type=local,src={}", missing.display());
    let run = project.build(&["--build-context", &busybox_context(), "--cache-from", &cache_from]).ok();
    run.stderr_has("\n 1 warning found (use rbuild --debug to expand):\n - cache import from ");
    run.stderr_lacks("docker --debug");
}
