//! The cgroup of a step's container, and the sweep of those whose runner was killed.
//!
//! Role: every container runs in `/rbuild/rbuild-<runner pid>` of each hierarchy (libcontainer
//! creates and deletes it). A runner killed with SIGKILL cannot delete it: on a cgroup v1 host
//! that leaves one empty directory per controller. [`sweep`] (at the start of every build)
//! removes those whose runner is gone.
//!
//! Invariant: a cgroup whose runner pid is alive is never touched (a reused pid only delays the
//! sweep), and `rmdir` refuses a cgroup that still holds processes.

use std::fs;
use std::path::{Path, PathBuf};

const PARENT: &str = "rbuild";
const PREFIX: &str = "rbuild-";

/// The cgroups path of the container run by the runner `runner_pid` (absolute, as in the spec).
pub(crate) fn path_for(runner_pid: u32) -> String {
    format!("/{PARENT}/{PREFIX}{runner_pid}")
}

/// Removes the step cgroups of dead runners under `/sys/fs/cgroup`; returns how many. Best
/// effort: what cannot be removed (no permission, still busy) stays.
pub(super) fn sweep() -> usize {
    sweep_in(Path::new("/sys/fs/cgroup"), &process_is_alive)
}

/// Whether a process exists and has not exited (a zombie waiting for its reaper has: a runner
/// killed with its parent is reparented, and some reapers are slow).
fn process_is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) state ...`: the state follows the last parenthesis.
    let state = stat.rfind(')').and_then(|end| stat[end + 1..].split_whitespace().next());
    state != Some("Z") && state != Some("X")
}

/// Where step cgroups are made under `mount`: cgroup v2 (or the unified hierarchy bound there)
/// has `rbuild` at the top; v1 has one per controller directory.
fn parents(mount: &Path) -> Vec<PathBuf> {
    let mut parents = vec![mount.join(PARENT)];
    if let Ok(entries) = fs::read_dir(mount) {
        parents.extend(entries.flatten().map(|entry| entry.path().join(PARENT)));
    }
    parents
}

/// Removes the cgroups of the container the runner `runner_pid` ran, now that it has exited
/// (what libcontainer's `delete` does, without its nine parses of the mount table, its state
/// file and its resctrl lookup: 1.9 ms of a trivial step). One that is still busy stays for the
/// next build's [`sweep`].
pub(super) fn remove(runner_pid: u32) {
    remove_in(Path::new("/sys/fs/cgroup"), runner_pid);
}

fn remove_in(mount: &Path, runner_pid: u32) {
    for parent in parents(mount) {
        let cgroup = parent.join(format!("{PREFIX}{runner_pid}"));
        if cgroup.is_dir() {
            remove_cgroup(&cgroup);
        }
    }
}

fn sweep_in(mount: &Path, alive: &dyn Fn(u32) -> bool) -> usize {
    let mut removed = 0;
    for parent in parents(mount) {
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix(PREFIX).and_then(|pid| pid.parse::<u32>().ok()) else { continue };
            if entry.path().is_dir() && !alive(pid) && remove_cgroup(&entry.path()) {
                removed += 1;
            }
        }
    }
    removed
}

/// Removes a cgroup directory and the cgroups below it, deepest first (`rmdir` is how a cgroup
/// is removed; its control files go with it).
fn remove_cgroup(path: &PathBuf) -> bool {
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    fs::remove_dir(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cgroups_of_dead_runners_go() {
        // A plain directory tree stands in for the hierarchies (rmdir of an empty directory).
        let mount = tempfile::tempdir().unwrap();
        let v2 = mount.path().join("rbuild");
        let v1 = mount.path().join("pids/rbuild");
        for directory in [v2.join("rbuild-100"), v2.join("rbuild-200"), v1.join("rbuild-100/child"), v1.join("other-100")] {
            fs::create_dir_all(directory).unwrap();
        }
        let removed = sweep_in(mount.path(), &|pid| pid == 200);
        assert_eq!(removed, 2);
        assert!(!v2.join("rbuild-100").exists() && !v1.join("rbuild-100").exists());
        assert!(v2.join("rbuild-200").exists() && v1.join("other-100").exists());
        assert_eq!(path_for(7), "/rbuild/rbuild-7");
    }

    #[test]
    fn a_runner_removes_its_own_cgroups_only() {
        let mount = tempfile::tempdir().unwrap();
        let own = [mount.path().join("rbuild/rbuild-300"), mount.path().join("devices/rbuild/rbuild-300/child")];
        let others = [mount.path().join("rbuild/rbuild-3000"), mount.path().join("devices/rbuild/rbuild-30")];
        for directory in own.iter().chain(&others) {
            fs::create_dir_all(directory).unwrap();
        }
        remove_in(mount.path(), 300);
        assert!(!mount.path().join("rbuild/rbuild-300").exists() && !mount.path().join("devices/rbuild/rbuild-300").exists());
        assert!(others.iter().all(|other| other.exists()));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        assert!(process_is_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited, not yet reaped.
        while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z ")) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!process_is_alive(pid));
        child.wait().unwrap();
        assert!(!process_is_alive(pid));
    }
}
