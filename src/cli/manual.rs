//! The words of the man pages beyond the flags clap describes: EXAMPLES, ENVIRONMENT, FILES,
//! EXIT STATUS and SEE ALSO, per page. `docs.rs` appends them to clap_mangen's sections.
//!
//! Every example is a command a test runs (`tests/integration/examples.rs`, with the README's):
//! keep them runnable in a directory holding a Dockerfile with a `build` stage, with
//! `registry.example.com` standing for a registry the test starts.

/// (comment, command) pairs of one page.
type Examples = &'static [(&'static str, &'static str)];

/// The examples of the page `name` (`rbuild`, `rbuild-build`, `rbuild-cache-du`, ...).
pub fn examples(name: &str) -> Examples {
    match name {
        "rbuild" | "rbuild-build" => &[
            ("An OCI archive, named, with zstd layers", "rbuild -t app:1.0 -o type=oci,dest=app.tar,compression=zstd ."),
            ("Push to a registry, recording the digest", "rbuild --push -t registry.example.com/team/app:1.0 --metadata-file meta.json ."),
            ("A docker archive, loaded into podman", "rbuild -t app -o type=docker,dest=app.tar . && podman load -i app.tar"),
            ("Only the files of the build stage, into a directory", "rbuild --target build -o ./out ."),
            ("The Dockerfile from stdin, with no context", "echo 'FROM busybox' | rbuild -o type=oci,dest=stdin.tar -"),
            ("Why did this step rebuild?", "rbuild --debug-cache --progress=plain ."),
        ],
        "rbuild-cache" => {
            &[("What the cache holds", "rbuild cache du"), ("Remove what no base image needs, without asking", "rbuild cache prune -f")]
        }
        "rbuild-cache-du" => &[
            ("Every build layer, in detail", "rbuild cache du --verbose --filter type=regular"),
            ("The records of COPY steps, one JSON object per line", "rbuild cache du --format json --filter 'description~=COPY'"),
        ],
        "rbuild-cache-prune" => &[
            (
                "Keep 2 GB, use at most 10 GB, remove what was unused for a day",
                "rbuild cache prune -a -f --filter until=24h --reserved-space 2GB --max-used-space 10GB",
            ),
            ("Answer the question from a pipe", "echo y | rbuild cache prune --min-free-space 1MB"),
        ],
        "rbuild-completion" => &[(
            "Bash completion for your user",
            "mkdir -p ~/.local/share/bash-completion/completions && rbuild completion bash > ~/.local/share/bash-completion/completions/rbuild",
        )],
        _ => &[],
    }
}

/// The other pages `name` refers to.
fn see_also(name: &str) -> Vec<&'static str> {
    ["rbuild", "rbuild-build", "rbuild-cache", "rbuild-cache-du", "rbuild-cache-prune", "rbuild-completion"]
        .into_iter()
        .filter(|page| *page != name)
        .collect()
}

const ENVIRONMENT: &[(&str, &str)] = &[
    ("RBUILD_ROOT", "The state directory, as --root."),
    (
        "XDG_CACHE_HOME",
        "The default state directory is $XDG_CACHE_HOME/rbuild (~/.cache/rbuild); as root without XDG variables, /var/lib/rbuild.",
    ),
    (
        "XDG_CONFIG_HOME",
        "The registry configuration is read from $XDG_CONFIG_HOME/rbuild/config.toml (~/.config/rbuild/config.toml) unless --config names one.",
    ),
    ("DOCKER_CONFIG", "Registry credentials are read from $DOCKER_CONFIG/config.json (~/.docker/config.json), then podman's auth.json."),
    ("BUILDKIT_PROGRESS", "The default of --progress."),
    ("SOURCE_DATE_EPOCH", "Seconds since the epoch: every history time and the image's created time (also as a build argument)."),
    ("RBUILD_LOG", "debug shows debug logs, as --debug."),
    ("RBUILD_SNAPSHOTTER", "copy or overlay: how RUN steps get their root filesystem (default: overlay where it works)."),
];

const FILES: &[(&str, &str)] = &[
    ("~/.cache/rbuild, /var/lib/rbuild", "The state directory: the SQLite database, blobs, snapshots, cache mounts."),
    (
        "~/.config/rbuild/config.toml",
        "Registry settings: [registry.\"HOST\"] with mirrors, http, insecure, ca and keypair, as buildkitd.toml.",
    ),
    ("~/.docker/config.json", "Registry credentials (auths, credHelpers, credsStore)."),
    ("/etc/subuid, /etc/subgid", "The subordinate ids of a user who runs rbuild rootless (usermod --add-subuids)."),
];

const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Success."),
    ("1", "The build (or the cache command) failed."),
    ("2", "A usage error: an unknown flag, a bad value."),
    ("130", "Interrupted by Ctrl-C or SIGTERM; the build was canceled cleanly."),
];

/// Escapes text for roff: backslashes, hyphens (so they stay ASCII when copied), and a
/// leading dot or quote.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') { format!("\\&{escaped}") } else { escaped }
}

fn tagged(out: &mut String, heading: &str, items: &[(&str, &str)], bold: bool) {
    out.push_str(&format!(".SH \"{heading}\"\n"));
    for (tag, text) in items {
        let tag = if bold { format!("\\fB{}\\fR", roff(tag)) } else { roff(tag) };
        out.push_str(&format!(".TP\n{tag}\n{}\n", roff(text)));
    }
}

/// The sections of page `name`, in roff.
pub fn sections(name: &str) -> String {
    let mut out = String::new();
    let examples = examples(name);
    if !examples.is_empty() {
        out.push_str(".SH EXAMPLES\n");
        for (comment, command) in examples {
            out.push_str(&format!(".PP\n{}:\n.PP\n.RS 4\n.nf\n{}\n.fi\n.RE\n", roff(comment), roff(command)));
        }
    }
    tagged(&mut out, "ENVIRONMENT", ENVIRONMENT, true);
    tagged(&mut out, "FILES", FILES, false);
    tagged(&mut out, "EXIT STATUS", EXIT_STATUS, true);
    out.push_str(".SH \"SEE ALSO\"\n");
    let references: Vec<String> = see_also(name).into_iter().map(|page| format!("\\fB{}\\fR(1)", roff(page))).collect();
    out.push_str(&references.join(", "));
    out.push('\n');
    out
}
