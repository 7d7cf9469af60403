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
//!
//! Kept between builds: compiling took 15 ms of CPU per build (76 % of it libseccomp's
//! `export_bpf`), the first step's largest cost. [`standby_runners`](super::standby_runners)
//! names a file of the state root ([`KeptFilter`]) that holds the last program compiled, under a
//! key of everything the program depends on: this rbuild binary (its device, inode, size and
//! mtime: the profile and this file's compiler come with it), the libseccomp it loaded (the same
//! identity, and its version) and the profile's JSON. A file whose key differs, or whose program's
//! digest does not match (a write cut short), is ignored and replaced. The state root is trusted
//! here as everywhere: whoever can write it can already change every layer a build runs.

use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use sha2::{Digest, Sha256};

use super::SandboxError;

/// The compiled filter of [`super::seccomp::profile`], without (`[0]`) and with (`[1]`) the
/// rename notifications.
static PROGRAMS: [OnceLock<Result<Vec<u8>, String>>; 2] = [OnceLock::new(), OnceLock::new()];

/// Where this process keeps the compiled program between builds, once told.
static KEPT: Mutex<Option<KeptFilter>> = Mutex::new(None);

/// A file that keeps the last compiled program (see the module docs), written through a
/// temporary file in `temporary_directory` (same filesystem) renamed over `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptFilter {
    pub path: PathBuf,
    pub temporary_directory: PathBuf,
}

/// From now on [`program`] reads and writes the compiled program in `kept`.
pub(super) fn keep_in(kept: KeptFilter) {
    *KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(kept);
}

/// The BPF program (the kernel's `sock_filter` records, native byte order) of the step profile;
/// `rename_guard`: the rename calls are user notifications. Compiled (or read from the kept file)
/// on first use.
pub(crate) fn program(rename_guard: bool) -> Result<&'static [u8], SandboxError> {
    let compiled = PROGRAMS[usize::from(rename_guard)].get_or_init(|| {
        let profile = super::seccomp::profile(rename_guard).map_err(|error| error.to_string())?;
        let kept = KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match kept {
            Some(kept) => kept_or_compiled(&profile, &kept),
            None => compile(&profile),
        }
    });
    compiled.as_deref().map_err(|message| SandboxError::SeccompFilter { message: message.clone() })
}

/// The kept file's program when its key is `profile`'s here, else `profile` compiled and kept.
fn kept_or_compiled(profile: &LinuxSeccomp, kept: &KeptFilter) -> Result<Vec<u8>, String> {
    let key = match key(profile) {
        Ok(key) => key,
        Err(error) => {
            tracing::debug!(%error, "no key for the kept seccomp filter");
            return compile(profile);
        }
    };
    if let Some(program) = std::fs::read(&kept.path).ok().and_then(|bytes| read_kept(&bytes, &key)) {
        tracing::debug!(path = %kept.path.display(), "seccomp filter read from the kept file");
        return Ok(program);
    }
    let program = compile(profile)?;
    if let Err(error) = write_kept(kept, &key, &program) {
        tracing::debug!(path = %kept.path.display(), %error, "could not keep the seccomp filter");
    }
    Ok(program)
}

/// The largest program the kernel loads (`BPF_MAXINSNS`), in bytes.
const MAXIMUM_PROGRAM: usize = 4096 * 8;

/// The kept file's layout: the key, the program's SHA-256, the program.
fn read_kept(bytes: &[u8], key: &[u8; 32]) -> Option<Vec<u8>> {
    let (stored_key, rest) = bytes.split_first_chunk::<32>()?;
    let (digest, program) = rest.split_first_chunk::<32>()?;
    let well_formed = !program.is_empty() && program.len().is_multiple_of(8) && program.len() <= MAXIMUM_PROGRAM;
    (stored_key == key && well_formed && Sha256::digest(program).as_slice() == digest).then(|| program.to_vec())
}

fn write_kept(kept: &KeptFilter, key: &[u8; 32], program: &[u8]) -> std::io::Result<()> {
    let mut file = tempfile::Builder::new().prefix("seccomp-filter-").tempfile_in(&kept.temporary_directory)?;
    file.write_all(key)?;
    file.write_all(&Sha256::digest(program))?;
    file.write_all(program)?;
    file.persist(&kept.path)?;
    Ok(())
}

