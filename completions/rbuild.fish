function __fish_rbuild_stages
    set -l tokens (commandline -opc)
    set -l file Dockerfile
    for i in (seq (count $tokens))
        if contains -- $tokens[$i] -f --file; and test $i -lt (count $tokens)
            set file $tokens[(math $i + 1)]
        end
    end
    $tokens[1] __complete-stages $file 2>/dev/null
end

# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_rbuild_global_optspecs
    string join \n h/help V/version
end

function __fish_rbuild_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_rbuild_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_rbuild_using_subcommand
    set -l cmd (__fish_rbuild_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c rbuild -n "__fish_rbuild_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c rbuild -n "__fish_rbuild_needs_command" -s V -l version -d 'Print version'
complete -c rbuild -n "__fish_rbuild_needs_command" -f -a "build" -d 'Build an image from a Dockerfile (the default command)'
complete -c rbuild -n "__fish_rbuild_needs_command" -f -a "cache" -d 'Manage the build cache'
complete -c rbuild -n "__fish_rbuild_needs_command" -f -a "completion" -d 'Print shell completions'
complete -c rbuild -n "__fish_rbuild_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -s f -l file -d 'Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -s t -l tag -d 'Name and optionally a tag (format: `name:tag`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l target -d 'Set the target build stage to build' -r -f -a '(__fish_rbuild_stages)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l build-arg -d 'Set build-time variables (`KEY=VALUE`, or `KEY` to take it from the environment)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l build-context -d 'Additional build contexts (`name=DIR`, `name=oci-layout://PATH[:tag|@digest]`, `name=docker-image://REF`, `name=URL` or a git URL)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -s o -l output -d 'Output destination (`type=oci|docker|tar|local,dest=...`, `PATH` for local, `-` for a tar on stdout)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l progress -d 'Set type of progress output (auto, plain, tty, quiet, rawjson)' -r -f -a "auto\t''
plain\t''
tty\t''
quiet\t''
rawjson\t''"
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l no-cache-filter -d 'Do not cache specified stages' -r -f -a '(__fish_rbuild_stages)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l platform -d 'Set target platform for build (`os/arch[/variant]`)' -r -f -a "linux/amd64\t''
linux/arm64\t''
linux/arm/v7\t''
linux/arm/v6\t''
linux/386\t''
linux/ppc64le\t''
linux/s390x\t''
linux/riscv64\t''"
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l label -d 'Set metadata for an image (`KEY=VALUE`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l annotation -d 'Add annotation to the image (`KEY=VALUE`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l iidfile -d 'Write the image ID to a file' -r -F
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l metadata-file -d 'Write build result metadata to a file' -r -F
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -s j -l jobs -d 'Steps run at the same time [default: 4 × cores, at least 8]' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l secret -d 'Secret to expose to RUN mounts (`id=ID,src=FILE` or `id=ID,env=VAR`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l ssh -d 'SSH agent socket or keys to expose to RUN mounts and ssh git sources (`default` or `ID=PATH[,PATH]`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l cache-to -d 'Export the build cache (e.g. "type=registry,ref=host/app:cache,mode=max", "type=local,dest=DIR")' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l cache-from -d 'Import a build cache (e.g. "type=registry,ref=host/app:cache", "type=local,src=DIR", "host/app:cache")' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l config -d 'Registry configuration (buildkitd.toml\'s `[registry."host"]` keys) [default: $XDG_CONFIG_HOME/rbuild/config.toml]' -r -F
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l network -d 'Networking mode for RUN steps: default (the host\'s), none, host' -r -f -a "default\t''
none\t''
host\t''"
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l add-host -d 'Add a host-to-IP mapping to /etc/hosts of RUN steps (format: "host:ip"); repeatable' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l ulimit -d 'A resource limit of RUN steps (format: "name=soft[:hard]", e.g. "nofile=1024:2048"); repeatable' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l shm-size -d 'Size of /dev/shm in RUN steps (e.g. "128m"; default 64m)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l allow -d 'Allow extra privileged entitlement: network.host (needed by RUN --network=host); repeatable' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l root -d 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]' -r -F
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l no-cache -d 'Do not use cache when building the image'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -s q -l quiet -d 'Suppress the build output and print image ID on success'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l push -d 'Push the image to the registry of each -t name (shorthand for --output=type=registry)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l pull -d 'Always resolve base images again (a resolved tag is otherwise reused, also offline)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l debug-cache -d 'Say why each step missed the cache (a log line under the step)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -l debug -d 'Show debug logs (also RBUILD_LOG=debug)'
complete -c rbuild -n "__fish_rbuild_using_subcommand build" -s h -l help -d 'Print help'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and not __fish_seen_subcommand_from du prune help" -s h -l help -d 'Print help'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and not __fish_seen_subcommand_from du prune help" -f -a "du" -d 'Disk usage'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and not __fish_seen_subcommand_from du prune help" -f -a "prune" -d 'Remove build cache'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and not __fish_seen_subcommand_from du prune help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from du" -l filter -d 'Provide filter values (`type=regular`, `description~=REGEXP`, `id=REGEXP`, `type!=internal`, `until=24h`, ...)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from du" -l format -d 'Format the output (`table`, `pretty` or `json`: one JSON object per line)' -r -f -a "table\t''
pretty\t''
json\t''"
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from du" -l root -d 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]' -r -F
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from du" -l verbose -d 'Shorthand for `--format=pretty`'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from du" -l debug -d 'Show debug logs (also RBUILD_LOG=debug)'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from du" -s h -l help -d 'Print help'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l filter -d 'Provide filter values (`until=24h`, `type=regular`, `description~=REGEXP`, `id=REGEXP`, ...)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l reserved-space -d 'Amount of disk space always allowed to keep for cache (e.g. `10GB`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l max-used-space -d 'Maximum amount of disk space allowed to keep for cache' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l min-free-space -d 'Target amount of free disk space after pruning' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l keep-storage -d 'Amount of disk space to keep for cache (deprecated: `--reserved-space`)' -r
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l root -d 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]' -r -F
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -s a -l all -d 'Include base image layers'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -s f -l force -d 'Do not prompt for confirmation'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l verbose -d 'Provide a more verbose output'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -l debug -d 'Show debug logs (also RBUILD_LOG=debug)'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "du" -d 'Disk usage'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Remove build cache'
complete -c rbuild -n "__fish_rbuild_using_subcommand cache; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rbuild -n "__fish_rbuild_using_subcommand completion" -s h -l help -d 'Print help'
complete -c rbuild -n "__fish_rbuild_using_subcommand help; and not __fish_seen_subcommand_from build cache completion help" -f -a "build" -d 'Build an image from a Dockerfile (the default command)'
complete -c rbuild -n "__fish_rbuild_using_subcommand help; and not __fish_seen_subcommand_from build cache completion help" -f -a "cache" -d 'Manage the build cache'
complete -c rbuild -n "__fish_rbuild_using_subcommand help; and not __fish_seen_subcommand_from build cache completion help" -f -a "completion" -d 'Print shell completions'
complete -c rbuild -n "__fish_rbuild_using_subcommand help; and not __fish_seen_subcommand_from build cache completion help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c rbuild -n "__fish_rbuild_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "du" -d 'Disk usage'
complete -c rbuild -n "__fish_rbuild_using_subcommand help; and __fish_seen_subcommand_from cache" -f -a "prune" -d 'Remove build cache'
