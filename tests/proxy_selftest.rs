//! Self-test of the UDP fault-injection proxy in `tests/common/proxy.rs`
//! (this file owns only these tests). Uses plain UDP sockets on 127.0.0.1
//! and a tiny echo server; every socket binds port 0 so tests never share
//! ports and can run in parallel.
#![allow(clippy::unwrap_used)]

#[path = "common/proxy.rs"]
mod proxy;

use proxy::UdpProxy;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A UDP echo server on 127.0.0.1:0 counting what it receives; stops on drop.
struct Echo {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client socket on 127.0.0.1:0 with a short read timeout.
fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    c
}

/// Receives datagrams until `want` arrived or `deadline` passed.
fn recv_until(c: &UdpSocket, want: usize, deadline: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while out.len() < want && Instant::now() < end {
        if let Ok(n) = c.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

/// Sends `n` numbered datagrams through the proxy.
fn send_numbered(c: &UdpSocket, to: SocketAddr, n: u32) {
    for i in 0..n {
        c.send_to(&i.to_be_bytes(), to).unwrap();
    }
}

#[test]
fn forwards_both_ways_with_correct_bytes() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    assert_eq!(p.upstream(), echo.addr);
    let c = client();
    let payloads: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        (0..=255u8).collect(),
        vec![0xAB; 1200],
        vec![7u8; 60_000],
    ];
    let total: u64 = payloads.iter().map(|x| x.len() as u64).sum();
    for pl in &payloads {
        c.send_to(pl, p.addr()).unwrap();
        let got = recv_until(&c, 1, Duration::from_secs(2));
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0], pl);
    }
    let s = p.stats();
    assert_eq!(s.to_upstream_datagrams, payloads.len() as u64);
    assert_eq!(s.to_client_datagrams, payloads.len() as u64);
    assert_eq!(s.to_upstream_bytes, total);
    assert_eq!(s.to_client_bytes, total);
    assert_eq!(s.dropped, 0);
    assert_eq!(s.duplicated, 0);
    assert_eq!(echo.received(), payloads.len() as u64);
}

#[test]
fn loss_one_drops_all_and_zero_drops_none() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();

    p.set_loss(1.0);
    send_numbered(&c, p.addr(), 50);
    let got = recv_until(&c, 1, Duration::from_millis(300));
    assert!(got.is_empty(), "loss 1.0 let {} through", got.len());
    assert_eq!(echo.received(), 0);
    assert_eq!(p.stats().dropped, 50);

    p.set_loss(0.0);
    send_numbered(&c, p.addr(), 50);
    let got = recv_until(&c, 50, Duration::from_secs(2));
    assert_eq!(got.len(), 50);
    assert_eq!(p.stats().dropped, 50);
    assert_eq!(echo.received(), 50);
}

#[test]
fn partial_loss_drops_some() {
    let echo = Echo::start();
    let p = UdpProxy::start_seeded(echo.addr, 42).unwrap();
    let c = client();
    p.set_loss(0.5);
    send_numbered(&c, p.addr(), 200);
    // Replies can only shrink: give them time, then look at the counters.
    let got = recv_until(&c, 200, Duration::from_millis(400));
    let s = p.stats();
    assert!(!got.is_empty() && got.len() < 200, "{} of 200", got.len());
    assert!(s.dropped > 50, "{s:?}");
    // Each datagram is dropped on the way up, on the way back, or returns.
    assert_eq!(s.to_client_datagrams + s.dropped, 200, "{s:?}");
    assert_eq!(got.len() as u64, s.to_client_datagrams);
}

#[test]
fn partition_drops_everything_until_healed() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();

    c.send_to(b"before", p.addr()).unwrap();
    assert_eq!(
        recv_until(&c, 1, Duration::from_secs(2)),
        vec![b"before".to_vec()]
    );

    p.set_partitioned(true);
    send_numbered(&c, p.addr(), 20);
    assert!(recv_until(&c, 1, Duration::from_millis(250)).is_empty());
    assert_eq!(echo.received(), 1);
    assert_eq!(p.stats().dropped, 20);

    p.set_partitioned(false);
    c.send_to(b"after", p.addr()).unwrap();
    assert_eq!(
        recv_until(&c, 1, Duration::from_secs(2)),
        vec![b"after".to_vec()]
    );
}

/// A blocked client gets nothing through, neither way (its session's
/// replies included), while another client still does.
#[test]
fn a_blocked_client_is_cut_off_alone() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let (c1, c2) = (client(), client());
    c1.send_to(b"one", p.addr()).unwrap();
    assert_eq!(
        recv_until(&c1, 1, Duration::from_secs(2)),
        vec![b"one".to_vec()]
    );
    // A reply already on its way back when the block starts is dropped too.
    p.set_delay(Duration::from_millis(100), Duration::ZERO);
    c1.send_to(b"late", p.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    p.block_client(c1.local_addr().unwrap());
    send_numbered(&c1, p.addr(), 5);
    c2.send_to(b"two", p.addr()).unwrap();
    assert_eq!(
        recv_until(&c2, 1, Duration::from_secs(2)),
        vec![b"two".to_vec()]
    );
    assert!(recv_until(&c1, 1, Duration::from_millis(300)).is_empty());
    assert_eq!(echo.received(), 3, "one, late, two");
    assert_eq!(p.stats().dropped, 6, "the late reply and five datagrams");
}

