//! The step's seccomp profile ([`super::seccomp`]) as a BPF program: compiled once per rbuild
//! process, loaded by each container's init right before `execve`.
//!
//! Why: libcontainer compiles the OCI profile with libseccomp in every container's init; for
//! BuildKit's profile (three architectures, ~370 calls) that took ~10 ms of CPU per RUN step,
//! 40 % of a trivial step (measured with `perf record` over 30 `RUN echo` steps). The program
//! does not depend on the step: [`program`] compiles it once, with the same libseccomp calls
//! libcontainer makes, and the runner hands the bytes to [`super::executor`].
//!
//! Loading: the spec carries no `linux.seccomp`, so libcontainer loads nothing. Without
//! `no_new_privileges` (off, as under BuildKit, so `su` and `sudo` work) loading a filter needs
//! CAP_SYS_ADMIN: the spec keeps it in the effective and permitted sets but not in the bounding
//! set, and the executor loads the filter, drops CAP_SYS_ADMIN and calls `execve`. `execve`
//! would drop it anyway (root gets the bounding set, others nothing); the executor drops it first
//! so nothing of the step ever holds it. The filter is then in force from the workload's first
//! instruction, as runc's is.
//!
//! With the copying snapshotter the rename calls are user notifications ([`super::rename_guard`]):
//! the load asks for the notification descriptor, which the executor sends to the runner over a
//! socket the init inherited.

use std::io::{Read, Seek};
use std::sync::OnceLock;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use super::SandboxError;

/// The compiled filter of [`super::seccomp::profile`], without (`[0]`) and with (`[1]`) the
/// rename notifications.
static PROGRAMS: [OnceLock<Result<Vec<u8>, String>>; 2] = [OnceLock::new(), OnceLock::new()];

/// The BPF program (the kernel's `sock_filter` records, native byte order) of the step profile;
/// `rename_guard`: the rename calls are user notifications. Compiled on first use.
pub(crate) fn program(rename_guard: bool) -> Result<&'static [u8], SandboxError> {
    let compiled = PROGRAMS[usize::from(rename_guard)].get_or_init(|| {
        let profile = super::seccomp::profile(rename_guard).map_err(|error| error.to_string())?;
        compile(&profile)
    });
    compiled.as_deref().map_err(|message| SandboxError::SeccompFilter { message: message.clone() })
}

/// `profile` as libcontainer 0.7 builds it (`seccomp::initialize_seccomp`): the same actions,
/// architectures and argument comparisons, rules equal to the default action skipped, names
/// libseccomp does not know skipped, no `no_new_privs` set by the load. Exported instead of
/// loaded.
fn compile(profile: &LinuxSeccomp) -> Result<Vec<u8>, String> {
    fn failed(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> String + '_ {
        move |error| format!("{what}: {error}")
    }
    let default_action = action(profile.default_action(), profile.default_errno_ret())?;
    let mut context = ScmpFilterContext::new(default_action).map_err(failed("create the filter"))?;
    for &arch in profile.architectures().iter().flatten() {
        context.add_arch(architecture(arch)?).map_err(failed("add an architecture"))?;
    }
    context.set_ctl_nnp(false).map_err(failed("leave no_new_privs alone"))?;
    // A binary tree of the call numbers instead of a list: the same decisions, in a fraction of
    // the instructions for the kernel to check when it loads the filter and to run on each call
    // (the load took 0.73 ms of every trivial step).
    context.set_ctl_optimize(2).map_err(failed("sort the calls into a tree"))?;
    for rule in profile.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default_action {
            continue;
        }
        for name in rule.names() {
            let Ok(call) = ScmpSyscall::from_name(name) else { continue };
            let comparisons: Vec<ScmpArgCompare> = rule
                .args()
                .iter()
                .flatten()
                .map(|argument| {
                    ScmpArgCompare::new(argument.index() as u32, operator(argument.op(), argument.value_two()), argument.value())
                })
                .collect();
            let mut indexes: Vec<u32> = rule.args().iter().flatten().map(|argument| argument.index() as u32).collect();
            indexes.sort_unstable();
            let repeated_index = indexes.windows(2).any(|pair| pair[0] == pair[1]);
            if comparisons.is_empty() {
                context.add_rule(rule_action, call).map_err(failed(&format!("add the rule of `{name}`")))?;
            } else if repeated_index {
                // One rule per comparison, as runc and libcontainer do.
                for comparison in &comparisons {
                    context
                        .add_rule_conditional(rule_action, call, std::slice::from_ref(comparison))
                        .map_err(failed(&format!("add a rule of `{name}`")))?;
                }
            } else {
                context.add_rule_conditional(rule_action, call, &comparisons).map_err(failed(&format!("add the rule of `{name}`")))?;
            }
        }
    }
    let memory = super::memory_file("seccomp-filter", &[]).map_err(|error| format!("create a memory file: {error}"))?;
    context.export_bpf(&memory).map_err(failed("export the filter"))?;
    let mut file = std::fs::File::from(memory);
    let mut program = Vec::new();
    file.rewind().and_then(|()| file.read_to_end(&mut program)).map_err(|error| format!("read the exported filter: {error}"))?;
    Ok(program)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    let errno = errno.map_or(libc::EPERM, |errno| errno as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(u16::try_from(errno).map_err(|_| format!("trace value {errno} out of range"))?)
        }
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn operator(operator: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match operator {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // libcontainer's reading: `valueTwo` is the mask (see `seccomp::allow`).
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

/// The architectures the profile names (those of x86-64 and of arm64 hosts).
fn architecture(arch: Arch) -> Result<ScmpArch, String> {
    Ok(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        other => return Err(format!("architecture {other:?} is not one of the profile's")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_compiled_once_and_the_guarded_one_differs() {
        let plain = program(false).unwrap();
        assert!(!plain.is_empty() && plain.len().is_multiple_of(8), "{} bytes", plain.len());
        assert!(std::ptr::eq(plain, program(false).unwrap()));
        let guarded = program(true).unwrap();
        assert_ne!(plain, guarded);
    }
}
