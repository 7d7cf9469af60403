//! The cgroup of a step's container, and the sweep of those whose runner was killed.
//!
//! Role: every container runs in `/rbuild/<name>` of each hierarchy, a name the rbuild process
//! that starts the runner gives it ([`new_name`]: `rbuild-<its pid>-<n>`). As root on a host with
//! cgroup v1 hierarchies (the devices controller keeps host devices out,
//! [`super::spec::DeviceGuard`]), the runner makes and joins these itself before its step
//! ([`enter_own`]), with runc's devices allow list, and hides the hierarchies from its mount
//! namespace so that libcontainer, which finds none, neither creates nor joins any. The
//! container inherits the runner's cgroups and sees them much as BuildKit's containers do: each
//! hierarchy's own cgroup, read-only, under the hierarchy's name in `/sys/fs/cgroup` (a link to
//! its mount, [`HIERARCHIES`]). Elsewhere (rootless; cgroup v2 as root) libcontainer manages the
//! cgroup.
//!
//! How a process joins matters: moving a whole process (a write to `cgroup.procs`) takes the
//! kernel's cgroup threadgroup lock, whose first taker after a quiet moment waits for an RCU
//! grace period: 5 to 15 ms measured here, the first step's largest cost (a later runner spends
//! it in standby). Moving the calling thread (`0` written to a v1 hierarchy's `tasks`) takes no
//! such lock (60 µs), and the runner is single-threaded, so that is how it joins the v1
//! hierarchies. cgroup v2 moves no single thread out of its domain; there the runner is born in
//! its cgroup instead ([`unified_cgroup`], made by rbuild, then `clone3` with
//! `CLONE_INTO_CGROUP` in the fork server), which takes the lock only for reading. A runner
//! started without that (no fork server) joins through `cgroup.procs`.
//!
//! Whoever reaps a runner removes its cgroups ([`remove`]); a runner killed with its rbuild
//! leaves one empty directory per controller, which [`sweep`] (at the start of every build)
//! removes once the rbuild process of its name is gone (its runners die with it).
//!
//! Invariant: a cgroup whose rbuild process is alive is never touched (a reused pid only delays
//! the sweep), and `rmdir` refuses a cgroup that still holds processes.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::mount::{MntFlags, MsFlags};

use super::SandboxError;

const PARENT: &str = "rbuild";
const PREFIX: &str = "rbuild-";
/// Where the hierarchies are mounted, on the host and in the container.
const MOUNT: &str = "/sys/fs/cgroup";

