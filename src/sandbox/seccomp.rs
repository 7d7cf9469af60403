//! The system call filter of a RUN step: BuildKit's default seccomp profile, which is
//! containerd's `DefaultProfile` for Docker's 14 default capabilities.
//!
//! Role: [`profile`] is the filter of every step, root and rootless alike, in the OCI spec's form;
//! [`super::seccomp_filter`] compiles it once per rbuild process with libseccomp and the
//! container's init loads it right before `execve` (no_new_privileges stays off, as under
//! BuildKit). With the copying snapshotter, `rename`, `renameat` and `renameat2` are user
//! notifications to the runner instead of allowed ([`super::rename_guard`]); the profile is
//! otherwise the same.
//!
//! What it keeps out, as BuildKit: every system call not listed fails with EPERM (`mount`,
//! `unshare`, `setns`, `keyctl`, `bpf`, `perf_event_open`, `kexec_load`, `open_by_handle_at`,
//! `userfaultfd`, ...); `clone` may not create namespaces; `clone3` fails with ENOSYS so that C
//! libraries fall back to `clone`; `socket` may not open AF_ALG or AF_VSOCK; `personality` only
//! takes the values programs use to query or to run 32-bit code.
//!
//! Invariants:
//! - The profile is a constant of rbuild: it does not depend on the kernel or the host, and it
//!   equals the one recorded from BuildKit (`testdata/seccomp/`), which a unit test checks.
//! - Capability-gated rules of containerd's profile appear only for the capabilities rbuild
//!   grants; of those, only CAP_SYS_CHROOT gates a rule (`chroot`).
//!
//! Known difference: names this machine's libseccomp does not know (2.5.4 lacks `statmount`,
//! `listmount`, `mseal`, `setxattrat` and their like) are skipped by libcontainer and so fail with
//! EPERM; runc answers ENOSYS for system calls newer than every one it knows.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};

use super::{SandboxError, rename_guard};

