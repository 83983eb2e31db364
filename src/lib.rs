//! chanfs: a FUSE filesystem that syncs transparently between authorized
//! peers. A channel (a shared tree of files) is mounted at a directory; every
//! change made through the mount is cut into content-defined chunks, stored
//! once, and recorded as a signed journal entry that replication reads.
//!
//! Layers, data flowing one way: [`cli`] → [`control`] → [`node`] →
//! [`fs`] (FUSE adapter) → [`store`] (redb, packs, chunker) and [`journal`].

pub mod cli;
pub mod control;
pub mod fs;
pub mod gc;
pub mod home;
pub mod identity;
pub mod journal;
pub mod net;
pub mod node;
pub mod store;
