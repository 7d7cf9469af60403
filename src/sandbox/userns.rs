//! Start-up: puts rbuild into namespaces it owns before any thread exists.
//!
//! Not root: fork; the child `unshare`s a user + mount namespace; the parent writes its id maps
//! (`newuidmap`/`newgidmap`: caller → 0, then every /etc/subuid and /etc/subgid range of the
//! caller stacked above, as podman and buildah do); the child becomes uid/gid 0 and re-execs
//! `/proc/self/exe` with the same argv. The parent stays as a thin waiter: it forwards signals sent
//! to it and exits with the child's status (re-raising the child's fatal signal). The child gets
//! SIGTERM when the waiter dies (`PR_SET_PDEATHSIG`), so a killed waiter leaves no build behind;
//! a signal that reaches the child directly and through the waiter counts once (`cli::interrupt`).
//!
//! Root, and the re-exec'd process: `/` becomes rprivate in a new mount namespace, so overlay and
//! bind mounts never propagate to the host. In a user namespace on a hybrid cgroup host the
//! cgroup2 hierarchy is bound over /sys/fs/cgroup: libcontainer's v1 manager cannot create
//! cgroups without privileges, its v2 manager tolerates that ("rootless cgroup").
//!
//! Decision: no subordinate ids is a warning, not an error: one mapping still runs every step as
//! root; only USER with another id and `chown` fail (and setgroups is denied, as the kernel
//! requires for an unprivileged single-id gid map).

use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::{SandboxError, sys};

/// Signals the waiting parent passes on to rbuild inside the namespace.
const FORWARDED_SIGNALS: [Signal; 7] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH];

/// A new mount namespace in which `/` is recursively private, so nothing mounted here
/// propagates to the host (and dies with the namespace).
pub(crate) fn private_mount_namespace(what: &str) -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|error| SandboxError::syscall(what, error))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|error| SandboxError::syscall("make `/` rprivate", error))
}

/// See the module docs.
pub fn enter(args: &[OsString]) -> Result<(), SandboxError> {
    if !Uid::effective().is_root() {
        enter_user_namespace(args)?;
    }
    private_mount_namespace("create a mount namespace")?;
    if in_user_namespace() && is_hybrid_cgroup_host() {
        mount(Some("/sys/fs/cgroup/unified"), "/sys/fs/cgroup", None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|error| SandboxError::syscall("bind cgroup2 over `/sys/fs/cgroup`", error))?;
    }
    Ok(())
}

/// Whether this process is in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    fs::read_to_string("/proc/self/uid_map").map(|map| !map.split_whitespace().eq(["0", "0", "4294967295"])).unwrap_or(false)
}

fn is_hybrid_cgroup_host() -> bool {
    use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
    let is = |path: &str, magic| statfs(path).is_ok_and(|stat| stat.filesystem_type() == magic);
    is("/sys/fs/cgroup", TMPFS_MAGIC) && is("/sys/fs/cgroup/unified", CGROUP2_SUPER_MAGIC)
}

/// One line of /etc/subuid or /etc/subgid that belongs to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubordinateRange {
    pub start: u32,
    pub count: u32,
}

/// Ranges of `name` (or of its numeric id) in a subuid/subgid file, in file order.
pub(crate) fn parse_subordinate_ranges(text: &str, name: &str, id: u32) -> Vec<SubordinateRange> {
    let id = id.to_string();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let owner = fields.next()?;
            let start = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            (owner == name || owner == id).then_some(SubordinateRange { start, count })
        })
        .filter(|range| range.count > 0)
        .collect()
}

