//! The in-memory tree of one channel: inodes, names, attributes. It is the
//! authority while the node runs; every change also yields the redb
//! mutations and the journal entry that record it, submitted to the store
//! under the same lock so they commit in the order they happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::journal::{AttrChange, FileId, NodeKind, Op};
use crate::store::manifest::Manifest;
use crate::store::{Hash, Mut, Store, StoreError};

mod apply;
mod refs;
#[cfg(test)]
mod sim;
pub use apply::{Effects, Version};
pub use refs::TreeRefs;

/// Root inode number.
pub const ROOT: u64 = 1;
/// Longest name accepted.
pub const NAME_MAX: usize = 255;

/// Result with an errno.
pub type R<T> = Result<T, i32>;

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// One file, directory, symlink, FIFO or socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    /// Stable id.
    pub id: FileId,
    /// Kind.
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid and sticky.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Names (and `.`/subdirectories for directories).
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Access time (ns).
    pub atime: i64,
    /// Modification time (ns).
    pub mtime: i64,
    /// Change time (ns).
    pub ctime: i64,
    /// Current content (manifest hash) of a regular file.
    pub content: Option<Hash>,
    /// Symlink target.
    pub target: Vec<u8>,
    /// Extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Parent directory (of the latest name, for files with several).
    pub parent: u64,
    /// Hybrid clock of the entry that created the node (name conflicts:
    /// the older node keeps the name).
    pub born: u64,
    /// Stamp of the current content version: hybrid clock and author
    /// prefix of the entry that set it (content conflicts: the newer wins
    /// the name, the other is kept beside it).
    pub vstamp: Stamp,
    /// Last-writer-wins stamps of the other replicated fields (stored
    /// after the node: see [`Stored`]).
    #[serde(skip)]
    pub stamps: Stamps,
    /// Entries of a directory.
    #[serde(skip)]
    pub entries: BTreeMap<Vec<u8>, u64>,
    /// Loaded manifest of `content`.
    #[serde(skip)]
    pub manifest: Option<Arc<Manifest>>,
    /// FUSE generation: bumped when a remote change replaces a file's
    /// size or times, so the kernel (which trusts its own cached size and
    /// times under the writeback cache) takes a fresh inode.
    #[serde(skip)]
    pub gen: u64,
    /// A remote change arrived while the file was open: bump `gen` when
    /// the last handle closes.
    #[serde(skip)]
    pub stale: bool,
}

/// (hybrid clock, author prefix) of the entry that set a field: the
/// larger stamp wins, on every node alike.
pub type Stamp = (u64, [u8; 8]);

/// Last-writer-wins stamps of a node's replicated fields. Concurrent
/// changes of one field made on different nodes then settle on the same
/// value everywhere, whatever order they arrive in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stamps {
    /// Mode bits.
    pub mode: Stamp,
    /// Access time set explicitly (`touch`, `utimens`).
    pub atime: Stamp,
    /// Modification time set explicitly (a content version also sets it:
    /// the newer of the two stamps wins).
    pub mtime: Stamp,
    /// Parent and name: the create or the last move applied.
    pub place: Stamp,
    /// What most nodes never need, boxed (a tree holds many nodes).
    rare: Option<Box<Rare>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Rare {
    /// Where the node was before its last move (parent inode, name,
    /// stamp): an older move that crosses it puts it back there.
    prev: Option<(u64, Vec<u8>, Stamp)>,
    /// Extended attributes set or removed, by key.
    xattrs: BTreeMap<Vec<u8>, Stamp>,
    /// The name it claims in its parent while an older node holds it (it
    /// shows under a conflict name until that name is free again).
    want: Option<Vec<u8>>,
    /// For a conflict copy: the file it was made of, whose mode and xattrs
    /// it follows (stored after the stamps: see [`Stored`]).
    #[serde(skip)]
    origin: Option<FileId>,
    /// For an announced conflict copy: the stamp of the announcement that
    /// placed the conflict name it was made with (stored after the origin:
    /// see [`Stored`]); a newer one made elsewhere moves that name.
    #[serde(skip)]
    announced: Option<Stamp>,
    /// Its newest moves (stored after the announcement: see [`Stored`]).
    #[serde(skip)]
    moves: Moves,
}

/// The newest moves of a node, applied or not (a newer one may have placed
/// it already): per target directory the newest, and of those the two
/// newest. Enough to tell whether a move stamped after a given one took
/// the node into a directory other than a given one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moves(Vec<(Stamp, FileId)>);

impl Moves {
    /// Records a move made at `stamp` into directory `to`.
    pub fn note(&mut self, stamp: Stamp, to: FileId) {
        match self.0.iter_mut().find(|(_, d)| *d == to) {
            Some(e) => e.0 = e.0.max(stamp),
            None => self.0.push((stamp, to)),
        }
        self.0.sort_by_key(|e| std::cmp::Reverse(e.0));
        self.0.truncate(2);
    }

    /// Records every move of `other`.
    pub fn merge(&mut self, other: &Moves) {
        for (s, d) in &other.0 {
            self.note(*s, *d);
        }
    }

