//! Issue 13, point 2: a COPY whose context changed in a few files links the unchanged ones from
//! the step's last snapshot. What it must keep: the layers are those a full copy makes, and a
//! RUN after the incremental copy cannot change the earlier snapshot through a shared file.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::{Case, Mode};
use crate::support::*;

const SNAPSHOTTERS: [&str; 2] = ["overlay", "copy"];

/// `rbuild build` of the case with a snapshotter, as the case's user.
fn build(case: &Case, snapshotter: &str, args: &[&str]) -> Run {
    let mut command: Command = case.command_as_caller(args);
    command.env("RBUILD_SNAPSHOTTER", snapshotter);
    let command = match case.mode {
        Mode::Root => command,
        Mode::Rootless => as_test_user(&command),
    };
    let mut run = run_command(command, None);
    run.what = format!("[{:?} {snapshotter}] {}", case.mode, run.what);
    run.ok()
}

fn build_oci(case: &Case, snapshotter: &str, name: &str) -> PathBuf {
    let archive = case.out(name);
    build(case, snapshotter, &["-o", &format!("type=oci,dest={}", archive.display())]);
    archive
}

fn build_local(case: &Case, snapshotter: &str, name: &str) -> PathBuf {
    let dir = case.out(name);
    build(case, snapshotter, &["-o", &format!("type=local,dest={}", dir.display())]);
    dir
}

fn layer_digests(archive: &Path) -> Vec<String> {
    let manifest = skopeo_manifest(archive);
    manifest["layers"].as_array().unwrap().iter().map(|layer| layer["digest"].as_str().unwrap().to_string()).collect()
}

/// The inodes of `relative` in every snapshot of the case's state root that has it.
fn snapshot_inodes(case: &Case, relative: &str) -> Vec<u64> {
    let mut inodes = Vec::new();
    for snapshot in fs::read_dir(case.project.root().join("snapshots-v1")).unwrap() {
        if let Ok(metadata) = fs::symlink_metadata(snapshot.unwrap().path().join(relative)) {
            inodes.push(metadata.ino());
        }
    }
    inodes
}

fn set_mtime(path: &Path, seconds: i64) {
    tool("touch", &["-h", "-d", &format!("@{seconds}"), path.to_str().unwrap()]);
}

/// The case's context: files in directories, an empty file, an executable, a symlink, two
/// hard links of one file and two files of one content.
fn write_context(case: &Case) {
    for index in 1..=40 {
        case.write(&format!("d/f{index}"), &format!("file {index}\n"));
    }
    case.write("d/sub/deep/g", "deep\n").write("d/empty", "").write("run.sh", "#!/bin/sh\n");
    set_mode(&case.project.ctx().join("run.sh"), 0o755);
    std::os::unix::fs::symlink("f1", case.project.ctx().join("d/link")).unwrap();
    case.write("d/pair-a", "linked\n");
    // Twins of one content and two modes, copied onto one path: the second must win though the
    // first, unchanged, is linked after it is decided on.
    case.write("d/twin-a", "twin\n").write("d/twin-b", "twin\n");
    set_mode(&case.project.ctx().join("d/twin-b"), 0o600);
    fs::hard_link(case.project.ctx().join("d/pair-a"), case.project.ctx().join("d/pair-b")).unwrap();
}

/// Changes of every kind a copy must notice: content of the same size, content of another size,
/// only the time, only the mode, a removed file, a new file, a file become a directory.
fn edit_context(case: &Case) {
    let ctx = case.project.ctx();
    case.write("d/f3", "FILE 3\n").write("d/f4", "file 4, longer now\n").write("d/new", "new\n");
    set_mtime(&ctx.join("d/f5"), 1_000_000);
    set_mode(&ctx.join("d/f6"), 0o600);
    fs::remove_file(ctx.join("d/f7")).unwrap();
    fs::remove_file(ctx.join("d/f8")).unwrap();
    case.write("d/f8/inside", "now a directory\n");
}

