//! Tests of `extract.rs`, kept apart so the module itself stays readable.

use super::*;
use crate::snapshot::layer_tar::{LayerTarOptions, write_layer_tar};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, symlink};
use std::process::Command;

fn require_root() {
    let euid = nix::unistd::geteuid().as_raw();
    assert_eq!(euid, 0, "this test needs root (mknod, chown to other ids): run it as root");
}

const LAYER: ExtractOptions = ExtractOptions { whiteouts: WhiteoutMode::ToOverlay, ownership: Ownership::FromArchive };
const LITERAL: ExtractOptions = ExtractOptions { whiteouts: WhiteoutMode::Literal, ownership: Ownership::FromArchive };

/// Builds a tar with the tar crate; each entry is (name, type, mode, uid, data or link
/// name). Names are written raw (no cleaning), GNU headers so long and odd names pass.
fn build(entries: &[(&str, tar::EntryType, u32, u64, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, mode, uid, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(*mode);
        header.set_uid(*uid);
        header.set_gid(*uid);
        header.set_mtime(1_650_000_000);
        let name_field = &mut header.as_old_mut().name;
        name_field[..name.len()].copy_from_slice(name.as_bytes());
        if kind.is_symlink() || kind.is_hard_link() {
            header.set_link_name_literal(data).unwrap();
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &[][..]).unwrap();
        } else {
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
    }
    builder.into_inner().unwrap()
}

fn write_layer(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_layer_tar(dir, &mut bytes, &LayerTarOptions::default()).unwrap();
    bytes
}

fn set_time(path: &Path, seconds: i64) {
    let time = TimeSpec::new(seconds, 987_654_321);
    nix::sys::stat::utimensat(None, path, &time, &time, UtimensatFlags::NoFollowSymlink).unwrap();
}

fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("readonly/inner")).unwrap();
    fs::create_dir(root.join("opaque")).unwrap();
    fs::write(root.join("opaque/new"), b"new").unwrap();
    xattr::set(root.join("opaque"), "user.overlay.opaque", b"y").unwrap();
    fs::write(root.join("usr/bin/tool"), vec![1u8; 70_000]).unwrap();
    // chown clears setuid bits: chown first.
    std::os::unix::fs::lchown(root.join("usr/bin/tool"), Some(0), Some(50)).unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o6755)).unwrap();
    xattr::set(root.join("usr/bin/tool"), "user.binary", &[0, b'\n', 255, b'=', b' ']).unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/alias")).unwrap();
    fs::write(root.join("readonly/inner/file"), b"r").unwrap();
    fs::set_permissions(root.join("readonly/inner"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(root.join("readonly"), fs::Permissions::from_mode(0o500)).unwrap();
    symlink("/etc/passwd", root.join("absolute-link")).unwrap();
    symlink("usr/bin/tool", root.join("relative-link")).unwrap();
    std::os::unix::fs::lchown(root.join("relative-link"), Some(3), Some(4)).unwrap();
    mknod(&root.join("whiteout"), SFlag::S_IFCHR, 0, 0o000);
    std::os::unix::fs::lchown(root.join("whiteout"), Some(12), Some(13)).unwrap();
    mknod(&root.join("zero"), SFlag::S_IFCHR, nix::sys::stat::makedev(1, 5), 0o666);
    mknod(&root.join("disk"), SFlag::S_IFBLK, nix::sys::stat::makedev(8, 1), 0o660);
    nix::unistd::mkfifo(&root.join("pipe"), Mode::from_bits_truncate(0o600)).unwrap();
    let deep = root.join("n".repeat(100)).join("m".repeat(100)).join("o".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("p".repeat(120)), b"deep").unwrap();
    std::os::unix::fs::lchown(root.join("n".repeat(100)), Some(3_000_000), Some(3_000_001)).unwrap();
    symlink("t".repeat(200), root.join("long-target")).unwrap();
    let mut time = 1_500_000_000;
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        time += 7;
        set_time(entry.unwrap().path(), time);
    }
}

