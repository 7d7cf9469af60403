//! Determinism, cache hits and misses (read from `--progress=plain`), `cache du`, `cache prune`,
//! and two processes sharing one state root.

use std::path::Path;

use crate::support::*;

const EPOCH: &str = "1700000000";

/// The Dockerfile steps (not `[internal]`, not exporting) and their outcomes.
fn dockerfile_steps(run: &Run) -> Vec<(String, String)> {
    run.steps().into_iter().filter(|(name, _)| name.starts_with('[') && !name.starts_with("[internal]")).collect()
}

fn manifest_digest(archive: &Path) -> String {
    skopeo_inspect(archive)["Digest"].as_str().unwrap().to_string()
}

/// Every file and directory of the context gets the same mtime.
fn pin_mtimes(project: &Project) {
    for path in tree(&project.ctx()) {
        tool("touch", &["-h", "-d", &format!("@{EPOCH}"), project.ctx().join(path.trim_end_matches('/')).to_str().unwrap()]);
    }
}

#[test]
fn unchanged_rebuild_is_all_cached_and_identical() {
    let project = Project::from_fixture("cache");
    let first = project.build_oci("first.tar", &[]);
    let second_path = project.out("second.tar");
    let run = project.build(&["-o", &format!("type=oci,dest={}", second_path.display())]).ok();
    let steps = dockerfile_steps(&run);
    assert_eq!(steps.len(), 4, "{steps:?}");
    for (name, outcome) in &steps {
        assert_eq!(outcome, "CACHED", "step {name} on an unchanged rebuild\n{}", run.stderr);
    }
    assert_eq!(manifest_digest(&first), manifest_digest(&second_path));
}

#[test]
fn separate_roots_give_the_same_digest_with_source_date_epoch() {
    let mut digests = Vec::new();
    for _ in 0..2 {
        let project = Project::from_fixture("cache");
        pin_mtimes(&project);
        let archive = project.out("out.tar");
        let mut command = project.build_command(&["-t", "app:1", "-o", &format!("type=oci,dest={}", archive.display())]);
        command.env("SOURCE_DATE_EPOCH", EPOCH);
        run_command(command, None).ok();
        let config = skopeo_config(&archive);
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        for entry in config["history"].as_array().unwrap() {
            assert_eq!(entry["created"], "2023-11-14T22:13:20Z", "{entry}");
        }
        digests.push(manifest_digest(&archive));
    }
    assert_eq!(digests[0], digests[1], "two fresh roots, same inputs, different digests");
}

#[test]
fn changing_a_file_rebuilds_only_the_steps_that_use_it() {
    let project = Project::from_fixture("cache");
    let first = project.build_oci("first.tar", &[]);

    project.write("one.txt", "changed\n");
    let run = project.build(&["-o", &format!("type=oci,dest={}", project.out("second.tar").display())]).ok();
    assert_eq!(run.step("COPY two.txt"), "CACHED");
    assert_eq!(run.step("COPY three.txt"), "CACHED");
    assert_eq!(run.step("COPY --from=other"), "CACHED");
    assert_eq!(run.step("COPY one.txt"), "DONE");
    assert_ne!(manifest_digest(&first), manifest_digest(&project.out("second.tar")));

    // three.txt feeds stage `other`, and through it every later step of `final`.
    project.write("three.txt", "changed\n");
    let run = project.build(&["-o", &format!("type=oci,dest={}", project.out("third.tar").display())]).ok();
    assert_eq!(run.step("COPY two.txt"), "CACHED");
    assert_eq!(run.step("COPY three.txt"), "DONE");
    assert_eq!(run.step("COPY --from=other"), "DONE");
    assert_eq!(run.step("COPY one.txt"), "DONE");
    let rootfs = umoci_unpack_untagged(&project, &project.out("third.tar"));
    assert_eq!(read(&rootfs.join("copied.txt")), "changed\n");
    assert_eq!(read(&rootfs.join("one.txt")), "changed\n");
}

/// umoci needs a tag: re-export the archive under one with skopeo.
fn umoci_unpack_untagged(project: &Project, archive: &Path) -> std::path::PathBuf {
    let tagged = project.out("tagged.tar");
    tool("skopeo", &["copy", &format!("oci-archive:{}", archive.display()), &format!("oci-archive:{}:t", tagged.display())]);
    umoci_unpack(&tagged, "t")
}

