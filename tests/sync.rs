//! Two and three real nodes on 127.0.0.1, each with its own home and FUSE
//! mount: changes made in one mount appear in the others, content moves
//! lazily, and membership decides who may take part.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use chanfs::identity::NodeId;
use chanfs::net::delta;
use chanfs::net::frame::{decode, read_frame_bytes, write_frame};
use chanfs::net::proto::{ChunkReply, DeltaReply, Open, Token};
use chanfs::net::tls;
use chanfs::store::chunker;
use chanfs::store::manifest::{Extent, Manifest};
use common::{chanfs_ok, random_bytes, wait_for, Mounted};

fn read(p: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

#[test]
fn changes_propagate_both_ways() {
    let a = Mounted::new();
    let b = Mounted::joined(&a, "rw", "");
    // A file written on A is readable on B with the same bytes.
    let data = random_bytes(300_000, 1);
    std::fs::write(a.p("hello.bin"), &data).unwrap();
    let got = wait_for(10, "hello.bin on B", || {
        read(&b.p("hello.bin")).filter(|d| d.len() == data.len())
    });
    assert_eq!(got, data);
    // Directories, symlinks, modes, renames, xattrs, deletes.
    std::fs::create_dir(a.p("dir")).unwrap();
    std::fs::write(a.p("dir/note.txt"), b"note").unwrap();
    std::os::unix::fs::symlink("dir/note.txt", a.p("link")).unwrap();
    std::fs::set_permissions(a.p("hello.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
    wait_for(10, "dir/note.txt on B", || {
        read(&b.p("dir/note.txt")).filter(|d| d == b"note")
    });
    // The note's content is committed at its close, which may come after
    // the symlink's entry: wait for the link on its own.
    wait_for(10, "link on B", || {
        let t = std::fs::read_link(b.p("link")).ok()?;
        (t.to_str() == Some("dir/note.txt")).then_some(())
    });
    wait_for(10, "mode on B", || {
        let m = std::fs::metadata(b.p("hello.bin")).ok()?.mode() & 0o7777;
        (m == 0o600).then_some(())
    });
    std::fs::rename(a.p("dir/note.txt"), a.p("moved.txt")).unwrap();
    wait_for(10, "rename on B", || {
        read(&b.p("moved.txt")).filter(|d| d == b"note")
    });
    assert!(!b.p("dir/note.txt").exists());
    std::fs::remove_file(a.p("hello.bin")).unwrap();
    wait_for(10, "delete on B", || {
        (!b.p("hello.bin").exists()).then_some(())
    });
    // And back: B's changes reach A.
    std::fs::write(b.p("from-b.txt"), b"written on B").unwrap();
    wait_for(10, "from-b.txt on A", || {
        read(&a.p("from-b.txt")).filter(|d| d == b"written on B")
    });
    std::fs::write(b.p("moved.txt"), b"edited on B").unwrap();
    wait_for(10, "edit on A", || {
        read(&a.p("moved.txt")).filter(|d| d == b"edited on B")
    });
}

#[test]
fn content_is_fetched_lazily_chunk_by_chunk() {
    let a = Mounted::new();
    let b = Mounted::joined(&a, "rw", "");
    let data = random_bytes(24 << 20, 7);
    std::fs::write(a.p("big.bin"), &data).unwrap();
    // Metadata and size arrive before any content.
    wait_for(10, "big.bin's size on B", || {
        let len = std::fs::metadata(b.p("big.bin")).ok()?.len();
        (len == data.len() as u64).then_some(())
    });
    let before = b.status()["stored_bytes"].as_u64().unwrap();
    assert_eq!(before, 0, "B stored content nobody read");
    // 4 KiB at the end moves at most two chunks.
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(b.p("big.bin")).unwrap();
    f.seek(SeekFrom::Start(data.len() as u64 - 4096)).unwrap();
    let mut tail = vec![0u8; 4096];
    f.read_exact(&mut tail).unwrap();
    assert_eq!(tail, data[data.len() - 4096..]);
    let s = b.status();
    let chunks = s["chunks"].as_u64().unwrap();
    assert!(
        (1..=2).contains(&chunks),
        "reading 4 KiB fetched {chunks} chunks"
    );
    assert!(s["stored_bytes"].as_u64().unwrap() <= 512 << 10);
    // The whole file reads back byte for byte.
    assert_eq!(std::fs::read(b.p("big.bin")).unwrap(), data);
    // `status` counts the channel's bytes on both sides.
    let got = b.status()["channels"][0]["bytes_in"].as_u64().unwrap();
    let sent = a.status()["channels"][0]["bytes_out"].as_u64().unwrap();
    assert!(got >= data.len() as u64, "B counted {got} bytes in");
    assert!(sent >= data.len() as u64, "A counted {sent} bytes out");
}

#[test]
fn read_fails_with_eio_when_no_member_has_the_chunk() {
    let mut a = Mounted::new();
    // Long enough for `status` (a process of its own) to see the fetch
    // waiting on a busy machine; short enough to show the bound.
    let b = Mounted::joined(&a, "rw", "fetch_timeout = 3.0");
    std::fs::write(a.p("seen.txt"), b"read while A was up").unwrap();
    std::fs::write(a.p("unseen.bin"), random_bytes(100_000, 3)).unwrap();
    let seen = wait_for(10, "seen.txt on B", || {
        read(&b.p("seen.txt")).filter(|d| d == b"read while A was up")
    });
    wait_for(10, "unseen.bin on B", || {
        let len = std::fs::metadata(b.p("unseen.bin")).ok()?.len();
        (len == 100_000).then_some(())
    });
    a.unmount();
    let fetching = || b.status()["channels"][0]["fetching"].as_u64().unwrap();
    let t = std::time::Instant::now();
    let (err, seen_fetching) = std::thread::scope(|sc| {
        let reader = sc.spawn(|| std::fs::read(b.p("unseen.bin")));
        // While the read waits, `status` shows the channel's fetch.
        let mut most = 0;
        while !reader.is_finished() {
            most = most.max(fetching());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (
            reader.join().unwrap().expect_err("read without any source"),
            most,
        )
    });
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "EIO took {:?}",
        t.elapsed()
    );
    assert!(seen_fetching >= 1, "status never showed the fetch");
    assert_eq!(fetching(), 0);
    assert_eq!(b.status()["channels"][0]["to_apply"], 0);
    // Content already here stays readable offline.
    assert_eq!(std::fs::read(b.p("seen.txt")).unwrap(), seen);
}

/// Reads a file past the kernel's page cache (its cached pages dropped
/// first), so that the node serves every byte.
fn read_uncached(p: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    let f = std::fs::File::open(p)?;
    posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED)?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut &f, &mut out)?;
    Ok(out)
}

/// With `cache_max`, a member keeps at most that much content fetched
/// from others: the least recently read goes and is fetched again when
/// read; content written on the member itself is never evicted, so it
/// stays readable with every other member gone, while evicted content
/// then fails with `EIO`.
#[test]
fn fetched_content_beyond_the_cache_quota_is_evicted_and_fetched_again() {
    let mut a = Mounted::new();
    let b = Mounted::joined(
        &a,
        "rw",
        "cache_max = \"1 MiB\"\nfetch_timeout = 2.0\ngc_interval = 0",
    );
    let mib = 1 << 20;
    let files: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(mib, 40 + i)).collect();
    for (i, d) in files.iter().enumerate() {
        std::fs::write(a.p(&format!("x{i}.bin")), d).unwrap();
    }
    for (i, d) in files.iter().enumerate() {
        let got = wait_for(20, "x*.bin on B", || {
            read(&b.p(&format!("x{i}.bin"))).filter(|g| g.len() == d.len())
        });
        assert!(got == *d, "x{i}.bin read on B differs");
    }
    let own = random_bytes(2 * mib, 50);
    std::fs::write(b.p("own.bin"), &own).unwrap();
    let fetched = |m: &Mounted| m.status()["fetched_bytes"].as_u64().unwrap();
    assert!(fetched(&b) >= 3 * mib as u64, "B fetched {}", fetched(&b));
    // Evicted once the chunks are past the collector's grace.
    wait_for(40, "B's fetched content within its quota", || {
        (fetched(&b) <= mib as u64).then_some(())
    });
    let s = b.status();
    assert_eq!(s["cache_max"].as_u64(), Some(mib as u64));
    let stored = s["stored_bytes"].as_u64().unwrap();
    assert!(
        stored <= 3 * mib as u64 + (64 << 10),
        "B stores {stored} bytes after eviction"
    );
    // Evicted content is fetched again, byte for byte.
    for (i, d) in files.iter().enumerate() {
        let got = read_uncached(&b.p(&format!("x{i}.bin"))).unwrap();
        assert!(got == *d, "x{i}.bin read again on B differs");
    }
    assert!(fetched(&b) > mib as u64);
    // With A gone, B's own file reads back whatever was evicted; what was
    // evicted fails with EIO.
    a.unmount();
    wait_for(40, "B's fetched content within its quota again", || {
        (fetched(&b) <= mib as u64).then_some(())
    });
    assert!(read_uncached(&b.p("own.bin")).unwrap() == own);
    let mut failed = 0;
    for (i, d) in files.iter().enumerate() {
        match read_uncached(&b.p(&format!("x{i}.bin"))) {
            Ok(got) => assert!(got == *d, "x{i}.bin read offline on B differs"),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
                failed += 1;
            }
        }
    }
    // 3 MiB of fetched content down to 1 MiB: two files at least lost
    // chunks.
    assert!(failed >= 2, "only {failed} files were evicted");
}