fn mknod(path: &Path, kind: SFlag, device: u64, mode: u32) {
    nix::sys::stat::mknod(path, kind, Mode::empty(), device).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn write_extract_write_round_trips_byte_for_byte() {
    require_root();
    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    let first = write_layer(source.path());
    let target = tempfile::tempdir().unwrap();
    let summary = extract(&first[..], target.path(), &LAYER).unwrap();
    assert_eq!(summary.skipped_devices + summary.skipped_xattrs, 0);
    assert_eq!(summary.bytes, 70_000 + 3 + 1 + 4);
    let second = write_layer(target.path());
    assert_eq!(first.len(), second.len());
    assert!(first == second, "rewritten layer differs");

    let tool = fs::metadata(target.path().join("usr/bin/tool")).unwrap();
    let alias = fs::metadata(target.path().join("usr/bin/alias")).unwrap();
    assert_eq!((tool.ino(), tool.nlink(), tool.mode() & 0o7777, tool.gid()), (alias.ino(), 2, 0o6755, 50));
    assert_eq!(xattr::get(target.path().join("usr/bin/tool"), "user.binary").unwrap().unwrap(), vec![0, b'\n', 255, b'=', b' ']);
    let whiteout = fs::symlink_metadata(target.path().join("whiteout")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!((whiteout.rdev(), whiteout.uid(), whiteout.mode() & 0o7777), (0, 12, 0));
    assert_eq!(xattr::get(target.path().join("opaque"), "user.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    assert_eq!(fs::read_link(target.path().join("absolute-link")).unwrap(), Path::new("/etc/passwd"));
    assert_eq!(fs::metadata(target.path().join("readonly")).unwrap().mode() & 0o7777, 0o500);
}

#[test]
fn layer_whiteout_markers_become_overlay_whiteouts() {
    require_root();
    let archive = build(&[
        ("dir/", tar::EntryType::Directory, 0o755, 0, b""),
        ("dir/.wh..wh..opq", tar::EntryType::Regular, 0o755, 0, b""),
        ("dir/kept", tar::EntryType::Regular, 0o644, 0, b"k"),
        (".wh.removed", tar::EntryType::Regular, 0o600, 5, b""),
        // A whiteout for a name of this same layer does not hide it.
        ("same", tar::EntryType::Regular, 0o644, 0, b"s"),
        (".wh.same", tar::EntryType::Regular, 0o600, 0, b""),
        ("other/.wh..wh.plnk", tar::EntryType::Regular, 0o600, 0, b""),
    ]);
    let target = tempfile::tempdir().unwrap();
    extract(&archive[..], target.path(), &LAYER).unwrap();
    let removed = fs::symlink_metadata(target.path().join("removed")).unwrap();
    assert!(removed.file_type().is_char_device());
    assert_eq!((removed.rdev(), removed.uid(), removed.mtime()), (0, 5, 1_650_000_000));
    assert!(!target.path().join(".wh.removed").exists());
    assert_eq!(fs::read(target.path().join("same")).unwrap(), b"s");
    assert_eq!(xattr::get(target.path().join("dir"), "user.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    assert!(!target.path().join("dir/.wh..wh..opq").exists());
    assert!(fs::read_dir(target.path().join("other")).unwrap().next().is_none());

    // ADD keeps the names literally.
    let literal = tempfile::tempdir().unwrap();
    extract(&archive[..], literal.path(), &LITERAL).unwrap();
    assert!(literal.path().join(".wh.removed").is_file());
    assert!(literal.path().join("dir/.wh..wh..opq").is_file());
    assert!(!literal.path().join("removed").exists());
    assert_eq!(xattr::get(literal.path().join("dir"), "user.overlay.opaque").unwrap(), None);
}

#[test]
fn names_with_dot_dot_and_absolute_names_stay_inside() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("root");
    fs::create_dir(&target).unwrap();
    let archive = build(&[
        ("../../escape", tar::EntryType::Regular, 0o644, 0, b"1"),
        ("/absolute", tar::EntryType::Regular, 0o644, 0, b"2"),
        ("./a/../../../b", tar::EntryType::Regular, 0o644, 0, b"3"),
    ]);
    extract(&archive[..], &target, &LITERAL).unwrap();
    let mut names: Vec<_> = fs::read_dir(&target).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, vec!["absolute", "b", "escape"]);
    assert_eq!(fs::read_dir(outer.path()).unwrap().count(), 1, "nothing written beside the root");
}

#[test]
fn a_file_through_a_symlink_is_refused() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("root");
    let victim = outer.path().join("victim");
    fs::create_dir(&target).unwrap();
    fs::create_dir(&victim).unwrap();
    let victim_name = victim.to_str().unwrap().as_bytes();
    for archive in [
        build(&[("evil", tar::EntryType::Symlink, 0o777, 0, victim_name), ("evil/planted", tar::EntryType::Regular, 0o644, 0, b"x")]),
        build(&[("up", tar::EntryType::Symlink, 0o777, 0, b"../victim"), ("up/planted", tar::EntryType::Regular, 0o644, 0, b"x")]),
        build(&[
            ("dir/", tar::EntryType::Directory, 0o755, 0, b""),
            ("dir", tar::EntryType::Symlink, 0o777, 0, victim_name),
            ("dir/planted", tar::EntryType::Directory, 0o755, 0, b""),
        ]),
    ] {
        let error = extract(&archive[..], &target, &LITERAL).unwrap_err();
        assert!(matches!(error, ExtractError::ThroughSymlink { .. }), "{error:?}");
        assert!(fs::read_dir(&victim).unwrap().next().is_none(), "wrote through a symlink");
    }
    // The symlink itself is kept as a symlink; replacing it does not follow it either.
    let replace =
        build(&[("link", tar::EntryType::Symlink, 0o777, 0, victim_name), ("link", tar::EntryType::Regular, 0o644, 0, b"replaced")]);
    extract(&replace[..], &target, &LITERAL).unwrap();
    assert_eq!(fs::read(target.join("link")).unwrap(), b"replaced");
    assert!(fs::read_dir(&victim).unwrap().next().is_none());
}

#[test]
fn directory_mode_is_not_applied_through_a_later_symlink() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("root");
    let victim = outer.path().join("victim");
    fs::create_dir(&target).unwrap();
    fs::create_dir(&victim).unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o700)).unwrap();
    let archive = build(&[
        ("a/", tar::EntryType::Directory, 0o777, 0, b""),
        ("a", tar::EntryType::Symlink, 0o777, 0, victim.to_str().unwrap().as_bytes()),
    ]);
    extract(&archive[..], &target, &LITERAL).unwrap();
    assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o7777, 0o700);
}

