//! The journal: every change to a channel's tree as an entry signed by its
//! author. Entries are numbered densely per author (1, 2, 3 …) and carry a
//! hybrid logical clock, so a version vector (author → highest seq) says
//! exactly what a node has. The journal is the outbox sync reads from: an
//! entry is appended in the same redb transaction as the change it records.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::store::Hash;

/// Stable identity of a file or directory across renames and nodes:
/// 8 bytes of the creating node's id, then that node's local counter.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct FileId(pub [u8; 16]);

impl FileId {
    /// The channel root.
    pub const ROOT: FileId = FileId([0; 16]);

    /// Id number `n` minted by the node whose id starts with `prefix`.
    pub fn new(prefix: [u8; 8], n: u64) -> FileId {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&prefix);
        b[8..].copy_from_slice(&n.to_be_bytes());
        FileId(b)
    }
}

/// Kinds of node in the tree (append-only: numbers never shift).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// Attributes a change can set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    /// New permission bits (with setuid/setgid/sticky).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time (ns since the epoch).
    pub atime: Option<i64>,
    /// New modification time (ns since the epoch).
    pub mtime: Option<i64>,
}

/// One change to the tree (append-only enum: variants are only added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A node appeared under `parent` as `name`.
    Create {
        /// New node.
        id: FileId,
        /// Directory it appeared in.
        parent: FileId,
        /// Its name.
        name: Vec<u8>,
        /// What it is.
        kind: NodeKind,
        /// Mode bits.
        mode: u32,
        /// Symlink target (empty otherwise).
        target: Vec<u8>,
    },
    /// `name` in `parent` was removed: the node's last name where the
    /// remover stood (one name of a file that keeps others is an
    /// [`Op::Unlink`]; builds before it wrote this for both).
    Remove {
        /// Node removed.
        id: FileId,
        /// Directory it was in.
        parent: FileId,
        /// Its name there.
        name: Vec<u8>,
        /// The content version the remover saw (edit beats delete: a file
        /// whose content changed meanwhile is kept).
        seen: Option<Hash>,
    },
    /// A node moved (one entry; content is never re-sent).
    Move {
        /// Node moved.
        id: FileId,
        /// New directory.
        parent: FileId,
        /// New name.
        name: Vec<u8>,
        /// Old directory.
        old_parent: FileId,
        /// Old name.
        old_name: Vec<u8>,
    },
    /// An extra name for an existing file (hard link).
    Link {
        /// Node linked.
        id: FileId,
        /// Directory of the new name.
        parent: FileId,
        /// The new name.
        name: Vec<u8>,
    },
    /// Attributes changed.
    SetAttr {
        /// Node changed.
        id: FileId,
        /// What changed.
        attr: AttrChange,
    },
    /// A file's content is now `manifest` (`None`: empty), replacing `replaces`.
    Content {
        /// File changed.
        id: FileId,
        /// New manifest hash.
        manifest: Option<Hash>,
        /// New size.
        size: u64,
        /// Manifest this version replaces.
        replaces: Option<Hash>,
        /// Modification time (ns).
        mtime: i64,
    },
    /// An extended attribute was set (`Some`) or removed (`None`).
    Xattr {
        /// Node changed.
        id: FileId,
        /// Attribute name.
        name: Vec<u8>,
        /// New value.
        value: Option<Vec<u8>>,
    },
    /// Membership changed (valid only when signed by the channel's leader).
    Membership(MemberOp),
    /// A conflict copy, announced by the node that first changes it (an
    /// edit, rename or link), ahead of that change: nodes that never made
    /// the copy, or dropped it as superseded, make it from this, so the
    /// change finds it.
    CopyMade {
        /// The copy.
        id: FileId,
        /// Directory it is in.
        parent: FileId,
        /// Its name there.
        name: Vec<u8>,
        /// Mode bits.
        mode: u32,
        /// The tree's description of it (origin, version, stamps and
        /// attributes), which only the tree reads.
        copy: Vec<u8>,
    },
    /// One name of a file that keeps others where the remover stood (a
    /// hard link's): `name` in `parent` was removed, the file stays. A
    /// concurrent link elsewhere then tells a remove of the last name
    /// (an [`Op::Remove`]) from this one.
    Unlink {
        /// File whose name was removed.
        id: FileId,
        /// Directory the name was in.
        parent: FileId,
        /// The name.
        name: Vec<u8>,
        /// The content version the remover saw.
        seen: Option<Hash>,
    },
    /// A remove of a node's last name, as [`Op::Remove`], that also says
    /// which placement of the node the remover saw. A move into another
    /// directory that the remover had not seen (one stamped after that
    /// placement) keeps the node, whichever of the two arrives first.
    RemoveAt {
        /// Node removed.
        id: FileId,
        /// Directory it was in.
        parent: FileId,
        /// Its name there.
        name: Vec<u8>,
        /// The content version the remover saw.
        seen: Option<Hash>,
        /// Stamp (clock, author's id prefix) of the create or move that
        /// put it where the remover saw it.
        place: (u64, [u8; 8]),
    },
}

/// What a member may do in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Read and write.
    Rw,
    /// Read only: its mounts refuse writes and peers reject its entries.
    Ro,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Rw => "rw",
            Role::Ro => "ro",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "rw" => Ok(Role::Rw),
            "ro" => Ok(Role::Ro),
            _ => Err(format!("role must be rw or ro, not {s:?}")),
        }
    }
}

