
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'rbuild' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'rbuild'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'rbuild' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('build', 'build', [CompletionResultType]::ParameterValue, 'Build an image from a Dockerfile (the default command)')
            [CompletionResult]::new('cache', 'cache', [CompletionResultType]::ParameterValue, 'Manage the build cache')
            [CompletionResult]::new('completion', 'completion', [CompletionResultType]::ParameterValue, 'Print shell completions')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'rbuild;build' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'Name of the Dockerfile (default: PATH/Dockerfile; `-` reads it from stdin)')
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Name and optionally a tag (format: `name:tag`)')
            [CompletionResult]::new('--tag', '--tag', [CompletionResultType]::ParameterName, 'Name and optionally a tag (format: `name:tag`)')
            [CompletionResult]::new('--target', '--target', [CompletionResultType]::ParameterName, 'Set the target build stage to build')
            [CompletionResult]::new('--build-arg', '--build-arg', [CompletionResultType]::ParameterName, 'Set build-time variables (`KEY=VALUE`, or `KEY` to take it from the environment)')
            [CompletionResult]::new('--build-context', '--build-context', [CompletionResultType]::ParameterName, 'Additional build contexts (`name=DIR`, `name=oci-layout://PATH[:tag|@digest]`, `name=docker-image://REF`, `name=URL` or a git URL)')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output destination (`type=oci|docker|tar|local,dest=...`, `PATH` for local, `-` for a tar on stdout)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output destination (`type=oci|docker|tar|local,dest=...`, `PATH` for local, `-` for a tar on stdout)')
            [CompletionResult]::new('--progress', '--progress', [CompletionResultType]::ParameterName, 'Set type of progress output (auto, plain, tty, quiet, rawjson)')
            [CompletionResult]::new('--no-cache-filter', '--no-cache-filter', [CompletionResultType]::ParameterName, 'Do not cache specified stages')
            [CompletionResult]::new('--platform', '--platform', [CompletionResultType]::ParameterName, 'Set target platform for build (`os/arch[/variant]`)')
            [CompletionResult]::new('--label', '--label', [CompletionResultType]::ParameterName, 'Set metadata for an image (`KEY=VALUE`)')
            [CompletionResult]::new('--annotation', '--annotation', [CompletionResultType]::ParameterName, 'Add annotation to the image (`KEY=VALUE`)')
            [CompletionResult]::new('--iidfile', '--iidfile', [CompletionResultType]::ParameterName, 'Write the image ID to a file')
            [CompletionResult]::new('--metadata-file', '--metadata-file', [CompletionResultType]::ParameterName, 'Write build result metadata to a file')
            [CompletionResult]::new('-j', '-j', [CompletionResultType]::ParameterName, 'Steps run at the same time [default: 4 × cores, at least 8]')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Steps run at the same time [default: 4 × cores, at least 8]')
            [CompletionResult]::new('--secret', '--secret', [CompletionResultType]::ParameterName, 'Secret to expose to RUN mounts (`id=ID,src=FILE` or `id=ID,env=VAR`)')
            [CompletionResult]::new('--ssh', '--ssh', [CompletionResultType]::ParameterName, 'SSH agent socket or keys to expose to RUN mounts and ssh git sources (`default` or `ID=PATH[,PATH]`)')
            [CompletionResult]::new('--cache-to', '--cache-to', [CompletionResultType]::ParameterName, 'Export the build cache (e.g. "type=registry,ref=host/app:cache,mode=max", "type=local,dest=DIR")')
            [CompletionResult]::new('--cache-from', '--cache-from', [CompletionResultType]::ParameterName, 'Import a build cache (e.g. "type=registry,ref=host/app:cache", "type=local,src=DIR", "host/app:cache")')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Registry configuration (buildkitd.toml''s `[registry."host"]` keys) [default: $XDG_CONFIG_HOME/rbuild/config.toml]')
            [CompletionResult]::new('--network', '--network', [CompletionResultType]::ParameterName, 'Networking mode for RUN steps: default (the host''s), none, host')
            [CompletionResult]::new('--add-host', '--add-host', [CompletionResultType]::ParameterName, 'Add a host-to-IP mapping to /etc/hosts of RUN steps (format: "host:ip"); repeatable')
            [CompletionResult]::new('--ulimit', '--ulimit', [CompletionResultType]::ParameterName, 'A resource limit of RUN steps (format: "name=soft[:hard]", e.g. "nofile=1024:2048"); repeatable')
            [CompletionResult]::new('--shm-size', '--shm-size', [CompletionResultType]::ParameterName, 'Size of /dev/shm in RUN steps (e.g. "128m"; default 64m)')
            [CompletionResult]::new('--allow', '--allow', [CompletionResultType]::ParameterName, 'Allow extra privileged entitlement: network.host (needed by RUN --network=host); repeatable')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]')
            [CompletionResult]::new('--no-cache', '--no-cache', [CompletionResultType]::ParameterName, 'Do not use cache when building the image')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'Suppress the build output and print image ID on success')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'Suppress the build output and print image ID on success')
            [CompletionResult]::new('--push', '--push', [CompletionResultType]::ParameterName, 'Push the image to the registry of each -t name (shorthand for --output=type=registry)')
            [CompletionResult]::new('--pull', '--pull', [CompletionResultType]::ParameterName, 'Always resolve base images again (a resolved tag is otherwise reused, also offline)')
            [CompletionResult]::new('--debug-cache', '--debug-cache', [CompletionResultType]::ParameterName, 'Say why each step missed the cache (a log line under the step)')
            [CompletionResult]::new('--debug', '--debug', [CompletionResultType]::ParameterName, 'Show debug logs (also RBUILD_LOG=debug)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'rbuild;cache' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('du', 'du', [CompletionResultType]::ParameterValue, 'Disk usage')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove build cache')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'rbuild;cache;du' {
            [CompletionResult]::new('--filter', '--filter', [CompletionResultType]::ParameterName, 'Provide filter values (`type=regular`, `description~=REGEXP`, `id=REGEXP`, `type!=internal`, `until=24h`, ...)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Format the output (`table`, `pretty` or `json`: one JSON object per line)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Shorthand for `--format=pretty`')
            [CompletionResult]::new('--debug', '--debug', [CompletionResultType]::ParameterName, 'Show debug logs (also RBUILD_LOG=debug)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'rbuild;cache;prune' {
            [CompletionResult]::new('--filter', '--filter', [CompletionResultType]::ParameterName, 'Provide filter values (`until=24h`, `type=regular`, `description~=REGEXP`, `id=REGEXP`, ...)')
            [CompletionResult]::new('--reserved-space', '--reserved-space', [CompletionResultType]::ParameterName, 'Amount of disk space always allowed to keep for cache (e.g. `10GB`)')
            [CompletionResult]::new('--max-used-space', '--max-used-space', [CompletionResultType]::ParameterName, 'Maximum amount of disk space allowed to keep for cache')
            [CompletionResult]::new('--min-free-space', '--min-free-space', [CompletionResultType]::ParameterName, 'Target amount of free disk space after pruning')
            [CompletionResult]::new('--keep-storage', '--keep-storage', [CompletionResultType]::ParameterName, 'Amount of disk space to keep for cache (deprecated: `--reserved-space`)')
            [CompletionResult]::new('--root', '--root', [CompletionResultType]::ParameterName, 'State directory (cache, blobs, snapshots) [default: $XDG_CACHE_HOME/rbuild, or /var/lib/rbuild for root]')
            [CompletionResult]::new('-a', '-a', [CompletionResultType]::ParameterName, 'Include base image layers')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Include base image layers')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Do not prompt for confirmation')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Do not prompt for confirmation')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'Provide a more verbose output')
            [CompletionResult]::new('--debug', '--debug', [CompletionResultType]::ParameterName, 'Show debug logs (also RBUILD_LOG=debug)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'rbuild;cache;help' {
            [CompletionResult]::new('du', 'du', [CompletionResultType]::ParameterValue, 'Disk usage')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove build cache')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'rbuild;cache;help;du' {
            break
        }
        'rbuild;cache;help;prune' {
            break
        }
        'rbuild;cache;help;help' {
            break
        }
        'rbuild;completion' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'rbuild;help' {
            [CompletionResult]::new('build', 'build', [CompletionResultType]::ParameterValue, 'Build an image from a Dockerfile (the default command)')
            [CompletionResult]::new('cache', 'cache', [CompletionResultType]::ParameterValue, 'Manage the build cache')
            [CompletionResult]::new('completion', 'completion', [CompletionResultType]::ParameterValue, 'Print shell completions')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'rbuild;help;build' {
            break
        }
        'rbuild;help;cache' {
            [CompletionResult]::new('du', 'du', [CompletionResultType]::ParameterValue, 'Disk usage')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Remove build cache')
            break
        }
        'rbuild;help;cache;du' {
            break
        }
        'rbuild;help;cache;prune' {
            break
        }
        'rbuild;help;completion' {
            break
        }
        'rbuild;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
