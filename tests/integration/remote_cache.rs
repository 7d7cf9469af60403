//! The shared build cache: `--cache-to` on one state root, `--cache-from` on another, standing
//! for two CI machines; through a real registry (Debian's `docker-registry`, its access log
//! telling which blobs were downloaded) and through an OCI layout directory. Also the faults:
//! a registry stopped in the middle of a pull, a blob whose bytes do not match its digest.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use crate::registry::{Registry, mirror_config};
use crate::run::{Case, Mode};
use crate::support::*;

const CACHE_CONFIG_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";

/// The builder stage leaves a file the final image does not get, so its layer is in the cache
/// (`mode=max`) but not in the image.
const TWO_STAGES: &str = "FROM busybox AS builder\n\
    RUN echo built > /artifact && echo only-in-the-builder > /builder-only\n\
    FROM busybox\n\
    COPY app.txt /app.txt\n\
    COPY --from=builder /artifact /artifact\n\
    RUN cat /app.txt /artifact > /both\n";

fn registry_json(arguments: &[&str]) -> serde_json::Value {
    json(&tool("skopeo", arguments))
}

/// The steps of a plain build log that are Dockerfile steps (`[stage n/m] ...`).
fn dockerfile_steps(run: &Run) -> Vec<(String, String)> {
    run.steps().into_iter().filter(|(name, _)| name.starts_with('[') && !name.starts_with("[internal]")).collect()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|listing| listing.count()).unwrap_or(0)
}

