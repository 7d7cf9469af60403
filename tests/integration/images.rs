//! Base images for the end-to-end tests, as OCI image layout directories made by rbuild itself
//! (`FROM scratch` + COPY/ADD of a root filesystem prepared on the host), so no other tool
//! produces rbuild's inputs. Each image is built once and cached under `target/test-images/`,
//! in a directory named after a hash of what it is made of; a lock file serializes builders
//! (threads of this binary and other processes), and a finished layout appears by an atomic
//! rename, so a layout directory that exists is complete.
//!
//! Use: `--build-context busybox=oci-layout://LAYOUT:latest`, i.e.
//! `context_arg("busybox", &busybox_layout(), BUSYBOX_TAG)`, and `FROM busybox`.
//! `testdata/images/make-busybox.sh DEST` writes the busybox layout by hand.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::support::*;

/// The tag of the busybox layout (`name=busybox:latest`: like BuildKit, rbuild writes the tag
/// as `org.opencontainers.image.ref.name` and the full name as `io.containerd.image.name`).
pub(crate) const BUSYBOX_TAG: &str = "latest";
/// The tag of the Debian layout (`name=debian:bookworm`).
pub(crate) const DEBIAN_TAG: &str = "bookworm";

const DEBIAN_SUITE: &str = "bookworm";
/// Bump when `make_debian` changes what goes into the image.
const DEBIAN_RECIPE: &str = "debian-recipe-1: debootstrap minbase, no special files, no .debs, no hostname/resolv.conf";
/// Fixed image times, so the layouts are reproducible.
const SOURCE_DATE_EPOCH: &str = "1704067200";

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/images")
}

/// `target/test-images/` (beside `target/tmp/`, Cargo's CARGO_TARGET_TMPDIR).
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("test-images")
}

/// An OCI layout directory holding `busybox:latest` (tag [`BUSYBOX_TAG`]): /bin/busybox from
/// Debian's busybox-static and a symlink per applet (`busybox --list`) in /bin, /etc/passwd
/// (root, nobody, `app` 1000:1000), /etc/group (root, `staff` 50 with member app, `app` 1000,
/// nogroup), /tmp (1777), /root (0700), /home/app owned by 1000:1000, `ENV PATH=...`,
/// `CMD ["sh"]`. Made by `testdata/images/make-busybox.sh` with this test binary's rbuild, once
/// per busybox package version and recipe content. Do not modify the returned directory.
pub(crate) fn busybox_layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| cached("busybox", &busybox_key(), make_busybox)).clone()
}

/// An OCI layout directory holding `debian:bookworm` (tag [`DEBIAN_TAG`]): the root filesystem of
/// `debootstrap --variant=minbase bookworm DIR` (its default mirror; owners, modes,
/// setuid bits and hard links kept; device nodes, downloaded .debs, /etc/hostname and
/// /etc/resolv.conf left out) added to `FROM scratch` as a tar, `CMD ["bash"]`. Needs root and
/// the mirror; installs debootstrap with apt-get when missing; fails loudly otherwise. The
/// first build takes about a minute or more; it is then cached under target/test-images/.
pub(crate) fn debian_layout() -> PathBuf {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| cached("debian", &debian_key(), make_debian)).clone()
}

/// `NAME=oci-layout://LAYOUT:TAG`, the value of `--build-context` that makes `FROM NAME` use the
/// image tagged TAG in LAYOUT.
pub(crate) fn context_arg(name: &str, layout: &Path, tag: &str) -> String {
    format!("{name}=oci-layout://{}:{tag}", layout.display())
}

/// `busybox=oci-layout://BUSYBOX_LAYOUT:latest`.
pub(crate) fn busybox_context() -> String {
    context_arg("busybox", &busybox_layout(), BUSYBOX_TAG)
}

/// `debian=oci-layout://DEBIAN_LAYOUT:bookworm`.
pub(crate) fn debian_context() -> String {
    context_arg("debian", &debian_layout(), DEBIAN_TAG)
}

fn hash_parts(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())[..16].to_string()
}

fn recipe_file(relative: &str) -> Vec<u8> {
    let path = images_dir().join(relative);
    fs::read(&path).unwrap_or_else(|error| panic!("recipe file {}: {error}", path.display()))
}

