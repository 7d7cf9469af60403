//! The sandbox's syscalls, behind small safe functions: the ones nix has no safe call for, and
//! those it has but that need a descriptor's ownership or an errno turned into `io::Error`.
//!
//! Rule: this is the only file of `sandbox` that may use `unsafe` (the crate denies `unsafe_code`;
//! `mod sys` alone allows it) or call a `libc` function. The other files call these, or nix's
//! safe, typed calls directly (mount, unshare, waitpid, pipes). Here too nix is used wherever it
//! has a safe equivalent; what stays `unsafe` has none: `fork`, `_exit`, `pidfd_open`,
//! `sigwaitinfo`, a signal disposition, the raw `rt_sigaction`, `seccomp` and `capset` before the
//! workload's `execve`, the `SIOC*IFFLAGS` ioctls, taking ownership of a descriptor the kernel
//! returned, and the wake handler's `write`. Each block says why it is sound.
//!
//! Invariant: what runs between `fork` and `exec` or in a signal handler ([`exit_now`],
//! [`wake`]) allocates nothing and takes no lock.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{FileStat, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::SandboxError;

// --- Files inside the rootfs ---

/// `openat2(root, relative, flags | O_CLOEXEC, RESOLVE_IN_ROOT)`: symlinks and `..` resolve as
/// if `root` were `/`.
pub(super) fn open_in_root(root: BorrowedFd<'_>, relative: &CStr, flags: OFlag) -> io::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), relative, how)?;
    // SAFETY: openat2 succeeded, so `fd` is a new open descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat(parent, name, mode)`.
pub(super) fn make_directory_at(parent: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    Ok(nix::sys::stat::mkdirat(Some(parent.as_raw_fd()), name, Mode::from_bits_truncate(mode))?)
}

/// Creates the empty regular file `name` in `parent`; fails if anything (a symlink too) is there.
pub(super) fn create_file_at(parent: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd = nix::fcntl::openat(Some(parent.as_raw_fd()), name, flags, Mode::from_bits_truncate(mode))?;
    let _ = nix::unistd::close(fd);
    Ok(())
}

/// `fchownat(parent, name, uid, gid, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn chown_at(parent: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    Ok(nix::unistd::fchownat(Some(parent.as_raw_fd()), name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?)
}

/// `fstatat(parent, name, AT_SYMLINK_NOFOLLOW)`.
pub(super) fn stat_at(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<FileStat> {
    Ok(nix::sys::stat::fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
}

/// `unlinkat(parent, name)`, with `AT_REMOVEDIR` for a directory.
pub(super) fn remove_at(parent: BorrowedFd<'_>, name: &CStr, directory: bool) -> io::Result<()> {
    let flag = if directory { nix::unistd::UnlinkatFlags::RemoveDir } else { nix::unistd::UnlinkatFlags::NoRemoveDir };
    Ok(nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, flag)?)
}

/// The access and modification times of an open file.
pub(super) fn times(file: BorrowedFd<'_>) -> io::Result<[TimeSpec; 2]> {
    let stat = nix::sys::stat::fstat(file.as_raw_fd())?;
    Ok([TimeSpec::new(stat.st_atime, stat.st_atime_nsec), TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec)])
}

/// `futimens(file, [atime, mtime])`.
pub(super) fn set_times(file: BorrowedFd<'_>, [atime, mtime]: &[TimeSpec; 2]) -> io::Result<()> {
    Ok(nix::sys::stat::futimens(file.as_raw_fd(), atime, mtime)?)
}

