//! The libcontainer workload executor: the step's seccomp filter, then `execve` with exactly the
//! spec's environment.
//!
//! libcontainer's default executor rewrites the process environment with `std::env::set_var`,
//! which takes Rust's process-wide env lock inside a raw `clone3` child (a measured deadlock when
//! the lock was held at clone time); this one never touches `std::env`. It also asks for
//! `SIGKILL` when the runner dies, so a container never outlives its runner (the container is a
//! pid namespace: its init's death ends every process in it).
//!
//! The workload starts with every signal at its default disposition and none blocked, as under
//! BuildKit (runc's init is Go, which ignores nothing). rbuild is Rust, whose runtime ignores
//! `SIGPIPE`, and an ignored signal survives `execve`: a pipeline's writer would then get EPIPE
//! instead of dying when its reader exits (measured: `SigIgn` 0x1000 against BuildKit's 0).

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError};
use nix::sys::signal::Signal;

use super::sys;

#[derive(Clone)]
pub(crate) struct EnvSafeExecutor {
    /// The BPF program the workload runs under.
    pub seccomp_filter: std::sync::Arc<[u8]>,
    /// The runner's socket (inherited by the init) for the filter's notification descriptor;
    /// `None`: the filter notifies nobody.
    pub notification_socket: Option<RawFd>,
}

impl EnvSafeExecutor {
    /// Loads the filter, hands its notification descriptor over, drops CAP_SYS_ADMIN.
    fn confine(&self) -> Result<(), String> {
        let notifications = sys::load_seccomp_filter(&self.seccomp_filter, self.notification_socket.is_some())
            .map_err(|error| format!("load the seccomp filter: {error}"))?;
        if let (Some(socket), Some(notifications)) = (self.notification_socket, notifications) {
            // The runner opened `socket` for the init before the clone; nothing in the init closes
            // it before `execve` (libcontainer's close_range only marks it close-on-exec).
            sys::send_descriptor(socket, notifications.as_fd())
                .map_err(|error| format!("send the seccomp notification descriptor: {error}"))?;
        }
        sys::drop_admin_capability().map_err(|error| format!("drop CAP_SYS_ADMIN: {error}"))
    }
}

fn process_parts(spec: &Spec) -> (Vec<String>, Vec<String>) {
    let process = spec.process().as_ref();
    let args = process.and_then(|process| process.args().clone()).unwrap_or_default();
    let env = process.and_then(|process| process.env().clone()).unwrap_or_default();
    (args, env)
}

/// Resolves `program` as execvp would, against the spec's PATH (not the runner's).
fn resolve_program(program: &str, env: &[String]) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path =
        env.iter().find_map(|entry| entry.strip_prefix("PATH=")).unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|directory| Path::new(if directory.is_empty() { "." } else { directory }).join(program))
        .find(|candidate| candidate.metadata().is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0))
}

impl Executor for EnvSafeExecutor {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        // Set here, after the uid switch (which clears it), and before waiting for the start signal.
        let _ = sys::set_parent_death_signal(Signal::SIGKILL);
        let (args, env) = process_parts(spec);
        let Some(program) = args.first() else {
            return Err(ExecutorValidationError::ArgValidationError("no command to run".into()));
        };
        if resolve_program(program, &env).is_none() {
            // stderr is already the step's log: say it where the user looks.
            let message = format!("exec: \"{program}\": executable file not found in $PATH");
            let _ = writeln!(std::io::stderr(), "{message}");
            return Err(ExecutorValidationError::ArgValidationError(message));
        }
        Ok(())
    }

    fn setup_envs(&self, _envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let (args, env) = process_parts(spec);
        let program = args.first().and_then(|program| resolve_program(program, &env)).ok_or(ExecutorError::InvalidArg)?;
        let to_cstrings = |items: &[String]| items.iter().map(|item| CString::new(item.as_bytes())).collect::<Result<Vec<_>, _>>();
        let (Ok(argv), Ok(envp)) = (to_cstrings(&args), to_cstrings(&env)) else {
            return Err(ExecutorError::InvalidArg);
        };
        let program = CString::new(program.as_os_str().as_bytes()).map_err(|_| ExecutorError::InvalidArg)?;
        if let Err(message) = self.confine() {
            let _ = writeln!(std::io::stderr(), "{message}");
            return Err(ExecutorError::Other(message));
        }
        sys::reset_signals();
        let error = nix::unistd::execve(&program, &argv, &envp).unwrap_err();
        let _ = writeln!(std::io::stderr(), "exec {}: {error}", args[0]);
        Err(ExecutorError::Other(format!("exec `{}` failed: {error}", args[0])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_against_the_spec_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let found = resolve_program("sh", &env).unwrap();
        assert!(found == Path::new("/bin/sh") || found == Path::new("/usr/bin/sh"), "{found:?}");
        assert_eq!(resolve_program("./configure", &env), Some(PathBuf::from("./configure")));
        assert_eq!(resolve_program("definitely-not-a-program", &env), None);
    }
}
