//! Applying other members' journal entries to the tree. Entries name nodes
//! by stable id, never by path, so a rename is one entry and a change finds
//! its node wherever it moved. Every rule here is deterministic, so that
//! nodes holding the same entries show the same tree:
//! - two nodes claiming one name: the older (creation clock, then id) keeps
//!   it, the other shows as `name.conflict-<node>-<time>.ext`; nodes and
//!   conflict copies that come to share one such name take it in a fixed
//!   order (`~2`, `~3`, … for the younger); a freed name replaces the
//!   conflict name of its claimant (any node shown under a conflict name
//!   of it; a hard-linked file keeps its other names), a removed conflict name ends the claim, and a change naming
//!   a conflict name finds the plain name where there was no conflict;
//! - two content versions replacing the same version: the newer (clock,
//!   then author) keeps the name, the other is kept beside it as a conflict
//!   copy whose id derives from both, so every node makes the same copy;
//!   a copy that holds the bytes its file comes to hold again goes;
//! - a conflict copy that a user edits, renames or links is announced
//!   first (an [`Op::CopyMade`]), so that nodes that never
//!   made it (they met its version after a newer one) or dropped it make
//!   it (two nodes announcing it at different places: the newer
//!   announcement places the conflict name it was made with); from then
//!   on it is a file of its own that stays where it is (a
//!   newer edit of it made elsewhere beats one made here as for any
//!   file), still taking its file's mode and xattrs, also after a remove
//!   of it and an edit bringing it back;
//! - edit beats delete: a remove of the last name of a file that did not
//!   see its current content leaves it in place (taking only the conflict
//!   copy of the version it saw), an edit met after the remove brings the
//!   file back with the edit; a link made concurrently with the remove of
//!   a file's last name keeps the file under the link's name (where the
//!   link came first the remove takes one name of two, and the version
//!   it saw is kept in a tomb, as where the link brought the file back);
//!   an edit the remove did not see beats it there too: the removed name
//!   stays, or comes back with the edit, beside the link's; a remove
//!   of a directory that still has children leaves it in place until it
//!   empties, and a directory removed here comes back (with those above
//!   it) when a change made elsewhere puts something in it, until it
//!   empties again;
//! - concurrent changes of one field (mode, times, one xattr, the place
//!   of a node) settle by last writer wins: the larger (clock, author)
//!   stamp, whatever the order of arrival;
//! - two moves that cross (each puts one directory inside the other) keep
//!   the older one: a newer move that stands in the way is undone (the
//!   directory goes back where it was), so no cycle forms and every node
//!   ends with the same tree.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::journal::{Entry, FileId, NodeKind, Op};
use crate::store::Hash;

use super::{Changes, KeptAttrs, Node, Stamp, Stamps, Tomb, Tree, ROOT};

/// What the kernel must forget after remote changes: names and inodes.
#[derive(Debug, Default)]
pub struct Effects {
    /// (parent inode, name) whose lookup changed.
    pub names: Vec<(u64, Vec<u8>)>,
    /// Inodes whose attributes or data changed.
    pub inodes: Vec<u64>,
    /// Inodes whose content changed (page cache to drop).
    pub data: Vec<u64>,
}

/// The visible name of a conflict copy: `stem.conflict-<node>-<time>.ext`.
pub fn conflict_name(name: &[u8], author: [u8; 8], hlc: u64) -> Vec<u8> {
    let node = data_encoding::BASE32_NOPAD.encode(&author[..5]);
    let secs = (hlc / 1_000_000) as i64;
    let (d, t) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil(d);
    let stamp = format!(
        "{y:04}{m:02}{dd:02}-{:02}{:02}{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    );
    let (stem, ext) = stem_ext(name);
    let mut out = stem.to_vec();
    out.extend_from_slice(format!(".conflict-{node}-{stamp}").as_bytes());
    out.extend_from_slice(ext);
    out.truncate(super::NAME_MAX);
    out
}

/// Days since 1970-01-01 to (year, month, day) (proleptic Gregorian).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn prefix(author: &[u8; 32]) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&author[..8]);
    p
}

fn id_prefix(id: &FileId) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id.0[..8]);
    p
}

impl Tree {
    /// The inode of node `id`.
    pub fn ino_of(&self, id: &FileId) -> Option<u64> {
        if *id == FileId::ROOT {
            return Some(ROOT);
        }
        self.ids.get(id).copied()
    }

    fn node_of(&self, id: &FileId) -> Option<(u64, &Node)> {
        let ino = self.ino_of(id)?;
        Some((ino, self.nodes.get(&ino)?))
    }

    fn node_mut_of(&mut self, id: &FileId) -> Option<(u64, &mut Node)> {
        let ino = self.ino_of(id)?;
        Some((ino, self.nodes.get_mut(&ino)?))
    }

    fn dir_ino(&self, id: &FileId) -> Option<u64> {
        self.ino_of(id)
            .filter(|i| self.nodes.get(i).is_some_and(|n| n.kind == NodeKind::Dir))
    }

    /// The name `ino` has in `parent`: `hint` first, then the name that
    /// is `hint` where one of the two shows as the conflict name of the
    /// other (see [`Tree::name_as`]), then any.
    pub(super) fn name_in(&self, parent: u64, ino: u64, hint: &[u8]) -> Option<Vec<u8>> {
        self.name_as(parent, ino, hint).or_else(|| {
            let p = self.nodes.get(&parent)?;
            p.entries
                .iter()
                .find(|(_, &i)| i == ino)
                .map(|(n, _)| n.clone())
        })
    }

    /// The name `ino` has in `parent` that is `hint`: `hint` itself, or the
    /// name where one of the two shows as the conflict name of the other
    /// (`ino` claims a name it shows under a conflict name here or
    /// elsewhere).
    fn name_as(&self, parent: u64, ino: u64, hint: &[u8]) -> Option<Vec<u8>> {
        let p = self.nodes.get(&parent)?;
        if p.entries.get(hint) == Some(&ino) {
            return Some(hint.to_vec());
        }
        let x = self.nodes.get(&ino).filter(|_| !hint.is_empty())?;
        let (author, born) = (id_prefix(&x.id), x.born);
        let shows_as = |a: &[u8], b: &[u8]| unsuffixed(a) == conflict_name(b, author, born);
        p.entries
            .iter()
            .filter(|(_, &i)| i == ino)
            .map(|(n, _)| n)
            .find(|n| shows_as(n, hint) || shows_as(hint, n))
            .cloned()
    }

