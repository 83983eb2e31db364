//! The messages of protocol `chanfs/1`. Every bidirectional stream starts
//! with one [`Open`] frame saying what it is for: a channel's replication
//! (long-lived, one per channel and connection), one chunk request, or a
//! join with an invitation. Types only grow (new variants at the end).

use serde::{Deserialize, Serialize};

use crate::journal::{Member, Role, SignedEntry};
use crate::store::Hash;

/// Protocol version carried in [`Open`].
pub const PROTO: u16 = 1;

/// A version vector on the wire: (author, highest contiguous seq).
pub type WireVv = Vec<([u8; 32], u64)>;

/// First frame of a stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum Open {
    /// Replicate channel `channel`; the opener's version vector.
    Channel {
        /// Protocol version.
        proto: u16,
        /// Channel id.
        channel: [u8; 16],
        /// What the opener has.
        vv: WireVv,
    },
    /// Admit me to `channel` with an invitation secret.
    Join {
        /// Protocol version.
        proto: u16,
        /// Channel id.
        channel: [u8; 16],
        /// One-time secret from the token.
        secret: [u8; 16],
        /// The joiner's Ed25519 public key.
        key: [u8; 32],
        /// Where the joiner listens.
        addrs: Vec<String>,
    },
    /// Send the bytes that changed between two versions of a file.
    Delta {
        /// Channel id.
        channel: [u8; 16],
        /// The version the asker holds.
        old: Hash,
        /// The version it wants.
        new: Hash,
    },
    /// Send these chunks of channel `channel`, one [`ChunkReply`] each, in order.
    Chunks {
        /// Channel id.
        channel: [u8; 16],
        /// Chunk hashes (at most [`MAX_CHUNKS`]).
        hashes: Vec<Hash>,
    },
}

/// Most chunks asked for in one [`Open::Chunks`].
pub const MAX_CHUNKS: usize = 64;

/// Reply to [`Open::Delta`].
#[derive(Debug, Serialize, Deserialize)]
pub enum DeltaReply {
    /// The changed neighbourhood: its new bytes are the old ones' first
    /// `pre` bytes, `middle`, and the old ones' last `suf` bytes.
    Region {
        /// Bytes shared at the start.
        pre: u64,
        /// Bytes shared at the end.
        suf: u64,
        /// The new bytes in between.
        #[serde(with = "serde_bytes")]
        middle: Vec<u8>,
    },
    /// Not available here (too large, content not stored, or a version
    /// not of the channel).
    Unavailable,
}

/// Frames on a channel stream after [`Open::Channel`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ChanMsg {
    /// The accepter's version vector (reply to the open).
    Hello {
        /// What the accepter has.
        vv: WireVv,
    },
    /// Entries the receiver lacks, in author order, with the manifests
    /// their content changes name.
    Entries {
        /// Signed entries.
        entries: Vec<SignedEntry>,
        /// Encoded manifests (content-addressed: blake3 of the bytes).
        manifests: Vec<serde_bytes::ByteBuf>,
        /// Chunks of small files (content-addressed: blake3 of the bytes).
        chunks: Vec<serde_bytes::ByteBuf>,
    },
    /// What the sender has now (anti-entropy: the peer resends from here).
    Vv {
        /// Version vector.
        vv: WireVv,
    },
    /// A vector `member` sent the sender at a time when the sender held
    /// every entry of `member`'s own it counts (relayed, so that members
    /// that never meet learn what the other has seen).
    Confirmed {
        /// The member that sent the vector.
        member: [u8; 32],
        /// Its version vector.
        vv: WireVv,
    },
}

/// Reply to [`Open::Chunk`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ChunkReply {
    /// The chunk's bytes.
    Found(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Not stored here, or not of the channel asked about.
    Missing,
}