/// The version of busybox-static the script uses, and every file of the recipe.
fn busybox_key() -> String {
    let script = images_dir().join("make-busybox.sh");
    let mut command = Command::new("bash");
    command.arg(&script).arg("--version");
    let version = run_command(command, None).ok().stdout_text();
    let version = version.trim();
    assert!(!version.is_empty(), "make-busybox.sh --version printed nothing");
    let parts = ["make-busybox.sh", "busybox/Dockerfile", "busybox/passwd", "busybox/group"].map(recipe_file);
    let mut all: Vec<&[u8]> = vec![b"busybox", version.as_bytes()];
    all.extend(parts.iter().map(Vec::as_slice));
    hash_parts(&all)
}

fn debian_key() -> String {
    let dockerfile = recipe_file("debian/Dockerfile");
    hash_parts(&[b"debian", DEBIAN_SUITE.as_bytes(), DEBIAN_RECIPE.as_bytes(), &dockerfile])
}

/// The layout `target/test-images/NAME-KEY`, made by `make(dest, work)` unless it exists.
/// `make` writes the layout to `dest` (which does not exist yet) and may use `work`, an empty
/// scratch directory removed afterwards. Builders of NAME are serialized by `NAME.lock`; the
/// finished layout is renamed into place, and older versions of NAME are removed.
fn cached(name: &str, key: &str, make: fn(&Path, &Path)) -> PathBuf {
    let dir = cache_dir();
    fs::create_dir_all(&dir).unwrap();
    let final_dir = dir.join(format!("{name}-{key}"));
    let ready = |path: &Path| path.join("index.json").is_file() && path.join("oci-layout").is_file();
    if ready(&final_dir) {
        return final_dir;
    }
    let lock_path = dir.join(format!("{name}.lock"));
    let _lock = lock_exclusive(&lock_path);
    if ready(&final_dir) {
        return final_dir;
    }
    // Holding the lock: whatever else of NAME is here is stale (a killed builder, an old key).
    let tmp_prefix = format!(".tmp-{name}-");
    for entry in fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let old_version = file_name.starts_with(&format!("{name}-")) && entry.path() != final_dir;
        if (old_version || file_name.starts_with(&tmp_prefix)) && entry.file_type().unwrap().is_dir() {
            fs::remove_dir_all(entry.path()).unwrap_or_else(|error| panic!("removing {}: {error}", entry.path().display()));
        }
    }
    let tmp = tempfile::Builder::new().prefix(&tmp_prefix).tempdir_in(&dir).unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    let layout = tmp.path().join("layout");
    let started = Instant::now();
    make(&layout, &work);
    assert!(ready(&layout), "building {name} left no OCI layout at {}", layout.display());
    fs::rename(&layout, &final_dir).unwrap_or_else(|error| panic!("rename to {}: {error}", final_dir.display()));
    eprintln!("images: built {name} in {:.1?} -> {}", started.elapsed(), final_dir.display());
    final_dir
}

fn make_busybox(dest: &Path, work: &Path) {
    let mut command = Command::new("bash");
    command.arg(images_dir().join("make-busybox.sh")).arg(dest);
    command.env("RBUILD", RBUILD).env("TMPDIR", work);
    command.env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    run_command(command, None).ok();
}

/// Runs a program (looked up in PATH and the sbin directories, which a test's PATH may lack).
fn system_tool(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).collect()).unwrap_or_default();
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|dir| dir.join(program)).find(|path| path.is_file())
}

fn debootstrap() -> PathBuf {
    if let Some(path) = system_tool("debootstrap") {
        return path;
    }
    let mut command = Command::new("apt-get");
    command.args(["install", "-y", "--no-install-recommends", "debootstrap"]).env("DEBIAN_FRONTEND", "noninteractive");
    let install = run_command(command, None);
    if install.code != 0 {
        let mut update = Command::new("apt-get");
        update.arg("update");
        run_command(update, None).ok();
        let mut command = Command::new("apt-get");
        command.args(["install", "-y", "--no-install-recommends", "debootstrap"]).env("DEBIAN_FRONTEND", "noninteractive");
        run_command(command, None).ok();
    }
    system_tool("debootstrap").expect("apt-get installed debootstrap, yet it is not found")
}

