//! Two real nodes whose every datagram goes through the UDP fault-injection
//! proxy of `tests/common/proxy.rs` (issue #3): loss, delay, reordering
//! (jitter) and duplication, a partition that heals, and a node killed with
//! `kill -9` and restarted while the other keeps changing things. Each test
//! ends with both mounts holding the same tree (names, kinds, bytes,
//! recursively) and nothing lost.
//!
//! Routing: each node advertises its proxy's address instead of its own
//! `listen` address, so the leader's invitation names proxy A and the
//! joiner's join names proxy B; B reaches A through proxy A and A reaches B
//! through proxy B, and faults set on both proxies hit every connection.

#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{chanfs_ok, random_bytes, wait_for, Mounted};
use proxy::UdpProxy;

/// Seconds allowed for two nodes to converge (slow, busy machines).
const CONVERGE_SECS: u64 = 60;

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    /// A file compared by size only (its content is not read).
    Sized(u64),
    Link(PathBuf),
}

/// Relative path → entry, for every entry under a mount.
type Tree = BTreeMap<String, Node>;

fn walk(dir: &Path, prefix: &str, t: &mut Tree, unread: &[&str]) -> Result<(), String> {
    let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    for e in std::fs::read_dir(dir).map_err(|e| err(dir, e))? {
        let e = e.map_err(|e| err(dir, e))?;
        let name = e.file_name().into_string().unwrap();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        let md = std::fs::symlink_metadata(&path).map_err(|e| err(&path, e))?;
        if md.is_dir() {
            t.insert(rel.clone(), Node::Dir);
            walk(&path, &rel, t, unread)?;
        } else if md.file_type().is_symlink() {
            let l = std::fs::read_link(&path).map_err(|e| err(&path, e))?;
            t.insert(rel, Node::Link(l));
        } else if unread.contains(&rel.as_str()) {
            t.insert(rel, Node::Sized(md.len()));
        } else {
            let d = std::fs::read(&path).map_err(|e| err(&path, e))?;
            t.insert(rel, Node::File(d));
        }
    }
    Ok(())
}

/// The whole tree under `root`, reading every file; an error when anything
/// fails meanwhile (a file vanishing, a read that cannot fetch yet).
fn snapshot(root: &Path) -> Result<Tree, String> {
    snapshot_unread(root, &[])
}

/// Like [`snapshot`], but the files at the `unread` relative paths are
/// recorded by size only, so no read fetches their content.
fn snapshot_unread(root: &Path, unread: &[&str]) -> Result<Tree, String> {
    let mut t = Tree::new();
    walk(root, "", &mut t, unread)?;
    Ok(t)
}

/// `t` with the files at `unread` replaced by their sizes.
fn sized(t: &Tree, unread: &[&str]) -> Tree {
    let mut t = t.clone();
    for rel in unread {
        if let Some(Node::File(d)) = t.get(*rel) {
            let n = d.len() as u64;
            t.insert((*rel).to_string(), Node::Sized(n));
        }
    }
    t
}

fn brief(n: Option<&Node>) -> String {
    match n {
        None => "absent".into(),
        Some(Node::Dir) => "dir".into(),
        Some(Node::Sized(n)) => format!("{n} bytes"),
        Some(Node::Link(l)) => format!("link to {}", l.display()),
        Some(Node::File(d)) => format!("{} bytes, fnv {}", d.len(), &fingerprint(d)[..12]),
    }
}

