//! Content fetched from other members, and its eviction: the store's side
//! of the cache quota (`cache_max` in the config). A chunk that arrived
//! from a peer (read on demand, pushed beside its entry, rebuilt from a
//! delta) is marked fetched; one written or found stored by a local writer
//! is not (it is this node's own content, never evicted). When the fetched
//! chunks take more than the quota, [`Store::evict`] drops the least
//! recently read from the index, as a collection drops garbage: a later
//! read fetches them again, and compaction gives their disk space back.
//!
//! Recency: the time of the last read since the node started, else of the
//! fetch (kept in redb with the mark).

use std::collections::{HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::TableDefinition;

use super::gc::Run;
use super::{Hash, Mut, Store, StoreError};

/// Fetched chunks: hash to the second (since the epoch) it was fetched.
pub(super) const FETCHED: TableDefinition<&[u8], u64> = TableDefinition::new("fetched-v1");

/// Seconds since the epoch, now.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The fetched chunks held: length and last use of each, and their sum.
#[derive(Debug, Default)]
pub(super) struct Fetched {
    map: HashMap<Hash, (u32, u64)>,
    bytes: u64,
}

impl Fetched {
    /// Marks a chunk fetched (at `when`, seconds since the epoch).
    pub(super) fn mark(&mut self, h: Hash, len: u32, when: u64) {
        if self.map.insert(h, (len, when)).is_none() {
            self.bytes += u64::from(len);
        }
    }

    /// Forgets a chunk (adopted by a local writer, or dropped); true when
    /// it was marked.
    pub(super) fn unmark(&mut self, h: &Hash) -> bool {
        match self.map.remove(h) {
            Some((len, _)) => {
                self.bytes -= u64::from(len);
                true
            }
            None => false,
        }
    }

    fn touch(&mut self, h: &Hash) {
        if let Some(e) = self.map.get_mut(h) {
            e.1 = now_secs();
        }
    }
}

/// What one eviction dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    /// Fetched chunks dropped from the index.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Store {
    /// Stores a chunk that came from another member, marked fetched
    /// (unless it is stored already: then it stays as it is).
    pub fn put_fetched(&self, hash: &Hash, data: &[u8]) -> Result<(), StoreError> {
        self.put_one(hash, data, true)
    }

    /// Chunks a local writer stored or found stored are its own: no
    /// longer fetched. Returns the mutations that record it.
    pub(super) fn adopt<'a>(&self, hashes: impl IntoIterator<Item = &'a Hash>) -> Vec<Mut> {
        let mut f = self.fetched();
        if f.map.is_empty() {
            return Vec::new();
        }
        hashes
            .into_iter()
            .filter(|h| f.unmark(h))
            .map(|h| Mut::Fetched(*h, None))
            .collect()
    }

    /// Notes that a chunk was read (it is evicted last). On every read:
    /// skipped while another thread holds the marks (recency is a hint).
    pub(super) fn touch(&self, h: &Hash) {
        if let Ok(mut f) = self.fetched.try_lock() {
            f.touch(h);
        }
    }

    pub(super) fn fetched(&self) -> std::sync::MutexGuard<'_, Fetched> {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of the fetched chunks held.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched().bytes
    }

    /// Drops the least recently read fetched chunks until they take at
    /// most `max` bytes, sparing those in `keep` (this node's own
    /// versions, open files) and those stored or found lately.
    pub fn evict(
        &self,
        _run: &Run<'_>,
        max: u64,
        keep: &HashSet<Hash>,
    ) -> Result<Evicted, StoreError> {
        let mut out = Evicted::default();
        let mut muts = Vec::new();
        {
            let mut c = self.index_mut()?;
            let mut f = self.fetched();
            if f.bytes <= max {
                return Ok(out);
            }
            let mut order: Vec<(u64, Hash)> = f
                .map
                .iter()
                .filter(|(h, _)| !keep.contains(*h))
                .map(|(h, (_, used))| (*used, *h))
                .collect();
            order.sort_unstable();
            let young = self.young.lock().unwrap_or_else(|p| p.into_inner());
            for (_, h) in order {
                if f.bytes <= max {
                    break;
                }
                if young.holds(&h) {
                    continue;
                }
                f.unmark(&h);
                if let Some(loc) = c.remove(&h) {
                    out.chunks += 1;
                    out.bytes += u64::from(loc.len);
                    muts.push(Mut::Unchunk(h));
                }
            }
            drop(young);
            self.stored_bytes
                .fetch_sub(out.bytes, std::sync::atomic::Ordering::Relaxed);
            // Queued before the index lock goes: a fetch storing one of
            // them again queues its record after this drop.
            self.submit_quietly(muts)?;
        }
        Ok(out)
    }
}

