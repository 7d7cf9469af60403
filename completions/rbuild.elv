
use builtin;
use str;

set edit:completion:arg-completer[rbuild] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'rbuild'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'rbuild'= {
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand build 'Build an image from a Dockerfile (the default command)'
            cand cache 'Manage the build cache'
            cand completion 'Print shell completions'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'rbuild;build'= {
            cand -f 'Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)'
            cand --file 'Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)'
            cand -t 'Name and optionally a tag (format: `name:tag`)'
            cand --tag 'Name and optionally a tag (format: `name:tag`)'
            cand --target 'Set the target build stage to build'
            cand --build-arg 'Set build-time variables (`KEY=VALUE`, or `KEY` to take it from the environment)'
            cand --build-context 'Additional build contexts (`name=DIR`, `name=oci-layout://PATH[:tag|@digest]`, `name=docker-image://REF`, `name=URL` or a git URL)'
            cand -o 'Output destination (`type=oci|docker|tar|local,dest=...`, `PATH` for local, `-` for a tar on stdout)'
            cand --output 'Output destination (`type=oci|docker|tar|local,dest=...`, `PATH` for local, `-` for a tar on stdout)'
            cand --progress 'Set type of progress output (auto, plain, tty, quiet, rawjson)'
            cand --no-cache-filter 'Do not cache specified stages'
            cand --platform 'Set target platform for build (`os/arch[/variant]`)'
            cand --label 'Set metadata for an image (`KEY=VALUE`)'
            cand --annotation 'Add annotation to the image (`KEY=VALUE`)'
            cand --iidfile 'Write the image ID to a file'
            cand --metadata-file 'Write build result metadata to a file'
            cand -j 'Steps run at the same time [default: 4 × cores, at least 8]'
            cand --jobs 'Steps run at the same time [default: 4 × cores, at least 8]'
            cand --secret 'Secret to expose to RUN mounts (`id=ID,src=FILE` or `id=ID,env=VAR`)'
            cand --ssh 'SSH agent socket or keys to expose to RUN mounts and ssh git sources (`default` or `ID=PATH[,PATH]`)'
            cand --cache-to 'Export the build cache (e.g. "type=registry,ref=host/app:cache,mode=max", "type=local,dest=DIR")'
            cand --cache-from 'Import a build cache (e.g. "type=registry,ref=host/app:cache", "type=local,src=DIR", "host/app:cache")'
            cand --config 'Registry configuration (buildkitd.toml''s `[registry."host"]` keys) [default: $XDG_CONFIG_HOME/rbuild/config.toml]'
            cand --network 'Networking mode for RUN steps: default (the host''s), none, host'
            cand --add-host 'Add a host-to-IP mapping to /etc/hosts of RUN steps (format: "host:ip"); repeatable'
            cand --ulimit 'A resource limit of RUN steps (format: "name=soft[:hard]", e.g. "nofile=1024:2048"); repeatable'
            cand --shm-size 'Size of /dev/shm in RUN steps (e.g. "128m"; default 64m)'
            cand --allow 'Allow extra privileged entitlement: network.host (needed by RUN --network=host); repeatable'
            cand --root 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]'
            cand --no-cache 'Do not use cache when building the image'
            cand -q 'Suppress the build output and print image ID on success'
            cand --quiet 'Suppress the build output and print image ID on success'
            cand --push 'Push the image to the registry of each -t name (shorthand for --output=type=registry)'
            cand --pull 'Always resolve base images again (a resolved tag is otherwise reused, also offline)'
            cand --debug-cache 'Say why each step missed the cache (a log line under the step)'
            cand --debug 'Show debug logs (also RBUILD_LOG=debug)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'rbuild;cache'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand du 'Disk usage'
            cand prune 'Remove build cache'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'rbuild;cache;du'= {
            cand --filter 'Provide filter values (`type=regular`, `description~=REGEXP`, `id=REGEXP`, `type!=internal`, `until=24h`, ...)'
            cand --format 'Format the output (`table`, `pretty` or `json`: one JSON object per line)'
            cand --root 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]'
            cand --verbose 'Shorthand for `--format=pretty`'
            cand --debug 'Show debug logs (also RBUILD_LOG=debug)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'rbuild;cache;prune'= {
            cand --filter 'Provide filter values (`until=24h`, `type=regular`, `description~=REGEXP`, `id=REGEXP`, ...)'
            cand --reserved-space 'Amount of disk space always allowed to keep for cache (e.g. `10GB`)'
            cand --max-used-space 'Maximum amount of disk space allowed to keep for cache'
            cand --min-free-space 'Target amount of free disk space after pruning'
            cand --keep-storage 'Amount of disk space to keep for cache (deprecated: `--reserved-space`)'
            cand --root 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]'
            cand -a 'Include base image layers'
            cand --all 'Include base image layers'
            cand -f 'Do not prompt for confirmation'
            cand --force 'Do not prompt for confirmation'
            cand --verbose 'Provide a more verbose output'
            cand --debug 'Show debug logs (also RBUILD_LOG=debug)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'rbuild;cache;help'= {
            cand du 'Disk usage'
            cand prune 'Remove build cache'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'rbuild;cache;help;du'= {
        }
        &'rbuild;cache;help;prune'= {
        }
        &'rbuild;cache;help;help'= {
        }
        &'rbuild;completion'= {
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'rbuild;help'= {
            cand build 'Build an image from a Dockerfile (the default command)'
            cand cache 'Manage the build cache'
            cand completion 'Print shell completions'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'rbuild;help;build'= {
        }
        &'rbuild;help;cache'= {
            cand du 'Disk usage'
            cand prune 'Remove build cache'
        }
        &'rbuild;help;cache;du'= {
        }
        &'rbuild;help;cache;prune'= {
        }
        &'rbuild;help;completion'= {
        }
        &'rbuild;help;help'= {
        }
    ]
    $completions[$command]
}
