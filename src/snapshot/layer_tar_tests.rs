//! Tests of `layer_tar.rs`, kept apart so the module itself stays readable.

use super::*;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(euid, 0, "this test needs root (mknod of devices, chown): run it as root");
}

fn set_mtime(path: &Path, seconds: i64) {
    crate::snapshot::flatten::set_times(path, seconds, 123_456_789).unwrap();
}

fn write_to_vec(dir: &Path, options: &LayerTarOptions) -> (Vec<u8>, LayerTarSummary) {
    let mut bytes = Vec::new();
    let summary = write_layer_tar(dir, &mut bytes, options).unwrap();
    (bytes, summary)
}

/// (name, type flag, mode, uid, gid, mtime, size, link name) of one entry.
type Listed = (String, u8, u32, u64, u64, u64, u64, String);

/// Every entry, read by the tar crate.
fn list(bytes: &[u8]) -> Vec<Listed> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let header = entry.header();
            (
                String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
                header.entry_type().as_byte(),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
                header.mtime().unwrap(),
                header.size().unwrap(),
                entry.link_name_bytes().map(|name| String::from_utf8(name.into_owned()).unwrap()).unwrap_or_default(),
            )
        })
        .collect()
}

fn names(bytes: &[u8]) -> Vec<String> {
    list(bytes).into_iter().map(|entry| entry.0).collect()
}

/// A tree with most kinds of entries; mtimes are fixed (with nanoseconds).
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::create_dir(root.join("a-b")).unwrap();
    fs::write(root.join("a/b/file"), b"hello").unwrap();
    fs::write(root.join("a/z"), b"").unwrap();
    fs::write(root.join("top"), vec![7u8; 1500]).unwrap();
    fs::set_permissions(root.join("top"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("a-b"), fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("a/b/file", root.join("link")).unwrap();
    fs::hard_link(root.join("a/b/file"), root.join("hard")).unwrap();
    nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    std::os::unix::fs::lchown(root.join("a/z"), Some(1234), Some(5678)).unwrap();
    xattr::set(root.join("top"), "user.note", b"with\nnewline\0and nul").unwrap();
    let long_name = "d".repeat(120);
    fs::create_dir_all(root.join("a").join(&long_name)).unwrap();
    fs::write(root.join("a").join(&long_name).join("e".repeat(110)), b"long").unwrap();
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        set_mtime(entry.unwrap().path(), 1_700_000_000);
    }
}

#[test]
fn two_writes_of_one_tree_are_byte_identical_and_match_the_diff_id() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let (first, summary) = write_to_vec(dir.path(), &LayerTarOptions::default());
    let (second, _) = write_to_vec(dir.path(), &LayerTarOptions::default());
    assert_eq!(first, second);
    assert_eq!(summary.bytes, first.len() as u64);
    assert_eq!(summary.diff_id.digest(), &crate::oci::Digest::sha256_of(&first));
    assert_eq!(summary.entries, names(&first).len() as u64);
    assert_eq!(first.len() % 512, 0);
    // The walk measured the tree as `cache du` measures one, hard links once.
    assert_eq!(summary.apparent_size, crate::store::usage::tree_size(dir.path()).unwrap());
}

#[test]
fn entries_are_walked_depth_first_in_name_order_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let (bytes, _) = write_to_vec(dir.path(), &LayerTarOptions::default());
    let long_dir = format!("a/{}/", "d".repeat(120));
    let long_file = format!("{long_dir}{}", "e".repeat(110));
    assert_eq!(
        names(&bytes),
        vec![
            "a/".to_string(),
            "a/b/".into(),
            "a/b/file".into(),
            long_dir,
            long_file,
            "a/z".into(),
            "a-b/".into(),
            "fifo".into(),
            "hard".into(),
            "link".into(),
            "top".into(),
        ]
    );
    let entries = list(&bytes);
    let find = |name: &str| entries.iter().find(|entry| entry.0 == name).unwrap().clone();
    let hard = find("hard");
    assert_eq!((hard.1, hard.6, hard.7.as_str()), (b'1', 0, "a/b/file"));
    let link = find("link");
    assert_eq!((link.1, link.7.as_str()), (b'2', "a/b/file"));
    assert_eq!(find("top").2, 0o4755);
    assert_eq!(find("top").6, 1500);
    assert_eq!(find("a-b/").2, 0o1777);
    assert_eq!(find("fifo").1, b'6');
    let z = find("a/z");
    assert_eq!((z.3, z.4, z.5), (1234, 5678, 1_700_000_000));
    // No user or group names, USTAR magic.
    let header = tar::Header::from_byte_slice(&bytes[..512]);
    assert_eq!(header.username_bytes(), Some(&b""[..]));
    assert_eq!(header.groupname_bytes(), Some(&b""[..]));
    assert_eq!(&bytes[257..265], b"ustar\x0000");
}

