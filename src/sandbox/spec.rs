//! The OCI runtime spec of one step, for libcontainer running inside rbuild's namespaces.
//!
//! Fixed choices (each measured in `shared/notes/sandbox-findings.md`):
//! - no user namespace in the spec: rbuild is already in its own, and libcontainer's would force
//!   setgroups=deny and fail on cgroup v1;
//! - namespaces pid, ipc, uts, mount; the network namespace is the runner's (host or its fresh one);
//! - devices ([`DeviceGuard`]): rootless, the user namespace keeps host devices out; as root,
//!   runc's devices allow list in a v1 devices cgroup that the runner joined before its step
//!   ([`super::cgroup`]), or where there is none, no CAP_MKNOD and `nodev` mounts; never
//!   `resources` (a devices cgroup rule fails rootless); an absolute cgroups path;
//! - /sys and everything mounted below it read-only; where the runner joined its own v1 cgroups,
//!   `/sys/fs/cgroup` shows those ([`super::cgroup::enter_own`]), as BuildKit's containers see
//!   theirs;
//! - Docker's 14 default capabilities in bounding, effective and permitted; no_new_privileges off
//!   so setuid helpers (`su`, `sudo`) work as under Docker;
//! - /sys is an rbind of the host's (a fresh sysfs needs a network namespace the user namespace
//!   owns); devpts gets `gid=5` only when gid 5 is mapped;
//! - host networking binds the host's /etc/resolv.conf and /etc/hosts read-only;
//! - BuildKit's default seccomp profile ([`super::seccomp`]), loaded by rbuild's executor and not
//!   by libcontainer ([`super::seccomp_filter`]): no `linux.seccomp`, and CAP_SYS_ADMIN in the
//!   effective and permitted sets (never in the bounding set) for the executor to load it with.

use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount as OciMount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::rootfs::StubKind;
use super::user::Identity;
use super::{MountKind, Network, SandboxError, StepSpec};

/// Facts about the runner's environment the spec depends on.
pub(crate) struct Environment<'a> {
    pub rootfs: &'a Path,
    pub cgroups_path: &'a str,
    /// gid 5 (`tty`) exists in the current user namespace.
    pub tty_group_mapped: bool,
    /// setgroups(2) is allowed (not a single-id unprivileged map).
    pub setgroups_allowed: bool,
    /// How host devices are kept out of the container ([`DeviceGuard`]).
    pub device_guard: DeviceGuard,
}

/// How a step is kept from host devices. Rootless needs nothing more: outside the initial user
/// namespace mknod of a device fails and every mount is `nodev`. As root:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceGuard {
    /// In a user namespace: the kernel's rules suffice.
    UserNamespace,
    /// Root with a cgroup v1 devices controller: BuildKit's allow list
    /// ([`super::cgroup::ALLOWED_DEVICES`]), with
    /// CAP_MKNOD kept, as Docker and BuildKit do.
    DevicesCgroup,
    /// Root without one (cgroup v2 needs an eBPF program rbuild does not load): no CAP_MKNOD,
    /// and the root filesystem and bind mounts are `nodev`, so no device node there opens.
    NoMknod,
}

pub(super) const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const HOST_NETWORK_FILES: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<OciMount, SandboxError> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|option| option.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(SandboxError::Spec)
}

