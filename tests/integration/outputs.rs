//! Every `-o` type, checked with the tool a user would use on it.

use std::fs;

use serde_json::{Value, json};

use crate::support::*;

/// testdata/e2e/config with `a.txt` 0644 and `run.sh` 0644 (COPY --chmod makes it 0755).
fn config_project() -> Project {
    let project = Project::from_fixture("config");
    set_mode(&project.ctx().join("a.txt"), 0o644);
    set_mode(&project.ctx().join("run.sh"), 0o644);
    project
}

#[test]
fn oci_archive_carries_the_image_config() {
    let project = config_project();
    let archive = project.build_oci("out.tar", &["-t", "app:1"]);

    let inspect = skopeo_inspect(&archive);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3, "WORKDIR, COPY, COPY: {inspect:#}");

    let config = skopeo_config(&archive);
    let container = &config["config"];
    assert_eq!(container["Env"], json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=two words"]));
    assert_eq!(container["WorkingDir"], "/app");
    assert_eq!(container["Entrypoint"], json!(["/app/run.sh"]));
    assert_eq!(container["Cmd"], json!(["serve"]));
    assert_eq!(container["Labels"], json!({"com.example.k": "v", "other": "x"}));
    assert_eq!(container["ExposedPorts"], json!({"53/udp": {}, "8080/tcp": {}}));
    assert_eq!(container["Volumes"], json!({"/data": {}}));
    assert_eq!(container["User"], "1000:1000");
    assert_eq!(container["StopSignal"], "SIGTERM");
    assert_eq!(
        container["Healthcheck"],
        json!({"Test": ["CMD", "/app/run.sh", "check"], "Interval": 30_000_000_000u64, "Timeout": 5_000_000_000u64, "Retries": 3})
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
}

/// An export that would write the same bytes to a file this store wrote and nobody touched
/// keeps the file (no rewrite, no fsync of the whole archive); anything else writes it anew.
#[test]
fn an_unchanged_archive_is_not_written_again() {
    use std::os::unix::fs::MetadataExt;
    let project = config_project();
    let archive = project.build_oci("out.tar", &["-t", "app:1"]);
    let stamp = |path: &std::path::Path| {
        let metadata = fs::metadata(path).unwrap();
        (metadata.ino(), metadata.mtime(), metadata.mtime_nsec())
    };
    let first = stamp(&archive);
    let bytes = fs::read(&archive).unwrap();

    project.build_oci("out.tar", &["-t", "app:1"]);
    assert_eq!(stamp(&archive), first, "the same export rewrote the archive");
    assert_eq!(fs::read(&archive).unwrap(), bytes);

    // Another name is another index.json: written anew.
    project.build_oci("out.tar", &["-t", "app:2"]);
    assert_ne!(stamp(&archive), first);
    assert_ne!(fs::read(&archive).unwrap(), bytes);
    // Back to the first image, then the file is touched: the store's record no longer holds.
    project.build_oci("out.tar", &["-t", "app:1"]);
    assert_eq!(fs::read(&archive).unwrap(), bytes);
    fs::write(&archive, b"damaged").unwrap();
    project.build_oci("out.tar", &["-t", "app:1"]);
    assert_eq!(fs::read(&archive).unwrap(), bytes, "a file changed after the export is written again");
    // A docker archive of the same image is other bytes at the same path.
    let docker = format!("type=docker,dest={}", archive.display());
    project.build(&["-o", &docker, "-t", "app:1"]).ok();
    assert_ne!(fs::read(&archive).unwrap(), bytes);
}

/// A layer an image export takes as gzip is compressed as it is made (one pass over its files);
/// its blob is the one the export makes when it compresses the layer itself, and it decompresses
/// (with the system's gzip) to the tar whose digest is the layer's diff id. The context holds
/// incompressible bytes (stored chunks) and text (deflated ones). Members copied from earlier
/// blobs change nothing either.
#[test]
fn layers_compressed_as_made_equal_those_compressed_at_export() {
    use sha2::{Digest, Sha256};
    let project = Project::new();
    let mut noise = Vec::with_capacity(3 << 20);
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    while noise.len() < 3 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.extend_from_slice(&state.to_le_bytes());
    }
    fs::write(project.ctx().join("noise.bin"), &noise).unwrap();
    project.write("text.txt", &"alpha bravo charlie delta\n".repeat(100_000));
    project.dockerfile("FROM scratch\nCOPY noise.bin /\nCOPY text.txt /t/\n");
    let made = project.build_oci("made.tar", &[]);

    // Another state root: built without an image output first, so the export compresses.
    let other_root = project.out("other-root");
    let ctx = project.ctx();
    let local = format!("type=local,dest={}", project.out("local").display());
    let exported = project.out("exported.tar");
    let oci = format!("type=oci,dest={}", exported.display());
    for output in [&local, &oci] {
        let args = ["build", "--root", other_root.to_str().unwrap(), "--progress=plain", "-o", output, ctx.to_str().unwrap()];
        run_command(project.command(&args), None).ok();
    }
    let layers = |archive: &std::path::Path| skopeo_manifest(archive)["layers"].clone();
    assert_eq!(layers(&made), layers(&exported));

    // After an edit, the blob made with the first build's members copied is the one a fresh
    // state root makes.
    project.write("text.txt", &"alpha bravo charlie delta\n".repeat(100_000).replacen("alpha", "edited", 1));
    let edited = project.build_oci("edited.tar", &[]);
    let fresh_root = project.out("fresh-root");
    let fresh = project.out("fresh.tar");
    let oci = format!("type=oci,dest={}", fresh.display());
    let args = ["build", "--root", fresh_root.to_str().unwrap(), "--progress=plain", "-o", &oci, ctx.to_str().unwrap()];
    run_command(project.command(&args), None).ok();
    assert_eq!(layers(&edited), layers(&fresh));
    assert_ne!(layers(&edited), layers(&made));

    let layout = extract_layout(&made);
    let diff_ids = skopeo_config(&made)["rootfs"]["diff_ids"].clone();
    for (layer, diff_id) in layers(&made).as_array().unwrap().iter().zip(diff_ids.as_array().unwrap()) {
        let blob = layout.join("blobs/sha256").join(layer["digest"].as_str().unwrap().trim_start_matches("sha256:"));
        let output = std::process::Command::new("gzip").arg("-dc").arg(&blob).output().expect("gzip runs");
        assert!(output.status.success());
        assert_eq!(format!("sha256:{}", hex::encode(Sha256::digest(&output.stdout))), diff_id.as_str().unwrap());
    }
}

