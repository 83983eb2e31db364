//! POSIX behaviour through a real mount: file kinds, renames, links,
//! attributes, xattrs, sparse and large files, appends, several handles,
//! shared mmap, and the errors a user should see.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use common::*;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use nix::sys::stat::{mknod, Mode, SFlag};

#[test]
fn kinds_attributes_and_xattrs_survive_remount() {
    let mut m = Mounted::new();
    fs::create_dir_all(m.p("a/b/c")).unwrap();
    fs::write(m.p("a/b/c/file.txt"), b"hello world\n").unwrap();
    std::os::unix::fs::symlink("b/c/file.txt", m.p("a/link")).unwrap();
    mknod(
        &m.p("a/fifo"),
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o640),
        0,
    )
    .unwrap();
    mknod(
        &m.p("a/sock"),
        SFlag::S_IFSOCK,
        Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    // chown clears setuid, so chmod after it.
    nix::unistd::chown(&m.p("a/b/c/file.txt"), Some(1234.into()), Some(4321.into())).unwrap();
    fs::set_permissions(m.p("a/b/c/file.txt"), fs::Permissions::from_mode(0o4751)).unwrap();
    let mtime = nix::sys::time::TimeSpec::new(1_000_000_000, 123_456_789);
    nix::sys::stat::utimensat(
        AT_FDCWD,
        &m.p("a/b/c/file.txt"),
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    xattr_set(&m.p("a/b/c/file.txt"), "user.colour", b"blue");
    m.unmount();
    m.mount(&[]);
    let md = fs::metadata(m.p("a/b/c/file.txt")).unwrap();
    assert_eq!(fs::read(m.p("a/link")).unwrap(), b"hello world\n");
    assert_eq!(
        fs::read_link(m.p("a/link")).unwrap().to_str(),
        Some("b/c/file.txt")
    );
    assert_eq!(md.mode() & 0o7777, 0o4751);
    assert_eq!((md.uid(), md.gid()), (1234, 4321));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 123_456_789));
    assert!(fs::symlink_metadata(m.p("a/fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    assert_eq!(
        fs::symlink_metadata(m.p("a/fifo")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(xattr_get(&m.p("a/b/c/file.txt"), "user.colour"), b"blue");
    assert_eq!(fs::metadata(m.p("a")).unwrap().nlink(), 3);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

fn xattr_set(p: &std::path::Path, name: &str, v: &[u8]) {
    sh(
        p.parent().unwrap(),
        &format!(
            "setfattr -n {name} -v {} '{}'",
            String::from_utf8_lossy(v),
            p.display()
        ),
    );
}

fn xattr_get(p: &std::path::Path, name: &str) -> Vec<u8> {
    sh(
        p.parent().unwrap(),
        &format!("getfattr --only-values -n {name} '{}'", p.display()),
    )
    .into_bytes()
}

#[test]
fn renames_in_every_form() {
    let m = Mounted::new();
    fs::create_dir(m.p("d1")).unwrap();
    fs::create_dir(m.p("d2")).unwrap();
    fs::write(m.p("d1/x"), b"x").unwrap();
    fs::write(m.p("d2/y"), b"y").unwrap();
    // Across directories, over an existing target.
    fs::rename(m.p("d1/x"), m.p("d2/y")).unwrap();
    assert_eq!(fs::read(m.p("d2/y")).unwrap(), b"x");
    assert!(!m.p("d1/x").exists());
    // RENAME_NOREPLACE refuses an existing target.
    fs::write(m.p("d1/a"), b"a").unwrap();
    let e = renameat2(
        AT_FDCWD,
        &m.p("d1/a"),
        AT_FDCWD,
        &m.p("d2/y"),
        RenameFlags::RENAME_NOREPLACE,
    )
    .unwrap_err();
    assert_eq!(e, nix::errno::Errno::EEXIST);
    // RENAME_EXCHANGE swaps.
    renameat2(
        AT_FDCWD,
        &m.p("d1/a"),
        AT_FDCWD,
        &m.p("d2/y"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(m.p("d1/a")).unwrap(), b"x");
    assert_eq!(fs::read(m.p("d2/y")).unwrap(), b"a");
    // A directory cannot move into itself; a non-empty one cannot be replaced.
    fs::create_dir(m.p("d1/sub")).unwrap();
    assert_eq!(
        fs::rename(m.p("d1"), m.p("d1/sub/in"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EINVAL)
    );
    fs::create_dir(m.p("d3")).unwrap();
    assert_eq!(
        fs::rename(m.p("d3"), m.p("d1")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    fs::rename(m.p("d1"), m.p("d2/moved")).unwrap();
    assert_eq!(fs::read(m.p("d2/moved/a")).unwrap(), b"x");
    assert_eq!(fs::metadata(m.p("d2")).unwrap().nlink(), 3);
}

#[test]
fn hard_links_share_content() {
    let m = Mounted::new();
    fs::write(m.p("one"), b"shared").unwrap();
    fs::hard_link(m.p("one"), m.p("two")).unwrap();
    assert_eq!(fs::metadata(m.p("one")).unwrap().nlink(), 2);
    fs::write(m.p("two"), b"changed").unwrap();
    assert_eq!(fs::read(m.p("one")).unwrap(), b"changed");
    fs::remove_file(m.p("one")).unwrap();
    assert_eq!(fs::metadata(m.p("two")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.p("two")).unwrap(), b"changed");
}

#[test]
fn sparse_large_append_truncate_and_handles() {
    let mut m = Mounted::new();
    // A sparse file over 4 GiB: holes read as zeros.
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(m.p("sparse"))
        .unwrap();
    let far = 5u64 << 30;
    f.write_all_at(b"end", far).unwrap();
    f.write_all_at(b"start", 10).unwrap();
    drop(f);
    let f = File::open(m.p("sparse")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), far + 3);
    let mut buf = [9u8; 16];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"\0\0\0\0\0\0\0\0\0\0start\0");
    f.read_exact_at(&mut buf, far - 13).unwrap();
    assert_eq!(&buf, b"\0\0\0\0\0\0\0\0\0\0\0\0\0end");
    f.read_exact_at(&mut buf[..8], 3 << 30).unwrap();
    assert_eq!(&buf[..8], &[0u8; 8]);
    drop(f);
    // O_APPEND.
    fs::write(m.p("log"), b"a\n").unwrap();
    let mut f = OpenOptions::new().append(true).open(m.p("log")).unwrap();
    f.write_all(b"b\n").unwrap();
    drop(f);
    assert_eq!(fs::read(m.p("log")).unwrap(), b"a\nb\n");
    // truncate and ftruncate, shrinking through a chunk and growing again.
    let data = random_bytes(1 << 20, 7);
    fs::write(m.p("t"), &data).unwrap();
    let f = OpenOptions::new().write(true).open(m.p("t")).unwrap();
    f.set_len(300_001).unwrap();
    f.set_len(400_000).unwrap();
    drop(f);
    let got = fs::read(m.p("t")).unwrap();
    assert_eq!(got.len(), 400_000);
    assert_eq!(&got[..300_001], &data[..300_001]);
    assert!(got[300_001..].iter().all(|&b| b == 0));
    nix::unistd::truncate(&m.p("t"), 5).unwrap();
    assert_eq!(fs::read(m.p("t")).unwrap(), &data[..5]);
    // Two handles on one file see the same bytes.
    let mut a = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.p("two"))
        .unwrap();
    let mut b = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("two"))
        .unwrap();
    a.write_all(b"from a").unwrap();
    let mut s = String::new();
    b.read_to_string(&mut s).unwrap();
    assert_eq!(s, "from a");
    b.seek(SeekFrom::Start(0)).unwrap();
    b.write_all(b"FROM").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    a.read_to_string(&mut s).unwrap();
    assert_eq!(s, "FROM a");
    drop((a, b));
    // Shared writable mmap, through python's mmap module.
    fs::write(m.p("mm"), vec![b'.'; 8192]).unwrap();
    sh(&m.mnt, "python3 -c \"import mmap,os; f=open('mm','r+b'); mm=mmap.mmap(f.fileno(),0); mm[4096:4101]=b'mmap!'; mm.flush(); mm.close(); f.close()\"");
    m.unmount();
    m.mount(&[]);
    let mm = fs::read(m.p("mm")).unwrap();
    assert_eq!(&mm[4096..4101], b"mmap!");
    assert_eq!(fs::metadata(m.p("sparse")).unwrap().len(), far + 3);
    assert_eq!(fs::read(m.p("log")).unwrap(), b"a\nb\n");
}

#[test]
fn clear_errors_for_bad_input() {
    let m = Mounted::new();
    let long = "n".repeat(256);
    assert_eq!(
        fs::write(m.p(&long), b"x").unwrap_err().raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    assert_eq!(
        fs::create_dir(m.p(&long)).unwrap_err().raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    fs::write(m.p(&"n".repeat(255)), b"ok").unwrap();
    let e = mknod(
        &m.p("blk"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        0x0801,
    )
    .unwrap_err();
    assert_eq!(e, nix::errno::Errno::EPERM);
    let e = mknod(
        &m.p("chr"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        0x0103,
    )
    .unwrap_err();
    assert_eq!(e, nix::errno::Errno::EPERM);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.p("big"))
        .unwrap();
    // Past the maximum file size: the write or, with the kernel's write-back
    // cache, the fsync that follows it reports EFBIG.
    let e = f
        .write_at(b"xy", 1 << 53)
        .and_then(|_| f.sync_all())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    let e = f.set_len(1 << 60).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    drop(f);
    fs::create_dir(m.p("dir")).unwrap();
    fs::write(m.p("dir/f"), b"x").unwrap();
    assert_eq!(
        fs::remove_dir(m.p("dir")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs::remove_file(m.p("dir")).unwrap_err().raw_os_error(),
        Some(libc::EISDIR)
    );
    assert_eq!(
        fs::read(m.p("missing")).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    assert_eq!(
        fs::create_dir(m.p("dir")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    let _ = OpenOptionsExt::mode(&mut OpenOptions::new(), 0o600);
    // The node keeps serving after all of that.
    assert_eq!(fs::read(m.p("dir/f")).unwrap(), b"x");
}

#[test]
fn statfs_reports_the_home_filesystem() {
    let m = Mounted::new();
    let s = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
    assert!(s.blocks() > 0);
    assert_eq!(s.name_max(), 255);
}

/// Runs `sh -c script` as user nobody (uid and gid 65534, no groups) with
/// `dir` as working directory; returns whether it succeeded.
fn as_nobody(dir: &std::path::Path, script: &str) -> bool {
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", script])
        .current_dir(dir)
        .status()
        .expect("setpriv (util-linux)")
        .success()
}

/// Set-user-id and set-group-id bits go as Linux takes them away: on a
/// write or truncate by an unprivileged user, on any chown of a file; a
/// write by root keeps them, and set-group-id without group execute
/// (mandatory locking) stays.
#[test]
fn set_id_bits_are_cleared_by_write_truncate_and_chown() {
    let m = Mounted::with_args(&["--allow-other"]);
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mode = |name: &str| fs::metadata(m.p(name)).unwrap().mode() & 0o7777;
    let make = |name: &str, mode: u32| {
        fs::write(m.p(name), b"x").unwrap();
        fs::set_permissions(m.p(name), fs::Permissions::from_mode(mode)).unwrap();
    };
    make("suid", 0o4777);
    make("sgid", 0o2777);
    make("lockgid", 0o2767);
    make("trunc", 0o6777);
    make("rootw", 0o4777);
    make("chowned", 0o6755);
    assert!(as_nobody(
        &m.mnt,
        "printf y >> suid && printf y >> sgid && printf y >> lockgid && truncate -s 0 trunc"
    ));
    assert_eq!(mode("suid"), 0o777);
    assert_eq!(mode("sgid"), 0o777);
    assert_eq!(mode("lockgid"), 0o2767);
    assert_eq!(mode("trunc"), 0o777);
    assert_eq!(fs::read(m.p("suid")).unwrap(), b"xy");
    assert_eq!(fs::metadata(m.p("trunc")).unwrap().len(), 0);
    OpenOptions::new()
        .append(true)
        .open(m.p("rootw"))
        .unwrap()
        .write_all(b"y")
        .unwrap();
    assert_eq!(mode("rootw"), 0o4777);
    nix::unistd::chown(&m.p("chowned"), Some(1234.into()), None).unwrap();
    assert_eq!(mode("chowned"), 0o755);
}

/// Reads of one file from several threads at once (the stored version is
/// read without the file's lock) while another handle writes to the end of
/// it and commits: every read returns the bytes of its range, before and
/// after a remount (cold, from the packs).
#[test]
fn parallel_reads_of_one_file_get_its_bytes() {
    let mut m = Mounted::new();
    let data = random_bytes(24 << 20, 91);
    fs::write(m.p("f"), &data).unwrap();
    let check = |m: &Mounted, data: &[u8], rounds: usize| {
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let path = m.p("f");
                s.spawn(move || {
                    let f = File::open(path).unwrap();
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..rounds {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let len = 1 + (x % (300 << 10)) as usize;
                        let off = ((x >> 20) % (data.len() - len) as u64) as usize;
                        let mut buf = vec![0u8; len];
                        f.read_exact_at(&mut buf, off as u64).unwrap();
                        assert!(buf == data[off..off + len], "bytes at {off}+{len}");
                    }
                });
            }
        });
    };
    check(&m, &data, 200);
    m.unmount();
    m.mount(&[]);
    // While reads go on, the file grows and is committed twice.
    let mut grown = data.clone();
    std::thread::scope(|s| {
        s.spawn(|| check(&m, &data, 200));
        let mut f = OpenOptions::new().append(true).open(m.p("f")).unwrap();
        for i in 0..2u64 {
            let more = random_bytes(1 << 20, 92 + i);
            f.write_all(&more).unwrap();
            f.sync_all().unwrap();
            grown.extend_from_slice(&more);
        }
    });
    assert!(fs::read(m.p("f")).unwrap() == grown, "the grown file");
}