/// `openat(parent, path, flags | O_CLOEXEC)`, from the cwd when `parent` is `None`.
pub(super) fn open_at(parent: Option<BorrowedFd<'_>>, path: &CStr, flags: OFlag) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(parent.map(|parent| parent.as_raw_fd()), path, flags | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: openat succeeded, so `fd` is a new open descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// --- Descriptors passed over sockets ---

/// Receives one message from the unix socket `socket`: its bytes (at most `capacity`) and the
/// descriptors it carried (SCM_RIGHTS, at most `max_descriptors`, close-on-exec). An empty
/// message with no descriptor is the peer's end.
pub(super) fn receive_message(socket: BorrowedFd<'_>, capacity: usize, max_descriptors: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut message = vec![0_u8; capacity];
    let mut control = vec![0_u8; nix::sys::socket::cmsg_space::<RawFd>() * max_descriptors.max(1)];
    let (length, descriptors) = {
        let mut buffer = [io::IoSliceMut::new(&mut message)];
        let received = recvmsg::<()>(socket.as_raw_fd(), &mut buffer, Some(&mut control), MsgFlags::MSG_CMSG_CLOEXEC)?;
        let mut descriptors: Vec<RawFd> = Vec::new();
        for message in received.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = message {
                descriptors.extend(fds);
            }
        }
        (received.bytes, descriptors)
    };
    message.truncate(length);
    // SAFETY: the kernel installed each received descriptor as a new one of this process, which
    // nothing else owns.
    Ok((message, descriptors.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect()))
}

/// Receives a descriptor sent with [`send_descriptor`] over the unix socket `socket`; any others
/// in the message are closed.
pub(super) fn receive_descriptor(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let (_, descriptors) = receive_message(socket, 64 * 1024, 1)?;
    descriptors.into_iter().next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no descriptor in the message"))
}

/// Sends `data` (not empty) and `descriptors` (SCM_RIGHTS) over the connected unix socket
/// `socket` as one message.
pub(super) fn send_message(socket: BorrowedFd<'_>, data: &[u8], descriptors: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw: Vec<RawFd> = descriptors.iter().map(AsRawFd::as_raw_fd).collect();
    let control = if raw.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(&raw)] };
    sendmsg::<()>(socket.as_raw_fd(), &[io::IoSlice::new(data)], &control, MsgFlags::empty(), None)?;
    Ok(())
}

/// Sends `descriptor` over the connected unix socket `socket` (SCM_RIGHTS, one byte of data).
pub(super) fn send_descriptor(socket: RawFd, descriptor: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the caller passes a descriptor it keeps open for the duration of this call.
    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
    send_message(socket, &[0], &[descriptor])
}

// --- Seccomp and capabilities (the container's init, right before `execve`) ---

/// Installs `program` (the kernel's `sock_filter` records, native byte order) as the calling
/// thread's seccomp filter, without setting no_new_privs (so it needs CAP_SYS_ADMIN); with
/// `listener`, returns the filter's user notification descriptor.
pub(super) fn load_seccomp_filter(program: &[u8], listener: bool) -> io::Result<Option<OwnedFd>> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "not a BPF program");
    if program.is_empty() || !program.len().is_multiple_of(8) {
        return Err(invalid());
    }
    let instructions: Vec<libc::sock_filter> = program
        .chunks_exact(8)
        .map(|record| libc::sock_filter {
            code: u16::from_ne_bytes([record[0], record[1]]),
            jt: record[2],
            jf: record[3],
            k: u32::from_ne_bytes([record[4], record[5], record[6], record[7]]),
        })
        .collect();
    let length = u16::try_from(instructions.len()).map_err(|_| invalid())?;
    let fprog = libc::sock_fprog { len: length, filter: instructions.as_ptr().cast_mut() };
    let flags: libc::c_ulong = if listener { libc::SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
    // SAFETY: `fprog` points at `instructions`, both alive for the call; the kernel copies the
    // program and only reads them.
    let result = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, &fprog as *const libc::sock_fprog) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: with NEW_LISTENER the result is a new descriptor of this process that nothing else
    // owns; without, it is 0 and no descriptor.
    Ok(listener.then(|| unsafe { OwnedFd::from_raw_fd(result as RawFd) }))
}

/// Takes CAP_SYS_ADMIN out of the calling thread's effective and permitted sets (the others
/// unchanged), through `capget`/`capset` version 3.
pub(super) fn drop_admin_capability() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_ADMIN: u32 = 21;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: version 3 takes a header and two data records, both valid and writable here.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let bit = !(1_u32 << CAP_SYS_ADMIN);
    data[0].effective &= bit;
    data[0].permitted &= bit;
    // SAFETY: as above; the kernel only reads them.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- Network interfaces ---

/// A datagram socket to configure interfaces through.
pub(super) fn interface_socket() -> io::Result<OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    Ok(socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?)
}

