//! Replication between members: connections, channel streams, the version
//! vector exchange, pushing new entries at once, chunk requests (a member is
//! served only its own channels' content) and joins.
//! Everything received is verified (signature, membership, role, hash)
//! before it reaches the node; anything malformed closes its stream with a
//! log line and changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use tokio::sync::{watch, Semaphore};

use super::delta;
use super::frame::{decode, read_frame, read_frame_bytes, write_frame};
use super::proto::{
    code, ChanMsg, ChunkReply, ChunkReplyRef, DeltaReply, JoinReply, Open, Token, WireVv,
    MAX_CHUNKS, PROTO,
};
use super::tls;
use crate::identity::{node_id_of_key, Identity, NodeId};
use crate::journal::{Entry, Member, MemberOp, Op, Role, SignedEntry};
use crate::store::manifest::Manifest;
use crate::store::{ChannelRec, Hash, Mut, Store, StoreError, Vv};

/// Entries per frame.
const BATCH: usize = 512;
/// Bytes of manifests per frame (frames stay under the frame limit).
const BATCH_BYTES: usize = 8 << 20;
/// How often idle channel streams exchange version vectors.
const TICK: Duration = Duration::from_secs(2);
/// How often members without a connection are dialed.
const DIAL_EVERY: Duration = Duration::from_secs(1);
/// Files up to this size travel with their entries, content included.
const INLINE_MAX: u64 = 64 << 10;
/// Two connections of one pair made within this time are a dial race.
const DIAL_RACE: Duration = Duration::from_secs(3);
/// Chunks asked for in one background request.
const PREFETCH_GROUP: usize = 16;
/// Concurrent background chunk fetches.
const PREFETCH_SLOTS: usize = 64;

/// What the network needs from the node: applying verified entries and
/// admitting a member that presented an invitation.
pub trait Host: Send + Sync + 'static {
    /// Applies verified entries of channel `local`, in order.
    fn apply(&self, local: u32, entries: Vec<(Entry, SignedEntry)>) -> anyhow::Result<usize>;
    /// Records (as leader) the admission of `member`; returns the record.
    fn admit(&self, local: u32, member: Member) -> anyhow::Result<ChannelRec>;
    /// Membership of channel `local` changed.
    fn membership_changed(&self, local: u32);
}

/// A version vector and the token of the stream that owns it.
type Owned = (u64, Vv);

/// One frame's worth of entries for a peer.
#[derive(Default)]
struct Batch {
    entries: Vec<SignedEntry>,
    manifests: Vec<serde_bytes::ByteBuf>,
    chunks: Vec<serde_bytes::ByteBuf>,
}

impl Batch {
    /// Bytes of entries, manifests and chunks (what `status` counts).
    fn payload(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.entry.len() + e.sig.len())
            .sum::<usize>()
            + self.manifests.iter().map(|m| m.len()).sum::<usize>()
            + self.chunks.iter().map(|c| c.len()).sum::<usize>()
    }
}

/// What one channel's journal references, as far as it has been read: the
/// manifests of its content entries (every author, every version) and their
/// chunks. A member of the channel is served these and nothing else.
#[derive(Default)]
struct Scope {
    /// Per author, the last seq read.
    read: Vv,
    manifests: HashSet<Hash>,
    chunks: HashSet<Hash>,
}