#[test]
fn read_only_member_gets_erofs_and_still_receives() {
    let a = Mounted::new();
    let b = Mounted::joined(&a, "ro", "");
    let err = std::fs::write(b.p("nope.txt"), b"x").expect_err("write on an ro member");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    std::fs::write(a.p("news.txt"), b"for everyone").unwrap();
    wait_for(10, "news.txt on the ro member", || {
        read(&b.p("news.txt")).filter(|d| d == b"for everyone")
    });
    let err = std::fs::write(b.p("news.txt"), b"changed").expect_err("edit on an ro member");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

#[test]
fn invitations_work_once_and_only_the_leader_admits() {
    let a = Mounted::new();
    let b = Mounted::joined(&a, "rw", "");
    let token = common::chanfs_ok(&a.home, &["channel", "invite", "work"]);
    let c_home = b.tmp.path().join("c-home");
    common::chanfs_ok(&c_home, &["init"]);
    common::chanfs_ok(&c_home, &["channel", "join", token.trim()]);
    let d_home = b.tmp.path().join("d-home");
    common::chanfs_ok(&d_home, &["init"]);
    let o = common::chanfs(&d_home, &["channel", "join", token.trim()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already used"), "{err}");
    // A member that is not the leader cannot admit anyone.
    let o = common::chanfs(&b.home, &["channel", "invite", "work"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("only the leader"));
    let d_id = common::chanfs_ok(&d_home, &["id"]);
    let o = common::chanfs(&b.home, &["channel", "add-member", "work", d_id.trim()]);
    assert!(!o.status.success());
    // `show` lists the leader and both members on every node.
    let show = wait_for(10, "three members known to B", || {
        let s = common::chanfs_ok(&b.home, &["channel", "show", "work"]);
        (s.lines().filter(|l| l.starts_with("member")).count() == 2).then_some(s)
    });
    assert!(show.contains(&a.id()), "{show}");
    for h in [&c_home, &d_home] {
        let _ = common::chanfs(h, &["unmount", "/nonexistent"]);
    }
}

#[test]
fn strangers_are_refused_and_see_nothing() {
    let a = Mounted::new();
    std::fs::write(a.p("secret.txt"), b"members only").unwrap();
    // C makes a channel of its own that names A as a member and dials it.
    let c = Mounted::new();
    let a_addr = a.status()["listen"].as_str().unwrap().to_string();
    common::chanfs_ok(
        &c.home,
        &["channel", "add-member", "work", &a.id(), "--addr", &a_addr],
    );
    wait_for(10, "A to log the refusal", || {
        let log = std::fs::read_to_string(a.home.join("node.log")).ok()?;
        log.contains("not a member of any channel here")
            .then_some(())
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!c.p("secret.txt").exists());
    let s = c.status();
    assert_eq!(s["channels"][0]["members"][1]["connected"], false);
}

#[test]
fn removed_member_is_cut_off() {
    let a = Mounted::new();
    let b = Mounted::joined(&a, "rw", "");
    std::fs::write(a.p("before.txt"), b"shared").unwrap();
    wait_for(10, "before.txt on B", || {
        read(&b.p("before.txt")).filter(|d| d == b"shared")
    });
    std::fs::write(b.p("early-b.txt"), b"made while a member").unwrap();
    wait_for(10, "early-b.txt on A", || {
        read(&a.p("early-b.txt")).filter(|d| d == b"made while a member")
    });
    common::chanfs_ok(&a.home, &["channel", "remove-member", "work", &b.id()]);
    wait_for(10, "B disconnected", || {
        let s = a.status();
        let members = s["channels"][0]["members"].as_array()?.len();
        (members == 1).then_some(())
    });
    std::fs::write(a.p("after.txt"), b"not for B").unwrap();
    std::fs::write(b.p("from-b.txt"), b"B's late change").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        !b.p("after.txt").exists(),
        "a removed member got a new file"
    );
    assert!(
        !a.p("from-b.txt").exists(),
        "a removed member's change was taken"
    );
    // What B made while a member stays, also for a member who joins later
    // (it gets B's entries after learning that B was removed).
    let c = Mounted::joined(&a, "rw", "");
    wait_for(10, "after.txt on C", || {
        read(&c.p("after.txt")).filter(|d| d == b"not for B")
    });
    assert_eq!(
        read(&c.p("early-b.txt")).as_deref(),
        Some(&b"made while a member"[..]),
        "a change the removed member made while a member is missing on a newcomer"
    );
    assert!(!c.p("from-b.txt").exists());
}

#[test]
fn offline_member_catches_up_and_deletes_stay_deleted() {
    let a = Mounted::new();
    let mut b = Mounted::joined(&a, "rw", "");
    for i in 0..20 {
        std::fs::write(a.p(&format!("f{i}.txt")), format!("v1 {i}")).unwrap();
    }
    wait_for(10, "20 files on B", || {
        (std::fs::read_dir(&b.mnt).ok()?.count() == 20).then_some(())
    });
    b.unmount();
    for i in 0..10 {
        std::fs::remove_file(a.p(&format!("f{i}.txt"))).unwrap();
    }
    std::fs::write(a.p("f15.txt"), "v2").unwrap();
    std::fs::create_dir(a.p("new-dir")).unwrap();
    b.mount(&[]);
    wait_for(10, "B to catch up", || {
        let names: std::collections::BTreeSet<String> = std::fs::read_dir(&b.mnt)
            .ok()?
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        (names.len() == 11 && names.contains("new-dir")).then_some(())
    });
    assert!(!b.p("f3.txt").exists());
    assert_eq!(std::fs::read(b.p("f15.txt")).unwrap(), b"v2");
}

#[test]
fn concurrent_edits_keep_both_versions_on_every_node() {
    let mut a = Mounted::new();
    let mut b = Mounted::joined(&a, "rw", "");
    std::fs::write(a.p("doc.txt"), b"base").unwrap();
    wait_for(10, "doc.txt on B", || {
        read(&b.p("doc.txt")).filter(|d| d == b"base")
    });
    // Apart: each edits the same version.
    b.unmount();
    std::fs::write(a.p("doc.txt"), b"edited on A").unwrap();
    a.unmount();
    b.mount(&[]);
    std::fs::write(b.p("doc.txt"), b"edited on B").unwrap();
    a.mount(&[]);
    // Both versions, not a state on the way (B then never matches it).
    let on_a = wait_for(30, "two versions on A", || {
        let l = listing(&a);
        let has = |c: &[u8]| l.iter().any(|(_, d)| d == c);
        (l.len() == 2 && has(b"edited on A") && has(b"edited on B")).then_some(l)
    });
    wait_listing(&b, "B", &on_a, 30);
    let on_b = on_a;
    let contents: Vec<&[u8]> = on_b.iter().map(|(_, c)| c.as_slice()).collect();
    assert!(contents.contains(&&b"edited on A"[..]), "{on_b:?}");
    assert!(contents.contains(&&b"edited on B"[..]), "{on_b:?}");
    assert!(on_b.iter().any(|(n, _)| n == "doc.txt"));
    assert!(on_b
        .iter()
        .any(|(n, _)| n.starts_with("doc.conflict-") && n.ends_with(".txt")));
}

#[test]
fn any_member_relays_entries_and_chunks() {
    let mut a = Mounted::new();
    let b = Mounted::joined(&a, "rw", "");
    let mut c = Mounted::joined(&a, "rw", "");
    c.unmount();
    let data = random_bytes(200_000, 11);
    std::fs::write(a.p("from-a.bin"), &data).unwrap();
    std::fs::create_dir(a.p("dir-a")).unwrap();
    wait_for(10, "from-a.bin on B", || {
        read(&b.p("from-a.bin")).filter(|d| d == &data)
    });
    a.unmount();
    // A is gone; C only ever meets B, yet gets A's signed changes and the
    // content B holds.
    c.mount(&[]);
    let got = wait_for(10, "from-a.bin on C", || {
        read(&c.p("from-a.bin")).filter(|d| d.len() == data.len())
    });
    assert_eq!(got, data);
    assert!(c.p("dir-a").is_dir());
}

/// Bytes exchanged by A with its peers so far.
fn traffic(m: &Mounted) -> u64 {
    let s = m.status();
    s["bytes_in"].as_u64().unwrap() + s["bytes_out"].as_u64().unwrap()
}

#[test]
fn an_edit_moves_only_the_changed_bytes() {
    let a = Mounted::new();
    let b = Mounted::joined(&a, "rw", "");
    let mut data = random_bytes(16 << 20, 5);
    std::fs::write(a.p("big.bin"), &data).unwrap();
    wait_for(20, "big.bin on B", || {
        read(&b.p("big.bin")).filter(|d| d == &data)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    // A 4 KiB overwrite in the middle.
    let before = traffic(&a);
    let chunks = b.status()["chunks"].as_u64().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(a.p("big.bin"))
            .unwrap();
        f.seek(SeekFrom::Start(8 << 20)).unwrap();
        f.write_all(&[0xAB; 4096]).unwrap();
    }
    data[8 << 20..(8 << 20) + 4096].fill(0xAB);
    wait_for(20, "the edit's chunks on B", || {
        (b.status()["chunks"].as_u64()? > chunks).then_some(())
    });
    assert_eq!(std::fs::read(b.p("big.bin")).unwrap(), data);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let moved = traffic(&a) - before;
    assert!(moved <= 150_000, "a 4 KiB overwrite moved {moved} bytes");
    // One byte inserted at the start.
    let before = traffic(&a);
    let chunks = b.status()["chunks"].as_u64().unwrap();
    data.insert(0, b'!');
    std::fs::write(a.p("big.bin"), &data).unwrap();
    wait_for(20, "the insert's chunks on B", || {
        (b.status()["chunks"].as_u64()? > chunks).then_some(())
    });
    assert_eq!(std::fs::read(b.p("big.bin")).unwrap(), data);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let moved = traffic(&a) - before;
    assert!(moved <= 150_000, "a 1-byte insert moved {moved} bytes");
}

/// Names and contents of the top directory of a mount, sorted.
fn listing(m: &Mounted) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits up to `secs` for `m` (node `who`) to list exactly `want`, names
/// and bytes; on timeout fails with what it lists and its node's log.
fn wait_listing(m: &Mounted, who: &str, want: &[(String, Vec<u8>)], secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let l = listing(m);
        if l == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{who} never showed {want:?}: it shows {l:?}\n{who}'s node log:\n{}",
            common::log_tail(&m.home)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn two_new_files_with_one_name_both_survive_and_edit_beats_delete() {
    let mut a = Mounted::new();
    let mut b = Mounted::joined(&a, "rw", "");
    std::fs::write(a.p("kept.txt"), b"v1").unwrap();
    wait_for(10, "kept.txt on B", || {
        read(&b.p("kept.txt")).filter(|d| d == b"v1")
    });
    b.unmount();
    std::fs::write(a.p("same.txt"), b"made on A").unwrap();
    std::fs::remove_file(a.p("kept.txt")).unwrap();
    a.unmount();
    b.mount(&[]);
    std::fs::write(b.p("same.txt"), b"made on B").unwrap();
    std::fs::write(b.p("kept.txt"), b"v2 edited on B").unwrap();
    a.mount(&[]);
    // Everything, not a state on the way (B then never matches it).
    let on_a = wait_for(30, "A to converge", || {
        let l = listing(&a);
        let has = |n: &str, c: &[u8]| l.iter().any(|(m, d)| m.starts_with(n) && d == c);
        let done = l.len() == 3
            && has("kept.txt", b"v2 edited on B")
            && has("same", b"made on A")
            && has("same", b"made on B");
        done.then_some(l)
    });
    wait_listing(&b, "B", &on_a, 30);
    let on_b = on_a;
    assert!(on_b.contains(&("kept.txt".to_string(), b"v2 edited on B".to_vec())));
    let same: Vec<&(String, Vec<u8>)> =
        on_b.iter().filter(|(n, _)| n.starts_with("same")).collect();
    assert_eq!(same.len(), 2, "{on_b:?}");
    assert!(same.iter().any(|(n, _)| n == "same.txt"));
    assert!(same.iter().any(|(_, c)| c == b"made on A"));
    assert!(same.iter().any(|(_, c)| c == b"made on B"));
    // Removing the file that holds the name gives it back to the other,
    // at once on B (the kernel forgets the old names too) and on A.
    let (holder, other) = if same
        .iter()
        .any(|(n, c)| n == "same.txt" && c == b"made on A")
    {
        (b"made on A", b"made on B")
    } else {
        (b"made on B", b"made on A")
    };
    assert_eq!(std::fs::read(b.p("same.txt")).unwrap(), holder);
    std::fs::remove_file(b.p("same.txt")).unwrap();
    for (m, who) in [(&b, "B"), (&a, "A")] {
        wait_for(10, &format!("the name back on {who}"), || {
            let l = listing(m);
            let s: Vec<_> = l.iter().filter(|(n, _)| n.starts_with("same")).collect();
            (s.len() == 1 && s[0].0 == "same.txt" && s[0].1 == other).then_some(())
        });
    }
}

/// `chanfs serve` in the foreground, ended (SIGTERM, then SIGKILL) on drop.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node run with `chanfs serve` stays up without a mount (also after
/// its last unmount), takes the channel's changes and hands them on: A
/// writes while C is away and leaves; C gets A's file from the serving
/// node. SIGTERM stops it cleanly.
#[test]
fn a_serving_node_without_mount_relays() {
    let mut a = Mounted::new();
    let mut b = Mounted::initialized();
    let mut serving = Serving(
        std::process::Command::new(common::bin())
            .arg("--home")
            .arg(&b.home)
            .arg("serve")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(10, "B's node to answer", || {
        common::chanfs(&b.home, &["status", "--json"])
            .status
            .success()
            .then_some(())
    });
    b.join(&a, "rw");
    b.mount(&[]);
    // Its last unmount does not end a serving node.
    common::chanfs_ok(&b.home, &["unmount", b.mnt.to_str().unwrap()]);
    b.pid = None;
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(serving.0.try_wait().unwrap().is_none(), "serve ended");
    let mut c = Mounted::joined(&a, "rw", "");
    c.unmount();
    let data = random_bytes(30_000, 3);
    std::fs::write(a.p("from-a.txt"), &data).unwrap();
    let entries = |m: &Mounted| m.status()["journal_entries"].as_u64().unwrap();
    wait_for(10, "B to hold A's entries", || {
        (entries(&b) == entries(&a)).then_some(())
    });
    a.unmount();
    c.mount(&[]);
    let got = wait_for(10, "from-a.txt on C", || read(&c.p("from-a.txt")));
    assert_eq!(got, data);
    let pid = nix::unistd::Pid::from_raw(serving.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_for(10, "serve to end", || serving.0.try_wait().unwrap());
    assert!(status.success(), "serve ended with {status}");
}

/// Peers listed under `bootstrap` in the config are dialed whatever the
/// channel records say: B knows only A's old address and A cannot reach B
/// (B advertised a dead one), so nothing flows until B lists A's new
/// address; then B catches up.
#[test]
fn bootstrap_peers_from_the_config_are_dialed() {
    let mut a = Mounted::new();
    let mut b = Mounted::initialized();
    b.set_config("advertise", "[\"127.0.0.1:9\"]");
    b.join(&a, "rw");
    b.mount(&[]);
    a.unmount();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    a.set_config("listen", &format!("\"127.0.0.1:{port}\""));
    a.mount(&[]);
    std::fs::write(a.p("after-move.txt"), b"A moved").unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        read(&b.p("after-move.txt")).is_none(),
        "B reached A without the bootstrap address"
    );
    b.unmount();
    b.set_config("bootstrap", &format!("[\"127.0.0.1:{port}\"]"));
    b.mount(&[]);
    let got = wait_for(10, "after-move.txt on B", || read(&b.p("after-move.txt")));
    assert_eq!(got, b"A moved");
}

/// A chunk's hash and bytes.
type Chunk<'a> = ([u8; 32], &'a [u8]);

/// The chunks `data` is cut into, and its manifest.
fn chunked(data: &[u8]) -> (Vec<Chunk<'_>>, Manifest) {
    let chunks: Vec<Chunk> = chunker::cut(data)
        .into_iter()
        .map(|(off, len)| {
            let b = &data[off..off + len];
            (*blake3::hash(b).as_bytes(), b)
        })
        .collect();
    let m = Manifest::from_extents(
        chunks
            .iter()
            .map(|(h, b)| Extent {
                len: b.len() as u64,
                hash: Some(*h),
            })
            .collect(),
    );
    (chunks, m)
}

/// Sends `open` on a new stream of `conn`; returns the raw reply frames.
async fn ask(conn: &quinn::Connection, open: &Open) -> anyhow::Result<Vec<Vec<u8>>> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, open).await?;
    send.finish()?;
    let mut frames = Vec::new();
    while let Some(f) = read_frame_bytes(&mut recv).await? {
        frames.push(f);
    }
    Ok(frames)
}

/// A node in two channels serves a member of one of them only that
/// channel's content. Without an index while the member is in every
/// channel there, with one once it is not; asked directly (as the member,
/// over QUIC), chunks and manifests of the other channel are answered as
/// content the node does not have, though it holds them.
#[test]
fn a_member_is_served_only_its_channels() {
    let a = Mounted::new();
    let mut b = Mounted::joined(&a, "rw", "");
    // B is in every channel of A.
    let early = random_bytes(300_000, 31);
    std::fs::write(a.p("early.bin"), &early).unwrap();
    wait_for(10, "early.bin on B", || {
        read(&b.p("early.bin")).filter(|d| d == &early)
    });
    // A's second channel has no B.
    let private = a.another_channel("private");
    let secret = random_bytes(1 << 20, 32);
    std::fs::write(private.p("secret.bin"), &secret).unwrap();
    assert_eq!(std::fs::read(private.p("secret.bin")).unwrap(), secret);
    let v1 = random_bytes(1 << 20, 33);
    std::fs::write(a.p("shared.bin"), &v1).unwrap();
    wait_for(10, "shared.bin on B", || {
        read(&b.p("shared.bin")).filter(|d| d == &v1)
    });
    let mut v2 = v1.clone();
    v2[500_000..504_096].fill(0xAB);
    std::fs::write(a.p("shared.bin"), &v2).unwrap();
    wait_for(10, "shared.bin's new version on B", || {
        read(&b.p("shared.bin")).filter(|d| d == &v2)
    });
    let mut names: Vec<String> = std::fs::read_dir(&b.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["early.bin", "shared.bin"]);

    // B's node ends; its identity asks A itself.
    b.unmount();
    let token = chanfs_ok(&a.home, &["channel", "invite", "work", "--role", "rw"]);
    let token = Token::decode(token.trim()).unwrap();
    let addr: std::net::SocketAddr = token.addrs[0].parse().unwrap();
    let ident = chanfs::identity::load(&b.home).unwrap();
    let (c1, m1) = chunked(&v1);
    let (_, m2) = chunked(&v2);
    let (cs, ms) = chunked(&secret);
    // Work's and the secret's chunks, interleaved, in one request.
    let mixed: Vec<(bool, [u8; 32], &[u8])> = c1
        .iter()
        .map(|(h, b)| (true, *h, *b))
        .zip(cs.iter().map(|(h, b)| (false, *h, *b)))
        .flat_map(|(w, s)| [w, s])
        .collect();
    let chunks = Open::Chunks {
        channel: token.channel,
        hashes: mixed.iter().map(|(_, h, _)| *h).collect(),
    };
    let delta = |old: &Manifest, new: &Manifest| Open::Delta {
        channel: token.channel,
        old: old.hash(),
        new: new.hash(),
    };
    let asks = [chunks, delta(&m1, &m2), delta(&m1, &ms), delta(&ms, &m2)];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let replies = rt.block_on(async {
        let ep = tls::endpoint("127.0.0.1:0".parse().unwrap(), &ident).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // A may still hold B's node's connection for a moment: retry.
        let replies = loop {
            let r = async {
                let conn =
                    tls::connect(&ep, &ident, addr, tls::ALPN, Some(NodeId(token.leader))).await?;
                let mut out = Vec::new();
                for open in &asks {
                    out.push(ask(&conn, open).await?);
                }
                conn.close(0u32.into(), b"done");
                anyhow::Ok(out)
            };
            match r.await {
                Ok(out) => break out,
                Err(e) if std::time::Instant::now() < deadline => {
                    eprintln!("asking A: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("asking A: {e}"),
            }
        };
        ep.wait_idle().await;
        replies
    });
    // One reply per chunk: the work ones with their bytes, the secret ones
    // missing (the stream ends normally).
    assert_eq!(replies[0].len(), mixed.len());
    for (i, ((work, _, bytes), frame)) in mixed.iter().zip(&replies[0]).enumerate() {
        match decode::<ChunkReply>(frame).unwrap() {
            ChunkReply::Found(b) => assert!(*work && b == *bytes, "chunk {i} (work: {work})"),
            ChunkReply::Missing => assert!(!work, "work's chunk {i} missing"),
        }
    }
    // The edit's delta rebuilds the new chunks; deltas naming the secret's
    // manifest are unavailable.
    let [frame] = &replies[1][..] else {
        panic!("{} delta replies", replies[1].len())
    };
    let DeltaReply::Region { pre, suf, middle } = decode(frame).unwrap() else {
        panic!("work's delta unavailable")
    };
    let (p, oe, ne) = delta::changed(&m1, &m2);
    let start: u64 = m1.extents()[..p].iter().map(|e| e.len).sum();
    let len: u64 = m1.extents()[p..oe].iter().map(|e| e.len).sum();
    let old = &v1[start as usize..(start + len) as usize];
    let rebuilt = delta::rebuild(old, pre, suf, &middle, &m2.extents()[p..ne]);
    assert!(rebuilt.is_some_and(|c| !c.is_empty()));
    for r in &replies[2..] {
        let [frame] = &r[..] else {
            panic!("{} delta replies", r.len())
        };
        let reply: DeltaReply = decode(frame).unwrap();
        assert!(matches!(reply, DeltaReply::Unavailable), "{reply:?}");
    }
}
