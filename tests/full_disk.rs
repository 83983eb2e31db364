//! A full disk gives ENOSPC, loses nothing already written, and the node
//! keeps serving once space is freed: removing files in the mount gives
//! their space back (the garbage collector runs soon after a refused
//! write), as does removing files elsewhere on the disk.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::process::Command;

use common::*;

/// A small tmpfs, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_is_enospc_and_recoverable() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    fs::create_dir(&small).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(
        ok.success(),
        "mounting a tmpfs for the test failed (needs root)"
    );
    let _guard = SmallFs(small.clone());
    // Something else on the disk, which the user deletes to make room.
    let ballast = small.join("ballast");
    fs::write(&ballast, vec![1u8; 4 << 20]).unwrap();
    let home = small.join("home");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    chanfs_ok(&home, &["init"]);
    chanfs_ok(&home, &["channel", "create", "work"]);
    chanfs_ok(&home, &["mount", "work", mnt.to_str().unwrap()]);
    let mut m = Mounted {
        tmp,
        home,
        mnt,
        channel: "work".into(),
        pid: None,
    };
    m.pid = Some(m.status()["pid"].as_u64().unwrap() as u32);
    fs::write(m.p("keep"), b"written before the disk filled").unwrap();
    // Files that go to the store (cut when closed), removed later.
    for i in 0..4 {
        fs::write(m.p(&format!("part-{i}")), random_bytes(2 << 20, 200 + i)).unwrap();
    }
    // Write far more than fits (distinct bytes: repeated ones would be
    // stored once and fit).
    let res = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(m.p("huge"))?;
        for i in 0..64 {
            f.write_all(&random_bytes(1 << 20, 3 + i))?;
        }
        f.sync_all()
    })();
    let e = res.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Removing the file gives its space back: a new file of distinct
    // bytes, which did not fit, fits once the collector has run (it runs
    // about 11 s after a refused write, past its grace for chunks just
    // stored).
    let _ = fs::remove_file(m.p("huge"));
    for i in 0..4 {
        fs::remove_file(m.p(&format!("part-{i}"))).unwrap();
    }
    assert_eq!(
        fs::read(m.p("keep")).unwrap(),
        b"written before the disk filled"
    );
    // More than is free now: only the chunks the big file left in the
    // store can make room for it.
    let left_behind = m.stored();
    assert!(
        left_behind >= 6 << 20,
        "the big file stored {left_behind} bytes"
    );
    let st = nix::sys::statvfs::statvfs(&small).unwrap();
    let free = st.blocks_available() * st.fragment_size();
    // In files of 1 MiB (a file's bytes are staged before they are
    // stored: a big one would need room for both for a while).
    let fill: Vec<Vec<u8>> = (0..free.div_ceil(1 << 20) + 2)
        .map(|i| random_bytes(1 << 20, 300 + i))
        .collect();
    wait_for(
        60,
        "the collector to free the removed files' chunks",
        || (m.stored() < 1 << 20).then_some(()),
    );
    for (i, d) in fill.iter().enumerate() {
        let mut f = fs::File::create(m.p(&format!("refill-{i}"))).unwrap();
        f.write_all(d).unwrap();
        f.sync_all().unwrap();
    }
    let check_fill = |m: &Mounted| {
        for (i, d) in fill.iter().enumerate() {
            assert!(
                fs::read(m.p(&format!("refill-{i}"))).unwrap() == *d,
                "refill-{i}"
            );
        }
    };
    check_fill(&m);
    // Space freed outside the store works too.
    fs::remove_file(&ballast).unwrap();
    let mut f = fs::File::create(m.p("after")).unwrap();
    f.write_all(b"after").unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.unmount();
    m.mount(&[]);
    assert_eq!(
        fs::read(m.p("keep")).unwrap(),
        b"written before the disk filled"
    );
    assert_eq!(fs::read(m.p("after")).unwrap(), b"after");
    check_fill(&m);
    // The database never met the full disk (it would refuse every commit
    // after that until reopened).
    let log = fs::read_to_string(m.home.join("node.log")).unwrap();
    assert!(!log.contains("store commit failed"), "{log}");
}