#[test]
fn oci_archive_history_follows_buildkit() {
    let project = config_project();
    let archive = project.build_oci("out.tar", &["-t", "app:1"]);
    let config = skopeo_config(&archive);
    let history: Vec<(String, bool)> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["comment"], "buildkit.dockerfile.v0", "{entry}");
            (entry["created_by"].as_str().unwrap().to_string(), entry["empty_layer"] == json!(true))
        })
        .collect();
    let expected_prefix = [
        ("ENV A=1 B=two words", true),
        ("WORKDIR /app", false),
        ("COPY a.txt /b # buildkit", false),
        ("COPY --chown=1000:1000 --chmod=0755 run.sh /app/run.sh # buildkit", false),
        ("LABEL com.example.k=v other=x", true),
    ];
    for (index, (created_by, empty)) in expected_prefix.iter().enumerate() {
        assert_eq!(history[index], (created_by.to_string(), *empty), "history[{index}] of {history:#?}");
    }
    assert!(history[5].0.starts_with("EXPOSE ") && history[5].0.contains("8080/tcp") && history[5].1, "{history:#?}");
    assert!(history[6].1);
    assert!(history[6].0.starts_with("VOLUME ") && history[6].0.contains("/data"), "{history:#?}");
    assert_eq!(history[7], ("USER 1000:1000".to_string(), true));
    assert_eq!(history[8], ("STOPSIGNAL SIGTERM".to_string(), true));
    assert!(history[9].0.starts_with("HEALTHCHECK ") && history[9].1, "{history:#?}");
    assert_eq!(history[10], ("ENTRYPOINT [\"/app/run.sh\"]".to_string(), true));
    assert_eq!(history[11], ("CMD [\"serve\"]".to_string(), true));
    assert_eq!(history.len(), 12);
    // As many non-empty history entries as layers.
    assert_eq!(history.iter().filter(|(_, empty)| !empty).count(), config["rootfs"]["diff_ids"].as_array().unwrap().len());
}