/// A content fingerprint for messages (not a dependency: FNV-1a is enough).
fn fingerprint(d: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in d {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The first differences between two trees, for failure messages.
fn diff(left: &str, l: &Tree, right: &str, r: &Tree) -> String {
    let mut out = Vec::new();
    let keys: std::collections::BTreeSet<&String> = l.keys().chain(r.keys()).collect();
    for k in keys {
        if l.get(k) != r.get(k) {
            out.push(format!(
                "  {k}: {left} {}, {right} {}",
                brief(l.get(k)),
                brief(r.get(k))
            ));
        }
    }
    let n = out.len();
    out.truncate(25);
    if n > 25 {
        out.push(format!("  ... {} more", n - 25));
    }
    format!("{n} differences:\n{}", out.join("\n"))
}

/// Waits until both mounts hold the same tree and `ok` accepts it; returns
/// it. On timeout, panics with the differences and both nodes' peer status.
fn converge(
    a: &Mounted,
    b: &Mounted,
    what: &str,
    ok: impl Fn(&Tree) -> Result<(), String>,
) -> Tree {
    converge_unread(a, b, what, &[], ok)
}

/// Like [`converge`], comparing the files at `unread` by size only.
fn converge_unread(
    a: &Mounted,
    b: &Mounted,
    what: &str,
    unread: &[&str],
    ok: impl Fn(&Tree) -> Result<(), String>,
) -> Tree {
    let deadline = Instant::now() + Duration::from_secs(CONVERGE_SECS);
    loop {
        let last = match (
            snapshot_unread(&a.mnt, unread),
            snapshot_unread(&b.mnt, unread),
        ) {
            (Ok(ta), Ok(tb)) if ta == tb => match ok(&ta) {
                Ok(()) => return ta,
                Err(why) => format!("same tree on both, but {why}"),
            },
            (Ok(ta), Ok(tb)) => diff("A", &ta, "B", &tb),
            (Err(e), _) => format!("reading A's mount: {e}"),
            (_, Err(e)) => format!("reading B's mount: {e}"),
        };
        if Instant::now() >= deadline {
            panic!(
                "{what}: no convergence in {CONVERGE_SECS} s: {last}\n\
                 A: {}\nB: {}\nA's log tail:\n{}\nB's log tail:\n{}",
                node_state(a),
                node_state(b),
                log_tail(a),
                log_tail(b)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until both mounts hold exactly `expected`.
fn converge_to(a: &Mounted, b: &Mounted, what: &str, expected: &Tree) {
    converge(a, b, what, |t| {
        if t == expected {
            Ok(())
        } else {
            Err(diff("mounts", t, "expected", expected))
        }
    });
}

/// The last lines of a node's log, for messages.
fn log_tail(m: &Mounted) -> String {
    let log = std::fs::read_to_string(m.home.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A node's figures and view of the other members, for messages.
fn node_state(m: &Mounted) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| m.status())) {
        Ok(s) => format!(
            "chunks {} stored_bytes {} fetching {} bytes_in {} bytes_out {}, members {}",
            s["chunks"],
            s["stored_bytes"],
            s["fetching"],
            s["bytes_in"],
            s["bytes_out"],
            s["channels"][0]["members"]
        ),
        Err(_) => "(no status)".into(),
    }
}

/// The other member as seen by `m` (`chanfs status --json`).
fn other(m: &Mounted) -> serde_json::Value {
    let s = m.status();
    s["channels"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["me"] == false)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn connected(m: &Mounted) -> bool {
    other(m)["connected"] == true
}

/// Two nodes with all traffic between them routed through two proxies.
struct Pair {
    a: Mounted,
    b: Mounted,
    /// In front of A: B → A (the invitation names it).
    pa: UdpProxy,
    /// In front of B: A → B (B's join names it).
    pb: UdpProxy,
}

impl Pair {
    /// Leader A and member B (`rw`), both mounted and connected through the
    /// proxies (no faults yet).
    fn start(seed: u64) -> Pair {
        Pair::start_with(seed, &[])
    }

    /// Like [`Pair::start`], with `key = value` settings for B's config.
    fn start_with(seed: u64, b_config: &[(&str, &str)]) -> Pair {
        let mut a = Mounted::initialized();
        let mut b = Mounted::initialized();
        let pa = UdpProxy::start_seeded(a.listen_addr(), seed).unwrap();
        let pb = UdpProxy::start_seeded(b.listen_addr(), seed ^ 0xB).unwrap();
        a.set_config("advertise", &format!("[\"{}\"]", pa.addr()));
        b.set_config("advertise", &format!("[\"{}\"]", pb.addr()));
        for (k, v) in b_config {
            b.set_config(k, v);
        }
        a.create_channel();
        a.mount(&[]);
        b.join(&a, "rw");
        b.mount(&[]);
        let p = Pair { a, b, pa, pb };
        wait_for(60, "A and B connected through the proxies", || {
            (connected(&p.a) && connected(&p.b)).then_some(())
        });
        p.check_routed();
        p
    }

    /// Both proxies carried datagrams, and neither node is connected to the
    /// other's real `listen` address.
    fn check_routed(&self) {
        let (sa, sb) = (self.pa.stats(), self.pb.stats());
        assert!(
            sa.to_upstream_datagrams > 0,
            "nothing went through proxy A: {sa:?}"
        );
        assert!(
            sb.to_upstream_datagrams > 0,
            "nothing went through proxy B: {sb:?}"
        );
        let (la, lb) = (self.a.listen_addr(), self.b.listen_addr());
        for (m, real) in [(&self.a, lb), (&self.b, la)] {
            let addr = other(m)["addr"].as_str().unwrap_or_default().to_string();
            assert_ne!(addr, real.to_string(), "a connection bypasses the proxies");
        }
    }

    /// Applies `f` to both proxies.
    fn faults(&self, f: impl Fn(&UdpProxy)) {
        f(&self.pa);
        f(&self.pb);
    }

    fn dropped(&self) -> u64 {
        self.pa.stats().dropped + self.pb.stats().dropped
    }
}

fn put(t: &mut Tree, rel: &str, data: &[u8]) {
    t.insert(rel.to_string(), Node::File(data.to_vec()));
}

fn write(m: &Mounted, t: &mut Tree, rel: &str, data: &[u8]) {
    std::fs::write(m.p(rel), data).unwrap();
    put(t, rel, data);
}

fn mkdir(m: &Mounted, t: &mut Tree, rel: &str) {
    std::fs::create_dir(m.p(rel)).unwrap();
    t.insert(rel.to_string(), Node::Dir);
}

fn small(i: usize, version: u32) -> Vec<u8> {
    let mut v = format!("small file {i}, version {version}\n").into_bytes();
    v.extend_from_slice(&random_bytes(
        40 + (i * 37) % 900,
        (i as u64) << 8 | u64::from(version),
    ));
    v
}

/// Scenario 1: 10% loss, 20 ms ± 20 ms delay (reordering), 5% duplication,
/// both ways. A writes 200 small files and three 2 MiB files (the second
/// and third share most chunks with the first: one is patched in the
/// middle, one truncated), edits, renames and deletes some, while B writes
/// files of its own at the same time. First the whole tree converges with
/// the big files compared by size (entries and small contents over the lossy
/// path); then B reads the big files byte for byte, fetching their chunks
/// lazily over the same path.
#[test]
fn lossy_reordering_duplicating_network_converges() {
    let p = Pair::start(1);
    p.faults(|x| {
        x.set_loss(0.10);
        x.set_delay(Duration::from_millis(20), Duration::from_millis(20));
        x.set_duplicate(0.05);
    });
    let (a, b) = (&p.a, &p.b);
    let mut expected = Tree::new();
    let big = random_bytes(2 << 20, 100);
    let from_b = std::thread::scope(|s| {
        let writer_b = s.spawn(|| {
            let mut t = Tree::new();
            mkdir(b, &mut t, "from-b");
            for i in 0..40 {
                write(b, &mut t, &format!("from-b/{i}.txt"), &small(1000 + i, 1));
                if i % 10 == 9 {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            t
        });
        mkdir(a, &mut expected, "small");
        for d in 0..10 {
            mkdir(a, &mut expected, &format!("small/d{d}"));
        }
        for i in 0..200 {
            write(
                a,
                &mut expected,
                &format!("small/d{}/f{i}.txt", i % 10),
                &small(i, 1),
            );
        }
        for k in 0..3 {
            write(a, &mut expected, &format!("big{k}.bin"), &big);
        }
        writer_b.join().unwrap()
    });
    expected.extend(from_b);
    // Edits, deletes and renames on A while the first wave is in flight.
    for i in (0..200).step_by(10) {
        write(
            a,
            &mut expected,
            &format!("small/d{}/f{i}.txt", i % 10),
            &small(i, 2),
        );
    }
    for i in (5..200).step_by(10) {
        let rel = format!("small/d{}/f{i}.txt", i % 10);
        std::fs::remove_file(a.p(&rel)).unwrap();
        expected.remove(&rel);
    }
    for i in [1usize, 2, 3] {
        let from = format!("small/d{i}/f{i}.txt");
        let to = format!("small/renamed-{i}.txt");
        std::fs::rename(a.p(&from), a.p(&to)).unwrap();
        let d = expected.remove(&from).unwrap();
        expected.insert(to, d);
    }
    // big1: 64 KiB overwritten in the middle; big2: truncated.
    let mut big1 = big.clone();
    let patch = random_bytes(64 << 10, 555);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(a.p("big1.bin"))
        .unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    f.write_all(&patch).unwrap();
    drop(f);
    big1[1 << 20..(1 << 20) + patch.len()].copy_from_slice(&patch);
    put(&mut expected, "big1.bin", &big1);
    let big2 = big[..1_500_000].to_vec();
    std::fs::OpenOptions::new()
        .write(true)
        .open(a.p("big2.bin"))
        .unwrap()
        .set_len(big2.len() as u64)
        .unwrap();
    put(&mut expected, "big2.bin", &big2);
    // A's own mount shows its changes at once (B's may not have arrived).
    let mine = |t: &Tree| -> Tree {
        t.iter()
            .filter(|(k, _)| !k.starts_with("from-b"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let on_a = mine(&snapshot(&a.mnt).unwrap());
    let want = mine(&expected);
    assert!(
        on_a == want,
        "A's own mount: {}",
        diff("A", &on_a, "expected", &want)
    );

    let bigs = ["big0.bin", "big1.bin", "big2.bin"];
    let want = sized(&expected, &bigs);
    let t0 = Instant::now();
    converge_unread(a, b, "lossy network, big files by size", &bigs, |t| {
        if *t == want {
            Ok(())
        } else {
            Err(diff("mounts", t, "expected", &want))
        }
    });
    eprintln!("tree converged in {:.1} s", t0.elapsed().as_secs_f64());
    // Now the content of the big files, fetched lazily by B.
    let t0 = Instant::now();
    converge_to(a, b, "lossy network, big files read on B", &expected);
    eprintln!("big files read on B in {:.1} s", t0.elapsed().as_secs_f64());
    let (sa, sb) = (p.pa.stats(), p.pb.stats());
    assert!(
        sa.dropped + sb.dropped > 0,
        "no loss injected: {sa:?} {sb:?}"
    );
    assert!(
        sa.duplicated + sb.duplicated > 0,
        "no duplication injected: {sa:?} {sb:?}"
    );
    p.check_routed();
}

/// The lazy fetch alone over a slow path, 20 ms ± 20 ms each way and no
/// loss. The per-datagram jitter reorders heavily, so QUIC declares
/// spurious losses and the path carries about 100 KB/s; a 2 MiB file written
/// on A must still become readable on B, byte for byte, with the default
/// `fetch_timeout` (a transfer that keeps moving is not cut off). Passes in
/// about 30 s, so not part of the default run: `cargo test --test
/// sync_faults -- --ignored`.
#[test]
#[ignore = "slow (about 30 s); run with --ignored"]
fn lazy_fetch_completes_over_slow_reordering_path() {
    let p = Pair::start(4);
    p.faults(|x| x.set_delay(Duration::from_millis(20), Duration::from_millis(20)));
    let data = random_bytes(2 << 20, 41);
    std::fs::write(p.a.p("big.bin"), &data).unwrap();
    wait_for(60, "big.bin's size on B", || {
        let len = std::fs::metadata(p.b.p("big.bin")).ok()?.len();
        (len == data.len() as u64).then_some(())
    });
    let t = Instant::now();
    let mut errors = Vec::new();
    loop {
        match std::fs::read(p.b.p("big.bin")) {
            Ok(d) => {
                assert!(d == data, "big.bin differs on B");
                break;
            }
            Err(e) => errors.push(format!("{:.1} s: {e}", t.elapsed().as_secs_f64())),
        }
        assert!(
            t.elapsed() < Duration::from_secs(CONVERGE_SECS),
            "B could not read big.bin in {CONVERGE_SECS} s; read errors {errors:?}\nB: {}\n\
             B's log tail:\n{}",
            node_state(&p.b),
            log_tail(&p.b)
        );
    }
}

/// Scenario 2: both proxies drop everything while each side changes the
/// tree (different files, a delete each, and the same file edited on both
/// sides); after the partition heals, both hold the same tree: everything
/// from both sides, and the doubly-edited file as itself plus one conflict
/// copy, named and filled identically on both nodes.
#[test]
fn partition_heals_and_concurrent_edit_leaves_same_conflict_copy() {
    let p = Pair::start(2);
    p.faults(|x| x.set_delay(Duration::from_millis(5), Duration::from_millis(5)));
    let (a, b) = (&p.a, &p.b);
    let mut base = Tree::new();
    write(a, &mut base, "doc.txt", b"base version\n");
    write(a, &mut base, "keep.txt", b"untouched\n");
    write(a, &mut base, "gone-on-a.txt", b"deleted on A\n");
    write(a, &mut base, "gone-on-b.txt", b"deleted on B\n");
    mkdir(a, &mut base, "shared");
    write(a, &mut base, "shared/big.bin", &random_bytes(700_000, 21));
    converge_to(a, b, "before the partition", &base);

    p.faults(|x| x.set_partitioned(true));
    let dropped_before = p.dropped();
    let mut expected = base.clone();
    mkdir(a, &mut expected, "a-only");
    for i in 0..15 {
        write(a, &mut expected, &format!("a-only/{i}.txt"), &small(i, 3));
    }
    write(
        a,
        &mut expected,
        "shared/from-a.bin",
        &random_bytes(300_000, 22),
    );
    std::fs::remove_file(a.p("gone-on-a.txt")).unwrap();
    expected.remove("gone-on-a.txt");
    mkdir(b, &mut expected, "b-only");
    for i in 0..15 {
        write(
            b,
            &mut expected,
            &format!("b-only/{i}.txt"),
            &small(100 + i, 3),
        );
    }
    write(
        b,
        &mut expected,
        "shared/from-b.bin",
        &random_bytes(300_000, 23),
    );
    std::fs::remove_file(b.p("gone-on-b.txt")).unwrap();
    expected.remove("gone-on-b.txt");
    std::fs::write(a.p("doc.txt"), b"edited on A during the partition\n").unwrap();
    std::fs::write(b.p("doc.txt"), b"edited on B during the partition\n").unwrap();
    expected.remove("doc.txt");

    // The partition holds: nothing crosses.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!b.p("a-only").exists(), "A's change crossed the partition");
    assert!(!a.p("b-only").exists(), "B's change crossed the partition");
    assert!(b.p("gone-on-a.txt").exists());
    assert!(
        p.dropped() > dropped_before,
        "the partition dropped nothing"
    );

    p.faults(|x| x.set_partitioned(false));
    let tree = converge(a, b, "after the partition healed", |t| {
        let mut rest = t.clone();
        let doc = rest.remove("doc.txt").ok_or("doc.txt is missing")?;
        let copies: Vec<String> = rest
            .keys()
            .filter(|k| k.starts_with("doc.conflict-") && k.ends_with(".txt"))
            .cloned()
            .collect();
        if copies.len() != 1 {
            return Err(format!("conflict copies of doc.txt: {copies:?}"));
        }
        let copy = rest.remove(&copies[0]).unwrap();
        let mut versions = [doc, copy];
        versions.sort_by_key(|n| format!("{n:?}"));
        let want = [
            Node::File(b"edited on A during the partition\n".to_vec()),
            Node::File(b"edited on B during the partition\n".to_vec()),
        ];
        if versions != want {
            return Err(format!("doc.txt and its copy hold {versions:?}"));
        }
        if rest != expected {
            return Err(diff("mounts", &rest, "expected", &expected));
        }
        Ok(())
    });
    assert!(tree.contains_key("b-only/14.txt"));
}

/// Scenario 3: B is killed (`kill -9`) right after fsyncing changes that
/// could not leave it yet (the proxies are partitioned), while A keeps
/// writing before, during and after; B restarts, the network heals, and
/// both converge: B caught up with all of A's writes and A has everything B
/// fsynced before it died.
#[test]
fn killed_node_restarts_catches_up_and_loses_nothing_fsynced() {
    let mut p = Pair::start(3);
    p.faults(|x| {
        x.set_loss(0.02);
        x.set_delay(Duration::from_millis(5), Duration::from_millis(5));
    });
    let mut base = Tree::new();
    mkdir(&p.a, &mut base, "stream");
    mkdir(&p.a, &mut base, "durable");
    for i in 0..10 {
        write(&p.a, &mut base, &format!("base-{i}.txt"), &small(i, 1));
    }
    converge_to(&p.a, &p.b, "before the kill", &base);

    let stop = AtomicBool::new(false);
    let Pair { a, b, pa, pb } = &mut p;
    let (a, b) = (&*a, b);
    let both = |f: &dyn Fn(&UdpProxy)| {
        f(pa);
        f(pb);
    };
    let (streamed, synced) = std::thread::scope(|s| {
        // A writes a file every 40 ms until told to stop.
        let writer = s.spawn(|| {
            let mut t = Tree::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                write(a, &mut t, &format!("stream/{i}.txt"), &small(5000 + i, 1));
                i += 1;
                std::thread::sleep(Duration::from_millis(40));
            }
            t
        });
        std::thread::sleep(Duration::from_millis(800));
        // B's next changes can only survive in B's own store.
        both(&|x| x.set_partitioned(true));
        let mut synced = Tree::new();
        let fsync_write = |t: &mut Tree, rel: &str, data: &[u8]| {
            let mut f = std::fs::File::create(b.p(rel)).unwrap();
            f.write_all(data).unwrap();
            f.sync_all().unwrap();
            put(t, rel, data);
        };
        fsync_write(
            &mut synced,
            "durable/small.txt",
            b"fsynced on B before the kill\n",
        );
        fsync_write(&mut synced, "durable/big.bin", &random_bytes(1_500_000, 31));
        fsync_write(
            &mut synced,
            "base-3.txt",
            b"base-3 edited and fsynced on B\n",
        );
        std::fs::File::open(b.p("durable"))
            .unwrap()
            .sync_all()
            .unwrap();
        b.kill_node();
        // A goes on while B is dead.
        std::thread::sleep(Duration::from_millis(1500));
        both(&|x| x.set_partitioned(false));
        b.mount(&[]);
        // B's own store kept what it fsynced.
        for (rel, node) in &synced {
            let Node::File(d) = node else { unreachable!() };
            assert!(
                std::fs::read(b.p(rel)).unwrap() == *d,
                "{rel} lost on B itself after the kill"
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        (writer.join().unwrap(), synced)
    });
    let mut expected = base;
    expected.extend(streamed);
    expected.extend(synced);
    let t0 = Instant::now();
    converge_to(a, b, "after the restart", &expected);
    eprintln!(
        "converged {:.1} s after the writes stopped ({} streamed files)",
        t0.elapsed().as_secs_f64(),
        expected.keys().filter(|k| k.starts_with("stream/")).count()
    );
    p.check_routed();
}

/// The garbage collector keeps a removed file's bytes while the other
/// member may still bring the file back: B, cut off, moves a file it never
/// read while A removes it, and A's `chanfs gc` keeps the bytes. When the
/// partition heals, the move wins and B reads the bytes from A. Once A
/// removes the file again and B has seen that, A's collection frees them.
#[test]
fn a_removed_file_keeps_its_bytes_until_the_other_member_saw_the_remove() {
    let p = Pair::start(4);
    let (a, b) = (&p.a, &p.b);
    let data = random_bytes(4 << 20, 41);
    let mut expected = Tree::new();
    mkdir(a, &mut expected, "d");
    std::fs::write(a.p("f.bin"), &data).unwrap();
    wait_for(CONVERGE_SECS, "f.bin listed on B", || {
        let len = std::fs::metadata(b.p("f.bin")).ok()?.len();
        (len == data.len() as u64 && b.p("d").is_dir()).then_some(())
    });
    p.faults(|x| x.set_partitioned(true));
    std::fs::rename(b.p("f.bin"), b.p("d/f.bin")).unwrap();
    std::fs::remove_file(a.p("f.bin")).unwrap();
    // Past the few seconds of grace of chunks just stored.
    std::thread::sleep(Duration::from_secs(11));
    let out = chanfs_ok(&a.home, &["gc"]);
    assert!(out.contains("kept 1 removed file"), "A's gc: {out}");
    assert!(a.stored() >= 4 << 20, "A stores {}", a.stored());

    p.faults(|x| x.set_partitioned(false));
    put(&mut expected, "d/f.bin", &data);
    converge_to(a, b, "after the partition healed", &expected);

    std::fs::remove_file(a.p("d/f.bin")).unwrap();
    wait_for(CONVERGE_SECS, "d/f.bin gone on B", || {
        (!b.p("d/f.bin").exists()).then_some(())
    });
    wait_for(CONVERGE_SECS, "A's gc to free the removed file", || {
        let out = chanfs_ok(&a.home, &["gc"]);
        (a.stored() < 1 << 20).then_some(out)
    });
}

/// Writes 2 MiB of random bytes (`seed`) to f.bin on `a`, waits until
/// `other` lists it whole, removes it on `a` and waits until `other` sees
/// it gone.
fn write_then_remove_seen_by(a: &Mounted, other: &Mounted, seed: u64) {
    let data = random_bytes(2 << 20, seed);
    std::fs::write(a.p("f.bin"), &data).unwrap();
    wait_for(CONVERGE_SECS, "f.bin listed on the other node", || {
        let len = std::fs::metadata(other.p("f.bin")).ok()?.len();
        (len == data.len() as u64).then_some(())
    });
    std::fs::remove_file(a.p("f.bin")).unwrap();
    wait_for(CONVERGE_SECS, "f.bin gone on the other node", || {
        (!other.p("f.bin").exists()).then_some(())
    });
}

/// The garbage collector hears of a member it never meets: A and C never
/// talk (each one's proxy drops the other's datagrams), so C's
/// confirmation that it saw a remove reaches A only relayed by B, and A's
/// collection frees the removed file's bytes (they stayed forever before
/// confirmations were relayed).
#[test]
fn a_member_reached_only_through_a_relay_confirms_a_remove() {
    let mut a = Mounted::initialized();
    let mut b = Mounted::initialized();
    let mut c = Mounted::initialized();
    let pa = UdpProxy::start_seeded(a.listen_addr(), 61).unwrap();
    let pb = UdpProxy::start_seeded(b.listen_addr(), 62).unwrap();
    let pc = UdpProxy::start_seeded(c.listen_addr(), 63).unwrap();
    for (m, p) in [(&a, &pa), (&b, &pb), (&c, &pc)] {
        m.set_config("advertise", &format!("[\"{}\"]", p.addr()));
    }
    a.create_channel();
    a.mount(&[]);
    b.join(&a, "rw");
    b.mount(&[]);
    c.join(&a, "rw");
    c.mount(&[]);
    pa.block_client(c.listen_addr());
    pc.block_client(a.listen_addr());
    write_then_remove_seen_by(&a, &c, 64);
    // Past the few seconds of grace of chunks just stored, and a few ticks
    // of confirmations.
    wait_for(CONVERGE_SECS, "A's gc to free the removed file", || {
        std::thread::sleep(Duration::from_millis(500));
        let out = chanfs_ok(&a.home, &["gc"]);
        (a.stored() < 1 << 20).then_some(out)
    });
    // Whichever dialed, the other's replies were dropped.
    assert!(
        pa.stats().dropped + pc.stats().dropped > 0,
        "A and C kept talking: {:?} {:?}",
        pa.stats(),
        pc.stats()
    );
}

/// Confirmations outlive a restart: B saw A's remove and confirmed it,
/// then left; A's node restarts, and its collection frees the removed
/// file's bytes without meeting B again (they stayed until B came back
/// while confirmations were kept in memory only).
#[test]
fn a_confirmation_counts_after_a_restart() {
    let mut a = Mounted::initialized();
    a.set_config("gc_interval", "0");
    a.create_channel();
    a.mount(&[]);
    let mut b = Mounted::joined(&a, "rw", "");
    write_then_remove_seen_by(&a, &b, 65);
    // A few ticks of confirmations (one every 2 s while B's vector grows).
    std::thread::sleep(Duration::from_secs(5));
    b.unmount();
    a.unmount();
    a.mount(&[]);
    assert!(a.stored() >= 2 << 20, "A stores {}", a.stored());
    // Nothing is young in a store just opened: the first run decides.
    let out = chanfs_ok(&a.home, &["gc"]);
    assert!(!out.contains("kept"), "A's gc: {out}");
    assert!(
        a.stored() < 1 << 20,
        "A stores {} after gc: {out}",
        a.stored()
    );
}
