//! Ordinary tools on a mount: cp -a, tar, git, mv, rm -r, then a remount
//! and a byte-for-byte comparison.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::*;

/// Builds a small tree with files of several sizes, links and modes.
fn make_tree(dir: &std::path::Path) {
    fs::create_dir_all(dir.join("src/deep/er")).unwrap();
    for i in 0..40 {
        fs::write(
            dir.join(format!("src/f{i}.txt")),
            random_bytes(i * 997, i as u64),
        )
        .unwrap();
    }
    fs::write(dir.join("src/deep/er/big.bin"), random_bytes(3 << 20, 99)).unwrap();
    fs::write(dir.join("src/deep/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../f1.txt", dir.join("src/deep/link")).unwrap();
    sh(
        dir,
        "chmod 700 src/deep && chmod 640 src/f3.txt && touch -d '2001-02-03 04:05:06' src/f4.txt",
    );
}

#[test]
fn cp_tar_mv_rm_and_remount() {
    let mut m = Mounted::new();
    let outside = tempfile::tempdir().unwrap();
    make_tree(outside.path());
    let src = outside.path().join("src");
    sh(&m.mnt, &format!("cp -a '{}' copy", src.display()));
    sh(
        outside.path(),
        &format!("tar cf '{}/tree.tar' src", m.mnt.display()),
    );
    sh(&m.mnt, "mkdir untar && tar xf tree.tar -C untar");
    sh(
        &m.mnt,
        "mv copy moved && mkdir gone && cp -a moved gone/ && rm -r gone",
    );
    m.unmount();
    m.mount(&[]);
    for d in ["moved", "untar/src"] {
        sh(
            outside.path(),
            &format!("diff -r --no-dereference src '{}/{d}'", m.mnt.display()),
        );
    }
    let a = sh(outside.path(), "find src -printf '%P %m %T@ %y\\n' | sort");
    let b = sh(
        &m.mnt,
        "cd moved && find . -printf '%P %m %T@ %y\\n' | sort",
    );
    assert_eq!(a, b, "cp -a kept names, modes, sizes, mtimes and types");
    assert!(!m.p("gone").exists());
}

#[test]
fn git_repository_works() {
    let mut m = Mounted::new();
    sh(&m.mnt, "git init -q repo && cd repo && git config user.email t@example.org && git config user.name t \
        && for i in 1 2 3 4 5; do echo line $i > f$i; done && git add . && git commit -qm first \
        && echo more >> f2 && git mv f3 g3 && git commit -qam second && git gc -q");
    m.unmount();
    m.mount(&[]);
    let log = sh(
        &m.p("repo"),
        "git fsck --strict 2>/dev/null && git log --format=%s && git status --porcelain",
    );
    assert_eq!(log, "second\nfirst\n");
    assert_eq!(
        fs::read_to_string(m.p("repo/f2")).unwrap(),
        "line 2\nmore\n"
    );
}