#[test]
fn oci_archive_unpacks_with_umoci() {
    let project = config_project();
    let archive = project.build_oci("out.tar", &["-t", "app:1"]);
    let rootfs = umoci_unpack(&archive, "1");
    assert_eq!(tree(&rootfs), ["app/", "app/run.sh", "b"]);
    assert_eq!(read(&rootfs.join("b")), "alpha\n");
    assert_eq!(read(&rootfs.join("app/run.sh")), "#!/bin/sh\necho hi\n");
    assert_eq!(mode_of(&rootfs.join("b")), 0o644);
    assert_eq!(mode_of(&rootfs.join("app/run.sh")), 0o755);
    assert_eq!(mode_of(&rootfs.join("app")), 0o755);

    // Ownership as the layers record it (a rootless unpack cannot show it).
    let listings = layer_listings(&archive);
    assert_eq!(listing_fields(listing_line(&listings[1], "b")), ("-rw-r--r--".into(), "0/0".into()));
    assert_eq!(listing_fields(listing_line(&listings[2], "app/run.sh")), ("-rwxr-xr-x".into(), "1000/1000".into()));
}

#[test]
fn oci_archive_index_names_the_tag() {
    let project = config_project();
    let archive = project.build_oci("out.tar", &["-t", "app:1"]);
    let layout = extract_layout(&archive);
    let index = json(&read(&layout.join("index.json")));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["annotations"]["io.containerd.image.name"], "docker.io/library/app:1");
    assert_eq!(manifests[0]["annotations"]["org.opencontainers.image.ref.name"], "1");
    // The descriptor carries the platform, as BuildKit's index.json does.
    assert_eq!(manifests[0]["platform"], json!({"architecture": "amd64", "os": "linux"}));
    assert_eq!(json(&read(&layout.join("oci-layout"))), json!({"imageLayoutVersion": "1.0.0"}));
    // skopeo resolves the same image by that tag.
    let by_tag = json(&tool("skopeo", &["inspect", &format!("oci-archive:{}:1", archive.display())]));
    assert_eq!(by_tag["Digest"], manifests[0]["digest"]);
}

#[test]
fn oci_layout_directory_with_tar_false() {
    let project = config_project();
    let layout = project.out("layout");
    let spec = format!("type=oci,dest={},tar=false", layout.display());
    project.build(&["-o", &spec, "-t", "app:1"]).ok();
    assert!(layout.is_dir(), "tar=false writes a directory");
    assert!(layout.join("oci-layout").is_file() && layout.join("index.json").is_file());
    let inspect = json(&tool("skopeo", &["inspect", &format!("oci:{}:1", layout.display())]));
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);
    // Every blob the manifest names is there, with the right digest.
    let manifest = json(&tool("skopeo", &["inspect", "--raw", &format!("oci:{}:1", layout.display())]));
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
        let blob = layout.join("blobs/sha256").join(hex);
        let sum = tool("sha256sum", &[blob.to_str().unwrap()]);
        assert!(sum.starts_with(hex), "blob {hex} has digest {sum}");
        assert_eq!(fs::metadata(&blob).unwrap().len(), layer["size"].as_u64().unwrap());
    }
}