fn make_debian(dest: &Path, work: &Path) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "debian_layout() runs debootstrap, which needs root (device nodes, owners); run the tests as root"
    );
    let rootfs = work.join("rootfs");
    let mut command = Command::new(debootstrap());
    command.args(["--variant=minbase", DEBIAN_SUITE]).arg(&rootfs);
    let run = run_command(command, None);
    assert_eq!(
        run.code,
        0,
        "debootstrap of {DEBIAN_SUITE} from its default mirror failed (exit {}): is the mirror reachable?\n--- stderr ---\n{}\n--- stdout (end) ---\n{}",
        run.code,
        run.stderr,
        tail(&run.stdout_text(), 40)
    );
    // Not part of an image: device nodes, fifos and sockets (debootstrap makes /dev/null etc.,
    // a container runtime provides them), the downloaded packages, the host's name and DNS.
    tool(
        "find",
        &[rootfs.to_str().unwrap(), "(", "-type", "b", "-o", "-type", "c", "-o", "-type", "p", "-o", "-type", "s", ")", "-delete"],
    );
    tool("find", &[rootfs.join("var/cache/apt/archives").to_str().unwrap(), "-name", "*.deb", "-type", "f", "-delete"]);
    for file in ["etc/hostname", "etc/resolv.conf"] {
        let _ = fs::remove_file(rootfs.join(file));
    }
    // COPY from a context makes everything root-owned, and this root filesystem has files of
    // other groups (shadow, mail, staff, utmp): a tar with numeric owners, ADDed, keeps them.
    let not_root = tool("find", &[rootfs.to_str().unwrap(), "(", "!", "-user", "root", "-o", "!", "-group", "root", ")", "-print"]);
    assert!(!not_root.trim().is_empty(), "expected files of other groups in a Debian root filesystem (shadow, mail...)");
    let ctx = work.join("ctx");
    fs::create_dir(&ctx).unwrap();
    let tarball = ctx.join("rootfs.tar");
    tool("tar", &["--numeric-owner", "--sort=name", "-cf", tarball.to_str().unwrap(), "-C", rootfs.to_str().unwrap(), "."]);
    fs::remove_dir_all(&rootfs).unwrap();
    let dockerfile = images_dir().join("debian/Dockerfile");
    let state = work.join("state");
    let output = format!("type=oci,dest={},tar=false,name=debian:{DEBIAN_TAG},rewrite-timestamp=true", dest.display());
    let mut command = Command::new(RBUILD);
    command.args(["build", "--root", state.to_str().unwrap(), "--progress=plain", "-f", dockerfile.to_str().unwrap(), "-o", &output]);
    command.arg(&ctx).env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    run_command(command, None).ok();
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Tests of the images themselves.

/// `skopeo inspect oci:LAYOUT:TAG`, and the raw config.
fn inspect(layout: &Path, tag: &str) -> (serde_json::Value, serde_json::Value) {
    let reference = format!("oci:{}:{tag}", layout.display());
    (json(&tool("skopeo", &["inspect", &reference])), json(&tool("skopeo", &["inspect", "--config", "--raw", &reference])))
}

/// `tar --numeric-owner -tvf` of every layer of a layout's image.
fn layout_listings(layout: &Path, tag: &str) -> Vec<String> {
    let manifest = json(&tool("skopeo", &["inspect", "--raw", &format!("oci:{}:{tag}", layout.display())]));
    manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|layer| {
            let blob = layout.join("blobs/sha256").join(layer["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap());
            tool("tar", &["--numeric-owner", "-tvf", blob.to_str().unwrap()])
        })
        .collect()
}

/// `(mode, owner)` of the last entry for `path` across the layers (what the image shows).
#[track_caller]
fn owner_in_layers(listings: &[String], path: &str) -> (String, String) {
    listings
        .iter()
        .rev()
        .find_map(|listing| listing.lines().find(|line| line.split_whitespace().nth(5) == Some(path)).map(listing_fields))
        .unwrap_or_else(|| panic!("no {path:?} in any layer"))
}

#[test]
fn busybox_image_config() {
    let layout = busybox_layout();
    let (inspect, config) = inspect(&layout, BUSYBOX_TAG);
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3, "{inspect:#}");
    assert_eq!(config["config"]["Cmd"], json!(["sh"]));
    assert_eq!(config["config"]["Env"], json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]));
    assert_eq!(config["created"], "2024-01-01T00:00:00Z");
    let index = json(&read(&layout.join("index.json")));
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(annotations["io.containerd.image.name"], "docker.io/library/busybox:latest", "{index:#}");
    assert_eq!(annotations["org.opencontainers.image.ref.name"], BUSYBOX_TAG, "{index:#}");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
}

