//! Tests of `tree_diff.rs`, kept apart so the module itself stays readable.

use super::*;
use std::io::Read;
use std::os::unix::ffi::OsStringExt;

use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
use crate::snapshot::view;

const FROZEN: i64 = 1_600_000_000;

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn whiteout(path: &Path) {
    nix::sys::stat::mknod(path, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .expect("mknod needs root (tests run as root)");
}

/// Whole-second mtimes on everything, as layers extracted from image tars have.
fn freeze_times(root: &Path) {
    for entry in walkdir::WalkDir::new(root).min_depth(1).contents_first(true) {
        set_times(entry.unwrap().path(), FROZEN, 0).unwrap();
    }
}

/// Two snapshot directories in overlay format, bottom first.
fn lowers() -> (tempfile::TempDir, tempfile::TempDir) {
    let base = tempfile::tempdir().unwrap();
    let root = base.path();
    write(&root.join("bin/tool"), "tool");
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    write(&root.join("etc/config"), "old config");
    write(&root.join("etc/obsolete"), "x");
    write(&root.join("etc/hosts.base"), "hosts");
    write(&root.join("etc/xattrfile"), "x");
    xattr::set(root.join("etc/xattrfile"), "user.test", b"old").unwrap();
    write(&root.join("etc/removed"), "removed by the second layer");
    write(&root.join("home/user/file"), "f");
    lchown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
    write(&root.join("var/cache/apt/pkg"), "p");
    write(&root.join("var/cache/index"), "i");
    write(&root.join("var/log/hidden"), "hidden by an opaque directory");
    write(&root.join("opt/thing"), "thing");
    write(&root.join("srv/data/inner"), "inner");
    write(&root.join("usr/lib/a"), "linked");
    fs::hard_link(root.join("usr/lib/a"), root.join("usr/lib/b")).unwrap();
    write(&root.join("emptied/one"), "1");
    write(&root.join("emptied/two"), "2");
    fs::create_dir_all(root.join("dev")).unwrap();
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    fs::create_dir_all(root.join("tagged")).unwrap();
    xattr::set(root.join("tagged"), "user.tag", b"directory").unwrap();
    symlink("usr/lib", root.join("lib")).unwrap();
    freeze_times(root);

    let second = tempfile::tempdir().unwrap();
    let root = second.path();
    fs::create_dir_all(root.join("etc")).unwrap();
    whiteout(&root.join("etc/removed"));
    write(&root.join("var/log/new.log"), "log");
    xattr::set(root.join("var/log"), "user.overlay.opaque", b"y").unwrap();
    write(&root.join("etc/config"), "old config"); // same size as below: the top one counts
    freeze_times(root);
    set_times(&root.join("etc/config"), FROZEN + 5, 0).unwrap();
    set_times(&root.join("etc"), FROZEN, 0).unwrap();
    (base, second)
}

fn view_of(layers: &[&Path]) -> LayeredView {
    LayeredView::new(layers.iter().map(|path| path.to_path_buf()))
}

/// The same changes, done on the copy or through an overlay mount.
fn apply_changes(root: &Path) {
    fs::write(root.join("new.txt"), "new").unwrap();
    fs::write(root.join("etc/config"), "new config, longer").unwrap();
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    lchown(root.join("home/user/file"), Some(1000), Some(1000)).unwrap();
    fs::remove_file(root.join("etc/obsolete")).unwrap();
    fs::remove_dir_all(root.join("var/cache")).unwrap();
    fs::remove_file(root.join("opt/thing")).unwrap();
    fs::create_dir(root.join("opt/thing")).unwrap();
    fs::write(root.join("opt/thing/child"), "child").unwrap();
    fs::remove_dir_all(root.join("srv/data")).unwrap();
    fs::write(root.join("srv/data"), "now a file").unwrap();
    symlink("../etc/config", root.join("usr/link")).unwrap();
    fs::write(root.join("usr/one"), "pair").unwrap();
    fs::hard_link(root.join("usr/one"), root.join("usr/two")).unwrap();
    fs::hard_link(root.join("etc/hosts.base"), root.join("etc/hosts.link")).unwrap();
    xattr::set(root.join("etc/xattrfile"), "user.test", b"new").unwrap();
}

#[derive(Debug, PartialEq, Eq)]
struct TreeEntry {
    path: PathBuf,
    kind: u32,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, i64),
    content: Vec<u8>,
    xattrs: Xattrs,
    device: u64,
    /// The first path (in walk order) of the same inode, for hard links.
    first_link: PathBuf,
}

