//! Garbage collection of chunks and manifests: the store's side. The
//! caller (the node's collector, `crate::gc`) says which chunks and
//! manifests are live; the store drops the others ([`Store::sweep`]) and
//! rewrites the packs that
//! became mostly garbage ([`Store::compact`]), so that the disk space of
//! removed and overwritten files comes back.
//!
//! Races with writers: a chunk stored, or found already stored by a writer
//! about to refer to it, from [`GRACE`] before a collection started on is
//! never taken by it, whatever the live set says ([`Young`]). So the
//! caller only needs to find a chunk live once something (a tree, an open
//! file, a stream) refers to it, which follows its storing within
//! milliseconds. Manifests likewise: one stored within the grace stays,
//! and one stored again after the collector chose it is spared by the
//! committer, which drops it only if it is not young by then.
//!
//! Crashes: a pack is removed only after the index naming the new places
//! of its chunks is durable; packs that no index entry names (a crash
//! between the two) are removed when the store opens.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable};

use super::pack::{Loc, Packs, HEADER_LEN};
use super::{Hash, Mut, Store, StoreError};

/// A pack is rewritten once half of it is garbage (each byte copied frees
/// at least one) and at least this many bytes.
const DEAD_MIN: u64 = 1 << 20;
/// Bytes copied per batch while compacting.
const COPY_BATCH: usize = 4 << 20;
/// Most bytes per second compaction copies, so that it stays in the
/// background of what the user does (a 1 GiB pack half full takes 8 s).
const COPY_RATE: f64 = 64.0 * 1048576.0;
/// The rate while files were read or changed within [`BUSY_WINDOW`]: a
/// user untarring or building beside a compaction barely notices it.
const BUSY_RATE: f64 = 8.0 * 1048576.0;
/// See [`BUSY_RATE`].
const BUSY_WINDOW: Duration = Duration::from_secs(2);

/// What one collection freed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Chunks dropped from the index.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Manifests (file versions) dropped.
    pub manifests: u64,
}

/// What one compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Packs rewritten and removed.
    pub packs: u64,
    /// Chunks moved to a newer pack.
    pub moved: u64,
    /// Pack bytes on disk before and after.
    pub disk_before: u64,
    /// See `disk_before`.
    pub disk_after: u64,
}

/// How long a chunk just stored or found stored is safe from the
/// collector (at least; up to twice as long).
pub const GRACE: Duration = Duration::from_secs(5);

/// The chunks stored or found stored lately, in two generations of
/// [`GRACE`] each (so memory stays bounded without a collector running).
/// While a collection runs, nothing leaves it.
#[derive(Debug)]
pub struct Young {
    since: Instant,
    cur: HashSet<Hash>,
    prev: HashSet<Hash>,
    held: bool,
}

impl Default for Young {
    fn default() -> Young {
        Young {
            since: Instant::now(),
            cur: HashSet::new(),
            prev: HashSet::new(),
            held: false,
        }
    }
}

/// A collection under way (see [`Store::gc_start`]); ends when dropped.
pub struct Run<'a>(&'a Store);

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.0.young.lock().unwrap_or_else(|p| p.into_inner()).held = false;
    }
}

impl Young {
    /// Moves on a generation when the current one is old (not while a
    /// collection runs).
    fn age(&mut self) {
        if self.held {
            return;
        }
        let old = self.since.elapsed();
        if old > GRACE {
            self.prev = std::mem::take(&mut self.cur);
            if old > 2 * GRACE {
                self.prev.clear();
            }
            self.since = Instant::now();
        }
    }

    /// Notes a chunk stored or about to be referred to.
    pub(super) fn note(&mut self, h: Hash) {
        self.age();
        self.cur.insert(h);
    }

    pub(super) fn holds(&self, h: &Hash) -> bool {
        self.cur.contains(h) || self.prev.contains(h)
    }
}