#[test]
fn hardlinks_must_point_inside() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("root");
    fs::create_dir(&target).unwrap();
    fs::write(outer.path().join("secret"), b"secret").unwrap();
    let escape = build(&[("copy", tar::EntryType::Link, 0o644, 0, b"../secret")]);
    let error = extract(&escape[..], &target, &LITERAL).unwrap_err();
    assert!(matches!(error, ExtractError::InvalidHardlink { .. }), "{error:?}");
    let absolute = outer.path().join("secret");
    let escape = build(&[("copy", tar::EntryType::Link, 0o644, 0, absolute.to_str().unwrap().as_bytes())]);
    assert!(extract(&escape[..], &target, &LITERAL).is_err());
    let through_symlink =
        build(&[("up", tar::EntryType::Symlink, 0o777, 0, b".."), ("copy", tar::EntryType::Link, 0o644, 0, b"up/secret")]);
    let error = extract(&through_symlink[..], &target, &LITERAL).unwrap_err();
    assert!(matches!(error, ExtractError::InvalidHardlink { .. }), "{error:?}");
    assert!(!target.join("copy").exists());

    let inside = build(&[("file", tar::EntryType::Regular, 0o644, 0, b"data"), ("dir/link", tar::EntryType::Link, 0o644, 0, b"./file")]);
    extract(&inside[..], &target, &LITERAL).unwrap();
    let file = fs::metadata(target.join("file")).unwrap();
    assert_eq!(file.ino(), fs::metadata(target.join("dir/link")).unwrap().ino());
}