/// An `ifreq` naming `name` (at most `IFNAMSIZ - 1` bytes: longer names are cut).
fn interface_request(name: &CStr) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and plain structs):
    // all zeroes is a valid value, and the name stays NUL-terminated.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let capacity = request.ifr_name.len() - 1;
    for (slot, byte) in request.ifr_name[..capacity].iter_mut().zip(name.to_bytes()) {
        *slot = *byte as libc::c_char;
    }
    request
}

/// `SIOCGIFFLAGS`: the flags of interface `name`.
pub(super) fn interface_flags(socket: &OwnedFd, name: &CStr) -> io::Result<libc::c_short> {
    let mut request = interface_request(name);
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes `ifru_flags` of the `ifreq`
    // we own and pass by a live pointer; `socket` is open.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the union's `ifru_flags` member for SIOCGIFFLAGS.
    Ok(unsafe { request.ifr_ifru.ifru_flags })
}

/// `SIOCSIFFLAGS`: sets the flags of interface `name`.
pub(super) fn set_interface_flags(socket: &OwnedFd, name: &CStr, flags: libc::c_short) -> io::Result<()> {
    let mut request = interface_request(name);
    request.ifr_ifru.ifru_flags = flags;
    // SAFETY: SIOCSIFFLAGS only reads the `ifreq` we own (a NUL-terminated name and the flags
    // member just written), through a live pointer; `socket` is open.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- Processes ---

/// How many threads this process has (from `/proc/self/status`; 1 if unreadable).
pub(super) fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find_map(|line| line.strip_prefix("Threads:")).and_then(|count| count.trim().parse().ok()))
        .unwrap_or(1)
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only on a CPU nothing else wants.
pub(super) fn run_only_when_idle() -> io::Result<()> {
    let parameters = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler(0, ...)` changes the calling thread only; `parameters` is a
    // valid `sched_param` that outlives the call.
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &parameters) };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `fork()`, only while this process is single-threaded (else [`SandboxError::NotSingleThreaded`]),
/// so the child may run any code: no other thread held a lock or was allocating at the fork.
pub(super) fn fork_single_threaded() -> Result<ForkResult, SandboxError> {
    ensure_single_threaded()?;
    // SAFETY: the process has one thread (checked just above, and only this thread could have
    // started another since), so the child inherits no lock held by a thread that is gone.
    unsafe { nix::unistd::fork() }.map_err(|error| SandboxError::syscall("fork", error))
}

/// [`fork_single_threaded`] with the child born in the cgroup v2 directory `cgroup` (`clone3`
/// with `CLONE_INTO_CGROUP`, Linux 5.7): no write to `cgroup.procs`, whose lock can wait for an
/// RCU grace period ([`super::cgroup`]). The child is a `fork()`'s but for glibc's cached thread
/// id, still the parent's: what the runner calls does not use it (glibc 2.34 and later signal
/// the calling thread by its real id; libcontainer starts its own processes the same way).
pub(super) fn fork_single_threaded_into_cgroup(cgroup: BorrowedFd<'_>) -> Result<ForkResult, SandboxError> {
    /// The kernel's `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArguments {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    ensure_single_threaded()?;
    let arguments = CloneArguments {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArguments::default()
    };
    // SAFETY: as `fork()` in `fork_single_threaded` (one thread, checked above): no stack, no
    // shared memory, the child continues on a copy of this one; `arguments` is a valid
    // `clone_args` of the size passed, alive during the call.
    let result = unsafe { libc::syscall(libc::SYS_clone3, &arguments as *const CloneArguments, size_of::<CloneArguments>()) };
    match result {
        -1 => Err(SandboxError::syscall("clone3 into a cgroup", nix::errno::Errno::last())),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: Pid::from_raw(pid as i32) }),
    }
}

/// What makes a fork safe: this process has one thread, so the child inherits no lock held by a
/// thread that is gone.
fn ensure_single_threaded() -> Result<(), SandboxError> {
    match thread_count() {
        1 => Ok(()),
        threads => Err(SandboxError::NotSingleThreaded { threads }),
    }
}