/// A member of a channel, as the leader admitted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: [u8; 32],
    /// Ed25519 public key (its node id is derived from it).
    pub key: [u8; 32],
    /// Role.
    pub role: Role,
    /// Addresses it listens on (`host:port`), may be empty.
    pub addrs: Vec<String>,
}

/// A journal change to a channel's membership, signed by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberOp {
    /// Admit (or change the role or addresses of) a member.
    Add(Member),
    /// Remove a member: it is disconnected and all its entries rejected
    /// (written by builds before [`MemberOp::Retire`]).
    Remove([u8; 32]),
    /// Remove a member: it is disconnected; the entries it signed up to
    /// `upto` (those the leader held when it removed it) stay valid, later
    /// ones are rejected.
    Retire {
        /// The member's node id.
        id: [u8; 32],
        /// Its last entry that stays valid.
        upto: u64,
    },
}

/// An unsigned journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version of this entry.
    pub version: u16,
    /// Channel id.
    pub channel: [u8; 16],
    /// Author node id.
    pub author: [u8; 32],
    /// Dense per-author sequence number, from 1.
    pub seq: u64,
    /// Hybrid logical clock (µs since the epoch, bumped to stay increasing).
    pub hlc: u64,
    /// The change.
    pub op: Op,
    /// [`SignedEntry::digest`] of the author's previous entry in this
    /// channel (zeros for seq 1): the entries of an author form a chain,
    /// so the signature of the last entry of a run vouches for the run.
    pub prev: Hash,
}

/// An entry with its author's Ed25519 signature over the entry bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedEntry {
    /// postcard bytes of [`Entry`].
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
    /// Signature over `entry`.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// Errors reading or verifying an entry.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Bytes are not an entry.
    #[error("malformed journal entry: {0}")]
    Malformed(#[from] postcard::Error),
    /// Signature does not verify.
    #[error("journal entry signature does not verify")]
    BadSignature,
}

impl SignedEntry {
    /// blake3 of the entry bytes (what the next entry's `prev` names).
    pub fn digest(&self) -> Hash {
        *blake3::hash(&self.entry).as_bytes()
    }

    /// The entry, without checking the signature (chained entries are
    /// vouched for by a later entry's signature).
    pub fn decode(&self) -> Result<Entry, JournalError> {
        Ok(postcard::from_bytes(&self.entry)?)
    }

    /// Signs `entry` with `key`.
    pub fn sign(entry: &Entry, key: &SigningKey) -> Result<SignedEntry, JournalError> {
        let bytes = postcard::to_allocvec(entry)?;
        let sig = key.sign(&bytes).to_bytes().to_vec();
        Ok(SignedEntry { entry: bytes, sig })
    }

    /// Verifies the signature with the author's key and returns the entry.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Entry, JournalError> {
        let sig = Signature::from_slice(&self.sig).map_err(|_| JournalError::BadSignature)?;
        key.verify(&self.entry, &sig)
            .map_err(|_| JournalError::BadSignature)?;
        Ok(postcard::from_bytes(&self.entry)?)
    }
}

/// Hybrid logical clock: wall time in µs, never going backwards.
#[derive(Debug, Default)]
pub struct Hlc(AtomicU64);

impl Hlc {
    /// Takes in a timestamp seen on a remote entry, so that later local
    /// entries order after it.
    pub fn observe(&self, remote: u64) {
        self.0.fetch_max(remote, Ordering::Relaxed);
    }

    /// Next timestamp, greater than every earlier one.
    pub fn now(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = wall.max(cur + 1);
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(v) => cur = v,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_and_tamper() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let e = Entry {
            version: 1,
            channel: [1; 16],
            author: [2; 32],
            seq: 1,
            hlc: 5,
            prev: [0; 32],
            op: Op::Remove {
                id: FileId::ROOT,
                parent: FileId::ROOT,
                name: b"x".to_vec(),
                seen: None,
            },
        };
        let mut s = SignedEntry::sign(&e, &key).expect("sign");
        assert_eq!(s.verify(&key.verifying_key()).expect("verify"), e);
        s.entry[3] ^= 1;
        assert!(s.verify(&key.verifying_key()).is_err());
    }

    #[test]
    fn ops_keep_their_numbers() {
        // postcard writes the variant index first: variants only append.
        let unlink = Op::Unlink {
            id: FileId::ROOT,
            parent: FileId::ROOT,
            name: b"x".to_vec(),
            seen: None,
        };
        assert_eq!(postcard::to_allocvec(&unlink).expect("encode")[0], 9);
        let remove = Op::Remove {
            id: FileId::ROOT,
            parent: FileId::ROOT,
            name: b"x".to_vec(),
            seen: None,
        };
        assert_eq!(postcard::to_allocvec(&remove).expect("encode")[0], 1);
        let remove_at = Op::RemoveAt {
            id: FileId::ROOT,
            parent: FileId::ROOT,
            name: b"x".to_vec(),
            seen: None,
            place: (1, [2; 8]),
        };
        assert_eq!(postcard::to_allocvec(&remove_at).expect("encode")[0], 10);
    }

    #[test]
    fn hlc_increases() {
        let h = Hlc::default();
        let a = h.now();
        assert!(h.now() > a);
    }
}
