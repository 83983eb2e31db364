//! The node: one process per home that owns the store and every mount, and
//! answers the CLI on the control socket. It exits when its last mount goes
//! (or when nothing was mounted within a short while after it started).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use fuser::{MountOption, SessionACL};

use crate::control::{self, ChannelStatus, MemberStatus, MountStatus, Reply, Request, Status};
use crate::fs::{ChanFs, Fetcher, FuseFs};
use crate::home::Home;
use crate::identity::{Identity, NodeId};
use crate::journal::{Entry, Hlc, Member, MemberOp, Op, Role, SignedEntry};
use crate::net::proto::Token;
use crate::net::repl::apply_membership;
use crate::net::Net;
use crate::store::{ChannelRec, Store, StoreError};

/// Reply to a mount that raced with the node's exit.
pub const STOPPING: &str = "the node is stopping";

/// How long a node started without a mount waits for one.
const IDLE_EXIT: Duration = Duration::from_secs(20);

struct MountEntry {
    channel: String,
    fs: Arc<ChanFs>,
}

/// The running node.
pub struct Node {
    home: Home,
    ident: Identity,
    chans: Mutex<HashMap<u32, Arc<ChanFs>>>,
    net: OnceLock<Arc<Net>>,
    /// Why the network did not start, for the commands that need it.
    net_error: OnceLock<String>,
    store: Arc<Store>,
    hlc: Arc<Hlc>,
    node_id: String,
    mounts: Mutex<HashMap<PathBuf, MountEntry>>,
    changed: Condvar,
    had_mount: Mutex<bool>,
    /// Started by `chanfs serve`: stays up without mounts until a signal.
    serving: Mutex<bool>,
    stopping: Mutex<bool>,
    clients: std::sync::atomic::AtomicUsize,
    listen_actual: Mutex<String>,
    /// The garbage collector (one run at a time).
    gc: Mutex<crate::gc::Collector>,
    /// The quota on fetched content (`cache_max`), for `status` (which
    /// must not wait for a collection under way).
    cache_max: Option<u64>,
}

impl crate::net::Host for Node {
    fn apply(&self, local: u32, entries: Vec<(Entry, SignedEntry)>) -> anyhow::Result<usize> {
        Ok(self.channel_fs(local)?.apply_remote(entries)?)
    }

    fn admit(&self, local: u32, member: Member) -> anyhow::Result<ChannelRec> {
        let rec = self
            .store
            .channels()?
            .into_iter()
            .find(|c| c.local == local)
            .ok_or_else(|| anyhow::anyhow!("unknown channel"))?;
        self.change_membership(rec, MemberOp::Add(member))
            .map_err(|e| anyhow::anyhow!(e))
    }

