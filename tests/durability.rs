//! What fsync acknowledged survives `kill -9` of the node, and a kill at any
//! moment leaves every file at its old or its new version, never torn.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use common::*;

#[test]
fn fsynced_data_survives_kill_9() {
    let mut m = Mounted::new();
    let data = random_bytes(5 << 20, 1);
    let mut f = File::create(m.p("synced.bin")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    // A large file is cut while written (its chunks go to the pack with
    // direct writes): fsync covers those too.
    let big = random_bytes(40 << 20, 2);
    let mut f = File::create(m.p("streamed.bin")).unwrap();
    f.write_all(&big).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::create_dir(m.p("dir")).unwrap();
    fs::write(m.p("dir/small"), b"small").unwrap();
    File::open(m.p("dir/small")).unwrap().sync_all().unwrap();
    m.kill_node();
    m.mount(&[]);
    assert_eq!(fs::read(m.p("synced.bin")).unwrap(), data);
    assert!(fs::read(m.p("streamed.bin")).unwrap() == big);
    assert_eq!(fs::read(m.p("dir/small")).unwrap(), b"small");
    // The store is fully usable after the crash.
    fs::write(m.p("after"), b"after").unwrap();
    m.unmount();
    m.mount(&[]);
    assert_eq!(fs::read(m.p("after")).unwrap(), b"after");
}

#[test]
fn kill_9_mid_rewrite_leaves_old_or_new_versions() {
    let mut m = Mounted::new();
    let n = 30;
    let old: Vec<Vec<u8>> = (0..n)
        .map(|i| random_bytes(100_000 + i * 10_000, i as u64))
        .collect();
    let new: Vec<Vec<u8>> = (0..n)
        .map(|i| random_bytes(90_000 + i * 7_000, 1000 + i as u64))
        .collect();
    for (i, d) in old.iter().enumerate() {
        fs::write(m.p(&format!("f{i}")), d).unwrap();
    }
    File::open(m.p("f0")).unwrap().sync_all().unwrap();
    // Rewrite in a thread; kill the node while it runs.
    let paths: Vec<_> = (0..n).map(|i| m.p(&format!("f{i}"))).collect();
    let new2 = new.clone();
    let writer = std::thread::spawn(move || {
        for (p, d) in paths.iter().zip(&new2) {
            let Ok(mut f) = OpenOptions::new().write(true).truncate(true).open(p) else {
                return;
            };
            if f.write_all(d).is_err() {
                return;
            }
            let _ = f.sync_all();
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(60));
    m.kill_node();
    let _ = writer.join();
    m.mount(&[]);
    for i in 0..n {
        let got = fs::read(m.p(&format!("f{i}"))).unwrap();
        assert!(
            got == old[i] || got == new[i] || got.is_empty(),
            "f{i} is torn: {} bytes, neither version",
            got.len()
        );
    }
}