#[test]
fn busybox_image_unpacks_with_umoci() {
    let layout = busybox_layout();
    let temp = tempfile::Builder::new().prefix("rbuild-images-").tempdir().unwrap();
    let bundle = temp.path().join("bundle");
    let image = format!("{}:{BUSYBOX_TAG}", layout.display());
    tool("umoci", &["unpack", "--rootless", "--image", &image, bundle.to_str().unwrap()]);
    let rootfs = bundle.join("rootfs");
    assert_eq!(fs::read_link(rootfs.join("bin/sh")).unwrap(), Path::new("busybox"));
    let busybox = rootfs.join("bin/busybox");
    assert!(fs::symlink_metadata(&busybox).unwrap().is_file());
    assert_eq!(mode_of(&busybox), 0o755);
    // Every applet has its link, and the binary runs (it is static).
    let mut list = Command::new(&busybox);
    list.arg("--list");
    let applets = run_command(list, None).ok().stdout_text();
    assert!(applets.lines().count() > 100, "{applets}");
    for applet in applets.lines().filter(|applet| *applet != "busybox") {
        let link = rootfs.join("bin").join(applet);
        assert_eq!(fs::read_link(&link).unwrap_or_else(|error| panic!("{}: {error}", link.display())), Path::new("busybox"));
    }
    let passwd = read(&rootfs.join("etc/passwd"));
    assert!(passwd.lines().any(|line| line == "root:x:0:0:root:/root:/bin/sh"), "{passwd}");
    assert!(passwd.lines().any(|line| line.starts_with("nobody:x:65534:65534:")), "{passwd}");
    assert!(passwd.lines().any(|line| line == "app:x:1000:1000:app:/home/app:/bin/sh"), "{passwd}");
    let group = read(&rootfs.join("etc/group"));
    assert!(group.lines().any(|line| line == "staff:x:50:app"), "{group}");
    assert!(group.lines().any(|line| line == "app:x:1000:"), "{group}");
    assert_eq!(mode_of(&rootfs.join("tmp")), 0o1777);
    assert_eq!(mode_of(&rootfs.join("root")), 0o700);
    assert!(rootfs.join("home/app").is_dir());
    // Owners, which a rootless unpack cannot show: from the layers.
    let listings = layout_listings(&layout, BUSYBOX_TAG);
    assert_eq!(owner_in_layers(&listings, "home/app/"), ("drwxr-xr-x".to_string(), "1000/1000".to_string()));
    assert_eq!(owner_in_layers(&listings, "home/"), ("drwxr-xr-x".to_string(), "0/0".to_string()));
    assert_eq!(owner_in_layers(&listings, "tmp/"), ("drwxrwxrwt".to_string(), "0/0".to_string()));
    assert_eq!(owner_in_layers(&listings, "bin/busybox"), ("-rwxr-xr-x".to_string(), "0/0".to_string()));
}

#[test]
fn from_busybox_copy_chown_by_name() {
    let layout = busybox_layout();
    let project = Project::new();
    project.write("a.txt", "a\n").dockerfile("FROM busybox\nCOPY --chown=app:staff a.txt /home/app/a.txt\n");
    let context = busybox_context();
    assert_eq!(context, context_arg("busybox", &layout, "latest"));
    let archive = project.build_oci("out.tar", &["--build-context", &context, "-t", "app:1"]);
    let config = skopeo_config(&archive);
    assert_eq!(config["config"]["Cmd"], json!(["sh"]), "the base image's config carries over: {config:#}");
    let (_, base_config) = inspect(&layout, BUSYBOX_TAG);
    let base_layers = base_config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), base_layers.len() + 1);
    assert_eq!(&layers[..base_layers.len()], &base_layers[..]);
    let listings = layer_listings(&archive);
    let last = listings.last().unwrap();
    assert_eq!(listing_fields(listing_line(last, "home/app/a.txt")).1, "1000/50", "{last}");
    if let Some(line) = last.lines().find(|line| line.split_whitespace().nth(5) == Some("home/app/")) {
        assert_eq!(listing_fields(line).1, "1000/1000", "COPY keeps the owner of an existing directory: {last}");
    }
}

#[test]
fn make_busybox_script_is_reproducible() {
    // The script the helper runs, run by hand twice, gives the same image.
    let temp = tempfile::Builder::new().prefix("rbuild-images-").tempdir().unwrap();
    let mut digests = Vec::new();
    for name in ["one", "two"] {
        let dest = temp.path().join(name);
        let mut command = Command::new(images_dir().join("make-busybox.sh"));
        command.arg(&dest).env("RBUILD", RBUILD).env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
        run_command(command, None).ok();
        let index = json(&read(&dest.join("index.json")));
        digests.push(index["manifests"][0]["digest"].as_str().unwrap().to_string());
        skopeo_inspect_layout(&dest);
    }
    assert_eq!(digests[0], digests[1]);
    // And refuses to write into a non-empty directory.
    let mut command = Command::new(images_dir().join("make-busybox.sh"));
    command.arg(temp.path().join("one")).env("RBUILD", RBUILD);
    run_command(command, None).fails(1).stderr_has("not empty");
}

