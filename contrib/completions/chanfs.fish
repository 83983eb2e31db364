# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_chanfs_global_optspecs
    string join \n home= h/help V/version
end

function __fish_chanfs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_chanfs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_chanfs_using_subcommand
    set -l cmd (__fish_chanfs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c chanfs -n "__fish_chanfs_needs_command" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_needs_command" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_needs_command" -s V -l version -d 'Print version'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "init" -d 'Create the home: identity (key and certificate), config and store'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "id" -d 'Print this node\'s id'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "channel" -d 'Manage channels'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "mount" -d 'Mount a channel at a directory (starts the node if needed)'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "serve" -d 'Run the node in the foreground without a mount: it keeps serving the channels\' members (entries, chunks) until SIGTERM or Ctrl-C; `mount` and `unmount` use it meanwhile (for an always-on peer)'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "unmount" -d 'Flush everything and unmount a directory'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "status" -d 'Show the node, its mounts and store figures'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "gc" -d 'Free the space of removed and overwritten files now (the node also does it every `gc_interval` seconds)'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "completions" -d 'Print shell completions for SHELL to standard output'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "node" -d 'Run the node daemon (started by `mount`; not for direct use)'
complete -c chanfs -n "__fish_chanfs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chanfs -n "__fish_chanfs_using_subcommand init" -l listen -d 'QUIC listen address for peers (port 0: a free port below the ephemeral range, chosen now and kept)' -r
complete -c chanfs -n "__fish_chanfs_using_subcommand init" -l cert -d 'Import this X.509 certificate (PEM) instead of generating one' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand init" -l key -d 'Private key (PEM, PKCS#8 Ed25519) matching --cert' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand init" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand init" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand id" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand id" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "create" -d 'Create a channel with this node as leader'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "list" -d 'List channels'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "add-member" -d 'Admit a node to a channel (leader only); prints a token it joins with'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "remove-member" -d 'Remove a member from a channel (leader only)'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "invite" -d 'Print a one-time invitation token for a channel (leader only)'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "join" -d 'Join a channel with an invitation token'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "show" -d 'Show a channel: leader, members, roles, addresses, connections'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and not __fish_seen_subcommand_from create list add-member remove-member invite join show help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from create" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from list" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from add-member" -l role -d 'What it may do' -r -f -a "rw\t''
ro\t''"
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from add-member" -l addr -d 'Where it listens (`host:port`), if it should be dialed' -r
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from add-member" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from add-member" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from remove-member" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from remove-member" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from invite" -l role -d 'What the invited node may do' -r -f -a "rw\t''
ro\t''"
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from invite" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from invite" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from join" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from join" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from show" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create a channel with this node as leader'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "list" -d 'List channels'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "add-member" -d 'Admit a node to a channel (leader only); prints a token it joins with'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "remove-member" -d 'Remove a member from a channel (leader only)'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "invite" -d 'Print a one-time invitation token for a channel (leader only)'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "join" -d 'Join a channel with an invitation token'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show a channel: leader, members, roles, addresses, connections'
complete -c chanfs -n "__fish_chanfs_using_subcommand channel; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chanfs -n "__fish_chanfs_using_subcommand mount" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand mount" -l foreground -d 'Run the node in the foreground (for systemd); returns when unmounted'
complete -c chanfs -n "__fish_chanfs_using_subcommand mount" -l allow-other -d 'Let other users use the mount (FUSE allow_other; needs user_allow_other in /etc/fuse.conf when not root)'
complete -c chanfs -n "__fish_chanfs_using_subcommand mount" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand serve" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand serve" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand unmount" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand unmount" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand status" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand status" -l json -d 'Print JSON instead of text'
complete -c chanfs -n "__fish_chanfs_using_subcommand status" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand gc" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand gc" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand completions" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand completions" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand node" -l home -d 'Home directory holding the identity, config and store' -r -F
complete -c chanfs -n "__fish_chanfs_using_subcommand node" -s h -l help -d 'Print help'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "init" -d 'Create the home: identity (key and certificate), config and store'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "id" -d 'Print this node\'s id'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "channel" -d 'Manage channels'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "mount" -d 'Mount a channel at a directory (starts the node if needed)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "serve" -d 'Run the node in the foreground without a mount: it keeps serving the channels\' members (entries, chunks) until SIGTERM or Ctrl-C; `mount` and `unmount` use it meanwhile (for an always-on peer)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "unmount" -d 'Flush everything and unmount a directory'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "status" -d 'Show the node, its mounts and store figures'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "gc" -d 'Free the space of removed and overwritten files now (the node also does it every `gc_interval` seconds)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "completions" -d 'Print shell completions for SHELL to standard output'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "node" -d 'Run the node daemon (started by `mount`; not for direct use)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and not __fish_seen_subcommand_from init id channel mount serve unmount status gc completions node help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "create" -d 'Create a channel with this node as leader'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "list" -d 'List channels'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "add-member" -d 'Admit a node to a channel (leader only); prints a token it joins with'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "remove-member" -d 'Remove a member from a channel (leader only)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "invite" -d 'Print a one-time invitation token for a channel (leader only)'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "join" -d 'Join a channel with an invitation token'
complete -c chanfs -n "__fish_chanfs_using_subcommand help; and __fish_seen_subcommand_from channel" -f -a "show" -d 'Show a channel: leader, members, roles, addresses, connections'