#[test]
fn later_entries_replace_earlier_ones_and_children_may_come_first() {
    let target = tempfile::tempdir().unwrap();
    let archive = build(&[
        ("d/sub/file", tar::EntryType::Regular, 0o644, 0, b"child"),
        ("d/sub/", tar::EntryType::Directory, 0o700, 0, b""),
        ("d/", tar::EntryType::Directory, 0o555, 0, b""),
        ("x", tar::EntryType::Directory, 0o755, 0, b""),
        ("x/inside", tar::EntryType::Regular, 0o644, 0, b""),
        ("x", tar::EntryType::Regular, 0o644, 0, b"file now"),
        ("y", tar::EntryType::Regular, 0o644, 0, b"first"),
        ("y", tar::EntryType::Regular, 0o600, 0, b"second"),
    ]);
    extract(&archive[..], target.path(), &LITERAL).unwrap();
    assert_eq!(fs::read(target.path().join("d/sub/file")).unwrap(), b"child");
    let directory = fs::metadata(target.path().join("d")).unwrap();
    assert_eq!((directory.mode() & 0o7777, directory.mtime()), (0o555, 1_650_000_000));
    assert_eq!(fs::metadata(target.path().join("d/sub")).unwrap().mtime(), 1_650_000_000);
    assert_eq!(fs::read(target.path().join("x")).unwrap(), b"file now");
    assert_eq!(fs::read(target.path().join("y")).unwrap(), b"second");
    assert_eq!(fs::metadata(target.path().join("y")).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn fixed_ownership_applies_to_every_entry() {
    require_root();
    let target = tempfile::tempdir().unwrap();
    let archive =
        build(&[("implicit/file", tar::EntryType::Regular, 0o644, 7, b""), ("link", tar::EntryType::Symlink, 0o777, 7, b"implicit/file")]);
    let options = ExtractOptions { whiteouts: WhiteoutMode::Literal, ownership: Ownership::Fixed { uid: 1000, gid: 1001 } };
    extract(&archive[..], target.path(), &options).unwrap();
    for name in ["implicit", "implicit/file", "link"] {
        let metadata = fs::symlink_metadata(target.path().join(name)).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), (1000, 1001), "{name}");
    }
    let from_archive = tempfile::tempdir().unwrap();
    extract(&archive[..], from_archive.path(), &LITERAL).unwrap();
    assert_eq!(fs::symlink_metadata(from_archive.path().join("link")).unwrap().uid(), 7);
}

#[test]
fn archives_from_system_tar_extract_in_every_compression() {
    let source = tempfile::tempdir().unwrap();
    fs::create_dir_all(source.path().join("pkg/share")).unwrap();
    fs::write(source.path().join("pkg/share/data"), vec![42u8; 10_000]).unwrap();
    symlink("share/data", source.path().join("pkg/link")).unwrap();
    fs::hard_link(source.path().join("pkg/share/data"), source.path().join("pkg/hard")).unwrap();
    fs::write(source.path().join("pkg").join("l".repeat(150)), b"long").unwrap();
    let work = tempfile::tempdir().unwrap();
    for (flag, extension, expected) in [
        ("", "tar", StreamCompression::None),
        ("--gzip", "tar.gz", StreamCompression::Gzip),
        ("--bzip2", "tar.bz2", StreamCompression::Bzip2),
        ("--xz", "tar.xz", StreamCompression::Xz),
        ("--zstd", "tar.zst", StreamCompression::Zstd),
    ] {
        let archive = work.path().join(format!("archive.{extension}"));
        let mut command = Command::new("tar");
        command.arg("-cf").arg(&archive).arg("-C").arg(source.path());
        if !flag.is_empty() {
            command.arg(flag);
        }
        let status = command.arg("pkg").status().unwrap();
        assert!(status.success(), "tar {flag} failed");
        let head = fs::read(&archive).unwrap();
        assert_eq!(detect_compression(&head[..head.len().min(6)]), expected, "{extension}");
        assert!(is_tar_archive(&archive).unwrap(), "{extension}");

        let target = work.path().join(format!("out-{extension}"));
        fs::create_dir(&target).unwrap();
        let reader = decompressed(File::open(&archive).unwrap()).unwrap();
        extract(reader, &target, &LITERAL).unwrap();
        assert_eq!(fs::read(target.join("pkg/share/data")).unwrap(), vec![42u8; 10_000]);
        assert_eq!(fs::read_link(target.join("pkg/link")).unwrap(), Path::new("share/data"));
        assert_eq!(fs::metadata(target.join("pkg/hard")).unwrap().ino(), fs::metadata(target.join("pkg/share/data")).unwrap().ino());
        assert_eq!(fs::read(target.join("pkg").join("l".repeat(150))).unwrap(), b"long");
    }
}