#[test]
fn no_cache_rebuilds_every_step_to_the_same_image() {
    let project = Project::from_fixture("cache");
    let first = project.build_oci("first.tar", &[]);
    let second = project.out("second.tar");
    let run = project.build(&["--no-cache", "-o", &format!("type=oci,dest={}", second.display())]).ok();
    let steps = dockerfile_steps(&run);
    assert_eq!(steps.len(), 4);
    for (name, outcome) in &steps {
        assert_eq!(outcome, "DONE", "step {name} with --no-cache");
    }
    assert_eq!(manifest_digest(&first), manifest_digest(&second));
}

#[test]
fn no_cache_filter_rebuilds_only_that_stage() {
    let project = Project::from_fixture("cache");
    project.build_oci("first.tar", &[]);
    let run = project.build(&["--no-cache-filter", "other", "-o", &format!("type=oci,dest={}", project.out("second.tar").display())]).ok();
    assert_eq!(run.step("[other 1/1] COPY three.txt"), "DONE");
    assert_eq!(run.step("[final 1/3] COPY two.txt"), "CACHED");
    assert_eq!(run.step("[final 3/3] COPY one.txt"), "CACHED");
}

/// What `cache du` accounts: every file and directory under `snapshots-v1` and `blobs-v1`,
/// each inode once (`du -sb`), minus those two directories and `blobs-v1/sha256` themselves.
fn on_disk(root: &Path) -> u64 {
    let du = |path: &Path| -> u64 { tool("du", &["-sb", path.to_str().unwrap()]).split_whitespace().next().unwrap().parse().unwrap() };
    let own = |path: &Path| -> u64 { tool("stat", &["-c", "%s", path.to_str().unwrap()]).trim().parse().unwrap() };
    let snapshots = root.join("snapshots-v1");
    let blobs = root.join("blobs-v1");
    du(&snapshots) - own(&snapshots) + du(&blobs) - own(&blobs) - own(&blobs.join("sha256"))
}

/// go-units' HumanSize (`26.84kB`), to compare with the table.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 {
        value /= 1000.0;
        unit += 1;
    }
    let digits_before = if value < 10.0 {
        1
    } else if value < 100.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.*}", 4 - digits_before);
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text };
    format!("{text}{}", units[unit])
}

#[test]
fn cache_du_total_matches_the_disk() {
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    let expected = on_disk(&project.root());
    assert!(expected > 0);

    let table = project.cache(&["du"]).ok().stdout_text();
    let header = table.lines().next().unwrap();
    for column in ["ID", "RECLAIMABLE", "SIZE", "LAST ACCESSED"] {
        assert!(header.contains(column), "header {header:?}");
    }
    let total = table.lines().find(|line| line.starts_with("Total:")).unwrap_or_else(|| panic!("no Total: in\n{table}"));
    assert_eq!(total.split_whitespace().nth(1).unwrap(), human_size(expected), "{table}");

    // buildx's JSON: one object a line, the formatter's keys, sizes and times as text.
    let records = json_lines(&project.cache(&["du", "--format", "json"]).ok().stdout_text());
    assert!(!records.is_empty());
    let keys =
        ["CreatedAt", "Description", "ID", "LastUsedAt", "Mutable", "Parents", "Reclaimable", "Shared", "Size", "Type", "UsageCount"];
    for record in &records {
        let object = record.as_object().expect("an object");
        assert_eq!(object.keys().map(String::as_str).collect::<Vec<_>>(), keys, "{record}");
        assert!(record["ID"].as_str().is_some_and(|id| id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())), "{record}");
        assert!(record["Type"] == "regular" || record["Type"] == "internal", "{record}");
        let created = record["CreatedAt"].as_str().unwrap();
        assert!(created.len() == 29 && created.ends_with(" +0000 UTC") && created.as_bytes()[10] == b' ', "{record}");
        assert!(record["LastUsedAt"].as_str().unwrap().ends_with(" ago"), "{record}");
        assert!(record["Size"].as_str().unwrap().ends_with('B'), "{record}");
        assert_eq!(
            (&record["Mutable"], &record["Reclaimable"], &record["Shared"]),
            (&false.into(), &true.into(), &false.into()),
            "{record}"
        );
        assert!(record["Parents"].is_null() && record["UsageCount"].is_u64(), "{record}");
    }
    // The table shows the same records, with the same sizes.
    let rows: Vec<Vec<&str>> =
        table.lines().skip(1).take_while(|line| !line.contains(':')).map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), records.len(), "{table}");
    for (row, record) in rows.iter().zip(&records) {
        assert_eq!((row[0], row[1], row[2]), (record["ID"].as_str().unwrap(), "true", record["Size"].as_str().unwrap()), "{table}");
    }
}