/// A name for the cgroups of a runner this process starts: `rbuild-<pid>-<n>`, unique on the
/// host while this process lives.
pub(super) fn new_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{PREFIX}{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Whether `name` is one [`new_name`] makes (a runner started as a program is told its name on
/// its command line).
pub(super) fn is_valid_name(name: &str) -> bool {
    owner_of(name).is_some() && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
}

/// The pid of the rbuild process whose runner's cgroup `name` is: `rbuild-<pid>-<n>` (and the
/// `rbuild-<runner pid>` of earlier versions, whose runners died with their rbuild as well).
fn owner_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// The cgroups path of the container whose runner's cgroups are `name` (absolute, as in the spec).
pub(crate) fn path_of(name: &str) -> String {
    format!("/{PARENT}/{name}")
}

/// Removes the step cgroups of dead runners under `/sys/fs/cgroup`; returns how many. Best
/// effort: what cannot be removed (no permission, still busy) stays.
pub(super) fn sweep() -> usize {
    sweep_in(Path::new(MOUNT), &process_is_alive)
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

/// Removes the cgroups `name` of a runner and its container, now that the runner has exited
/// (what libcontainer's `delete` does, without its nine parses of the mount table, its state
/// file and its resctrl lookup: 1.9 ms of a trivial step). One that is still busy stays for the
/// next build's [`sweep`].
pub(super) fn remove(name: &str) {
    remove_in(Path::new(MOUNT), name);
}

fn remove_in(mount: &Path, name: &str) {
    for parent in parents(mount) {
        let cgroup = parent.join(name);
        if cgroup.is_dir() {
            remove_cgroup(&cgroup);
        }
    }
}

/// The hierarchies of this process's mount namespace, read once (rbuild's namespace: the
/// runners' are their own and change).
fn host_hierarchies() -> &'static [Hierarchy] {
    static HIERARCHIES: OnceLock<Vec<Hierarchy>> = OnceLock::new();
    HIERARCHIES.get_or_init(|| fs::read_to_string("/proc/self/mountinfo").map(|mountinfo| hierarchies(&mountinfo)).unwrap_or_default())
}

/// rbuild's side, for a runner that will join its own cgroups ([`enter_own`]) and is forked by
/// the fork server: makes its cgroup `name` in the cgroup v2 hierarchy under `/sys/fs/cgroup`
/// (a hybrid host's `unified`), when there is one, and opens it for `CLONE_INTO_CGROUP`.
/// `None` when there is none or it cannot be made: the runner then joins it by itself.
pub(super) fn unified_cgroup(name: &str) -> Option<OwnedFd> {
    let hierarchy = host_hierarchies().iter().find(|hierarchy| hierarchy.v2)?;
    let cgroup = hierarchy.mount_point.join(PARENT).join(name);
    if let Err(error) = fs::create_dir_all(&cgroup) {
        tracing::debug!(cgroup = %cgroup.display(), %error, "the runner will make its v2 cgroup itself");
        return None;
    }
    match fs::File::open(&cgroup) {
        Ok(directory) => Some(OwnedFd::from(directory)),
        Err(_) => {
            let _ = fs::remove_dir(&cgroup);
            None
        }
    }
}

/// A cgroup hierarchy mounted directly under `/sys/fs/cgroup`: its mount point, whether it is
/// cgroup v2, and its super options (v1: the controllers, `devices`, `cpu,cpuacct`,
/// `name=systemd`, ...).
#[derive(Debug, PartialEq, Eq)]
struct Hierarchy {
    mount_point: PathBuf,
    v2: bool,
    options: String,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.options.split(',').any(|option| option == controller)
    }
}

/// The cgroup hierarchies directly under [`MOUNT`] in a `/proc/self/mountinfo` text.
fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // `id parent major:minor root mount-point options [optional...] - type source super-options`
            let (before, after) = line.split_once(" - ")?;
            let mount_point = Path::new(before.split(' ').nth(4)?);
            let mut after = after.split(' ');
            let (kind, _source, options) = (after.next()?, after.next()?, after.next()?);
            let v2 = match kind {
                "cgroup" => false,
                "cgroup2" => true,
                _ => return None,
            };
            (mount_point.parent() == Some(Path::new(MOUNT))).then(|| Hierarchy {
                mount_point: mount_point.to_path_buf(),
                v2,
                options: options.to_string(),
            })
        })
        .collect()
}

/// The devices a step may use (char major, minor; `None` = any minor), in the order BuildKit's
/// containers list them (recorded with the oracle: testdata/e2e/cgroup-view): null, zero, full,
/// random, urandom, tty, ptmx, tun, pts. Issue 9 had asked for runc's older list (console and
/// fuse, no tun); the oracle's is the one followed. Every other device can be created (`m`) but
/// not opened, as under Docker.
pub(super) const ALLOWED_DEVICES: [(i64, Option<i64>); 9] =
    [(1, Some(3)), (1, Some(5)), (1, Some(7)), (1, Some(8)), (1, Some(9)), (5, Some(0)), (5, Some(2)), (10, Some(200)), (136, None)];

/// The devices cgroup's rules, in the order written: deny everything, allow mknod of any device
/// and the use of [`ALLOWED_DEVICES`] (the list is then the one BuildKit's
/// containers show, `b *:* m` first).
fn device_rules() -> Vec<(&'static str, String)> {
    let mut rules =
        vec![("devices.deny", "a".to_string()), ("devices.allow", "b *:* m".to_string()), ("devices.allow", "c *:* m".to_string())];
    for (major, minor) in ALLOWED_DEVICES {
        let minor = minor.map_or_else(|| "*".to_string(), |minor| minor.to_string());
        rules.push(("devices.allow", format!("c {major}:{minor} rwm")));
    }
    rules
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(|error| SandboxError::io(format!("write `{value}` to `{}`", path.display()), error))
}

/// A new cpuset cgroup has no CPUs and no memory nodes, and takes no process until it has: each
/// level below the hierarchy's root gets its parent's.
fn fill_cpuset(root: &Path, cgroup: &Path) -> Result<(), SandboxError> {
    let mut levels: Vec<&Path> = cgroup.ancestors().take_while(|level| *level != root).collect();
    levels.reverse();
    for level in levels {
        let parent = level.parent().unwrap_or(root);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = fs::read_to_string(level.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let inherited = fs::read_to_string(parent.join(file))
                    .map_err(|error| SandboxError::io(format!("read `{}`", parent.join(file).display()), error))?;
                write(&level.join(file), inherited.trim())?;
            }
        }
    }
    Ok(())
}