    /// True when a move stamped after `seen` took the node into a
    /// directory other than `dir`: a remover that saw it in `dir` placed
    /// at `seen` had not seen that move.
    pub fn off(&self, seen: Stamp, dir: FileId) -> bool {
        self.0.iter().any(|(s, d)| *s > seen && *d != dir)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Stamps {
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Where the node was before its last move.
    pub fn prev(&self) -> Option<&(u64, Vec<u8>, Stamp)> {
        self.rare.as_ref()?.prev.as_ref()
    }

    /// Sets (or clears) where the node was before its last move.
    pub fn set_prev(&mut self, prev: Option<(u64, Vec<u8>, Stamp)>) {
        if prev.is_some() || self.rare.is_some() {
            self.rare_mut().prev = prev;
        }
    }

    /// The stamp of the last change of xattr `name`.
    pub fn xattr(&self, name: &[u8]) -> Option<Stamp> {
        self.rare.as_ref()?.xattrs.get(name).copied()
    }

    /// Records a change of xattr `name` at `stamp`.
    pub fn set_xattr(&mut self, name: &[u8], stamp: Stamp) {
        self.rare_mut().xattrs.insert(name.to_vec(), stamp);
    }

    /// Every xattr key with the stamp of its last change.
    pub fn xattr_stamps(&self) -> BTreeMap<Vec<u8>, Stamp> {
        self.rare
            .as_ref()
            .map(|r| r.xattrs.clone())
            .unwrap_or_default()
    }

    /// The file this conflict copy was made of.
    pub fn origin(&self) -> Option<FileId> {
        self.rare.as_ref()?.origin
    }

    /// Marks a conflict copy of `origin`.
    pub fn set_origin(&mut self, origin: FileId) {
        self.rare_mut().origin = Some(origin);
    }

    /// The stamp of the announcement that placed this conflict copy's
    /// conflict name.
    pub fn announced(&self) -> Option<Stamp> {
        self.rare.as_ref()?.announced
    }

    /// Records the announcement that placed this copy's conflict name.
    pub fn set_announced(&mut self, stamp: Stamp) {
        self.rare_mut().announced = Some(stamp);
    }

    /// Records a move made at `stamp` into directory `to` (see [`Moves`]).
    pub fn note_move(&mut self, stamp: Stamp, to: FileId) {
        self.rare_mut().moves.note(stamp, to);
    }

    /// Records the moves a tomb kept.
    pub fn merge_moves(&mut self, moves: &Moves) {
        if !moves.is_empty() {
            self.rare_mut().moves.merge(moves);
        }
    }

    /// Its newest moves.
    pub fn moves(&self) -> Moves {
        self.rare
            .as_ref()
            .map(|r| r.moves.clone())
            .unwrap_or_default()
    }

    /// True when a move stamped after `seen` took the node into a
    /// directory other than `dir` (see [`Moves::off`]).
    pub fn moved_off(&self, seen: Stamp, dir: FileId) -> bool {
        self.rare.as_ref().is_some_and(|r| r.moves.off(seen, dir))
    }

    /// The name claimed while shown under a conflict name.
    pub fn want(&self) -> Option<&[u8]> {
        self.rare.as_ref()?.want.as_deref()
    }

    /// Sets (or clears) the name claimed.
    pub fn set_want(&mut self, want: Option<Vec<u8>>) {
        if want.is_some() || self.rare.is_some() {
            self.rare_mut().want = want;
        }
    }
}

/// The stored form of a node. V1 records (before stamps) load with zero
/// stamps, which any change beats; V2 records (before conflict copies knew
/// their origin) with none; V3 records (before copies kept the stamp of
/// their announcement) with none; V4 records (before nodes kept their
/// newest moves) with none.
#[derive(Deserialize)]
enum Stored {
    V1(Node),
    V2(Node, Stamps),
    V3(Node, Stamps, Option<FileId>),
    V4(Node, Stamps, Option<FileId>, Stamp),
    V5(Node, Stamps, Option<FileId>, Option<Stamp>, Moves),
}

/// The stored form, borrowed: encodes like [`Stored`] without cloning the
/// node (a directory's entries are skipped, not copied).
#[derive(Serialize)]
enum StoredRef<'a> {
    /// Only decoded, never written: it holds the tags after it in place.
    #[allow(dead_code)]
    V1(&'a Node),
    /// Only decoded, never written.
    #[allow(dead_code)]
    V2(&'a Node, &'a Stamps),
    /// Written for nodes without an announcement stamp (all but announced
    /// conflict copies), so that older builds still read them.
    V3(&'a Node, &'a Stamps, Option<FileId>),
    V4(&'a Node, &'a Stamps, Option<FileId>, Stamp),
    /// Written for nodes that were moved.
    V5(
        &'a Node,
        &'a Stamps,
        Option<FileId>,
        Option<Stamp>,
        &'a Moves,
    ),
}

impl Node {
    /// Takes a mode set at `stamp` if it is the newer one.
    pub fn take_mode(&mut self, perm: u32, stamp: Stamp) -> bool {
        lww(&mut self.perm, &mut self.stamps.mode, perm, stamp)
    }

    /// Takes an xattr change made at `stamp` if it is the newer one.
    pub fn take_xattr(&mut self, name: &[u8], value: Option<&[u8]>, stamp: Stamp) -> bool {
        if self.stamps.xattr(name).is_some_and(|s| s >= stamp) {
            return false;
        }
        self.stamps.set_xattr(name, stamp);
        put_xattr(&mut self.xattrs, name, value);
        true
    }

    /// Records a move made at `stamp` from `from`/`name`.
    fn moved(&mut self, from: u64, name: &[u8], stamp: Stamp) {
        let was = std::mem::replace(&mut self.stamps.place, stamp);
        self.stamps.set_prev(Some((from, name.to_vec(), was)));
        self.stamps.set_want(None);
    }

    fn encode(&self) -> Vec<u8> {
        let (st, origin) = (&self.stamps, self.stamps.origin());
        let moves = st.rare.as_ref().map(|r| &r.moves).filter(|m| !m.is_empty());
        let stored = match (st.announced(), moves) {
            (a, Some(m)) => StoredRef::V5(self, st, origin, a, m),
            (Some(a), None) => StoredRef::V4(self, st, origin, a),
            (None, None) => StoredRef::V3(self, st, origin),
        };
        postcard::to_allocvec(&stored).unwrap_or_default()
    }
}

/// A channel's tree.
pub struct Tree {
    chan: u32,
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    id_prefix: [u8; 8],
    ids: HashMap<FileId, u64>,
    tombs: HashMap<FileId, Tomb>,
    /// Files with open handles (kept while unlinked).
    pub open_count: HashMap<u64, u32>,
    /// Nodes shown under a conflict name: inode to (parent, name claimed).
    /// Entries go stale when the node moves or goes; checked on use.
    wanting: HashMap<u64, (u64, Vec<u8>)>,
    /// What local changes made the kernel's caches miss (a conflict-named
    /// node took back its name): for [`Tree::take_deferred`].
    deferred: Effects,
    /// Conflict copies by the file they were made of. Entries go stale when
    /// a copy goes; checked on use.
    copies: HashMap<FileId, Vec<u64>>,
}

/// What is kept of a removed file, so that an edit made concurrently
/// elsewhere brings it back (edit beats delete).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tomb {
    /// Directory it was in.
    pub parent: FileId,
    /// Its name there.
    pub name: Vec<u8>,
    /// Mode bits.
    pub perm: u32,
    /// Content it had when removed.
    pub content: Option<Hash>,
    /// Creation clock.
    pub born: u64,
    /// Size and modification time it had (stored after the fields above,
    /// so tombs written before they existed still load).
    #[serde(skip)]
    pub size_mtime: (u64, i64),
    /// It was an (empty) directory (stored after the size and time).
    #[serde(skip)]
    pub dir: bool,
    /// Its mode's stamp and its xattrs with theirs, kept up to date by
    /// changes that arrive while it is gone (stored after the kind), so
    /// that a file brought back shows them as where it never went.
    #[serde(skip)]
    pub attrs: KeptAttrs,
    /// Stamp of the version it had (stored after the attributes; zero in
    /// older tombs, which any version beats).
    #[serde(skip)]
    pub vstamp: Stamp,
    /// The file it was a conflict copy of, if it was one (stored after the
    /// stamp; none in older tombs): a copy brought back follows its file
    /// again.
    #[serde(skip)]
    pub origin: Option<FileId>,
    /// Kind and target of a node neither file nor directory (stored after
    /// the origin; none in older tombs, which only files and directories
    /// had), so that a concurrent move brings it back.
    #[serde(skip)]
    pub special: Option<(NodeKind, Vec<u8>)>,
    /// Stamp of the move that put it where it was (stored after the kind;
    /// zero in older tombs): an older concurrent move does not bring it
    /// back, as it would not have moved it.
    #[serde(skip)]
    pub place: Stamp,
    /// Kept for a file that lives on under a name a concurrent link gave
    /// it when a remove took its last name (stored after the place stamp;
    /// false in older tombs): a newer edit that beats the remove brings
    /// the removed name back, as where it came before the remove.
    #[serde(skip)]
    pub relink: bool,
    /// The placement each remove of it saw: stamp and directory (stored
    /// after `relink`; none in older tombs, which use `place`). A move
    /// brings it back when every one of them missed a move into another
    /// directory (see [`Tomb::beaten`]).
    #[serde(skip)]
    pub removes: Vec<(Stamp, FileId)>,
    /// The node's newest moves, kept up to date by moves that arrive while
    /// it is gone (stored after `seen`), for when it comes back.
    #[serde(skip)]
    pub moves: Moves,
    /// For an announced conflict copy: the stamp of the announcement that
    /// placed its conflict name (stored after the moves), kept up to date
    /// by newer announcements that arrive while it is gone.
    #[serde(skip)]
    pub announced: Option<Stamp>,
}

/// The last-writer-wins state of a node's mode and xattrs, kept apart from
/// the node: in its tombstone, or taken over by a conflict copy made of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeptAttrs {
    /// Stamp of the mode.
    pub mode: Stamp,
    /// Extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Stamps of the xattr keys set or removed.
    pub xattr_stamps: BTreeMap<Vec<u8>, Stamp>,
}