#[test]
fn docker_archive_loads_into_podman() {
    let project = config_project();
    let archive = project.out("docker.tar");
    let spec = format!("type=docker,dest={}", archive.display());
    project.build(&["-o", &spec, "-t", "app:1"]).ok();
    let podman = Podman::new(project.dir());
    let loaded = podman.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert!(loaded.stdout_text().contains("docker.io/library/app:1"), "podman load said: {}", loaded.stdout_text());
    let inspect = json(&podman.run(&["image", "inspect", "docker.io/library/app:1"]).ok().stdout_text());
    let image = &inspect[0];
    assert_eq!(image["RepoTags"], json!(["docker.io/library/app:1"]));
    assert_eq!(image["Config"]["WorkingDir"], "/app");
    assert_eq!(image["Config"]["Cmd"], json!(["serve"]));
    assert_eq!(image["Config"]["Entrypoint"], json!(["/app/run.sh"]));
    assert_eq!(image["Config"]["User"], "1000:1000");
    assert_eq!(image["Config"]["Labels"]["com.example.k"], "v");
    assert!(image["Config"]["Env"].as_array().unwrap().contains(&json!("B=two words")));
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 3);
}

#[test]
fn docker_archive_iidfile_is_the_config_digest() {
    let project = config_project();
    let archive = project.out("docker.tar");
    let iidfile = project.out("iid");
    let spec = format!("type=docker,dest={}", archive.display());
    project.build(&["-o", &spec, "-t", "app:1", "--iidfile", iidfile.to_str().unwrap()]).ok();
    let podman = Podman::new(project.dir());
    podman.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    let id = podman.run(&["image", "inspect", "--format", "{{.Id}}", "docker.io/library/app:1"]).ok().stdout_text();
    assert_eq!(read(&iidfile), format!("sha256:{}", id.trim()));
}

#[test]
fn tar_output_is_the_root_filesystem() {
    let project = config_project();
    let rootfs = project.out("rootfs.tar");
    let spec = format!("type=tar,dest={}", rootfs.display());
    project.build(&["-o", &spec]).ok();
    let listing = tool("tar", &["--numeric-owner", "-tvf", rootfs.to_str().unwrap()]);
    let mut names: Vec<&str> = listing.lines().map(|line| line.split_whitespace().last().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["app/", "app/run.sh", "b"], "{listing}");
    assert_eq!(listing_fields(listing_line(&listing, "app/run.sh")), ("-rwxr-xr-x".into(), "1000/1000".into()));
    assert_eq!(listing_fields(listing_line(&listing, "b")), ("-rw-r--r--".into(), "0/0".into()));
    assert_eq!(tool("tar", &["-xOf", rootfs.to_str().unwrap(), "b"]), "alpha\n");
}

#[test]
fn local_output_is_a_directory_tree() {
    let project = config_project();
    let dir = project.build_local("out", &[]);
    assert_eq!(tree(&dir), ["app/", "app/run.sh", "b"]);
    assert_eq!(read(&dir.join("b")), "alpha\n");
    assert_eq!(mode_of(&dir.join("app/run.sh")), 0o755);
    // A bare path means type=local too.
    let bare = project.out("bare");
    project.build(&["-o", bare.to_str().unwrap()]).ok();
    assert_eq!(tree(&bare), ["app/", "app/run.sh", "b"]);
}

