//! The step's root filesystem: an overlay of the snapshot directories, mounted by the runner in its
//! own mount namespace (so the mount disappears with the runner, whatever kills it).
//!
//! Which snapshotter a build uses is decided here too ([`snapshotter`]): overlay where it works,
//! the copying snapshotter elsewhere, `RBUILD_SNAPSHOTTER` to force either.
//!
//! `userxattr` is always set: the store marks opaque directories with `user.overlay.opaque`, and
//! inside a user namespace overlayfs without it accepts the mount but fails to delete directories
//! (EIO). Lower directories are passed through short relative symlinks (`l/0`, `l/1`, ...) from the
//! runner's temp dir, which keeps the option string far below the one-page mount data limit and
//! sidesteps escaping of `:` and `,` in store paths. With no lower, an empty directory of the temp
//! dir is the single lower (overlayfs needs at least one).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::SandboxError;

/// Mounts the overlay at `target`. `scratch` is a directory of the runner's temp dir for the
/// symlinks and the empty lower; the process cwd is set to it (the runner is single-threaded).
pub(crate) fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    scratch: &Path,
    nodev: bool,
) -> Result<(), SandboxError> {
    let options = prepare_options(lowers, upper, work, scratch)?;
    std::env::set_current_dir(scratch).map_err(|error| SandboxError::io(format!("enter `{}`", scratch.display()), error))?;
    let flags = if nodev { MsFlags::MS_NODEV } else { MsFlags::empty() };
    // `volatile`: the store syncs what it keeps when it commits the step's layer; a step's
    // `fsync` calls, which only make the data durable, return at once.
    mount_volatile(target, flags, &options)
        .map_err(|error| SandboxError::syscall(format!("mount the overlay on `{}` ({options})", target.display()), error))
}

/// Mounts an overlay with `options` and `volatile` (Linux 5.10; without it where refused): a
/// volatile overlay never syncs its upper filesystem, above all not when it is unmounted, which
/// otherwise is a `syncfs` of that whole filesystem (the state root's in every step's exit; 31 ms
/// measured for the probe's unmount during a build's first step).
fn mount_volatile(target: &Path, flags: MsFlags, options: &str) -> nix::Result<()> {
    let volatile = format!("{options},volatile");
    mount(Some("overlay"), target, Some("overlay"), flags, Some(volatile.as_str())).or_else(|error| match error {
        nix::errno::Errno::EINVAL => mount(Some("overlay"), target, Some("overlay"), flags, Some(options)),
        other => Err(other),
    })
}

/// Creates the lower symlinks in `scratch` and returns the mount options, relative to `scratch`.
fn prepare_options(lowers: &[PathBuf], upper: &Path, work: &Path, scratch: &Path) -> Result<String, SandboxError> {
    for path in [upper, work] {
        let text = path.to_string_lossy();
        if !path.is_absolute() || text.contains([',', ':', '\\']) {
            return Err(SandboxError::InvalidStep { reason: format!("overlay directory `{text}` must be absolute without `,` `:` `\\`") });
        }
    }
    let links = scratch.join("l");
    super::create_directory(&links)?;
    let lower_names: Vec<String> = if lowers.is_empty() {
        let empty = scratch.join("empty");
        super::create_directory(&empty)?;
        vec!["empty".to_string()]
    } else {
        // overlayfs lists the topmost lower first; the spec lists the bottom first.
        let mut names = Vec::with_capacity(lowers.len());
        for (index, lower) in distinct_from_top(lowers) {
            let name = format!("l/{index}");
            std::os::unix::fs::symlink(lower, scratch.join(&name))
                .map_err(|error| SandboxError::io(format!("link lower `{}`", lower.display()), error))?;
            names.push(name);
        }
        names
    };
    Ok(overlay_options(&lower_names, upper, work))
}

/// The lowers, topmost first, each directory once (at its topmost place), with their indexes in
/// `lowers`. overlayfs refuses a directory that appears twice among the lowers (ELOOP), which the
/// same snapshot does whenever a layer repeats (two RUN steps that change nothing share the empty
/// snapshot). Dropping the lower copies keeps the merged view: everything a lower copy holds,
/// whiteouts and opaque markers included, the upper copy holds too, and it covers every layer
/// the lower one did.
fn distinct_from_top(lowers: &[PathBuf]) -> Vec<(usize, &PathBuf)> {
    let mut seen = std::collections::HashSet::new();
    lowers.iter().enumerate().rev().filter(|(_, lower)| seen.insert(lower.as_path())).collect()
}

pub(crate) fn overlay_options(lower_names: &[String], upper: &Path, work: &Path) -> String {
    format!("lowerdir={},upperdir={},workdir={},userxattr", lower_names.join(":"), upper.display(), work.display())
}

/// Whether overlay mounts (with `userxattr`, deleting a lower directory) work here. Probed once
/// in the system temp dir, in this process's mount namespace, so call it after [`super::enter`].
pub fn overlay_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let supported = probe(&std::env::temp_dir());
        if let Err(error) = &supported {
            tracing::debug!(%error, "overlay probe failed");
        }
        supported.unwrap_or(false)
    })
}

