//! The chunk store as seen through a mount: identical content is stored
//! once, a small edit in a big file stores only its neighbourhood, and every
//! change is a journal entry.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use common::*;

fn stored(m: &Mounted) -> u64 {
    m.status()["stored_bytes"].as_u64().unwrap()
}

#[test]
fn copies_dedup_and_small_edits_store_little() {
    let m = Mounted::new();
    let data = random_bytes(64 << 20, 5);
    fs::write(m.p("big"), &data).unwrap();
    let s0 = stored(&m);
    assert!(
        (64 << 20..(64 << 20) + (1 << 20)).contains(&s0),
        "stored {s0}"
    );
    // A copy inside the mount adds (almost) nothing.
    sh(&m.mnt, "cp big copy");
    let s1 = stored(&m);
    assert!(
        s1 - s0 <= (64 << 20) / 100,
        "copy stored {} new bytes",
        s1 - s0
    );
    // A 4 KiB in-place write stores only around the edit.
    let f = OpenOptions::new().write(true).open(m.p("big")).unwrap();
    f.write_all_at(&random_bytes(4096, 6), 30 << 20).unwrap();
    drop(f);
    let s2 = stored(&m);
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
    let s3 = stored(&m);
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
    let s = stored(&m);
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
    let s0 = stored(&m);
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
    assert_eq!(stored(&m), s0, "a whole-file copy stored bytes");
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
