//! The FUSE adapter: turns kernel requests into tree changes and content
//! writes. Files being written keep their new bytes in a sparse staging file
//! and a set of dirty ranges (a large new file written front to back hands
//! them to a stream instead, which cuts and stores them as they come); on
//! `flush`, `fsync` and `release` only the neighbourhood of those ranges is
//! re-chunked into the store and the new manifest is recorded in the
//! journal. This module never touches the network.

pub mod staging;
mod stream;
pub mod tree;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::journal::{AttrChange, Hlc, NodeKind, Op};
use crate::store::chunker::{self, ChunkIo};
use crate::store::manifest::Manifest;
use crate::store::ranges::RangeSet;
use crate::store::{Hash, Mut, Store, StoreError};
use staging::Staging;
use stream::{Offered, Streamer};
use tree::{Changes, Node, Tree, TreeRefs, R};

/// How long the kernel may cache names and attributes.
const TTL: Duration = Duration::from_secs(1);
/// Largest file size accepted (4 PiB): larger sizes get `EFBIG`.
pub const MAX_FILE_SIZE: u64 = 1 << 52;

/// The content of a file while it is open or being changed.
struct Content {
    base: Arc<Manifest>,
    base_hash: Option<Hash>,
    dirty: RangeSet,
    staging: Staging,
    size: u64,
    opens: u32,
    changed: bool,
    /// A new file written front to back: its bytes are being cut as they
    /// come (see [`stream`]).
    stream: Option<Streamer>,
    /// Bytes the stream gave back that could not be staged (the disk was
    /// full), and why: this version is never committed (each commit fails
    /// with that errno) nor read, until a truncate drops those bytes.
    lost: Option<(u64, u64, i32)>,
    /// When bytes were last written.
    last_write: Option<std::time::Instant>,
}

/// Bytes copied per `copy_file_range` call outside the whole-file case.
const COPY_STEP: u64 = 16 << 20;

/// How long a file must go unwritten before a close by another process
/// than its writer commits it.
const QUIET: Duration = Duration::from_secs(1);

/// The thread group (process) of thread `pid`.
fn tgid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A new file is cut while written once this many bytes arrived in order
/// (smaller files are cut at close in one go).
const STREAM_FROM: u64 = 8 << 20;

/// True when a version holds data, not only holes.
fn has_data(m: &Manifest) -> bool {
    m.extents().iter().any(|x| x.hash.is_some())
}

/// Gets chunks this node lacks from the channel's other members (the node
/// wires it to the network). `fetch` returns once the chunk is stored
/// locally, or fails (`EIO`) when nobody had it within the deadline;
/// `prefetch` asks for chunks a reader will soon need, without waiting.
pub trait Fetcher: Send + Sync {
    /// Fetches `hash` for channel `chan` into the store, waiting for it.
    fn fetch(&self, chan: u32, hash: &Hash) -> std::io::Result<()>;
    /// Starts fetching `hashes` in the background.
    fn prefetch(&self, chan: u32, hashes: &[Hash]);
}

/// How many chunks past the one being read are fetched ahead.
const READ_AHEAD: usize = 128;

/// Reads and writes for re-chunking one file.
struct FileIo<'a> {
    store: &'a Store,
    staging: Option<&'a Staging>,
    fetch: Option<(&'a dyn Fetcher, u32, &'a Manifest)>,
}

impl ChunkIo for FileIo<'_> {
    fn read_chunk(&self, hash: &Hash, within: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self.store.read_chunk(hash, within, buf) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let Some((f, chan, m)) = self.fetch else {
                    return Err(e);
                };
                let ahead: Vec<Hash> = m
                    .chunk_hashes()
                    .skip_while(|h| *h != hash)
                    .skip(1)
                    .filter(|h| !self.store.has_chunk(h))
                    .take(READ_AHEAD)
                    .copied()
                    .collect();
                if !ahead.is_empty() {
                    f.prefetch(chan, &ahead);
                }
                let t0 = std::time::Instant::now();
                f.fetch(chan, hash)?;
                tracing::debug!(
                    waited_us = t0.elapsed().as_micros() as u64,
                    "read waited for a chunk"
                );
                self.store.read_chunk(hash, within, buf)
            }
            r => r,
        }
    }
    fn read_dirty(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self.staging {
            Some(st) => st.read(off, buf),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }
    fn put_chunk(&self, hash: &Hash, data: &[u8]) -> std::io::Result<()> {
        self.store.put_chunk(hash, data).map_err(to_io)
    }
}