fn tree(root: &Path) -> Vec<TreeEntry> {
    let mut first_paths: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut entries = Vec::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let relative = path.strip_prefix(root).unwrap().to_path_buf();
        let metadata = fs::symlink_metadata(path).unwrap();
        let file_type = metadata.file_type();
        let content = if file_type.is_symlink() {
            fs::read_link(path).unwrap().into_os_string().into_vec()
        } else if file_type.is_file() {
            fs::read(path).unwrap()
        } else {
            Vec::new()
        };
        let first_link = if metadata.is_dir() {
            relative.clone()
        } else {
            first_paths.entry((metadata.dev(), metadata.ino())).or_insert_with(|| relative.clone()).clone()
        };
        entries.push(TreeEntry {
            kind: metadata.mode() & libc::S_IFMT,
            mode: metadata.mode() & 0o7777,
            owner: (metadata.uid(), metadata.gid()),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            content,
            xattrs: content_xattrs(path).unwrap(),
            device: if file_type.is_char_device() || file_type.is_block_device() { metadata.rdev() } else { 0 },
            first_link,
            path: relative,
        });
    }
    entries
}

fn assert_same_trees(expected: &Path, actual: &Path) {
    let expected = tree(expected);
    let actual = tree(actual);
    for (left, right) in expected.iter().zip(&actual) {
        assert_eq!(left, right);
    }
    assert_eq!(expected.len(), actual.len(), "{expected:#?}\n{actual:#?}");
}

fn names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(directory).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn an_untouched_copy_diffs_as_empty() {
    let (base, second) = lowers();
    let view = view_of(&[base.path(), second.path()]);
    let changed = tempfile::tempdir().unwrap();
    let prepared = prepare_rootfs(&view, changed.path()).unwrap();
    let root = fs::metadata(changed.path()).unwrap();
    assert_eq!((root.mode() & 0o7777, root.uid(), root.gid()), (0o755, 0, 0));
    assert_eq!(xattr::get(changed.path().join("tagged"), "user.tag").unwrap().unwrap(), b"directory");
    assert!(!changed.path().join("etc/removed").exists());
    assert_eq!(names(&changed.path().join("var/log")), ["new.log"]);

    let upper = tempfile::tempdir().unwrap();
    let summary = diff(&view, changed.path(), upper.path(), Some(prepared)).unwrap();
    assert_eq!(summary, DiffSummary::default());
    assert!(names(upper.path()).is_empty());
}

#[test]
fn scripted_changes_round_trip_through_a_layered_view() {
    let (base, second) = lowers();
    let view = view_of(&[base.path(), second.path()]);
    let changed = tempfile::tempdir().unwrap();
    let prepared = prepare_rootfs(&view, changed.path()).unwrap();
    apply_changes(changed.path());
    // Beyond the overlay script: every entry of a directory removed one by one.
    fs::remove_file(changed.path().join("emptied/one")).unwrap();
    fs::remove_file(changed.path().join("emptied/two")).unwrap();
    fs::write(changed.path().join("emptied/three"), "3").unwrap();
    // A directory whose own metadata alone changed.
    fs::set_permissions(changed.path().join("tagged"), fs::Permissions::from_mode(0o700)).unwrap();

    let upper = tempfile::tempdir().unwrap();
    let summary = diff(&view, changed.path(), upper.path(), Some(prepared)).unwrap();

    let upper_root = upper.path();
    assert_eq!(names(upper_root), ["bin", "emptied", "etc", "home", "new.txt", "opt", "srv", "tagged", "usr", "var"]);
    assert_eq!(names(&upper_root.join("etc")), ["config", "hosts.base", "hosts.link", "obsolete", "xattrfile"]);
    assert!(view::is_whiteout(&fs::symlink_metadata(upper_root.join("etc/obsolete")).unwrap()));
    assert!(view::is_whiteout(&fs::symlink_metadata(upper_root.join("var/cache")).unwrap()));
    assert_eq!(names(&upper_root.join("var")), ["cache"]);
    assert!(view::is_opaque(&upper_root.join("emptied")));
    assert_eq!(names(&upper_root.join("emptied")), ["three"]);
    assert!(view::is_opaque(&upper_root.join("opt/thing")));
    assert!(!view::is_opaque(&upper_root.join("etc")));
    assert!(upper_root.join("srv/data").is_file());
    assert_eq!(names(&upper_root.join("usr")), ["link", "one", "two"]);
    assert!(names(&upper_root.join("tagged")).is_empty());
    let hosts = fs::metadata(upper_root.join("etc/hosts.base")).unwrap();
    assert_eq!(hosts.ino(), fs::metadata(upper_root.join("etc/hosts.link")).unwrap().ino());
    assert_eq!(hosts.mtime(), FROZEN);
    assert_eq!(
        summary,
        // added: new.txt, hosts.link, opt/thing/child, usr/link, usr/one, usr/two, emptied/three;
        // modified: config, tool, file, xattrfile, opt/thing, srv/data, tagged, hosts.base
        // (a new link changed its ctime: overlay copies it up too), and the directories whose
        // entries changed (etc, var, opt, srv, usr, emptied);
        // deleted: obsolete, var/cache, emptied (opaque).
        DiffSummary { added: 7, modified: 14, deleted: 3 }
    );

    let merged = tempfile::tempdir().unwrap();
    let stacked = view_of(&[base.path(), second.path(), upper_root]);
    // prepare_rootfs rather than bare flatten, which leaves directory xattrs behind.
    prepare_rootfs(&stacked, merged.path()).unwrap();
    assert_same_trees(changed.path(), merged.path());
}