/// Allowed for every process, on every architecture (the profile's first and largest rule).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed on kernels 4.8 and later, which rbuild requires anyway (the seccomp filter runs
/// before ptrace's checks there).
const PROCESS_INSPECTION: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// `clone` flags that create namespaces: CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS,
/// CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET.
const NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality` values allowed: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and
/// 0xffffffff (query).
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Socket families refused: AF_ALG (38) and AF_VSOCK (40).
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

const ENOSYS: u32 = libc::ENOSYS as u32;
const EPERM: u32 = libc::EPERM as u32;

#[cfg(target_arch = "x86_64")]
const ARCHITECTURES: &[Arch] = &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32];
#[cfg(target_arch = "x86_64")]
const ARCHITECTURE_CALLS: &[&[&str]] = &[&["arch_prctl"], &["modify_ldt"]];

#[cfg(target_arch = "aarch64")]
const ARCHITECTURES: &[Arch] = &[Arch::ScmpArchArm, Arch::ScmpArchAarch64];
#[cfg(target_arch = "aarch64")]
const ARCHITECTURE_CALLS: &[&[&str]] =
    &[&["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"]];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURES: &[Arch] = &[Arch::ScmpArchNative];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCHITECTURE_CALLS: &[&[&str]] = &[];

/// One argument test of a rule.
#[derive(Debug, Clone, Copy)]
enum Condition {
    Equal(u64),
    Less(u64),
    Greater(u64),
    /// None of the `mask` bits set.
    NoBitOf(u64),
}

/// The filter for a RUN step. See the module documentation. With `rename_guard` (the copying
/// snapshotter), the rename calls are user notifications to the runner instead
/// ([`super::rename_guard`]).
pub(crate) fn profile(rename_guard: bool) -> Result<LinuxSeccomp, SandboxError> {
    let guarded = |name: &&str| rename_guard && rename_guard::GUARDED_CALLS.contains(name);
    let allowed: Vec<&str> = ALLOWED.iter().copied().filter(|name| !guarded(name)).collect();
    let mut syscalls = vec![allow(&allowed, None)?, allow(PROCESS_INSPECTION, None)?];
    for condition in [Condition::Less(AF_ALG), Condition::Equal(AF_ALG + 1), Condition::Greater(AF_VSOCK)] {
        syscalls.push(allow(&["socket"], Some(condition))?);
    }
    for value in PERSONALITIES {
        syscalls.push(allow(&["personality"], Some(Condition::Equal(value)))?);
    }
    for names in ARCHITECTURE_CALLS {
        syscalls.push(allow(names, None)?);
    }
    syscalls.push(allow(&["clone"], Some(Condition::NoBitOf(NAMESPACE_FLAGS)))?);
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()
            .map_err(SandboxError::Spec)?,
    );
    // Gated by CAP_SYS_CHROOT, one of the default capabilities.
    syscalls.push(allow(&["chroot"], None)?);
    if rename_guard {
        let names = rename_guard::GUARDED_CALLS.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        syscalls.push(
            LinuxSyscallBuilder::default().names(names).action(LinuxSeccompAction::ScmpActNotify).build().map_err(SandboxError::Spec)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(ARCHITECTURES.to_vec())
        .syscalls(syscalls)
        .build()
        .map_err(SandboxError::Spec)
}

fn allow(names: &[&str], condition: Option<Condition>) -> Result<LinuxSyscall, SandboxError> {
    let mut rule = LinuxSyscallBuilder::default()
        .names(names.iter().map(|name| name.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow);
    if let Some(condition) = condition {
        let argument = LinuxSeccompArgBuilder::default().index(0_usize);
        let argument = match condition {
            Condition::Equal(value) => argument.op(LinuxSeccompOperator::ScmpCmpEq).value(value),
            Condition::Less(value) => argument.op(LinuxSeccompOperator::ScmpCmpLt).value(value),
            Condition::Greater(value) => argument.op(LinuxSeccompOperator::ScmpCmpGt).value(value),
            // libcontainer reads a masked comparison the other way round from runc: `valueTwo`
            // is its mask and `value` the expected result (runc: `value` is the mask). Written
            // for libcontainer; the unit test below checks the meaning against BuildKit's.
            Condition::NoBitOf(mask) => argument.op(LinuxSeccompOperator::ScmpCmpMaskedEq).value(0_u64).value_two(mask),
        };
        rule = rule.args(vec![argument.build().map_err(SandboxError::Spec)?]);
    }
    rule.build().map_err(SandboxError::Spec)
}

#[cfg(test)]
mod tests {
    //! Tests of `seccomp.rs`: the profile against the one recorded from BuildKit.

    use super::*;
    use serde_json::Value;

    const RECORDED: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/seccomp/buildkit-default-x86_64.json"));

    /// One rule in a form both readings of a masked comparison agree on.
    #[derive(Debug, PartialEq)]
    struct Rule {
        names: Vec<String>,
        action: String,
        errno: Option<u64>,
        /// (index, operator, value, mask): `mask` only for a masked comparison.
        args: Vec<(u64, String, u64, Option<u64>)>,
    }

    /// `masked_value_is_mask`: runc's reading (BuildKit's spec), else libcontainer's.
    fn rules(seccomp: &Value, masked_value_is_mask: bool) -> Vec<Rule> {
        let number = |value: &Value| value.as_u64().unwrap_or(0);
        seccomp["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .map(|rule| Rule {
                names: rule["names"].as_array().unwrap().iter().map(|name| name.as_str().unwrap().to_string()).collect(),
                action: rule["action"].as_str().unwrap().to_string(),
                errno: rule["errnoRet"].as_u64(),
                args: rule["args"]
                    .as_array()
                    .map(|args| {
                        args.iter()
                            .map(|arg| {
                                let op = arg["op"].as_str().unwrap().to_string();
                                let (value, two) = (number(&arg["value"]), number(&arg["valueTwo"]));
                                if op == "SCMP_CMP_MASKED_EQ" {
                                    let (mask, expected) = if masked_value_is_mask { (value, two) } else { (two, value) };
                                    (number(&arg["index"]), op, expected, Some(mask))
                                } else {
                                    (number(&arg["index"]), op, value, None)
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_profile_is_buildkits() {
        let recorded: Value = serde_json::from_str(RECORDED).unwrap();
        let ours = serde_json::to_value(profile(false).unwrap()).unwrap();
        let recorded_seccomp = &recorded["seccomp"];
        for key in ["defaultAction", "defaultErrnoRet", "architectures"] {
            assert_eq!(ours[key], recorded_seccomp[key], "{key}");
        }
        assert_eq!(rules(&ours, false), rules(recorded_seccomp, true));
        // The profile was recorded for BuildKit's capabilities, which are rbuild's.
        let capabilities: Vec<String> = super::super::spec::DEFAULT_CAPABILITIES
            .iter()
            .map(|capability| format!("CAP_{}", capability.to_string().to_uppercase()))
            .collect();
        assert_eq!(recorded["capabilities"], serde_json::json!(capabilities));
    }

    /// With the rename guard (the copying snapshotter) the rename calls are notifications to it,
    /// and nothing else changes.
    #[test]
    fn a_rename_listener_gets_the_rename_calls() {
        let plain = serde_json::to_value(profile(false).unwrap()).unwrap();
        let guarded = serde_json::to_value(profile(true).unwrap()).unwrap();
        let notified: Vec<Rule> = rules(&guarded, false).into_iter().filter(|rule| rule.action == "SCMP_ACT_NOTIFY").collect();
        assert_eq!(notified.len(), 1);
        assert_eq!(notified[0].names, rename_guard::GUARDED_CALLS);
        let without_renames = |seccomp: &Value| {
            let mut rules = rules(seccomp, false);
            rules.retain(|rule| rule.action != "SCMP_ACT_NOTIFY");
            for rule in &mut rules {
                rule.names.retain(|name| !rename_guard::GUARDED_CALLS.contains(&name.as_str()));
            }
            rules
        };
        assert_eq!(without_renames(&guarded), without_renames(&plain));
        let allowed_in_plain = rules(&plain, false).into_iter().flat_map(|rule| rule.names).collect::<Vec<_>>();
        assert!(rename_guard::GUARDED_CALLS.iter().all(|name| allowed_in_plain.iter().any(|allowed| allowed == name)));
    }

    /// The clone rule keeps namespaces out and lets fork through, in libcontainer's reading.
    #[test]
    fn clone_may_not_create_namespaces() {
        let ours = serde_json::to_value(profile(false).unwrap()).unwrap();
        let clone = rules(&ours, false).into_iter().find(|rule| rule.names == ["clone"]).unwrap();
        let (_, _, expected, mask) = clone.args[0].clone();
        let allowed = |flags: u64| flags & mask.unwrap() == expected;
        assert!(allowed(libc::SIGCHLD as u64));
        assert!(allowed((libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64));
        for namespace in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET, libc::CLONE_NEWPID, libc::CLONE_NEWCGROUP] {
            assert!(!allowed((namespace | libc::SIGCHLD) as u64), "{namespace:#x}");
        }
    }
}