impl KeptAttrs {
    /// Those of node `n`.
    pub fn of(n: &Node) -> KeptAttrs {
        KeptAttrs {
            mode: n.stamps.mode,
            xattrs: n.xattrs.clone(),
            xattr_stamps: n.stamps.xattr_stamps(),
        }
    }

    /// Gives node `n` these xattrs and the stamps of its mode and xattrs.
    pub fn restore(&self, n: &mut Node) {
        n.stamps.mode = self.mode;
        n.xattrs = self.xattrs.clone();
        for (k, st) in &self.xattr_stamps {
            n.stamps.set_xattr(k, *st);
        }
    }

    /// Gives node `n` each of these changes (mode `perm` and xattrs) that
    /// is newer than the one it has.
    pub fn merge_into(&self, n: &mut Node, perm: u32) {
        n.take_mode(perm & 0o7777, self.mode);
        for (k, st) in &self.xattr_stamps {
            n.take_xattr(k, self.xattrs.get(k).map(Vec::as_slice), *st);
        }
    }

    /// Takes an xattr change made at `stamp` if it is the newer one.
    pub fn take_xattr(&mut self, name: &[u8], value: Option<&[u8]>, stamp: Stamp) -> bool {
        if self.xattr_stamps.get(name).is_some_and(|s| *s >= stamp) {
            return false;
        }
        self.xattr_stamps.insert(name.to_vec(), stamp);
        put_xattr(&mut self.xattrs, name, value);
        true
    }
}

/// Last writer wins: `value` set at `stamp` replaces `slot` (set at `at`)
/// if it is the newer change. Returns whether it did.
fn lww<T>(slot: &mut T, at: &mut Stamp, value: T, stamp: Stamp) -> bool {
    if stamp <= *at {
        return false;
    }
    *slot = value;
    *at = stamp;
    true
}

/// Sets (`Some`) or removes xattr `name`.
fn put_xattr(xattrs: &mut BTreeMap<Vec<u8>, Vec<u8>>, name: &[u8], value: Option<&[u8]>) {
    match value {
        Some(v) => xattrs.insert(name.to_vec(), v.to_vec()),
        None => xattrs.remove(name),
    };
}

impl Tomb {
    /// Takes a mode set at `stamp` if it is the newer one.
    pub fn take_mode(&mut self, perm: u32, stamp: Stamp) -> bool {
        lww(&mut self.perm, &mut self.attrs.mode, perm, stamp)
    }

    /// True when a move made at `stamp` (already in [`Tomb::moves`])
    /// brings it back: every remove missed a move into another directory
    /// than the one it saw it in, newer than the placement it saw (such a
    /// move beats it, as where it arrives first). Tombs of builds before
    /// removes said what they saw: a move newer than its place.
    pub fn beaten(&self, stamp: Stamp) -> bool {
        if self.removes.is_empty() {
            return stamp > self.place;
        }
        self.removes.iter().all(|(s, d)| self.moves.off(*s, *d))
    }

    /// Adds a remove that saw it in `dir` placed at `seen`; the newest
    /// placement known names it.
    pub fn add_remove(&mut self, seen: Stamp, dir: FileId, name: &[u8]) {
        if !self.removes.contains(&(seen, dir)) {
            self.removes.push((seen, dir));
        }
        if seen > self.place {
            (self.parent, self.name, self.place) = (dir, name.to_vec(), seen);
        }
    }

    /// The kind of node it was.
    pub fn kind(&self) -> NodeKind {
        match &self.special {
            Some((k, _)) => *k,
            None if self.dir => NodeKind::Dir,
            None => NodeKind::File,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = postcard::to_allocvec(self).unwrap_or_default();
        let (size, mtime) = self.size_mtime;
        b.extend(postcard::to_allocvec(&(size, mtime, self.dir)).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.attrs).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.vstamp).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.origin).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.special).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.place).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.relink).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.removes).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.moves).unwrap_or_default());
        b.extend(postcard::to_allocvec(&self.announced).unwrap_or_default());
        b
    }

    fn decode(bytes: &[u8]) -> Option<Tomb> {
        let (mut t, rest) = postcard::take_from_bytes::<Tomb>(bytes).ok()?;
        if let Ok(((size, mtime, dir), rest)) = postcard::take_from_bytes::<(u64, i64, bool)>(rest)
        {
            (t.size_mtime, t.dir) = ((size, mtime), dir);
            // Older tombs end before some of the fields that follow.
            let _ = t.decode_later_fields(rest);
        } else if let Ok(x) = postcard::from_bytes(rest) {
            t.size_mtime = x;
        }
        Some(t)
    }

    /// Reads the fields stored after the size, time and kind, in order,
    /// as far as `rest` holds them.
    fn decode_later_fields(&mut self, rest: &[u8]) -> postcard::Result<()> {
        let (r1, r2, r3, r4, r5, r6, r7, r8);
        (self.attrs, r1) = postcard::take_from_bytes(rest)?;
        (self.vstamp, r2) = postcard::take_from_bytes(r1)?;
        (self.origin, r3) = postcard::take_from_bytes(r2)?;
        (self.special, r4) = postcard::take_from_bytes(r3)?;
        (self.place, r5) = postcard::take_from_bytes(r4)?;
        (self.relink, r6) = postcard::take_from_bytes(r5)?;
        (self.removes, r7) = postcard::take_from_bytes(r6)?;
        (self.moves, r8) = postcard::take_from_bytes(r7)?;
        self.announced = postcard::from_bytes(r8)?;
        Ok(())
    }
}