    fn link_name(
        &mut self,
        parent: u64,
        name: &[u8],
        ino: u64,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let is_dir = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.kind == NodeKind::Dir);
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.entries.insert(name.to_vec(), ino);
            if is_dir {
                p.nlink += 1;
            }
            p.mtime = t;
            p.ctime = t;
        }
        self.persist(parent, ch);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = parent;
        }
        // The record holds the parent: without this a moved node reloads
        // (after a restart) pointing at its old directory.
        self.persist(ino, ch);
        ch.dirent(parent, name, Some(ino));
        fx.names.push((parent, name.to_vec()));
        fx.inodes.push(parent);
    }

    fn unlink_name(
        &mut self,
        parent: u64,
        name: &[u8],
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) -> Option<u64> {
        let ino = self.nodes.get_mut(&parent)?.entries.remove(name)?;
        let is_dir = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.kind == NodeKind::Dir);
        if let Some(p) = self.nodes.get_mut(&parent) {
            if is_dir {
                p.nlink = p.nlink.saturating_sub(1);
            }
            p.mtime = t;
            p.ctime = t;
        }
        self.persist(parent, ch);
        ch.dirent(parent, name, None);
        fx.names.push((parent, name.to_vec()));
        fx.inodes.push(parent);
        Some(ino)
    }

    /// A free name for a conflict copy of `name` in `parent`.
    fn free_conflict_name(&self, parent: u64, name: &[u8], author: [u8; 8], hlc: u64) -> Vec<u8> {
        let base = conflict_name(name, author, hlc);
        let taken = |n: &[u8]| {
            self.nodes
                .get(&parent)
                .is_some_and(|p| p.entries.contains_key(n))
        };
        if !taken(&base) {
            return base;
        }
        self.free_suffixed(parent, &base)
    }

    /// The first of `base~2`, `base~3`, … free in `parent`.
    fn free_suffixed(&self, parent: u64, base: &[u8]) -> Vec<u8> {
        (2u32..)
            .map(|i| suffixed(base, i))
            .find(|n| {
                self.nodes
                    .get(&parent)
                    .is_none_or(|p| !p.entries.contains_key(n))
            })
            .unwrap_or_else(|| base.to_vec())
    }

    /// Gives `ino` the name `name` in `parent`; when another node holds the
    /// name, the younger of the two (creation clock, then id) takes a
    /// conflict name instead.
    pub(super) fn place(
        &mut self,
        parent: u64,
        name: &[u8],
        ino: u64,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let holder = self.holder(parent, name);
        let Some(other) = holder.filter(|&o| o != ino) else {
            if holder.is_none() {
                self.link_name(parent, name, ino, t, ch, fx);
            }
            return;
        };
        let key = |tr: &Tree, i: u64| tr.nodes.get(&i).map(|n| (n.born, n.id));
        let (mine, theirs) = (key(self, ino), key(self, other));
        if mine > theirs {
            let (born, id) = mine.unwrap_or_default();
            let alt = self.free_conflict_name(parent, name, id_prefix(&id), born);
            self.claim(ino, parent, name);
            self.link_name(parent, &alt, ino, t, ch, fx);
            self.arrange(parent, &alt, t, ch, fx);
        } else {
            let (born, id) = theirs.unwrap_or_default();
            let alt = self.free_conflict_name(parent, name, id_prefix(&id), born);
            self.unlink_name(parent, name, t, ch, fx);
            self.claim(other, parent, name);
            self.link_name(parent, &alt, other, t, ch, fx);
            self.link_name(parent, name, ino, t, ch, fx);
            self.arrange(parent, &alt, t, ch, fx);
        }
    }

    /// `name`, or the name `ino` claims when `name` is the conflict name
    /// it shows under meanwhile: a node removed under it comes back (an
    /// edit or a move of it made elsewhere) claiming that name again, as
    /// where it was never shown under the conflict name.
    pub(super) fn claimed_or(&self, ino: u64, name: &[u8]) -> Vec<u8> {
        let Some(n) = self.nodes.get(&ino) else {
            return name.to_vec();
        };
        match n.stamps.want() {
            Some(w) if unsuffixed(name) == conflict_name(w, id_prefix(&n.id), n.born) => w.to_vec(),
            _ => name.to_vec(),
        }
    }

    /// Records that `ino`, shown under a conflict name in `parent`, claims
    /// `name` there.
    fn claim(&mut self, ino: u64, parent: u64, name: &[u8]) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.stamps.set_want(Some(name.to_vec()));
            self.wanting.insert(ino, (parent, name.to_vec()));
        }
    }

    /// After a name of `ino` went: when it claimed a name that it showed
    /// under a conflict name and that conflict name is gone (it has other
    /// names), the claim ends: it goes by its other names, as where it
    /// never showed under the conflict name.
    pub(super) fn end_lost_claim(&mut self, ino: u64) {
        let Some(n) = self.nodes.get(&ino) else {
            return;
        };
        let Some(w) = n.stamps.want() else {
            return;
        };
        let alt = conflict_name(w, id_prefix(&n.id), n.born);
        let shown = self.nodes.get(&n.parent).is_some_and(|p| {
            p.entries
                .iter()
                .any(|(k, &i)| i == ino && unsuffixed(k) == alt)
        });
        if shown {
            return;
        }
        self.wanting.remove(&ino);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.stamps.set_want(None);
        }
    }

    /// `name` in `parent` was just freed: the oldest node claiming it
    /// (creation clock, then id) leaves its conflict name and takes it.
    pub(super) fn give_back(
        &mut self,
        parent: u64,
        name: &[u8],
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let Some(p) = self
            .nodes
            .get(&parent)
            .filter(|p| !p.entries.contains_key(name))
        else {
            return;
        };
        // Nodes shown under a conflict name of `name`: each claims it,
        // also a hard-linked file whose claim is of another of its names.
        let prefix = conflict_prefix(name);
        let shown: Vec<u64> = p
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, i)| {
                self.nodes
                    .get(i)
                    .is_some_and(|x| unsuffixed(k) == conflict_name(name, id_prefix(&x.id), x.born))
            })
            .map(|(_, &i)| i)
            .collect();
        if shown.is_empty() && self.wanting.is_empty() {
            return;
        }
        let nodes = &self.nodes;
        self.wanting.retain(|ino, (p, w)| {
            nodes
                .get(ino)
                .is_some_and(|n| n.parent == *p && n.stamps.want() == Some(&w[..]))
        });
        let heir = self
            .wanting
            .iter()
            .filter(|(_, (p, w))| *p == parent && w == name)
            .map(|(&i, _)| i)
            .chain(shown)
            .filter_map(|i| self.nodes.get(&i).map(|n| ((n.born, n.id), i)))
            .min()
            .map(|(_, i)| i);
        let Some(ino) = heir else {
            return;
        };
        if let Some(n) = self
            .nodes
            .get_mut(&ino)
            .filter(|n| n.stamps.want() == Some(name))
        {
            n.stamps.set_want(None);
            self.wanting.remove(&ino);
        }
        // The conflict name it shows under, not another name it has.
        let Some(cur) = self.name_in(parent, ino, name) else {
            return;
        };
        self.unlink_name(parent, &cur, t, ch, fx);
        self.link_name(parent, name, ino, t, ch, fx);
        self.arrange(parent, &cur, t, ch, fx);
    }

    /// Runs `f` with the effects a local change has on the kernel's
    /// caches beyond the request's own: they are told through
    /// [`Tree::take_deferred`].
    pub(super) fn with_deferred<T>(&mut self, f: impl FnOnce(&mut Tree, &mut Effects) -> T) -> T {
        let mut fx = std::mem::take(&mut self.deferred);
        let r = f(self, &mut fx);
        self.deferred = fx;
        r
    }

    pub fn take_deferred(&mut self) -> Option<Effects> {
        let fx = std::mem::take(&mut self.deferred);
        (!fx.names.is_empty() || !fx.inodes.is_empty()).then_some(fx)
    }

    fn new_node(&self, id: FileId, kind: NodeKind, perm: u32, parent: u64, born: u64) -> Node {
        let t = (born as i64).saturating_mul(1000);
        let (uid, gid) = self
            .nodes
            .get(&ROOT)
            .map(|r| (r.uid, r.gid))
            .unwrap_or((0, 0));
        Node {
            id,
            kind,
            perm: perm & 0o7777,
            uid,
            gid,
            nlink: if kind == NodeKind::Dir { 2 } else { 1 },
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            content: None,
            target: Vec::new(),
            xattrs: BTreeMap::new(),
            parent,
            born,
            vstamp: (born, id_prefix(&id)),
            stamps: Stamps {
                place: (born, id_prefix(&id)),
                ..Stamps::default()
            },
            entries: BTreeMap::new(),
            manifest: None,
            gen: 0,
            stale: false,
        }
    }

    /// The kernel keeps its own size and times of a cached regular file:
    /// after a remote change it must get a fresh inode (a new generation
    /// at the next lookup), now or when the file's last handle closes.
    fn renew(&mut self, ino: u64, fx: &mut Effects) {
        let open = self.open_count.get(&ino).copied().unwrap_or(0) > 0;
        let Some(n) = self.nodes.get_mut(&ino) else {
            return;
        };
        if n.kind != NodeKind::File {
            return;
        }
        if open {
            n.stale = true;
            return;
        }
        let names = self.new_generation(ino);
        fx.names.extend(names);
    }

    /// Gives file `ino` a new FUSE generation; returns its names, which
    /// the kernel must forget so that the next lookup takes the new inode.
    pub(super) fn new_generation(&mut self, ino: u64) -> Vec<(u64, Vec<u8>)> {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return Vec::new();
        };
        n.gen += 1;
        let parent = n.parent;
        self.nodes
            .get(&parent)
            .map(|p| {
                p.entries
                    .iter()
                    .filter(|(_, &i)| i == ino)
                    .map(|(k, _)| (parent, k.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn insert_node(&mut self, ino: u64, n: Node, ch: &mut Changes) {
        self.ids.insert(n.id, ino);
        ch.node(ino, &n);
        self.nodes.insert(ino, n);
        ch.push(crate::store::Mut::Inode(
            self.chan,
            0,
            Some(self.next_ino.to_le_bytes().to_vec()),
        ));
    }

    /// Applies another member's entry. Unknown ids and stale moves are
    /// skipped; nothing here fails.
    pub fn apply(&mut self, e: &Entry, ch: &mut Changes, fx: &mut Effects) {
        let before = fx.names.len();
        self.apply_op(e, ch, fx);
        let t = (e.hlc as i64).saturating_mul(1000);
        let dirs: BTreeSet<u64> = fx.names[before..].iter().map(|(p, _)| *p).collect();
        for d in dirs {
            self.settle_pending(d, t, ch, fx);
        }
    }

    /// Removes directory `dir` when a remove of it waits (it had children
    /// when the remove came, or came back for a change made concurrently
    /// with it) and it has emptied; then its parent likewise. Nodes that
    /// met the remove after the change went see it remove the directory at
    /// once, so every node ends the same.
    pub(super) fn settle_pending(
        &mut self,
        mut dir: u64,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        loop {
            let Some(d) = self.nodes.get(&dir) else {
                return;
            };
            if dir == ROOT
                || d.kind != NodeKind::Dir
                || !d.entries.is_empty()
                || !self.tombs.contains_key(&d.id)
            {
                return;
            }
            let parent = d.parent;
            let Some(name) = self.name_in(parent, dir, b"") else {
                return;
            };
            self.unlink_name(parent, &name, t, ch, fx);
            if let Some(n) = self.nodes.get_mut(&dir) {
                n.nlink = 0;
                n.ctime = t;
            }
            fx.inodes.push(dir);
            self.bury(dir, parent, &name, ch);
            self.maybe_free(dir, ch);
            self.give_back(parent, &name, t, ch, fx);
            dir = parent;
        }
    }

    /// Applies a remove of `name` in `parent` (the node's `last` name
    /// where the remover stood, else one of several) of a node whose
    /// content the remover saw as `seen`; `at` is the placement it saw
    /// (none from builds before [`Op::RemoveAt`]).
    #[allow(clippy::too_many_arguments)]
    fn remove_remote(
        &mut self,
        id: &FileId,
        parent: &FileId,
        name: &[u8],
        seen: &Option<Hash>,
        last: bool,
        at: Option<Stamp>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        // Entries of builds before `Op::Unlink` count as the last name,
        // also where they took one name of several: that name then stays
        // where an edit the remover did not see came first (a mixed
        // cluster may differ there), and the version it saw is kept in a
        // tomb.
        let Some((ino, n)) = self.node_of(id) else {
            // Gone here already: a move that brings it back must beat
            // this remove too. The version the remover saw, if it lost a
            // conflict here, goes with its copy.
            if let (Some(s), Some(tb)) = (at, self.tombs.get_mut(id)) {
                tb.add_remove(s, *parent, name);
                ch.tomb(id, Some(tb));
            }
            if let Some(c) = self.copy_of_version(id, seen) {
                self.drop_copy(c, t, ch, fx);
            }
            return;
        };
        // Where the remover saw it. A remove that says which placement
        // it saw also takes the node from another directory it reached by
        // a move the remover saw or one older than that placement.
        let Some(p) = self.ino_of(parent).or(at.map(|_| n.parent)) else {
            return;
        };
        // A name of a file that has others goes whatever its
        // content: the content stays under them. Not the last name
        // where the remover stood, that a concurrent link's name
        // kept company here: edit beats delete, as where the link
        // came second.
        if n.kind == NodeKind::File && n.content != *seen && (n.nlink <= 1 || last) {
            // Edited meanwhile: it stays. The version the remover
            // saw, if it lost a conflict here, goes with its copy
            // (nodes that met the remove first never make it).
            if let Some(c) = self.conflict_copy_of(ino, seen) {
                self.drop_copy(c, t, ch, fx);
            }
            return;
        }
        if n.kind == NodeKind::Dir && !n.entries.is_empty() {
            // Filled meanwhile: it stays until it empties.
            if let Some(nm) = self.name_in(p, ino, name) {
                self.keep_tomb(ino, p, &nm, ch);
                self.removed_as_seen(id, at, parent, name, ch);
            }
            return;
        }
        let edited = n.kind == NodeKind::File && n.content != *seen;
        let turns = self.takes_turns(ino);
        // Moved into another directory by a move the remover had not
        // seen: the move wins, as where it arrives after the remove.
        let moved_off = at.is_some_and(|s| n.stamps.moved_off(s, *parent));
        let found = match self.name_in(p, ino, name) {
            _ if moved_off => None,
            Some(nm) => Some((p, nm)),
            None if at.is_some() && n.nlink <= 1 => {
                let q = n.parent;
                self.name_in(q, ino, b"").map(|nm| (q, nm))
            }
            None => None,
        };
        let Some((p, nm)) = found else {
            // Its names moved away meanwhile: they stay, but the
            // version the remover saw, if it lost a conflict here,
            // goes with its copy (as where the remove came first).
            if edited {
                if let Some(c) = self.conflict_copy_of(ino, seen) {
                    self.drop_copy(c, t, ch, fx);
                }
            } else if self
                .nodes
                .get(&ino)
                .is_some_and(|n| n.kind == NodeKind::File)
            {
                // The version it holds is the one removed: kept in
                // a tomb beside the live file, so that a newer
                // concurrent edit replaces it without a copy.
                self.keep_tomb(ino, p, name, ch);
            }
            return;
        };
        self.unlink_name(p, &nm, t, ch, fx);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = if n.kind == NodeKind::Dir {
                0
            } else {
                n.nlink.saturating_sub(1)
            };
            n.ctime = t;
        }
        fx.inodes.push(ino);
        self.bury(ino, p, &nm, ch);
        self.removed_as_seen(id, at, parent, name, ch);
        let kept = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.kind == NodeKind::File && n.nlink > 0);
        if last && kept {
            // The remover took the last name: a concurrent link's
            // name keeps the file, as where the link came second
            // (it brings the file back holding the version
            // removed), and the version it holds is kept in a
            // tomb, so that a newer concurrent edit replaces it
            // without a copy and brings the name back.
            self.keep_tomb(ino, p, &nm, ch);
            self.mark_relink(id, ch);
        }
        self.end_lost_claim(ino);
        self.maybe_free(ino, ch);
        self.give_back(p, &nm, t, ch, fx);
        if turns {
            self.arrange(p, &nm, t, ch, fx);
        }
        // Its copies go by its names left (see `claimed_name`).
        self.follow(ino, t, ch, fx);
    }

    /// Makes the tomb of `id` just kept for a remove that saw it in
    /// `parent` as `name`, placed at `at`, hold what that remover saw
    /// rather than where it was here.
    fn removed_as_seen(
        &mut self,
        id: &FileId,
        at: Option<Stamp>,
        parent: &FileId,
        name: &[u8],
        ch: &mut Changes,
    ) {
        if let (Some(s), Some(tb)) = (at, self.tombs.get_mut(id)) {
            tb.removes.clear();
            tb.add_remove(s, *parent, name);
            ch.tomb(id, Some(tb));
        }
    }

    fn apply_op(&mut self, e: &Entry, ch: &mut Changes, fx: &mut Effects) {
        let t = (e.hlc as i64).saturating_mul(1000);
        let author = prefix(&e.author);
        match &e.op {
            Op::Create {
                id,
                parent,
                name,
                kind,
                mode,
                target,
            } => {
                if self.ids.contains_key(id) || *id == FileId::ROOT {
                    return;
                }
                let p = self.live_dir(parent, t, ch, fx).unwrap_or(ROOT);
                let ino = self.next_ino;
                self.next_ino += 1;
                let mut n = self.new_node(*id, *kind, *mode, p, e.hlc);
                if *kind == NodeKind::Symlink {
                    n.target = target.clone();
                    n.size = target.len() as u64;
                }
                self.insert_node(ino, n, ch);
                self.place(p, name, ino, t, ch, fx);
            }
            Op::Remove {
                id,
                parent,
                name,
                seen,
            } => self.remove_remote(id, parent, name, seen, true, None, t, ch, fx),
            Op::Unlink {
                id,
                parent,
                name,
                seen,
            } => self.remove_remote(id, parent, name, seen, false, None, t, ch, fx),
            Op::RemoveAt {
                id,
                parent,
                name,
                seen,
                place,
            } => self.remove_remote(id, parent, name, seen, true, Some(*place), t, ch, fx),
            Op::Move {
                id,
                parent,
                name,
                old_parent,
                old_name,
            } => {
                let stamp = (e.hlc, author);
                // Every move counts for a remove made without seeing it
                // (see `Stamps::moved_off`), also one a newer move outdid
                // and one met while the node is gone.
                if let Some(ino) = self.ino_of(id) {
                    if let Some(n) = self.nodes.get_mut(&ino) {
                        n.stamps.note_move(stamp, *parent);
                    }
                    self.persist(ino, ch);
                } else if let Some(tb) = self.tombs.get_mut(id) {
                    tb.moves.note(stamp, *parent);
                    ch.tomb(id, Some(tb));
                }
                // Removed here while moved there: the move wins where every
                // remove missed a move into another directory (see
                // `Tomb::beaten`: as where the removes arrive second).
                // Removes of builds before they said what they saw lose to
                // a move into another directory than the one it was
                // removed from here (else the one the mover saw it in).
                let back = match self.tombs.get(id) {
                    Some(tb) if !tb.removes.is_empty() => tb.beaten(stamp),
                    Some(tb) => *parent != tb.parent,
                    None => *parent != *old_parent,
                };
                if self.ino_of(id).is_none() && back {
                    self.resurrect_moved(id, parent, name, Some(stamp), t, ch, fx);
                    return;
                }
                if self.ino_of(id).is_none() {
                    // Removed here while renamed there: the remove wins, but
                    // a change that brings it back finds it under the new
                    // name, as where the rename came first.
                    if let Some(tb) = self.tombs.get_mut(id).filter(|tb| stamp > tb.place) {
                        (tb.parent, tb.name, tb.place) = (*parent, name.clone(), stamp);
                        ch.tomb(id, Some(tb));
                        self.follow_removed(id, t, ch, fx);
                    }
                    return;
                }
                let Some((ino, n)) = self.node_of(id) else {
                    return;
                };
                // A file with several names keeps one place stamp: a move
                // of one name that is still there is not one that a newer
                // move of another name placed already.
                let own_name = n.kind != NodeKind::Dir
                    && n.nlink > 1
                    && self
                        .ino_of(old_parent)
                        .is_some_and(|op| self.name_as(op, ino, old_name).is_some());
                let is_dir = n.kind == NodeKind::Dir;
                if stamp <= n.stamps.place && !own_name {
                    // A newer move placed it already. A directory was in
                    // `parent` until then: a move made meanwhile that put
                    // `parent` (or a directory above it) inside this one
                    // formed a cycle then, and is undone as where this
                    // move came first.
                    let newer = n.stamps.place;
                    if is_dir {
                        if let Some(np) = self.dir_ino(parent) {
                            self.uncross(ino, np, stamp, Some(newer), t, ch, fx);
                        }
                    }
                    return;
                }
                let Some(np) = self.live_dir(parent, t, ch, fx) else {
                    return;
                };
                if is_dir && !self.uncross(ino, np, stamp, None, t, ch, fx) {
                    return;
                }
                let Some(n) = self.nodes.get(&ino) else {
                    return;
                };
                let from = if is_dir {
                    Some(n.parent)
                } else {
                    self.ino_of(old_parent)
                };
                let Some(from) = from else { return };
                let (from, cur) = match self.name_in(from, ino, old_name) {
                    Some(cur) => (from, cur),
                    // A file with one name that moved meanwhile (by an
                    // older move, or following its file as a conflict
                    // copy): this newer move takes it from where it is.
                    // One never moved since made has not: a remove took
                    // the name and it is left with another (a link's).
                    None if n.nlink == 1
                        && (n.stamps.place != (n.born, id_prefix(&n.id))
                            || n.stamps.origin().is_some()) =>
                    {
                        match self.name_in(n.parent, ino, b"") {
                            Some(cur) => (n.parent, cur),
                            None => return,
                        }
                    }
                    None => return,
                };
                if from == np && cur == *name {
                    // There already (an older move put it there, or one
                    // brought it back): placed by this move from now on,
                    // so that an older one met later stays skipped, as
                    // where this one moved it.
                    if let Some(n) = self.nodes.get_mut(&ino).filter(|n| stamp > n.stamps.place) {
                        n.stamps.place = stamp;
                        self.persist(ino, ch);
                    }
                    return;
                }
                self.unlink_name(from, &cur, t, ch, fx);
                if self.name_in(np, ino, name).as_deref() == Some(name.as_slice()) {
                    // Renamed onto another of its own names: one name less.
                    if let Some(n) = self.nodes.get_mut(&ino) {
                        n.nlink = n.nlink.saturating_sub(1);
                        n.ctime = t;
                        n.parent = np;
                    }
                    self.persist(ino, ch);
                    fx.inodes.push(ino);
                    self.give_back(from, &cur, t, ch, fx);
                    return;
                }
                let turns = self.takes_turns(ino);
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.ctime = t;
                    let newest = n.stamps.place.max(stamp);
                    n.moved(from, &cur, stamp);
                    n.stamps.place = newest;
                }
                self.persist(ino, ch);
                self.place(np, name, ino, t, ch, fx);
                self.give_back(from, &cur, t, ch, fx);
                self.follow(ino, t, ch, fx);
                if turns {
                    self.arrange(from, &cur, t, ch, fx);
                }
            }
            Op::Link { id, parent, name } => {
                let Some(ino) = self.ino_of(id) else {
                    // Its last name here went by a remove made without
                    // seeing this link: the link's name stays, as where
                    // the remove came second.
                    self.resurrect_moved(id, parent, name, None, t, ch, fx);
                    return;
                };
                if self.nodes.get(&ino).is_none_or(|n| n.kind == NodeKind::Dir) {
                    return;
                }
                let Some(p) = self.live_dir(parent, t, ch, fx) else {
                    return;
                };
                if self.name_in(p, ino, name).as_deref() == Some(name.as_slice()) {
                    return;
                }
                self.add_name(ino, p, name, t, ch, fx);
            }
            Op::SetAttr { id, attr } => {
                let stamp = (e.hlc, author);
                if self.ino_of(id).is_none() {
                    // Gone here: kept for when an edit brings it back.
                    if let (Some(m), Some(tb)) = (attr.mode, self.tombs.get_mut(id)) {
                        if tb.take_mode(m & 0o7777, stamp) {
                            ch.tomb(id, Some(tb));
                        }
                    }
                    if let Some(m) = attr.mode {
                        self.for_copies(self.copies_of_id(id), t, ch, fx, |c| {
                            c.take_mode(m & 0o7777, stamp)
                        });
                    }
                    return;
                }
                let Some((ino, n)) = self.node_mut_of(id) else {
                    return;
                };
                // Owners are local: a uid on another machine means nothing here.
                let mode = attr.mode.map(|m| m & 0o7777);
                let mode = mode.filter(|&m| n.take_mode(m, stamp));
                if let Some(x) = attr.atime.filter(|_| stamp > n.stamps.atime) {
                    n.atime = x;
                    n.stamps.atime = stamp;
                }
                // A content version sets the time too: the newer of the two.
                let mtime = attr
                    .mtime
                    .filter(|_| stamp > n.stamps.mtime && stamp > n.vstamp);
                let times = mtime.is_some();
                if let Some(x) = mtime {
                    n.mtime = x;
                    n.stamps.mtime = stamp;
                }
                n.ctime = t;
                self.persist(ino, ch);
                fx.inodes.push(ino);
                if times {
                    self.renew(ino, fx);
                }
                if let Some(m) = mode {
                    self.for_copies(self.copies_of(ino), t, ch, fx, |c| c.take_mode(m, stamp));
                }
            }
            Op::Content {
                id,
                manifest,
                size,
                replaces,
                mtime,
            } => {
                let remote = Version {
                    manifest: *manifest,
                    size: *size,
                    mtime: *mtime,
                    stamp: (e.hlc, author),
                };
                let ino = match self.ino_of(id) {
                    Some(ino) => ino,
                    // Removed here while it was edited there.
                    None => match self.edit_of_removed(id, remote, replaces, t, ch, fx) {
                        Some(ino) => ino,
                        None => return,
                    },
                };
                let Some(n) = self.nodes.get(&ino) else {
                    return;
                };
                if n.kind != NodeKind::File {
                    return;
                }
                if n.content == *manifest {
                    // It holds these bytes already; the copy of the version
                    // the edit replaces still goes (as where it came before
                    // the equal version, through `content_conflict`).
                    if let Some(c) = self.conflict_copy_of(ino, replaces) {
                        self.drop_copy(c, t, ch, fx);
                    }
                    return;
                }
                if n.content == *replaces {
                    // It may hold the version a remove of its last name
                    // took while a concurrent link kept it: edit beats
                    // delete, the name comes back (see below).
                    let relink = self
                        .tombs
                        .get(id)
                        .filter(|tb| {
                            tb.relink
                                && tb.kind() == NodeKind::File
                                && tb.vstamp == n.vstamp
                                && tb.content == n.content
                        })
                        .cloned();
                    self.set_version(ino, &remote, t, ch, fx);
                    if let Some(tb) = relink {
                        self.tombs.remove(id);
                        ch.tomb(id, None);
                        self.relink_removed(ino, &tb, t, ch, fx);
                    }
                } else if self.holds_removed_version(ino, &remote) {
                    // A remove took the version it holds while a move kept
                    // the file: a newer edit replaces that version without
                    // a copy, as where the remove took the file first.
                    if let Some(c) = self.conflict_copy_of(ino, replaces) {
                        self.drop_copy(c, t, ch, fx);
                    }
                    self.set_version(ino, &remote, t, ch, fx);
                    if let Some(tb) = self.tombs.remove(id).filter(|tb| tb.relink) {
                        self.relink_removed(ino, &tb, t, ch, fx);
                    }
                    ch.tomb(id, None);
                } else {
                    self.content_conflict(ino, remote, replaces, t, ch, fx);
                }
            }
            Op::Xattr { id, name, value } => {
                let stamp = (e.hlc, author);
                let value = value.as_deref();
                if self.ino_of(id).is_none() {
                    // Gone here: kept for when an edit brings it back.
                    if let Some(tb) = self.tombs.get_mut(id) {
                        if tb.attrs.take_xattr(name, value, stamp) {
                            ch.tomb(id, Some(tb));
                        }
                    }
                    self.for_copies(self.copies_of_id(id), t, ch, fx, |c| {
                        c.take_xattr(name, value, stamp)
                    });
                    return;
                }
                let Some((ino, n)) = self.node_mut_of(id) else {
                    return;
                };
                if !n.take_xattr(name, value, stamp) {
                    return;
                }
                n.ctime = t;
                self.persist(ino, ch);
                fx.inodes.push(ino);
                self.for_copies(self.copies_of(ino), t, ch, fx, |c| {
                    c.take_xattr(name, value, stamp)
                });
            }
            Op::CopyMade {
                id,
                parent,
                name,
                mode,
                copy,
            } => {
                if let Some(made) = CopyMade::decode(copy) {
                    self.take_copy(id, parent, name, *mode, made, t, ch, fx);
                }
            }
            Op::Membership(_) => {}
        }
    }

    /// Before directory `ino` moves into `np`: when `ino` is an ancestor of
    /// `np` (the moves cross), the newest move on the path between them
    /// made after `stamp` (and before `until`, when the directory left
    /// `np` again then) is undone, putting that directory back where it
    /// was (Kleppmann's undo; its redo would form a cycle and is skipped).
    /// Returns false when the incoming move is the newer one and must be
    /// skipped itself.
    #[allow(clippy::too_many_arguments)]
    fn uncross(
        &mut self,
        ino: u64,
        np: u64,
        stamp: Stamp,
        until: Option<Stamp>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) -> bool {
        while self.is_ancestor(ino, np) {
            let mut newest: Option<(Stamp, u64)> = None;
            let mut at = np;
            while at != ino && at != ROOT {
                let Some(n) = self.nodes.get(&at) else {
                    return false;
                };
                let s = n.stamps.place;
                if until.is_none_or(|u| s < u) && newest.is_none_or(|(best, _)| s > best) {
                    newest = Some((s, at));
                }
                at = n.parent;
            }
            let Some((s, a)) = newest.filter(|(s, _)| *s > stamp) else {
                return false;
            };
            let Some(n) = self.nodes.get(&a) else {
                return false;
            };
            let Some((back, was, prev)) = n.stamps.prev().cloned() else {
                return false;
            };
            let cur_parent = n.parent;
            let back_ok = self
                .nodes
                .get(&back)
                .is_some_and(|b| b.kind == NodeKind::Dir)
                && !self.is_ancestor(a, back);
            let Some(cur) = self.name_in(cur_parent, a, b"").filter(|_| back_ok) else {
                return false;
            };
            tracing::debug!(undone = ?s, "crossing move undone");
            self.unlink_name(cur_parent, &cur, t, ch, fx);
            if let Some(n) = self.nodes.get_mut(&a) {
                n.stamps.place = prev;
                n.stamps.set_prev(None);
                n.ctime = t;
            }
            self.persist(a, ch);
            self.place(back, &was, a, t, ch, fx);
            self.give_back(cur_parent, &cur, t, ch, fx);
        }
        true
    }

    /// Directory `id`, that a change made elsewhere puts something in:
    /// brought back (with the directories above it) when it was removed
    /// here meanwhile, as an edit brings back a file. Nodes that met the
    /// change first keep it: a directory with children is never removed.
    fn live_dir(&mut self, id: &FileId, t: i64, ch: &mut Changes, fx: &mut Effects) -> Option<u64> {
        if let Some(ino) = self.dir_ino(id) {
            return Some(ino);
        }
        let tomb = self.tombs.get(id).filter(|tb| tb.dir)?.clone();
        let parent = self.live_dir(&tomb.parent, t, ch, fx).unwrap_or(ROOT);
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut n = self.new_node(*id, NodeKind::Dir, tomb.perm, parent, tomb.born);
        n.mtime = tomb.size_mtime.1;
        // The move that placed it: an older one met later stays skipped
        // (as for a file brought back by an edit).
        n.stamps.place = tomb.place;
        self.revive(ino, n, &tomb, ch);
        // The tombstone stays: the remove waits for it to empty again.
        self.place(parent, &tomb.name, ino, t, ch, fx);
        Some(ino)
    }

    /// Brings back file `id` removed here when an edit arrives (edit beats
    /// delete: under causal delivery an edit met after the remove was made
    /// without seeing it). It comes back holding the version the edit
    /// replaces, the one it had when removed or one concurrent with it
    /// (the removed one then leaves no copy: see the remove of a file).
    fn resurrect(
        &mut self,
        id: &FileId,
        replaces: &Option<Hash>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) -> Option<u64> {
        let tomb = self
            .tombs
            .get(id)
            .filter(|tb| tb.kind() == NodeKind::File)?
            .clone();
        let parent = self.live_dir(&tomb.parent, t, ch, fx).unwrap_or(ROOT);
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut n = self.new_node(*id, NodeKind::File, tomb.perm, parent, tomb.born);
        n.content = *replaces;
        (n.size, n.mtime) = tomb.size_mtime;
        // The move that placed it: an older one met later stays skipped,
        // as where it was never removed.
        n.stamps.place = tomb.place;
        self.revive(ino, n, &tomb, ch);
        self.tombs.remove(id);
        ch.tomb(id, None);
        self.place(parent, &tomb.name, ino, t, ch, fx);
        Some(ino)
    }

    /// Brings back node `id` (not a directory with children) removed here,
    /// at the place a concurrent move made at `stamp` gave it, unless a
    /// newer move had placed it (that move would have been skipped); or,
    /// without a stamp, under the name a concurrent link gave it (a file
    /// that has a name there never lost its last one).
    #[allow(clippy::too_many_arguments)]
    fn resurrect_moved(
        &mut self,
        id: &FileId,
        parent: &FileId,
        name: &[u8],
        stamp: Option<Stamp>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let tomb = self.tombs.get(id).filter(|tb| match stamp {
            Some(s) => tb.beaten(s),
            None => tb.kind() != NodeKind::Dir,
        });
        let Some(tomb) = tomb.cloned() else {
            return;
        };
        // A rename newer than this move, met while it was gone, named it.
        let (parent, name, stamp) = match stamp {
            Some(s) if tomb.place > s => (&tomb.parent, &tomb.name[..], Some(tomb.place)),
            _ => (parent, name, stamp),
        };
        let Some(np) = self.live_dir(parent, t, ch, fx) else {
            return;
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        // The move is among the tomb's moves already, which it takes.
        let mut n = self.new_node(*id, tomb.kind(), tomb.perm, np, tomb.born);
        (n.content, n.vstamp) = (tomb.content, tomb.vstamp);
        (n.size, n.mtime) = tomb.size_mtime;
        if let Some((_, target)) = &tomb.special {
            n.target = target.clone();
        }
        n.stamps.place = stamp.unwrap_or(tomb.place);
        self.revive(ino, n, &tomb, ch);
        if tomb.kind() != NodeKind::File {
            // A file keeps it: the version it comes back with is the one
            // removed (see `holds_removed_version`).
            self.tombs.remove(id);
            ch.tomb(id, None);
        } else if stamp.is_none() {
            // Back for a link: a newer edit brings the removed name too.
            self.mark_relink(id, ch);
        }
        self.place(np, name, ino, t, ch, fx);
        // Its untouched copies follow it there, as where it never went.
        self.follow(ino, t, ch, fx);
    }

    /// Marks the tomb of live file `id` as one of a remove of its last
    /// name met by a concurrent link (see [`Tomb::relink`]).
    fn mark_relink(&mut self, id: &FileId, ch: &mut Changes) {
        if let Some(tb) = self.tombs.get_mut(id) {
            tb.relink = true;
            ch.tomb(id, Some(tb));
        }
    }

    /// A newer edit replaced the version of file `ino` that a remove of
    /// its last name took while a concurrent link kept the file: edit
    /// beats delete, so the removed name (`tomb`'s) comes back, as where
    /// the edit came before the remove.
    fn relink_removed(
        &mut self,
        ino: u64,
        tomb: &Tomb,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let Some(p) = self.live_dir(&tomb.parent, t, ch, fx) else {
            return;
        };
        if self.name_as(p, ino, &tomb.name).is_some() {
            return;
        }
        self.add_name(ino, p, &tomb.name, t, ch, fx);
    }

    /// Gives file `ino` one more name, `name` in directory `p` (a conflict
    /// name where it is taken); its copies go by its names, the new one
    /// too.
    fn add_name(
        &mut self,
        ino: u64,
        p: u64,
        name: &[u8],
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink += 1;
            n.ctime = t;
        }
        self.persist(ino, ch);
        fx.inodes.push(ino);
        self.place(p, name, ino, t, ch, fx);
        self.follow(ino, t, ch, fx);
    }

    /// Adds node `n` (inode `ino`), brought back from `tomb`, with the
    /// mode and xattrs it had; a conflict copy follows its file again and
    /// takes the changes of the file's mode and xattrs met while it was
    /// gone (where it stayed, they reached it: see [`Tree::for_copies`]).
    fn revive(&mut self, ino: u64, mut n: Node, tomb: &Tomb, ch: &mut Changes) {
        tomb.attrs.restore(&mut n);
        if let Some(a) = tomb.announced {
            n.stamps.set_announced(a);
        }
        n.stamps.merge_moves(&tomb.moves);
        if let Some(o) = tomb.origin {
            if let Some((perm, kept)) = self.attrs_of(&o) {
                kept.merge_into(&mut n, perm);
            }
            n.stamps.set_origin(o);
            self.copies.entry(o).or_default().push(ino);
        }
        self.insert_node(ino, n, ch);
    }

    /// File `ino` holds the version a remove took (the remove found its
    /// names moved away, or a move brought it back), and `v` is newer.
    fn holds_removed_version(&self, ino: u64, v: &Version) -> bool {
        let Some(n) = self.nodes.get(&ino) else {
            return false;
        };
        self.tombs.get(&n.id).is_some_and(|tb| {
            tb.kind() == NodeKind::File
                && tb.vstamp == n.vstamp
                && tb.content == n.content
                && v.stamp > n.vstamp
        })
    }

    /// The mode and xattrs (with their stamps) of file `id`, live or
    /// removed here.
    fn attrs_of(&self, id: &FileId) -> Option<(u32, KeptAttrs)> {
        match (self.node_of(id), self.tombs.get(id)) {
            (Some((_, o)), _) => Some((o.perm, KeptAttrs::of(o))),
            (None, Some(tb)) => Some((tb.perm, tb.attrs.clone())),
            (None, None) => None,
        }
    }

    /// The conflict copy of file `ino` holding version `content` untouched
    /// since it was made (same content, name and place).
    /// True when a local commit of `manifest` over `base` to file `ino`
    /// would change nothing anywhere: the file holds those bytes already
    /// and no conflict copy holds `base` (which the commit would
    /// supersede). Peers holding other bytes would only keep it as one
    /// more copy of what the file holds.
    pub fn redundant_version(
        &self,
        ino: u64,
        manifest: &Option<Hash>,
        base: &Option<Hash>,
    ) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.content == *manifest)
            && self.conflict_copy_of(ino, base).is_none()
    }

    fn conflict_copy_of(&self, ino: u64, content: &Option<Hash>) -> Option<u64> {
        self.copy_of_version(&self.nodes.get(&ino)?.id, content)
    }

    /// The same by the file's id (the file may be gone here).
    fn copy_of_version(&self, id: &FileId, content: &Option<Hash>) -> Option<u64> {
        self.copies.get(id)?.iter().copied().find(|&c| {
            // A copy somebody renamed or moved (put aside) stays.
            self.untouched_copy(c)
                && self.nodes.get(&c).is_some_and(|x| {
                    x.kind == NodeKind::File
                        && x.stamps.origin() == Some(*id)
                        && x.content == *content
                        && x.id == copy_id(id, content, x.vstamp.0)
                })
        })
    }

    /// Removes conflict copy `c` that a newer version superseded.
    fn drop_copy(&mut self, c: u64, t: i64, ch: &mut Changes, fx: &mut Effects) {
        let Some(parent) = self.nodes.get(&c).map(|n| n.parent) else {
            return;
        };
        let Some(name) = self.name_in(parent, c, b"") else {
            return;
        };
        self.unlink_name(parent, &name, t, ch, fx);
        if let Some(n) = self.nodes.get_mut(&c) {
            n.nlink = 0;
            n.ctime = t;
        }
        fx.inodes.push(c);
        self.maybe_free(c, ch);
        self.give_back(parent, &name, t, ch, fx);
        self.arrange(parent, &name, t, ch, fx);
    }

    fn set_version(&mut self, ino: u64, v: &Version, t: i64, ch: &mut Changes, fx: &mut Effects) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.content = v.manifest;
            n.manifest = None;
            n.size = v.size;
            if v.stamp > n.stamps.mtime {
                n.mtime = v.mtime;
            }
            n.ctime = t;
            n.vstamp = v.stamp;
        }
        self.persist(ino, ch);
        fx.inodes.push(ino);
        fx.data.push(ino);
        self.renew(ino, fx);
        self.drop_copies_holding(ino, &v.manifest, t, ch, fx);
    }

    /// Drops the untouched conflict copies of `ino` that hold `content`,
    /// the version it now shows: a copy never repeats its file (nodes that
    /// met the two equal versions in another order never made it).
    pub(super) fn drop_copies_holding(
        &mut self,
        ino: u64,
        content: &Option<Hash>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        while let Some(c) = self.conflict_copy_of(ino, content) {
            self.drop_copy(c, t, ch, fx);
        }
    }

    /// Two versions of `ino` replaced the same one: the newer stays, the
    /// other becomes a conflict copy beside it (the same on every node).
    /// Returns the inode of the copy, if one was made.
    pub fn content_conflict(
        &mut self,
        ino: u64,
        other: Version,
        replaces: &Option<Hash>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) -> Option<u64> {
        // The version `other` replaces lost an earlier conflict here and
        // sits in a copy: `other` supersedes that copy (nodes that met them
        // in the other order never made it).
        if let Some(c) = self.conflict_copy_of(ino, replaces) {
            self.drop_copy(c, t, ch, fx);
        }
        let n = self.nodes.get(&ino)?;
        let local = Version {
            manifest: n.content,
            size: n.size,
            mtime: n.mtime,
            stamp: n.vstamp,
        };
        let (id, perm) = (n.id, n.perm);
        let kept = KeptAttrs::of(n);
        let (winner, loser) = if other.stamp > local.stamp {
            (other, local)
        } else {
            (local, other)
        };
        if winner.stamp != local.stamp {
            self.set_version(ino, &winner, t, ch, fx);
        }
        if loser.manifest == winner.manifest {
            return None;
        }
        let (parent, name) = self.claimed_name(ino)?;
        self.make_copy(id, parent, &name, perm, &kept, loser, t, ch, fx)
    }

    /// Makes the conflict copy of file `id` that keeps version `loser`,
    /// beside it in `parent`, named after `name` (the name the file goes
    /// by), with the file's mode `perm` and attributes `kept`. Returns its
    /// inode, or `None` when it exists already.
    #[allow(clippy::too_many_arguments)]
    fn make_copy(
        &mut self,
        id: FileId,
        parent: u64,
        name: &[u8],
        perm: u32,
        kept: &KeptAttrs,
        loser: Version,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) -> Option<u64> {
        let cid = copy_id(&id, &loser.manifest, loser.stamp.0);
        if self.ids.contains_key(&cid) {
            return None;
        }
        let cino = self.next_ino;
        self.next_ino += 1;
        let mut c = self.new_node(cid, NodeKind::File, perm, parent, loser.stamp.0);
        c.content = loser.manifest;
        c.size = loser.size;
        c.mtime = loser.mtime;
        c.vstamp = loser.stamp;
        // Mode and xattrs as the file has them, with their stamps: changes
        // of the file that this node applies later reach the copy too
        // (`for_copies`), so the copy ends the same wherever it was made.
        kept.restore(&mut c);
        c.stamps.set_origin(id);
        self.copies.entry(id).or_default().push(cino);
        self.insert_node(cino, c, ch);
        let alt = self.free_conflict_name(parent, name, loser.stamp.1, loser.stamp.0);
        self.link_name(parent, &alt, cino, t, ch, fx);
        self.arrange(parent, &alt, t, ch, fx);
        Some(cino)
    }

    /// An edit `v` (of version `replaces`) of file `id`, removed here,
    /// arrives. The conflict copy of the version it replaces goes (the
    /// edit supersedes it). Then edit beats delete: the file comes back
    /// with it (see [`Tree::resurrect`]), unless it would have lost to the
    /// version removed: then it shows as that version's conflict copy
    /// would have, beside where the file was (as on nodes that met it
    /// before the remove). Returns the file's inode when it came back.
    fn edit_of_removed(
        &mut self,
        id: &FileId,
        v: Version,
        replaces: &Option<Hash>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) -> Option<u64> {
        if let Some(c) = self.copy_of_version(id, replaces) {
            self.drop_copy(c, t, ch, fx);
        }
        let tomb = self
            .tombs
            .get(id)
            .filter(|tb| tb.kind() == NodeKind::File)?
            .clone();
        if v.stamp > tomb.vstamp {
            return self.resurrect(id, replaces, t, ch, fx);
        }
        if v.manifest != tomb.content {
            let parent = self.live_dir(&tomb.parent, t, ch, fx).unwrap_or(ROOT);
            self.make_copy(
                *id,
                parent,
                &tomb.name,
                tomb.perm,
                &tomb.attrs,
                v,
                t,
                ch,
                fx,
            );
        }
        None
    }
}

