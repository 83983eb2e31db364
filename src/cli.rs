//! Command-line surface of `chanfs`: the clap definition shared by the binary,
//! the shell-completion generator and the `mount.chanfs` helper.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// A FUSE filesystem that syncs transparently between authorized peers.
#[derive(Debug, Parser)]
#[command(name = "chanfs", version, about)]
pub struct Cli {
    /// Home directory holding the identity, config and store.
    #[arg(long, global = true, env = "CHANFS_HOME")]
    pub home: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the home: identity (key and certificate), config and store.
    Init {
        /// QUIC listen address for peers (port 0: a free port below the
        /// ephemeral range, chosen now and kept).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Import this X.509 certificate (PEM) instead of generating one.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Private key (PEM, PKCS#8 Ed25519) matching --cert.
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Print this node's id.
    Id,
    /// Manage channels.
    Channel {
        /// Channel command.
        #[command(subcommand)]
        command: ChannelCommand,
    },
    /// Mount a channel at a directory (starts the node if needed).
    Mount {
        /// Channel name.
        name: String,
        /// Directory to mount at (must exist).
        dir: PathBuf,
        /// Run the node in the foreground (for systemd); returns when unmounted.
        #[arg(long)]
        foreground: bool,
        /// Let other users use the mount (FUSE allow_other; needs
        /// user_allow_other in /etc/fuse.conf when not root).
        #[arg(long)]
        allow_other: bool,
    },
    /// Run the node in the foreground without a mount: it keeps serving
    /// the channels' members (entries, chunks) until SIGTERM or Ctrl-C;
    /// `mount` and `unmount` use it meanwhile (for an always-on peer).
    Serve,
    /// Flush everything and unmount a directory.
    Unmount {
        /// The mounted directory.
        dir: PathBuf,
    },
    /// Show the node, its mounts and store figures.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Free the space of removed and overwritten files now (the node also
    /// does it every `gc_interval` seconds).
    Gc,
    /// Print shell completions for SHELL to standard output.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run the node daemon (started by `mount`; not for direct use).
    #[command(hide = true)]
    Node,
}

/// Channel subcommands.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Create a channel with this node as leader.
    Create {
        /// Channel name (letters, digits, `-`, `_`, `.`).
        name: String,
    },
    /// List channels.
    List,
    /// Admit a node to a channel (leader only); prints a token it joins with.
    AddMember {
        /// Channel name.
        name: String,
        /// The node's id (`chanfs id` on that node).
        node_id: String,
        /// What it may do.
        #[arg(long, default_value = "rw", value_parser = ["rw", "ro"])]
        role: String,
        /// Where it listens (`host:port`), if it should be dialed.
        #[arg(long)]
        addr: Option<String>,
    },
    /// Remove a member from a channel (leader only).
    RemoveMember {
        /// Channel name.
        name: String,
        /// The member's node id.
        node_id: String,
    },
    /// Print a one-time invitation token for a channel (leader only).
    Invite {
        /// Channel name.
        name: String,
        /// What the invited node may do.
        #[arg(long, default_value = "rw", value_parser = ["rw", "ro"])]
        role: String,
    },
    /// Join a channel with an invitation token.
    Join {
        /// The token printed by `invite` or `add-member` on the leader.
        token: String,
    },
    /// Show a channel: leader, members, roles, addresses, connections.
    Show {
        /// Channel name.
        name: String,
    },
}
