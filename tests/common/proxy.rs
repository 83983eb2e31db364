//! UDP fault-injection proxy for the integration tests (`tc netem` is not
//! available on the test machines). This file owns [`UdpProxy`]: it sits
//! between clients and one upstream address on 127.0.0.1 and can drop, delay,
//! reorder (jitter), duplicate and partition datagrams in both directions.
//!
//! It uses only std (threads and blocking sockets with short read timeouts),
//! so it can be included standalone with
//! `#[path = "common/proxy.rs"] mod proxy;`.
#![allow(dead_code)]

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long blocking receives and the scheduler wait at most before
/// re-checking the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// Seed used by [`UdpProxy::start`].
const DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Counters of a [`UdpProxy`], as returned by [`UdpProxy::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams sent on to the upstream (duplicates counted).
    pub to_upstream_datagrams: u64,
    /// Payload bytes sent on to the upstream (duplicates counted).
    pub to_upstream_bytes: u64,
    /// Datagrams sent back to clients (duplicates counted).
    pub to_client_datagrams: u64,
    /// Payload bytes sent back to clients (duplicates counted).
    pub to_client_bytes: u64,
    /// Datagrams dropped by loss, partition or a failed send, both directions.
    pub dropped: u64,
    /// Extra copies scheduled by duplication, both directions.
    pub duplicated: u64,
}

/// The live-changeable faults.
#[derive(Debug, Clone, Copy)]
struct Faults {
    loss: f64,
    duplicate: f64,
    delay: Duration,
    jitter: Duration,
    partitioned: bool,
}

/// Small deterministic PRNG (xorshift64*).
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Zero is a fixed point of xorshift; mix the seed so it never is.
        let s = seed ^ DEFAULT_SEED;
        XorShift(if s == 0 { DEFAULT_SEED } else { s })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, max).
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        if nanos == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.next_u64() % nanos)
        }
    }
}

/// Where a scheduled datagram goes.
enum Dest {
    /// Out of a session's upstream-facing (connected) socket.
    Upstream(Arc<UdpSocket>),
    /// Out of the client-facing socket to this client.
    Client(SocketAddr),
}

/// A datagram waiting in the scheduler.
struct Pending {
    due: Instant,
    seq: u64,
    data: Arc<[u8]>,
    dest: Dest,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed so the max-heap pops the earliest due (then first queued).
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// State shared by the proxy handle and its threads.
struct Shared {
    front: Arc<UdpSocket>,
    upstream: SocketAddr,
    stop: AtomicBool,
    faults: Mutex<(Faults, XorShift)>,
    queue: Mutex<(BinaryHeap<Pending>, u64)>,
    queue_cv: Condvar,
    to_upstream_datagrams: AtomicU64,
    to_upstream_bytes: AtomicU64,
    to_client_datagrams: AtomicU64,
    to_client_bytes: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    /// Clients whose datagrams, and the replies to them, are dropped.
    blocked: Mutex<HashSet<SocketAddr>>,
}

/// Locks, recovering from poisoning (a panicking test thread must not wedge
/// the proxy).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn partitioned(&self) -> bool {
        lock(&self.faults).0.partitioned
    }

    /// True (and counted as dropped) when `client` is blocked.
    fn blocks(&self, client: &SocketAddr) -> bool {
        let b = lock(&self.blocked).contains(client);
        if b {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
        b
    }

    /// Applies the faults to one received datagram and schedules the copies
    /// that survive.
    fn admit(&self, data: &[u8], dest: impl Fn() -> Dest) {
        let delays: Vec<Duration> = {
            let mut g = lock(&self.faults);
            let (faults, rng) = &mut *g;
            let faults = *faults;
            if faults.partitioned || (faults.loss > 0.0 && rng.next_f64() < faults.loss) {
                drop(g);
                self.dropped.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let copies = if faults.duplicate > 0.0 && rng.next_f64() < faults.duplicate {
                2
            } else {
                1
            };
            (0..copies)
                .map(|_| faults.delay + rng.below(faults.jitter))
                .collect()
        };
        if delays.len() > 1 {
            self.duplicated
                .fetch_add(delays.len() as u64 - 1, Ordering::SeqCst);
        }
        let data: Arc<[u8]> = Arc::from(data);
        let now = Instant::now();
        {
            let mut q = lock(&self.queue);
            for d in delays {
                q.1 += 1;
                let seq = q.1;
                q.0.push(Pending {
                    due: now + d,
                    seq,
                    data: Arc::clone(&data),
                    dest: dest(),
                });
            }
        }
        self.queue_cv.notify_one();
    }

    /// Sends one due datagram (unless a partition started meanwhile, or
    /// its client was blocked).
    fn send(&self, p: &Pending) {
        if self.partitioned() {
            self.dropped.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if let Dest::Client(addr) = &p.dest {
            if self.blocks(addr) {
                return;
            }
        }
        // Count before sending, so whoever has received the datagram already
        // sees it counted; undo (and count it dropped) if the send fails.
        let len = p.data.len() as u64;
        let (datagrams, bytes) = match &p.dest {
            Dest::Upstream(_) => (&self.to_upstream_datagrams, &self.to_upstream_bytes),
            Dest::Client(_) => (&self.to_client_datagrams, &self.to_client_bytes),
        };
        datagrams.fetch_add(1, Ordering::SeqCst);
        bytes.fetch_add(len, Ordering::SeqCst);
        let sent = match &p.dest {
            Dest::Upstream(sock) => sock.send(&p.data),
            Dest::Client(addr) => self.front.send_to(&p.data, addr),
        };
        if sent.is_err() {
            datagrams.fetch_sub(1, Ordering::SeqCst);
            bytes.fetch_sub(len, Ordering::SeqCst);
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// True for the errors a read timeout produces.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Backs off briefly after an unexpected socket error (for example an ICMP
/// "connection refused" reported on a connected socket), so errors never
/// turn into a busy loop.
fn on_error(e: &io::Error) {
    if !is_timeout(e) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A UDP proxy between clients and one upstream address, injecting faults.
///
/// Each distinct client source address gets its own upstream-facing socket,
/// so the upstream sees one peer per client and replies go back to the right
/// client (like a NAT). Faults apply to both directions and can be changed
/// while traffic flows. Dropping the proxy stops its threads (within about
/// 50 ms) and closes its sockets.
pub struct UdpProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

impl UdpProxy {
    /// Binds 127.0.0.1:0 and forwards datagrams to `upstream`; each distinct
    /// client source address gets its own upstream-facing socket so replies
    /// go back to the right client (like a NAT). Uses a fixed default seed.
    pub fn start(upstream: SocketAddr) -> io::Result<UdpProxy> {
        Self::start_seeded(upstream, DEFAULT_SEED)
    }

    /// Like [`UdpProxy::start`], with the seed of the PRNG that decides loss,
    /// duplication and jitter (same seed and traffic, same decisions).
    pub fn start_seeded(upstream: SocketAddr, seed: u64) -> io::Result<UdpProxy> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        front.set_read_timeout(Some(POLL))?;
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            front: Arc::new(front),
            upstream,
            stop: AtomicBool::new(false),
            faults: Mutex::new((
                Faults {
                    loss: 0.0,
                    duplicate: 0.0,
                    delay: Duration::ZERO,
                    jitter: Duration::ZERO,
                    partitioned: false,
                },
                XorShift::new(seed),
            )),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            queue_cv: Condvar::new(),
            to_upstream_datagrams: AtomicU64::new(0),
            to_upstream_bytes: AtomicU64::new(0),
            to_client_datagrams: AtomicU64::new(0),
            to_client_bytes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            blocked: Mutex::new(HashSet::new()),
        });
        let mut proxy = UdpProxy {
            shared: Arc::clone(&shared),
            addr,
            threads: Vec::new(),
        };
        // On a spawn error, dropping `proxy` stops what was started.
        let s = Arc::clone(&shared);
        proxy.threads.push(
            std::thread::Builder::new()
                .name("udp-proxy-send".into())
                .spawn(move || sender_loop(&s))?,
        );
        let s = Arc::clone(&shared);
        proxy.threads.push(
            std::thread::Builder::new()
                .name("udp-proxy-front".into())
                .spawn(move || front_loop(&s))?,
        );
        Ok(proxy)
    }

    /// The address clients should send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address datagrams are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Drops this fraction (0.0..=1.0) of datagrams, both directions.
    pub fn set_loss(&self, fraction: f64) {
        lock(&self.shared.faults).0.loss = fraction.clamp(0.0, 1.0);
    }

    /// Delays each datagram by `base` plus uniform(0..`jitter`), both
    /// directions. A non-zero jitter reorders datagrams. Applies to
    /// datagrams received from now on.
    pub fn set_delay(&self, base: Duration, jitter: Duration) {
        let mut g = lock(&self.shared.faults);
        g.0.delay = base;
        g.0.jitter = jitter;
    }

    /// Sends this fraction (0.0..=1.0) of datagrams twice, both directions.
    pub fn set_duplicate(&self, fraction: f64) {
        lock(&self.shared.faults).0.duplicate = fraction.clamp(0.0, 1.0);
    }

    /// While on, drops everything, both directions, including datagrams
    /// already queued by a delay; the partition heals when set back to false.
    pub fn set_partitioned(&self, on: bool) {
        lock(&self.shared.faults).0.partitioned = on;
    }

    /// Drops every datagram from `client` (a node's bound address) and
    /// every reply to it, from now on: that node and the upstream one can
    /// no longer talk through this proxy, while other clients still can.
    pub fn block_client(&self, client: SocketAddr) {
        lock(&self.shared.blocked).insert(client);
    }

    /// Clears all faults: no loss, delay, duplication or partition.
    pub fn clear_faults(&self) {
        let mut g = lock(&self.shared.faults);
        g.0 = Faults {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            partitioned: false,
        };
    }

    /// Counters: datagrams and bytes forwarded in each direction, dropped,
    /// duplicated.
    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            to_upstream_datagrams: s.to_upstream_datagrams.load(Ordering::SeqCst),
            to_upstream_bytes: s.to_upstream_bytes.load(Ordering::SeqCst),
            to_client_datagrams: s.to_client_datagrams.load(Ordering::SeqCst),
            to_client_bytes: s.to_client_bytes.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            duplicated: s.duplicated.load(Ordering::SeqCst),
        }
    }
}

impl Drop for UdpProxy {
    /// Stops all threads (each notices within about 50 ms), joins them and
    /// so frees every socket, including the client-facing port.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.queue_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        lock(&self.shared.queue).0.clear();
    }
}

/// Receives from clients, creates one upstream session per client address,
/// and schedules client datagrams towards the upstream.
fn front_loop(shared: &Arc<Shared>) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stopped() {
        let (n, client) = match shared.front.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => {
                on_error(&e);
                continue;
            }
        };
        if shared.blocks(&client) {
            continue;
        }
        let sock = match sessions.get(&client) {
            Some(s) => Arc::clone(s),
            None => match open_session(shared, client) {
                Ok((sock, reader)) => {
                    readers.push(reader);
                    sessions.insert(client, Arc::clone(&sock));
                    sock
                }
                // Cannot open a session now: treat as lost; a retry may work.
                Err(_) => {
                    shared.dropped.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
            },
        };
        shared.admit(&buf[..n], || Dest::Upstream(Arc::clone(&sock)));
    }
    for r in readers {
        let _ = r.join();
    }
}

/// Opens the upstream-facing socket of one client and its reader thread.
fn open_session(
    shared: &Arc<Shared>,
    client: SocketAddr,
) -> io::Result<(Arc<UdpSocket>, JoinHandle<()>)> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(shared.upstream)?;
    sock.set_read_timeout(Some(POLL))?;
    let sock = Arc::new(sock);
    let s = Arc::clone(shared);
    let rs = Arc::clone(&sock);
    let reader = std::thread::Builder::new()
        .name("udp-proxy-up".into())
        .spawn(move || upstream_loop(&s, &rs, client))?;
    Ok((sock, reader))
}

/// Receives the upstream's replies on one session and schedules them back to
/// that session's client.
fn upstream_loop(shared: &Shared, sock: &UdpSocket, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !shared.stopped() {
        match sock.recv(&mut buf) {
            Ok(_) if shared.blocks(&client) => {}
            Ok(n) => shared.admit(&buf[..n], || Dest::Client(client)),
            Err(e) => on_error(&e),
        }
    }
}

/// Sends scheduled datagrams when they are due, earliest first.
fn sender_loop(shared: &Shared) {
    let mut q = lock(&shared.queue);
    loop {
        if shared.stopped() {
            return;
        }
        let now = Instant::now();
        let wait = match q.0.peek() {
            Some(p) if p.due <= now => None,
            Some(p) => Some((p.due - now).min(POLL)),
            None => Some(POLL),
        };
        match wait {
            None => {
                if let Some(p) = q.0.pop() {
                    drop(q);
                    shared.send(&p);
                    q = lock(&shared.queue);
                }
            }
            Some(w) => {
                q = shared
                    .queue_cv
                    .wait_timeout(q, w)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        }
    }
}
