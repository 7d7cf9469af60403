//! `--network=none`: the runner moves itself into a fresh network namespace and brings `lo` up;
//! the container's spec then has no network namespace and inherits the runner's.
//!
//! Decision: libcontainer 0.7 leaves `lo` down in a namespace it creates (runc brings it up), and
//! passing a namespace by path would need a bind-mounted nsfs file with its own clean-up. The
//! runner is a throw-away process per step, so unsharing its own namespace costs nothing and dies
//! with it. `lo` goes up with one `SIOCSIFFLAGS` ioctl, no netlink needed.

use nix::sched::{CloneFlags, unshare};

use super::SandboxError;

/// Moves the calling (single-threaded) process into a new network namespace with `lo` up.
pub(crate) fn enter_isolated_network() -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|error| SandboxError::syscall("create a network namespace", error))?;
    loopback_up()
}

fn loopback_up() -> Result<(), SandboxError> {
    let failure = |action: &str| SandboxError::io(action, std::io::Error::last_os_error());
    // SAFETY: plain socket/ioctl/close calls on a zeroed `ifreq` whose name is NUL-terminated.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(failure("open a socket to configure `lo`"));
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *slot = *byte as libc::c_char;
        }
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) < 0 {
            let error = failure("read the flags of `lo`");
            libc::close(socket);
            return Err(error);
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) < 0 {
            let error = failure("bring `lo` up");
            libc::close(socket);
            return Err(error);
        }
        libc::close(socket);
    }
    Ok(())
}