impl Scope {
    /// What the entries of channel `local` after `read` reference, with the
    /// vector read up to.
    fn scan(store: &Store, local: u32, read: &Vv) -> Result<Scope, StoreError> {
        let mut out = Scope {
            read: read.clone(),
            ..Scope::default()
        };
        for (author, held) in store.vv(local) {
            loop {
                let done = out.read.get(&author).copied().unwrap_or(0);
                if done >= held {
                    break;
                }
                let list = store.journal_from(local, &author, done + 1, BATCH)?;
                // Entries submitted but not committed yet are read next time.
                if list.is_empty() {
                    break;
                }
                // An author's entries are numbered densely.
                out.read.insert(author, done + list.len() as u64);
                for se in list {
                    let op = se.decode().map(|e| e.op);
                    let Ok(Op::Content {
                        manifest: Some(h), ..
                    }) = op
                    else {
                        continue;
                    };
                    if out.manifests.insert(h) {
                        let m = store.manifest_bytes(&h)?;
                        if let Some(m) = m.and_then(|b| Manifest::from_bytes(&b).ok()) {
                            out.chunks.extend(m.chunk_hashes().copied());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds what a later scan found.
    fn merge(&mut self, more: Scope) {
        for (a, seq) in more.read {
            let e = self.read.entry(a).or_default();
            *e = (*e).max(seq);
        }
        self.manifests.extend(more.manifests);
        self.chunks.extend(more.chunks);
    }
}

struct Conn {
    conn: quinn::Connection,
    dialed_by_me: bool,
    since: Instant,
    streams: HashSet<u32>,
}

/// Per-channel figures for `status`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// Node id.
    pub id: String,
    /// Role.
    pub role: String,
    /// Connected now.
    pub connected: bool,
    /// Round-trip time (ms) when connected.
    pub rtt_ms: Option<f64>,
    /// Entries this node has that the peer has not acknowledged.
    pub to_send: u64,
    /// Address in use or known.
    pub addr: Option<String>,
}

struct Inner {
    ident: Identity,
    store: Arc<Store>,
    host: Arc<dyn Host>,
    ep: quinn::Endpoint,
    conns: Mutex<HashMap<[u8; 32], Conn>>,
    learned: Mutex<HashMap<[u8; 32], SocketAddr>>,
    dialing: Mutex<HashSet<[u8; 32]>>,
    /// Peers to contact whatever the channels say (config `bootstrap`),
    /// with the node found at each once known.
    bootstrap: Vec<String>,
    boot_ids: Mutex<HashMap<String, [u8; 32]>>,
    /// Bootstrap addresses being dialed now.
    boot_dialing: Mutex<HashSet<String>>,
    /// Chunks being fetched, with their channel and the verdict to come.
    inflight: Mutex<HashMap<Hash, (u32, Verdict)>>,
    /// What each peer holds of each channel, as far as we know.
    /// Keyed by (peer, channel): the token of the stream that owns the
    /// entry (a newer stream supersedes an older one) and the vector.
    sent: Mutex<HashMap<([u8; 32], u32), Owned>>,
    /// The newest version vector each peer sent of each channel, by
    /// (peer, channel), taken only when every entry of its own it counts
    /// had reached us: everything that peer did before it held those
    /// entries is here (see [`Net::confirmed`]).
    confirmed: Mutex<HashMap<([u8; 32], u32), Vv>>,
    tokens: AtomicU64,
    /// Payload bytes (entries, manifests, chunks) in and out per channel.
    chan_bytes: Mutex<HashMap<u32, (u64, u64)>>,
    /// Entries received per channel and not applied yet.
    applying: Mutex<HashMap<u32, u64>>,
    /// What each channel (by id) references, built when first needed: only
    /// a peer missing from some channel held here asks for it.
    scopes: Mutex<HashMap<[u8; 16], Scope>>,
    /// Held while a scope is brought up to date (one scan at a time).
    scanning: tokio::sync::Mutex<()>,
    prefetch: Arc<Semaphore>,
    fetch_timeout: Duration,
    advertise: Vec<String>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// The network side of a node.
pub struct Net {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    rt: Mutex<Option<tokio::runtime::Runtime>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn to_wire(vv: &Vv) -> WireVv {
    vv.iter().map(|(a, s)| (*a, *s)).collect()
}

fn from_wire(vv: WireVv) -> Vv {
    vv.into_iter().collect()
}

/// Entries of one received batch counted as waiting to apply until the
/// batch is done with (applied, skipped or failed).
struct Pending<'a> {
    map: &'a Mutex<HashMap<u32, u64>>,
    local: u32,
    n: u64,
}

impl<'a> Pending<'a> {
    fn new(map: &'a Mutex<HashMap<u32, u64>>, local: u32, n: u64) -> Pending<'a> {
        *lock(map).entry(local).or_default() += n;
        Pending { map, local, n }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(v) = lock(self.map).get_mut(&self.local) {
            *v = v.saturating_sub(self.n);
        }
    }
}

/// Whether a chunk being fetched got stored (`None` while in flight).
type Verdict = watch::Receiver<Option<bool>>;

fn short(id: &[u8; 32]) -> String {
    NodeId(*id).to_string()[..15].to_string()
}

/// Runs `fut` to its end while `conn` keeps receiving data; `None` once
/// nothing (beyond keep-alives) arrived for `idle`, or after ten times
/// `idle` in all. A slow path is not a dead one: a transfer that moves
/// keeps going, one that stalls gives up.
async fn while_progressing<T>(
    conn: &quinn::Connection,
    idle: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    let start = Instant::now();
    let mut last = conn.stats().udp_rx.bytes;
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = conn.stats().udp_rx.bytes;
                if now >= last + 8192 {
                    last = now;
                    quiet_since = Instant::now();
                }
                if quiet_since.elapsed() >= idle || start.elapsed() >= idle * 10 {
                    return None;
                }
            }
        }
    }
}

/// What a delta of an edit needs from here: the old neighbourhood's bytes,
/// the new neighbourhood's extents and which of its chunks are missing.
struct DeltaPrep {
    old_bytes: Vec<u8>,
    new_extents: Vec<crate::store::manifest::Extent>,
    missing: Vec<Hash>,
}

/// `None` when nothing is missing or the old neighbourhood is not here.
fn prepare_delta(s: &Store, old: Hash, new: Hash) -> Option<DeltaPrep> {
    let (o, n) = (s.load_manifest(&old).ok()?, s.load_manifest(&new).ok()?);
    let (p, oe, ne) = delta::changed(&o, &n);
    let missing: Vec<Hash> = n.extents()[p..ne]
        .iter()
        .filter_map(|e| e.hash)
        .filter(|h| !s.has_chunk(h))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let old_bytes = delta::region_bytes(s, &o.extents()[p..oe])?;
    Some(DeltaPrep {
        old_bytes,
        new_extents: n.extents()[p..ne].to_vec(),
        missing,
    })
}

/// Fetches the bytes an edit changed (`old` → `new`) and stores the new
/// chunks rebuilt from the old neighbourhood.
async fn run_delta(
    store: &Arc<Store>,
    conn: &quinn::Connection,
    channel: [u8; 16],
    old: Hash,
    new: Hash,
    prep: DeltaPrep,
) -> anyhow::Result<()> {
    let DeltaPrep {
        old_bytes,
        new_extents,
        ..
    } = prep;
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, &Open::Delta { channel, old, new }).await?;
    send.finish()?;
    let Some(DeltaReply::Region { pre, suf, middle }) = read_frame(&mut recv).await? else {
        anyhow::bail!("the peer has no delta");
    };
    let chunks = delta::rebuild(&old_bytes, pre, suf, &middle, &new_extents)
        .ok_or_else(|| anyhow::anyhow!("the delta does not rebuild the new chunks"))?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (h, b) in chunks {
            s.put_fetched(&h, &b)?;
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// Applies a leader-signed membership change to a channel record.
pub fn apply_membership(rec: &mut ChannelRec, op: &MemberOp) {
    match op {
        MemberOp::Add(m) => match rec.members.iter_mut().find(|x| x.id == m.id) {
            Some(x) => {
                x.role = m.role;
                if !m.addrs.is_empty() {
                    x.addrs = m.addrs.clone();
                }
                x.key = m.key;
            }
            None => {
                rec.former.retain(|(x, _)| x.id != m.id);
                rec.members.push(m.clone());
            }
        },
        MemberOp::Remove(id) => rec.members.retain(|x| &x.id != id),
        MemberOp::Retire { id, upto } => {
            if let Some(i) = rec.members.iter().position(|x| &x.id == id) {
                let m = rec.members.remove(i);
                rec.former.retain(|(x, _)| &x.id != id);
                rec.former.push((m, *upto));
            }
        }
    }
}

impl Net {
    /// Binds the QUIC endpoint at `listen` and starts accepting and dialing
    /// the channels' members and the `bootstrap` peers.
    pub fn start(
        ident: Identity,
        listen: &str,
        store: Arc<Store>,
        host: Arc<dyn Host>,
        fetch_timeout: Duration,
        advertise: Vec<String>,
        bootstrap: Vec<String>,
    ) -> anyhow::Result<Net> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("chanfs-net")
            .enable_all()
            .build()?;
        let addr: SocketAddr = listen
            .parse()
            .map_err(|e| anyhow::anyhow!("listen address {listen:?}: {e}"))?;
        let ep = {
            let _g = rt.enter();
            tls::endpoint(addr, &ident)?
        };
        // Confirmations count across restarts: a member that confirmed a
        // remove before need not be met again for its bytes to go.
        let confirmed = store
            .confirmations()?
            .into_iter()
            .map(|(local, member, vv)| ((member, local), vv))
            .collect();
        let inner = Arc::new(Inner {
            ident,
            store,
            host,
            ep,
            conns: Mutex::new(HashMap::new()),
            learned: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashSet::new()),
            bootstrap,
            boot_ids: Mutex::new(HashMap::new()),
            boot_dialing: Mutex::new(HashSet::new()),
            inflight: Mutex::new(HashMap::new()),
            sent: Mutex::new(HashMap::new()),
            confirmed: Mutex::new(confirmed),
            tokens: AtomicU64::new(1),
            chan_bytes: Mutex::new(HashMap::new()),
            applying: Mutex::new(HashMap::new()),
            scopes: Mutex::new(HashMap::new()),
            scanning: tokio::sync::Mutex::new(()),
            prefetch: Arc::new(Semaphore::new(PREFETCH_SLOTS)),
            fetch_timeout,
            advertise,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        rt.spawn(inner.clone().accept_loop());
        rt.spawn(inner.clone().dial_loop());
        Ok(Net {
            inner,
            handle: rt.handle().clone(),
            rt: Mutex::new(Some(rt)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.ep.local_addr().ok()
    }

    /// Where others reach this node (advertised, else bound).
    pub fn addresses(&self) -> Vec<String> {
        self.inner.addresses()
    }

    /// Closes every connection and the endpoint.
    pub fn shutdown(&self) {
        self.inner.ep.close(code::BYE.into(), b"bye");
        let ep = self.inner.ep.clone();
        let Some(rt) = lock(&self.rt).take() else {
            return;
        };
        rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        });
        rt.shutdown_timeout(Duration::from_secs(1));
    }

    /// Closes connections to peers that share no channel with us any more,
    /// and channel streams of members removed.
    pub fn enforce(&self) {
        self.inner.enforce();
    }

    /// Joins a channel with an invitation token; returns the stored record.
    pub fn join(&self, token: &Token, local: u32) -> anyhow::Result<ChannelRec> {
        let inner = self.inner.clone();
        let t = token.clone();
        self.handle
            .block_on(async move { inner.join(&t, local).await })
    }

    /// Per-member status of channel `rec`.
    pub fn peer_status(&self, rec: &ChannelRec) -> Vec<PeerStatus> {
        self.inner.peer_status(rec)
    }

    /// Bytes received and sent over QUIC (all connections, UDP payload).
    pub fn traffic(&self) -> (u64, u64) {
        let conns = lock(&self.inner.conns);
        let (mut i, mut o) = (
            self.inner.bytes_in.load(Ordering::Relaxed),
            self.inner.bytes_out.load(Ordering::Relaxed),
        );
        for c in conns.values() {
            let s = c.conn.stats();
            i += s.udp_rx.bytes;
            o += s.udp_tx.bytes;
        }
        (i, o)
    }

    /// Payload bytes received and sent for channel `local`.
    pub fn channel_traffic(&self, local: u32) -> (u64, u64) {
        lock(&self.inner.chan_bytes)
            .get(&local)
            .copied()
            .unwrap_or((0, 0))
    }

    /// Chunks being fetched now.
    pub fn fetching(&self) -> usize {
        lock(&self.inner.inflight).len()
    }

    /// The newest version vector `peer` sent of channel `local` (to us, or
    /// to a member that relayed it) at a time when we held every entry of
    /// its own that it counted. Once it covers an entry, no change that
    /// `peer` made without having seen that entry can still arrive (the
    /// garbage collector's test for tombstones). Recorded in the store,
    /// so it holds after a restart.
    pub fn confirmed(&self, local: u32, peer: &[u8; 32]) -> Option<Vv> {
        lock(&self.inner.confirmed).get(&(*peer, local)).cloned()
    }

    /// Forgets `hashes` (garbage a collection dropped) in what each
    /// channel's journal is known to reference: the index of what
    /// members of only some channels may be served would otherwise grow
    /// with every version ever written. A version written again later is
    /// found again by the next scan of the entries that name it.
    pub fn forget_in_scopes(&self, hashes: &[Hash]) {
        if hashes.is_empty() {
            return;
        }
        let mut scopes = lock(&self.inner.scopes);
        for s in scopes.values_mut() {
            for h in hashes {
                s.chunks.remove(h);
                s.manifests.remove(h);
            }
        }
    }

    /// Entries of channel `local` received and not applied yet.
    pub fn to_apply(&self, local: u32) -> u64 {
        lock(&self.inner.applying).get(&local).copied().unwrap_or(0)
    }

    /// Chunks of channel `local` being fetched now.
    pub fn fetching_of(&self, local: u32) -> usize {
        lock(&self.inner.inflight)
            .values()
            .filter(|(c, _)| *c == local)
            .count()
    }

    /// Dials the known members now (after a join or membership change).
    pub fn kick(&self) {
        let inner = self.inner.clone();
        self.handle.spawn(async move { inner.dial_all().await });
    }
}

impl crate::fs::Fetcher for Net {
    fn fetch(&self, chan: u32, hash: &Hash) -> std::io::Result<()> {
        if self.inner.store.has_chunk(hash) {
            return Ok(());
        }
        let inner = self.inner.clone();
        let h = *hash;
        match self.handle.block_on(inner.fetch(chan, h)) {
            true => Ok(()),
            false => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        }
    }

    fn prefetch(&self, chan: u32, hashes: &[Hash]) {
        // Claim the chunks nobody fetches yet, then ask for them in groups,
        // one stream per group.
        let mut claimed = self.inner.claim(chan, hashes);
        while !claimed.is_empty() {
            let rest = claimed.split_off(claimed.len().min(PREFETCH_GROUP));
            let group = std::mem::replace(&mut claimed, rest);
            let inner = self.inner.clone();
            let sem = self.inner.prefetch.clone();
            self.handle.spawn(async move {
                let _permit = sem.acquire_owned().await;
                inner.fetch_group(chan, group).await;
            });
        }
    }
}

impl Inner {
    fn me(&self) -> [u8; 32] {
        self.ident.id.0
    }

    /// Takes `vv` as `member`'s confirmation (see [`Net::confirmed`]) if
    /// every entry of its own it counts is here and it is newer than the
    /// one held (a member's vectors only grow).
    fn confirm(&self, local: u32, member: [u8; 32], vv: Vv) {
        let own = vv.get(&member).copied().unwrap_or(0);
        if self.store.seq_of(local, &member) < own {
            return;
        }
        let mut c = lock(&self.confirmed);
        let newer = c
            .get(&(member, local))
            .is_none_or(|old| *old != vv && crate::store::covers(&vv, old));
        if newer {
            if let Err(e) = self.store.record_confirmation(local, member, &vv) {
                tracing::warn!("recording a confirmation: {e}");
            }
            c.insert((member, local), vv);
        }
    }

    fn count(&self, local: u32, inb: usize, outb: usize) {
        let mut m = lock(&self.chan_bytes);
        let e = m.entry(local).or_default();
        e.0 += inb as u64;
        e.1 += outb as u64;
    }

    /// Where others reach this node: the advertised addresses, else the
    /// bound one (loopback when bound to every interface).
    fn addresses(&self) -> Vec<String> {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        match self.ep.local_addr() {
            Ok(a) if a.ip().is_unspecified() => vec![format!("127.0.0.1:{}", a.port())],
            Ok(a) => vec![a.to_string()],
            Err(_) => Vec::new(),
        }
    }

    fn channels(&self) -> Vec<ChannelRec> {
        self.store.channels().unwrap_or_default()
    }

    fn channel(&self, local: u32) -> Option<ChannelRec> {
        self.channels().into_iter().find(|c| c.local == local)
    }

    fn channel_by_id(&self, id: &[u8; 16]) -> Option<ChannelRec> {
        self.channels().into_iter().find(|c| &c.id == id)
    }

    /// Channel `id` if `peer` is a member of it, and whether `peer` is a
    /// member of every channel held here (then everything stored is its).
    fn member_of(&self, peer: &[u8; 32], id: &[u8; 16]) -> Option<(ChannelRec, bool)> {
        let chans = self.channels();
        let everywhere = chans.iter().all(|c| c.member(peer).is_some());
        let rec = chans
            .into_iter()
            .find(|c| &c.id == id && c.member(peer).is_some())?;
        Some((rec, everywhere))
    }

    /// Which of `hashes` channel `rec`'s journal references (in the set
    /// `pick` names: chunks or manifests). A hash the scope lacks brings it
    /// up to date first, reading only the entries after those read before.
    async fn in_scope(
        &self,
        rec: &ChannelRec,
        hashes: &[Hash],
        pick: fn(&Scope) -> &HashSet<Hash>,
    ) -> anyhow::Result<Vec<bool>> {
        let check = |s: Option<&Scope>| -> Vec<bool> {
            let s = s.map(pick);
            hashes
                .iter()
                .map(|h| s.is_some_and(|s| s.contains(h)))
                .collect()
        };
        let known = || {
            let scopes = lock(&self.scopes);
            let s = scopes.get(&rec.id);
            (check(s), s.map(|s| s.read.clone()).unwrap_or_default())
        };
        let (found, _) = known();
        if found.iter().all(|f| *f) {
            return Ok(found);
        }
        // Requests arriving during a scan find its result.
        let _scan = self.scanning.lock().await;
        let (found, read) = known();
        if found.iter().all(|f| *f) {
            return Ok(found);
        }
        let (store, local) = (self.store.clone(), rec.local);
        let more = tokio::task::spawn_blocking(move || Scope::scan(&store, local, &read)).await??;
        let mut scopes = lock(&self.scopes);
        let s = scopes.entry(rec.id).or_default();
        s.merge(more);
        Ok(check(Some(s)))
    }

    /// Channels both we and `peer` belong to.
    fn shared(&self, peer: &[u8; 32]) -> Vec<ChannelRec> {
        self.channels()
            .into_iter()
            .filter(|c| c.member(peer).is_some() && c.member(&self.me()).is_some())
            .collect()
    }

    fn enforce(&self) {
        let peers: Vec<[u8; 32]> = lock(&self.conns).keys().copied().collect();
        for p in peers {
            if self.shared(&p).is_empty() {
                if let Some(c) = lock(&self.conns).remove(&p) {
                    tracing::info!("disconnecting {}: no longer a member", short(&p));
                    c.conn.close(code::REMOVED.into(), b"not a member");
                }
            }
        }
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(inc) = self.ep.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let remote = inc.remote_address();
                match inc.await {
                    Ok(conn) => me.accepted(conn, remote).await,
                    Err(e) => tracing::info!("handshake with {remote} failed: {e}"),
                }
            });
        }
    }

    async fn accepted(self: Arc<Self>, conn: quinn::Connection, remote: SocketAddr) {
        let Some(peer) = tls::peer_id(&conn) else {
            conn.close(code::PROTOCOL.into(), b"no certificate");
            return;
        };
        if tls::alpn_of(&conn).as_deref() == Some(tls::ALPN_JOIN) {
            self.serve_join(conn, peer).await;
            return;
        }
        if self.shared(&peer.0).is_empty() {
            tracing::warn!("refused {remote} ({peer}): not a member of any channel here");
            conn.close(code::NOT_MEMBER.into(), b"not a member");
            return;
        }
        lock(&self.learned).insert(peer.0, remote);
        self.register(peer.0, conn, false);
    }

    /// Keeps one connection per peer. When both dialed at once, the one
    /// dialed by the lower id stays; otherwise the newer one replaces the
    /// old (the peer restarted: the old connection is dead but does not
    /// know it yet).
    fn register(self: &Arc<Self>, peer: [u8; 32], conn: quinn::Connection, dialed_by_me: bool) {
        let preferred = |dialed_by_me: bool| dialed_by_me == (self.me() < peer);
        {
            let mut conns = lock(&self.conns);
            if let Some(old) = conns.get(&peer) {
                let alive = old.conn.close_reason().is_none();
                let race = old.since.elapsed() < DIAL_RACE;
                if alive && race && (preferred(old.dialed_by_me) || !preferred(dialed_by_me)) {
                    conn.close(code::DUPLICATE.into(), b"duplicate");
                    return;
                }
                old.conn.close(code::DUPLICATE.into(), b"replaced");
            }
            conns.insert(
                peer,
                Conn {
                    conn: conn.clone(),
                    dialed_by_me,
                    since: Instant::now(),
                    streams: HashSet::new(),
                },
            );
        }
        self.store.set_eager_durability(true);
        tracing::info!("connected to {} at {}", short(&peer), conn.remote_address());
        let me = self.clone();
        tokio::spawn(me.clone().serve_conn(peer, conn.clone()));
        tokio::spawn(async move { me.open_streams(peer, conn).await });
    }

    fn conn_of(&self, peer: &[u8; 32]) -> Option<quinn::Connection> {
        lock(&self.conns)
            .get(peer)
            .filter(|c| c.conn.close_reason().is_none())
            .map(|c| c.conn.clone())
    }

    /// Opens a replication stream for every shared channel lacking one,
    /// now and whenever channels change, while the connection lives. Only
    /// the node with the lower id opens them: one stream per channel and
    /// pair keeps entries in order.
    async fn open_streams(self: Arc<Self>, peer: [u8; 32], conn: quinn::Connection) {
        let opener = self.me() < peer;
        loop {
            for rec in self.shared(&peer).into_iter().filter(|_| opener) {
                let fresh = match lock(&self.conns).get_mut(&peer) {
                    Some(c) if c.conn.stable_id() == conn.stable_id() => {
                        c.streams.insert(rec.local)
                    }
                    _ => return,
                };
                if fresh {
                    let me = self.clone();
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let local = rec.local;
                        if let Err(e) = me.clone().open_channel(peer, conn.clone(), rec).await {
                            tracing::info!("channel stream to {}: {e}", short(&peer));
                        }
                        if let Some(c) = lock(&me.conns).get_mut(&peer) {
                            if c.conn.stable_id() == conn.stable_id() {
                                c.streams.remove(&local);
                            }
                        }
                    });
                }
            }
            tokio::select! {
                _ = conn.closed() => break,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
        let mut conns = lock(&self.conns);
        if conns
            .get(&peer)
            .is_some_and(|c| c.conn.stable_id() == conn.stable_id())
        {
            let s = conn.stats();
            self.bytes_in.fetch_add(s.udp_rx.bytes, Ordering::Relaxed);
            self.bytes_out.fetch_add(s.udp_tx.bytes, Ordering::Relaxed);
            conns.remove(&peer);
            tracing::info!("disconnected from {}", short(&peer));
        }
        if conns.is_empty() {
            self.store.set_eager_durability(false);
        }
    }

    async fn open_channel(
        self: Arc<Self>,
        peer: [u8; 32],
        conn: quinn::Connection,
        rec: ChannelRec,
    ) -> anyhow::Result<()> {
        let (mut send, mut recv) = conn.open_bi().await?;
        let vv = self.store.vv(rec.local);
        write_frame(
            &mut send,
            &Open::Channel {
                proto: PROTO,
                channel: rec.id,
                vv: to_wire(&vv),
            },
        )
        .await?;
        let theirs = match read_frame::<_, ChanMsg>(&mut recv).await? {
            Some(ChanMsg::Hello { vv }) => from_wire(vv),
            other => anyhow::bail!("expected hello, got {other:?}"),
        };
        self.run_channel(peer, rec.local, send, recv, theirs).await
    }

    async fn serve_conn(self: Arc<Self>, peer: [u8; 32], conn: quinn::Connection) {
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(_) => return,
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.serve_stream(peer, send, recv).await {
                    tracing::info!("stream from {}: {e}", short(&peer));
                }
            });
        }
    }