/// The changes one operation (or one batch of remote entries) makes, for
/// the store.
pub struct Changes {
    muts: Vec<Mut>,
    chan: u32,
    /// Where the record of each inode and tomb written so far is in
    /// `muts`: a later write of it takes that place, so that the store
    /// puts each record once, with its last value (a remote move writes
    /// its node's record several times; a batch of creates, the
    /// directory's and the inode counter's once per file).
    records: HashMap<Record, usize>,
}

/// A record the store keeps one value of (see [`Changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Record {
    Inode(u32, u64),
    Tomb(u32, [u8; 16]),
}

impl Changes {
    fn node(&mut self, ino: u64, n: &Node) {
        self.push(Mut::Inode(self.chan, ino, Some(n.encode())));
    }
    fn tomb(&mut self, id: &FileId, t: Option<&Tomb>) {
        self.push(Mut::Tomb(self.chan, id.0, t.map(Tomb::encode)));
    }
    fn gone(&mut self, ino: u64) {
        self.push(Mut::Inode(self.chan, ino, None));
    }
    fn dirent(&mut self, parent: u64, name: &[u8], ino: Option<u64>) {
        self.push(Mut::Dirent(self.chan, parent, name.to_vec(), ino));
    }
    fn op(&mut self, hlc: u64, op: Op) {
        self.push(Mut::Journal(self.chan, hlc, op));
    }
    /// Adds a raw mutation (an inode or tomb record replaces the one
    /// written before it, if any).
    pub fn push(&mut self, m: Mut) {
        let record = match &m {
            Mut::Inode(c, ino, _) => Some(Record::Inode(*c, *ino)),
            Mut::Tomb(c, id, _) => Some(Record::Tomb(*c, *id)),
            _ => None,
        };
        match record.map(|r| (r, self.records.get(&r).copied())) {
            Some((_, Some(at))) => self.muts[at] = m,
            Some((r, None)) => {
                self.records.insert(r, self.muts.len());
                self.muts.push(m);
            }
            None => self.muts.push(m),
        }
    }
    /// The mutations.
    pub fn into_muts(self) -> Vec<Mut> {
        self.muts
    }
}

fn check_name(name: &[u8]) -> R<()> {
    if name.len() > NAME_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".."
    {
        return Err(libc::EINVAL);
    }
    Ok(())
}

impl Tree {
    /// Loads a channel's tree from the store, creating the root if new.
    pub fn load(
        store: &Store,
        chan: u32,
        id_prefix: [u8; 8],
    ) -> Result<(Tree, Vec<Mut>), StoreError> {
        let (inodes, dirents) = store.load_tree(chan)?;
        let mut nodes = HashMap::new();
        let mut next_ino = ROOT + 1;
        for (ino, bytes) in inodes {
            if ino == 0 {
                if let Ok(b) = <[u8; 8]>::try_from(bytes.as_slice()) {
                    next_ino = next_ino.max(u64::from_le_bytes(b));
                }
                continue;
            }
            let n = match postcard::from_bytes(&bytes)? {
                Stored::V1(n) => n,
                Stored::V2(mut n, st) => {
                    n.stamps = st;
                    n
                }
                Stored::V3(mut n, st, origin) => {
                    n.stamps = st;
                    if let Some(o) = origin {
                        n.stamps.set_origin(o);
                    }
                    n
                }
                Stored::V4(mut n, st, origin, announced) => {
                    n.stamps = st;
                    if let Some(o) = origin {
                        n.stamps.set_origin(o);
                    }
                    n.stamps.set_announced(announced);
                    n
                }
                Stored::V5(mut n, st, origin, announced, moves) => {
                    n.stamps = st;
                    if let Some(o) = origin {
                        n.stamps.set_origin(o);
                    }
                    if let Some(a) = announced {
                        n.stamps.set_announced(a);
                    }
                    n.stamps.merge_moves(&moves);
                    n
                }
            };
            next_ino = next_ino.max(ino + 1);
            nodes.insert(ino, n);
        }
        for (parent, name, ino) in dirents {
            if let Some(p) = nodes.get_mut(&parent) {
                p.entries.insert(name, ino);
            }
        }
        let mut tree = Tree {
            chan,
            nodes,
            next_ino,
            id_prefix,
            open_count: HashMap::new(),
            ids: HashMap::new(),
            tombs: HashMap::new(),
            wanting: HashMap::new(),
            deferred: Effects::default(),
            copies: HashMap::new(),
        };
        for (&ino, n) in &tree.nodes {
            if let Some(w) = n.stamps.want() {
                tree.wanting.insert(ino, (n.parent, w.to_vec()));
            }
            if let Some(o) = n.stamps.origin() {
                tree.copies.entry(o).or_default().push(ino);
            }
        }
        for (id, bytes) in store.tombs(chan)? {
            if let Some(t) = Tomb::decode(&bytes) {
                tree.tombs.insert(FileId(id), t);
            }
        }
        let mut ch = tree.changes();
        #[allow(clippy::map_entry)]
        if !tree.nodes.contains_key(&ROOT) {
            let t = now_ns();
            let root = Node {
                id: FileId::ROOT,
                kind: NodeKind::Dir,
                perm: 0o755,
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                nlink: 2,
                size: 0,
                atime: t,
                mtime: t,
                ctime: t,
                content: None,
                target: Vec::new(),
                xattrs: BTreeMap::new(),
                parent: ROOT,
                born: 0,
                vstamp: (0, [0; 8]),
                stamps: Stamps::default(),
                entries: BTreeMap::new(),
                manifest: None,
                gen: 0,
                stale: false,
            };
            ch.node(ROOT, &root);
            tree.nodes.insert(ROOT, root);
        }
        // Files unlinked while open when the node stopped.
        let orphans: Vec<u64> = tree
            .nodes
            .iter()
            .filter(|(i, n)| **i != ROOT && n.nlink == 0)
            .map(|(i, _)| *i)
            .collect();
        for ino in orphans {
            tree.nodes.remove(&ino);
            ch.gone(ino);
        }
        tree.ids = tree.nodes.iter().map(|(i, n)| (n.id, *i)).collect();
        Ok((tree, ch.muts))
    }

    /// The version stamp of a local change made at `hlc`.
    pub fn stamp(&self, hlc: u64) -> (u64, [u8; 8]) {
        (hlc, self.id_prefix)
    }

