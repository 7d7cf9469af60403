//! The overlay's rename rule, kept by the copying snapshotter: a directory that came from the
//! layers below the step cannot be renamed (EXDEV).
//!
//! Why: overlayfs without `redirect_dir` (how BuildKit's snapshotter and rbuild's overlay mount
//! it) answers EXDEV to `rename(2)` of a directory that exists in a lower layer. Programs then copy
//! and delete (`mv`) or fail (`os.rename`). A plain copy of the layers renames anything, so the
//! same RUN step succeeded there and failed in an overlay and in BuildKit (`RUN mv /etc /usr/`:
//! the copy-and-delete fallback stops at the `/etc/hosts` mount). Both snapshotters must give the
//! same result.
//!
//! How: [`LowerDirectories::record`] notes every directory of the root filesystem (device and
//! inode) before anything of the step exists. The step's seccomp profile then hands `rename`,
//! `renameat` and `renameat2` to the runner as seccomp user notifications: the container's init
//! sends the notification descriptor over [`RenameGuard`]'s socket pair (the executor, after it
//! loaded the filter, [`super::seccomp_filter`]), and the runner answers each call in its
//! wait loop ([`RenameGuard::on_ready`]): EXDEV when the source (for `RENAME_EXCHANGE` either side)
//! is one of those directories, else the call goes on unchanged in the kernel.
//!
//! Decisions:
//! - The runner answers, in its own poll loop: it stays single-threaded (libcontainer's rule) and
//!   needs no helper process. A rename waits for one answer: two `/proc` opens and a stat.
//! - A path is resolved as its caller sees it: an absolute one under the caller's root
//!   (`/proc/PID/root`, symlinks and `..` kept inside it), a relative one joined to the caller's
//!   working directory or `dirfd` as `/proc/PID/cwd` (or `fd/N`) names it inside the container.
//!   The last component is not followed, as `rename` does not follow it.
//! - A directory the step created (the runner's mount-point stubs and the working directory
//!   included) renames freely, as an overlay's upper-only directory does. A lower directory the
//!   step deleted and made again is a new inode: it renames freely, as an overlay's opaque one.
//! - Not a security boundary. The answer only decides between EXDEV and the kernel's own call
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), which keeps all its checks; a call the runner cannot
//!   look at (memory unreadable, caller gone, odd path) goes on unchanged.
//!
//! Known difference: a process that `chroot`s inside the step has its relative paths resolved from
//! its working directory as seen from the container's root.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::SystemTime;

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, notify_id_valid};
use nix::fcntl::{OFlag, RenameFlags};

use super::{SandboxError, sys};

/// The system calls the guard answers.
pub(super) const GUARDED_CALLS: [&str; 3] = ["rename", "renameat", "renameat2"];

/// The longest path read from a caller's memory (`PATH_MAX`).
const PATH_MAX: usize = 4096;

/// The directories of a root filesystem before a step ran.
#[derive(Debug, Default)]
pub(super) struct LowerDirectories(HashSet<Identity>);

/// A directory's identity for the length of a step: device, inode and birth time. The birth time
/// tells a lower directory from a new one that took its inode number after the step deleted it
/// (ext4 hands a freed number out again at once); file systems without birth times (NFS, ext3)
/// give `None`, and there such a new directory is taken for the lower one.
type Identity = (u64, u64, Option<SystemTime>);

fn identity(metadata: &std::fs::Metadata) -> Identity {
    (metadata.dev(), metadata.ino(), metadata.created().ok())
}

impl LowerDirectories {
    /// Every directory below `rootfs` (not `rootfs` itself: `/` cannot be renamed anyway), on
    /// `rootfs`'s file system, symlinks not followed.
    pub(super) fn record(rootfs: &Path) -> Result<Self, SandboxError> {
        let mut directories = HashSet::new();
        for entry in walkdir::WalkDir::new(rootfs).min_depth(1).same_file_system(true) {
            let entry = entry.map_err(|error| SandboxError::io(format!("list `{}`", rootfs.display()), error.into()))?;
            if entry.file_type().is_dir() {
                let metadata =
                    entry.metadata().map_err(|error| SandboxError::io(format!("stat `{}`", entry.path().display()), error.into()))?;
                directories.insert(identity(&metadata));
            }
        }
        Ok(Self(directories))
    }

    fn contains(&self, metadata: &std::fs::Metadata) -> bool {
        metadata.is_dir() && self.0.contains(&identity(metadata))
    }
}

/// The runner's end of the rename rule: its end of a socket pair until the container's init
/// hands over the notification descriptor, then that descriptor, until the step's processes are
/// gone.
pub(super) struct RenameGuard {
    lowers: LowerDirectories,
    state: State,
}

enum State {
    Waiting(OwnedFd),
    Answering(OwnedFd),
    Done,
}