/// Binds `source` at `target`, nosuid, nodev and noexec as runc mounts cgroups.
fn bind(source: &Path, target: &Path) -> Result<(), SandboxError> {
    let error = |error| SandboxError::syscall(format!("bind `{}` on `{}`", source.display(), target.display()), error);
    nix::mount::mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(error)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(error)
}

/// Where the container's `/sys/fs/cgroup` holds the hierarchies' mounts, by number; the names
/// there are links to them. A mount named like a controller would be libcontainer's: it takes
/// a cgroup mount whose last component is a controller's name for that controller's hierarchy,
/// and would make and join a cgroup below it.
const HIERARCHIES: &str = ".hierarchies";

/// The runner's side, before its step (root, cgroup v1 hierarchies present; this process
/// single-threaded): makes `/rbuild/<name>` in every hierarchy under `/sys/fs/cgroup` (devices:
/// runc's allow list) and moves this process into them (v1: its one thread, through `tasks`;
/// v2: unless it was born there, through `cgroup.procs`). Then, in this process's (private) mount namespace, puts a
/// tmpfs at `/sys/fs/cgroup` in place of the host's: the host's names but not the v2 hierarchy's,
/// as runc's containers have them, each a link to this process's cgroup of that hierarchy,
/// bound at `.hierarchies/<n>`. The container's `/sys` (a read-only rbind) shows that.
pub(super) fn enter_own(directory: &Path, name: &str) -> Result<(), SandboxError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|error| SandboxError::io("read `/proc/self/mountinfo`", error))?;
    let hierarchies = hierarchies(&mountinfo);
    let own = path_of(name);
    let born_in_v2 = fs::read_to_string("/proc/self/cgroup").is_ok_and(|cgroups| cgroups.lines().any(|line| line == format!("0::{own}")));
    // The calling thread is the process only while it is the one thread (as a runner is); else
    // the whole process moves, lock or not.
    let v1_file = if super::sys::thread_count() == 1 { "tasks" } else { "cgroup.procs" };
    let view = directory.join("cgroup-view");
    super::create_directory(&view)?;
    nix::mount::mount(Some("tmpfs"), &view, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, Some("mode=755"))
        .map_err(|error| SandboxError::syscall(format!("mount a tmpfs on `{}`", view.display()), error))?;
    for (index, hierarchy) in hierarchies.iter().enumerate() {
        let cgroup = hierarchy.mount_point.join(own.trim_start_matches('/'));
        super::create_directory(&cgroup)?;
        if hierarchy.has("cpuset") {
            fill_cpuset(&hierarchy.mount_point, &cgroup)?;
        }
        if hierarchy.has("devices") {
            for (file, rule) in device_rules() {
                write(&cgroup.join(file), &rule)?;
            }
        }
        match hierarchy.v2 {
            false => write(&cgroup.join(v1_file), "0")?,
            true if born_in_v2 => {}
            true => write(&cgroup.join("cgroup.procs"), "0")?,
        }
        let Some(name) = hierarchy.mount_point.file_name().filter(|_| !hierarchy.v2) else { continue };
        let shown = Path::new(HIERARCHIES).join(index.to_string());
        super::create_directory(&view.join(&shown))?;
        bind(&cgroup, &view.join(&shown))?;
        link(&shown, &view.join(name))?;
    }
    // The host's other names there (`cpu` -> `cpu,cpuacct`), as runc shows them.
    for entry in fs::read_dir(MOUNT).map_err(|error| SandboxError::io(format!("list `{MOUNT}`"), error))?.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            link(&target, &view.join(entry.file_name()))?;
        }
    }
    for hierarchy in &hierarchies {
        detach(&hierarchy.mount_point)?;
    }
    if nix::sys::statfs::statfs(MOUNT).is_ok_and(|stat| stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC) {
        detach(Path::new(MOUNT))?;
    }
    nix::mount::mount(Some(&view), MOUNT, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|error| SandboxError::syscall(format!("move `{}` to `{MOUNT}`", view.display()), error))
}

fn link(target: &Path, path: &Path) -> Result<(), SandboxError> {
    std::os::unix::fs::symlink(target, path)
        .map_err(|error| SandboxError::io(format!("link `{}` to `{}`", path.display(), target.display()), error))
}

fn detach(mount_point: &Path) -> Result<(), SandboxError> {
    nix::mount::umount2(mount_point, MntFlags::MNT_DETACH)
        .map_err(|error| SandboxError::syscall(format!("detach `{}` from the step's mounts", mount_point.display()), error))
}

