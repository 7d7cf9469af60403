//! `--network=none`: the runner moves itself into a fresh network namespace and brings `lo` up;
//! the container's spec then has no network namespace and inherits the runner's.
//!
//! Decision: libcontainer 0.7 leaves `lo` down in a namespace it creates (runc brings it up), and
//! passing a namespace by path would need a bind-mounted nsfs file with its own clean-up. The
//! runner is a throw-away process per step, so unsharing its own namespace costs nothing and dies
//! with it. `lo` goes up with one `SIOCSIFFLAGS` ioctl, no netlink needed.

use nix::sched::{CloneFlags, unshare};

use super::{SandboxError, sys};

/// Moves the calling (single-threaded) process into a new network namespace with `lo` up.
pub(crate) fn enter_isolated_network() -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|error| SandboxError::syscall("create a network namespace", error))?;
    loopback_up()
}

fn loopback_up() -> Result<(), SandboxError> {
    let socket = sys::interface_socket().map_err(|error| SandboxError::io("open a socket to configure `lo`", error))?;
    let flags = sys::interface_flags(&socket, c"lo").map_err(|error| SandboxError::io("read the flags of `lo`", error))?;
    let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    sys::set_interface_flags(&socket, c"lo", flags | up).map_err(|error| SandboxError::io("bring `lo` up", error))
}
