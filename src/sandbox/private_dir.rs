//! Private directories in memory for one step's short-lived files (the step's spec and bundle,
//! secret files, `/etc/hosts`, ssh agent sockets, heredoc scripts), and the sweep of those a killed
//! rbuild left behind.
//!
//! Role: [`PrivateDir::new`] makes `rbuild-<kind>-XXXXXX` in [`memory_dir`] (`/dev/shm` when it
//! is a writable tmpfs), 0700, so no other host user can enter it. The process that made it holds
//! an exclusive `flock` on `<dir>/.owner` until the directory is dropped; the kernel releases that
//! lock when the process dies, however it dies. [`sweep`] (at the start of every build and in
//! `cache prune`) removes the directories whose owner lock it can take: their owner is gone, and
//! after a `kill -9` they would otherwise keep a secret's plaintext in memory until reboot.
//!
//! What must never be in a file, even a private one (the step's spec and the container's OCI
//! spec, which hold `env=` secrets), is a [`memory_file`]: an anonymous memory file that no path
//! names and that goes away with the last process holding it.
//!
//! Invariants: only directories of the calling user are swept; a directory without an owner
//! file is left alone while it is young (its owner may be between `mkdir` and the lock).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Every private directory's name starts with this.
const PREFIX: &str = "rbuild-";
const OWNER_FILE: &str = ".owner";
/// How long a directory without an owner file is assumed to be in the making.
const UNOWNED_GRACE: Duration = Duration::from_secs(600);

/// A private directory, removed when dropped.
pub struct PrivateDir {
    // Field order: the directory goes before the lock is released.
    directory: tempfile::TempDir,
    _owner: nix::fcntl::Flock<File>,
}

impl PrivateDir {
    /// `kind` names the use (`step`, `secret`, ...).
    pub fn new(kind: &str) -> io::Result<PrivateDir> {
        let directory = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{kind}-"))
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(memory_dir())?;
        // The umask may have narrowed the mode, never widened it; make it exactly 0700.
        fs::set_permissions(directory.path(), fs::Permissions::from_mode(0o700))?;
        let owner = File::options().write(true).create_new(true).mode(0o600).open(directory.path().join(OWNER_FILE))?;
        let owner =
            nix::fcntl::Flock::lock(owner, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| io::Error::from(errno))?;
        Ok(PrivateDir { directory, _owner: owner })
    }

    pub fn path(&self) -> &Path {
        self.directory.path()
    }
}

/// An anonymous memory file (`memfd`, close-on-exec) holding `bytes`, read from the start by
/// whoever opens `/proc/<pid>/fd/<fd>` or inherits it.
pub(super) fn memory_file(name: &str, bytes: &[u8]) -> io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let descriptor = nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
    let mut file = File::from(descriptor);
    file.write_all(bytes)?;
    Ok(file.into())
}

/// A directory in memory for short-lived private files: `/dev/shm` when it is a writable tmpfs,
/// else the system temp dir.
pub(super) fn memory_dir() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    let writable = nix::unistd::access(&shm, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK).is_ok();
    let tmpfs = nix::sys::statfs::statfs(&shm).is_ok_and(|stat| stat.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if writable && tmpfs { shm } else { std::env::temp_dir() }
}

/// Removes the private directories of dead rbuild processes of this user from [`memory_dir`];
/// returns how many. Best effort: what cannot be read or removed stays.
pub(super) fn sweep() -> usize {
    sweep_in(&memory_dir(), SystemTime::now())
}

fn sweep_in(parent: &Path, now: SystemTime) -> usize {
    let Ok(entries) = fs::read_dir(parent) else { return 0 };
    let user = nix::unistd::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(metadata) = fs::symlink_metadata(&path) else { continue };
        if !metadata.is_dir() || metadata.uid() != user {
            continue;
        }
        if owner_is_gone(&path, &metadata, now) && fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn owner_is_gone(path: &Path, metadata: &fs::Metadata, now: SystemTime) -> bool {
    match File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path.join(OWNER_FILE)) {
        Ok(owner) => nix::fcntl::Flock::lock(owner, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let modified = metadata.modified().unwrap_or(now);
            now.duration_since(modified).is_ok_and(|age| age > UNOWNED_GRACE)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_private_and_owned_while_it_lives() {
        let directory = PrivateDir::new("test").unwrap();
        let metadata = fs::metadata(directory.path()).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o700);
        assert!(directory.path().file_name().unwrap().to_string_lossy().starts_with("rbuild-test-"));
        let parent = directory.path().parent().unwrap().to_path_buf();
        // Its owner is alive: a sweep leaves it.
        let _ = sweep_in(&parent, SystemTime::now());
        assert!(directory.path().exists());
        let path = directory.path().to_path_buf();
        drop(directory);
        assert!(!path.exists());
    }

    #[test]
    fn a_memory_file_reads_back_through_proc() {
        use std::os::fd::AsRawFd;
        let file = memory_file("test", b"value").unwrap();
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        assert_eq!(fs::read(path).unwrap(), b"value");
    }

    #[test]
    fn the_sweep_removes_what_dead_owners_left() {
        let parent = tempfile::tempdir().unwrap();
        // A dead owner: the owner file is there, nobody holds its lock.
        let dead = parent.path().join("rbuild-step-dead");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join(OWNER_FILE), "").unwrap();
        fs::write(dead.join("secret"), "plaintext").unwrap();
        // A live owner, another process in effect: the lock is held through another descriptor.
        let live = parent.path().join("rbuild-step-live");
        fs::create_dir(&live).unwrap();
        fs::write(live.join(OWNER_FILE), "").unwrap();
        let _held =
            nix::fcntl::Flock::lock(File::open(live.join(OWNER_FILE)).unwrap(), nix::fcntl::FlockArg::LockExclusiveNonblock).unwrap();
        // Without an owner file: young stays, old goes.
        let young = parent.path().join("rbuild-step-young");
        fs::create_dir(&young).unwrap();
        let old = parent.path().join("rbuild-step-old");
        fs::create_dir(&old).unwrap();
        nix::sys::stat::utimes(&old, &nix::sys::time::TimeVal::new(0, 0), &nix::sys::time::TimeVal::new(0, 0)).unwrap();
        // Not rbuild's.
        let other = parent.path().join("other-dead");
        fs::create_dir(&other).unwrap();
        fs::write(other.join(OWNER_FILE), "").unwrap();

        assert_eq!(sweep_in(parent.path(), SystemTime::now()), 2);
        assert!(!dead.exists() && !old.exists());
        assert!(live.exists() && young.exists() && other.exists());
    }
}