/// As BuildKit's client writes a local output (each point measured with the oracle): files
/// belong to the caller whatever their owner in the image (app/run.sh is 1000:1000 there), a
/// new directory is made 0700, an existing one keeps its mode and its other files, and a
/// second export into it overwrites (it failed with "Not a directory").
#[test]
fn local_output_is_written_as_buildkit_client_writes_it() {
    let project = config_project();
    let dir = project.build_local("out", &[]);
    assert_eq!(mode_of(&dir), 0o700);
    let run_sh = std::fs::symlink_metadata(dir.join("app/run.sh")).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&run_sh), std::os::unix::fs::MetadataExt::gid(&run_sh)), (0, 0));
    let existing = project.out("existing");
    write_file(&existing.join("stale"), "kept\n");
    set_mode(&existing, 0o750);
    for _ in 0..2 {
        let spec = format!("type=local,dest={}", existing.display());
        project.build(&["-o", &spec]).ok();
    }
    assert_eq!(mode_of(&existing), 0o750);
    assert_eq!(tree(&existing), ["app/", "app/run.sh", "b", "stale"]);
    assert_eq!(read(&existing.join("stale")), "kept\n");
}

#[test]
fn dash_output_writes_only_the_tar_to_stdout() {
    let project = config_project();
    let run = project.build(&["-o", "-"]).ok();
    assert!(!run.stdout.is_empty());
    assert_eq!(run.stdout.len() % 512, 0, "a tar is whole 512-byte blocks");
    let captured = project.out("stdout.tar");
    fs::write(&captured, &run.stdout).unwrap();
    let listing = tool("tar", &["-tf", captured.to_str().unwrap()]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, ["app/", "app/run.sh", "b"]);
    // Byte for byte what type=tar writes to a file: nothing else went to stdout.
    let file = project.out("file.tar");
    project.build(&["-o", &format!("type=tar,dest={}", file.display())]).ok();
    assert!(fs::read(&file).unwrap() == run.stdout, "stdout differs from the type=tar file");
    // Progress went to stderr.
    run.stderr_has("exporting to client tarball");
}