fn sweep_in(mount: &Path, alive: &dyn Fn(u32) -> bool) -> usize {
    let mut removed = 0;
    for parent in parents(mount) {
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner_of(&name) else { continue };
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
    fn only_cgroups_of_dead_rbuild_processes_go() {
        // A plain directory tree stands in for the hierarchies (rmdir of an empty directory).
        let mount = tempfile::tempdir().unwrap();
        let v2 = mount.path().join("rbuild");
        let v1 = mount.path().join("pids/rbuild");
        let made = [
            v2.join("rbuild-100-0"),
            v2.join("rbuild-200-3"),
            v1.join("rbuild-100-0/child"),
            v1.join("rbuild-100-1"),
            v1.join("rbuild-100"),
            v1.join("other-100"),
            v1.join("rbuild-x-1"),
        ];
        for directory in made {
            fs::create_dir_all(directory).unwrap();
        }
        let removed = sweep_in(mount.path(), &|pid| pid == 200);
        assert_eq!(removed, 4);
        for gone in [v2.join("rbuild-100-0"), v1.join("rbuild-100-0"), v1.join("rbuild-100-1"), v1.join("rbuild-100")] {
            assert!(!gone.exists(), "{}", gone.display());
        }
        for kept in [v2.join("rbuild-200-3"), v1.join("other-100"), v1.join("rbuild-x-1")] {
            assert!(kept.exists(), "{}", kept.display());
        }
    }

    #[test]
    fn names_say_whose_they_are() {
        let name = new_name();
        assert!(name.starts_with(&format!("rbuild-{}-", std::process::id())), "{name}");
        assert_ne!(new_name(), name);
        assert!(is_valid_name(&name));
        assert_eq!(owner_of(&name), Some(std::process::id()));
        assert_eq!(path_of("rbuild-7-2"), "/rbuild/rbuild-7-2");
        for invalid in ["", "rbuild-", "rbuild-../x", "rbuild-1/../../x", "other-1-1", "rbuild-1-1/"] {
            assert!(!is_valid_name(invalid), "{invalid}");
        }
    }

    #[test]
    fn a_runner_removes_its_own_cgroups_only() {
        let mount = tempfile::tempdir().unwrap();
        let own = [mount.path().join("rbuild/rbuild-300-1"), mount.path().join("devices/rbuild/rbuild-300-1/child")];
        let others = [mount.path().join("rbuild/rbuild-300-10"), mount.path().join("devices/rbuild/rbuild-300-0")];
        for directory in own.iter().chain(&others) {
            fs::create_dir_all(directory).unwrap();
        }
        remove_in(mount.path(), "rbuild-300-1");
        assert!(!mount.path().join("rbuild/rbuild-300-1").exists() && !mount.path().join("devices/rbuild/rbuild-300-1").exists());
        assert!(others.iter().all(|other| other.exists()));
    }

    #[test]
    fn the_hierarchies_are_read_from_mountinfo() {
        let mountinfo = "\
67 66 254:0 / / rw,relatime - ext4 /dev/vda rw
84 80 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
85 84 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
86 84 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
87 84 0:30 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,devices
88 67 0:31 / /elsewhere/devices rw - cgroup cgroup rw,devices
89 87 0:30 /x /sys/fs/cgroup/devices/x rw - cgroup cgroup rw,devices
";
        let found = hierarchies(mountinfo);
        let points: Vec<_> = found.iter().map(|hierarchy| (hierarchy.mount_point.display().to_string(), hierarchy.v2)).collect();
        assert_eq!(
            points,
            [
                ("/sys/fs/cgroup/unified".to_string(), true),
                ("/sys/fs/cgroup/cpu,cpuacct".to_string(), false),
                ("/sys/fs/cgroup/devices".to_string(), false)
            ]
        );
        assert!(found[1].has("cpu") && found[1].has("cpuacct") && !found[1].has("cpuset"));
        assert!(found[2].has("devices"));
    }

    #[test]
    fn the_devices_rules_deny_all_first_then_allow_in_buildkits_order() {
        let rules = device_rules();
        assert_eq!(rules[0], ("devices.deny", "a".to_string()));
        assert_eq!(rules[1..3], [("devices.allow", "b *:* m".to_string()), ("devices.allow", "c *:* m".to_string())]);
        assert_eq!(rules.last().unwrap(), &("devices.allow", "c 136:* rwm".to_string()));
        assert_eq!(rules.len(), 3 + super::ALLOWED_DEVICES.len());
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