/// An overlay mount, unmounted on drop (also when a test fails).
struct OverlayMount(PathBuf);

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct TarEntry {
    name: Vec<u8>,
    kind: u8,
    mode: u32,
    owner: (u64, u64),
    size: u64,
    link: Vec<u8>,
    xattrs: Xattrs,
    content: Vec<u8>,
}

/// The layer tar of a snapshot, entry by entry; mtimes left out.
fn layer_entries(snapshot: &Path) -> Vec<TarEntry> {
    let mut bytes = Vec::new();
    write_layer_tar(snapshot, &mut bytes, &LayerTarOptions::default()).unwrap();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for extension in extensions {
                let extension = extension.unwrap();
                if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), extension.value_bytes().to_vec()));
                }
            }
        }
        let header = entry.header().clone();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        entries.push(TarEntry {
            name: entry.path_bytes().into_owned(),
            kind: header.entry_type().as_byte(),
            mode: header.mode().unwrap(),
            owner: (header.uid().unwrap(), header.gid().unwrap()),
            size: header.size().unwrap(),
            link: entry.link_name_bytes().map(|link| link.into_owned()).unwrap_or_default(),
            xattrs,
            content,
        });
    }
    entries
}

#[test]
fn overlay_and_tree_diff_write_the_same_layer() {
    let (base, second) = lowers();
    let view = view_of(&[base.path(), second.path()]);

    let copy = tempfile::tempdir().unwrap();
    let prepared = prepare_rootfs(&view, copy.path()).unwrap();
    apply_changes(copy.path());
    let tree_upper = tempfile::tempdir().unwrap();
    diff(&view, copy.path(), tree_upper.path(), Some(prepared)).unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let [overlay_upper, work, merged] = ["upper", "work", "merged"].map(|name| scratch.path().join(name));
    for path in [&overlay_upper, &work, &merged] {
        fs::create_dir(path).unwrap();
    }
    let options = format!(
        "lowerdir={}:{},upperdir={},workdir={},userxattr",
        second.path().display(),
        base.path().display(),
        overlay_upper.display(),
        work.display()
    );
    nix::mount::mount(Some("overlay"), &merged, Some("overlay"), nix::mount::MsFlags::empty(), Some(options.as_str()))
        .expect("overlay mounts need root (tests run as root)");
    let mount = OverlayMount(merged.clone());
    apply_changes(&merged);
    drop(mount);

    let from_overlay = layer_entries(&overlay_upper);
    let from_tree_diff = layer_entries(tree_upper.path());
    let listing =
        |entries: &[TarEntry]| -> Vec<String> { entries.iter().map(|entry| String::from_utf8_lossy(&entry.name).into_owned()).collect() };
    assert_eq!(listing(&from_tree_diff), listing(&from_overlay));
    for (tree_entry, overlay_entry) in from_tree_diff.iter().zip(&from_overlay) {
        assert_eq!(tree_entry, overlay_entry);
    }
    assert!(listing(&from_overlay).contains(&"opt/thing/.wh..wh..opq".to_string()));
}

/// Regression: a file rewritten with content of the same size and its mtime set back (`echo bbbb
/// > /f && touch -d @0 /f` after the same with `aaaa`; `groupadd` on `/etc/group-`) was missed.
#[test]
fn a_same_size_rewrite_with_the_old_mtime_is_a_change() {
    let lower = tempfile::tempdir().unwrap();
    fs::write(lower.path().join("f"), "aaaa\n").unwrap();
    let old = fs::symlink_metadata(lower.path().join("f")).unwrap();
    let view = view_of(&[lower.path()]);
    let changed = tempfile::tempdir().unwrap();
    let prepared = prepare_rootfs(&view, changed.path()).unwrap();
    fs::write(changed.path().join("f"), "bbbb\n").unwrap();
    set_times(&changed.path().join("f"), old.mtime(), old.mtime_nsec()).unwrap();
    let upper = tempfile::tempdir().unwrap();
    diff(&view, changed.path(), upper.path(), Some(prepared)).unwrap();
    assert_eq!(fs::read_to_string(upper.path().join("f")).unwrap(), "bbbb\n");
}