/// The ranges as the kernel accepts them: sorted, overlapping and adjacent ones merged (a line
/// written twice, common after `useradd` plus a manual entry, made newuidmap fail with "Invalid
/// argument"), and the caller's own id cut out (it is mapped to 0 already).
pub(crate) fn normalize_ranges(mut ranges: Vec<SubordinateRange>, host_id: u32) -> Vec<SubordinateRange> {
    ranges.sort_by_key(|range| range.start);
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for range in ranges {
        let (start, end) = (u64::from(range.start), u64::from(range.start) + u64::from(range.count));
        match merged.last_mut() {
            Some((_, last_end)) if start <= *last_end => *last_end = (*last_end).max(end),
            _ => merged.push((start, end)),
        }
    }
    let own = u64::from(host_id);
    merged
        .into_iter()
        .flat_map(|(start, end)| if (start..end).contains(&own) { vec![(start, own), (own + 1, end)] } else { vec![(start, end)] })
        .filter(|(start, end)| end > start)
        .filter_map(|(start, end)| Some(SubordinateRange { start: u32::try_from(start).ok()?, count: u32::try_from(end - start).ok()? }))
        .collect()
}

/// `newuidmap` arguments after the pid: caller → 0, ranges stacked from 1.
pub(crate) fn map_arguments(host_id: u32, ranges: &[SubordinateRange]) -> Vec<String> {
    let mut arguments = vec!["0".to_string(), host_id.to_string(), "1".to_string()];
    let mut next_inside = 1u64;
    for range in ranges {
        arguments.extend([next_inside.to_string(), range.start.to_string(), range.count.to_string()]);
        next_inside += u64::from(range.count);
    }
    arguments
}

/// Ubuntu's switch that confines unprivileged user namespaces with AppArmor (23.10 and later).
const APPARMOR_RESTRICTION: &str = "/proc/sys/kernel/apparmor_restrict_unprivileged_userns";

/// [`restriction_hint`] for this machine.
fn apparmor_hint() -> String {
    restriction_hint(fs::read_to_string(APPARMOR_RESTRICTION).ok().as_deref())
}