/// The last conflict part of `name` (`.conflict-<node>-<time>` and the
/// extension, without a `~N` suffix), if it has one.
fn conflict_tag(name: &[u8]) -> Option<&[u8]> {
    let u = unsuffixed(name);
    let pat = b".conflict-";
    let at = u.windows(pat.len()).rposition(|w| w == pat)?;
    Some(&u[at..])
}

/// What every conflict name of `name` starts with (see [`conflict_name`]).
fn conflict_prefix(name: &[u8]) -> Vec<u8> {
    let mut out = stem_ext(name).0.to_vec();
    out.extend_from_slice(b".conflict-");
    out
}

/// `name` split before its extension (the last dot, not a leading one).
fn stem_ext(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0) {
        Some(i) => name.split_at(i),
        None => (name, &b""[..]),
    }
}

/// `name` with the suffix `~i`.
fn suffixed(name: &[u8], i: u32) -> Vec<u8> {
    let mut n = name.to_vec();
    n.extend_from_slice(format!("~{i}").as_bytes());
    n
}

/// `name` without a `~N` suffix.
fn unsuffixed(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'~') {
        Some(i) if i + 1 < name.len() && name[i + 1..].iter().all(u8::is_ascii_digit) => &name[..i],
        _ => name,
    }
}

impl Tree {
    /// True for a conflict copy nobody edited, renamed, moved or linked
    /// since it was made (it follows its file and takes its name's turn).
    fn untouched_copy(&self, c: u64) -> bool {
        self.nodes.get(&c).is_some_and(|x| {
            x.stamps.origin().is_some()
                && x.nlink == 1
                && x.stamps.place == (x.born, id_prefix(&x.id))
                && x.vstamp.0 == x.born
        })
    }

