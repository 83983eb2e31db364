//! The chunk store as seen through a mount: identical content is stored
//! once, a small edit in a big file stores only its neighbourhood, and every
//! change is a journal entry.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::*;

#[test]
fn copies_dedup_and_small_edits_store_little() {
    let m = Mounted::new();
    let data = random_bytes(64 << 20, 5);
    fs::write(m.p("big"), &data).unwrap();
    let s0 = m.stored();
    assert!(
        (64 << 20..(64 << 20) + (1 << 20)).contains(&s0),
        "stored {s0}"
    );
    // A copy inside the mount adds (almost) nothing.
    sh(&m.mnt, "cp big copy");
    let s1 = m.stored();
    assert!(
        s1 - s0 <= (64 << 20) / 100,
        "copy stored {} new bytes",
        s1 - s0
    );
    // A 4 KiB in-place write stores only around the edit.
    let f = OpenOptions::new().write(true).open(m.p("big")).unwrap();
    f.write_all_at(&random_bytes(4096, 6), 30 << 20).unwrap();
    drop(f);
    let s2 = m.stored();
    assert!(
        s2 - s1 <= 512 << 10,
        "4 KiB edit stored {} new bytes",
        s2 - s1
    );
    let mut expect = data.clone();
    expect[30 << 20..(30 << 20) + 4096].copy_from_slice(&random_bytes(4096, 6));
    assert_eq!(fs::read(m.p("big")).unwrap(), expect);
    assert_eq!(fs::read(m.p("copy")).unwrap(), data);
    // A 1-byte insert at the start realigns after the first chunks.
    let mut ins = vec![b'!'];
    ins.extend_from_slice(&data);
    fs::write(m.p("copy"), &ins).unwrap();
    let s3 = m.stored();
    assert!(
        s3 - s2 <= 1 << 20,
        "1-byte insert stored {} new bytes",
        s3 - s2
    );
    let st = m.status();
    assert!(st["dedup_ratio"].as_f64().unwrap() > 1.9);
    assert!(st["journal_entries"].as_u64().unwrap() >= 4);
}

#[test]
fn status_counts_files_and_journal_entries() {
    let m = Mounted::new();
    let before = m.status()["journal_entries"].as_u64().unwrap();
    for i in 0..10 {
        fs::write(m.p(&format!("f{i}")), format!("{i}")).unwrap();
    }
    fs::create_dir(m.p("d")).unwrap();
    fs::rename(m.p("f0"), m.p("d/f0")).unwrap();
    fs::remove_file(m.p("f1")).unwrap();
    // Entries reach the journal in group commits; give them a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let s = m.status();
    assert_eq!(s["mounts"][0]["files"], 9);
    assert_eq!(s["mounts"][0]["logical_bytes"], 9);
    let entries = s["journal_entries"].as_u64().unwrap() - before;
    // 10 creates + 10 contents + mkdir + rename + remove.
    assert!(entries >= 23, "{entries} journal entries");
}

/// A big new file whose writes come out of order and with a rewrite of
/// bytes already written (so partly cut while written, partly at close)
/// reads back byte for byte, also after a remount, and is stored once.
#[test]
fn big_file_written_out_of_order_reads_back() {
    let mut m = Mounted::new();
    let size = 40 << 20;
    let mut expect = random_bytes(size, 11);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("out-of-order"))
        .unwrap();
    let mib = 1 << 20;
    let order: Vec<usize> = (0..12).chain([13, 12]).chain(14..40).collect();
    for i in order {
        f.write_all_at(&expect[i * mib..(i + 1) * mib], (i * mib) as u64)
            .unwrap();
        if i == 20 {
            // Rewrite bytes written (and maybe cut) before.
            let patch = random_bytes(10_000, 12);
            expect[mib + 77..mib + 77 + patch.len()].copy_from_slice(&patch);
            f.write_all_at(&patch, (mib + 77) as u64).unwrap();
        }
    }
    f.sync_all().unwrap();
    drop(f);
    assert!(fs::read(m.p("out-of-order")).unwrap() == expect);
    let s = m.stored();
    assert!(
        s <= (size + (2 << 20)) as u64,
        "stored {s} bytes for {size}"
    );
    m.unmount();
    m.mount(&[]);
    assert!(fs::read(m.p("out-of-order")).unwrap() == expect);
}