/// What to tell a user whose user namespace was refused, given the AppArmor switch's value.
fn restriction_hint(apparmor_switch: Option<&str>) -> String {
    if apparmor_switch.map(str::trim) == Some("1") {
        "; AppArmor restricts unprivileged user namespaces here (kernel.apparmor_restrict_unprivileged_userns=1): \
         give rbuild an AppArmor profile with `userns,` (see the README) or, as root, \
         `sysctl kernel.apparmor_restrict_unprivileged_userns=0`"
            .into()
    } else {
        String::new()
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

enum IdMapping {
    /// `newuidmap`/`newgidmap` with the caller's subordinate ranges.
    Helpers { newuidmap: PathBuf, newgidmap: PathBuf, uid_ranges: Vec<SubordinateRange>, gid_ranges: Vec<SubordinateRange> },
    /// Only the caller's own ids, written directly (needs setgroups=deny).
    Single,
}

#[allow(clippy::print_stderr)] // at start-up, before any progress output exists
fn plan_id_mapping(uid: Uid, gid: Gid) -> Result<IdMapping, SandboxError> {
    let name = nix::unistd::User::from_uid(uid).ok().flatten().map(|user| user.name).unwrap_or_else(|| uid.to_string());
    let ranges = |path: &str, id: u32| fs::read_to_string(path).map(|text| parse_subordinate_ranges(&text, &name, id)).unwrap_or_default();
    let uid_ranges = normalize_ranges(ranges("/etc/subuid", uid.as_raw()), uid.as_raw());
    let gid_ranges = normalize_ranges(ranges("/etc/subgid", gid.as_raw()), gid.as_raw());
    if uid_ranges.is_empty() || gid_ranges.is_empty() {
        message!(
            "rbuild: warning: no subordinate ids for `{name}` in /etc/subuid and /etc/subgid; running with one id mapping (USER other than root, chown and setgroups will fail). To add them, as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}"
        );
        return Ok(IdMapping::Single);
    }
    match (find_program("newuidmap"), find_program("newgidmap")) {
        (Some(newuidmap), Some(newgidmap)) => Ok(IdMapping::Helpers { newuidmap, newgidmap, uid_ranges, gid_ranges }),
        _ => Err(SandboxError::MissingNewIdMap { user: name }),
    }
}

/// Forks; the child returns `Ok` only after its re-exec, so in practice this returns only errors
/// and never returns in the parent (which exits with the child's status).
// At start-up, before any progress output exists; the forked child can only print and `_exit`.
#[allow(clippy::print_stderr)]
fn enter_user_namespace(args: &[OsString]) -> Result<(), SandboxError> {
    let threads = sys::thread_count();
    if threads != 1 {
        return Err(SandboxError::NotSingleThreaded { threads });
    }
    let uid = Uid::current();
    let gid = Gid::current();
    let mapping = plan_id_mapping(uid, gid)?;
    let argv = args
        .iter()
        .map(|argument| CString::new(argument.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| SandboxError::InvalidStep { reason: "argument with a NUL byte".into() })?;

    let (to_parent_read, to_parent_write) = pipe()?;
    let (to_child_read, to_child_write) = pipe()?;
    let mut forwarded = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        forwarded.add(signal);
    }
    forwarded.add(Signal::SIGCHLD);
    let mut previous_mask = SigSet::empty();
    // Blocked before fork so no signal is lost between fork and the parent's wait loop; the child
    // restores the mask before it execs.
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut previous_mask))
        .map_err(|error| SandboxError::syscall("block signals", error))?;

    let waiter = nix::unistd::getpid();
    // Single-threaded (checked above, and again by the fork): the child may run any code.
    match sys::fork_single_threaded()? {
        ForkResult::Child => {
            drop(to_parent_read);
            drop(to_child_write);
            let unshared = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS);
            let _ = write_byte(&to_parent_write, if unshared.is_ok() { b'u' } else { b'e' });
            if let Err(error) = unshared {
                let hint = apparmor_hint();
                message!("rbuild: failed to create a user namespace: {error}{hint}");
                // `_exit` in a forked child skips the parent's atexit handlers.
                sys::exit_now(125);
            }
            if read_byte(&to_child_read) != Some(b'm') {
                // The parent reported its error already.
                sys::exit_now(125);
            }
            let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
            let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
            // Host supplementary groups show up as `nogroup` inside; drop them (denied when
            // setgroups is off, which is harmless).
            let _ = nix::unistd::setgroups(&[]);
            // The build dies with the waiter, however the waiter dies (kill -9 of the process
            // the user started left the build, its runner and container writing outputs): it
            // gets SIGTERM, its orderly cancel. Set after the credential changes, which clear it;
            // kept across the exec.
            let _ = sys::set_parent_death_signal(Signal::SIGTERM);
            if nix::unistd::getppid() != waiter {
                sys::exit_now(125);
            }
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous_mask), None);
            let error = nix::unistd::execv(c"/proc/self/exe", &argv).unwrap_err();
            message!("rbuild: failed to re-execute itself in a user namespace: {error}");
            sys::exit_now(125);
        }
        ForkResult::Parent { child } => {
            drop(to_parent_write);
            drop(to_child_read);
            let result = match read_byte(&to_parent_read) {
                Some(b'u') => write_maps(child, uid, gid, &mapping),
                _ => Err(SandboxError::Runner { message: "the child could not create a user namespace".into() }),
            };
            if let Err(error) = result {
                let hint = apparmor_hint();
                if !hint.is_empty() {
                    message!("rbuild: the user namespace could not be set up{hint}");
                }
                let _ = write_byte(&to_child_write, b'x');
                let _ = waitpid(child, None);
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&previous_mask), None);
                return Err(error);
            }
            let _ = write_byte(&to_child_write, b'm');
            wait_and_forward(child, &forwarded)
        }
    }
}

fn write_maps(child: Pid, uid: Uid, gid: Gid, mapping: &IdMapping) -> Result<(), SandboxError> {
    match mapping {
        IdMapping::Helpers { newuidmap, newgidmap, uid_ranges, gid_ranges } => {
            run_map_helper(newuidmap, child, &map_arguments(uid.as_raw(), uid_ranges))?;
            run_map_helper(newgidmap, child, &map_arguments(gid.as_raw(), gid_ranges))
        }
        IdMapping::Single => {
            let proc = PathBuf::from(format!("/proc/{child}"));
            let write = |name: &str, text: String| {
                fs::write(proc.join(name), text).map_err(|error| SandboxError::io(format!("write `/proc/{child}/{name}`"), error))
            };
            write("uid_map", format!("0 {uid} 1"))?;
            write("setgroups", "deny".into())?;
            write("gid_map", format!("0 {gid} 1"))
        }
    }
}