    async fn serve_stream(
        self: Arc<Self>,
        peer: [u8; 32],
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> anyhow::Result<()> {
        let open = match read_frame::<_, Open>(&mut recv).await {
            Ok(Some(o)) => o,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = send.reset(code::PROTOCOL.into());
                anyhow::bail!("malformed open: {e}");
            }
        };
        match open {
            Open::Channel { proto, channel, vv } => {
                let Some(rec) = self
                    .channel_by_id(&channel)
                    .filter(|r| r.member(&peer).is_some() && proto == PROTO)
                else {
                    let _ = send.reset(code::NOT_MEMBER.into());
                    anyhow::bail!("refused a stream for a channel it is not a member of");
                };
                let fresh = lock(&self.conns)
                    .get_mut(&peer)
                    .is_some_and(|c| c.streams.insert(rec.local));
                if !fresh {
                    let _ = send.reset(code::DUPLICATE.into());
                    anyhow::bail!("a second stream for one channel");
                }
                let ours = self.store.vv(rec.local);
                let local = rec.local;
                let r = async {
                    write_frame(&mut send, &ChanMsg::Hello { vv: to_wire(&ours) }).await?;
                    self.clone()
                        .run_channel(peer, local, send, recv, from_wire(vv))
                        .await
                }
                .await;
                if let Some(c) = lock(&self.conns).get_mut(&peer) {
                    c.streams.remove(&local);
                }
                r
            }
            Open::Join { .. } => {
                let _ = send.reset(code::PROTOCOL.into());
                anyhow::bail!("join on a member connection");
            }
            Open::Chunks { channel, hashes } => {
                let Some((rec, everywhere)) = self
                    .member_of(&peer, &channel)
                    .filter(|_| hashes.len() <= MAX_CHUNKS)
                else {
                    let _ = send.reset(code::PROTOCOL.into());
                    anyhow::bail!("refused a chunk request");
                };
                let ours = match everywhere {
                    true => vec![true; hashes.len()],
                    false => self.in_scope(&rec, &hashes, |s| &s.chunks).await?,
                };
                // Packs are written past the page cache: the kernel reads
                // every chunk asked ahead of the loop, in one go.
                let asked: Vec<Hash> = hashes
                    .iter()
                    .zip(&ours)
                    .filter(|(_, o)| **o)
                    .map(|(h, _)| *h)
                    .collect();
                self.store.will_need(&asked);
                for (h, ours) in hashes.into_iter().zip(ours) {
                    // A chunk of another channel is one we do not have.
                    if !ours {
                        tracing::debug!(
                            "chunk {} asked by {} is not of channel {}",
                            data_encoding::HEXLOWER.encode(&h[..8]),
                            short(&peer),
                            rec.name
                        );
                    }
                    // Read into the frame and handed to the stream whole.
                    let found = self.store.chunk_len(&h).filter(|_| ours).and_then(|len| {
                        let frame =
                            ChunkReply::found_frame(len, |b| self.store.read_chunk(&h, 0, b));
                        frame.ok().map(|f| (len, f))
                    });
                    match found {
                        Some((len, frame)) => {
                            self.count(rec.local, 0, len);
                            send.write_chunk(frame.into()).await?;
                        }
                        None => write_frame(&mut send, &ChunkReply::Missing).await?,
                    }
                }
                send.finish()?;
                Ok(())
            }
            Open::Delta { channel, old, new } => {
                let allowed = match self.member_of(&peer, &channel) {
                    Some((_, true)) => true,
                    Some((rec, false)) => {
                        let pair = [old, new];
                        let ours = self.in_scope(&rec, &pair, |s| &s.manifests).await?;
                        let ours = ours.iter().all(|o| *o);
                        if !ours {
                            tracing::debug!(
                                "delta asked by {} is not of channel {}",
                                short(&peer),
                                rec.name
                            );
                        }
                        ours
                    }
                    None => false,
                };
                let store = self.store.clone();
                let reply = if !allowed {
                    DeltaReply::Unavailable
                } else {
                    tokio::task::spawn_blocking(move || {
                        let (Ok(o), Ok(n)) = (store.load_manifest(&old), store.load_manifest(&new))
                        else {
                            return DeltaReply::Unavailable;
                        };
                        let (p, oe, ne) = delta::changed(&o, &n);
                        let ob = delta::region_bytes(&store, &o.extents()[p..oe]);
                        let nb = delta::region_bytes(&store, &n.extents()[p..ne]);
                        match (ob, nb) {
                            (Some(ob), Some(nb)) => {
                                let (pre, suf, middle) = delta::diff(&ob, &nb);
                                DeltaReply::Region { pre, suf, middle }
                            }
                            _ => DeltaReply::Unavailable,
                        }
                    })
                    .await?
                };
                write_frame(&mut send, &reply).await?;
                send.finish()?;
                Ok(())
            }
        }
    }