/// Removes the packs no index entry names (`named`: the packs the index
/// names), except the newest, which appends go to: leftovers of a
/// compaction cut short by a crash.
pub(super) fn remove_unreferenced_packs(
    packs: &Packs,
    named: &HashSet<u32>,
) -> Result<(), StoreError> {
    let writer = packs.writer_id()?;
    for (id, _) in packs.list()? {
        if id < writer && !named.contains(&id) {
            tracing::info!(pack = id, "removing a pack no chunk is in");
            packs.remove(id)?;
        }
    }
    Ok(())
}

impl Store {
    /// Starts a collection: call before finding what is live. Until the
    /// returned run is dropped, every chunk stored or found stored from
    /// [`GRACE`] before this call on stays safe from [`Store::sweep`].
    pub fn gc_start(&self) -> Run<'_> {
        let mut y = self.young.lock().unwrap_or_else(|p| p.into_inner());
        y.age();
        y.held = true;
        Run(self)
    }

    /// Drops from the index every chunk that is neither in `live` nor
    /// stored or referred to lately, and every manifest neither in
    /// `versions` nor stored lately. The chunks' bytes stay in their packs
    /// until [`Store::compact`] rewrites them.
    pub fn sweep(
        &self,
        run: &Run<'_>,
        live: &HashSet<Hash>,
        versions: &HashSet<Hash>,
    ) -> Result<Swept, StoreError> {
        let mut out = self.sweep_manifests(run, versions)?;
        let mut muts = Vec::new();
        {
            let mut c = self.index_mut()?;
            let young = self.young.lock().unwrap_or_else(|p| p.into_inner());
            let keep = |h: &Hash| live.contains(h) || young.holds(h);
            c.retain(|h, loc| {
                if keep(h) {
                    return true;
                }
                out.chunks += 1;
                out.bytes += u64::from(loc.len);
                muts.push(Mut::Unchunk(*h));
                false
            });
            drop(young);
            let mut f = self.fetched();
            let mut swept = self.swept.lock().unwrap_or_else(|p| p.into_inner());
            for m in &muts {
                if let Mut::Unchunk(h) = m {
                    f.unmark(h);
                    swept.push(*h);
                }
            }
            drop((f, swept));
            self.stored_bytes.fetch_sub(out.bytes, Ordering::Relaxed);
            // Queued before the index lock goes: a writer storing one of
            // them again queues its record after this drop.
            self.submit_quietly(muts)?;
        }
        Ok(out)
    }

    /// Drops the manifests that are neither in `versions` nor stored
    /// lately. One stored again after this choice is spared by the
    /// committer (it is young by then).
    fn sweep_manifests(
        &self,
        _run: &Run<'_>,
        versions: &HashSet<Hash>,
    ) -> Result<Swept, StoreError> {
        let r = self.db.begin_read()?;
        let mut dead = Vec::new();
        for item in r.open_table(super::MANIFESTS)?.iter()? {
            let (k, _) = item?;
            if let Ok(h) = <Hash>::try_from(k.value()) {
                if !versions.contains(&h) {
                    dead.push(h);
                }
            }
        }
        // Young ones are spared by the committer as well; the scan above
        // does not hold up writers noting theirs.
        let young = self.young.lock().unwrap_or_else(|p| p.into_inner());
        dead.retain(|h| !young.holds(h));
        drop(young);
        let out = Swept {
            manifests: dead.len() as u64,
            ..Swept::default()
        };
        self.swept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(&dead);
        if !dead.is_empty() {
            self.submit_quietly(vec![Mut::Unmanifest(dead)])?;
        }
        Ok(out)
    }

    /// The chunks and manifests collections dropped since the last call
    /// (garbage: nothing live refers to them).
    pub fn take_swept(&self) -> Vec<Hash> {
        std::mem::take(&mut *self.swept.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Rewrites each pack of which half or more (and at least 1 MiB) is
    /// garbage, copying at most [`COPY_RATE`] bytes a second ([`BUSY_RATE`]
    /// while files are being read or changed): its live chunks go to the
    /// newest pack (each checked
    /// against its hash on the way; one that fails is dropped and logged),
    /// the index names their new places durably, then the pack is removed.
    pub fn compact(&self) -> Result<Compacted, StoreError> {
        let packs = self.packs.list()?;
        let mut out = Compacted {
            disk_before: packs.iter().map(|(_, size)| size).sum(),
            ..Compacted::default()
        };
        let mut used: HashMap<u32, u64> = HashMap::new();
        for loc in self.index()?.values() {
            *used.entry(loc.pack).or_default() += HEADER_LEN + u64::from(loc.len);
        }
        let mut writer = self.packs.writer_id()?;
        for (id, size) in packs {
            let dead = size.saturating_sub(used.get(&id).copied().unwrap_or(0));
            if dead < DEAD_MIN || dead * 2 < size {
                continue;
            }
            if id == writer {
                self.packs.roll()?;
                writer = self.packs.writer_id()?;
                if id == writer {
                    continue;
                }
            }
            let mut chunks: Vec<(Hash, Loc)> = self
                .index()?
                .iter()
                .filter(|(_, l)| l.pack == id)
                .map(|(h, l)| (*h, *l))
                .collect();
            chunks.sort_unstable_by_key(|(_, l)| l.offset);
            out.moved += self.move_chunks(&chunks)?;
            // The new places are durable before the old ones go.
            self.sync()?;
            self.packs.remove(id)?;
            out.packs += 1;
        }
        out.disk_after = self.packs.disk_bytes();
        Ok(out)
    }

    /// The chunk index, read.
    fn index(&self) -> Result<std::sync::RwLockReadGuard<'_, HashMap<Hash, Loc>>, StoreError> {
        self.chunks
            .read()
            .map_err(|_| StoreError::Stopped("lock poisoned".into()))
    }

    /// The chunk index, to change (lock order: the index, then the young
    /// set, the fetched marks, the swept list).
    pub(super) fn index_mut(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, HashMap<Hash, Loc>>, StoreError> {
        self.chunks
            .write()
            .map_err(|_| StoreError::Stopped("lock poisoned".into()))
    }

    /// Copies chunks to the newest pack and points the index at the
    /// copies (where it still names the old place). Returns how many moved.
    fn move_chunks(&self, chunks: &[(Hash, Loc)]) -> Result<u64, StoreError> {
        let mut moved = 0;
        let mut i = 0;
        // When the next batch may start.
        let mut next = Instant::now();
        while i < chunks.len() {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut batch: Vec<(Hash, Loc, Vec<u8>)> = Vec::new();
            // Chunks that cannot be moved: dropped from the index, so that
            // a read fetches them from a peer instead of failing for good.
            let mut lost: Vec<(Hash, Loc)> = Vec::new();
            let mut bytes = 0;
            while i < chunks.len() && (batch.is_empty() || bytes < COPY_BATCH) {
                let (h, loc) = chunks[i];
                i += 1;
                let mut buf = vec![0u8; loc.len as usize];
                if let Err(e) = self.packs.read(&loc, 0, &mut buf) {
                    tracing::warn!(pack = loc.pack, "chunk unreadable while compacting: {e}");
                    lost.push((h, loc));
                    continue;
                }
                if blake3::hash(&buf).as_bytes() != &h {
                    tracing::warn!(pack = loc.pack, "chunk corrupt on disk, dropped");
                    lost.push((h, loc));
                    continue;
                }
                bytes += buf.len();
                batch.push((h, loc, buf));
            }
            let rate = if self.active_within(BUSY_WINDOW) {
                BUSY_RATE
            } else {
                COPY_RATE
            };
            next = next.max(Instant::now()) + Duration::from_secs_f64(bytes as f64 / rate);
            let refs: Vec<(Hash, &[u8])> = batch.iter().map(|(h, _, d)| (*h, &d[..])).collect();
            let locs = if refs.is_empty() {
                Vec::new()
            } else {
                self.packs.append_batch(&refs)?
            };
            let mut muts = Vec::new();
            {
                let mut c = self.index_mut()?;
                for ((h, old, _), new) in batch.iter().zip(locs) {
                    if let Some(at) = c.get_mut(h) {
                        if at == old {
                            *at = new;
                            muts.push(Mut::Chunk(*h, new));
                            moved += 1;
                        }
                    }
                }
                for (h, old) in lost {
                    if c.get(&h) == Some(&old) {
                        c.remove(&h);
                        self.stored_bytes
                            .fetch_sub(u64::from(old.len), Ordering::Relaxed);
                        self.fetched().unmark(&h);
                        muts.push(Mut::Unchunk(h));
                    }
                }
            }
            self.submit_quietly(muts)?;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ed25519_dalek::SigningKey;

    use super::*;

    fn open(dir: &std::path::Path) -> Store {
        Store::open(dir, SigningKey::from_bytes(&[5; 32]), [5; 32]).unwrap()
    }

    fn chunk(k: u8, len: usize) -> (Hash, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + k as usize * 7) as u8).collect();
        (*blake3::hash(&data).as_bytes(), data)
    }

    fn pack_files(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("packs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A chunk nothing refers to stays while it is young (just stored, or
    /// found stored by a writer), then goes; compaction moves the live
    /// chunks out of a pack that became garbage and removes it; the store
    /// reopens with every live chunk readable; and a pack no index entry
    /// names (a compaction cut short by a crash) is removed at open.
    #[test]
    fn garbage_goes_and_live_chunks_move_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let (live_h, live) = chunk(1, 300_000);
        let (dead_h, dead) = chunk(2, 3_000_000);
        s.put_chunks(&[(live_h, &live[..]), (dead_h, &dead[..])])
            .unwrap();
        let keep: HashSet<Hash> = [live_h].into();
        let run = s.gc_start();
        assert_eq!(
            s.sweep(&run, &keep, &HashSet::new()).unwrap(),
            Swept::default(),
            "young"
        );
        drop(run);
        // Older than the grace period.
        s.young.lock().unwrap().since -= 3 * GRACE;
        // A writer finding the dead chunk stored keeps it a while more.
        s.put_chunk(&dead_h, &dead).unwrap();
        let run = s.gc_start();
        assert_eq!(
            s.sweep(&run, &keep, &HashSet::new()).unwrap(),
            Swept::default(),
            "found"
        );
        drop(run);
        s.young.lock().unwrap().since -= 3 * GRACE;
        let run = s.gc_start();
        let swept = s.sweep(&run, &keep, &HashSet::new()).unwrap();
        drop(run);
        assert_eq!((swept.chunks, swept.bytes), (1, dead.len() as u64));
        assert!(!s.has_chunk(&dead_h));
        // What went is handed once to whoever indexes references.
        assert_eq!(s.take_swept(), [dead_h]);
        assert!(s.take_swept().is_empty());
        assert_eq!(s.stats().stored_bytes, live.len() as u64);
        let c = s.compact().unwrap();
        assert_eq!((c.packs, c.moved), (1, 1), "{c:?}");
        assert!(c.disk_after < 400_000, "{c:?}");
        assert_eq!(pack_files(dir.path()), ["pack-000002.dat"]);
        assert_eq!(s.chunk_bytes(&live_h).unwrap(), live);
        s.close().unwrap();
        drop(s);
        // A leftover pack that nothing names.
        std::fs::write(dir.path().join("packs/pack-000001.dat"), &dead).unwrap();
        let s = open(dir.path());
        assert_eq!(pack_files(dir.path()), ["pack-000002.dat"]);
        assert_eq!(s.chunk_bytes(&live_h).unwrap(), live);
        assert!(!s.has_chunk(&dead_h));
        assert_eq!(s.stats().stored_bytes, live.len() as u64);
    }

    /// While files are being read or changed, compaction copies at the
    /// slow rate: 6 MiB of live chunks (two batches) take at least the
    /// time the second batch waits at 8 MiB/s.
    #[test]
    fn compaction_makes_way_for_activity() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let live: Vec<(Hash, Vec<u8>)> = (10..13).map(|k| chunk(k, 2 << 20)).collect();
        let (dead_h, dead) = chunk(20, 8 << 20);
        let mut all: Vec<(Hash, &[u8])> = live.iter().map(|(h, d)| (*h, &d[..])).collect();
        all.push((dead_h, &dead[..]));
        s.put_chunks(&all).unwrap();
        s.young.lock().unwrap().since -= 3 * GRACE;
        let keep: HashSet<Hash> = live.iter().map(|(h, _)| *h).collect();
        let run = s.gc_start();
        assert_eq!(s.sweep(&run, &keep, &HashSet::new()).unwrap().chunks, 1);
        drop(run);
        s.note_active();
        let t = Instant::now();
        let c = s.compact().unwrap();
        assert_eq!((c.packs, c.moved), (1, 3), "{c:?}");
        let waited = Duration::from_secs_f64(COPY_BATCH as f64 / BUSY_RATE);
        assert!(t.elapsed() >= waited, "compacted in {:?}", t.elapsed());
        for (h, d) in &live {
            assert_eq!(&s.chunk_bytes(h).unwrap(), d);
        }
    }

    /// A manifest no version refers to goes once it is older than the
    /// grace; one a version refers to stays; one stored again after the
    /// collector chose to drop it is spared; all of it across a reopen.
    #[test]
    fn manifests_of_no_version_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let man = |k: u8| {
            let mut m = super::super::manifest::Manifest::default();
            m.push(super::super::manifest::Extent {
                len: 10,
                hash: Some([k; 32]),
            });
            let b = m.to_bytes();
            (*blake3::hash(&b).as_bytes(), b)
        };
        let (live_h, live) = man(1);
        let (dead_h, dead) = man(2);
        let (back_h, back) = man(3);
        s.submit(vec![
            Mut::Manifest(live_h, live.clone()),
            Mut::Manifest(dead_h, dead),
            Mut::Manifest(back_h, back.clone()),
        ])
        .unwrap();
        s.sync().unwrap();
        let versions: HashSet<Hash> = [live_h].into();
        let run = s.gc_start();
        let swept = s.sweep(&run, &HashSet::new(), &versions).unwrap();
        drop(run);
        assert_eq!(swept.manifests, 0, "young");
        s.young.lock().unwrap().since -= 3 * GRACE;
        let run = s.gc_start();
        let swept = s.sweep(&run, &HashSet::new(), &versions).unwrap();
        drop(run);
        assert_eq!(swept.manifests, 2);
        s.sync().unwrap();
        assert!(s.manifest_bytes(&dead_h).unwrap().is_none());
        assert!(s.manifest_bytes(&back_h).unwrap().is_none());
        assert_eq!(s.manifest_bytes(&live_h).unwrap(), Some(live.clone()));
        // Chosen for dropping, then stored again before the drop commits.
        s.young.lock().unwrap().since -= 3 * GRACE;
        s.submit(vec![Mut::Manifest(back_h, back.clone())]).unwrap();
        s.submit(vec![Mut::Unmanifest(vec![back_h])]).unwrap();
        s.close().unwrap();
        drop(s);
        let s = open(dir.path());
        assert_eq!(s.manifest_bytes(&back_h).unwrap(), Some(back));
        assert_eq!(s.manifest_bytes(&live_h).unwrap(), Some(live));
        assert!(s.manifest_bytes(&dead_h).unwrap().is_none());
    }
}
