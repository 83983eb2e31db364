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
        /// QUIC listen address for peers.
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
}