    /// Both directions of one channel with one peer: send what it lacks
    /// (then every new entry at once), apply what it sends.
    async fn run_channel(
        self: Arc<Self>,
        peer: [u8; 32],
        local: u32,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        theirs: Vv,
    ) -> anyhow::Result<()> {
        // What is visible in the journal may not be durable yet; it must be
        // before another node holds it.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.sync()).await??;
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        lock(&self.sent).insert((peer, local), (token, theirs));
        let me = self.clone();
        let sender = tokio::spawn(async move {
            let r = me.send_loop(peer, local, token, &mut send).await;
            if let Err(e) = &r {
                tracing::info!("sending to {}: {e}", short(&peer));
            }
            let _ = send.finish();
        });
        let r = self.recv_loop(peer, local, token, &mut recv).await;
        sender.abort();
        let mut sent = lock(&self.sent);
        if sent.get(&(peer, local)).is_some_and(|(t, _)| *t == token) {
            sent.remove(&(peer, local));
        }
        r
    }

    async fn send_loop(
        &self,
        peer: [u8; 32],
        local: u32,
        token: u64,
        send: &mut quinn::SendStream,
    ) -> anyhow::Result<()> {
        let mut commits = self.store.subscribe();
        let mut last_vv = Instant::now();
        // Confirmations of other members sent to this peer.
        let mut relayed: HashMap<[u8; 32], Vv> = HashMap::new();
        loop {
            let Some(rec) = self.channel(local) else {
                return Ok(());
            };
            if rec.member(&peer).is_none() {
                anyhow::bail!("no longer a member");
            }
            loop {
                let b = self.missing(&rec, peer, token)?;
                if b.entries.is_empty() {
                    break;
                }
                self.count(local, 0, b.payload());
                let msg = ChanMsg::Entries {
                    entries: b.entries,
                    manifests: b.manifests,
                    chunks: b.chunks,
                };
                write_frame(send, &msg).await?;
            }
            // What we hold, every tick even while busy: the peer resends
            // what we lack from there.
            if last_vv.elapsed() >= TICK {
                let vv = self.store.vv(local);
                write_frame(send, &ChanMsg::Vv { vv: to_wire(&vv) }).await?;
                // What other members confirmed here, each when it changed.
                let confirmations: Vec<([u8; 32], Vv)> = lock(&self.confirmed)
                    .iter()
                    .filter(|((m, l), _)| *l == local && *m != peer)
                    .map(|((m, _), v)| (*m, v.clone()))
                    .collect();
                for (member, v) in confirmations {
                    if relayed.get(&member) != Some(&v) {
                        let msg = ChanMsg::Confirmed {
                            member,
                            vv: to_wire(&v),
                        };
                        write_frame(send, &msg).await?;
                        relayed.insert(member, v);
                    }
                }
                last_vv = Instant::now();
            }
            tokio::select! {
                r = commits.changed() => { r?; }
                _ = tokio::time::sleep(TICK.saturating_sub(last_vv.elapsed())) => {}
            }
        }
    }