fn probe(base: &Path) -> Result<bool, SandboxError> {
    let directory = tempfile::Builder::new()
        .prefix("rbuild-overlay-probe-")
        .tempdir_in(base)
        .map_err(|error| SandboxError::io("create the overlay probe directory", error))?;
    let root = directory.path();
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|name| root.join(name));
    for path in [&lower, &upper, &work, &merged] {
        fs::create_dir(path).map_err(|error| SandboxError::io("create the overlay probe directory", error))?;
    }
    fs::create_dir_all(lower.join("directory/inner")).map_err(|error| SandboxError::io("fill the overlay probe directory", error))?;
    let options = overlay_options(&[lower.display().to_string()], &upper, &work);
    mount_volatile(&merged, MsFlags::empty(), &options).map_err(|error| SandboxError::syscall("mount the probe overlay", error))?;
    let deleted = fs::remove_dir_all(merged.join("directory")).is_ok();
    let _ = umount2(&merged, MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(&work);
    Ok(deleted && upper.join("directory").exists())
}

/// How the root filesystem of a step is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshotter {
    /// An overlay of the snapshot directories; the upperdir is the diff.
    Overlay,
    /// A plain copy of the snapshot directories ([`super::StepSpec::rootfs`]); the diff is
    /// computed afterwards by comparing the copy with the snapshots.
    Copy,
}

/// The environment variable that forces a snapshotter: `overlay` or `copy` (empty or `auto`:
/// decide by probing).
pub const SNAPSHOTTER_VARIABLE: &str = "RBUILD_SNAPSHOTTER";

/// The snapshotter for this process: `RBUILD_SNAPSHOTTER` when set, else overlay when
/// [`overlay_supported`] (probed once), else copy. Call it after [`super::enter`], like the probe.
pub fn snapshotter() -> Result<Snapshotter, SandboxError> {
    let value = std::env::var(SNAPSHOTTER_VARIABLE).unwrap_or_default();
    choose_snapshotter(&value, overlay_supported)
}

fn choose_snapshotter(value: &str, supported: impl FnOnce() -> bool) -> Result<Snapshotter, SandboxError> {
    match value.trim() {
        "overlay" | "overlayfs" => Ok(Snapshotter::Overlay),
        "copy" | "native" => Ok(Snapshotter::Copy),
        "" | "auto" => Ok(if supported() { Snapshotter::Overlay } else { Snapshotter::Copy }),
        other => Err(SandboxError::UnknownSnapshotter { value: other.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshotter_variable_wins_over_the_probe() {
        let never = || -> bool { panic!("the probe must not run when the variable decides") };
        assert_eq!(choose_snapshotter("copy", never).unwrap(), Snapshotter::Copy);
        assert_eq!(choose_snapshotter("overlay", never).unwrap(), Snapshotter::Overlay);
        assert_eq!(choose_snapshotter("", || true).unwrap(), Snapshotter::Overlay);
        assert_eq!(choose_snapshotter("auto", || false).unwrap(), Snapshotter::Copy);
        assert!(matches!(
            choose_snapshotter("zfs", || true),
            Err(SandboxError::UnknownSnapshotter { value }) if value == "zfs"
        ));
    }

    #[test]
    fn lowers_are_linked_top_first() {
        let scratch = tempfile::tempdir().unwrap();
        let lowers = [PathBuf::from("/store/bottom"), PathBuf::from("/store/top")];
        let options = prepare_options(&lowers, Path::new("/store/upper"), Path::new("/store/work"), scratch.path()).unwrap();
        assert_eq!(options, "lowerdir=l/1:l/0,upperdir=/store/upper,workdir=/store/work,userxattr");
        assert_eq!(fs::read_link(scratch.path().join("l/1")).unwrap(), PathBuf::from("/store/top"));
        assert_eq!(fs::read_link(scratch.path().join("l/0")).unwrap(), PathBuf::from("/store/bottom"));
    }

    /// Regression: two RUN steps that changed nothing, then a third, failed with ELOOP because
    /// the empty snapshot was a lower twice.
    #[test]
    fn a_repeated_lower_is_listed_once_at_its_topmost_place() {
        let scratch = tempfile::tempdir().unwrap();
        let lowers = ["/s/base", "/s/empty", "/s/a", "/s/empty"].map(PathBuf::from);
        let options = prepare_options(&lowers, Path::new("/u"), Path::new("/w"), scratch.path()).unwrap();
        assert_eq!(options, "lowerdir=l/3:l/2:l/0,upperdir=/u,workdir=/w,userxattr");
        assert_eq!(fs::read_link(scratch.path().join("l/3")).unwrap(), PathBuf::from("/s/empty"));
        assert!(!scratch.path().join("l/1").exists());
    }

    #[test]
    fn scratch_uses_an_empty_lower() {
        let scratch = tempfile::tempdir().unwrap();
        let options = prepare_options(&[], Path::new("/u"), Path::new("/w"), scratch.path()).unwrap();
        assert_eq!(options, "lowerdir=empty,upperdir=/u,workdir=/w,userxattr");
        assert!(scratch.path().join("empty").is_dir());
    }

    #[test]
    fn separators_in_upper_are_rejected() {
        let scratch = tempfile::tempdir().unwrap();
        let error = prepare_options(&[], Path::new("/a:b"), Path::new("/w"), scratch.path()).unwrap_err();
        assert!(matches!(error, SandboxError::InvalidStep { .. }));
    }
}