    fn membership_changed(&self, local: u32) {
        if let Some(fs) = lock(&self.chans).get(&local) {
            fs.set_readonly(self.role_of(local) == Some(Role::Ro));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds the control socket, refusing when another node answers on it.
fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if control::running(socket) {
        anyhow::bail!("a node is already running for this home");
    }
    let _ = std::fs::remove_file(socket);
    UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// Unmounts `dir` (umount(2) as root, else fusermount3).
pub fn unmount_dir(dir: &Path) -> Result<(), String> {
    match nix::mount::umount(dir) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(format!(
            "{} is busy: close the files and shells using it",
            dir.display()
        )),
        Err(nix::errno::Errno::EPERM) => {
            let out = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(dir)
                .output()
                .map_err(|e| format!("running fusermount3: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        }
        Err(e) => Err(format!("unmounting {}: {e}", dir.display())),
    }
}

impl Node {
    /// Mounts `channel` at `dir`; returns once the mount is usable.
    pub fn mount(
        self: &Arc<Self>,
        channel: &str,
        dir: &Path,
        allow_other: bool,
    ) -> Result<(), String> {
        let mut mounts = lock(&self.mounts);
        if *lock(&self.stopping) {
            return Err(STOPPING.to_string());
        }
        if mounts.contains_key(dir) {
            return Err(format!("{} is already mounted", dir.display()));
        }
        if let Some((d, _)) = mounts.iter().find(|(_, m)| m.channel == channel) {
            return Err(format!(
                "channel {channel:?} is already mounted at {}",
                d.display()
            ));
        }
        let rec = self.store.channel(channel).map_err(|e| match e {
            StoreError::UnknownChannel(_) => {
                format!(
                    "unknown channel {channel:?}: create it with `chanfs channel create {channel}`"
                )
            }
            e => e.to_string(),
        })?;
        let fs = self.channel_fs(rec.local).map_err(|e| e.to_string())?;
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::FSName(format!("chanfs:{channel}")),
            MountOption::Subtype("chanfs".into()),
            MountOption::DefaultPermissions,
        ];
        cfg.acl = if allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        cfg.n_threads = Some(4);
        cfg.clone_fd = true;
        let session = fuser::Session::new(FuseFs(fs.clone()), dir, &cfg)
            .map_err(|e| format!("mounting at {}: {e}", dir.display()))?;
        fs.set_notifier(Some(session.notifier()));
        let node = self.clone();
        let d = dir.to_path_buf();
        let f2 = fs.clone();
        std::thread::Builder::new()
            .name("chanfs-session".into())
            .spawn(move || {
                if let Err(e) = session.run() {
                    tracing::error!("session at {} ended: {e}", d.display());
                }
                f2.flush_all();
                f2.set_notifier(None);
                if let Err(e) = node.store.sync() {
                    tracing::error!("sync after unmount: {e}");
                }
                lock(&node.mounts).remove(&d);
                node.changed.notify_all();
                tracing::info!("unmounted {}", d.display());
            })
            .map_err(|e| e.to_string())?;
        mounts.insert(
            dir.to_path_buf(),
            MountEntry {
                channel: channel.to_string(),
                fs,
            },
        );
        *lock(&self.had_mount) = true;
        tracing::info!("mounted channel {channel} at {}", dir.display());
        Ok(())
    }

    /// Flushes and unmounts `dir`, waiting until the session ended.
    pub fn unmount(&self, dir: &Path) -> Result<(), String> {
        let fs = match lock(&self.mounts).get(dir) {
            Some(m) => m.fs.clone(),
            None => return Err(format!("{} is not mounted by this node", dir.display())),
        };
        fs.flush_all();
        self.store.sync().map_err(|e| e.to_string())?;
        unmount_dir(dir)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut mounts = lock(&self.mounts);
        while mounts.contains_key(dir) && Instant::now() < deadline {
            mounts = self
                .changed
                .wait_timeout(mounts, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        Ok(())
    }

    /// The live state of channel `local`, loaded when first needed.
    pub fn channel_fs(&self, local: u32) -> Result<Arc<ChanFs>, StoreError> {
        let mut chans = lock(&self.chans);
        if let Some(fs) = chans.get(&local) {
            return Ok(fs.clone());
        }
        let fetcher = self.net.get().map(|n| n.clone() as Arc<dyn Fetcher>);
        let fs = Arc::new(ChanFs::open(
            self.store.clone(),
            local,
            self.hlc.clone(),
            fetcher,
        )?);
        fs.set_readonly(self.role_of(local) == Some(Role::Ro));
        chans.insert(local, fs.clone());
        Ok(fs)
    }

    fn role_of(&self, local: u32) -> Option<Role> {
        self.store
            .channels()
            .ok()?
            .into_iter()
            .find(|c| c.local == local)?
            .member(&self.ident.id.0)
            .map(|m| m.role)
    }

    fn led_channel(&self, name: &str) -> Result<ChannelRec, String> {
        let rec = self.store.channel(name).map_err(|e| e.to_string())?;
        if rec.leader != self.ident.id.0 {
            return Err(format!(
                "only the leader of channel {name:?} ({}) can change its members",
                NodeId(rec.leader)
            ));
        }
        Ok(rec)
    }

    /// Records a membership change as a leader-signed entry and applies it.
    fn change_membership(&self, mut rec: ChannelRec, op: MemberOp) -> Result<ChannelRec, String> {
        apply_membership(&mut rec, &op);
        self.store.put_channel(&rec).map_err(|e| e.to_string())?;
        let fs = self.channel_fs(rec.local).map_err(|e| e.to_string())?;
        fs.record(Op::Membership(op))
            .map_err(|e| format!("errno {e}"))?;
        if let Some(net) = self.net.get() {
            net.enforce();
            net.kick();
        }
        Ok(rec)
    }

    /// The network, or why it is not running.
    fn running_net(&self) -> Result<&Arc<Net>, String> {
        self.net.get().ok_or_else(|| {
            let why = self
                .net_error
                .get()
                .map_or("not started yet", |s| s.as_str());
            format!("the network is not running ({why})")
        })
    }

    fn invite(&self, rec: &mut ChannelRec, role: Role) -> Result<String, String> {
        let secret: [u8; 16] = rand::random();
        rec.invites.push((secret, role));
        self.store.put_channel(rec).map_err(|e| e.to_string())?;
        let addrs = self.running_net()?.addresses();
        Ok(Token {
            channel: rec.id,
            name: rec.name.clone(),
            leader: rec.leader,
            addrs,
            secret,
            role,
        }
        .encode())
    }

    fn channel_status(&self, rec: &ChannelRec) -> ChannelStatus {
        let peers = self
            .net
            .get()
            .map(|n| n.peer_status(rec))
            .unwrap_or_default();
        let mut members: Vec<MemberStatus> = rec
            .members
            .iter()
            .map(|m| {
                let id = NodeId(m.id).to_string();
                let p = peers.iter().find(|p| p.id == id);
                MemberStatus {
                    id,
                    role: m.role.to_string(),
                    leader: m.id == rec.leader,
                    me: m.id == self.ident.id.0,
                    connected: p.is_some_and(|p| p.connected),
                    rtt_ms: p.and_then(|p| p.rtt_ms),
                    addr: p
                        .and_then(|p| p.addr.clone())
                        .or_else(|| m.addrs.first().cloned()),
                    to_send: p.map_or(0, |p| p.to_send),
                }
            })
            .collect();
        members.sort_by_key(|m| !m.leader);
        let (bytes_in, bytes_out) = self
            .net
            .get()
            .map_or((0, 0), |n| n.channel_traffic(rec.local));
        ChannelStatus {
            name: rec.name.clone(),
            id: data_encoding::HEXLOWER.encode(&rec.id),
            members,
            to_apply: self.net.get().map_or(0, |n| n.to_apply(rec.local)),
            fetching: self
                .net
                .get()
                .map_or(0, |n| n.fetching_of(rec.local) as u64),
            bytes_in,
            bytes_out,
        }
    }

    fn channel_request(&self, req: Request) -> Result<Reply, String> {
        match req {
            Request::AddMember {
                name,
                id,
                role,
                addr,
            } => {
                let mut rec = self.led_channel(&name)?;
                let node: NodeId = id.parse()?;
                let role: Role = role.parse()?;
                let key = rec.member(&node.0).map(|m| m.key).unwrap_or([0; 32]);
                let member = Member {
                    id: node.0,
                    key,
                    role,
                    addrs: addr.into_iter().collect(),
                };
                rec = self.change_membership(rec, MemberOp::Add(member))?;
                Ok(Reply::Text(self.invite(&mut rec, role)?))
            }
            Request::RemoveMember { name, id } => {
                let rec = self.led_channel(&name)?;
                let node: NodeId = id.parse()?;
                if node.0 == rec.leader {
                    return Err("the leader cannot remove itself".into());
                }
                if rec.member(&node.0).is_none() {
                    return Err(format!("{node} is not a member of {name:?}"));
                }
                // What it signed before (the entries held here) stays.
                let upto = self.store.seq_of(rec.local, &node.0);
                self.change_membership(rec, MemberOp::Retire { id: node.0, upto })?;
                Ok(Reply::Ok)
            }
            Request::Invite { name, role } => {
                let mut rec = self.led_channel(&name)?;
                let role: Role = role.parse()?;
                Ok(Reply::Text(self.invite(&mut rec, role)?))
            }
            Request::Join { token } => {
                let t = Token::decode(&token)?;
                if let Some(c) = self
                    .store
                    .channels()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .find(|c| c.id == t.channel || c.name == t.name)
                {
                    if c.id == t.channel {
                        return Err(format!("already a member of channel {:?}", c.name));
                    }
                    return Err(format!(
                        "a different channel is already called {:?} here",
                        c.name
                    ));
                }
                let net = self.running_net()?;
                let local = self.store.next_local().map_err(|e| e.to_string())?;
                let rec = net.join(&t, local).map_err(|e| e.to_string())?;
                net.kick();
                Ok(Reply::Text(rec.name))
            }
            Request::Show { name } => {
                let rec = self.store.channel(&name).map_err(|e| e.to_string())?;
                Ok(Reply::Channel(self.channel_status(&rec)))
            }
            _ => Err("not a channel request".into()),
        }
    }

    fn status(&self) -> Status {
        let mounts: Vec<MountStatus> = lock(&self.mounts)
            .iter()
            .map(|(d, m)| {
                let (files, bytes) = m.fs.totals();
                MountStatus {
                    channel: m.channel.clone(),
                    dir: d.clone(),
                    files,
                    logical_bytes: bytes,
                }
            })
            .collect();
        let s = self.store.stats();
        let (bytes_in, bytes_out) = self.net.get().map_or((0, 0), |n| n.traffic());
        let logical: u64 = mounts.iter().map(|m| m.logical_bytes).sum();
        Status {
            pid: std::process::id(),
            node_id: self.node_id.clone(),
            listen: lock(&self.listen_actual).clone(),
            logical_bytes: logical,
            stored_bytes: s.stored_bytes,
            pack_bytes: s.pack_bytes,
            fetched_bytes: s.fetched_bytes,
            cache_max: self.cache_max,
            dedup_ratio: if s.stored_bytes == 0 {
                1.0
            } else {
                logical as f64 / s.stored_bytes as f64
            },
            chunks: s.chunks,
            journal_entries: s.journal_entries,
            rss_bytes: rss_bytes(),
            mounts,
            channels: self
                .store
                .channels()
                .unwrap_or_default()
                .iter()
                .map(|c| self.channel_status(c))
                .collect(),
            fetching: self.net.get().map_or(0, |n| n.fetching() as u64),
            bytes_in,
            bytes_out,
        }
    }

    fn handle(self: &Arc<Self>, req: Request) -> Reply {
        let r = match req {
            Request::Mount {
                channel,
                dir,
                allow_other,
            } => self.mount(&channel, &dir, allow_other).map(|()| Reply::Ok),
            Request::Unmount { dir } => self.unmount(&dir).map(|()| Reply::Ok),
            Request::Status => Ok(Reply::Status(self.status())),
            Request::Gc => self.collect().map(|r| Reply::Text(r.to_string())),
            Request::ChannelCreate { name } => self
                .store
                .create_channel(&name)
                .map(|_| Reply::Ok)
                .map_err(|e| e.to_string()),
            Request::ChannelList => self
                .store
                .channels()
                .map(|c| Reply::Channels(c.into_iter().map(|c| c.name).collect()))
                .map_err(|e| e.to_string()),
            other => self.channel_request(other),
        };
        r.unwrap_or_else(Reply::Err)
    }

    fn serve(self: &Arc<Self>, s: UnixStream) -> anyhow::Result<()> {
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        if line.is_empty() {
            // A liveness probe (`control::running`): connected and left.
            return Ok(());
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => self.handle(req),
            Err(e) => Reply::Err(format!("malformed request: {e}")),
        };
        let mut out = serde_json::to_vec(&reply)?;
        out.push(b'\n');
        (&s).write_all(&out)?;
        Ok(())
    }

    /// One garbage collection over every channel of the store.
    fn collect(&self) -> Result<crate::gc::Report, String> {
        let mut gc = lock(&self.gc);
        let mut chans = Vec::new();
        for rec in self.store.channels().map_err(|e| e.to_string())? {
            let fs = self.channel_fs(rec.local).map_err(|e| e.to_string())?;
            chans.push(crate::gc::Channel { rec, fs });
        }
        let net = self.net.get();
        let confirmed = |local: u32, peer: &[u8; 32]| net.and_then(|n| n.confirmed(local, peer));
        let report = gc
            .run(&self.store, &self.ident.id.0, &chans, confirmed)
            .map_err(|e| format!("garbage collection: {e}"))?
            .ok_or("garbage collection put off: files stayed busy; try again")?;
        let swept = self.store.take_swept();
        if let Some(net) = net {
            net.forget_in_scopes(&swept);
        }
        tracing::info!("garbage collection: {report}");
        Ok(report)
    }

    fn unmount_all(&self) {
        let dirs: Vec<PathBuf> = lock(&self.mounts).keys().cloned().collect();
        for d in dirs {
            if let Err(e) = self.unmount(&d) {
                tracing::error!("{e}");
            }
        }
    }
}

/// The collector's thread: a run `every` (if set) while something was
/// committed since the last; while writes are refused for space, one as
/// soon as a change the last run may have found too young (within the
/// collector's grace) can be taken; while fetched content is over
/// `cache_max`, one 2 s after it grew and one a minute. Ends with the node.
fn collect_while_running(
    node: &std::sync::Weak<Node>,
    mut commits: tokio::sync::watch::Receiver<u64>,
    every: Option<Duration>,
    cache_max: Option<u64>,
) {
    let soon = 2 * crate::store::gc::GRACE + Duration::from_secs(1);
    let mut last = Instant::now();
    let mut changed: Option<Instant> = None;
    // Fetched bytes after the last run, and the last tick they were above
    // that figure.
    let mut fetched_after = 0;
    let mut grew: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(node) = node.upgrade() else {
            return;
        };
        if *lock(&node.stopping) {
            return;
        }
        if commits.has_changed().unwrap_or(false) {
            commits.mark_unchanged();
            changed = Some(Instant::now());
        }
        let since_last = changed.is_some_and(|c| c > last);
        let maybe_too_young = changed.is_some_and(|c| c + soon > last);
        let fetched = node.store.fetched_bytes();
        let over = cache_max.is_some_and(|m| fetched > m);
        if fetched > fetched_after {
            grew = Some(Instant::now());
        }
        // Chunks fetched within the grace before the last run stayed.
        let fetched_too_young = grew.is_some_and(|g| g + soon > last);
        let due = every.is_some_and(|e| since_last && last.elapsed() >= e)
            || (maybe_too_young && node.store.short_of_space() && last.elapsed() >= soon)
            || (over && fetched > fetched_after && last.elapsed() >= Duration::from_secs(2))
            || (over && fetched_too_young && last.elapsed() >= soon)
            || (over && last.elapsed() >= Duration::from_secs(60));
        if due {
            last = Instant::now();
            if let Err(e) = node.collect() {
                tracing::warn!("{e}");
            }
            fetched_after = node.store.fetched_bytes();
        }
    }
}

/// Runs the node until its last mount goes. With `first`, mounts it before
/// serving (foreground mode) and fails if that mount fails.
/// With `serve`, the node stays up without mounts until a signal.
pub fn run(home: &Home, first: Option<(String, PathBuf, bool)>, serve: bool) -> anyhow::Result<()> {
    // Signals are taken by one thread with sigwait; block them everywhere
    // before any other thread starts.
    let mut sigs = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGHUP,
    ] {
        sigs.add(s);
    }
    sigs.thread_block()?;
    let listener = bind(&home.socket())?;
    let ident = crate::identity::load(home.identity())?;
    let cfg = home.config()?;
    // A node that is just stopping may still hold the database for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(&home.store(), ident.key.clone(), ident.id.0) {
            Ok(s) => break Arc::new(s),
            Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let cache_max = cfg.cache_max.map(|b| b.as_u64());
    let node = Arc::new(Node {
        home: home.clone(),
        ident: ident.clone(),
        chans: Mutex::new(HashMap::new()),
        net: OnceLock::new(),
        net_error: OnceLock::new(),
        store: store.clone(),
        hlc: Arc::new(Hlc::default()),
        node_id: ident.id.to_string(),
        mounts: Mutex::new(HashMap::new()),
        changed: Condvar::new(),
        had_mount: Mutex::new(false),
        serving: Mutex::new(serve),
        stopping: Mutex::new(false),
        clients: std::sync::atomic::AtomicUsize::new(0),
        listen_actual: Mutex::new(cfg.listen.clone()),
        gc: Mutex::new(crate::gc::Collector::new(cache_max)),
        cache_max,
    });
    let fetch_timeout = Duration::from_secs_f64(cfg.fetch_timeout.unwrap_or(10.0).max(0.1));
    match Net::start(
        ident.clone(),
        &cfg.listen,
        store.clone(),
        node.clone(),
        fetch_timeout,
        cfg.advertise.clone(),
        cfg.bootstrap.clone(),
    ) {
        Ok(net) => {
            if let Some(a) = net.local_addr() {
                tracing::info!("listening for peers on {a}");
                *lock(&node.listen_actual) = a.to_string();
            }
            let _ = node.net.set(Arc::new(net));
        }
        Err(e) => {
            let why = format!("listen {}: {e:#}", cfg.listen);
            tracing::error!("network not started ({why})");
            let _ = node.net_error.set(why);
        }
    }
    if let Some((channel, dir, allow_other)) = first {
        if let Err(e) = node.mount(&channel, &dir, allow_other) {
            let _ = std::fs::remove_file(node.home.socket());
            let _ = store.close();
            anyhow::bail!(e);
        }
    }
    {
        let node = node.clone();
        std::thread::Builder::new()
            .name("chanfs-signals".into())
            .spawn(move || {
                if let Ok(sig) = sigs.wait() {
                    tracing::info!("{sig}: unmounting everything");
                    node.unmount_all();
                    *lock(&node.serving) = false;
                    *lock(&node.had_mount) = true;
                    node.changed.notify_all();
                }
            })?;
    }
    {
        let node = node.clone();
        std::thread::Builder::new()
            .name("chanfs-control".into())
            .spawn(move || {
                for s in listener.incoming().flatten() {
                    let node = node.clone();
                    node.clients.fetch_add(1, Ordering::SeqCst);
                    let spawned = std::thread::Builder::new()
                        .name("chanfs-client".into())
                        .spawn({
                            let node = node.clone();
                            move || {
                                if let Err(e) = node.serve(s) {
                                    tracing::warn!("control client: {e}");
                                }
                                node.clients.fetch_sub(1, Ordering::SeqCst);
                            }
                        });
                    if spawned.is_err() {
                        node.clients.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })?;
    }
    let every = Some(cfg.gc_interval.unwrap_or(60.0))
        .filter(|e| *e > 0.0)
        .map(Duration::from_secs_f64);
    if every.is_some() || cache_max.is_some() {
        let weak = Arc::downgrade(&node);
        let commits = store.subscribe();
        std::thread::Builder::new()
            .name("chanfs-gc".into())
            .spawn(move || collect_while_running(&weak, commits, every, cache_max))?;
    }
    let started = Instant::now();
    let mut mounts = lock(&node.mounts);
    loop {
        let idle = mounts.is_empty()
            && !*lock(&node.serving)
            && (*lock(&node.had_mount) || started.elapsed() > IDLE_EXIT);
        if idle {
            *lock(&node.stopping) = true;
            break;
        }
        mounts = node
            .changed
            .wait_timeout(mounts, Duration::from_millis(500))
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
    }
    drop(mounts);
    // Let replies in flight (the unmount that ended the last mount) go out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.clients.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(node.home.socket());
    if let Some(net) = node.net.get() {
        net.shutdown();
    }
    store.close()?;
    tracing::info!("node stopped");
    Ok(())
}