#[test]
fn a_second_machine_gets_every_step_from_the_registry_cache_and_downloads_only_the_image() {
    let registry = Registry::start();
    registry.push_busybox();
    let cache = format!("{}/team/app:buildcache", registry.host());

    let first = Project::new();
    let first_config = mirror_config(&first, &registry);
    first.write("app.txt", "v1\n").dockerfile(TWO_STAGES);
    let to = format!("type=registry,ref={cache},mode=max");
    let one = first.build_oci("one.tar", &["--config", first_config.to_str().unwrap(), "--cache-to", &to]);
    let exported = first.build(&["--config", first_config.to_str().unwrap(), "--cache-to", &to]).ok();
    assert!(exported.step("exporting cache to registry").contains("DONE"));
    // Two stages on busybox: one resolve.
    assert_eq!(exported.step("load metadata for docker.io/library/busybox:latest"), "DONE");

    // The cache is an ordinary OCI manifest in the registry.
    let manifest = registry_json(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{cache}")]);
    assert_eq!(manifest["config"]["mediaType"], CACHE_CONFIG_TYPE, "{manifest}");
    let cache_config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let cached_layers: BTreeSet<String> =
        manifest["layers"].as_array().unwrap().iter().map(|layer| layer["digest"].as_str().unwrap().to_string()).collect();
    let image_layers: BTreeSet<String> =
        skopeo_inspect(&one)["Layers"].as_array().unwrap().iter().map(|layer| layer.as_str().unwrap().to_string()).collect();
    assert!(image_layers.is_subset(&cached_layers), "image {image_layers:?} cache {cached_layers:?}");
    assert!(cached_layers.len() > image_layers.len(), "mode=max keeps the builder stage's own layer too");

    // Machine two: an empty state root, the context copied to another place (other paths,
    // inodes and times): the keys are the same, every step is CACHED, the image is the same.
    let second = Project::new();
    copy_tree(&first.ctx(), &second.ctx());
    let second_config = mirror_config(&second, &registry);
    registry.clear_log();
    let two_spec = format!("type=oci,dest={}", second.out("two.tar").display());
    let run = second
        .build(&["--config", second_config.to_str().unwrap(), "--cache-from", &format!("type=registry,ref={cache}"), "-o", &two_spec])
        .ok();
    let steps = dockerfile_steps(&run);
    // Both stages are on busybox: one FROM step.
    assert_eq!(steps.len(), 5, "{steps:?}");
    for (name, status) in &steps {
        assert_eq!(status, "CACHED", "{name}\n{}", run.stderr);
    }
    assert!(run.step("importing cache manifest from").contains("DONE"));
    let two = second.out("two.tar");
    assert_eq!(skopeo_inspect(&two)["Digest"], skopeo_inspect(&one)["Digest"], "the same image, digest for digest");
    assert_eq!(std::fs::read(&two).unwrap(), std::fs::read(&one).unwrap(), "the same archive, byte for byte");

    // What was downloaded: the cache config, the base image's config (resolving `FROM busybox`)
    // and the image's layers, each once. Not the builder stage's layer; nothing was unpacked.
    let busybox =
        registry_json(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/library/busybox:latest", registry.host())]);
    let busybox_config = busybox["config"]["digest"].as_str().unwrap().to_string();
    let gets = registry.blob_gets();
    let fetched: BTreeSet<String> = gets.iter().cloned().collect();
    assert_eq!(gets.len(), fetched.len(), "a blob was downloaded twice: {gets:?}");
    let mut expected = image_layers.clone();
    expected.insert(cache_config_digest.clone());
    expected.insert(busybox_config);
    assert_eq!(fetched, expected);
    assert_eq!(entries(&second.root().join("snapshots-v1")), 0, "a build of cache hits unpacks nothing");

    // Writing the cache back, as every CI job does, downloads no layer (the registry has them
    // all) and gives the same cache manifest: same keys, same blobs, same times.
    registry.clear_log();
    second.build(&["--config", second_config.to_str().unwrap(), "--cache-from", &cache, "--cache-to", &to]).ok();
    assert_eq!(registry.blob_gets(), vec![cache_config_digest.clone()]);
    let rewritten = registry_json(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{cache}")]);
    assert_eq!(rewritten, manifest, "the cache written back is the same document");

    // A change on machine two: the builder stage still hits; the steps after the change run on
    // layers fetched from the cache, and --debug-cache says why they missed.
    second.write("app.txt", "v2\n");
    let out = second.out("changed");
    let run = second
        .build(&[
            "--config",
            second_config.to_str().unwrap(),
            "--cache-from",
            &cache,
            "--debug-cache",
            "-o",
            &format!("type=local,dest={}", out.display()),
        ])
        .ok();
    assert_eq!(run.step("[builder 2/2] RUN echo built"), "CACHED");
    assert_eq!(run.step("COPY app.txt /app.txt"), "DONE");
    assert_eq!(run.step("RUN cat /app.txt /artifact"), "DONE");
    run.stderr_has("cache miss: files of action 0 (app.txt) changed");
    assert_eq!(read(&out.join("both")), "v2\nbuilt\n");
    assert!(!out.join("builder-only").exists());

    // The first machine's cache is still there after machine two's import; a cache that does
    // not exist is a line in the progress, not a failure.
    let missing = format!("{}/team/app:nothing", registry.host());
    let run = second.build(&["--config", second_config.to_str().unwrap(), "--cache-from", &missing]).ok();
    assert_eq!(run.step("importing cache manifest from"), "ERROR");
    run.stderr_has(&format!("{missing}: not found"));
    run.stderr_has(&format!("cache import from {missing} skipped"));
    run.stderr_lacks("------\n > importing cache manifest");
}

/// `type=local` caches (a directory CI saves between jobs), with cache mounts: the second
/// machine's RUN misses but finds the mount as the first machine left it. Root and rootless.
#[test]
fn a_local_cache_directory_carries_records_and_cache_mounts() {
    const DOCKERFILE: &str = "FROM busybox\nCOPY src.txt /src.txt\n\
        RUN --mount=type=cache,target=/cache,id=warm sh -c '(stat -c %u /cache/seen || echo none) > /owner; \
        cat /src.txt >> /cache/seen; chown 1234:1234 /cache/seen; cp /cache/seen /seen'\n";
    for mode in [Mode::Root, Mode::Rootless] {
        eprintln!("=== mode {mode:?}");
        let first = Case::new(mode);
        first.write("src.txt", "one\n").dockerfile(DOCKERFILE);
        let dir = first.out("ci-cache");
        let to = format!("type=local,dest={},mode=max,cache-mounts=true", dir.display());
        let out = first.build_local("out", &["--cache-to", &to]);
        assert_eq!(read(&out.join("seen")), "one\n");
        assert_eq!(read(&out.join("owner")), "none\n");
        // An OCI layout skopeo reads; its config is rbuild's cache document.
        let manifest = registry_json(&["inspect", "--raw", &format!("oci:{}:latest", dir.display())]);
        assert_eq!(manifest["config"]["mediaType"], CACHE_CONFIG_TYPE, "{manifest}");

        let second = Case::new(mode);
        second.write("src.txt", "two\n").dockerfile(DOCKERFILE);
        if mode == Mode::Rootless {
            give_to_test_user(&second.project);
        }
        let from = format!("type=local,src={}", dir.display());
        let run = second.build(&["--cache-from", &from, "-o", &format!("type=local,dest={}", second.out("out").display())]).ok();
        assert_eq!(run.step("FROM"), "CACHED");
        assert_eq!(run.step("COPY src.txt"), "DONE");
        assert_eq!(read(&second.out("out").join("seen")), "one\ntwo\n", "[{mode:?}] the cache mount came warm");
        // The restored mount keeps its owners, as the container saw them.
        assert_eq!(read(&second.out("out").join("owner")), "1234\n", "[{mode:?}]");

        // Re-exporting to the directory replaces the tag and removes the blobs no manifest uses.
        second.write("src.txt", "three\n");
        if mode == Mode::Rootless {
            give_to_test_user(&second.project);
        }
        second.build(&["--cache-from", &from, "--cache-to", &to]).ok();
        let manifest = registry_json(&["inspect", "--raw", &format!("oci:{}:latest", dir.display())]);
        let mut used: BTreeSet<String> =
            manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect();
        used.insert(manifest["config"]["digest"].as_str().unwrap().to_string());
        let index = json(&read(&dir.join("index.json")));
        assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
        used.insert(index["manifests"][0]["digest"].as_str().unwrap().to_string());
        let present: BTreeSet<String> = std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|entry| format!("sha256:{}", entry.unwrap().file_name().to_string_lossy()))
            .collect();
        assert_eq!(present, used, "[{mode:?}] only the blobs of the current cache remain");

        // A third machine with the new cache: all CACHED.
        let third = Case::new(mode);
        third.write("src.txt", "three\n").dockerfile(DOCKERFILE);
        if mode == Mode::Rootless {
            give_to_test_user(&third.project);
        }
        let run = third.build(&["--cache-from", &from]).ok();
        for (name, status) in dockerfile_steps(&run) {
            assert_eq!(status, "CACHED", "[{mode:?}] {name}");
        }
    }
}

/// A registry killed as a base image's big layer is pulled: the build fails with a clear
/// error and leaves no partial layer; once the registry is back, the same build succeeds.
#[test]
fn a_registry_stopped_mid_pull_fails_the_build_cleanly_and_a_retry_succeeds() {
    let mut registry = Registry::start();
    let project = Project::new();
    let config = mirror_config(&project, &registry);
    let config = config.to_str().unwrap();
    // A 64 MiB incompressible layer, pushed by rbuild itself.
    let mut bytes = vec![0u8; 64 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(project.ctx().join("big.bin"), &bytes).unwrap();
    project.dockerfile("FROM scratch\nCOPY big.bin /big.bin\n");
    let big = format!("{}/team/big:1", registry.host());
    project.build(&["--config", config, "--push", "-t", &big]).ok();

    let consumer = Project::new();
    let consumer_config = mirror_config(&consumer, &registry);
    let consumer_config = consumer_config.to_str().unwrap();
    consumer.dockerfile(&format!("FROM {big}\nCOPY Dockerfile /Dockerfile\n"));
    let mut command = consumer.build_command(&["--config", consumer_config]);
    command.stderr(Stdio::piped()).stdout(Stdio::null());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut killed = false;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        // The FROM step starts: its blob is about to stream (or streams). Stop the registry.
        // (Waiting for a byte count came too late: plain progress shows a status after 100 ms,
        // as BuildKit's does, and 64 MiB from 127.0.0.1 take about that long.)
        if !killed && line.contains("[1/2] FROM ") {
            registry.stop();
            killed = true;
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(killed, "never saw the layer download start:\n{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("failed to pull `{big}")), "{log}");
    assert!(log.contains("ERROR: failed to solve:"), "{log}");
    assert_eq!(entries(&consumer.root().join("snapshots-v1")), 0, "no partial layer:\n{log}");
    assert_eq!(entries(&consumer.root().join("tmp")), 0, "nothing left in tmp:\n{log}");

    registry.restart();
    let out = consumer.build_local("out", &["--config", consumer_config]);
    assert_eq!(std::fs::read(out.join("big.bin")).unwrap(), bytes);
}

/// A cache blob whose bytes the registry changed: the import's hit fetches it, the digest
/// check rejects it, the build fails naming the blob, and nothing of it stays in the store.
#[test]
fn a_cache_blob_with_the_wrong_bytes_is_rejected() {
    let registry = Registry::start();
    let cache = format!("{}/team/app:tampered", registry.host());
    let first = Project::new();
    let config = mirror_config(&first, &registry);
    first.write("app.txt", "original\n").dockerfile("FROM scratch\nCOPY app.txt /app.txt\n");
    first.build(&["--config", config.to_str().unwrap(), "--cache-to", &format!("type=registry,ref={cache}")]).ok();
    let manifest = registry_json(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{cache}")]);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    // Same length, other bytes: the registry serves them under the old digest.
    let data = registry.blob_data(&layer);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let second = Project::new();
    copy_tree(&first.ctx(), &second.ctx());
    let second_config = mirror_config(&second, &registry);
    let failed = second
        .build(&[
            "--config",
            second_config.to_str().unwrap(),
            "--cache-from",
            &cache,
            "-o",
            &format!("type=oci,dest={}", second.out("x.tar").display()),
        ])
        .fails(1);
    failed.stderr_has(&layer);
    failed.stderr_has("digest");
    assert!(!second.root().join("blobs-v1").join(layer.replace("sha256:", "sha256/")).exists(), "the bad blob was kept");
    assert!(!second.out("x.tar").exists());
}

/// Bad specs are usage errors; an export to an unreachable registry fails the build, unless
/// `ignore-error=true` makes it a warning.
#[test]
fn cache_specs_are_checked_and_export_errors_can_be_ignored() {
    let project = Project::new();
    project.write("a.txt", "a\n").dockerfile("FROM scratch\nCOPY a.txt /a.txt\n");
    project.build(&["--cache-to", "type=gha"]).fails(2).stderr_has("cache type `gha` is not supported");
    project.build(&["--cache-to", "type=registry,ref=x/y,mode=all"]).fails(2).stderr_has("invalid value `all` for cache key `mode`");
    project.build(&["--cache-from", "type=local"]).fails(2).stderr_has("--cache-from type `local` needs `src`");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let config = project.dir().join("config.toml");
    std::fs::write(&config, format!("[registry.\"{host}\"]\nhttp = true\n")).unwrap();
    let config = config.to_str().unwrap();
    let to = format!("type=registry,ref={host}/team/app:cache");
    let failed = project.build(&["--config", config, "--cache-to", &to]).fails(1);
    failed.stderr_has(&format!("ERROR: failed to solve: failed to export the cache to {host}/team/app:cache"));
    let ignored = project.build(&["--config", config, "--cache-to", &format!("{to},ignore-error=true")]).ok();
    assert_eq!(ignored.step("exporting cache to registry"), "ERROR");
    ignored.stderr_has("failed to export the cache to");
    ignored.stderr_lacks("failed to solve");
}

/// `mode=min` (the default) keeps only the steps of the exported image: another machine runs
/// the builder stage again, and its result's key still hits the final stage's steps.
#[test]
fn mode_min_keeps_the_steps_of_the_image_only() {
    let busybox = crate::images::busybox_context();
    let first = Project::new();
    first.write("app.txt", "v1\n").dockerfile(TWO_STAGES);
    let dir = first.out("cache-min");
    let one = first.build_oci("one.tar", &["--build-context", &busybox, "--cache-to", &format!("type=local,dest={}", dir.display())]);
    let manifest = registry_json(&["inspect", "--raw", &format!("oci:{}:latest", dir.display())]);
    let cached: BTreeSet<String> =
        manifest["layers"].as_array().unwrap().iter().map(|layer| layer["digest"].as_str().unwrap().to_string()).collect();
    let image: BTreeSet<String> =
        skopeo_inspect(&one)["Layers"].as_array().unwrap().iter().map(|layer| layer.as_str().unwrap().to_string()).collect();
    assert_eq!(cached, image, "mode=min: the image's layers and no other");

    let second = Project::new();
    copy_tree(&first.ctx(), &second.ctx());
    let run = second.build(&["--build-context", &busybox, "--cache-from", &format!("type=local,src={}", dir.display())]).ok();
    assert_eq!(run.step("[builder 2/2] RUN"), "DONE");
    assert_eq!(run.step("COPY --from=builder"), "CACHED");
    assert_eq!(run.step("RUN cat /app.txt"), "CACHED");
}