fn to_io(e: StoreError) -> std::io::Error {
    match e {
        StoreError::Io(e) => e,
        other => std::io::Error::other(other.to_string()),
    }
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn store_errno(e: &StoreError) -> i32 {
    match e {
        StoreError::Io(e) => io_errno(e),
        _ => libc::EIO,
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

fn ns_or_now(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::SpecificTime(t) => ns_of(t),
        TimeOrNow::Now => tree::now_ns(),
    }
}

fn file_type(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
    }
}

/// The mode `perm` becomes when a write, truncate or chown kills its
/// set-id bits, as Linux does: set-user-id always, set-group-id when group
/// execute is set (without it the bit marks mandatory locking). `None`
/// when nothing changes.
fn killed_suidgid(perm: u32) -> Option<u32> {
    let mut m = perm & !libc::S_ISUID;
    if perm & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    (m != perm).then_some(m)
}

fn attr(ino: u64, n: &Node) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: n.size,
        blocks: n.size.div_ceil(512),
        atime: time(n.atime),
        mtime: time(n.mtime),
        ctime: time(n.ctime),
        crtime: time(n.ctime),
        kind: file_type(n.kind),
        perm: (n.perm & 0o7777) as u16,
        nlink: n.nlink,
        uid: n.uid,
        gid: n.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// One channel's live state: its tree, open contents and the store (and,
/// while mounted, the kernel notifier that forgets what remote changes
/// made stale).
pub struct ChanFs {
    store: Arc<Store>,
    chan: u32,
    fetcher: Option<Arc<dyn Fetcher>>,
    notifier: Mutex<Option<fuser::Notifier>>,
    tree: Mutex<Tree>,
    contents: Mutex<HashMap<u64, Arc<Mutex<Content>>>>,
    hlc: Arc<Hlc>,
    next_fh: AtomicU64,
    /// Process that opened each file handle (see [`FuseFs::flush`]).
    openers: Mutex<HashMap<u64, u32>>,
    /// Files with a commit waiting for quiet (one waiter each).
    quiet_waits: Mutex<std::collections::HashSet<u64>>,
    /// Read-only mount (writes get `EROFS`).
    pub readonly: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChanFs {
    /// Loads channel `chan` from the store.
    pub fn open(
        store: Arc<Store>,
        chan: u32,
        hlc: Arc<Hlc>,
        fetcher: Option<Arc<dyn Fetcher>>,
    ) -> Result<ChanFs, StoreError> {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&store.node_id()[..8]);
        let (tree, muts) = Tree::load(&store, chan, prefix)?;
        store.submit(muts)?;
        Ok(ChanFs {
            store,
            chan,
            fetcher,
            notifier: Mutex::new(None),
            tree: Mutex::new(tree),
            contents: Mutex::new(HashMap::new()),
            hlc,
            next_fh: AtomicU64::new(1),
            openers: Mutex::new(HashMap::new()),
            quiet_waits: Mutex::new(std::collections::HashSet::new()),
            readonly: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Appends an entry that changes nothing in the tree (membership).
    pub fn record(&self, op: Op) -> R<()> {
        let mut t = lock(&self.tree);
        let mut ch = t.changes();
        t.journal(&mut ch, self.hlc.now(), op);
        drop(t);
        self.submit(ch.into_muts())
    }

    /// What this channel refers to in the chunk store, for the garbage
    /// collector: the tree's versions and tombstones, and the chunks of
    /// open files' versions being written (bases, cut streams). Taken with
    /// every open file and the tree held at once, so that nothing moving
    /// from a file being written to the tree is missed. `None` when files
    /// stayed busy for `patience`.
    pub fn references(&self, patience: Duration) -> Option<(TreeRefs, Vec<Hash>)> {
        let start = std::time::Instant::now();
        loop {
            let map = lock(&self.contents);
            let mut held = Vec::with_capacity(map.len());
            let mut busy = false;
            for c in map.values() {
                match c.try_lock() {
                    Ok(g) => held.push(g),
                    Err(std::sync::TryLockError::Poisoned(p)) => held.push(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => {
                        busy = true;
                        break;
                    }
                }
            }
            if busy {
                // A file is being worked on (its lock may be held while it
                // waits for the map): let go and try again.
                drop(held);
                drop(map);
                if start.elapsed() > patience {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let refs = lock(&self.tree).refs();
            let mut chunks = Vec::new();
            for g in &held {
                chunks.extend(g.base.chunk_hashes().copied());
                if let Some(s) = &g.stream {
                    chunks.extend(s.chunk_refs());
                }
            }
            return Some((refs, chunks));
        }
    }

    /// Sets the kernel notifier of the mount (`None` when unmounted).
    pub fn set_notifier(&self, n: Option<fuser::Notifier>) {
        *lock(&self.notifier) = n;
    }

    /// Makes the channel read-only here (an `ro` member) or writable.
    pub fn set_readonly(&self, ro: bool) {
        self.readonly.store(ro, Ordering::Relaxed);
    }

    fn is_readonly(&self) -> bool {
        self.readonly.load(Ordering::Relaxed)
    }

    fn io<'a>(&'a self, staging: Option<&'a Staging>, base: &'a Manifest) -> FileIo<'a> {
        FileIo {
            store: &self.store,
            staging,
            fetch: self.fetcher.as_deref().map(|f| (f, self.chan, base)),
        }
    }

    /// Applies verified entries of other members, in order. An entry
    /// already held is skipped; at a gap (filled by the next exchange) the
    /// rest waits, since it may depend on what is missing. Returns how many
    /// were applied.
    pub fn apply_remote(
        &self,
        entries: Vec<(crate::journal::Entry, crate::journal::SignedEntry)>,
    ) -> Result<usize, StoreError> {
        let mut fx = tree::Effects::default();
        let mut applied = 0;
        {
            let mut t = lock(&self.tree);
            let mut ch = t.changes();
            let mut next: HashMap<[u8; 32], u64> = HashMap::new();
            for (e, signed) in entries {
                let n = next
                    .entry(e.author)
                    .or_insert_with(|| self.store.seq_of(self.chan, &e.author) + 1);
                if e.seq < *n {
                    continue;
                }
                if e.seq > *n {
                    // What follows may depend on the missing entries.
                    break;
                }
                *n += 1;
                self.hlc.observe(e.hlc);
                t.apply(&e, &mut ch, &mut fx);
                ch.push(Mut::Remote(self.chan, e.author, e.seq, signed));
                applied += 1;
            }
            self.store.submit(ch.into_muts())?;
        }
        // Open files that took a new version without local changes read it.
        for ino in &fx.data {
            let c = lock(&self.contents).get(ino).cloned();
            if let Some(c) = c {
                let mut g = lock(&c);
                if !g.changed {
                    let t = lock(&self.tree);
                    if let Ok(n) = t.get(*ino) {
                        g.base_hash = n.content;
                        g.size = n.size;
                        g.base = match n.content {
                            None => Arc::new(Manifest::default()),
                            Some(h) => match self.store.load_manifest(&h) {
                                Ok(m) => Arc::new(m),
                                Err(e) => {
                                    tracing::error!("manifest of inode {ino}: {e}");
                                    continue;
                                }
                            },
                        };
                    }
                }
            }
        }
        self.invalidate(&fx);
        Ok(applied)
    }

    /// Tells the kernel to forget names and attributes remote changes made
    /// stale (outside every lock: the kernel may call back in).
    fn invalidate(&self, fx: &tree::Effects) {
        let n = lock(&self.notifier).clone();
        if let Some(n) = n {
            notify(&n, fx);
        }
    }

    /// Number of files and their logical bytes.
    pub fn totals(&self) -> (u64, u64) {
        lock(&self.tree).totals()
    }

    fn submit(&self, muts: Vec<Mut>) -> R<()> {
        self.store.submit(muts).map_err(|e| store_errno(&e))
    }

    /// Applies a tree change under the tree lock and submits its records.
    fn change<T>(&self, f: impl FnOnce(&mut Tree, u64, &mut tree::Changes) -> R<T>) -> R<T> {
        if self.is_readonly() {
            return Err(libc::EROFS);
        }
        let mut t = lock(&self.tree);
        let mut ch = t.changes();
        let r = f(&mut t, self.hlc.now(), &mut ch)?;
        self.submit(ch.into_muts())?;
        let fx = t.take_deferred();
        drop(t);
        if let (Some(fx), Some(n)) = (fx, lock(&self.notifier).clone()) {
            // Not from this request's thread: the kernel holds the
            // directory until the reply, and the notice would wait for it.
            std::thread::spawn(move || notify(&n, &fx));
        }
        Ok(r)
    }

    fn generation(&self, ino: u64) -> Generation {
        Generation(lock(&self.tree).get(ino).map(|n| n.gen).unwrap_or(0))
    }

    fn entry_of(&self, ino: u64) -> R<FileAttr> {
        let t = lock(&self.tree);
        Ok(attr(ino, t.get(ino)?))
    }

    /// The content state of `ino`, loading it when needed.
    fn content(&self, ino: u64, open: bool) -> R<Arc<Mutex<Content>>> {
        let mut map = lock(&self.contents);
        if let Some(c) = map.get(&ino) {
            if open {
                lock(c).opens += 1;
            }
            return Ok(c.clone());
        }
        let (hash, cached, size, kind) = {
            let t = lock(&self.tree);
            let n = t.get(ino)?;
            (n.content, n.manifest.clone(), n.size, n.kind)
        };
        if kind != NodeKind::File {
            return Err(libc::EINVAL);
        }
        let base = match (cached, hash) {
            (Some(m), _) => m,
            (None, None) => Arc::new(Manifest::default()),
            (None, Some(h)) => {
                let m = Arc::new(self.store.load_manifest(&h).map_err(|e| store_errno(&e))?);
                if let Ok(n) = lock(&self.tree).get_mut(ino) {
                    n.manifest = Some(m.clone());
                }
                m
            }
        };
        let c = Arc::new(Mutex::new(Content {
            base,
            base_hash: hash,
            dirty: RangeSet::new(),
            staging: Staging::default(),
            size,
            opens: u32::from(open),
            changed: false,
            stream: None,
            lost: None,
            last_write: None,
        }));
        map.insert(ino, c.clone());
        Ok(c)
    }

    /// Re-chunks the dirty parts of `ino` and records the new version.
    /// Records version `hash` (manifest `m`) of file `ino` written over
    /// `c.base_hash`, and its journal entry. A remote version that arrived
    /// while this one was being written is kept beside it, as on every
    /// other node.
    fn record_version(
        &self,
        t: &mut Tree,
        ch: &mut Changes,
        ino: u64,
        c: &Content,
        hash: Option<Hash>,
        m: &Arc<Manifest>,
    ) {
        let hlc = self.hlc.now();
        let stamp = t.stamp(hlc);
        let current = t.get(ino).map(|n| n.content).ok();
        if current.is_some_and(|cur| cur != c.base_hash) {
            let mut fx = tree::Effects::default();
            let ours = tree::Version {
                manifest: hash,
                size: c.size,
                mtime: t.get(ino).map(|n| n.mtime).unwrap_or(0),
                stamp,
            };
            t.content_conflict(ino, ours, &c.base_hash, tree::now_ns(), ch, &mut fx);
            if let Ok(n) = t.get_mut(ino) {
                if n.content == hash {
                    n.manifest = Some(m.clone());
                }
            }
        } else if let Ok(n) = t.get_mut(ino) {
            n.content = hash;
            n.manifest = Some(m.clone());
            n.size = c.size;
            n.vstamp = stamp;
        }
        if let Ok(n) = t.get(ino) {
            let (id, mtime) = (n.id, n.mtime);
            t.persist(ino, ch);
            t.journal(
                ch,
                hlc,
                Op::Content {
                    id,
                    manifest: hash,
                    size: c.size,
                    replaces: c.base_hash,
                    mtime,
                },
            );
        }
    }

    fn commit_content(&self, ino: u64, c: &mut Content) -> R<()> {
        if !c.changed {
            return Ok(());
        }
        if let Some((_, _, e)) = c.lost {
            return Err(e);
        }
        tracing::debug!(
            ino,
            size = c.size,
            dirty = c.dirty.total(),
            "commit content"
        );
        self.stop_stream(ino, c)?;
        let io = self.io(Some(&c.staging), &c.base);
        let m = chunker::materialize(&c.base, &c.dirty, c.size, &io).map_err(|e| io_errno(&e))?;
        let hash = if m.is_empty() { None } else { Some(m.hash()) };
        let mut muts = Vec::new();
        if let Some(h) = hash {
            if Some(h) != c.base_hash {
                muts.push(Mut::Manifest(h, m.to_bytes()));
            }
        }
        let m = Arc::new(m);
        {
            let mut t = lock(&self.tree);
            let mut ch = t.changes();
            for x in muts {
                ch.push(x);
            }
            // It holds these bytes already (written back unchanged, or by
            // another handle or a peer meanwhile) and supersedes no copy:
            // no new version.
            if !t.redundant_version(ino, &hash, &c.base_hash) {
                self.record_version(&mut t, &mut ch, ino, c, hash, &m);
            }
            self.submit(ch.into_muts())?;
        }
        c.base = m;
        c.base_hash = hash;
        c.dirty = RangeSet::new();
        match &mut c.staging {
            Staging::Mem(v) => *v = Vec::new(),
            st => st.truncate(0),
        }
        c.changed = false;
        Ok(())
    }

    fn write_at(&self, ino: u64, c: &mut Content, off: u64, data: &[u8]) -> R<()> {
        let end = off.checked_add(data.len() as u64).ok_or(libc::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(libc::EFBIG);
        }
        self.store
            .check_space(data.len() as u64)
            .map_err(|e| io_errno(&e))?;
        if !self.append_to_stream(ino, c, off, data)? {
            self.stage(ino, c, off, data)?;
        }
        c.dirty.insert(off, end);
        c.size = c.size.max(end);
        c.changed = true;
        c.last_write = Some(std::time::Instant::now());
        self.feed(ino, c, end)?;
        self.written(ino, c.size);
        Ok(())
    }

    /// Keeps written bytes in the file's staging.
    fn stage(&self, ino: u64, c: &mut Content, off: u64, data: &[u8]) -> R<()> {
        let dir = self.store.staging_dir();
        let n = self.next_fh.fetch_add(1, Ordering::Relaxed);
        c.staging
            .write(off, data, || dir.join(format!("{ino}-{n}")))
            .map_err(|e| io_errno(&e))
    }

    /// Offers written bytes to the file's stream, which takes them when
    /// they continue it (or start a little past its end). False when they
    /// go to the staging: no stream, declined, or the stream stopped (then
    /// ended here).
    fn append_to_stream(&self, ino: u64, c: &mut Content, off: u64, data: &[u8]) -> R<bool> {
        let Some(s) = &mut c.stream else {
            return Ok(false);
        };
        match s.offer(off, data) {
            Offered::Taken => return Ok(true),
            Offered::Declined => {}
            Offered::OverHeld | Offered::Stopped => self.stop_stream(ino, c)?,
        }
        Ok(false)
    }

    /// Ends the stream of `c`, if any. What it cut becomes the layer of
    /// stored chunks under the dirty bytes; what it did not cut is staged,
    /// except where later writes already staged newer bytes.
    fn stop_stream(&self, ino: u64, c: &mut Content) -> R<()> {
        let Some(s) = c.stream.take() else {
            return Ok(());
        };
        let f = s.finish().map_err(|e| {
            tracing::error!("stream of inode {ino}: {e}");
            libc::EIO
        })?;
        let cut = f.made.len();
        let fed = cut + f.tail.len() as u64;
        let late = f.late;
        tracing::debug!(ino, cut, late = late.total(), "streamed");
        // Bytes the stream held in memory were granted space when written,
        // but that grant has lapsed since (the free figure is asked again):
        // ask now, so that staging them never eats into the space kept for
        // metadata commits.
        let held = f.tail.len() as u64 + f.early.values().map(|b| b.len() as u64).sum::<u64>();
        let mut staged = self.store.check_space(held).map_err(|e| io_errno(&e));
        let mut p = cut;
        for (s, e) in late.clipped(cut, fed).into_iter().chain([(fed, fed)]) {
            if s > p {
                let bytes = &f.tail[(p - cut) as usize..(s - cut) as usize];
                staged = staged.and_then(|()| self.stage(ino, c, p, bytes));
            }
            p = e;
        }
        for (off, bytes) in &f.early {
            staged = staged.and_then(|()| self.stage(ino, c, *off, bytes));
        }
        let mut dirty = late;
        dirty.truncate(c.size);
        dirty.insert(cut, c.size);
        c.dirty = dirty;
        c.base = Arc::new(f.made);
        if let Err(e) = staged {
            tracing::error!("staging the stream's tail of inode {ino}: errno {e}");
            let (s, end) = c
                .lost
                .map_or((cut, fed), |(s, end, _)| (s.min(cut), end.max(fed)));
            let end = f
                .early
                .iter()
                .map(|(o, b)| o + b.len() as u64)
                .fold(end, u64::max);
            c.lost = Some((s, end, e));
        }
        staged
    }

    /// End of the bytes the file's stream holds (0 without one).
    fn fed(c: &Content) -> u64 {
        c.stream.as_ref().map_or(0, Streamer::end)
    }

    /// Clears the set-id bits of file `ino` after an unprivileged write
    /// (the kernel asks for it with the write).
    fn kill_suidgid(&self, ino: u64) -> R<()> {
        let perm = lock(&self.tree).get(ino)?.perm;
        if let Some(mode) = killed_suidgid(perm) {
            let a = AttrChange {
                mode: Some(mode),
                ..AttrChange::default()
            };
            self.change(|t, hlc, ch| t.set_attr(ino, &a, hlc, ch))?;
        }
        Ok(())
    }

    /// Shows new content of `ino` in its attributes: size, and the time
    /// of the change.
    fn written(&self, ino: u64, size: u64) {
        if let Ok(n) = lock(&self.tree).get_mut(ino) {
            n.size = size;
            let now = tree::now_ns();
            n.mtime = now;
            n.ctime = now;
        }
    }

    /// Reads up to `len` bytes of `ino` at `off` (fewer at its end).
    fn read_at(&self, ino: u64, off: u64, len: u64) -> R<Vec<u8>> {
        let c = self.content(ino, false)?;
        let mut g = lock(&c);
        // Bytes the stream holds are read once it has handed them back.
        let end = off.saturating_add(len);
        if off < Self::fed(&g) || g.stream.as_ref().is_some_and(|s| s.holds(off, end)) {
            self.stop_stream(ino, &mut g)?;
        }
        if g.lost.is_some_and(|(s, e, _)| off < e && end > s) {
            return Err(libc::EIO);
        }
        if off >= g.size || !g.dirty.clipped(off, end).is_empty() {
            return self.read_locked(ino, &g, off, len);
        }
        // Only the stored version: its chunks never change, so the read
        // goes on without the file's lock and reads of one file (the
        // kernel's read-ahead sends several at once) overlap their disk
        // reads and fetches.
        let mut buf = vec![0u8; len.min(g.size - off) as usize];
        let base = g.base.clone();
        drop(g);
        let r = chunker::read_base(&base, off, &mut buf, &self.io(None, &base));
        let g = lock(&c);
        match r {
            Ok(()) => Ok(buf),
            // A new version came meanwhile and the old one's chunks went:
            // read what is there now.
            Err(_) if !Arc::ptr_eq(&base, &g.base) => self.read_locked(ino, &g, off, len),
            Err(e) => {
                tracing::error!("read inode {ino}: {e}");
                Err(libc::EIO)
            }
        }
    }

    /// Reads `len` bytes at `off` of a file whose lock is held: its stored
    /// version overlaid with the bytes staged since.
    fn read_locked(&self, ino: u64, g: &Content, off: u64, len: u64) -> R<Vec<u8>> {
        if off >= g.size {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len.min(g.size - off) as usize];
        let io = self.io(Some(&g.staging), &g.base);
        chunker::read_overlay(&g.base, &g.dirty, off, &mut buf, &io).map_err(|e| {
            tracing::error!("read inode {ino}: {e}");
            libc::EIO
        })?;
        Ok(buf)
    }

    /// Keeps the file's stream going after a write ending at `end`:
    /// staged bytes that now follow its end go to it, and a new file that
    /// has grown far enough front to back starts one.
    fn feed(&self, ino: u64, c: &mut Content, end: u64) -> R<()> {
        if c.stream.is_some() {
            // Writes that came early (the kernel sends them from several
            // threads) follow once the gap before them is filled.
            if !self.feed_staged(c) {
                self.stop_stream(ino, c)?;
            }
            return Ok(());
        }
        // Only a new (or all-hole) file whose bytes came in order from 0.
        let from_start = |c: &Content| {
            c.dirty
                .first_ending_after(0)
                .is_some_and(|(s, e)| s == 0 && e >= STREAM_FROM)
        };
        if end < STREAM_FROM || !from_start(c) || has_data(&c.base) {
            return Ok(());
        }
        let Ok(s) = Streamer::start(self.store.clone()) else {
            return Ok(());
        };
        tracing::debug!(end, "stream starts");
        c.stream = Some(s);
        if !self.feed_staged(c) {
            self.stop_stream(ino, c)?;
        }
        Ok(())
    }

    /// Hands the staged bytes that follow the end of the file's stream to
    /// it (up to the next write it holds, which follows by itself), until
    /// no staged byte follows. False when the stream stopped.
    fn feed_staged(&self, c: &mut Content) -> bool {
        let mut buf = Vec::new();
        loop {
            let Some(s) = &mut c.stream else {
                return false;
            };
            let fed = s.end();
            let Some((_, e)) = c.dirty.first_ending_after(fed).filter(|r| r.0 <= fed) else {
                return true;
            };
            let e = s.next_early().filter(|&k| k > fed).map_or(e, |k| k.min(e));
            if e <= fed {
                return true;
            }
            buf.resize((e - fed).min(1 << 20) as usize, 0);
            if c.staging.read(fed, &mut buf).is_err() || !s.push(&buf) {
                return false;
            }
        }
    }

    fn truncate(&self, ino: u64, c: &mut Content, n: u64) -> R<()> {
        if n > MAX_FILE_SIZE {
            return Err(libc::EFBIG);
        }
        // Cut bytes past the new end would be wrong: what the stream cut
        // becomes the base, truncated below.
        if n < Self::fed(c) || n < c.base.len() {
            self.stop_stream(ino, c)?;
        }
        if n < c.base.len() {
            let base0 = c.base.clone();
            let io = self.io(None, &base0);
            let (base, tail) = chunker::truncate_base(&c.base, n, &io).map_err(|e| io_errno(&e))?;
            c.base = Arc::new(base);
            c.dirty.truncate(n);
            if let Some((off, bytes)) = tail {
                // Dirty bytes over the cut chunk win over the old ones.
                let keep = c.dirty.clipped(off, n);
                let mut merged = bytes;
                for (s, e) in keep {
                    let r = &mut merged[(s - off) as usize..(e - off) as usize];
                    c.staging.read(s, r).map_err(|e| io_errno(&e))?;
                }
                self.write_at(ino, c, off, &merged)?;
            }
        } else {
            c.dirty.truncate(n);
        }
        c.size = n;
        c.changed = true;
        c.staging.truncate(n);
        if c.lost.is_some_and(|(s, _, _)| n <= s) {
            c.lost = None;
        }
        Ok(())
    }

    /// Drops the content state of `ino` when no handle holds it and nothing
    /// is pending (one handle fewer with `close`). Takes the map lock before
    /// the content lock, as [`ChanFs::content`] does. Returns true if dropped.
    fn settle(&self, ino: u64, c: &Arc<Mutex<Content>>, close: bool) -> bool {
        let mut map = lock(&self.contents);
        let mut g = lock(c);
        if close {
            g.opens = g.opens.saturating_sub(1);
        }
        if g.opens > 0 || g.changed {
            return false;
        }
        if let Some(path) = std::mem::take(&mut g.staging).path() {
            let _ = std::fs::remove_file(path);
        }
        map.remove(&ino);
        true
    }

    fn release_content(&self, ino: u64) -> R<()> {
        let Some(c) = lock(&self.contents).get(&ino).cloned() else {
            return Ok(());
        };
        let r = {
            let mut g = lock(&c);
            let r = self.commit_content(ino, &mut g);
            // Content nobody can reach any more (unlinked, last handle) is
            // not worth an error: drop it, and the space its staging holds.
            let unlinked = lock(&self.tree)
                .get(ino)
                .map(|n| n.nlink == 0)
                .unwrap_or(true);
            if r.is_err() && unlinked && g.opens <= 1 {
                g.changed = false;
            }
            r
        };
        self.settle(ino, &c, true);
        let gone = {
            let mut t = lock(&self.tree);
            let mut ch = t.changes();
            let renew = t.released(ino, &mut ch);
            let gone = t.get(ino).is_err();
            drop(t);
            let notifier = if renew.is_empty() {
                None
            } else {
                lock(&self.notifier).clone()
            };
            if let Some(n) = notifier {
                // Not from inside this request: the kernel may call back.
                let fx = tree::Effects {
                    names: renew,
                    ..Default::default()
                };
                let _ = std::thread::Builder::new()
                    .name("chanfs-inval".into())
                    .spawn(move || notify(&n, &fx));
            }
            self.submit(ch.into_muts())?;
            gone
        };
        if gone {
            self.forget_if_gone(ino);
        }
        r
    }

    /// Forgets the pending content of a file whose last name went while no
    /// handle held it (its staging space is freed at once).
    fn forget_if_gone(&self, ino: u64) {
        if lock(&self.tree).get(ino).is_ok() {
            return;
        }
        let c = lock(&self.contents).get(&ino).cloned();
        if let Some(c) = c {
            lock(&c).changed = false;
            self.settle(ino, &c, false);
        }
    }

    /// Gives empty file `out` the version of `src` when `src` has nothing
    /// pending and `len` covers it; returns the bytes "copied", or `None`
    /// when the files are not in that state.
    fn share_version(&self, src: &Arc<Mutex<Content>>, out: u64, len: u64) -> R<Option<u32>> {
        let (base, size) = {
            let s = lock(src);
            if s.changed || s.size == 0 || s.size > len || s.size > u64::from(u32::MAX) {
                return Ok(None);
            }
            (s.base.clone(), s.size)
        };
        let dst = self.content(out, false)?;
        let mut d = lock(&dst);
        if d.size != 0 || !d.base.is_empty() || !d.dirty.is_empty() || d.stream.is_some() {
            return Ok(None);
        }
        d.base = base;
        d.size = size;
        d.changed = true;
        d.last_write = Some(std::time::Instant::now());
        drop(d);
        self.written(out, size);
        Ok(Some(size as u32))
    }

    /// A new file handle, opened by process `pid`.
    fn new_fh(&self, pid: u32) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.openers).insert(fh, pid);
        fh
    }

    /// True when `pid` belongs to the process that opened `fh` (threads of
    /// one process share it; a forked child does not).
    fn opened_by(&self, fh: u64, pid: u32) -> bool {
        let Some(opener) = lock(&self.openers).get(&fh).copied() else {
            return true;
        };
        opener == pid || tgid(opener).is_some_and(|t| Some(t) == tgid(pid))
    }

    /// Commits `ino`'s content once nothing was written to it for
    /// [`QUIET`] (a close by another process than the writer: a forked
    /// child closing the descriptors it inherited, mid-write).
    fn commit_when_quiet(self: &Arc<Self>, ino: u64) {
        if !lock(&self.quiet_waits).insert(ino) {
            return;
        }
        let fs = self.clone();
        let spawned = std::thread::Builder::new()
            .name("chanfs-quiet".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(QUIET);
                    let Some(c) = lock(&fs.contents).get(&ino).cloned() else {
                        break;
                    };
                    let mut g = lock(&c);
                    if !g.changed {
                        break;
                    }
                    if g.last_write.is_none_or(|t| t.elapsed() >= QUIET) {
                        if let Err(e) = fs.commit_content(ino, &mut g) {
                            tracing::warn!("committing inode {ino}: errno {e}");
                        }
                        break;
                    }
                }
                lock(&fs.quiet_waits).remove(&ino);
            });
        if spawned.is_err() {
            lock(&self.quiet_waits).remove(&ino);
        }
    }

    /// Records every pending content change (unmount, shutdown).
    pub fn flush_all(&self) {
        let all: Vec<(u64, Arc<Mutex<Content>>)> = lock(&self.contents)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (ino, c) in all {
            if let Err(e) = self.commit_content(ino, &mut lock(&c)) {
                tracing::error!("flushing inode {ino}: errno {e}");
            }
        }
    }

    fn statfs_of(&self) -> Option<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(self.store.staging_dir()).ok()
    }
}