/// A forked child closing the descriptors it inherited (at its exec) does
/// not commit a half-written file: the version is recorded once the
/// writer closes it, or once nothing was written for a second.
#[test]
fn a_child_closing_an_inherited_descriptor_commits_nothing_mid_write() {
    use std::io::Write;
    let m = Mounted::new();
    let entries = || m.status()["journal_entries"].as_u64().unwrap();
    let mut f = fs::File::create(m.p("log.txt")).unwrap();
    f.write_all(&random_bytes(1 << 20, 21)).unwrap();
    f.flush().unwrap();
    let before = entries();
    assert!(std::process::Command::new("true")
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(entries(), before, "the child's close committed a version");
    // Quiet for a second: recorded without the writer's close.
    wait_for(10, "the quiet file's version", || {
        (entries() > before).then_some(())
    });
    let quiet = entries();
    f.write_all(b"more").unwrap();
    drop(f);
    wait_for(10, "the version at close", || {
        (entries() > quiet).then_some(())
    });
    let mut expect = random_bytes(1 << 20, 21);
    expect.extend_from_slice(b"more");
    assert!(fs::read(m.p("log.txt")).unwrap() == expect);
}

/// `copy_file_range` inside the mount: a whole file into an empty one
/// shares its version (nothing new stored, same bytes, also after a
/// remount); ranges at offsets, and within one file, copy the right bytes.
#[test]
fn copy_file_range_shares_whole_files_and_copies_ranges() {
    use std::os::fd::AsFd;
    let mut m = Mounted::new();
    let data = random_bytes(24 << 20, 31);
    fs::write(m.p("src.bin"), &data).unwrap();
    let s0 = m.stored();
    let copy = |from: &str, off_in: i64, to: &str, off_out: i64, len: usize| -> usize {
        let fin = fs::File::open(m.p(from)).unwrap();
        let fout = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(m.p(to))
            .unwrap();
        let (mut a, mut b) = (off_in, off_out);
        let mut done = 0;
        while done < len {
            let n = nix::fcntl::copy_file_range(
                fin.as_fd(),
                Some(&mut a),
                fout.as_fd(),
                Some(&mut b),
                len - done,
            )
            .unwrap();
            if n == 0 {
                break;
            }
            done += n;
        }
        done
    };
    assert_eq!(copy("src.bin", 0, "whole.bin", 0, data.len()), data.len());
    assert_eq!(m.stored(), s0, "a whole-file copy stored bytes");
    assert!(fs::read(m.p("whole.bin")).unwrap() == data);
    // A range into the middle of a new file: zeros before it.
    let mib = 1 << 20;
    assert_eq!(copy("src.bin", mib as i64, "part.bin", 5, mib), mib);
    let mut want = vec![0u8; 5];
    want.extend_from_slice(&data[mib..2 * mib]);
    assert!(fs::read(m.p("part.bin")).unwrap() == want);
    // Within one file (ranges must not overlap).
    assert_eq!(copy("part.bin", 5, "part.bin", 2000, 1000), 1000);
    want[2000..3000].copy_from_slice(&data[mib..mib + 1000]);
    assert!(fs::read(m.p("part.bin")).unwrap() == want);
    m.unmount();
    m.mount(&[]);
    assert!(fs::read(m.p("whole.bin")).unwrap() == data);
    assert!(fs::read(m.p("part.bin")).unwrap() == want);
}

/// Bytes in memory aligned for `O_DIRECT`.
struct Aligned(Vec<u8>, usize);

impl Aligned {
    fn of(data: &[u8]) -> Aligned {
        let mut v = vec![0u8; data.len() + 4096];
        let at = v.as_ptr().align_offset(4096);
        v[at..at + data.len()].copy_from_slice(data);
        Aligned(v, at)
    }
    fn bytes(&self, len: usize) -> &[u8] {
        &self.0[self.1..self.1 + len]
    }
}

/// A big new file is cut while written. Writes sent straight to the node
/// (`O_DIRECT`, so the kernel neither reorders nor caches them) in every
/// order the stream must handle: pairs of writes in reverse order, a
/// rewrite of bytes already cut, a write over bytes held ahead of the
/// stream, reads of bytes the stream holds, a truncate below its end. Each
/// file reads back byte for byte, before and after a remount, and is
/// stored about once.
#[test]
fn writes_in_any_order_while_a_file_is_cut_read_back() {
    let mut m = Mounted::new();
    let mib = 1 << 20;
    let open = |name: &str| {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.p(name))
            .unwrap()
    };
    let put = |f: &fs::File, data: &[u8], at: usize| {
        f.write_all_at(Aligned::of(data).bytes(data.len()), at as u64)
            .unwrap();
    };
    let get = |f: &fs::File, at: usize, len: usize| {
        let mut a = Aligned::of(&vec![0u8; len]);
        let at_ = a.1;
        f.read_exact_at(&mut a.0[at_..at_ + len], at as u64)
            .unwrap();
        a.bytes(len).to_vec()
    };
    let mut files = Vec::new();

    // Reversed pairs past the start of the stream, then a late rewrite.
    let mut a = random_bytes(40 * mib, 41);
    let f = open("pairs");
    let order: Vec<usize> = (0..10)
        .chain((10..30).step_by(2).flat_map(|i| [i + 1, i]))
        .chain(30..40)
        .collect();
    for i in order {
        put(&f, &a[i * mib..(i + 1) * mib], i * mib);
        if i == 20 {
            let patch = random_bytes(8192, 42);
            a[mib + 4096..mib + 4096 + patch.len()].copy_from_slice(&patch);
            put(&f, &patch, mib + 4096);
        }
    }
    f.sync_all().unwrap();
    drop(f);
    files.push(("pairs", a));

    // A write held ahead of the stream, then a write over part of it.
    let mut b = random_bytes(20 * mib, 43);
    let f = open("over-held");
    for i in (0..10).chain([12]) {
        put(&f, &b[i * mib..(i + 1) * mib], i * mib);
    }
    let patch = random_bytes(4096, 44);
    b[12 * mib + 8192..12 * mib + 8192 + 4096].copy_from_slice(&patch);
    put(&f, &patch, 12 * mib + 8192);
    for i in (10..12).chain(13..20) {
        put(&f, &b[i * mib..(i + 1) * mib], i * mib);
    }
    drop(f);
    files.push(("over-held", b));

    // Reads of bytes the stream holds (cut, queued, held ahead) and of a
    // gap before a held write.
    let c = random_bytes(24 * mib, 45);
    let f = open("read-mid");
    for i in (0..12).chain([14]) {
        put(&f, &c[i * mib..(i + 1) * mib], i * mib);
    }
    assert!(
        get(&f, 13 * mib, mib) == vec![0u8; mib],
        "a gap reads as zeros"
    );
    assert!(get(&f, 14 * mib, mib) == c[14 * mib..15 * mib]);
    assert!(get(&f, 3 * mib, mib) == c[3 * mib..4 * mib]);
    assert!(get(&f, 11 * mib, mib) == c[11 * mib..12 * mib]);
    for i in (12..14).chain(15..24) {
        put(&f, &c[i * mib..(i + 1) * mib], i * mib);
    }
    drop(f);
    files.push(("read-mid", c));

    // A truncate below the end of the stream, then more writes.
    let mut d = random_bytes(20 * mib, 46);
    let f = open("truncated");
    for i in 0..16 {
        put(&f, &d[i * mib..(i + 1) * mib], i * mib);
    }
    f.set_len((9 * mib + 5) as u64).unwrap();
    d[9 * mib + 5..10 * mib].fill(0);
    for i in 10..20 {
        put(&f, &d[i * mib..(i + 1) * mib], i * mib);
    }
    drop(f);
    files.push(("truncated", d));

    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    for (name, data) in &files {
        assert!(fs::read(m.p(name)).unwrap() == *data, "{name} differs");
    }
    let s = m.stored();
    assert!(
        s <= (total + 8 * mib) as u64,
        "stored {s} bytes for {total}"
    );
    m.unmount();
    m.mount(&[]);
    for (name, data) in &files {
        assert!(
            fs::read(m.p(name)).unwrap() == *data,
            "{name} differs after remount"
        );
    }
}