    /// True for conflict copy `c` holding `content`, the version it was
    /// made with, and no change of its own since (see [`CopyMade`]).
    fn pristine_copy(&self, c: u64, content: &Option<Hash>) -> bool {
        self.nodes.get(&c).is_some_and(|x| {
            x.stamps
                .origin()
                .is_some_and(|o| x.id == copy_id(&o, content, x.born))
        })
    }

    /// Before a local change of conflict copy `ino` that makes it more
    /// than a copy (an edit of the version `held` it was made with, a
    /// rename, a link): tells the other nodes it exists, in an entry ahead
    /// of the change's own (see [`CopyMade`]). Returns whether it did.
    pub(super) fn announce_copy(
        &mut self,
        ino: u64,
        held: &Option<Hash>,
        hlc: u64,
        ch: &mut Changes,
    ) -> bool {
        if !self.pristine_copy(ino, held) {
            return false;
        }
        let Some(n) = self.nodes.get(&ino) else {
            return false;
        };
        let (Some(origin), Some(p), Some(name)) = (
            n.stamps.origin(),
            self.nodes.get(&n.parent),
            self.name_in(n.parent, ino, b""),
        ) else {
            return false;
        };
        let made = CopyMade {
            origin,
            content: *held,
            size: n.size,
            mtime: n.mtime,
            born: n.born,
            vstamp: self.stamp(hlc),
            attrs: KeptAttrs::of(n),
        };
        let op = Op::CopyMade {
            id: n.id,
            parent: p.id,
            name: name.clone(),
            mode: n.perm,
            copy: made.encode(),
        };
        ch.op(hlc, op);
        if conflict_tag(&name).is_some() {
            // It places the conflict name the copy was made with.
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.stamps.set_announced(made.vstamp);
            }
            self.persist(ino, ch);
        }
        true
    }

    /// Takes another node's announcement of conflict copy `id` (see
    /// [`CopyMade`]): a copy made here too takes its stamp and, when it
    /// still followed its file, its place; a copy dropped or never made
    /// here is made from it. A copy a user removed here stays removed
    /// (an edit that follows brings it back).
    #[allow(clippy::too_many_arguments)]
    fn take_copy(
        &mut self,
        id: &FileId,
        parent: &FileId,
        name: &[u8],
        mode: u32,
        made: CopyMade,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        if let Some(ino) = self.ino_of(id) {
            let Some(n) = self.nodes.get(&ino) else {
                return;
            };
            if n.stamps.origin().is_none() {
                return;
            }
            // Announced here too, at another place (each node before its
            // own change): the newer announcement places the conflict name
            // the copy was made with, wherever that name went since.
            let tagged = conflict_tag(name).is_some();
            let placed = tagged && n.stamps.announced().is_some_and(|a| a < made.vstamp);
            if n.vstamp >= made.vstamp {
                if placed {
                    if let Some(np) = self.live_dir(parent, t, ch, fx) {
                        self.take_announced_name(ino, np, name, made.vstamp, t, ch, fx);
                    }
                }
                return;
            }
            let following = self.untouched_copy(ino);
            if tagged && n.stamps.announced().is_none_or(|a| a < made.vstamp) {
                if let Some(n) = self.nodes.get_mut(&ino) {
                    n.stamps.set_announced(made.vstamp);
                }
            }
            if let Some(n) = self.nodes.get_mut(&ino) {
                // A copy edited here since holds a version of its own: the
                // announcer's edit, that follows, meets it as a concurrent
                // version (the newer wins, as where the announcement came
                // after it).
                if n.content == made.content {
                    n.vstamp = made.vstamp;
                }
                made.attrs.merge_into(n, mode);
            }
            self.persist(ino, ch);
            let (Some(np), Some(from)) = (
                self.live_dir(parent, t, ch, fx),
                self.nodes.get(&ino).map(|n| n.parent),
            ) else {
                return;
            };
            if placed && !following {
                self.take_announced_name(ino, np, name, made.vstamp, t, ch, fx);
                return;
            }
            let Some(cur) = self.name_in(from, ino, name).filter(|_| following) else {
                return;
            };
            if from == np && cur == name {
                return;
            }
            self.unlink_name(from, &cur, t, ch, fx);
            self.place_copy(np, name, ino, t, ch, fx);
            self.give_back(from, &cur, t, ch, fx);
            self.arrange(from, &cur, t, ch, fx);
            return;
        }
        if let Some(tb) = self.tombs.get_mut(id) {
            // Removed here after its own announcement: a newer one names
            // it, for when an edit brings it back (as where it lived).
            if conflict_tag(name).is_some() && tb.announced.is_some_and(|a| a < made.vstamp) {
                (tb.parent, tb.name, tb.announced) = (*parent, name.to_vec(), Some(made.vstamp));
                ch.tomb(id, Some(tb));
            }
            return;
        }
        let p = self.live_dir(parent, t, ch, fx).unwrap_or(ROOT);
        // Mode and xattrs as its file has them (or had them, with the
        // changes met since it went), then the copy's own.
        let (perm, kept) = self
            .attrs_of(&made.origin)
            .unwrap_or((mode, KeptAttrs::default()));
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut c = self.new_node(*id, NodeKind::File, perm, p, made.born);
        c.content = made.content;
        c.size = made.size;
        c.mtime = made.mtime;
        c.vstamp = made.vstamp;
        kept.restore(&mut c);
        made.attrs.merge_into(&mut c, mode);
        c.stamps.set_origin(made.origin);
        self.copies.entry(made.origin).or_default().push(ino);
        self.insert_node(ino, c, ch);
        self.place_copy(p, name, ino, t, ch, fx);
    }

    /// Moves the name of conflict copy `ino` that its announcement placed
    /// (a conflict name with the same tag as `name`: links and renames give
    /// others), wherever it is, to `name` in `np`, announced at `stamp`.
    #[allow(clippy::too_many_arguments)]
    fn take_announced_name(
        &mut self,
        ino: u64,
        np: u64,
        name: &[u8],
        stamp: Stamp,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.stamps.set_announced(stamp);
        }
        self.persist(ino, ch);
        let Some(tag) = conflict_tag(name) else {
            return;
        };
        let found = self
            .names_of(ino)
            .filter(|(_, k)| conflict_tag(k) == Some(tag))
            .map(|(d, k)| (d, k.to_vec()))
            .min();
        let Some((from, cur)) = found else {
            return;
        };
        if (from == np && cur == name) || self.name_as(np, ino, name).is_some() {
            return;
        }
        self.unlink_name(from, &cur, t, ch, fx);
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = np;
            n.ctime = t;
        }
        self.persist(ino, ch);
        self.place_copy(np, name, ino, t, ch, fx);
        self.give_back(from, &cur, t, ch, fx);
        self.arrange(from, &cur, t, ch, fx);
    }

    /// Gives announced copy `ino` the name `name` it has where it was
    /// announced: nodes taking turns for that conflict name make way (they
    /// take the next turns, as where the announced copy held the name when
    /// they came); others keep it (see [`Tree::place`]).
    fn place_copy(
        &mut self,
        parent: u64,
        name: &[u8],
        ino: u64,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let holder = self
            .holder(parent, name)
            .filter(|&h| h != ino && self.name_turn(h).is_some());
        let Some(h) = holder else {
            self.place(parent, name, ino, t, ch, fx);
            return;
        };
        self.unlink_name(parent, name, t, ch, fx);
        self.link_name(parent, name, ino, t, ch, fx);
        let aside = self.free_suffixed(parent, unsuffixed(name));
        self.link_name(parent, &aside, h, t, ch, fx);
        fx.inodes.push(h);
        self.arrange(parent, &aside, t, ch, fx);
    }

    /// What orders node `c` among those sharing its conflict name, if it
    /// takes turns: an untouched conflict copy by the stamp of its version,
    /// a node shown under a conflict name while it claims another (a
    /// hard-linked file too) by its creation (the stamps its conflict
    /// names are made of).
    fn name_turn(&self, c: u64) -> Option<(Stamp, FileId)> {
        let x = self.nodes.get(&c)?;
        if self.untouched_copy(c) {
            Some((x.vstamp, x.id))
        } else if x.stamps.want().is_some() {
            Some(((x.born, id_prefix(&x.id)), x.id))
        } else {
            None
        }
    }

    /// True when node `c` takes turns for a conflict name (see
    /// [`Tree::name_turn`]): a name it leaves must be arranged again.
    pub(super) fn takes_turns(&self, c: u64) -> bool {
        self.nodes
            .get(&c)
            .is_some_and(|x| x.stamps.origin().is_some() || x.stamps.want().is_some())
    }

    /// Names the nodes in `parent` that share the conflict name `name`
    /// (given with or without its `~N`) and take turns for it (see
    /// [`Tree::name_turn`]) in a fixed order, oldest first: the plain
    /// name, then `~2`, … (the order they arrived in differs between
    /// nodes).
    pub(super) fn arrange(
        &mut self,
        parent: u64,
        name: &[u8],
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        let base = unsuffixed(name);
        let Some(p) = self.nodes.get(&parent) else {
            return;
        };
        let mut members: Vec<((Stamp, FileId), u64, Vec<u8>)> = p
            .entries
            .iter()
            .filter(|(n, _)| unsuffixed(n) == base)
            .filter_map(|(n, c)| Some((self.name_turn(*c)?, *c, n.clone())))
            .collect();
        if members.len() < 2 && members.first().is_none_or(|m| m.2 == base) {
            return;
        }
        members.sort();
        let mine: HashSet<u64> = members.iter().map(|m| m.1).collect();
        let held_by_other =
            |tree: &Tree, n: &[u8]| tree.holder(parent, n).is_some_and(|i| !mine.contains(&i));
        let mut targets = Vec::new();
        let mut k = 1u32;
        for _ in &members {
            loop {
                let n = if k > 1 {
                    suffixed(base, k)
                } else {
                    base.to_vec()
                };
                k += 1;
                if !held_by_other(self, &n) {
                    targets.push(n);
                    break;
                }
            }
        }
        let moves: Vec<(u64, Vec<u8>, Vec<u8>)> = members
            .into_iter()
            .zip(targets)
            .filter(|(m, want)| m.2 != *want)
            .map(|(m, want)| (m.1, m.2, want))
            .collect();
        for (_, cur, _) in &moves {
            self.unlink_name(parent, cur, t, ch, fx);
        }
        for (c, _, want) in moves {
            self.link_name(parent, &want, c, t, ch, fx);
            fx.inodes.push(c);
        }
    }

    /// The directory and name file `ino` goes by: the name it claims when
    /// it shows under a conflict name (it gets it back later), else the
    /// name it has in its parent; for a file with several names, the
    /// first by (directory id, name), the same on every node (its parent
    /// is that of the name it got last here, which differs).
    fn claimed_name(&self, ino: u64) -> Option<(u64, Vec<u8>)> {
        let n = self.nodes.get(&ino)?;
        if let Some(w) = n.stamps.want() {
            return Some((n.parent, w.to_vec()));
        }
        if n.nlink > 1 && n.kind != NodeKind::Dir {
            return self
                .names_of(ino)
                .filter_map(|(di, nm)| Some(((self.nodes.get(&di)?.id, nm), di)))
                .min()
                .map(|((_, nm), di)| (di, nm.to_vec()));
        }
        Some((n.parent, self.name_in(n.parent, ino, b"")?))
    }

    /// Every (directory, name) that node `ino` goes by (a scan of all
    /// directories: for files with several names).
    fn names_of(&self, ino: u64) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.nodes
            .iter()
            .filter(|(_, d)| d.kind == NodeKind::Dir)
            .flat_map(move |(&d, dn)| {
                dn.entries
                    .iter()
                    .filter(move |(_, &i)| i == ino)
                    .map(move |(k, _)| (d, k.as_slice()))
            })
    }

    /// Puts the untouched conflict copies of file `ino` (and theirs) beside
    /// it under its current name: a copy follows its file's renames and
    /// moves until somebody moves the copy itself, so it ends at the same
    /// place on every node whatever it met first.
    pub(super) fn follow(&mut self, ino: u64, t: i64, ch: &mut Changes, fx: &mut Effects) {
        let mut todo = vec![ino];
        let mut seen = HashSet::new();
        while let Some(f) = todo.pop() {
            if !seen.insert(f) {
                continue;
            }
            let copies = self.untouched(self.copies_of(f));
            // Most files have none: no scan of the directory for its name.
            if copies.is_empty() {
                continue;
            }
            let Some((parent, name)) = self.claimed_name(f) else {
                continue;
            };
            self.name_copies(&copies, parent, &name, t, ch, fx);
            todo.extend(copies);
        }
    }

    /// Gives conflict copies `copies` the conflict names of `name` in
    /// `parent` (their file's name), where they have others.
    fn name_copies(
        &mut self,
        copies: &[u64],
        parent: u64,
        name: &[u8],
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
    ) {
        for &c in copies {
            let Some(x) = self.nodes.get(&c) else {
                continue;
            };
            let (author, hlc, from) = (x.vstamp.1, x.vstamp.0, x.parent);
            let want = conflict_name(name, author, hlc);
            let Some(cur) = self.name_in(from, c, b"") else {
                continue;
            };
            if from != parent || unsuffixed(&cur) != want {
                self.unlink_name(from, &cur, t, ch, fx);
                let alt = self.free_conflict_name(parent, name, author, hlc);
                self.link_name(parent, &alt, c, t, ch, fx);
                fx.inodes.push(c);
                self.arrange(parent, &want, t, ch, fx);
                self.arrange(from, &cur, t, ch, fx);
            }
        }
    }

    /// Like [`Tree::follow`] for file `id`, removed here, whose tombstone
    /// a move made elsewhere just renamed: its untouched copies take the
    /// new name, as where the move came before the remove.
    fn follow_removed(&mut self, id: &FileId, t: i64, ch: &mut Changes, fx: &mut Effects) {
        let Some(tb) = self.tombs.get(id) else {
            return;
        };
        let Some(parent) = self.dir_ino(&tb.parent) else {
            return;
        };
        let name = tb.name.clone();
        let copies = self.untouched(self.copies_of_id(id));
        if copies.is_empty() {
            return;
        }
        self.name_copies(&copies, parent, &name, t, ch, fx);
        for c in copies {
            self.follow(c, t, ch, fx);
        }
    }

    /// Of conflict copies `copies`, those nobody changed (which follow
    /// their file).
    fn untouched(&self, mut copies: Vec<u64>) -> Vec<u64> {
        copies.retain(|&c| self.untouched_copy(c));
        copies
    }

    /// The conflict copies made of `ino` (still there and still its).
    pub(super) fn copies_of(&self, ino: u64) -> Vec<u64> {
        let Some(n) = self.nodes.get(&ino) else {
            return Vec::new();
        };
        let mut v = self.copies_of_id(&n.id);
        v.retain(|c| *c != ino);
        v
    }

    /// The conflict copies made of file `id` (which may be gone here).
    fn copies_of_id(&self, id: &FileId) -> Vec<u64> {
        self.copies
            .get(id)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| {
                self.nodes
                    .get(c)
                    .is_some_and(|x| x.stamps.origin() == Some(*id))
            })
            .collect()
    }

    /// Applies `take` (a last-writer-wins change of mode or an xattr) to
    /// conflict copies `todo` (those of a file: [`Tree::copies_of`], or
    /// [`Tree::copies_of_id`] for a file gone here, whose copies outlive
    /// it and keep following its mode and xattrs, as where they were made
    /// after the change), and to theirs where it took.
    pub(super) fn for_copies(
        &mut self,
        mut todo: Vec<u64>,
        t: i64,
        ch: &mut Changes,
        fx: &mut Effects,
        mut take: impl FnMut(&mut Node) -> bool,
    ) {
        while let Some(c) = todo.pop() {
            let Some(n) = self.nodes.get_mut(&c) else {
                continue;
            };
            if !take(n) {
                continue;
            }
            n.ctime = t;
            self.persist(c, ch);
            fx.inodes.push(c);
            todo.extend(self.copies_of(c));
        }
    }
}