/// `_exit(code)`: ends a forked child or a signal handler's process without running the
/// parent's atexit handlers or flushing its buffers. Async-signal-safe.
pub(super) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; it touches no memory of ours and is
    // async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// `pidfd_open(pid, 0)`: a descriptor that becomes readable when `pid` exits; `None` on kernels
/// without it (before 5.3) or when `pid` is gone.
pub(super) fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: pidfd_open succeeded, so `fd` is a new open descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `poll` for input on each `Some` descriptor (`None`s are skipped, as a negative fd is);
/// `timeout` in milliseconds, `None` = forever. Returns each descriptor's `revents`.
pub(super) fn poll<const N: usize>(fds: [Option<BorrowedFd<'_>>; N], timeout: Option<u16>) -> nix::Result<[PollFlags; N]> {
    let indexes: Vec<usize> = (0..N).filter(|index| fds[*index].is_some()).collect();
    let mut polled: Vec<PollFd<'_>> = fds.iter().flatten().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)).collect();
    nix::poll::poll(&mut polled, timeout)?;
    let mut events = [PollFlags::empty(); N];
    for (index, fd) in indexes.into_iter().zip(&polled) {
        events[index] = fd.revents().unwrap_or(PollFlags::empty());
    }
    Ok(events)
}

/// `prctl(PR_SET_PDEATHSIG, signal)`: `signal` when the thread that made this process dies.
/// Async-signal-safe.
pub(super) fn set_parent_death_signal(signal: Signal) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(signal)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphans of this process's descendants become its children.
pub(super) fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// The hard limit on open files (`RLIMIT_NOFILE`).
pub(super) fn open_files_limit() -> io::Result<u64> {
    let (_soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    Ok(hard)
}

// --- Signals ---

/// Write end of the wake pipe, for [`wake`] (-1 before [`wake_pipe`]).
static WAKE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// The handler [`wake_on`] installs: one byte into the wake pipe.
extern "C" fn wake(_signal: libc::c_int) {
    let fd = WAKE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; `fd` is the wake pipe's write end, open for the
        // rest of the process (see `wake_pipe`), and the buffer is a static byte. A full pipe
        // just drops the byte (non-blocking).
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }
}

/// A self-pipe for signals: returns the read end, readable once a signal given to [`wake_on`]
/// arrived. The write end stays open for the life of the process. Call once.
pub(super) fn wake_pipe() -> nix::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    WAKE_WRITE.store(write.as_raw_fd(), Ordering::Relaxed);
    // The handler may write to it at any time from now on.
    std::mem::forget(write);
    Ok(read)
}

/// Makes `signal` write to the [`wake_pipe`] instead of its default action.
pub(super) fn wake_on(signal: Signal) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::Handler(wake), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler only loads an atomic and calls write(2), both async-signal-safe.
    unsafe { nix::sys::signal::sigaction(signal, &action) }.map(drop)
}

/// Waits for one of `signals` (blocked by the caller): its number and `si_code`; `None` when
/// interrupted.
pub(super) fn wait_for_signal(signals: &SigSet) -> Option<(libc::c_int, libc::c_int)> {
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    // SAFETY: the set is a valid `sigset_t` and `info` a writable `siginfo_t` we own.
    let number = unsafe { libc::sigwaitinfo(signals.as_ref(), info.as_mut_ptr()) };
    if number < 0 {
        return None;
    }
    // SAFETY: sigwaitinfo succeeded, so it filled `info` (which started zeroed anyway).
    let info = unsafe { info.assume_init() };
    Some((number, info.si_code))
}

/// `pidfd_send_signal(pidfd, signal)`: a signal to the process `pidfd` stands for, never to a
/// later one that got its pid.
pub(super) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> io::Result<()> {
    // SAFETY: the call takes a descriptor we borrow, a signal number, a null info pointer and
    // zero flags.
    let result = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal as libc::c_int, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Closes the descriptors `first` to `last` (`close_range`; nothing when `last < first`).
fn close_descriptors(first: RawFd, last: RawFd) {
    if first <= last {
        // SAFETY: close_range takes plain integers; every caller has made sure it uses no
        // descriptor in the range any more.
        let _ = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last as libc::c_uint, 0 as libc::c_uint) };
    }
}

