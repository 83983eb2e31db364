//! The network layer: a quinn endpoint with mutual TLS 1.3 between node
//! identities, length-prefixed message frames, and the replication of
//! channel journals and chunks between members. It never writes files: it
//! hands verified entries and chunks to the node.

pub mod delta;
pub mod frame;
pub mod proto;
pub mod repl;
pub mod tls;

pub use repl::{Host, Net, PeerStatus};