/// `du --format json` lines, parsed.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(json).collect()
}

/// IDs of `du --format json --filter FILTER...`.
fn ids(project: &Project, filters: &[&str]) -> Vec<String> {
    let mut args = vec!["du", "--format", "json"];
    for filter in filters {
        args.extend(["--filter", filter]);
    }
    json_lines(&project.cache(&args).ok().stdout_text()).iter().map(|record| record["ID"].as_str().unwrap().to_string()).collect()
}

fn descriptions(project: &Project) -> Vec<String> {
    json_lines(&project.cache(&["du", "--format", "json"]).ok().stdout_text())
        .iter()
        .map(|record| record["Description"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 10, point 4: buildx's filters, with BuildKit's operators (recorded from it in
/// testdata/cache/buildctl-filters.txt), on `du` and `prune`.
#[test]
fn du_and_prune_take_buildx_filters() {
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    let all = ids(&project, &[]);
    let regular = ids(&project, &["type=regular"]);
    let other = ids(&project, &["type!=regular"]);
    assert_eq!(regular.len(), 4, "one layer per COPY: {regular:?}");
    assert!(!other.is_empty(), "the image's config and manifest are `internal`");
    assert_eq!(regular.len() + other.len(), all.len());
    // `description~=` is a regular expression; several filters must all match. (A value has no
    // spaces: buildx joins the filters unquoted, and BuildKit stops a value at a space.)
    let copied = ids(&project, &["description~=COPY.(one|two)\\.txt", "type=regular"]);
    assert_eq!(copied.len(), 2, "{:?}", descriptions(&project));
    assert!(ids(&project, &["description~=COPY.(one|two)\\.txt", "type=internal"]).is_empty());
    // `id=` finds ids containing the text.
    assert_eq!(ids(&project, &[&format!("id={}", &regular[0][10..20])]), [regular[0].clone()]);
    // An unknown field: `==` matches nothing, `!=` everything (as BuildKit).
    assert!(ids(&project, &["color=red"]).is_empty());
    assert_eq!(ids(&project, &["color!=red"]).len(), all.len());
    // With a filter the table has no summary.
    let table = project.cache(&["du", "--filter", "type=regular"]).ok().stdout_text();
    assert_eq!(table.lines().count(), 1 + regular.len(), "{table}");
    assert!(!table.contains("Total:"), "{table}");

    for (filter, message) in [
        ("type", "invalid filter `type`: bad format of filter (expected name=value)"),
        ("type==regular", "failed to parse filter `type===regular`: [type >|=|< ==regular]: unsupported operator \"===\""),
        ("until=1d", "\"until\" filter expects a duration (e.g., '24h'): time: unknown unit \"d\" in duration \"1d\""),
        ("description=a b", "failed to parse filter `description==a b`: [description==a >| |< b]: unexpected input:  "),
    ] {
        project.cache(&["du", "--filter", filter]).fails(2).stderr_has(&format!("ERROR: {message}\n"));
        project.cache(&["prune", "-f", "--filter", filter]).fails(2).stderr_has(&format!("ERROR: {message}\n"));
    }
    project.cache(&["du", "--filter", "type=a", "--filter", "type=b"]).fails(2).stderr_has("\"type\" filter expects only one value");

    // prune takes exactly what the filter selects.
    let run = project.cache(&["prune", "-f", "--filter", "description~=COPY.one\\.txt"]).ok();
    let pruned = run.stdout_text();
    assert_eq!(pruned.lines().count(), 3, "header, one row, total:\n{pruned}");
    assert!(pruned.lines().last().unwrap().starts_with("Total:\t"), "{pruned}");
    let left = descriptions(&project);
    assert_eq!(left.len(), all.len() - 1, "{left:?}");
    assert!(!left.iter().any(|description| description.contains("COPY one.txt")), "{left:?}");
    // Everything was used just now: `until=1h` takes nothing.
    let run = project.cache(&["prune", "-f", "--filter", "until=1h"]).ok();
    assert_eq!(run.stdout_text(), "Total:\t0B\n");
}

/// Issue 10, point 4: `--reserved-space`, `--max-used-space`, `--min-free-space` as BuildKit
/// weighs them, `--keep-storage` as the old name of the first, sizes as go-units reads them.
#[test]
fn prune_keeps_what_the_space_flags_allow() {
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    let count = ids(&project, &[]).len();
    let removed = |args: &[&str]| -> usize {
        let mut full = vec!["prune", "-f"];
        full.extend_from_slice(args);
        let run = project.cache(&full).ok();
        run.stdout_text().lines().filter(|line| line.len() > 64 && !line.starts_with("ID")).count()
    };
    // Enough free space already: nothing goes.
    assert_eq!(removed(&["--min-free-space", "1"]), 0);
    // The reserve wins over the maximum.
    assert_eq!(removed(&["--max-used-space", "1", "--reserved-space", "1PB"]), 0);
    let run = project.cache(&["prune", "-f", "--keep-storage", "1pb", "--max-used-space", "1"]).ok();
    run.stderr_has("Flag --keep-storage has been deprecated, keep-storage flag has been changed to reserved-space");
    assert_eq!(ids(&project, &[]).len(), count);
    // A maximum of 10 kB: the oldest go until the rest fits (the store holds about 18 kB).
    let gone = removed(&["--max-used-space", "10kb"]);
    assert!(gone > 0 && gone < count, "{gone} of {count}");
    let table = project.cache(&["du"]).ok().stdout_text();
    let total = table.lines().find(|line| line.starts_with("Total:")).unwrap();
    let total = total.split_whitespace().nth(1).unwrap();
    let bytes = match total.strip_suffix("kB") {
        Some(kilobytes) => kilobytes.parse::<f64>().unwrap() * 1000.0,
        None => total.trim_end_matches('B').parse::<f64>().unwrap(),
    };
    assert!(bytes <= 10240.0, "{table}");
    // More free space wanted than the disk has: everything that may go goes.
    assert_eq!(removed(&["--min-free-space", "1000PB"]), count - gone);
    assert!(ids(&project, &[]).is_empty());

    project.cache(&["prune", "-f", "--max-used-space", "10XB"]).fails(2).stderr_has("invalid suffix: 'xb'");
    project.cache(&["prune", "-f", "--reserved-space", "GB"]).fails(2).stderr_has("invalid size: 'GB'");
}

/// Issue 10, point 4: a reader that goes away ends `du` as it ends buildx (a Go program):
/// killed by SIGPIPE, nothing on stderr. Measured with the oracle: `buildctl du` into a closed
/// pipe exits by signal 13 (status 141 in a shell).
#[test]
fn a_closed_stdout_ends_du_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    let root = project.root();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = project
        .command(&["cache", "du", "--verbose", "--root", root.to_str().unwrap()])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{:?}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");

    // The everyday form: `| head -1` prints the header and nothing complains.
    let script = format!("'{RBUILD}' cache du --root '{}' | head -1", root.display());
    let run = run_command(wrapped_command("sh", &["-c", &script], &project.command(&[])), None).ok();
    assert_eq!(run.stdout_text().split_whitespace().collect::<Vec<_>>(), ["ID", "RECLAIMABLE", "SIZE", "LAST", "ACCESSED"]);
    assert_eq!(run.stderr, "");
}

/// Issue 10, point 4: without `-f`, `prune` asks and reads one line from stdin, a pipe too:
/// `y` or `Y` prunes; anything else, or nothing, leaves the cache and exits 0 (as buildx).
#[test]
fn prune_reads_its_answer_from_a_pipe() {
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    let count = ids(&project, &[]).len();
    let prune = |stdin: Option<&[u8]>| {
        let root = project.root();
        run_command(project.command(&["cache", "prune", "--root", root.to_str().unwrap()]), stdin).ok()
    };
    for answer in [&b"yes\n"[..], b"n\n", b"\n", b" y\n"] {
        let run = prune(Some(answer));
        run.stderr_has("WARNING! This will remove all dangling build cache. Are you sure you want to continue? [y/N] ");
        assert_eq!(run.stdout_text(), "", "answer {:?}", String::from_utf8_lossy(answer));
        assert_eq!(ids(&project, &[]).len(), count, "answer {:?}", String::from_utf8_lossy(answer));
    }
    // stdin at its end (/dev/null): no.
    prune(None);
    assert_eq!(ids(&project, &[]).len(), count);
    let run = prune(Some(b"Y\r\n"));
    assert!(run.stdout_text().starts_with("ID\t"), "{}", run.stdout_text());
    assert!(ids(&project, &[]).is_empty());
}

#[test]
fn cache_prune_all_empties_the_store() {
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    project.cache(&["prune", "-a", "-f"]).ok();
    assert_eq!(project.cache(&["du", "--format", "json"]).ok().stdout_text(), "", "no records, no lines");
    assert!(tree(&project.root().join("snapshots-v1")).is_empty());
    assert!(tree(&project.root().join("blobs-v1/sha256")).is_empty());
    let table = project.cache(&["du"]).ok().stdout_text();
    assert!(table.lines().any(|line| line.split_whitespace().collect::<Vec<_>>() == ["Total:", "0B"]), "{table}");
    // The next build starts from nothing and works.
    let run = project.build(&["-o", &format!("type=oci,dest={}", project.out("again.tar").display())]).ok();
    for (name, outcome) in dockerfile_steps(&run) {
        assert_eq!(outcome, "DONE", "step {name} after prune");
    }
}

/// Issue 9, point 7: a prune waiting for the root is not starved by builds that start while it
/// waits (with 8 builders it never ran): they queue behind it.
#[test]
fn a_waiting_prune_goes_before_builds_that_start_after_it() {
    let project = Project::from_fixture("cache");
    project.build_oci("out.tar", &[]);
    let root = project.root();
    // A build running now, in effect: a shared lock on the root.
    let running = nix::fcntl::Flock::lock(std::fs::File::open(root.join("lock")).unwrap(), nix::fcntl::FlockArg::LockShared).unwrap();
    let root_arg = root.to_str().unwrap();
    let mut prune = project.command(&["cache", "prune", "-f", "--root", root_arg]).stdout(std::process::Stdio::null()).spawn().unwrap();
    // The prune waits for the exclusive lock, holding the gate.
    let started = std::time::Instant::now();
    while nix::fcntl::Flock::lock(std::fs::File::open(root.join("lock.gate")).unwrap(), nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
    {
        assert!(prune.try_wait().unwrap().is_none(), "the prune ran beside a running build");
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the prune never took the gate");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut build = project.build_command(&[]).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(build.try_wait().unwrap().is_none(), "a build started after the waiting prune went first");
    assert!(prune.try_wait().unwrap().is_none(), "the prune ran beside a running build");
    drop(running);
    assert!(prune.wait().unwrap().success());
    assert!(build.wait().unwrap().success());
}

#[test]
fn two_processes_share_one_root() {
    let first = Project::from_fixture("cache");
    let second = Project::from_fixture("config");
    let root = first.root();
    let spawn = |project: &Project, archive: &Path| {
        let mut command = project.command(&[
            "build",
            "--root",
            root.to_str().unwrap(),
            "--progress=plain",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            project.ctx().to_str().unwrap(),
        ]);
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
        command.spawn().unwrap()
    };
    let mut children = Vec::new();
    for round in 0..2 {
        children.push(spawn(&first, &first.out(&format!("a{round}.tar"))));
        children.push(spawn(&second, &second.out(&format!("b{round}.tar"))));
    }
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a concurrent build failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    for archive in [first.out("a0.tar"), first.out("a1.tar"), second.out("b0.tar"), second.out("b1.tar")] {
        assert_eq!(skopeo_inspect(&archive)["Layers"].as_array().unwrap().len(), 3, "{}", archive.display());
    }
    // The shared root is consistent afterwards: a rebuild is all cached.
    let run = first.build_command(&["-o", &format!("type=oci,dest={}", first.out("again.tar").display())]);
    let run = run_command(run, None).ok();
    for (name, outcome) in dockerfile_steps(&run) {
        assert_eq!(outcome, "CACHED", "step {name} after concurrent builds");
    }
}

/// The diff ids of an archive's image, which do not depend on when it was built.
fn diff_ids(archive: &Path) -> serde_json::Value {
    skopeo_config(archive)["rootfs"]["diff_ids"].clone()
}

/// Overwrites `length` bytes of a file at `offset` with a pattern.
fn damage(path: &Path, offset: u64, length: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&vec![0x5a; length]).unwrap();
}

/// Issue 9, point 6: a damaged cache database is found when the root is opened, moved aside
/// with one line that says so, and the build goes on with an empty cache to the same image; a
/// root damaged that way is pruned whole.
#[test]
fn a_damaged_database_is_moved_aside_and_the_build_goes_on() {
    let project = Project::from_fixture("cache");
    let first = project.build_oci("first.tar", &[]);
    let database = project.root().join("db-v1.sqlite");
    damage(&database, 0, 100);
    let second = project.out("second.tar");
    let run = project.build(&["-o", &format!("type=oci,dest={}", second.display())]).ok();
    run.stderr_has(&format!("the cache database `{}` was damaged", database.display()));
    run.stderr_has("db-v1.sqlite.damaged` and the build cache starts empty");
    for (name, outcome) in dockerfile_steps(&run) {
        assert_eq!(outcome, "DONE", "step {name} with an empty cache");
    }
    assert_eq!(diff_ids(&second), diff_ids(&first));
    assert!(project.root().join("db-v1.sqlite.damaged").is_file());

    // Damaged inside (not the header): `cache prune -a` still empties the root.
    let size = std::fs::metadata(&database).unwrap().len();
    damage(&database, size / 2, 4096);
    project.cache(&["prune", "-a", "-f"]).ok().stderr_has("was damaged");
    assert!(tree(&project.root().join("snapshots-v1")).is_empty());
    assert!(tree(&project.root().join("blobs-v1/sha256")).is_empty());
}

/// Issue 9, point 6: a layer blob whose bytes no longer match its digest is never exported: the
/// export fails naming it and removes it, and the next build makes it again. A blob cut short is
/// caught before use and made again at once.
#[test]
fn a_damaged_blob_is_never_exported() {
    let project = Project::from_fixture("cache");
    let first = project.build_oci("first.tar", &[]);
    let layers: Vec<String> = skopeo_manifest(&first)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| layer["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string())
        .collect();
    let blob = project.root().join("blobs-v1/sha256").join(&layers[0]);
    let size = std::fs::metadata(&blob).unwrap().len();
    damage(&blob, size / 2, 1);
    let second = project.out("second.tar");
    let run = project.build(&["-o", &format!("type=oci,dest={}", second.display())]).fails(1);
    run.stderr_has(&format!("the blob `{}` in the state root was damaged", blob.display()));
    assert!(!second.exists(), "an archive with a damaged blob was written");
    assert!(!blob.exists(), "the damaged blob stayed");

    let third = project.build_oci("third.tar", &[]);
    assert_eq!(skopeo_manifest(&third)["layers"], skopeo_manifest(&first)["layers"]);

    std::fs::OpenOptions::new().write(true).open(&blob).unwrap().set_len(size / 2).unwrap();
    let fourth = project.build_oci("fourth.tar", &[]);
    assert_eq!(skopeo_manifest(&fourth)["layers"], skopeo_manifest(&first)["layers"]);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), size);
}

/// Pseudo-random letters and digits (xorshift): compressible to about three quarters.
fn letters(count: usize) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(alphabet[(state >> 32) as usize % alphabet.len()])
        })
        .collect()
}

