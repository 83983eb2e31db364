//! The control protocol between the CLI and the node: one JSON request and
//! one JSON reply per line over the Unix socket in the home.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A request to the node.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Mount a channel.
    Mount {
        /// Channel name.
        channel: String,
        /// Absolute directory.
        dir: PathBuf,
        /// FUSE allow_other.
        allow_other: bool,
    },
    /// Flush and unmount.
    Unmount {
        /// Absolute directory.
        dir: PathBuf,
    },
    /// Node status.
    Status,
    /// Collect garbage now.
    Gc,
    /// Create a channel.
    ChannelCreate {
        /// Name.
        name: String,
    },
    /// List channels.
    ChannelList,
    /// Admit a member by node id (leader only).
    AddMember {
        /// Channel name.
        name: String,
        /// Node id (text form).
        id: String,
        /// `rw` or `ro`.
        role: String,
        /// Where it listens, if known.
        addr: Option<String>,
    },
    /// Remove a member (leader only).
    RemoveMember {
        /// Channel name.
        name: String,
        /// Node id (text form).
        id: String,
    },
    /// Make a one-time invitation token (leader only).
    Invite {
        /// Channel name.
        name: String,
        /// `rw` or `ro`.
        role: String,
    },
    /// Join a channel with a token.
    Join {
        /// The token.
        token: String,
    },
    /// Describe a channel.
    Show {
        /// Channel name.
        name: String,
    },
}

/// A member in `channel show` and `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: String,
    /// `rw` or `ro`.
    pub role: String,
    /// Leader of the channel.
    pub leader: bool,
    /// This node.
    pub me: bool,
    /// Connected now.
    pub connected: bool,
    /// Round-trip time in ms, when connected.
    pub rtt_ms: Option<f64>,
    /// Address known.
    pub addr: Option<String>,
    /// Entries the member has not acknowledged yet.
    pub to_send: u64,
}

/// A channel in `channel show` and `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelStatus {
    /// Name.
    pub name: String,
    /// Channel id (hex).
    pub id: String,
    /// Members, leader first.
    pub members: Vec<MemberStatus>,
    /// Entries received but not applied yet.
    pub to_apply: u64,
    /// Chunks of the channel being fetched from members now.
    #[serde(default)]
    pub fetching: u64,
    /// Payload bytes (entries, manifests, chunks) received for the channel.
    #[serde(default)]
    pub bytes_in: u64,
    /// Payload bytes sent for the channel.
    #[serde(default)]
    pub bytes_out: u64,
}

/// One mount in a status reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountStatus {
    /// Channel name.
    pub channel: String,
    /// Mount directory.
    pub dir: PathBuf,
    /// Files (non-directories) in the channel.
    pub files: u64,
    /// Sum of file sizes.
    pub logical_bytes: u64,
}

/// The node's status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Node process id.
    pub pid: u32,
    /// Node id.
    pub node_id: String,
    /// QUIC listen address.
    pub listen: String,
    /// Mounts.
    pub mounts: Vec<MountStatus>,
    /// Sum of file sizes over all mounted channels.
    pub logical_bytes: u64,
    /// Bytes of distinct chunks stored.
    pub stored_bytes: u64,
    /// Bytes the pack files take on disk (the rest is garbage not
    /// rewritten away yet, and chunk headers).
    #[serde(default)]
    pub pack_bytes: u64,
    /// Of the stored bytes, those fetched from peers (evictable).
    #[serde(default)]
    pub fetched_bytes: u64,
    /// The quota on fetched bytes (`cache_max`), if any.
    #[serde(default)]
    pub cache_max: Option<u64>,
    /// logical / stored.
    pub dedup_ratio: f64,
    /// Distinct chunks.
    pub chunks: u64,
    /// Journal entries.
    pub journal_entries: u64,
    /// Resident memory of the node (bytes).
    pub rss_bytes: u64,
    /// Channels with their members.
    #[serde(default)]
    pub channels: Vec<ChannelStatus>,
    /// Chunks being fetched from peers now.
    #[serde(default)]
    pub fetching: u64,
    /// Bytes received from peers.
    #[serde(default)]
    pub bytes_in: u64,
    /// Bytes sent to peers.
    #[serde(default)]
    pub bytes_out: u64,
}

/// A reply.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Done.
    Ok,
    /// Status.
    Status(Status),
    /// Channel names.
    Channels(Vec<String>),
    /// A line of text for the user (a token, a name).
    Text(String),
    /// One channel.
    Channel(ChannelStatus),
    /// Failure, with a message for the user.
    Err(String),
}

/// Why a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node answers on the socket.
    #[error("node not running")]
    NotRunning,
    /// Talking to the node failed.
    #[error("talking to the node")]
    Io(#[from] std::io::Error),
    /// The node sent something unreadable.
    #[error("bad reply from the node")]
    Bad(#[from] serde_json::Error),
}

/// Sends one request and waits for the reply.
pub fn call(socket: &Path, req: &Request) -> Result<Reply, ClientError> {
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning)
        }
        Err(e) => return Err(e.into()),
    };
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(ClientError::NotRunning);
    }
    Ok(serde_json::from_str(&reply)?)
}

/// True when a node answers on `socket`.
pub fn running(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}