/// Closes every descriptor from `first` on: a forked child keeps only what it was given.
pub(super) fn close_descriptors_from(first: RawFd) {
    close_descriptors(first, RawFd::MAX);
}

/// Points the descriptors `targets` (of 0, 1 and 2) at `/dev/null`; best effort.
pub(super) fn point_at_null(targets: &[RawFd]) {
    if let Ok(null) = std::fs::File::options().read(true).write(true).open("/dev/null") {
        for target in targets {
            let _ = nix::unistd::dup2(null.as_raw_fd(), *target);
        }
    }
}

/// Makes `keep` the only open descriptor but stdin, stdout and stderr, which become `/dev/null`.
pub(super) fn keep_only_descriptor(keep: BorrowedFd<'_>) {
    point_at_null(&[0, 1, 2]);
    let keep = keep.as_raw_fd();
    close_descriptors(3, keep - 1);
    close_descriptors_from(keep + 1);
}

/// Lets the kernel reap this process's children as they exit (`SIGCHLD` ignored): their exit
/// is seen through a pidfd, never waited for.
pub(super) fn reap_children_automatically() {
    // SAFETY: SIG_IGN installs no handler, so no code of ours can run in a signal context.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) };
}

/// Sends `signal` to `pid`.
pub(super) fn kill(pid: Pid, signal: Signal) -> nix::Result<()> {
    nix::sys::signal::kill(pid, signal)
}

/// Puts `signal` back to its default action (`SIG_DFL`).
pub(super) fn default_action(signal: Signal) {
    // SAFETY: SIG_DFL installs no handler, so no code of ours can run in a signal context.
    let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
}

/// Every catchable signal back to `SIG_DFL` and an empty signal mask, right before `execve`.
/// Real-time signals too: a parent may ignore them (seen: signal 32 under `cargo test`), and
/// glibc's `sigaction` (and nix's, over it) refuses the two it reserves, so this asks the
/// kernel directly.
pub(super) fn reset_signals() {
    /// The kernel's `struct sigaction` for `rt_sigaction(2)` (handler, flags, restorer, mask).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for number in 1..=64 {
        if number == libc::SIGKILL || number == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL with no handler or restorer; the struct outlives the call; the size
        // is the kernel's 64-signal mask. This process execs right after.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                number,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn poll_reports_each_descriptor_in_place() {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (idle, _idle_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        assert_eq!(poll([None, Some(read.as_fd())], Some(0)).unwrap(), [PollFlags::empty(); 2]);
        nix::unistd::write(&write, b"x").unwrap();
        let events = poll([Some(idle.as_fd()), None, Some(read.as_fd())], Some(1000)).unwrap();
        assert_eq!(events, [PollFlags::empty(), PollFlags::empty(), PollFlags::POLLIN]);
        drop(write);
        let mut buffer = [0u8; 1];
        nix::unistd::read(read.as_raw_fd(), &mut buffer).unwrap();
        assert!(poll([Some(read.as_fd())], None).unwrap()[0].contains(PollFlags::POLLHUP));
    }

    #[test]
    fn rootfs_files_by_descriptor() {
        let root = tempfile::tempdir().unwrap();
        let directory = std::fs::File::open(root.path()).unwrap();
        let parent = directory.as_fd();
        make_directory_at(parent, c"d", 0o755).unwrap();
        create_file_at(parent, c"f", 0o644).unwrap();
        assert_eq!(create_file_at(parent, c"f", 0o644).unwrap_err().raw_os_error(), Some(libc::EEXIST));
        assert_eq!(stat_at(parent, c"d").unwrap().st_mode & libc::S_IFMT, libc::S_IFDIR);
        assert_eq!(stat_at(parent, c"f").unwrap().st_size, 0);
        let old = TimeSpec::new(1_000_000, 0);
        set_times(parent, &[old, old]).unwrap();
        assert_eq!(times(parent).unwrap(), [old, old]);
        remove_at(parent, c"d", true).unwrap();
        remove_at(parent, c"f", false).unwrap();
        assert!(open_in_root(parent, c"f", OFlag::O_PATH).is_err());
        assert!(open_in_root(parent, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY).is_ok());
    }
}