#[test]
fn non_archives_are_recognised() {
    let work = tempfile::tempdir().unwrap();
    let text = work.path().join("text.txt");
    fs::write(&text, "just text, long enough to fill a block? no").unwrap();
    assert!(!is_tar_archive(&text).unwrap());
    let big_text = work.path().join("big.txt");
    fs::write(&big_text, vec![b'a'; 4096]).unwrap();
    assert!(!is_tar_archive(&big_text).unwrap());
    let gzip_text = work.path().join("text.gz");
    let mut encoder = flate2::write::GzEncoder::new(File::create(&gzip_text).unwrap(), flate2::Compression::default());
    encoder.write_all(&[b'x'; 2048]).unwrap();
    encoder.finish().unwrap();
    assert!(!is_tar_archive(&gzip_text).unwrap(), "compressed non-tar content");
    let broken = work.path().join("broken.gz");
    fs::write(&broken, [0x1f, 0x8b, 0x08, 0, 1, 2, 3]).unwrap();
    assert!(!is_tar_archive(&broken).unwrap());
    let empty = work.path().join("empty");
    fs::write(&empty, b"").unwrap();
    assert!(!is_tar_archive(&empty).unwrap());
    let archive = work.path().join("a.tar");
    fs::write(&archive, build(&[("f", tar::EntryType::Regular, 0o644, 0, b"x")])).unwrap();
    assert!(is_tar_archive(&archive).unwrap());
    let link = work.path().join("link.tar");
    symlink(&archive, &link).unwrap();
    assert!(!is_tar_archive(&link).unwrap(), "a symlink is not extracted by ADD");
    assert!(is_tar_archive(&work.path().join("missing")).is_err());
    assert_eq!(detect_compression(b""), StreamCompression::None);
}

#[test]
fn overlay_xattrs_from_an_archive_are_dropped_and_truncation_is_an_error() {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]), ("SCHILY.xattr.user.kept", &b"v"[..])])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("dir").unwrap();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_cksum();
    builder.append(&header, &[][..]).unwrap();
    let archive = builder.into_inner().unwrap();
    let target = tempfile::tempdir().unwrap();
    extract(&archive[..], target.path(), &LAYER).unwrap();
    let names: Vec<_> = xattr::list(target.path().join("dir")).unwrap().collect();
    assert_eq!(names, vec![std::ffi::OsString::from("user.kept")]);

    let file = build(&[("file", tar::EntryType::Regular, 0o644, 0, &[5u8; 2000])]);
    let truncated = &file[..1200];
    let other = tempfile::tempdir().unwrap();
    let error = extract(truncated, other.path(), &LITERAL).unwrap_err();
    assert!(matches!(error, ExtractError::Truncated), "{error:?}");
    let mut corrupt = file.clone();
    corrupt[10] ^= 1;
    assert!(matches!(extract(&corrupt[..], other.path(), &LITERAL), Err(ExtractError::Checksum { offset: 0 })));
}