fn run_map_helper(program: &Path, child: Pid, arguments: &[String]) -> Result<(), SandboxError> {
    let output = std::process::Command::new(program)
        .arg(child.to_string())
        .args(arguments)
        .output()
        .map_err(|error| SandboxError::io(format!("run `{}`", program.display()), error))?;
    if output.status.success() {
        return Ok(());
    }
    Err(SandboxError::IdMap {
        program: program.display().to_string(),
        pid: child.as_raw(),
        message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// The parent's remaining life: pass signals on, then mirror the child's end.
fn wait_and_forward(child: Pid, signals: &SigSet) -> ! {
    loop {
        let Some((number, code)) = sys::wait_for_signal(signals) else {
            continue;
        };
        if number == libc::SIGCHLD {
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                    Ok(WaitStatus::Signaled(_, signal, _)) => exit_like_signal(signal),
                    Ok(WaitStatus::StillAlive) => break,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => std::process::exit(125),
                }
            }
            continue;
        }
        // Terminal-generated signals (SI_KERNEL) reach the whole foreground process group, the
        // child included: passing them on would deliver them twice.
        if code == libc::SI_KERNEL {
            continue;
        }
        if let Ok(signal) = Signal::try_from(number) {
            let _ = sys::kill(child, signal);
        }
    }
}

fn exit_like_signal(signal: Signal) -> ! {
    sys::default_action(signal);
    let mut set = SigSet::empty();
    set.add(signal);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
    let _ = nix::sys::signal::raise(signal);
    std::process::exit(128 + signal as i32)
}

fn pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|error| SandboxError::syscall("create a pipe", error))
}

fn write_byte(fd: &std::os::fd::OwnedFd, byte: u8) -> nix::Result<usize> {
    nix::unistd::write(fd, &[byte])
}

fn read_byte(fd: &std::os::fd::OwnedFd) -> Option<u8> {
    use std::os::fd::AsRawFd;
    let mut buffer = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buffer) {
            Ok(1) => return Some(buffer[0]),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_merged_and_keep_out_the_callers_own_id() {
        let range = |start, count| SubordinateRange { start, count };
        // A line written twice, an overlapping one and an adjacent one become one range.
        let ranges = vec![range(100000, 65536), range(100000, 65536), range(150000, 20000), range(170000, 10)];
        assert_eq!(normalize_ranges(ranges, 1000), vec![range(100000, 70010)]);
        // The caller's own id inside a range is cut out.
        assert_eq!(normalize_ranges(vec![range(900, 200)], 1000), vec![range(900, 100), range(1001, 99)]);
        assert!(normalize_ranges(vec![range(1000, 1)], 1000).is_empty());
    }

    #[test]
    fn a_refused_user_namespace_explains_ubuntus_apparmor_switch() {
        assert!(restriction_hint(Some("1\n")).contains("kernel.apparmor_restrict_unprivileged_userns=0"));
        assert_eq!(restriction_hint(Some("0\n")), "");
        assert_eq!(restriction_hint(None), "");
    }

    #[test]
    fn subordinate_ranges_match_name_or_uid_in_file_order() {
        let text = "# comment\nalice:100000:65536\nbob:165536:65536\n1001:300000:10\nalice:400000:5\nbroken\ncarol:1:0\n";
        assert_eq!(
            parse_subordinate_ranges(text, "alice", 1000),
            vec![SubordinateRange { start: 100000, count: 65536 }, SubordinateRange { start: 400000, count: 5 }]
        );
        assert_eq!(parse_subordinate_ranges(text, "dave", 1001), vec![SubordinateRange { start: 300000, count: 10 }]);
        assert!(parse_subordinate_ranges(text, "carol", 7).is_empty());
    }

    #[test]
    fn map_arguments_stack_ranges_above_root() {
        let ranges = [SubordinateRange { start: 100000, count: 65536 }, SubordinateRange { start: 400000, count: 5 }];
        assert_eq!(map_arguments(1001, &ranges), ["0", "1001", "1", "1", "100000", "65536", "65537", "400000", "5"]);
    }
}