fn skopeo_inspect_layout(layout: &Path) {
    let (_, config) = inspect(layout, BUSYBOX_TAG);
    assert_eq!(config["config"]["Cmd"], json!(["sh"]));
}

#[test]
fn cached_builds_once_across_threads() {
    // Many threads ask for the same image at once: one builds it, all get the same directory.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fn make(dest: &Path, work: &Path) {
        BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(work.is_dir() && !dest.exists());
        std::thread::sleep(std::time::Duration::from_millis(200));
        fs::create_dir(dest).unwrap();
        fs::write(dest.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
        let mut index = fs::File::create(dest.join("index.json")).unwrap();
        index.write_all(b"{\"schemaVersion\":2,\"manifests\":[]}").unwrap();
    }
    let key = format!("{}-{}", std::process::id(), hash_parts(&[b"selftest"]));
    let paths: Vec<PathBuf> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| cached("selftest", &key, make))).collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    assert_eq!(BUILDS.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(paths.iter().all(|path| path == &paths[0]), "{paths:?}");
    assert!(paths[0].join("index.json").is_file());
    fs::remove_dir_all(&paths[0]).unwrap();
    let _ = fs::remove_file(cache_dir().join("selftest.lock"));
    let leftovers: Vec<_> = fs::read_dir(cache_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp-selftest-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn debian_image_is_usable() {
    let layout = debian_layout();
    let (inspect, config) = inspect(&layout, DEBIAN_TAG);
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(config["config"]["Cmd"], json!(["bash"]));
    let listings = layout_listings(&layout, DEBIAN_TAG);
    assert_eq!(listings.len(), 1);
    let listing = &listings[0];
    // Owners and modes of the debootstrap root filesystem survive: shadow is group 42, su setuid.
    assert_eq!(owner_in_layers(&listings, "etc/shadow"), ("-rw-r-----".to_string(), "0/42".to_string()));
    assert_eq!(owner_in_layers(&listings, "usr/bin/su").0, "-rwsr-xr-x");
    assert!(listing.lines().any(|line| line.starts_with('l') && line.contains(" bin -> usr/bin")), "usrmerge: /bin -> usr/bin");
    assert!(listing.lines().any(|line| line.split_whitespace().nth(5) == Some("usr/bin/bash")));
    assert!(!listing.lines().any(|line| line.starts_with('c') || line.starts_with('b')), "no device nodes");
    assert!(!listing.lines().any(|line| line.contains("var/cache/apt/archives/") && line.ends_with(".deb")), "no downloaded packages");
    // A build on it: FROM debian through --build-context, a COPY owned by a Debian group by name.
    let project = Project::new();
    project.write("motd", "hello\n").dockerfile("FROM debian\nCOPY --chown=root:mail motd /etc/motd\n");
    let archive = project.build_oci("out.tar", &["--build-context", &debian_context(), "-t", "app:1"]);
    let built = skopeo_config(&archive);
    assert_eq!(built["config"]["Cmd"], json!(["bash"]));
    assert_eq!(built["rootfs"]["diff_ids"][0], config["rootfs"]["diff_ids"][0]);
    let layers = layer_listings(&archive);
    assert_eq!(listing_fields(listing_line(layers.last().unwrap(), "etc/motd")).1, "0/8", "mail is gid 8 in Debian's /etc/group");
    // Files of the image, read from its layers with GNU tar.
    let layout_dir = archive.with_extension("layout");
    let manifest = skopeo_manifest(&archive);
    let blob = |index: usize| {
        let digest = manifest["layers"][index]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
        layout_dir.join("blobs/sha256").join(digest)
    };
    let os_release = tool("tar", &["-xOf", blob(0).to_str().unwrap(), "usr/lib/os-release"]);
    assert!(os_release.contains("VERSION_CODENAME=bookworm"), "{os_release}");
    assert_eq!(tool("tar", &["-xOf", blob(1).to_str().unwrap(), "etc/motd"]), "hello\n");
}