/// Tells the kernel to forget the names and inodes in `fx`.
fn notify(n: &fuser::Notifier, fx: &tree::Effects) {
    for (parent, name) in &fx.names {
        let _ = n.inval_entry(INodeNo(*parent), OsStr::from_bytes(name));
    }
    let mut seen = std::collections::HashSet::new();
    for ino in fx.inodes.iter().chain(&fx.data) {
        if seen.insert(*ino) {
            let _ = n.inval_inode(INodeNo(*ino), 0, 0);
        }
    }
}

/// The `fuser::Filesystem` face of a [`ChanFs`].
pub struct FuseFs(pub Arc<ChanFs>);

fn name_bytes(n: &OsStr) -> &[u8] {
    n.as_bytes()
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for f in [
            InitFlags::FUSE_WRITEBACK_CACHE,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_BIG_WRITES,
            InitFlags::FUSE_MAX_PAGES,
            // We clear set-user/group-id bits on write, truncate and chown
            // ourselves; in exchange the kernel stops asking for
            // security.capability before every write(2) (a round trip as
            // costly as the write's own).
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            let _ = config.add_capabilities(f);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn destroy(&mut self) {
        self.0.flush_all();
        if let Err(e) = self.0.store.sync() {
            tracing::error!("sync at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = lock(&self.0.tree);
        match t
            .lookup(parent.0, name_bytes(name))
            .and_then(|i| Ok((t.get(i)?.gen, attr(i, t.get(i)?))))
        {
            Ok((g, a)) => reply.entry(&TTL, &a, Generation(g)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.entry_of(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = &self.0;
        let ino = ino.0;
        tracing::debug!(ino, ?mode, ?uid, ?gid, ?size, ?atime, ?mtime, "setattr");
        let r = (|| -> R<FileAttr> {
            if fs.is_readonly() {
                return Err(libc::EROFS);
            }
            // The kernel leaves clearing set-id bits to us (see `init`): a
            // chown of a non-directory clears them, and so does a truncate
            // by a caller without CAP_FSETID (taken as: not root).
            let mut mode = mode;
            let chown = uid.is_some() || gid.is_some();
            if mode.is_none() && (chown || (size.is_some() && req.uid() != 0)) {
                let t = lock(&fs.tree);
                let n = t.get(ino)?;
                if n.kind != NodeKind::Dir {
                    mode = killed_suidgid(n.perm);
                }
            }
            if let Some(n) = size {
                let c = fs.content(ino, false)?;
                {
                    let mut g = lock(&c);
                    fs.truncate(ino, &mut g, n)?;
                    if g.opens == 0 {
                        fs.commit_content(ino, &mut g)?;
                    }
                }
                fs.settle(ino, &c, false);
                let now = tree::now_ns();
                let mut t = lock(&fs.tree);
                let node = t.get_mut(ino)?;
                node.size = n;
                node.mtime = now;
                node.ctime = now;
            }
            let a = AttrChange {
                mode,
                uid,
                gid,
                atime: atime.map(ns_or_now),
                mtime: mtime.map(ns_or_now),
            };
            // The kernel's write-back cache sends the mtime of writes it
            // flushes; while content is pending, the Content entry records
            // it, so no entry of its own.
            let times_only = mode.is_none() && uid.is_none() && gid.is_none() && size.is_none();
            let pending = lock(&fs.contents)
                .get(&ino)
                .cloned()
                .is_some_and(|c| lock(&c).changed);
            if times_only && pending {
                let mut t = lock(&fs.tree);
                let n = t.get_mut(ino)?;
                if let Some(x) = a.atime {
                    n.atime = x;
                }
                if let Some(x) = a.mtime {
                    n.mtime = x;
                }
                n.ctime = ctime.map(ns_of).unwrap_or_else(tree::now_ns);
                return Ok(attr(ino, n));
            }
            if a != AttrChange::default() || ctime.is_some() {
                fs.change(|t, hlc, ch| t.set_attr(ino, &a, hlc, ch))?;
                if let Some(c) = ctime {
                    if let Ok(n) = lock(&fs.tree).get_mut(ino) {
                        n.ctime = ns_of(c);
                    }
                }
            }
            fs.entry_of(ino)
        })();
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let t = lock(&self.0.tree);
        match t.get(ino.0) {
            Ok(n) if n.kind == NodeKind::Symlink => reply.data(&n.target),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFDIR => NodeKind::Dir,
            _ => return reply.error(Errno::EPERM),
        };
        let r = self.0.change(|t, hlc, ch| {
            t.create(
                parent.0,
                name_bytes(name),
                kind,
                mode,
                req.uid(),
                req.gid(),
                Vec::new(),
                hlc,
                ch,
            )
        });
        match r.and_then(|i| self.0.entry_of(i)) {
            Ok(a) => reply.entry(&TTL, &a, self.0.generation(a.ino.0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.0.change(|t, hlc, ch| {
            t.create(
                parent.0,
                name_bytes(name),
                NodeKind::Dir,
                mode,
                req.uid(),
                req.gid(),
                Vec::new(),
                hlc,
                ch,
            )
        });
        match r.and_then(|i| self.0.entry_of(i)) {
            Ok(a) => reply.entry(&TTL, &a, self.0.generation(a.ino.0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .0
            .change(|t, hlc, ch| t.unlink(parent.0, name_bytes(name), hlc, ch))
        {
            Ok(ino) => {
                // A file whose last version could not be stored (disk
                // full) and that nobody holds open: its staging goes now.
                self.0.forget_if_gone(ino);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .0
            .change(|t, hlc, ch| t.rmdir(parent.0, name_bytes(name), hlc, ch))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes().to_vec();
        if target.len() > 4095 {
            return reply.error(Errno::ENAMETOOLONG);
        }
        let r = self.0.change(|t, hlc, ch| {
            t.create(
                parent.0,
                name_bytes(link_name),
                NodeKind::Symlink,
                0o777,
                req.uid(),
                req.gid(),
                target,
                hlc,
                ch,
            )
        });
        match r.and_then(|i| self.0.entry_of(i)) {
            Ok(a) => reply.entry(&TTL, &a, self.0.generation(a.ino.0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.0.change(|t, hlc, ch| {
            t.rename(
                parent.0,
                name_bytes(name),
                newparent.0,
                name_bytes(newname),
                flags.bits(),
                hlc,
                ch,
            )
        });
        match r {
            Ok(replaced) => {
                if let Some(ino) = replaced {
                    self.0.forget_if_gone(ino);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self
            .0
            .change(|t, hlc, ch| t.link(ino.0, newparent.0, name_bytes(newname), hlc, ch));
        match r.and_then(|()| self.0.entry_of(ino.0)) {
            Ok(a) => reply.entry(&TTL, &a, self.0.generation(a.ino.0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = &self.0;
        if fs.is_readonly() && flags.acc_mode() != fuser::OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        {
            let t = lock(&fs.tree);
            match t.get(ino.0) {
                Ok(n) if n.kind == NodeKind::Dir => return reply.error(Errno::EISDIR),
                Ok(n) if n.kind != NodeKind::File => return reply.error(Errno::ENXIO),
                Ok(_) => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        match fs.content(ino.0, true) {
            Ok(_) => {
                *lock(&fs.tree).open_count.entry(ino.0).or_default() += 1;
                reply.opened(
                    FileHandle(fs.new_fh(req.pid())),
                    FopenFlags::FOPEN_KEEP_CACHE,
                )
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.0.read_at(ino.0, offset, u64::from(size));
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Copies inside the mount (`cp`, file managers). A whole file with
    /// nothing pending copied into an empty one takes its version as it
    /// is: no byte moves and nothing new is stored. Other ranges are read
    /// and written here, up to [`COPY_STEP`] per call, which spares the
    /// copier two round trips per block.
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let fs = &self.0;
        if fs.is_readonly() {
            return reply.error(Errno::EROFS);
        }
        let r = (|| -> R<u32> {
            if offset_in == 0 && offset_out == 0 && ino_in != ino_out {
                let src = fs.content(ino_in.0, false)?;
                if let Some(n) = fs.share_version(&src, ino_out.0, len)? {
                    return Ok(n);
                }
            }
            let buf = fs.read_at(ino_in.0, offset_in, len.min(COPY_STEP))?;
            if buf.is_empty() {
                return Ok(0);
            }
            let dst = fs.content(ino_out.0, false)?;
            fs.write_at(ino_out.0, &mut lock(&dst), offset_out, &buf)?;
            Ok(buf.len() as u32)
        })();
        match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = &self.0;
        if fs.is_readonly() {
            return reply.error(Errno::EROFS);
        }
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = fs.kill_suidgid(ino.0) {
                return reply.error(errno(e));
            }
        }
        let r = fs
            .content(ino.0, false)
            .and_then(|c| fs.write_at(ino.0, &mut lock(&c), offset, data));
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// A close of a descriptor commits what was written (the version
    /// other members see), unless the closing process is not the one that
    /// opened the file: a forked child closing inherited descriptors would
    /// otherwise commit a half-written file. Then the commit waits until
    /// the file is quiet, or for the writer's own close or release.
    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let c = lock(&fs.contents).get(&ino.0).cloned();
        let r = match c {
            Some(c) if !fs.opened_by(fh.0, req.pid()) => {
                if lock(&c).changed {
                    fs.commit_when_quiet(ino.0);
                }
                Ok(())
            }
            Some(c) => fs.commit_content(ino.0, &mut lock(&c)),
            None => Ok(()),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.0.openers).remove(&fh.0);
        match self.0.release_content(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let r = match lock(&fs.contents).get(&ino.0).cloned() {
            Some(c) => fs.commit_content(ino.0, &mut lock(&c)),
            None => Ok(()),
        }
        .and_then(|()| fs.store.sync().map_err(|e| store_errno(&e)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match lock(&self.0.tree).get(ino.0) {
            Ok(n) if n.kind == NodeKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = lock(&self.0.tree);
        match t.list(ino.0, offset as usize) {
            Ok(list) => {
                for (i, (child, kind, name)) in list.into_iter().enumerate() {
                    if reply.add(
                        INodeNo(child),
                        offset + i as u64 + 1,
                        file_type(kind),
                        OsStr::from_bytes(&name),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let t = lock(&self.0.tree);
        match t.list(ino.0, offset as usize) {
            Ok(list) => {
                for (i, (child, _, name)) in list.into_iter().enumerate() {
                    let Ok(n) = t.get(child) else { continue };
                    let a = attr(child, n);
                    if reply.add(
                        INodeNo(child),
                        offset + i as u64 + 1,
                        OsStr::from_bytes(&name),
                        &TTL,
                        &a,
                        Generation(n.gen),
                    ) {
                        break;
                    }
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.0.store.sync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(store_errno(&e))),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.0.statfs_of() {
            Some(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.fragment_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            None => reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let n = name_bytes(name);
        if !(n.starts_with(b"user.") || n.starts_with(b"trusted.")) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        if n.len() > 255 {
            return reply.error(Errno::ERANGE);
        }
        let v = value.to_vec();
        match self
            .0
            .change(|t, hlc, ch| t.set_xattr(ino.0, n, Some(v), flags, hlc, ch))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let t = lock(&self.0.tree);
        let v = match t.get(ino.0) {
            Ok(n) => match n.xattrs.get(name_bytes(name)) {
                Some(v) => v.clone(),
                None => return reply.error(Errno::ENODATA),
            },
            Err(e) => return reply.error(errno(e)),
        };
        drop(t);
        if size == 0 {
            reply.size(v.len() as u32)
        } else if (size as usize) < v.len() {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&v)
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let t = lock(&self.0.tree);
        let mut buf = Vec::new();
        match t.get(ino.0) {
            Ok(n) => {
                for k in n.xattrs.keys() {
                    buf.extend_from_slice(k);
                    buf.push(0);
                }
            }
            Err(e) => return reply.error(errno(e)),
        }
        drop(t);
        if size == 0 {
            reply.size(buf.len() as u32)
        } else if (size as usize) < buf.len() {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&buf)
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let n = name_bytes(name);
        match self
            .0
            .change(|t, hlc, ch| t.set_xattr(ino.0, n, None, 0, hlc, ch))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Not a terminal, no special controls (isatty() and friends ask).
        reply.error(Errno::ENOTTY);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks modes itself.
        match lock(&self.0.tree).get(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let fs = &self.0;
        let r = fs
            .change(|t, hlc, ch| {
                t.create(
                    parent.0,
                    name_bytes(name),
                    NodeKind::File,
                    mode,
                    req.uid(),
                    req.gid(),
                    Vec::new(),
                    hlc,
                    ch,
                )
            })
            .and_then(|ino| {
                fs.content(ino, true)?;
                *lock(&fs.tree).open_count.entry(ino).or_default() += 1;
                fs.entry_of(ino)
            });
        match r {
            Ok(a) => reply.created(
                &TTL,
                &a,
                fs.generation(a.ino.0),
                FileHandle(fs.new_fh(req.pid())),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let r = (|| -> R<()> {
            let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
            let c = fs.content(ino.0, false)?;
            let mut g = lock(&c);
            if end > g.size {
                fs.truncate(ino.0, &mut g, end)?;
                let mut t = lock(&fs.tree);
                let n = t.get_mut(ino.0)?;
                n.size = end;
                n.ctime = tree::now_ns();
            }
            Ok(())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}
