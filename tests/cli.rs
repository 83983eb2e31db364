//! The command line as a user meets it: init, id, channels, status, mount
//! and unmount, the mount helper, completions, and one clear line for every
//! error.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn err_line(o: &std::process::Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "one error line, got: {e}");
    e
}

#[test]
fn init_id_and_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let e = err_line(&chanfs(&home, &["id"]));
    assert!(
        e.contains("not initialized") && e.contains("chanfs init"),
        "{e}"
    );
    let id = chanfs_ok(&home, &["init", "--listen", "127.0.0.1:7777"]);
    assert_eq!(chanfs_ok(&home, &["id"]), id);
    assert_eq!(id.trim().len(), 52 + 7);
    let mode = fs::metadata(home.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private key is 0600");
    assert!(err_line(&chanfs(&home, &["init"])).contains("already initialized"));
    chanfs_ok(&home, &["channel", "create", "alpha"]);
    chanfs_ok(&home, &["channel", "create", "beta"]);
    assert!(err_line(&chanfs(&home, &["channel", "create", "alpha"])).contains("already exists"));
    assert!(
        err_line(&chanfs(&home, &["channel", "create", "a/b"])).contains("invalid channel name")
    );
    assert_eq!(chanfs_ok(&home, &["channel", "list"]), "alpha\nbeta\n");
    // Importing an existing identity keeps its node id.
    let home2 = tmp.path().join("h2");
    let cert = home.join("cert.pem");
    let key = home.join("key.pem");
    let id2 = chanfs_ok(
        &home2,
        &[
            "init",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(id2, id);
    // CHANFS_HOME works like --home.
    let o = Command::new(bin())
        .env("CHANFS_HOME", &home)
        .arg("id")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), id);
}

#[test]
fn mount_errors_are_one_clear_line() {
    let mut m = Mounted::new();
    let h = m.home.clone();
    let missing = m.tmp.path().join("nope");
    assert!(
        err_line(&chanfs(&h, &["mount", "work", missing.to_str().unwrap()]))
            .contains("does not exist")
    );
    let other = m.tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let e = err_line(&chanfs(&h, &["mount", "nosuch", other.to_str().unwrap()]));
    assert!(
        e.contains("unknown channel") && e.contains("channel create"),
        "{e}"
    );
    let e = err_line(&chanfs(&h, &["mount", "work", m.mnt.to_str().unwrap()]));
    assert!(e.contains("already mounted"), "{e}");
    let e = err_line(&chanfs(&h, &["mount", "work", other.to_str().unwrap()]));
    assert!(e.contains("already mounted at"), "{e}");
    let s = m.status();
    assert_eq!(s["mounts"][0]["channel"], "work");
    assert!(s["node_id"].as_str().unwrap().len() > 50);
    let text = chanfs_ok(&h, &["status"]);
    assert!(text.contains("mount    work at"), "{text}");
    m.unmount();
    let e = err_line(&chanfs(&h, &["status"]));
    assert!(e.contains("node not running"), "{e}");
    let fresh = m.tmp.path().join("fresh");
    let e = err_line(&chanfs(&fresh, &["mount", "work", other.to_str().unwrap()]));
    assert!(e.contains("not initialized"), "{e}");
}

#[test]
fn fusermount_unmount_is_safe() {
    let mut m = Mounted::new();
    fs::write(m.p("kept"), b"kept").unwrap();
    sh(
        m.tmp.path(),
        &format!("fusermount3 -u '{}'", m.mnt.display()),
    );
    let pid = m.pid.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "node ends after its last mount went"
    );
    m.pid = None;
    m.mount(&[]);
    assert_eq!(fs::read(m.p("kept")).unwrap(), b"kept");
}

/// A node that dies while the mount command waits for its answer (killed
/// and not yet gone: its socket still takes connections) is replaced: the
/// command starts a new node and mounts.
#[test]
fn mount_replaces_a_node_that_ends_before_answering() {
    let mut m = Mounted::initialized();
    m.create_channel();
    let dying = std::os::unix::net::UnixListener::bind(m.home.join("node.sock")).unwrap();
    let ended = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        drop(dying);
    });
    m.mount(&[]);
    ended.join().unwrap();
    fs::write(m.p("after"), b"mounted").unwrap();
    m.unmount();
    m.mount(&[]);
    assert_eq!(fs::read(m.p("after")).unwrap(), b"mounted");
}

#[test]
fn mount_helper_mounts_like_mount_8() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("h");
    let mnt = tmp.path().join("m");
    fs::create_dir(&mnt).unwrap();
    chanfs_ok(&home, &["init"]);
    chanfs_ok(&home, &["channel", "create", "docs"]);
    let helper = env!("CARGO_BIN_EXE_mount_chanfs");
    // Called as mount(8) calls it, with an environment like mount's.
    let o = Command::new(helper)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("docs")
        .arg(&mnt)
        .arg("-o")
        .arg(format!("rw,nosuid,nodev,home={}", home.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut g = Mounted {
        tmp,
        home: home.clone(),
        mnt: mnt.clone(),
        channel: "docs".into(),
        pid: None,
    };
    g.pid = Some(g.status()["pid"].as_u64().unwrap() as u32);
    fs::write(mnt.join("x"), b"via helper").unwrap();
    assert_eq!(fs::read(mnt.join("x")).unwrap(), b"via helper");
    let o = Command::new(helper)
        .arg("docs")
        .arg(&mnt)
        .arg("-o")
        .arg("bogus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    g.unmount();
}

#[test]
fn shipped_completions_match_the_cli() {
    for (shell, file) in [
        ("bash", "chanfs.bash"),
        ("zsh", "_chanfs"),
        ("fish", "chanfs.fish"),
    ] {
        let o = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(o.status.success());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("contrib/completions")
            .join(file);
        let shipped = fs::read(&path).unwrap_or_default();
        assert!(
            shipped == o.stdout,
            "{} is stale: regenerate with `chanfs completions {shell} > {}`",
            path.display(),
            path.display()
        );
    }
}

/// A printing command whose reader went away (`chanfs … | head`) ends
/// quietly, without a panic message.
#[test]
fn printing_into_a_closed_pipe_is_quiet() {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let o = Command::new(bin())
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::from(w))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.is_empty(), "stderr: {err}");
    assert!(!o.status.success());
}