/// The mounts of the spec, in mount order.
fn mounts(step: &StepSpec, environment: &Environment) -> Result<Vec<OciMount>, SandboxError> {
    let mut devpts = vec!["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
    if environment.tty_group_mapped {
        devpts.push("gid=5");
    }
    let shm_size = step.shm_size.map_or_else(|| "size=65536k".to_string(), |bytes| format!("size={bytes}"));
    let mut list = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount("/dev/pts", "devpts", "devpts", &devpts)?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &shm_size])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        // `rro`: read-only all the way down (mount_setattr with AT_RECURSIVE). `ro` alone
        // covers only the top mount, and the host's cgroup hierarchies below it stayed
        // writable: `echo 7 > /sys/fs/cgroup/pids/NAME/pids.max` changed a host cgroup.
        mount("/sys", "none", "/sys", &["rbind", "nosuid", "noexec", "nodev", "ro", "rro"])?,
    ];
    if step.network == Network::Host {
        for file in HOST_NETWORK_FILES {
            if Path::new(file).exists() {
                list.push(mount(file, "none", file, &["rbind", "ro"])?);
            }
        }
    }
    for extra in &step.mounts {
        list.push(match &extra.kind {
            MountKind::Bind { source, readonly } => {
                let mut options = vec!["rbind"];
                if *readonly {
                    options.push("ro");
                }
                if environment.device_guard == DeviceGuard::NoMknod {
                    options.push("nodev");
                }
                mount(&extra.target, "none", &source.to_string_lossy(), &options)?
            }
            MountKind::Tmpfs { size } => {
                let size = size.map(|bytes| format!("size={bytes}"));
                let mut options = vec!["nosuid", "nodev"];
                if let Some(size) = &size {
                    options.push(size);
                }
                mount(&extra.target, "tmpfs", "tmpfs", &options)?
            }
        });
    }
    Ok(list)
}

/// Destinations that need a file or directory in the rootfs before libcontainer mounts on them.
/// Paths under /dev, /proc and /sys live on the mounts above and need none.
pub(crate) fn stub_destinations(step: &StepSpec) -> Vec<(String, StubKind)> {
    let mut stubs = vec![
        ("/proc".to_string(), StubKind::Directory),
        ("/dev".to_string(), StubKind::Directory),
        ("/sys".to_string(), StubKind::Directory),
    ];
    if step.network == Network::Host {
        for file in HOST_NETWORK_FILES {
            if Path::new(file).exists() {
                stubs.push((file.to_string(), StubKind::File));
            }
        }
    }
    for extra in &step.mounts {
        let under_api = ["/dev", "/proc", "/sys"].iter().any(|api| extra.target == *api || extra.target.starts_with(&format!("{api}/")));
        if under_api {
            continue;
        }
        let kind = match &extra.kind {
            MountKind::Bind { source, .. } if !source.is_dir() => StubKind::File,
            _ => StubKind::Directory,
        };
        stubs.push((extra.target.clone(), kind));
    }
    stubs
}

/// `RLIMIT_NOFILE` at this process's hard limit, soft and hard. BuildKit gives its containers
/// the limits of buildkitd, whose Go runtime raises the soft open-files limit to the hard one
/// (measured with the oracle: `ulimit -n` = `ulimit -Hn` in a RUN step); a fixed 1024, the
/// OCI default, breaks builds that open many files.
fn open_files_limit() -> Result<oci_spec::runtime::PosixRlimit, SandboxError> {
    let hard = super::sys::open_files_limit().map_err(|error| SandboxError::io("read the open files limit", error))?;
    oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .hard(hard)
        .soft(hard)
        .build()
        .map_err(SandboxError::Spec)
}

/// The resource limits `--ulimit` names, as Docker spells them.
pub(super) const ULIMITS: [(&str, oci_spec::runtime::PosixRlimitType); 16] = {
    use oci_spec::runtime::PosixRlimitType as Type;
    [
        ("core", Type::RlimitCore),
        ("cpu", Type::RlimitCpu),
        ("data", Type::RlimitData),
        ("fsize", Type::RlimitFsize),
        ("locks", Type::RlimitLocks),
        ("memlock", Type::RlimitMemlock),
        ("msgqueue", Type::RlimitMsgqueue),
        ("nice", Type::RlimitNice),
        ("nofile", Type::RlimitNofile),
        ("nproc", Type::RlimitNproc),
        ("rss", Type::RlimitRss),
        ("rtprio", Type::RlimitRtprio),
        ("rttime", Type::RlimitRttime),
        ("sigpending", Type::RlimitSigpending),
        ("stack", Type::RlimitStack),
        ("as", Type::RlimitAs),
    ]
};