impl RenameGuard {
    /// The guard, and the other end of its socket pair: for the container's init, which sends
    /// the notification descriptor over it. The runner closes its copy of that end once the init
    /// exists, so the guard sees the end of the stream when the init dies without sending.
    pub(super) fn new(lowers: LowerDirectories) -> Result<(Self, OwnedFd), SandboxError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
            .map_err(|error| SandboxError::syscall("create the rename guard's socket pair", error))?;
        Ok((Self { lowers, state: State::Waiting(ours) }, theirs))
    }

    /// The descriptor to poll for input, `None` once the step's processes are gone.
    pub(super) fn descriptor(&self) -> Option<BorrowedFd<'_>> {
        match &self.state {
            State::Waiting(socket) => Some(socket.as_fd()),
            State::Answering(notifications) => Some(notifications.as_fd()),
            State::Done => None,
        }
    }

    /// Handles what [`Self::descriptor`] polled: takes the notification descriptor, or answers a
    /// rename; `hung_up` when the poll said no process uses the filter any more.
    pub(super) fn on_ready(&mut self, hung_up: bool) {
        match &self.state {
            State::Waiting(socket) => match sys::receive_descriptor(socket.as_fd()) {
                Ok(notifications) => self.state = State::Answering(notifications),
                Err(error) => {
                    tracing::debug!(%error, "no notification descriptor from the container");
                    self.state = State::Done;
                }
            },
            State::Answering(_) if hung_up => self.state = State::Done,
            State::Answering(notifications) => self.answer(notifications.as_fd()),
            State::Done => {}
        }
    }

    fn answer(&self, notifications: BorrowedFd<'_>) {
        // Fails when the caller died meanwhile: nothing to answer.
        let Ok(request) = ScmpNotifReq::receive(notifications.as_raw_fd()) else { return };
        let refused = self.refuses(&request, notifications);
        let response = if refused {
            ScmpNotifResp::new_error(request.id, -libc::EXDEV, ScmpNotifRespFlags::empty())
        } else {
            ScmpNotifResp::new_continue(request.id, ScmpNotifRespFlags::empty())
        };
        // Fails only when the caller died meanwhile.
        let _ = response.respond(notifications.as_raw_fd());
    }

    /// Whether the rename of `request` moves a lower directory.
    fn refuses(&self, request: &ScmpNotifReq, notifications: BorrowedFd<'_>) -> bool {
        let Ok(name) = request.data.syscall.get_name_by_arch(request.data.arch) else { return false };
        let Some(call) = RenameCall::read(&name, &request.data.args) else { return false };
        let Ok(caller) = Caller::open(request.pid) else { return false };
        // The pid still names the caller (not a process that took its number): from here on
        // the open /proc directory is the caller's.
        if notify_id_valid(notifications.as_raw_fd(), request.id).is_err() {
            return false;
        }
        call.sources().any(|(directory, address)| caller.is_lower_directory(directory, address, &self.lowers))
    }
}

/// The arguments of a rename call: (dirfd, path address) of each side, and the flags.
struct RenameCall {
    from: (i32, u64),
    to: (i32, u64),
    flags: u32,
}

impl RenameCall {
    // The registers hold C ints and pointers; truncating to `i32`/`u32` reads them as C does.
    #[allow(clippy::cast_possible_truncation)]
    fn read(name: &str, args: &[u64; 6]) -> Option<Self> {
        let fd = |register: u64| register as i32;
        match name {
            "rename" => Some(Self { from: (libc::AT_FDCWD, args[0]), to: (libc::AT_FDCWD, args[1]), flags: 0 }),
            "renameat" => Some(Self { from: (fd(args[0]), args[1]), to: (fd(args[2]), args[3]), flags: 0 }),
            "renameat2" => Some(Self { from: (fd(args[0]), args[1]), to: (fd(args[2]), args[3]), flags: args[4] as u32 }),
            _ => None,
        }
    }

    /// The sides whose directory must not move: the source, and for an exchange the target too.
    fn sources(&self) -> impl Iterator<Item = (i32, u64)> {
        let exchange = self.flags & RenameFlags::RENAME_EXCHANGE.bits() != 0;
        std::iter::once(self.from).chain(exchange.then_some(self.to))
    }
}

/// A process that made a notified call, through its `/proc` directory.
struct Caller {
    proc_directory: OwnedFd,
}

impl Caller {
    fn open(pid: u32) -> std::io::Result<Self> {
        let path = CString::new(format!("/proc/{pid}")).map_err(std::io::Error::other)?;
        Ok(Self { proc_directory: sys::open_at(None, &path, OFlag::O_DIRECTORY)? })
    }

    /// Whether the path at `address` of the caller's memory, taken relative to `directory` (a
    /// dirfd or `AT_FDCWD`), names one of `lowers` (its last component not followed).
    fn is_lower_directory(&self, directory: i32, address: u64, lowers: &LowerDirectories) -> bool {
        let Some(path) = self.read_path(address) else { return false };
        let last = path.rsplit(|byte| *byte == b'/').find(|component| !component.is_empty());
        if matches!(last, None | Some(b".") | Some(b"..")) {
            // `/`, `.` and `..` are the kernel's to refuse (EBUSY, EINVAL).
            return false;
        }
        let Some(absolute) = self.absolute(directory, &path) else { return false };
        let Ok(relative) = CString::new(absolute) else { return false };
        let Ok(root) = sys::open_at(Some(self.proc_directory.as_fd()), c"root", OFlag::O_DIRECTORY) else { return false };
        let Ok(target) = sys::open_in_root(root.as_fd(), &relative, OFlag::O_PATH | OFlag::O_NOFOLLOW) else { return false };
        File::from(target).metadata().is_ok_and(|metadata| lowers.contains(&metadata))
    }