    /// A change set for this tree's channel.
    pub fn changes(&self) -> Changes {
        Changes {
            muts: Vec::new(),
            chan: self.chan,
            records: HashMap::new(),
        }
    }

    /// The node `ino`.
    pub fn get(&self, ino: u64) -> R<&Node> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    /// The node `ino`, mutable.
    pub fn get_mut(&mut self, ino: u64) -> R<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    /// Records `ino`'s current state in `ch`.
    pub fn persist(&self, ino: u64, ch: &mut Changes) {
        if let Some(n) = self.nodes.get(&ino) {
            ch.node(ino, n);
        }
    }

    /// Appends a journal entry to `ch` (for the first edit of a conflict
    /// copy, after the entry that announces the copy: see
    /// [`Tree::announce_copy`]).
    pub fn journal(&mut self, ch: &mut Changes, hlc: u64, op: Op) {
        if let Op::Content { id, replaces, .. } = &op {
            if let Some(ino) = self.ino_of(id) {
                self.announce_copy(ino, replaces, hlc, ch);
            }
        }
        ch.op(hlc, op);
    }

    /// Announces conflict copy `ino` before a local rename or link of it,
    /// and gives it the change's stamp (as the announcement does on the
    /// other nodes): from now on it is a file of its own.
    fn announce_copy_change(&mut self, ino: u64, hlc: u64, ch: &mut Changes) {
        let held = self.nodes.get(&ino).and_then(|n| n.content);
        let untouched = self.nodes.get(&ino).is_some_and(|n| n.vstamp.0 == n.born);
        if untouched && self.announce_copy(ino, &held, hlc, ch) {
            let stamp = self.stamp(hlc);
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.vstamp = stamp;
            }
        }
    }

    fn dir(&self, ino: u64) -> R<&Node> {
        let n = self.get(ino)?;
        if n.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(n)
    }

    /// Looks `name` up in `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> R<u64> {
        if name.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        let p = self.dir(parent)?;
        match name {
            b"." => Ok(parent),
            b".." => Ok(p.parent),
            _ => p.entries.get(name).copied().ok_or(libc::ENOENT),
        }
    }

    /// Number of files (non-directories) and their total size.
    pub fn totals(&self) -> (u64, u64) {
        self.nodes
            .values()
            .filter(|n| n.kind != NodeKind::Dir)
            .fold((0, 0), |(c, b), n| (c + 1, b + n.size))
    }

    fn touch_dir(&mut self, ino: u64, t: i64, ch: &mut Changes) {
        if let Some(d) = self.nodes.get_mut(&ino) {
            d.mtime = t;
            d.ctime = t;
        }
        self.persist(ino, ch);
    }

    /// Creates a node named `name` in `parent`.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        kind: NodeKind,
        mode: u32,
        uid: u32,
        gid: u32,
        target: Vec<u8>,
        hlc: u64,
        ch: &mut Changes,
    ) -> R<u64> {
        check_name(name)?;
        let p = self.dir(parent)?;
        if p.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let (pgid, psetgid, pid) = (p.gid, p.perm & libc::S_ISGID != 0, p.id);
        let mut perm = mode & 0o7777;
        let gid = if psetgid {
            if kind == NodeKind::Dir {
                perm |= libc::S_ISGID;
            }
            pgid
        } else {
            gid
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        let t = now_ns();
        let id = FileId::new(self.id_prefix, ino);
        let node = Node {
            id,
            kind,
            perm,
            uid,
            gid,
            nlink: if kind == NodeKind::Dir { 2 } else { 1 },
            size: if kind == NodeKind::Symlink {
                target.len() as u64
            } else {
                0
            },
            atime: t,
            mtime: t,
            ctime: t,
            content: None,
            target: target.clone(),
            xattrs: BTreeMap::new(),
            parent,
            born: hlc,
            vstamp: (hlc, self.id_prefix),
            stamps: Stamps {
                place: (hlc, self.id_prefix),
                ..Stamps::default()
            },
            entries: BTreeMap::new(),
            manifest: None,
            gen: 0,
            stale: false,
        };
        ch.node(ino, &node);
        self.ids.insert(id, ino);
        self.nodes.insert(ino, node);
        ch.push(Mut::Inode(
            self.chan,
            0,
            Some(self.next_ino.to_le_bytes().to_vec()),
        ));
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.entries.insert(name.to_vec(), ino);
            if kind == NodeKind::Dir {
                p.nlink += 1;
            }
        }
        self.touch_dir(parent, t, ch);
        ch.dirent(parent, name, Some(ino));
        ch.op(
            hlc,
            Op::Create {
                id,
                parent: pid,
                name: name.to_vec(),
                kind,
                mode: perm,
                target,
            },
        );
        Ok(ino)
    }

    /// Drops a node whose last name went and that no handle holds.
    fn maybe_free(&mut self, ino: u64, ch: &mut Changes) {
        let free = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.nlink == 0 && self.open_count.get(&ino).copied().unwrap_or(0) == 0);
        if free {
            self.drop_node(ino, ch);
            return;
        }
        // A hard-linked file that lost the name in its parent: another
        // directory holding one of its names becomes the parent (the one
        // with the smallest id, the same on every node).
        let lost = self.nodes.get(&ino).is_some_and(|n| {
            n.nlink > 0
                && n.kind != NodeKind::Dir
                && self
                    .nodes
                    .get(&n.parent)
                    .is_none_or(|p| !p.entries.values().any(|&i| i == ino))
        });
        if lost {
            let holder = self
                .nodes
                .iter()
                .filter(|(_, d)| d.kind == NodeKind::Dir && d.entries.values().any(|&i| i == ino))
                .min_by_key(|(_, d)| d.id)
                .map(|(&i, _)| i);
            if let (Some(h), Some(n)) = (holder, self.nodes.get_mut(&ino)) {
                n.parent = h;
            }
        }
        self.persist(ino, ch);
    }

    /// Keeps a tombstone for node `ino` when its last name
    /// (`name` in `parent`) has just gone.
    fn bury(&mut self, ino: u64, parent: u64, name: &[u8], ch: &mut Changes) {
        if self.nodes.get(&ino).is_some_and(|n| n.nlink == 0) {
            self.keep_tomb(ino, parent, name, ch);
        }
    }

    /// Keeps a tombstone for node `ino`, named `name` in
    /// `parent` (a directory that still lives keeps one while a remove of
    /// it waits for it to empty: see [`Tree::settle_pending`]; a file that
    /// still lives, one while it holds the version a remove took).
    fn keep_tomb(&mut self, ino: u64, parent: u64, name: &[u8], ch: &mut Changes) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        let pid = self.nodes.get(&parent).map_or(FileId::ROOT, |p| p.id);
        let t = Tomb {
            parent: pid,
            name: self.claimed_or(ino, name),
            perm: n.perm,
            content: n.content,
            born: n.born,
            size_mtime: (n.size, n.mtime),
            dir: n.kind == NodeKind::Dir,
            attrs: KeptAttrs::of(n),
            vstamp: n.vstamp,
            origin: n.stamps.origin(),
            special: (!matches!(n.kind, NodeKind::File | NodeKind::Dir))
                .then(|| (n.kind, n.target.clone())),
            place: n.stamps.place,
            relink: false,
            removes: vec![(n.stamps.place, pid)],
            moves: n.stamps.moves(),
            announced: n.stamps.announced(),
        };
        let id = n.id;
        ch.tomb(&id, Some(&t));
        self.tombs.insert(id, t);
    }

    fn drop_node(&mut self, ino: u64, ch: &mut Changes) {
        if let Some(n) = self.nodes.remove(&ino) {
            self.ids.remove(&n.id);
            if let Some(v) = n.stamps.origin().and_then(|o| self.copies.get_mut(&o)) {
                v.retain(|c| *c != ino);
            }
        }
        ch.gone(ino);
    }

    /// Called when a handle of `ino` closes; frees an unlinked node with
    /// the last one.
    /// Returns the names to invalidate when a remote change waited for
    /// this close.
    pub fn released(&mut self, ino: u64, ch: &mut Changes) -> Vec<(u64, Vec<u8>)> {
        match self.open_count.get_mut(&ino) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return Vec::new();
            }
            _ => {
                self.open_count.remove(&ino);
            }
        }
        if self.nodes.get(&ino).is_some_and(|n| n.nlink == 0) {
            self.drop_node(ino, ch);
            return Vec::new();
        }
        match self.nodes.get_mut(&ino) {
            Some(n) if n.stale => {
                n.stale = false;
                self.new_generation(ino)
            }
            _ => Vec::new(),
        }
    }

    /// Removes a non-directory name.
    pub fn unlink(&mut self, parent: u64, name: &[u8], hlc: u64, ch: &mut Changes) -> R<u64> {
        let ino = self.lookup(parent, name)?;
        let n = self.get(ino)?;
        if n.kind == NodeKind::Dir {
            return Err(libc::EISDIR);
        }
        let (id, seen, place) = (n.id, n.content, n.stamps.place);
        let turns = self.takes_turns(ino);
        let pid = self.get(parent)?.id;
        let t = now_ns();
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.entries.remove(name);
        }
        self.touch_dir(parent, t, ch);
        ch.dirent(parent, name, None);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            n.ctime = t;
        }
        self.bury(ino, parent, name, ch);
        let op = self.remove_op(ino, id, pid, name, seen, place);
        self.end_lost_claim(ino);
        self.maybe_free(ino, ch);
        self.with_deferred(|tree, fx| {
            tree.give_back(parent, name, t, ch, fx);
            if turns {
                tree.arrange(parent, name, t, ch, fx);
            }
            // Its copies go by its names left (see `claimed_name`).
            tree.follow(ino, t, ch, fx);
            tree.settle_pending(parent, t, ch, fx);
        });
        ch.op(hlc, op);
        Ok(ino)
    }

    /// The entry for the removal of `name` in `parent` (ids) of node
    /// `ino`, just done: an [`Op::Unlink`] when it is a file that keeps
    /// other names, else an [`Op::RemoveAt`] (its last name, placed at
    /// `place`).
    fn remove_op(
        &self,
        ino: u64,
        id: FileId,
        parent: FileId,
        name: &[u8],
        seen: Option<Hash>,
        place: Stamp,
    ) -> Op {
        let name = name.to_vec();
        if self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.kind != NodeKind::Dir && n.nlink > 0)
        {
            Op::Unlink {
                id,
                parent,
                name,
                seen,
            }
        } else {
            Op::RemoveAt {
                id,
                parent,
                name,
                seen,
                place,
            }
        }
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: u64, name: &[u8], hlc: u64, ch: &mut Changes) -> R<()> {
        if name == b"." {
            return Err(libc::EINVAL);
        }
        if name == b".." {
            return Err(libc::ENOTEMPTY);
        }
        let ino = self.lookup(parent, name)?;
        let n = self.dir(ino)?;
        if !n.entries.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let (id, place) = (n.id, n.stamps.place);
        let pid = self.get(parent)?.id;
        let t = now_ns();
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.entries.remove(name);
            p.nlink = p.nlink.saturating_sub(1);
        }
        self.touch_dir(parent, t, ch);
        ch.dirent(parent, name, None);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = 0;
            n.ctime = t;
        }
        self.bury(ino, parent, name, ch);
        self.maybe_free(ino, ch);
        self.with_deferred(|tree, fx| {
            tree.give_back(parent, name, t, ch, fx);
            tree.settle_pending(parent, t, ch, fx);
        });
        ch.op(
            hlc,
            Op::RemoveAt {
                id,
                parent: pid,
                name: name.to_vec(),
                seen: None,
                place,
            },
        );
        Ok(())
    }

    /// The node that holds `name` in directory `dir`.
    fn holder(&self, dir: u64, name: &[u8]) -> Option<u64> {
        self.nodes.get(&dir)?.entries.get(name).copied()
    }

    /// True when `anc` is `ino` or one of its ancestors.
    fn is_ancestor(&self, anc: u64, mut ino: u64) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == ROOT {
                return false;
            }
            match self.nodes.get(&ino) {
                Some(n) => ino = n.parent,
                None => return false,
            }
        }
    }

    /// Renames `parent/name` to `newparent/newname` (`RENAME_NOREPLACE`,
    /// `RENAME_EXCHANGE` honoured). Returns the inode replaced, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        hlc: u64,
        ch: &mut Changes,
    ) -> R<Option<u64>> {
        check_name(newname)?;
        if name.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        let src = self.lookup(parent, name)?;
        self.dir(newparent)?;
        let dst = self.get(newparent)?.entries.get(newname).copied();
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(libc::EEXIST);
        }
        if exchange && dst.is_none() {
            return Err(libc::ENOENT);
        }
        if dst == Some(src) {
            return Ok(None);
        }
        let src_dir = self.get(src)?.kind == NodeKind::Dir;
        if src_dir && self.is_ancestor(src, newparent) {
            return Err(libc::EINVAL);
        }
        let t = now_ns();
        let (pid, npid) = (self.get(parent)?.id, self.get(newparent)?.id);
        if !exchange {
            self.announce_copy_change(src, hlc, ch);
        }
        let turns = self.takes_turns(src);
        if exchange {
            let dst = dst.ok_or(libc::ENOENT)?;
            let dst_dir = self.get(dst)?.kind == NodeKind::Dir;
            if dst_dir && self.is_ancestor(dst, parent) {
                return Err(libc::EINVAL);
            }
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.entries.insert(name.to_vec(), dst);
            }
            if let Some(p) = self.nodes.get_mut(&newparent) {
                p.entries.insert(newname.to_vec(), src);
            }
            if src_dir != dst_dir && parent != newparent {
                let (from, to) = if src_dir {
                    (parent, newparent)
                } else {
                    (newparent, parent)
                };
                if let Some(p) = self.nodes.get_mut(&from) {
                    p.nlink -= 1;
                }
                if let Some(p) = self.nodes.get_mut(&to) {
                    p.nlink += 1;
                }
            }
            let stamp = self.stamp(hlc);
            for (ino, par, to, from, was) in [
                (src, newparent, npid, parent, name),
                (dst, parent, pid, newparent, newname),
            ] {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.ctime = t;
                    n.parent = par;
                    n.moved(from, was, stamp);
                    n.stamps.note_move(stamp, to);
                }
                self.persist(ino, ch);
            }
            self.touch_dir(parent, t, ch);
            self.touch_dir(newparent, t, ch);
            ch.dirent(parent, name, Some(dst));
            ch.dirent(newparent, newname, Some(src));
            self.with_deferred(|tree, fx| {
                tree.follow(src, t, ch, fx);
                tree.follow(dst, t, ch, fx);
            });
            let (sid, did) = (self.get(src)?.id, self.get(dst)?.id);
            ch.op(
                hlc,
                Op::Move {
                    id: sid,
                    parent: npid,
                    name: newname.to_vec(),
                    old_parent: pid,
                    old_name: name.to_vec(),
                },
            );
            ch.op(
                hlc,
                Op::Move {
                    id: did,
                    parent: pid,
                    name: name.to_vec(),
                    old_parent: npid,
                    old_name: newname.to_vec(),
                },
            );
            return Ok(None);
        }
        if let Some(d) = dst {
            let dn = self.get(d)?;
            match (src_dir, dn.kind == NodeKind::Dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !dn.entries.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
            let (did, dseen, dplace) = (dn.id, dn.content, dn.stamps.place);
            let dturns = self.takes_turns(d);
            if let Some(n) = self.nodes.get_mut(&d) {
                if n.kind == NodeKind::Dir {
                    n.nlink = 0;
                } else {
                    n.nlink = n.nlink.saturating_sub(1);
                }
                n.ctime = t;
            }
            if let Some(p) = self.nodes.get_mut(&newparent) {
                p.entries.remove(newname);
                if src_dir {
                    p.nlink -= 1;
                }
            }
            self.bury(d, newparent, newname, ch);
            let op = self.remove_op(d, did, npid, newname, dseen, dplace);
            self.end_lost_claim(d);
            self.maybe_free(d, ch);
            // As peers apply the remove before the move: a node shown
            // under a conflict name of the freed name takes it back, and
            // the older of it and the moved node keeps the name (below).
            self.with_deferred(|tree, fx| {
                tree.give_back(newparent, newname, t, ch, fx);
                if dturns {
                    tree.arrange(newparent, newname, t, ch, fx);
                }
                tree.follow(d, t, ch, fx);
            });
            ch.op(hlc, op);
        }
        // Taken back meanwhile by a node that claimed it: by another one,
        // which the moved node then meets there, or by the moved node
        // itself (shown under a conflict name of it), which is there
        // already; its old name may then have gone to a node that claimed
        // that one.
        let new_holder = self.holder(newparent, newname);
        let (retaken, there) = (
            new_holder.is_some_and(|h| h != src),
            new_holder == Some(src),
        );
        let left = self.holder(parent, name) == Some(src);
        if !there {
            if let Some(p) = self.nodes.get_mut(&parent) {
                if left {
                    p.entries.remove(name);
                }
                if src_dir {
                    p.nlink -= 1;
                }
            }
            if !retaken {
                if let Some(p) = self.nodes.get_mut(&newparent) {
                    p.entries.insert(newname.to_vec(), src);
                    if src_dir {
                        p.nlink += 1;
                    }
                }
            }
        }
        let stamp = self.stamp(hlc);
        if let Some(n) = self.nodes.get_mut(&src) {
            n.ctime = t;
            n.parent = newparent;
            n.moved(parent, name, stamp);
            n.stamps.note_move(stamp, npid);
        }
        self.persist(src, ch);
        self.touch_dir(parent, t, ch);
        if newparent != parent {
            self.touch_dir(newparent, t, ch);
        }
        if left {
            ch.dirent(parent, name, None);
        }
        if retaken {
            self.with_deferred(|tree, fx| tree.place(newparent, newname, src, t, ch, fx));
        } else if !there {
            ch.dirent(newparent, newname, Some(src));
        }
        self.with_deferred(|tree, fx| {
            tree.give_back(parent, name, t, ch, fx);
            tree.follow(src, t, ch, fx);
            if turns {
                tree.arrange(parent, name, t, ch, fx);
            }
            tree.settle_pending(parent, t, ch, fx);
        });
        let sid = self.get(src)?.id;
        ch.op(
            hlc,
            Op::Move {
                id: sid,
                parent: npid,
                name: newname.to_vec(),
                old_parent: pid,
                old_name: name.to_vec(),
            },
        );
        Ok(dst)
    }

    /// Adds the name `newparent/newname` for `ino` (hard link).
    pub fn link(
        &mut self,
        ino: u64,
        newparent: u64,
        newname: &[u8],
        hlc: u64,
        ch: &mut Changes,
    ) -> R<()> {
        check_name(newname)?;
        let n = self.get(ino)?;
        if n.kind == NodeKind::Dir {
            return Err(libc::EPERM);
        }
        if n.nlink == 0 {
            return Err(libc::ENOENT);
        }
        let id = n.id;
        let p = self.dir(newparent)?;
        if p.entries.contains_key(newname) {
            return Err(libc::EEXIST);
        }
        let pid = p.id;
        let t = now_ns();
        self.announce_copy_change(ino, hlc, ch);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink += 1;
            n.ctime = t;
            n.parent = newparent;
        }
        self.persist(ino, ch);
        if let Some(p) = self.nodes.get_mut(&newparent) {
            p.entries.insert(newname.to_vec(), ino);
        }
        self.touch_dir(newparent, t, ch);
        ch.dirent(newparent, newname, Some(ino));
        // Its copies go by its names, the new one too (see `claimed_name`).
        self.with_deferred(|tree, fx| tree.follow(ino, t, ch, fx));
        ch.op(
            hlc,
            Op::Link {
                id,
                parent: pid,
                name: newname.to_vec(),
            },
        );
        Ok(())
    }

    /// Changes mode, owner and times.
    pub fn set_attr(&mut self, ino: u64, a: &AttrChange, hlc: u64, ch: &mut Changes) -> R<()> {
        let t = now_ns();
        let stamp = self.stamp(hlc);
        let n = self.get_mut(ino)?;
        if let Some(m) = a.mode {
            n.perm = m & 0o7777;
            n.stamps.mode = stamp;
        }
        if a.atime.is_some() {
            n.stamps.atime = stamp;
        }
        if a.mtime.is_some() {
            n.stamps.mtime = stamp;
        }
        if let Some(u) = a.uid {
            n.uid = u;
        }
        if let Some(g) = a.gid {
            n.gid = g;
        }
        if let Some(x) = a.atime {
            n.atime = x;
        }
        if let Some(x) = a.mtime {
            n.mtime = x;
        }
        n.ctime = t;
        let id = n.id;
        self.persist(ino, ch);
        if let Some(m) = a.mode {
            self.with_deferred(|tree, fx| {
                tree.for_copies(tree.copies_of(ino), t, ch, fx, |c| {
                    c.take_mode(m & 0o7777, stamp)
                })
            });
        }
        ch.op(
            hlc,
            Op::SetAttr {
                id,
                attr: a.clone(),
            },
        );
        Ok(())
    }

    /// Sets (`Some`) or removes an extended attribute.
    pub fn set_xattr(
        &mut self,
        ino: u64,
        name: &[u8],
        value: Option<Vec<u8>>,
        flags: i32,
        hlc: u64,
        ch: &mut Changes,
    ) -> R<()> {
        let prefix = self.id_prefix;
        let n = self.get_mut(ino)?;
        let exists = n.xattrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(libc::EEXIST);
        }
        if (flags & libc::XATTR_REPLACE != 0 || value.is_none()) && !exists {
            return Err(libc::ENODATA);
        }
        let (stamp, t) = ((hlc, prefix), now_ns());
        put_xattr(&mut n.xattrs, name, value.as_deref());
        n.stamps.set_xattr(name, stamp);
        n.ctime = t;
        let id = n.id;
        self.persist(ino, ch);
        self.with_deferred(|tree, fx| {
            tree.for_copies(tree.copies_of(ino), t, ch, fx, |c| {
                c.take_xattr(name, value.as_deref(), stamp)
            })
        });
        ch.op(
            hlc,
            Op::Xattr {
                id,
                name: name.to_vec(),
                value,
            },
        );
        Ok(())
    }

    /// Directory entries (with `.` and `..`) from position `offset`.
    pub fn list(&self, ino: u64, offset: usize) -> R<Vec<(u64, NodeKind, Vec<u8>)>> {
        let d = self.dir(ino)?;
        let mut out = Vec::new();
        let dots = [(ino, b".".to_vec()), (d.parent, b"..".to_vec())];
        for (i, (n, name)) in dots.into_iter().enumerate() {
            if i >= offset {
                out.push((n, NodeKind::Dir, name));
            }
        }
        for (name, &child) in d.entries.iter().skip(offset.saturating_sub(2)) {
            let kind = self
                .nodes
                .get(&child)
                .map(|n| n.kind)
                .unwrap_or(NodeKind::File);
            out.push((child, kind, name.clone()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tomb round-trips, and one written before the seen placement, the
    /// place stamp, the kind, the origin or the version stamp was stored
    /// (or before the attributes were) still loads, with no origin and a
    /// zero stamp that any version beats.
    #[test]
    fn tombs_of_every_age_load() {
        let mut t = Tomb {
            parent: FileId::ROOT,
            name: b"f.txt".to_vec(),
            perm: 0o640,
            content: Some([7; 32]),
            born: 5,
            size_mtime: (3, 9),
            dir: false,
            attrs: KeptAttrs::default(),
            vstamp: (11, [2; 8]),
            origin: Some(FileId([4; 16])),
            special: Some((NodeKind::Symlink, b"t".to_vec())),
            place: (8, [3; 8]),
            relink: true,
            removes: vec![((7, [3; 8]), FileId([6; 16]))],
            moves: Moves::default(),
            announced: Some((10, [2; 8])),
        };
        t.moves.note((9, [1; 8]), FileId([5; 16]));
        t.attrs.take_xattr(b"user.k", Some(b"v"), (6, [1; 8]));
        let bytes = t.encode();
        let back = Tomb::decode(&bytes).expect("decode");
        assert_eq!(back.vstamp, t.vstamp);
        assert_eq!((back.origin, &back.special), (t.origin, &t.special));
        assert_eq!((back.kind(), back.place), (NodeKind::Symlink, t.place));
        assert_eq!(back.attrs.xattrs, t.attrs.xattrs);
        assert!(back.relink);
        assert_eq!((&back.removes, &back.moves), (&t.removes, &t.moves));
        assert_eq!(back.announced, t.announced);
        let ann_len = postcard::to_allocvec(&t.announced).expect("encode").len();
        let bytes = &bytes[..bytes.len() - ann_len];
        let older = Tomb::decode(bytes).expect("decode older");
        assert_eq!((&older.moves, older.announced), (&t.moves, None));
        let moves_len = postcard::to_allocvec(&t.moves).expect("encode").len();
        let bytes = &bytes[..bytes.len() - moves_len];
        let older = Tomb::decode(bytes).expect("decode older");
        assert_eq!(
            (&older.removes, older.moves),
            (&t.removes, Moves::default())
        );
        let seen_len = postcard::to_allocvec(&t.removes).expect("encode").len();
        let bytes = &bytes[..bytes.len() - seen_len];
        let older = Tomb::decode(bytes).expect("decode older");
        assert_eq!((older.relink, older.removes.is_empty()), (true, true));
        let bytes = &bytes[..bytes.len() - 1];
        let older = Tomb::decode(bytes).expect("decode older");
        assert_eq!((older.place, older.relink), (t.place, false));
        let place_len = postcard::to_allocvec(&t.place).expect("encode").len();
        let bytes = &bytes[..bytes.len() - place_len];
        let older = Tomb::decode(bytes).expect("decode older");
        assert_eq!(
            (older.kind(), older.place),
            (NodeKind::Symlink, (0, [0; 8]))
        );
        let special_len = postcard::to_allocvec(&t.special).expect("encode").len();
        let bytes = &bytes[..bytes.len() - special_len];
        let older = Tomb::decode(bytes).expect("decode older");
        assert_eq!((older.origin, older.kind()), (t.origin, NodeKind::File));
        let origin_len = postcard::to_allocvec(&t.origin).expect("encode").len();
        let older = Tomb::decode(&bytes[..bytes.len() - origin_len]).expect("decode older");
        assert_eq!((older.vstamp, older.origin), (t.vstamp, None));
        let stamp_len = postcard::to_allocvec(&t.vstamp).expect("encode").len();
        let old = Tomb::decode(&bytes[..bytes.len() - origin_len - stamp_len]).expect("decode old");
        assert_eq!(old.vstamp, (0, [0; 8]));
        assert_eq!(old.attrs.xattrs, t.attrs.xattrs);
        assert_eq!((old.size_mtime, old.content), (t.size_mtime, t.content));
    }
}