/// Every fetched mark of chunks in `held`, read at open; marks of chunks
/// no longer held are left for [`Mut::Unchunk`]'s next pass to forget.
pub(super) fn load(
    r: &redb::ReadTransaction,
    held: &HashMap<Hash, super::pack::Loc>,
) -> Result<Fetched, StoreError> {
    use redb::ReadableTable;
    let mut f = Fetched::default();
    for item in r.open_table(FETCHED)?.iter()? {
        let (k, v) = item?;
        let Ok(h) = <Hash>::try_from(k.value()) else {
            continue;
        };
        if let Some(loc) = held.get(&h) {
            f.mark(h, loc.len, v.value());
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Store::open(dir, key, [1; 32]).unwrap()
    }

    fn chunk(n: u8, len: usize) -> (Hash, Vec<u8>) {
        let data = vec![n; len];
        (*blake3::hash(&data).as_bytes(), data)
    }

    /// Fetched chunks go least recently read first, down to the quota;
    /// chunks kept, chunks written here and chunks adopted by a local
    /// writer stay; the marks survive a reopen.
    #[test]
    fn eviction_takes_least_recently_read_fetched_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let chunks: Vec<(Hash, Vec<u8>)> = (0..6).map(|n| chunk(n, 1000)).collect();
        for (h, d) in &chunks[..4] {
            s.put_fetched(h, d).unwrap();
        }
        // Written here: never evicted.
        s.put_chunk(&chunks[4].0, &chunks[4].1).unwrap();
        // Fetched, then found stored by a local writer: its own now.
        s.put_fetched(&chunks[5].0, &chunks[5].1).unwrap();
        s.put_chunk(&chunks[5].0, &chunks[5].1).unwrap();
        assert_eq!(s.fetched_bytes(), 4000);
        s.close().unwrap();
        drop(s);
        let s = store(dir.path());
        assert_eq!(s.fetched_bytes(), 4000);
        // Chunk 0 read lately: evicted last. Chunk 3 kept by the caller.
        {
            let mut f = s.fetched();
            for (i, (h, _)) in chunks[..4].iter().enumerate() {
                f.map.get_mut(h).unwrap().1 = 100 + i as u64;
            }
        }
        s.touch(&chunks[0].0);
        let keep: HashSet<Hash> = [chunks[3].0].into();
        let run = s.gc_start();
        let out = s.evict(&run, 2000, &keep).unwrap();
        drop(run);
        assert_eq!(
            out,
            Evicted {
                chunks: 2,
                bytes: 2000
            }
        );
        let held: Vec<bool> = chunks.iter().map(|(h, _)| s.has_chunk(h)).collect();
        assert_eq!(held, [true, false, false, true, true, true]);
        assert_eq!(s.fetched_bytes(), 2000);
        // Under the quota: nothing more goes.
        let run = s.gc_start();
        assert_eq!(s.evict(&run, 2000, &keep).unwrap(), Evicted::default());
        drop(run);
        s.close().unwrap();
        drop(s);
        let s = store(dir.path());
        let held: Vec<bool> = chunks.iter().map(|(h, _)| s.has_chunk(h)).collect();
        assert_eq!(held, [true, false, false, true, true, true]);
        assert_eq!(s.fetched_bytes(), 2000);
    }
}