    /// The next batch of entries `peer` lacks (the leader's first, so that
    /// members are known before their entries), with their manifests.
    fn missing(&self, rec: &ChannelRec, peer: [u8; 32], token: u64) -> anyhow::Result<Batch> {
        let ours = self.store.vv(rec.local);
        let mut sent = match lock(&self.sent).get(&(peer, rec.local)) {
            Some((t, v)) if *t == token => v.clone(),
            _ => anyhow::bail!("superseded by a newer stream"),
        };
        // Each author's next entries, merged in clock order: a change made
        // after seeing another (a file in a new directory) follows it.
        let mut queues: Vec<std::collections::VecDeque<(Entry, SignedEntry)>> = Vec::new();
        let mut truncated = Vec::new();
        for (a, n) in &ours {
            let have = sent.get(a).copied().unwrap_or(0);
            if *n <= have {
                continue;
            }
            let list = self.store.journal_from(rec.local, a, have + 1, BATCH)?;
            let q: std::collections::VecDeque<(Entry, SignedEntry)> = list
                .into_iter()
                .filter_map(|se| se.decode().ok().map(|e| (e, se)))
                .collect();
            if !q.is_empty() {
                truncated.push(q.len() >= BATCH);
                queues.push(q);
            }
        }
        let mut out = Batch::default();
        let (mut seen_m, mut seen_c, mut bytes) = (HashSet::new(), HashSet::new(), 0usize);
        while out.entries.len() < BATCH && bytes < BATCH_BYTES {
            let Some(qi) = (0..queues.len())
                .filter(|&i| !queues[i].is_empty())
                .min_by_key(|&i| queues[i].front().map(|(e, _)| (e.hlc, e.author)))
            else {
                break;
            };
            let Some((e, se)) = queues[qi].pop_front() else {
                break;
            };
            // Past the entries loaded of an author, clock order is unknown.
            let stop = queues[qi].is_empty() && truncated[qi];
            if let Op::Content {
                manifest: Some(h),
                size,
                ..
            } = &e.op
            {
                if seen_m.insert(*h) {
                    if let Some(m) = self.store.manifest_bytes(h)? {
                        bytes += m.len();
                        // Small files travel whole: no fetch round trip.
                        if *size <= INLINE_MAX {
                            if let Ok(man) = Manifest::from_bytes(&m) {
                                for c in man.chunk_hashes() {
                                    if seen_c.insert(*c) {
                                        if let Some(b) = self.store.chunk_bytes(c) {
                                            bytes += b.len();
                                            out.chunks.push(serde_bytes::ByteBuf::from(b));
                                        }
                                    }
                                }
                            }
                        }
                        out.manifests.push(serde_bytes::ByteBuf::from(m));
                    }
                }
            }
            bytes += se.entry.len() + se.sig.len();
            sent.insert(e.author, e.seq);
            out.entries.push(se);
            if stop {
                break;
            }
        }
        match lock(&self.sent).get_mut(&(peer, rec.local)) {
            Some((t, s)) if *t == token => *s = sent,
            _ => anyhow::bail!("superseded by a newer stream"),
        }
        Ok(out)
    }