#[test]
fn pax_headers_carry_long_names_and_binary_xattrs_without_times() {
    let dir = tempfile::tempdir().unwrap();
    build_tree(dir.path());
    let (bytes, _) = write_to_vec(dir.path(), &LayerTarOptions::default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(" SCHILY.xattr.user.note=with\nnewline\0and nul\n"));
    assert!(!text.contains("atime="));
    assert!(!text.contains("ctime="));
    assert!(!text.contains("mtime="), "sub-second times must not be written");
    // The 110-byte file name cannot be split into USTAR prefix and name.
    assert!(text.contains(&format!(" path=a/{}/{}\n", "d".repeat(120), "e".repeat(110))));
    // GNU tar reads the same names (it understands PAX).
    let work = tempfile::tempdir().unwrap();
    let tar_path = work.path().join("layer.tar");
    fs::write(&tar_path, &bytes).unwrap();
    let output = Command::new("tar").arg("-tf").arg(&tar_path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(listed.lines().collect::<Vec<_>>(), names(&bytes));
}

#[test]
fn clamp_mtime_rewrites_only_newer_times() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("old"), b"").unwrap();
    fs::write(dir.path().join("new"), b"").unwrap();
    set_mtime(&dir.path().join("old"), 1000);
    set_mtime(&dir.path().join("new"), 5000);
    let options = LayerTarOptions { clamp_mtime: Some(2000) };
    let (bytes, _) = write_to_vec(dir.path(), &options);
    let times: Vec<(String, u64)> = list(&bytes).into_iter().map(|entry| (entry.0, entry.5)).collect();
    assert_eq!(times, vec![("new".to_string(), 2000), ("old".to_string(), 1000)]);
    // Touching a file newer than the clamp does not change the layer.
    set_mtime(&dir.path().join("new"), 9000);
    assert_eq!(write_to_vec(dir.path(), &options).0, bytes);
    assert_ne!(write_to_vec(dir.path(), &LayerTarOptions::default()).0, bytes);
}

#[test]
fn whiteouts_and_opaque_directories_become_oci_markers() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir(root.join("opaque")).unwrap();
    fs::create_dir(root.join("trusted")).unwrap();
    fs::write(root.join("opaque/kept"), b"x").unwrap();
    for (path, mode) in [("opaque", 0o755), ("trusted", 0o755), ("opaque/kept", 0o644)] {
        fs::set_permissions(root.join(path), fs::Permissions::from_mode(mode)).unwrap();
    }
    xattr::set(root.join("opaque"), "user.overlay.opaque", b"y").unwrap();
    xattr::set(root.join("trusted"), "trusted.overlay.opaque", b"y").unwrap();
    xattr::set(root.join("opaque"), "user.overlay.origin", b"junk").unwrap();
    nix::sys::stat::mknod(&root.join("gone"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
    std::os::unix::fs::lchown(root.join("gone"), Some(7), Some(8)).unwrap();
    nix::sys::stat::mknod(
        &root.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(root.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        set_mtime(entry.unwrap().path(), 1_600_000_000);
    }
    let (bytes, _) = write_to_vec(root, &LayerTarOptions::default());
    let entries = list(&bytes);
    let summary: Vec<(&str, u8, u32, u64)> = entries.iter().map(|entry| (entry.0.as_str(), entry.1, entry.2, entry.3)).collect();
    assert_eq!(
        summary,
        vec![
            (".wh.gone", b'0', 0o600, 7),
            ("null", b'3', 0o666, 0),
            ("opaque/", b'5', 0o755, 0),
            ("opaque/.wh..wh..opq", b'0', 0o755, 0),
            ("opaque/kept", b'0', 0o644, 0),
            ("trusted/", b'5', 0o755, 0),
            ("trusted/.wh..wh..opq", b'0', 0o755, 0),
        ]
    );
    assert!(entries.iter().all(|entry| entry.5 == 1_600_000_000));
    let null = tar::Header::from_byte_slice(&bytes[512..1024]);
    assert_eq!((null.device_major().unwrap(), null.device_minor().unwrap()), (Some(1), Some(3)));
    assert!(!String::from_utf8_lossy(&bytes).contains("overlay"), "overlay xattrs must not be written");
}

#[test]
fn empty_layer_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    assert!(is_empty_layer(dir.path()).unwrap());
    let (bytes, summary) = write_to_vec(dir.path(), &LayerTarOptions::default());
    assert_eq!((bytes.len(), summary.entries), (1024, 0));
    fs::write(dir.path().join("file"), b"").unwrap();
    assert!(!is_empty_layer(dir.path()).unwrap());
}

#[test]
fn ustar_split_follows_go() {
    let mut header = tar::Header::new_ustar();
    let name = format!("{}/{}", "p".repeat(150), "n".repeat(90));
    assert!(set_ustar_name(&mut header, name.as_bytes()));
    assert_eq!(header.path_bytes().as_ref(), name.as_bytes());
    let mut header = tar::Header::new_ustar();
    assert!(!set_ustar_name(&mut header, "x".repeat(101).as_bytes()));
}