#[test]
fn an_incremental_copy_gives_the_layers_a_full_copy_gives() {
    for mode in [Mode::Root, Mode::Rootless] {
        for snapshotter in SNAPSHOTTERS {
            let case = Case::new(mode);
            case.dockerfile("FROM busybox\nCOPY . /app/\nCOPY --chmod=640 --chown=7:8 d /opt/d\nCOPY d/f1 d/f3 run.sh /one/\nCOPY d/twin-a d/twin-b /same\n");
            write_context(&case);
            if mode == Mode::Rootless {
                give_to_test_user(&case.project);
            }
            build_oci(&case, snapshotter, "first.tar");
            edit_context(&case);
            let incremental = build_oci(&case, snapshotter, "incremental.tar");
            // Unchanged files were linked from the first run's snapshot, not copied.
            let inodes = snapshot_inodes(&case, "app/d/f2");
            assert_eq!(inodes.len(), 2, "[{mode:?} {snapshotter}] app/d/f2 in two snapshots");
            assert_eq!(inodes[0], inodes[1], "[{mode:?} {snapshotter}] app/d/f2 was copied, not linked");
            let chowned = snapshot_inodes(&case, "opt/d/f2");
            assert_eq!((chowned.len(), chowned[0]), (2, chowned[1]), "[{mode:?} {snapshotter}] opt/d/f2 was copied, not linked");
            let changed = snapshot_inodes(&case, "app/d/f3");
            assert_ne!(changed[0], changed[1], "[{mode:?} {snapshotter}] the edited app/d/f3 was linked");

            // The same context, copied with its times, built on a fresh state root.
            let fresh = Case::new(mode);
            fs::remove_dir_all(fresh.project.ctx()).unwrap();
            tool("cp", &["-a", case.project.ctx().to_str().unwrap(), fresh.project.ctx().to_str().unwrap()]);
            if mode == Mode::Rootless {
                give_to_test_user(&fresh.project);
            }
            let full = build_oci(&fresh, snapshotter, "full.tar");
            assert_eq!(layer_digests(&incremental), layer_digests(&full), "[{mode:?} {snapshotter}] layers differ from a full copy");
        }
    }
}

#[test]
fn a_run_after_an_incremental_copy_leaves_the_earlier_snapshot_alone() {
    for mode in [Mode::Root, Mode::Rootless] {
        for snapshotter in SNAPSHOTTERS {
            let case = Case::new(mode);
            let first_dockerfile = "FROM busybox\nCOPY . /app/\n";
            case.dockerfile(first_dockerfile);
            for name in ["keep", "mode", "gone", "touched", "edited"] {
                case.write(name, &format!("{name}\n"));
            }
            for name in ["keep", "mode", "gone", "touched"] {
                set_mtime(&case.project.ctx().join(name), 1_000_000_000);
            }
            if mode == Mode::Rootless {
                give_to_test_user(&case.project);
            }
            let first = build_local(&case, snapshotter, "first");

            case.write("edited", "edited again\n");
            case.dockerfile(
                "FROM busybox\nCOPY . /app/\nRUN echo more >> /app/keep && chmod 600 /app/mode && rm /app/gone && touch /app/touched\n",
            );
            let second = build_local(&case, snapshotter, "second");
            assert_eq!(read(&second.join("app/keep")), "keep\nmore\n", "[{mode:?} {snapshotter}]");
            assert_eq!(mode_of(&second.join("app/mode")) & 0o777, 0o600, "[{mode:?} {snapshotter}]");
            assert!(!second.join("app/gone").exists(), "[{mode:?} {snapshotter}]");
            // The two COPY snapshots share app/keep; the RUN's layer has a copy of its own.
            let inodes = snapshot_inodes(&case, "app/keep");
            let shared = inodes.iter().filter(|inode| inodes.iter().filter(|other| other == inode).count() == 2).count();
            assert_eq!((inodes.len(), shared), (3, 2), "[{mode:?} {snapshotter}] app/keep was not linked: {inodes:?}");

            // The first Dockerfile and context again: the first COPY's snapshot, as it was.
            case.write("edited", "edited\n").dockerfile(first_dockerfile);
            let again = build_local(&case, snapshotter, "again");
            for name in ["keep", "mode", "gone", "touched", "edited", "Dockerfile"] {
                let (before, after) = (first.join("app").join(name), again.join("app").join(name));
                assert_eq!(read(&after), read(&before), "[{mode:?} {snapshotter}] content of {name}");
                let (before, after) = (fs::metadata(&before).unwrap(), fs::metadata(&after).unwrap());
                assert_eq!(after.mode(), before.mode(), "[{mode:?} {snapshotter}] mode of {name}");
                assert_eq!(
                    (after.mtime(), after.mtime_nsec()),
                    (before.mtime(), before.mtime_nsec()),
                    "[{mode:?} {snapshotter}] mtime of {name}"
                );
            }
        }
    }
}