    async fn recv_loop(
        self: &Arc<Self>,
        peer: [u8; 32],
        local: u32,
        token: u64,
        recv: &mut quinn::RecvStream,
    ) -> anyhow::Result<()> {
        let mut low: BTreeMap<[u8; 32], u64> = BTreeMap::new();
        loop {
            let msg = match read_frame::<_, ChanMsg>(recv).await {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = recv.stop(code::PROTOCOL.into());
                    anyhow::bail!("malformed frame from {}: {e}", short(&peer));
                }
            };
            match msg {
                ChanMsg::Hello { .. } => {}
                ChanMsg::Confirmed { member, vv } => {
                    let known = self
                        .channel(local)
                        .is_some_and(|rec| rec.member(&member).is_some());
                    if known && member != self.me() {
                        self.confirm(local, member, from_wire(vv));
                    }
                }
                ChanMsg::Vv { vv } => {
                    let vv = from_wire(vv);
                    self.confirm(local, peer, vv.clone());
                    // The peer lacks entries we thought it had (rejected or
                    // lost): resend from what it has, once it says so twice.
                    let mut sent = lock(&self.sent);
                    if let Some((_, s)) = sent.get_mut(&(peer, local)).filter(|(t, _)| *t == token)
                    {
                        for (a, have) in s.iter_mut() {
                            let theirs = vv.get(a).copied().unwrap_or(0);
                            if theirs < *have {
                                if low.get(a) == Some(&theirs) {
                                    *have = theirs;
                                }
                                low.insert(*a, theirs);
                            } else {
                                low.remove(a);
                            }
                        }
                    }
                }
                ChanMsg::Entries {
                    entries,
                    manifests,
                    chunks,
                } => {
                    let batch = Batch {
                        entries,
                        manifests,
                        chunks,
                    };
                    self.receive(peer, local, batch).await?;
                }
            }
        }
    }

    async fn receive(
        self: &Arc<Self>,
        peer: [u8; 32],
        local: u32,
        batch: Batch,
    ) -> anyhow::Result<()> {
        self.count(local, batch.payload(), 0);
        let _pending = Pending::new(&self.applying, local, batch.entries.len() as u64);
        let Batch {
            entries,
            manifests,
            chunks,
        } = batch;
        if !chunks.is_empty() {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                for c in chunks {
                    let h = *blake3::hash(&c).as_bytes();
                    store.put_fetched(&h, &c)?;
                }
                Ok(())
            })
            .await??;
        }
        let mut muts = Vec::new();
        for m in manifests {
            let m = m.into_vec();
            if Manifest::from_bytes(&m).is_err() {
                anyhow::bail!("malformed manifest from {}", short(&peer));
            }
            muts.push(Mut::Manifest(*blake3::hash(&m).as_bytes(), m));
        }
        self.store.submit(muts)?;
        let Some(mut rec) = self.channel(local) else {
            return Ok(());
        };
        let before = rec.members.clone();
        let mut ok: Vec<(Entry, SignedEntry)> = Vec::new();
        let mut bad: HashSet<[u8; 32]> = HashSet::new();
        let mut chain: HashMap<[u8; 32], (u64, Hash)> = HashMap::new();
        let mut last: HashMap<[u8; 32], usize> = HashMap::new();
        let reject = |e: &Entry, why: &str| {
            tracing::warn!(
                "rejected entry {} of {} relayed by {}: {why}",
                e.seq,
                short(&e.author),
                short(&peer)
            );
        };
        for se in entries {
            let e = match se.decode() {
                Ok(e) => e,
                Err(err) => anyhow::bail!("malformed entry from {}: {err}", short(&peer)),
            };
            if bad.contains(&e.author) {
                continue;
            }
            let (seq, head) = *chain.entry(e.author).or_insert_with(|| {
                (
                    self.store.seq_of(local, &e.author),
                    self.store.head_of(local, &e.author),
                )
            });
            if e.seq <= seq {
                continue;
            }
            if e.seq != seq + 1 {
                // A gap: the peer resends from what we have. The entries
                // after it may depend on the missing ones (the batch is in
                // clock order, so causes come first): they wait too.
                break;
            }
            let verdict = (|| {
                if e.channel != rec.id {
                    return Err("entry of another channel");
                }
                let m = rec
                    .signer(&e.author, e.seq)
                    .ok_or("author is not a member")?;
                match &e.op {
                    Op::Membership(_) if e.author != rec.leader => {
                        Err("membership change not signed by the leader")
                    }
                    Op::Membership(_) => {
                        // Membership decides what follows: check it now.
                        let key = VerifyingKey::from_bytes(&m.key).map_err(|_| "bad key")?;
                        se.verify(&key).map(|_| ()).map_err(|_| "bad signature")
                    }
                    _ if m.role == Role::Ro => Err("change by a read-only member"),
                    _ => Ok(()),
                }
            })();
            let verdict = verdict.and_then(|()| {
                if e.prev == head {
                    Ok(())
                } else {
                    Err("does not follow the author's previous entry")
                }
            });
            if let Err(why) = verdict {
                reject(&e, why);
                bad.insert(e.author);
                continue;
            }
            chain.insert(e.author, (e.seq, se.digest()));
            if let Op::Membership(op) = &e.op {
                apply_membership(&mut rec, op);
            }
            last.insert(e.author, ok.len());
            ok.push((e, se));
        }
        // Entries chain to their predecessors: the signature of each
        // author's last entry vouches for the whole run.
        let mut forged = HashSet::new();
        for (author, i) in &last {
            let valid = rec
                .signer(author, ok[*i].0.seq)
                .and_then(|m| VerifyingKey::from_bytes(&m.key).ok())
                .is_some_and(|k| ok[*i].1.verify(&k).is_ok());
            if !valid {
                reject(&ok[*i].0, "bad signature");
                forged.insert(*author);
            }
        }
        ok.retain(|(e, _)| !forged.contains(&e.author));
        if rec.members != before {
            // Keep addresses we learned for members the leader knows none of.
            self.store.put_channel(&rec)?;
            self.host.membership_changed(local);
            self.enforce();
        }
        if ok.is_empty() {
            return Ok(());
        }
        // Edited files whose old version is here: fetch just the change.
        let edits: Vec<(Hash, Hash)> = ok
            .iter()
            .filter_map(|(e, _)| match &e.op {
                Op::Content {
                    manifest: Some(new),
                    replaces: Some(old),
                    size,
                    ..
                } if *size > INLINE_MAX => Some((*old, *new)),
                _ => None,
            })
            .collect();
        // Prepared and claimed before the new version shows: a read of the
        // new chunks waits for the delta instead of fetching them whole.
        let mut deltas = Vec::new();
        if let Some(conn) = self.conn_of(&peer).filter(|_| !edits.is_empty()) {
            for (old, new) in edits {
                let s = self.store.clone();
                let Some(prep) =
                    tokio::task::spawn_blocking(move || prepare_delta(&s, old, new)).await?
                else {
                    continue;
                };
                let claims = self.claim(local, &prep.missing);
                if !claims.is_empty() {
                    deltas.push((conn.clone(), old, new, prep, claims));
                }
            }
        }
        // Under way before the new version shows, and settled whatever
        // becomes of the apply: a read of the new chunks waits for its
        // claim while the kernel page it fills stays locked, and applying
        // ends by invalidating the file's pages, which waits for that lock.
        for (conn, old, new, prep, claims) in deltas {
            let me = self.clone();
            let channel = rec.id;
            tokio::spawn(async move {
                let r = run_delta(&me.store, &conn, channel, old, new, prep).await;
                if let Err(e) = &r {
                    tracing::debug!("delta of an edit: {e}");
                }
                me.settle(claims);
            });
        }
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.apply(local, ok)).await??;
        Ok(())
    }

    /// Claims the chunks nobody fetches yet; returns the claims to settle.
    fn claim(&self, local: u32, hashes: &[Hash]) -> Vec<(Hash, watch::Sender<Option<bool>>)> {
        let mut inflight = lock(&self.inflight);
        let mut out = Vec::new();
        for h in hashes {
            if inflight.contains_key(h) || self.store.has_chunk(h) {
                continue;
            }
            let (tx, rx) = watch::channel(None);
            inflight.insert(*h, (local, rx));
            out.push((*h, tx));
        }
        out
    }

    /// Settles claims: stored chunks succeed, the rest fall back to the
    /// ordinary fetch of whoever waits for them.
    fn settle(&self, claims: impl IntoIterator<Item = (Hash, watch::Sender<Option<bool>>)>) {
        let mut inflight = lock(&self.inflight);
        for (h, tx) in claims {
            let _ = tx.send(Some(self.store.has_chunk(&h)));
            inflight.remove(&h);
        }
    }

    async fn dial_loop(self: Arc<Self>) {
        loop {
            self.dial_all().await;
            tokio::time::sleep(DIAL_EVERY).await;
        }
    }

    /// Dials the bootstrap peers not connected: a member found there is
    /// kept like any other; anyone else is let go.
    fn dial_bootstrap(self: &Arc<Self>) {
        for a in &self.bootstrap {
            let known = lock(&self.boot_ids).get(a).copied();
            if let Some(id) = known {
                if self.conn_of(&id).is_some() || self.shared(&id).is_empty() || id == self.me() {
                    continue;
                }
            }
            if !lock(&self.boot_dialing).insert(a.clone()) {
                continue;
            }
            let me = self.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(a.as_str()).await {
                    Ok(it) => it.collect(),
                    Err(e) => {
                        tracing::debug!("bootstrap peer {a}: {e}");
                        Vec::new()
                    }
                };
                for addr in addrs {
                    let conn = match tls::connect(&me.ep, &me.ident, addr, tls::ALPN, None).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!("bootstrap peer {a} at {addr}: {e}");
                            continue;
                        }
                    };
                    let Some(peer) = tls::peer_id(&conn) else {
                        continue;
                    };
                    lock(&me.boot_ids).insert(a.clone(), peer.0);
                    if peer.0 == me.me() || me.shared(&peer.0).is_empty() {
                        tracing::debug!("bootstrap peer {a} is {peer}: no channel shared");
                        conn.close(code::NOT_MEMBER.into(), b"not a member");
                        break;
                    }
                    lock(&me.learned).insert(peer.0, addr);
                    me.register(peer.0, conn, true);
                    break;
                }
                lock(&me.boot_dialing).remove(&a);
            });
        }
    }

    async fn dial_all(self: &Arc<Self>) {
        self.dial_bootstrap();
        let mut targets: HashMap<[u8; 32], Vec<SocketAddr>> = HashMap::new();
        for rec in self.channels() {
            if rec.member(&self.me()).is_none() {
                continue;
            }
            for m in &rec.members {
                if m.id == self.me() || self.conn_of(&m.id).is_some() {
                    continue;
                }
                let t = targets.entry(m.id).or_default();
                for a in &m.addrs {
                    if let Ok(a) = a.parse::<SocketAddr>() {
                        if !t.contains(&a) {
                            t.push(a);
                        }
                    }
                }
                if let Some(a) = lock(&self.learned).get(&m.id) {
                    if !t.contains(a) {
                        t.push(*a);
                    }
                }
            }
        }
        for (peer, addrs) in targets {
            if addrs.is_empty() || !lock(&self.dialing).insert(peer) {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                for a in addrs {
                    match tls::connect(&me.ep, &me.ident, a, tls::ALPN, Some(NodeId(peer))).await {
                        Ok(conn) => {
                            me.register(peer, conn, true);
                            break;
                        }
                        Err(e) => tracing::debug!("dialing {} at {a}: {e}", short(&peer)),
                    }
                }
                lock(&me.dialing).remove(&peer);
            });
        }
    }

    /// Fetches chunk `hash` of channel `local` from a member that has it,
    /// verifying it; false when nobody had it before the deadline.
    async fn fetch(self: Arc<Self>, local: u32, hash: Hash) -> bool {
        if self.store.has_chunk(&hash) {
            return true;
        }
        let (tx, waiter) = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&hash) {
                Some((_, rx)) => (None, rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    inflight.insert(hash, (local, rx.clone()));
                    (Some(tx), rx)
                }
            }
        };
        let Some(tx) = tx else {
            let mut w = waiter;
            let done = match w.wait_for(|v| v.is_some()).await {
                Ok(v) => v.unwrap_or(false),
                Err(_) => self.store.has_chunk(&hash),
            };
            // A background fetch that failed is no verdict: try ourselves.
            return done || self.fetch_now(local, hash).await;
        };
        let ok = self.fetch_now(local, hash).await;
        let _ = tx.send(Some(ok));
        lock(&self.inflight).remove(&hash);
        ok
    }

    /// Fetches claimed chunks in one request to the nearest member; each
    /// claim is settled (true: stored) as its chunk arrives.
    async fn fetch_group(&self, local: u32, group: Vec<(Hash, watch::Sender<Option<bool>>)>) {
        let rec = self.channel(local);
        let conn = rec.as_ref().and_then(|rec| {
            rec.members
                .iter()
                .filter_map(|m| self.conn_of(&m.id))
                .min_by_key(|c| c.rtt())
        });
        let mut pending = group.into_iter();
        if let (Some(rec), Some(conn)) = (rec, conn) {
            let hashes: Vec<Hash> = pending.as_slice().iter().map(|(h, _)| *h).collect();
            let r = async {
                let (mut send, mut recv) = conn.open_bi().await?;
                write_frame(
                    &mut send,
                    &Open::Chunks {
                        channel: rec.id,
                        hashes,
                    },
                )
                .await?;
                send.finish()?;
                for (h, tx) in pending.by_ref() {
                    let body = read_frame_bytes(&mut recv).await?;
                    let reply = body.as_deref().map(decode::<ChunkReplyRef>).transpose()?;
                    if let Some(ChunkReplyRef::Found(b)) = reply {
                        if *blake3::hash(b).as_bytes() == h {
                            self.count(local, b.len(), 0);
                            // A write into the page cache: brief enough to
                            // stay on this task (no thread hand-off per chunk).
                            if let Err(e) = self.store.put_fetched(&h, b) {
                                tracing::error!("storing a fetched chunk: {e}");
                            }
                        }
                    }
                    // Stored or not: whoever waits for it knows at once.
                    self.settle([(h, tx)]);
                }
                anyhow::Ok(())
            };
            let conn2 = conn.clone();
            if let Some(Err(e)) = while_progressing(&conn2, self.fetch_timeout, r).await {
                tracing::debug!("chunk group request: {e}");
            }
        }
        self.settle(pending);
    }

    async fn fetch_now(&self, local: u32, hash: Hash) -> bool {
        let deadline = Instant::now() + self.fetch_timeout;
        let Some(rec) = self.channel(local) else {
            return false;
        };
        loop {
            let mut peers: Vec<(Duration, quinn::Connection, [u8; 32])> = rec
                .members
                .iter()
                .filter_map(|m| self.conn_of(&m.id).map(|c| (c.rtt(), c, m.id)))
                .collect();
            peers.sort_by_key(|p| p.0);
            for (_, conn, id) in peers {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let asked = while_progressing(&conn, left, self.ask_chunk(&conn, rec.id, hash));
                match asked.await.ok_or(()) {
                    Ok(Ok(Some(bytes))) => {
                        self.count(local, bytes.len(), 0);
                        if *blake3::hash(&bytes).as_bytes() != hash {
                            tracing::warn!("chunk from {} failed verification", short(&id));
                            continue;
                        }
                        let store = self.store.clone();
                        let r =
                            tokio::task::spawn_blocking(move || store.put_fetched(&hash, &bytes))
                                .await;
                        match r {
                            Ok(Ok(())) => return true,
                            Ok(Err(e)) => {
                                tracing::error!("storing a fetched chunk: {e}");
                                return false;
                            }
                            Err(_) => return false,
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!("chunk request to {}: {e}", short(&id)),
                    Err(_) => break,
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "no reachable member had chunk {}",
                    data_encoding::HEXLOWER.encode(&hash[..8])
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ask_chunk(
        &self,
        conn: &quinn::Connection,
        channel: [u8; 16],
        hash: Hash,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let (mut send, mut recv) = conn.open_bi().await?;
        let hashes = vec![hash];
        write_frame(&mut send, &Open::Chunks { channel, hashes }).await?;
        send.finish()?;
        match read_frame::<_, ChunkReply>(&mut recv).await? {
            Some(ChunkReply::Found(b)) => Ok(Some(b)),
            Some(ChunkReply::Missing) | None => Ok(None),
        }
    }

    async fn serve_join(self: Arc<Self>, conn: quinn::Connection, peer: NodeId) {
        let r = async {
            let (mut send, mut recv) = conn.accept_bi().await?;
            let Some(Open::Join {
                proto,
                channel,
                secret,
                key,
                addrs,
            }) = read_frame::<_, Open>(&mut recv).await?
            else {
                anyhow::bail!("expected a join");
            };
            let reply = (|| {
                if proto != PROTO {
                    return Err("protocol version differs".to_string());
                }
                let mut rec = self
                    .channel_by_id(&channel)
                    .filter(|r| r.leader == self.me())
                    .ok_or("no such channel led here")?;
                let pos = rec
                    .invites
                    .iter()
                    .position(|(s, _)| *s == secret)
                    .ok_or("invitation unknown or already used")?;
                if node_id_of_key(&key) != peer.0 {
                    return Err("key does not match the certificate".to_string());
                }
                let role = rec.invites.remove(pos).1;
                self.store.put_channel(&rec).map_err(|e| e.to_string())?;
                let addrs = if addrs.is_empty() {
                    vec![conn.remote_address().to_string()]
                } else {
                    addrs
                };
                let member = Member {
                    id: peer.0,
                    key,
                    role,
                    addrs,
                };
                let rec = self
                    .host
                    .admit(rec.local, member)
                    .map_err(|e| e.to_string())?;
                Ok(JoinReply::Welcome {
                    name: rec.name,
                    leader: rec.leader,
                    members: rec.members,
                })
            })();
            let reply = reply.unwrap_or_else(JoinReply::Refused);
            if let JoinReply::Refused(why) = &reply {
                tracing::warn!("join by {peer} refused: {why}");
            } else {
                tracing::info!("{peer} joined");
            }
            write_frame(&mut send, &reply).await?;
            send.finish()?;
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            tracing::info!("join from {peer}: {e}");
        }
        self.kick_soon();
    }

    fn kick_soon(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.dial_all().await });
    }

    async fn join(&self, t: &Token, local: u32) -> anyhow::Result<ChannelRec> {
        let mut last = anyhow::anyhow!("the invitation names no address");
        for a in &t.addrs {
            let addr: SocketAddr = match a.parse() {
                Ok(a) => a,
                Err(e) => {
                    last = anyhow::anyhow!("address {a:?}: {e}");
                    continue;
                }
            };
            let conn = match tls::connect(
                &self.ep,
                &self.ident,
                addr,
                tls::ALPN_JOIN,
                Some(NodeId(t.leader)),
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    last = anyhow::anyhow!("cannot reach the leader at {addr}: {e}");
                    continue;
                }
            };
            let (mut send, mut recv) = conn.open_bi().await?;
            let mine = self.addresses();
            write_frame(
                &mut send,
                &Open::Join {
                    proto: PROTO,
                    channel: t.channel,
                    secret: t.secret,
                    key: self.ident.key.verifying_key().to_bytes(),
                    addrs: mine,
                },
            )
            .await?;
            send.finish()?;
            let reply = read_frame::<_, JoinReply>(&mut recv).await?;
            conn.close(0u32.into(), b"joined");
            return match reply {
                Some(JoinReply::Welcome {
                    name: _,
                    leader,
                    mut members,
                }) => {
                    if leader != t.leader {
                        anyhow::bail!("the leader answered for another channel");
                    }
                    for m in members.iter_mut() {
                        if m.id == leader && m.addrs.is_empty() {
                            m.addrs = t.addrs.clone();
                        }
                    }
                    let rec = ChannelRec {
                        local,
                        id: t.channel,
                        name: t.name.clone(),
                        leader,
                        members,
                        invites: Vec::new(),
                        former: Vec::new(),
                    };
                    self.store.put_channel(&rec)?;
                    Ok(rec)
                }
                Some(JoinReply::Refused(why)) => anyhow::bail!("the leader refused: {why}"),
                None => anyhow::bail!("the leader closed the connection"),
            };
        }
        Err(last)
    }

    fn peer_status(&self, rec: &ChannelRec) -> Vec<PeerStatus> {
        let ours = self.store.vv(rec.local);
        rec.members
            .iter()
            .filter(|m| m.id != self.me())
            .map(|m| {
                let conn = self.conn_of(&m.id);
                let sent = lock(&self.sent)
                    .get(&(m.id, rec.local))
                    .map(|(_, v)| v.clone());
                let to_send = sent.map_or(0, |s| {
                    ours.iter()
                        .map(|(a, n)| n.saturating_sub(s.get(a).copied().unwrap_or(0)))
                        .sum()
                });
                PeerStatus {
                    id: NodeId(m.id).to_string(),
                    role: m.role.to_string(),
                    connected: conn.is_some(),
                    rtt_ms: conn.as_ref().map(|c| c.rtt().as_secs_f64() * 1000.0),
                    to_send,
                    addr: conn
                        .map(|c| c.remote_address().to_string())
                        .or_else(|| m.addrs.first().cloned()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FileId;
    use crate::store::manifest::Extent;
    use ed25519_dalek::SigningKey;

    /// A content entry of `chan` naming a new manifest of chunks `chunks`
    /// (submitted as this node's, or as `remote`'s when given); returns
    /// the manifest's hash.
    fn content(
        s: &Store,
        chan: &ChannelRec,
        chunks: &[u8],
        remote: Option<(&SigningKey, u64)>,
    ) -> Hash {
        let m = Manifest::from_extents(
            chunks
                .iter()
                .map(|c| Extent {
                    len: 100,
                    hash: Some([*c; 32]),
                })
                .collect(),
        );
        let h = m.hash();
        let op = Op::Content {
            id: FileId::new([1; 8], u64::from(chunks[0])),
            manifest: Some(h),
            size: m.len(),
            replaces: None,
            mtime: 0,
        };
        let entry = match remote {
            None => Mut::Journal(chan.local, 1_000 + u64::from(chunks[0]), op),
            Some((key, seq)) => {
                let author = key.verifying_key().to_bytes();
                let e = Entry {
                    version: 1,
                    channel: chan.id,
                    author,
                    seq,
                    hlc: 1,
                    op,
                    prev: s.head_of(chan.local, &author),
                };
                let se = SignedEntry::sign(&e, key).expect("sign");
                Mut::Remote(chan.local, author, seq, se)
            }
        };
        s.submit(vec![Mut::Manifest(h, m.to_bytes()), entry])
            .expect("submit");
        h
    }

    /// A channel's scope holds the manifests and chunks its journal names
    /// (every author), none of another channel's, and a later scan reads
    /// only the entries after the ones read before.
    #[test]
    fn scope_holds_what_the_channel_references() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), SigningKey::from_bytes(&[9; 32]), [3; 32]).expect("open");
        let work = s.create_channel("work").expect("channel");
        let private = s.create_channel("private").expect("channel");
        let other = SigningKey::from_bytes(&[5; 32]);
        let m1 = content(&s, &work, &[1, 2], None);
        let m2 = content(&s, &work, &[3], Some((&other, 1)));
        let mp = content(&s, &private, &[2, 7], None);
        s.sync().expect("sync");

        let mut scope = Scope::scan(&s, work.local, &Vv::new()).expect("scan");
        assert!(scope.manifests.contains(&m1) && scope.manifests.contains(&m2));
        assert!(!scope.manifests.contains(&mp));
        for c in [1, 2, 3] {
            assert!(scope.chunks.contains(&[c; 32]), "chunk {c}");
        }
        // Chunk 2 is shared (deduplicated); chunk 7 is the private one's only.
        assert!(!scope.chunks.contains(&[7; 32]));
        assert_eq!(scope.read.values().sum::<u64>(), 2);

        // Nothing new: nothing read.
        let none = Scope::scan(&s, work.local, &scope.read).expect("scan");
        assert!(none.manifests.is_empty() && none.chunks.is_empty());

        // A new version in work brings its chunks in, and only it is read.
        let m3 = content(&s, &work, &[7, 8], Some((&other, 2)));
        s.sync().expect("sync");
        let more = Scope::scan(&s, work.local, &scope.read).expect("scan");
        assert_eq!(more.manifests, HashSet::from([m3]));
        scope.merge(more);
        assert!(scope.chunks.contains(&[7; 32]) && scope.chunks.contains(&[1; 32]));
        assert!(scope.manifests.contains(&m1) && scope.manifests.contains(&m3));
        assert_eq!(scope.read.values().sum::<u64>(), 3);

        let private = Scope::scan(&s, private.local, &Vv::new()).expect("scan");
        assert_eq!(private.manifests, HashSet::from([mp]));
        assert!(!private.chunks.contains(&[1; 32]));
        s.close().expect("close");
    }
}