/// Issue 13: the gzip members of a blob whose bytes were checked are copied into the next layer
/// without being inflated, but only while the blob's stat is the one of that check. A blob
/// damaged in place lends none of its members: the next layer, one file edited, still
/// decompresses to its diff id.
#[test]
fn a_damaged_blob_lends_no_gzip_members() {
    let project = Project::new();
    project.write("text.txt", &letters(3_000_000)).write("small.txt", "one\n").dockerfile("FROM scratch\nCOPY . /data/\n");
    let first = project.build_oci("first.tar", &[]);
    let layer = skopeo_manifest(&first)["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let blob = project.root().join("blobs-v1/sha256").join(&layer);
    let size = std::fs::metadata(&blob).unwrap().len();
    // Every member of the blob is damaged.
    for offset in (0..size).step_by(64 << 10) {
        damage(&blob, offset + 100, 1);
    }
    project.write("small.txt", "two\n");
    let second = project.build_oci("second.tar", &[]);
    let layout = extract_layout(&second);
    let second_layer = skopeo_manifest(&second)["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let gunzipped = tool("sh", &["-c", &format!("gzip -dc {}/blobs/sha256/{second_layer} | sha256sum", layout.display())]);
    let diff_id = skopeo_config(&second)["rootfs"]["diff_ids"][0].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert_eq!(gunzipped.split_whitespace().next().unwrap(), diff_id);
}

/// Issues 9 and 13: a blob of 1 MiB or more is exported without being hashed again while its
/// stat is the one remembered when its bytes were last checked (written, or read whole), and is
/// copied into a file archive by the kernel. A write into the blob changes its ctime, so a blob
/// damaged in place, same size, after that check is still caught, in an archive file, on
/// stdout and in a layout directory, and made again by the next build.
#[test]
fn a_large_blob_damaged_after_its_check_is_never_exported() {
    let project = Project::new();
    project.write("text.txt", &letters(3_000_000)).dockerfile("FROM scratch\nCOPY text.txt /text.txt\n");
    let first = project.build_oci("first.tar", &[]);
    let layer = skopeo_manifest(&first)["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let blob = project.root().join("blobs-v1/sha256").join(&layer);
    let size = std::fs::metadata(&blob).unwrap().len();
    assert!(size > 1 << 20, "the layer blob has {size} bytes");
    // Exported again unchanged (the remembered check), to a new archive.
    let again = project.build_oci("again.tar", &[]);
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&first).unwrap());

    let outputs = [
        format!("type=oci,dest={}", project.out("archive.tar").display()),
        "type=oci,dest=-".to_string(),
        format!("type=oci,tar=false,dest={}", project.out("layout").display()),
    ];
    for output in outputs {
        damage(&blob, size / 3, 1);
        let run = project.build(&["-o", &output]).fails(1);
        run.stderr_has(&format!("the blob `{}` in the state root was damaged", blob.display()));
        assert!(!blob.exists(), "the damaged blob stayed ({output})");
        let remade = project.build_oci("remade.tar", &[]);
        assert_eq!(skopeo_manifest(&remade)["layers"], skopeo_manifest(&first)["layers"], "{output}");
    }
    assert!(!project.out("archive.tar").exists(), "an archive with a damaged blob was written");
    assert!(!project.out("layout").join("blobs/sha256").join(&layer).exists(), "a layout got a damaged blob");
}

/// Issue 9, point 6: a full disk under the state root ends the build with the system's words
/// and a path in the root, exit 1.
#[test]
fn a_full_state_root_says_so() {
    require_tool("unshare");
    let project = Project::from_fixture("cache");
    // Incompressible, larger than the root's file system.
    let noise: String = (0..400_000u32).map(|index| char::from(b'a' + (index.wrapping_mul(2_654_435_761) >> 27) as u8 % 26)).collect();
    project.write("one.txt", &noise);
    let root = project.root();
    std::fs::create_dir_all(&root).unwrap();
    let build = project.build_command(&["-o", &format!("type=oci,dest={}", project.out("full.tar").display())]);
    let mount = format!("mount -t tmpfs -o size=256k tmpfs '{}' && exec \"$@\"", root.display());
    let run = run_command(wrapped_command("unshare", &["-m", "sh", "-c", &mount, "sh"], &build), None).fails(1);
    run.stderr_has("No space left on device");
    run.stderr_has(&root.display().to_string());
}