#[test]
fn compression_sets_layer_media_types() {
    let project = config_project();
    let cases = [
        ("gzip", "application/vnd.oci.image.layer.v1.tar+gzip", &[0x1f_u8, 0x8b][..]),
        ("zstd", "application/vnd.oci.image.layer.v1.tar+zstd", &[0x28, 0xb5, 0x2f, 0xfd][..]),
        ("uncompressed", "application/vnd.oci.image.layer.v1.tar", &[][..]),
    ];
    let mut diff_ids: Vec<Value> = Vec::new();
    for (compression, media_type, magic) in cases {
        let archive = project.out(&format!("{compression}.tar"));
        let spec = format!("type=oci,dest={},compression={compression}", archive.display());
        project.build(&["-o", &spec]).ok();
        let manifest = skopeo_manifest(&archive);
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        let layout = extract_layout(&archive);
        for layer in layers {
            assert_eq!(layer["mediaType"], media_type, "{compression}: {manifest:#}");
            let hex = layer["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
            let blob = fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
            assert!(blob.starts_with(magic), "{compression} blob starts with {:02x?}", &blob[..8]);
            if compression == "uncompressed" {
                assert_eq!(&blob[257..262], b"ustar", "an uncompressed layer is a plain tar");
            }
            // GNU tar (with zstd installed) reads every one of them.
            tool("tar", &["-tf", layout.join("blobs/sha256").join(hex).to_str().unwrap()]);
        }
        diff_ids.push(skopeo_config(&archive)["rootfs"]["diff_ids"].clone());
    }
    assert_eq!(diff_ids[0], diff_ids[1], "the same layers whatever the compression");
    assert_eq!(diff_ids[0], diff_ids[2]);
}

#[test]
fn iidfile_and_metadata_file_agree_with_skopeo() {
    let project = config_project();
    let iidfile = project.out("iid");
    let metadata_file = project.out("metadata.json");
    let archive = project
        .build_oci("out.tar", &["-t", "app:1", "--iidfile", iidfile.to_str().unwrap(), "--metadata-file", metadata_file.to_str().unwrap()]);
    let digest = skopeo_inspect(&archive)["Digest"].as_str().unwrap().to_string();
    let manifest_bytes = tool("skopeo", &["inspect", "--raw", &format!("oci-archive:{}", archive.display())]);
    let manifest = json(&manifest_bytes);
    assert_eq!(read(&iidfile), manifest["config"]["digest"].as_str().unwrap(), "iidfile holds the config digest, as buildx's image id");
    let metadata = json(&read(&metadata_file));
    assert_eq!(metadata["containerimage.digest"], digest.as_str());
    assert_eq!(metadata["containerimage.config.digest"], manifest["config"]["digest"]);
    assert_eq!(metadata["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(metadata["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(metadata["containerimage.descriptor"]["size"], manifest_bytes.len());
    assert_eq!(metadata["image.name"], "docker.io/library/app:1");
}

/// Issue 10, point 3: `--iidfile` and `--metadata-file` need an output that makes an image
/// (buildx's words for local and tar), are removed before a build so a failed one leaves no
/// stale id, and are written whole (no temporary file is left beside them).
#[test]
fn iidfile_and_metadata_file_name_an_image_or_refuse() {
    let project = config_project();
    let iidfile = project.out("iid");
    let metadata_file = project.out("metadata.json");
    let local = format!("type=local,dest={}", project.out("local").display());
    let iid = iidfile.to_str().unwrap();
    let metadata = metadata_file.to_str().unwrap();
    project
        .build(&["-o", &local, "--iidfile", iid])
        .fails(2)
        .stderr_has("ERROR: local and tar exporters are incompatible with image ID file");
    project.build(&["--iidfile", iid]).fails(2).stderr_has("ERROR: --iidfile needs an output that makes an image");
    project
        .build(&["-o", &local, "--metadata-file", metadata])
        .fails(2)
        .stderr_has("ERROR: --metadata-file needs an output that makes an image");

    let archive = project.build_oci("out.tar", &["--iidfile", iid, "--metadata-file", metadata]);
    let config_digest = json(&tool("skopeo", &["inspect", "--raw", &format!("oci-archive:{}", archive.display())]))["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(read(&iidfile), config_digest);
    let siblings: Vec<String> =
        fs::read_dir(project.dir()).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!siblings.iter().any(|name| name.starts_with(".rbuild-")), "a temporary file was left: {siblings:?}");

    // A failing build removes the files of the earlier one.
    project.dockerfile("FROM scratch\nCOPY missing.txt /\n");
    let spec = format!("type=oci,dest={}", project.out("failed.tar").display());
    project.build(&["-o", &spec, "--iidfile", iid, "--metadata-file", metadata]).fails(1);
    assert!(!iidfile.exists() && !metadata_file.exists(), "a stale id survived a failed build");
}

/// Issue 10, point 3: `--annotation` takes buildx's `TYPE[,TYPE][[PLATFORM]]:` prefixes and puts
/// each where BuildKit's single-platform OCI export put it (testdata/e2e/annotations, recorded
/// with the oracle): manifest-descriptor ones on index.json's descriptor, untyped ones on the
/// manifest, platform-qualified ones nowhere; index ones are BuildKit's error.
#[test]
fn annotations_go_where_buildkit_puts_them() {
    let project = Project::from_fixture("annotations");
    let expected = json(&read(&fixture("annotations").join("expected.json")));
    let busybox = crate::images::busybox_context();
    let flags = ["manifest-descriptor:md=1", "manifest[linux/amd64]:pa=3", "manifest[linux/arm64]:pb=4", "plain=6"];
    let mut args = vec!["--build-context", busybox.as_str()];
    for flag in &flags {
        args.extend(["--annotation", flag]);
    }
    let archive = project.build_oci("out.tar", &args);
    let layout = extract_layout(&archive);
    let index = json(&read(&layout.join("index.json")));
    assert_eq!(index["manifests"][0]["annotations"], expected["descriptor"], "{index:#}");
    let manifest = skopeo_manifest(&archive);
    assert_eq!(manifest["annotations"], expected["manifest"], "{manifest:#}");
    for index_flag in ["index:ix=5", "index-descriptor:id=2"] {
        let spec = format!("type=oci,dest={}", project.out("index.tar").display());
        let failed = project.build(&["--build-context", &busybox, "-o", &spec, "--annotation", index_flag]).fails(2);
        failed.stderr_has(&format!("ERROR: {}", expected["index_error"].as_str().unwrap()));
    }
}

/// `rewrite-timestamp=true` rewrites only the layers builds made: the base image's layers keep
/// their blobs even when their files are newer than SOURCE_DATE_EPOCH (as the oracle showed with
/// this Dockerfile and SOURCE_DATE_EPOCH=1), and the new layer's times are clamped.
#[test]
fn rewrite_timestamp_keeps_base_layer_blobs() {
    let project = Project::new();
    project.dockerfile("FROM busybox\nRUN echo hi > /hi\n");
    let busybox = crate::images::busybox_context();
    let archive = project.out("image.tar");
    let spec = format!("type=oci,dest={},rewrite-timestamp=true", archive.display());
    let mut command = project.build_command(&["--build-context", &busybox, "-o", &spec]);
    command.env("SOURCE_DATE_EPOCH", "1");
    run_command(command, None).ok();
    let layout = crate::images::busybox_layout();
    let base_index = json(&read(&layout.join("index.json")));
    let base_manifest_digest = base_index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let base_manifest = json(&read(&layout.join("blobs/sha256").join(base_manifest_digest)));
    let base_layers: Vec<Value> = base_manifest["layers"].as_array().unwrap().iter().map(|layer| layer["digest"].clone()).collect();
    let manifest = skopeo_manifest(&archive);
    let layers: Vec<Value> = manifest["layers"].as_array().unwrap().iter().map(|layer| layer["digest"].clone()).collect();
    assert_eq!(layers.len(), base_layers.len() + 1);
    assert_eq!(&layers[..base_layers.len()], &base_layers[..], "base layers were rewritten");
    let listing = layer_listings(&archive).pop().unwrap();
    assert!(listing.lines().any(|line| line.ends_with(" hi") && line.contains("1970-01-01 00:00")), "{listing}");
    // Every blob in the store has a row (the rewritten layer's blob had none, so `cache du`
    // missed it).
    let database = rusqlite::Connection::open(project.root().join("db-v1.sqlite")).unwrap();
    let rows: Vec<String> =
        database.prepare("SELECT digest FROM blob").unwrap().query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    for entry in fs::read_dir(project.root().join("blobs-v1/sha256")).unwrap() {
        let digest = format!("sha256:{}", entry.unwrap().file_name().to_string_lossy());
        assert!(rows.contains(&digest), "blob {digest} has no row");
    }
}

/// Outputs write where the user points and nowhere else (issue 9, point 2; BuildKit's client
/// behaves the same way, checked with the oracle): a symlink is written through and kept, a
/// device is written into and stays a device, a missing parent directory is an error before
/// the build (nothing is created), and an empty `-o` is an error.
#[test]
fn archive_outputs_write_into_what_is_there() {
    let project = config_project();
    let target = project.out("target.tar");
    let link = project.out("link.tar");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    project.build(&["-o", &format!("type=tar,dest={}", link.display())]).ok();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(tool("tar", &["-xOf", target.to_str().unwrap(), "b"]), "alpha\n");

    // /dev/full: every write fails with ENOSPC; the node must stay a device.
    let full = project.out("full");
    nix::sys::stat::mknod(
        &full,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 7),
    )
    .unwrap();
    project.build(&["-o", &format!("type=oci,dest={}", full.display())]).fails(1).stderr_has("No space left on device");
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&std::fs::symlink_metadata(&full).unwrap().file_type()),
        "the device node was replaced"
    );

    let missing = project.out("missing/out.tar");
    project.build(&["-o", &format!("type=oci,dest={}", missing.display())]).fails(2).stderr_has("does not exist");
    assert!(!project.out("missing").exists(), "the missing parent was created");
    project.build(&["-o", ""]).fails(2).stderr_has("empty output");
}
