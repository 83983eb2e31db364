//! The node's garbage collector: finds which stored chunks and file
//! versions (manifests) every channel still needs, has the store drop the
//! rest and rewrite packs that became
//! mostly garbage, so that removing or overwriting files gives disk space
//! back. It runs every `gc_interval` seconds while anything changed (config,
//! default 60; 0 turns it off) and on `chanfs gc`.
//!
//! A chunk is live while a current version of a file in any channel, an
//! open file's version being written, or a tombstone that may still bring
//! its file back refers to it. A removed file comes back when a member
//! that had not seen the remove moved or linked it meanwhile (move beats
//! delete); that member may never have fetched the bytes, so its last
//! version stays until every other `rw` member has confirmed (see
//! `Net::confirmed`) a version vector covering the one this node had when
//! it first saw the tombstone. In a channel with no other writer, that is
//! at once. Versions replaced by an edit are garbage at once: an edit
//! concurrent with them carries its own bytes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::fs::ChanFs;
use crate::journal::{FileId, Role};
use crate::store::cache::Evicted;
use crate::store::gc::{Compacted, Swept};
use crate::store::manifest::Manifest;
use crate::store::{covers, ChannelRec, Hash, Store, Vv};

/// How long the collector waits for busy open files before it gives up
/// (and tries again next time).
const PATIENCE: Duration = Duration::from_secs(5);

/// What one run did, for the log and `chanfs gc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    /// Chunks and bytes dropped from the index.
    pub swept: Swept,
    /// Packs rewritten and disk bytes before and after.
    pub compacted: Compacted,
    /// Removed files whose last version is kept until other members
    /// confirm they saw the remove.
    pub kept_removed: u64,
    /// Fetched content dropped for the cache quota.
    pub evicted: Evicted,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = 1048576.0;
        write!(
            f,
            "freed {} chunks ({:.1} MiB) and {} file versions; packs rewritten {}, on disk {:.1} -> {:.1} MiB",
            self.swept.chunks,
            self.swept.bytes as f64 / MIB,
            self.swept.manifests,
            self.compacted.packs,
            self.compacted.disk_before as f64 / MIB,
            self.compacted.disk_after as f64 / MIB,
        )?;
        if self.evicted.chunks > 0 {
            write!(
                f,
                "; evicted {} fetched chunks ({:.1} MiB) for the cache quota",
                self.evicted.chunks,
                self.evicted.bytes as f64 / MIB
            )?;
        }
        if self.kept_removed > 0 {
            write!(
                f,
                "; kept {} removed files until every member has seen the remove",
                self.kept_removed
            )?;
        }
        Ok(())
    }
}

/// A channel as the collector sees it: its record and live state.
pub struct Channel {
    /// Members and roles.
    pub rec: ChannelRec,
    /// Tree and open files.
    pub fs: Arc<ChanFs>,
}

/// State kept between runs.
#[derive(Default)]
pub struct Collector {
    /// Each tombstone with content: this node's version vector when the
    /// collector first saw it (which covers its remove).
    seen: HashMap<(u32, FileId), Arc<Vv>>,
    /// Most bytes of fetched content kept (`None`: no quota).
    cache_max: Option<u64>,
}

impl Collector {
    /// A collector keeping at most `cache_max` bytes of fetched content.
    pub fn new(cache_max: Option<u64>) -> Collector {
        Collector {
            cache_max,
            ..Collector::default()
        }
    }

    /// One collection over `chans` (every channel of the store).
    /// `confirmed(channel, member)` is the newest version vector the member
    /// confirmed. `None` when open files stayed busy: nothing was freed.
    pub fn run(
        &mut self,
        store: &Store,
        me: &[u8; 32],
        chans: &[Channel],
        confirmed: impl Fn(u32, &[u8; 32]) -> Option<Vv>,
    ) -> Result<Option<Report>, crate::store::StoreError> {
        let run = store.gc_start();
        let mut report = Report::default();
        let mut versions: Vec<(Hash, Option<Arc<Manifest>>)> = Vec::new();
        let mut live: HashSet<Hash> = HashSet::new();
        // Chunks eviction spares: open files' and this node's own versions'.
        let mut pinned: HashSet<Hash> = HashSet::new();
        let mut own: HashSet<Hash> = HashSet::new();
        let mut tombs_now = HashSet::new();
        for ch in chans {
            let local = ch.rec.local;
            let Some((refs, chunks)) = ch.fs.references(PATIENCE) else {
                tracing::info!(channel = %ch.rec.name, "garbage collection put off: files busy");
                return Ok(None);
            };
            // Taken after the tree: it covers every remove the tree holds.
            let vv = Arc::new(store.vv(local));
            if self.cache_max.is_some() {
                pinned.extend(chunks.iter().copied());
                own.extend(refs.own);
            }
            live.extend(chunks);
            versions.extend(refs.versions);
            let writers: Vec<[u8; 32]> = ch
                .rec
                .members
                .iter()
                .filter(|m| m.role == Role::Rw && &m.id != me)
                .map(|m| m.id)
                .collect();
            let confirmed: Vec<Option<Vv>> = writers.iter().map(|w| confirmed(local, w)).collect();
            for (id, h) in refs.tombs {
                tombs_now.insert((local, id));
                if writers.is_empty() {
                    continue;
                }
                let since = self.seen.entry((local, id)).or_insert_with(|| vv.clone());
                let settled = confirmed
                    .iter()
                    .all(|c| c.as_ref().is_some_and(|c| covers(c, since)));
                if !settled {
                    report.kept_removed += 1;
                    versions.push((h, None));
                }
            }
        }
        self.seen.retain(|k, _| tombs_now.contains(k));
        let mut done = HashSet::new();
        for (h, cached) in versions {
            if !done.insert(h) {
                continue;
            }
            let m = match cached {
                Some(m) => m,
                // Not here: a remote version none of whose chunks were
                // fetched through it.
                None => match store.manifest_bytes(&h)? {
                    Some(b) => Arc::new(Manifest::from_bytes(&b)?),
                    None => continue,
                },
            };
            live.extend(m.chunk_hashes().copied());
            if own.contains(&h) {
                pinned.extend(m.chunk_hashes().copied());
            }
        }
        report.swept = store.sweep(&run, &live, &done)?;
        if let Some(max) = self.cache_max {
            report.evicted = store.evict(&run, max, &pinned)?;
        }
        drop(run);
        report.compacted = store.compact()?;
        Ok(Some(report))
    }
}