/// What the compiled `profile` depends on, hashed: the format of the kept file, this binary, the
/// libseccomp loaded and the profile.
fn key(profile: &LinuxSeccomp) -> Result<[u8; 32], String> {
    let mut hasher = Sha256::new();
    hasher.update(b"rbuild seccomp filter 1\0");
    hasher.update(file_identity(Path::new("/proc/self/exe"))?);
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|error| format!("read /proc/self/maps: {error}"))?;
    // Linked statically, libseccomp is part of the binary identified above.
    if let Some(library) = maps.lines().filter_map(|line| line.split_whitespace().nth(5)).find(|path| path.contains("libseccomp")) {
        hasher.update(library.as_bytes());
        hasher.update(file_identity(Path::new(library))?);
    }
    let version = libseccomp::ScmpVersion::current().map_err(|error| format!("libseccomp's version: {error}"))?;
    hasher.update(format!("\0{}.{}.{}\0", version.major, version.minor, version.micro));
    hasher.update(serde_json::to_vec(profile).map_err(|error| error.to_string())?);
    Ok(hasher.finalize().into())
}

/// A file's device, inode, size and modification time: another file, or a changed one, differs.
fn file_identity(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let fields = [metadata.dev(), metadata.ino(), metadata.size(), metadata.mtime() as u64, metadata.mtime_nsec() as u64];
    Ok(fields.iter().flat_map(|field| field.to_le_bytes()).collect())
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

    /// A kept file's place in a new directory, the plain profile and its program compiled.
    fn kept_plain_profile() -> (tempfile::TempDir, KeptFilter, LinuxSeccomp, Vec<u8>) {
        let directory = tempfile::tempdir().unwrap();
        let kept = KeptFilter { path: directory.path().join("seccomp-filter-v1"), temporary_directory: directory.path().to_path_buf() };
        let profile = crate::sandbox::seccomp::profile(false).unwrap();
        let compiled = compile(&profile).unwrap();
        (directory, kept, profile, compiled)
    }

    #[test]
    fn a_compiled_filter_is_kept_and_read_back_only_under_its_own_key() {
        let (directory, kept, profile, compiled) = kept_plain_profile();
        assert_eq!(kept_or_compiled(&profile, &kept).unwrap(), compiled);
        let key = key(&profile).unwrap();
        assert_eq!(read_kept(&std::fs::read(&kept.path).unwrap(), &key), Some(compiled.clone()));
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 1, "the temporary file was left");

        // What the file holds is what is used: a program of its own (one `return ALLOW`) comes back.
        let own = [0x06u8, 0, 0, 0, 0, 0, 0xff, 0x7f].to_vec();
        write_kept(&kept, &key, &own).unwrap();
        assert_eq!(kept_or_compiled(&profile, &kept).unwrap(), own);

        // Another profile (the guarded one) has another key: compiled, and kept instead.
        let guarded = crate::sandbox::seccomp::profile(true).unwrap();
        assert_ne!(super::key(&guarded).unwrap(), key);
        assert_eq!(kept_or_compiled(&guarded, &kept).unwrap(), compile(&guarded).unwrap());
        assert_eq!(kept_or_compiled(&profile, &kept).unwrap(), compiled);
    }

    #[test]
    fn a_damaged_kept_filter_is_compiled_again_and_replaced() {
        let (_directory, kept, profile, compiled) = kept_plain_profile();
        let key = key(&profile).unwrap();
        write_kept(&kept, &key, &compiled).unwrap();
        let whole = std::fs::read(&kept.path).unwrap();
        let mut flipped = whole.clone();
        flipped[100] ^= 1;
        let cases: [(&str, Vec<u8>); 5] = [
            ("a changed byte", flipped),
            ("cut short", whole[..whole.len() - 8].to_vec()),
            ("cut in the key", whole[..20].to_vec()),
            ("empty", Vec::new()),
            ("no program", whole[..64].to_vec()),
        ];
        for (what, bytes) in cases {
            std::fs::write(&kept.path, &bytes).unwrap();
            assert_eq!(read_kept(&bytes, &key), None, "{what}");
            assert_eq!(kept_or_compiled(&profile, &kept).unwrap(), compiled, "{what}");
            assert_eq!(std::fs::read(&kept.path).unwrap(), whole, "{what}: not replaced");
        }
        // Well formed, but not a whole number of instructions, or longer than the kernel takes.
        for length in [12, MAXIMUM_PROGRAM + 8] {
            let program = vec![0u8; length];
            write_kept(&kept, &key, &program).unwrap();
            assert_eq!(kept_or_compiled(&profile, &kept).unwrap(), compiled, "{length} bytes");
        }
    }
}