/// The id of the conflict copy of file `id` that keeps version `manifest`
/// made at clock `hlc`: the same on every node.
fn copy_id(id: &FileId, manifest: &Option<Hash>, hlc: u64) -> FileId {
    let mut h = blake3::Hasher::new();
    h.update(&id.0);
    h.update(manifest.as_ref().map_or(&[0u8; 32][..], |m| &m[..]));
    h.update(&hlc.to_le_bytes());
    let mut cid = [0u8; 16];
    cid.copy_from_slice(&h.finalize().as_bytes()[..16]);
    FileId(cid)
}

/// What a node changing a conflict copy tells the others first, in an
/// [`Op::CopyMade`] (ahead of the change's own entry): nodes that never
/// made the copy (they met its version after a newer one) or dropped it
/// (superseded) make it from this, so the edit, rename or link that
/// follows finds it, and nodes that hold it take its stamp.
#[derive(Debug, Serialize, Deserialize)]
struct CopyMade {
    /// The file it is a copy of.
    origin: FileId,
    /// The version it was made with.
    content: Option<Hash>,
    /// Its size.
    size: u64,
    /// Its modification time (ns).
    mtime: i64,
    /// Clock of the version it was made with.
    born: u64,
    /// Stamp of the change announced: the copy's version stamp from now.
    vstamp: Stamp,
    /// Its mode's stamp and its xattrs, with changes made to the copy
    /// itself (taken by last writer wins; the mode is the entry's).
    attrs: KeptAttrs,
}

impl CopyMade {
    fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Option<CopyMade> {
        postcard::from_bytes(bytes).ok()
    }
}

/// One content version of a file.
#[derive(Debug, Clone, Copy)]
pub struct Version {
    /// Manifest (`None`: empty).
    pub manifest: Option<Hash>,
    /// Size.
    pub size: u64,
    /// Modification time (ns).
    pub mtime: i64,
    /// (hybrid clock, author prefix) of the entry that made it.
    pub stamp: (u64, [u8; 8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_keep_the_extension() {
        let a = [0u8; 8];
        // 2026-11-23 12:00:00 UTC.
        let hlc = 1_795_435_200u64 * 1_000_000;
        assert_eq!(
            conflict_name(b"report.txt", a, hlc),
            b"report.conflict-AAAAAAAA-20261123-120000.txt".to_vec()
        );
        assert_eq!(
            conflict_name(b".bashrc", a, hlc),
            b".bashrc.conflict-AAAAAAAA-20261123-120000".to_vec()
        );
        assert_eq!(civil(0), (1970, 1, 1));
    }
}