/// The process limits: the open files limit as buildkitd's ([`open_files_limit`]), then each
/// `--ulimit`, which replaces a limit of the same name.
fn rlimits(step: &StepSpec) -> Result<Vec<oci_spec::runtime::PosixRlimit>, SandboxError> {
    let mut limits = vec![open_files_limit()?];
    for (name, soft, hard) in &step.ulimits {
        let Some(&(_, typ)) = ULIMITS.iter().find(|(known, _)| known == name) else {
            return Err(SandboxError::InvalidStep { reason: format!("unknown ulimit `{name}`") });
        };
        limits.retain(|limit| limit.typ() != typ);
        limits.push(oci_spec::runtime::PosixRlimitBuilder::default().typ(typ).soft(*soft).hard(*hard).build().map_err(SandboxError::Spec)?);
    }
    Ok(limits)
}

/// `env` plus `HOME` from the passwd entry when absent, as runc does.
fn process_environment(step: &StepSpec, identity: &Identity) -> Vec<String> {
    let mut env = step.env.clone();
    if !env.iter().any(|entry| entry.starts_with("HOME=")) {
        env.push(format!("HOME={}", identity.home));
    }
    env
}

pub(crate) fn build(step: &StepSpec, identity: &Identity, environment: &Environment) -> Result<Spec, SandboxError> {
    let capabilities: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES
        .into_iter()
        .filter(|capability| environment.device_guard != DeviceGuard::NoMknod || *capability != Capability::Mknod)
        .collect();
    // CAP_SYS_ADMIN only for the executor to load the seccomp filter with; it drops it before
    // `execve`, and outside the bounding set `execve` could not give it back.
    let mut loading: oci_spec::runtime::Capabilities = capabilities.clone();
    loading.insert(Capability::SysAdmin);
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(capabilities)
        .effective(loading.clone())
        .permitted(loading)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(SandboxError::Spec)?;
    let mut user = UserBuilder::default().uid(identity.uid).gid(identity.gid);
    if environment.setgroups_allowed {
        user = user.additional_gids(identity.additional_gids.clone());
    }
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .args(step.args.clone())
        .env(process_environment(step, identity))
        .cwd(step.cwd.clone())
        .user(user.build().map_err(SandboxError::Spec)?)
        .capabilities(capabilities)
        .rlimits(rlimits(step)?)
        .build()
        .map_err(SandboxError::Spec)?;
    // Unset, so libcontainer leaves the bit off (it reads only whether the field is present).
    process.set_no_new_privileges(None);
    let namespaces = [LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts, LinuxNamespaceType::Mount]
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build().map_err(SandboxError::Spec))
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = oci_spec::runtime::Linux::default();
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(environment.cgroups_path)
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(SandboxError::Spec)?;
    // The builder's default fills in an (empty) devices rule set; v1 would write devices.allow,
    // which fails rootless. As root with a v1 devices controller the runner has joined its
    // cgroups with runc's allow list already ([`super::cgroup::enter_own`]).
    linux.set_resources(None);
    SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(environment.rootfs).readonly(false).build().map_err(SandboxError::Spec)?)
        .hostname(step.hostname.clone())
        .process(process)
        .mounts(mounts(step, environment)?)
        .linux(linux)
        .build()
        .map_err(SandboxError::Spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Mount;
    use std::path::PathBuf;

    fn step(network: Network) -> StepSpec {
        StepSpec {
            lowers: vec![],
            upper: PathBuf::from("/u"),
            work: PathBuf::from("/w"),
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/src".into(),
            user: String::new(),
            hostname: "box".into(),
            network,
            mounts: vec![Mount { target: "/cache".into(), kind: MountKind::Tmpfs { size: Some(4096) } }],
            rootfs: None,
            ulimits: vec![],
            shm_size: None,
        }
    }

    fn identity() -> Identity {
        Identity { uid: 1000, gid: 1000, additional_gids: vec![10], home: "/home/u".into() }
    }

    fn environment(mapped: bool) -> Environment<'static> {
        Environment {
            rootfs: Path::new("/rootfs"),
            cgroups_path: "/rbuild/1",
            tty_group_mapped: mapped,
            setgroups_allowed: mapped,
            device_guard: DeviceGuard::UserNamespace,
        }
    }

    #[test]
    fn the_device_guard_shapes_capabilities_and_mounts() {
        let guarded = |guard: DeviceGuard| {
            let environment = Environment { device_guard: guard, ..environment(true) };
            build(&step(Network::Host), &identity(), &environment).unwrap()
        };
        // The runner joined the devices cgroup itself: libcontainer gets no rules to write.
        let cgroup = guarded(DeviceGuard::DevicesCgroup);
        assert!(cgroup.linux().as_ref().unwrap().resources().is_none());
        let bounding = |spec: &Spec| spec.process().as_ref().unwrap().capabilities().as_ref().unwrap().bounding().clone().unwrap();
        assert!(bounding(&cgroup).contains(&Capability::Mknod));
        let no_mknod = guarded(DeviceGuard::NoMknod);
        assert!(no_mknod.linux().as_ref().unwrap().resources().is_none());
        assert!(!bounding(&no_mknod).contains(&Capability::Mknod));
        assert!(guarded(DeviceGuard::UserNamespace).linux().as_ref().unwrap().resources().is_none());
    }

    #[test]
    fn spec_has_the_documented_fields() {
        let spec = build(&step(Network::None), &identity(), &environment(true)).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.resources().is_none());
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/rbuild/1")));
        let types: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|namespace| namespace.typ()).collect();
        assert_eq!(types, [LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts, LinuxNamespaceType::Mount]);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[10][..]));
        assert_eq!(process.env().as_ref().unwrap().last().map(String::as_str), Some("HOME=/home/u"));
        let capabilities = process.capabilities().as_ref().unwrap();
        assert_eq!(capabilities.bounding().as_ref().unwrap().len(), 14);
        assert_eq!(capabilities.effective(), capabilities.permitted());
        // For the executor's seccomp load only: never in the bounding set.
        assert!(capabilities.effective().as_ref().unwrap().contains(&Capability::SysAdmin));
        assert!(!capabilities.bounding().as_ref().unwrap().contains(&Capability::SysAdmin));
        assert!(linux.seccomp().is_none());
        assert_eq!(spec.hostname().as_deref(), Some("box"));
        let destinations: Vec<_> = spec.mounts().as_ref().unwrap().iter().map(|mount| mount.destination().display().to_string()).collect();
        assert_eq!(destinations, ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/cache"]);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"gid=5\""), "{json}");
        assert!(json.contains("\"size=4096\""), "{json}");
    }

    #[test]
    fn unmapped_tty_group_drops_gid_option_and_groups() {
        let spec = build(&step(Network::None), &identity(), &environment(false)).unwrap();
        assert!(!serde_json::to_string(&spec).unwrap().contains("gid=5"));
        assert!(spec.process().as_ref().unwrap().user().additional_gids().is_none());
    }

    #[test]
    fn host_network_binds_resolver_files_read_only() {
        let spec = build(&step(Network::Host), &identity(), &environment(true)).unwrap();
        let hosts = spec.mounts().as_ref().unwrap().iter().find(|mount| mount.destination() == Path::new("/etc/hosts"));
        if Path::new("/etc/hosts").exists() {
            assert_eq!(hosts.unwrap().options().as_deref(), Some(&["rbind".to_string(), "ro".to_string()][..]));
        }
        let stubs = stub_destinations(&step(Network::Host));
        assert!(stubs.contains(&("/cache".to_string(), StubKind::Directory)));
        for (path, _) in stubs.iter().filter(|(path, _)| path != "/cache") {
            assert!(
                crate::sandbox::STUBS.contains(&path.as_str()) || crate::sandbox::KEPT_MOUNT_POINTS.contains(&path.as_str()),
                "{path} missing from STUBS and KEPT_MOUNT_POINTS"
            );
        }
    }
}