#[test]
fn partition_drops_datagrams_already_delayed() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();
    p.set_delay(Duration::from_millis(150), Duration::ZERO);
    send_numbered(&c, p.addr(), 5);
    std::thread::sleep(Duration::from_millis(20));
    p.set_partitioned(true);
    assert!(recv_until(&c, 1, Duration::from_millis(300)).is_empty());
    assert_eq!(echo.received(), 0);
    assert_eq!(p.stats().dropped, 5);
}

#[test]
fn delay_is_observed() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();
    p.set_delay(Duration::from_millis(200), Duration::ZERO);
    let t0 = Instant::now();
    c.send_to(b"slow", p.addr()).unwrap();
    let got = recv_until(&c, 1, Duration::from_secs(3));
    let rtt = t0.elapsed();
    assert_eq!(got, vec![b"slow".to_vec()]);
    // 200 ms each way.
    assert!(rtt >= Duration::from_millis(400), "round trip {rtt:?}");
}

#[test]
fn delay_does_not_block_forwarding() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();
    p.set_delay(Duration::from_millis(200), Duration::ZERO);
    let t0 = Instant::now();
    send_numbered(&c, p.addr(), 20);
    let got = recv_until(&c, 20, Duration::from_secs(3));
    assert_eq!(got.len(), 20);
    // Delayed in parallel, not one after the other (20 * 400 ms).
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // Without jitter, order is kept.
    let order: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
}

#[test]
fn jitter_reorders() {
    let echo = Echo::start();
    let p = UdpProxy::start_seeded(echo.addr, 7).unwrap();
    let c = client();
    p.set_delay(Duration::ZERO, Duration::from_millis(20));
    send_numbered(&c, p.addr(), 200);
    let got = recv_until(&c, 200, Duration::from_secs(3));
    assert_eq!(got.len(), 200);
    let order: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions >= 1, "no reordering in {order:?}");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..200).collect::<Vec<_>>());
}

#[test]
fn duplicate_one_doubles() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();
    p.set_duplicate(1.0);
    send_numbered(&c, p.addr(), 10);
    // Doubled towards the echo (20), whose 20 replies are doubled again (40).
    let got = recv_until(&c, 40, Duration::from_secs(2));
    assert_eq!(got.len(), 40);
    assert!(recv_until(&c, 1, Duration::from_millis(100)).is_empty());
    assert_eq!(echo.received(), 20);
    let s = p.stats();
    assert_eq!(s.to_upstream_datagrams, 20);
    assert_eq!(s.to_client_datagrams, 40);
    assert_eq!(s.duplicated, 30);

    p.set_duplicate(0.0);
    c.send_to(b"once", p.addr()).unwrap();
    assert_eq!(
        recv_until(&c, 2, Duration::from_millis(300)),
        vec![b"once".to_vec()]
    );
}

#[test]
fn two_clients_get_their_own_replies() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let a = client();
    let b = client();
    for i in 0..10u8 {
        a.send_to(&[b'a', i], p.addr()).unwrap();
        b.send_to(&[b'b', i], p.addr()).unwrap();
    }
    let ga = recv_until(&a, 10, Duration::from_secs(2));
    let gb = recv_until(&b, 10, Duration::from_secs(2));
    assert_eq!(ga, (0..10u8).map(|i| vec![b'a', i]).collect::<Vec<_>>());
    assert_eq!(gb, (0..10u8).map(|i| vec![b'b', i]).collect::<Vec<_>>());
}

#[test]
fn clients_are_distinct_peers_upstream() {
    // The upstream sees one source address per client (NAT-like sessions).
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    up.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let p = UdpProxy::start(up.local_addr().unwrap()).unwrap();
    let (a, b) = (client(), client());
    let mut buf = [0u8; 16];
    a.send_to(b"a1", p.addr()).unwrap();
    let (_, sa) = up.recv_from(&mut buf).unwrap();
    a.send_to(b"a2", p.addr()).unwrap();
    let (_, sa2) = up.recv_from(&mut buf).unwrap();
    b.send_to(b"b1", p.addr()).unwrap();
    let (_, sb) = up.recv_from(&mut buf).unwrap();
    assert_eq!(sa, sa2);
    assert_ne!(sa, sb);
    assert_ne!(sa, p.addr());
}

#[test]
fn same_seed_same_decisions() {
    let run = |seed| {
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = UdpProxy::start_seeded(up.local_addr().unwrap(), seed).unwrap();
        p.set_loss(0.5);
        let c = client();
        send_numbered(&c, p.addr(), 100);
        up.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 16];
        while let Ok(n) = up.recv(&mut buf) {
            seen.push(u32::from_be_bytes(buf[..n].try_into().unwrap()));
        }
        seen
    };
    let first = run(1234);
    assert!(!first.is_empty() && first.len() < 100);
    assert_eq!(first, run(1234));
}

#[test]
fn drop_stops_threads_and_frees_the_port() {
    let echo = Echo::start();
    let p = UdpProxy::start(echo.addr).unwrap();
    let c = client();
    c.send_to(b"x", p.addr()).unwrap();
    assert_eq!(recv_until(&c, 1, Duration::from_secs(2)).len(), 1);
    p.set_delay(Duration::from_secs(10), Duration::ZERO);
    c.send_to(b"pending", p.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let addr = p.addr();
    let t0 = Instant::now();
    drop(p);
    // Threads joined promptly even with a datagram still scheduled.
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // The client-facing port is closed and can be bound again.
    let again = UdpSocket::bind(addr).expect("proxy port still bound after drop");
    drop(again);
    // Nothing more arrives through the dropped proxy.
    assert!(recv_until(&c, 1, Duration::from_millis(100)).is_empty());
    assert_eq!(echo.received(), 1);
}