impl ChunkReply {
    /// The whole frame (length prefix and body) of `Found` with `len`
    /// bytes, built around them: `fill` writes the bytes in place, so they
    /// reach the stream without being copied on the way. The same bytes as
    /// `write_frame(&ChunkReply::Found(bytes))`.
    pub fn found_frame<E>(
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        // Postcard: the variant index, then the length, both as varints.
        let mut head = vec![0u8];
        let mut n = len;
        while n >= 0x80 {
            head.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        head.push(n as u8);
        let body = head.len() + len;
        let mut out = Vec::with_capacity(4 + body);
        out.extend_from_slice(&(body as u32).to_be_bytes());
        out.extend_from_slice(&head);
        let at = out.len();
        out.resize(4 + body, 0);
        fill(&mut out[at..])?;
        Ok(out)
    }
}

/// [`ChunkReply`] decoded in place: the bytes borrow from the frame.
#[derive(Debug, Deserialize)]
pub enum ChunkReplyRef<'a> {
    /// The chunk's bytes.
    Found(#[serde(borrow)] &'a [u8]),
    /// Not stored here.
    Missing,
}

/// Reply to [`Open::Join`].
#[derive(Debug, Serialize, Deserialize)]
pub enum JoinReply {
    /// Admitted: the channel as the leader knows it.
    Welcome {
        /// Channel name at the leader.
        name: String,
        /// Leader node id.
        leader: [u8; 32],
        /// Members, the joiner among them.
        members: Vec<Member>,
    },
    /// Refused, with the reason.
    Refused(String),
}

/// An invitation: everything a node needs to join a channel once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Token {
    /// Channel id.
    pub channel: [u8; 16],
    /// Channel name.
    pub name: String,
    /// Leader node id.
    pub leader: [u8; 32],
    /// Leader addresses.
    pub addrs: Vec<String>,
    /// One-time secret.
    pub secret: [u8; 16],
    /// Role granted.
    pub role: Role,
}

const TOKEN_PREFIX: &str = "chanfs1-";

impl Token {
    /// The one-line text form.
    pub fn encode(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        format!(
            "{TOKEN_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes)
        )
    }

    /// Parses the text form.
    pub fn decode(s: &str) -> Result<Token, String> {
        let body = s
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or("not a chanfs invitation token")?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.as_bytes())
            .map_err(|e| format!("damaged invitation token: {e}"))?;
        postcard::from_bytes(&bytes).map_err(|e| format!("damaged invitation token: {e}"))
    }
}

/// Application error codes when closing a connection or stream.
pub mod code {
    /// Not a member of any channel we share.
    pub const NOT_MEMBER: u32 = 1;
    /// Malformed, oversized or unknown message.
    pub const PROTOCOL: u32 = 2;
    /// Removed from the channel.
    pub const REMOVED: u32 = 3;
    /// A duplicate connection was dropped.
    pub const DUPLICATE: u32 = 4;
    /// The node is stopping.
    pub const BYE: u32 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_and_garbage() {
        let t = Token {
            channel: [1; 16],
            name: "docs".into(),
            leader: [2; 32],
            addrs: vec!["127.0.0.1:4000".into()],
            secret: [3; 16],
            role: Role::Ro,
        };
        let s = t.encode();
        let back = Token::decode(&s).expect("decode");
        assert_eq!(back.name, "docs");
        assert_eq!(back.role, Role::Ro);
        assert!(Token::decode("hello").is_err());
        assert!(Token::decode("chanfs1-!!!").is_err());
    }

    /// A `Found` frame built in place is the frame `write_frame` makes,
    /// for lengths whose varint takes one to four bytes.
    #[tokio::test]
    async fn a_found_frame_built_in_place_is_the_encoded_one() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 65_536, 1 << 21] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let mut want = Vec::new();
            crate::net::frame::write_frame(&mut want, &ChunkReply::Found(data.clone()))
                .await
                .expect("encode");
            let got = ChunkReply::found_frame(len, |b| {
                b.copy_from_slice(&data);
                Ok::<(), ()>(())
            })
            .expect("build");
            assert!(got == want, "length {len}");
        }
    }
}
