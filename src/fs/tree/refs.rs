//! What a tree refers to in the chunk store, for the garbage collector:
//! the versions of its files, and the last versions of removed ones (which
//! a concurrent move or link elsewhere may still bring back).

use std::sync::Arc;

use super::Tree;
use crate::journal::FileId;
use crate::store::manifest::Manifest;
use crate::store::Hash;

/// A tree's references into the store.
#[derive(Default)]
pub struct TreeRefs {
    /// Current versions of files, each with its manifest where loaded.
    pub versions: Vec<(Hash, Option<Arc<Manifest>>)>,
    /// Removed files whose last version a tombstone keeps: (file, version).
    pub tombs: Vec<(FileId, Hash)>,
    /// Current versions made on this node (its own content: never
    /// evicted, see `crate::store::cache`).
    pub own: Vec<Hash>,
}

impl Tree {
    /// Every version this tree refers to.
    pub fn refs(&self) -> TreeRefs {
        let versions = self
            .nodes
            .values()
            .filter_map(|n| n.content.map(|h| (h, n.manifest.clone())))
            .collect();
        let tombs = self
            .tombs
            .iter()
            .filter_map(|(id, t)| t.content.map(|h| (*id, h)))
            .collect();
        let own = self
            .nodes
            .values()
            .filter(|n| n.vstamp.1 == self.id_prefix)
            .filter_map(|n| n.content)
            .collect();
        TreeRefs {
            versions,
            tombs,
            own,
        }
    }
}