    /// The NUL-terminated string at `address`, read page by page (the next page may be
    /// unmapped); `None` when unreadable or longer than `PATH_MAX`.
    fn read_path(&self, address: u64) -> Option<Vec<u8>> {
        const PAGE: u64 = 4096;
        let memory = sys::open_at(Some(self.proc_directory.as_fd()), c"mem", OFlag::O_RDONLY).ok()?;
        let memory = File::from(memory);
        let mut path = Vec::new();
        let mut at = address;
        while path.len() < PATH_MAX {
            let mut chunk = vec![0_u8; usize::try_from(PAGE - at % PAGE).ok()?];
            let read = memory.read_at(&mut chunk, at).ok().filter(|read| *read > 0)?;
            if let Some(end) = chunk[..read].iter().position(|byte| *byte == 0) {
                path.extend_from_slice(&chunk[..end]);
                return Some(path);
            }
            path.extend_from_slice(&chunk[..read]);
            at += read as u64;
        }
        None
    }

    /// `path` as an absolute path inside the caller's root: relative ones are joined to the
    /// directory `/proc/PID/cwd` or `/proc/PID/fd/N` names (from inside the container, since
    /// the caller's root is not below ours).
    fn absolute(&self, directory: i32, path: &[u8]) -> Option<Vec<u8>> {
        if path.starts_with(b"/") {
            return Some(path.to_vec());
        }
        let link = if directory == libc::AT_FDCWD { "cwd".to_string() } else { format!("fd/{directory}") };
        let base = nix::fcntl::readlinkat(Some(self.proc_directory.as_raw_fd()), link.as_str()).ok()?;
        let base = base.as_bytes();
        if !base.starts_with(b"/") {
            return None;
        }
        let mut absolute = base.to_vec();
        absolute.push(b'/');
        absolute.extend_from_slice(path);
        Some(absolute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_directories_are_the_tree_below_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/apt")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), "").unwrap();
        std::os::unix::fs::symlink("etc", root.path().join("link")).unwrap();
        let lowers = LowerDirectories::record(root.path()).unwrap();
        let metadata = |path: &str| std::fs::symlink_metadata(root.path().join(path)).unwrap();
        for directory in ["etc", "etc/apt"] {
            assert!(lowers.contains(&metadata(directory)), "{directory}");
        }
        for other in ["", "etc/passwd", "link"] {
            assert!(!lowers.contains(&metadata(other)), "{other:?}");
        }
        // A directory made where a lower one was deleted is new, even with its inode number.
        let inode = metadata("etc/apt").ino();
        std::fs::remove_dir(root.path().join("etc/apt")).unwrap();
        std::fs::create_dir(root.path().join("etc/apt")).unwrap();
        if metadata("etc/apt").ino() == inode && metadata("etc/apt").created().is_ok() {
            assert!(!lowers.contains(&metadata("etc/apt")), "a new directory with a reused inode number");
        }
    }

    #[test]
    fn an_exchange_guards_both_sides() {
        let args = |flags: u64| [3, 10, u64::MAX - 99, 20, flags, 0];
        let plain = RenameCall::read("renameat2", &args(0)).unwrap();
        assert_eq!(plain.sources().collect::<Vec<_>>(), [(3, 10)]);
        let exchange = RenameCall::read("renameat2", &args(u64::from(RenameFlags::RENAME_EXCHANGE.bits()))).unwrap();
        assert_eq!(exchange.sources().collect::<Vec<_>>(), [(3, 10), (libc::AT_FDCWD, 20)]);
        let old = RenameCall::read("rename", &[7, 8, 0, 0, 0, 0]).unwrap();
        assert_eq!(old.sources().collect::<Vec<_>>(), [(libc::AT_FDCWD, 7)]);
        assert!(RenameCall::read("unlink", &[0; 6]).is_none());
    }

    /// The caller's path is read from its memory as the kernel would: up to the NUL, across a
    /// page boundary.
    #[test]
    fn paths_are_read_from_the_callers_memory() {
        let caller = Caller::open(std::process::id()).unwrap();
        let mut buffer = vec![b'a'; 3 * 4096];
        let text = b"/usr/lib/x86_64-linux-gnu\0";
        let start = 4096 - (buffer.as_ptr() as usize % 4096) + 4090; // crosses a page boundary
        buffer[start..start + text.len()].copy_from_slice(text);
        let address = buffer[start..].as_ptr() as u64;
        assert_eq!(caller.read_path(address).as_deref(), Some(&text[..text.len() - 1]));
        assert_eq!(caller.read_path(0), None);
    }
}
