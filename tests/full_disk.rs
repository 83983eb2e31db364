//! A full disk gives ENOSPC, loses nothing already written, and the node
//! keeps serving once space is freed.
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
    // Free space; the node still serves and new writes work. (Removing
    // the file is not enough: chunks it stored stay until the store has a
    // garbage collector.)
    let _ = fs::remove_file(m.p("huge"));
    fs::remove_file(&ballast).unwrap();
    assert_eq!(
        fs::read(m.p("keep")).unwrap(),
        b"written before the disk filled"
    );
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
}