/// Total size of the pack files (what the chunks take on disk).
fn pack_bytes(m: &Mounted) -> u64 {
    fs::read_dir(m.home.join("store/packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// `chanfs gc`, returning the chunks, MiB and file versions it says it
/// freed.
fn gc(m: &Mounted) -> (u64, f64, u64) {
    let out = chanfs_ok(&m.home, &["gc"]);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], "freed", "{out}");
    assert_eq!(words[7..9], ["file", "versions;"], "{out}");
    let chunks = words[1].parse().unwrap();
    let mib = words[3].trim_start_matches('(').parse().unwrap();
    (chunks, mib, words[6].parse().unwrap())
}

/// Removing a file and overwriting part of another give their space back
/// at the next collection (`chanfs gc`), once the chunks are older than
/// the collector's few seconds of grace (the chunks and the versions'
/// manifests); chunks another file still shares stay; what is left reads
/// back byte for byte, also after a remount.
#[test]
fn removing_and_overwriting_files_give_the_space_back() {
    let mut m = Mounted::new();
    let big = random_bytes(32 << 20, 71);
    let mut over = random_bytes(16 << 20, 72);
    let keep = random_bytes(8 << 20, 73);
    fs::write(m.p("big"), &big).unwrap();
    fs::write(m.p("over"), &over).unwrap();
    fs::write(m.p("keep"), &keep).unwrap();
    sh(&m.mnt, "cp big copy");
    let s0 = m.stored();
    assert!((56 << 20..58 << 20).contains(&s0), "stored {s0}");
    fs::remove_file(m.p("big")).unwrap();
    let f = OpenOptions::new().write(true).open(m.p("over")).unwrap();
    let patch = random_bytes(1 << 20, 74);
    f.write_all_at(&patch, 6 << 20).unwrap();
    drop(f);
    over[6 << 20..7 << 20].copy_from_slice(&patch);
    // Past the grace (5 to 10 s) of chunks just stored.
    std::thread::sleep(std::time::Duration::from_secs(11));
    // The old version of "over" goes; the removed file's version is the
    // copy's too (same bytes, same manifest) and stays.
    let (chunks, mib, versions) = gc(&m);
    assert!(chunks > 0 && mib < 3.0, "freed {chunks} chunks, {mib} MiB");
    assert_eq!(versions, 1, "file versions freed");
    assert_eq!(fs::read(m.p("copy")).unwrap(), big, "shared chunks kept");
    fs::remove_file(m.p("copy")).unwrap();
    let (_, mib, versions) = gc(&m);
    assert!(mib >= 31.5, "freed {mib} MiB");
    assert_eq!(versions, 1, "file versions freed");
    let s1 = m.stored();
    assert!((24 << 20..26 << 20).contains(&s1), "stored {s1}");
    let disk = pack_bytes(&m);
    assert!(disk < 27 << 20, "packs take {disk} bytes");
    assert_eq!(m.status()["pack_bytes"].as_u64(), Some(disk), "status");
    assert_eq!(fs::read(m.p("over")).unwrap(), over);
    m.unmount();
    m.mount(&[]);
    assert_eq!(fs::read(m.p("over")).unwrap(), over);
    assert_eq!(fs::read(m.p("keep")).unwrap(), keep);
    assert_eq!(m.stored(), s1);
}

/// Collections running every second while a big file is written slowly
/// (cut and stored as it comes, for longer than the collector's grace),
/// while a small file is rewritten and others are created and removed,
/// take nothing still needed: every file reads back byte for byte, also
/// after a remount.
#[test]
fn collections_while_files_are_written_lose_nothing() {
    let mut m = Mounted::new();
    let big = random_bytes(96 << 20, 81);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (home, dir) = (m.home.clone(), m.mnt.clone());
    let runs = std::thread::scope(|sc| {
        let gc = sc.spawn(|| {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = chanfs(&home, &["gc"]);
                assert!(out.status.success(), "gc: {out:?}");
                runs += 1;
                std::thread::sleep(std::time::Duration::from_millis(700));
            }
            runs
        });
        let mut f = fs::File::create(dir.join("big")).unwrap();
        let mut small = Vec::new();
        for (i, part) in big.chunks(1 << 20).enumerate() {
            f.write_all(part).unwrap();
            small = random_bytes(40_000, 500 + i as u64);
            fs::write(dir.join("small"), &small).unwrap();
            fs::write(dir.join(format!("tmp-{i}")), random_bytes(70_000, i as u64)).unwrap();
            if i >= 3 {
                fs::remove_file(dir.join(format!("tmp-{}", i - 3))).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(130));
        }
        f.sync_all().unwrap();
        drop(f);
        // Collections after the file is whole too.
        std::thread::sleep(std::time::Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let runs = gc.join().unwrap();
        assert!(fs::read(dir.join("big")).unwrap() == big, "big file");
        assert_eq!(fs::read(dir.join("small")).unwrap(), small);
        (runs, small)
    });
    let (runs, small) = runs;
    assert!(runs >= 15, "only {runs} collections ran");
    m.unmount();
    m.mount(&[]);
    assert!(
        fs::read(m.p("big")).unwrap() == big,
        "big file after remount"
    );
    assert_eq!(fs::read(m.p("small")).unwrap(), small);
    for i in 93..96 {
        assert_eq!(
            fs::read(m.p(&format!("tmp-{i}"))).unwrap(),
            random_bytes(70_000, i)
        );
    }
}
