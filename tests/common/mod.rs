//! Test harness: real chanfs nodes with their own homes and real FUSE
//! mounts in temporary directories. Guards unmount and end the node on drop,
//! even when a test fails, so tests can run in parallel and leave nothing.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Path of the built `chanfs` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chanfs")
}

/// Fails loudly (never skips) when FUSE is not usable here.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need FUSE (install fuse3, load the fuse module)"
    );
    assert!(
        which("fusermount3"),
        "fusermount3 is missing: install the fuse3 package (apt-get install -y fuse3)"
    );
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).exists()))
        .unwrap_or(false)
}

/// A chanfs home with one channel, mounted.
pub struct Mounted {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub mnt: PathBuf,
    pub channel: String,
    pub pid: Option<u32>,
}

/// Runs chanfs with `--home home` and returns its output.
pub fn chanfs(home: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

/// The last lines of the node's log in `home`, for failure messages.
pub fn log_tail(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs chanfs and asserts success; returns stdout.
pub fn chanfs_ok(home: &Path, args: &[&str]) -> String {
    let o = chanfs(home, args);
    assert!(
        o.status.success(),
        "chanfs {args:?} failed: {}{}\nnode log:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        log_tail(home)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

impl Mounted {
    /// A fresh home, channel `work`, mounted.
    pub fn new() -> Mounted {
        Mounted::with_args(&[])
    }

    /// Like [`Mounted::new`], with extra `mount` arguments.
    pub fn with_args(extra: &[&str]) -> Mounted {
        let mut m = Mounted::initialized();
        m.create_channel();
        m.mount(extra);
        m
    }

    /// A fresh home that joins `leader`'s channel with an invitation for
    /// `role` and mounts it. `config` lines are added to its config file.
    pub fn joined(leader: &Mounted, role: &str, config: &str) -> Mounted {
        let mut m = Mounted::initialized();
        for line in config.lines() {
            let (key, value) = line.split_once('=').expect("config lines are key = value");
            m.set_config(key.trim(), value.trim());
        }
        m.join(leader, role);
        m.mount(&[]);
        m
    }

    /// This node's id.
    pub fn id(&self) -> String {
        chanfs_ok(&self.home, &["id"]).trim().to_string()
    }

    /// Mounts the channel again (after an unmount or a crash).
    pub fn mount(&mut self, extra: &[&str]) {
        let mnt = self.mnt.to_str().unwrap().to_string();
        let mut args = vec!["mount", self.channel.as_str(), mnt.as_str()];
        args.extend_from_slice(extra);
        chanfs_ok(&self.home, &args);
        self.pid = Some(self.status()["pid"].as_u64().unwrap() as u32);
    }

    /// `chanfs status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&chanfs_ok(&self.home, &["status", "--json"])).unwrap()
    }

    /// Bytes of distinct chunks the node stores (`status`).
    pub fn stored(&self) -> u64 {
        self.status()["stored_bytes"].as_u64().unwrap()
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `chanfs unmount`, asserting success, and waits for the node to end.
    pub fn unmount(&mut self) {
        chanfs_ok(&self.home, &["unmount", self.mnt.to_str().unwrap()]);
        self.wait_node_gone();
    }

    fn wait_node_gone(&mut self) {
        if let Some(pid) = self.pid.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                if has_ended(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `kill -9` the node, then clear the dead mount.
    pub fn kill_node(&mut self) {
        let pid = self.pid.take().expect("node pid");
        Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists()
            && !has_ended(pid)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .output();
    }
}

/// True when `pid` has ended: gone, or a zombie whose every thread has
/// exited. A killed node's first thread turns zombie while the others may
/// still be finishing a system call (an fsync), holding the control socket,
/// the database lock and the FUSE device open; only the last thread's exit
/// closes them.
fn has_ended(pid: u32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    zombie && threads <= 1
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.pid.is_some() {
            let _ = Command::new(bin())
                .arg("--home")
                .arg(&self.home)
                .arg("unmount")
                .arg(&self.mnt)
                .output();
            // Whatever happened, leave no mount and no process behind.
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .output();
            if let Some(pid) = self.pid {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Path::new(&format!("/proc/{pid}")).exists()
                    && !has_ended(pid)
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if Path::new(&format!("/proc/{pid}")).exists() && !has_ended(pid) {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                }
            }
        }
    }
}

/// Runs a shell command in `dir`, asserting success; returns stdout.
pub fn sh(dir: &Path, cmd: &str) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `secs`
/// seconds; panics with `what` on timeout.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Homes whose config is edited before their node starts.
impl Mounted {
    /// A fresh home after `chanfs init` only: no channel, no node, nothing
    /// mounted, so its config can be changed first ([`Mounted::set_config`]);
    /// then [`Mounted::create_channel`] or [`Mounted::join`], and
    /// [`Mounted::mount`].
    pub fn initialized() -> Mounted {
        require_fuse();
        let tmp = tempfile::Builder::new()
            .prefix("chanfs-test")
            .tempdir()
            .unwrap();
        let home = tmp.path().join("home");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        chanfs_ok(&home, &["init"]);
        Mounted {
            tmp,
            home,
            mnt,
            channel: "work".into(),
            pid: None,
        }
    }

    /// Sets `key = value` (`value` in TOML syntax) in config.toml,
    /// replacing the line of that key if there is one.
    pub fn set_config(&self, key: &str, value: &str) {
        let p = self.home.join("config.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let line = format!("{key} = {value}");
        let mut found = false;
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.split('=').next().map(str::trim) == Some(key) {
                    found = true;
                    line.clone()
                } else {
                    l.to_string()
                }
            })
            .collect();
        if !found {
            lines.push(line);
        }
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    }

    /// The `listen` address in config.toml.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        let text = std::fs::read_to_string(self.home.join("config.toml")).unwrap();
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "listen").then(|| v.trim().trim_matches('"').parse().unwrap())
            })
            .expect("no listen line in config.toml")
    }

    /// `chanfs channel create` of this guard's channel.
    pub fn create_channel(&self) {
        chanfs_ok(&self.home, &["channel", "create", &self.channel]);
    }

    /// Joins `leader`'s channel with an invitation for `role` (starts the
    /// node; does not mount).
    pub fn join(&mut self, leader: &Mounted, role: &str) {
        let token = chanfs_ok(
            &leader.home,
            &["channel", "invite", &leader.channel, "--role", role],
        );
        chanfs_ok(&self.home, &["channel", "join", token.trim()]);
        self.channel = leader.channel.clone();
    }
}

/// A further channel of a home, mounted at its own directory by the same
/// node. Unmounted on drop: declare it after the home's [`Mounted`], so
/// that it goes first and the node ends with the home's own mount.
pub struct Another {
    pub home: PathBuf,
    pub mnt: PathBuf,
}

impl Mounted {
    /// Creates channel `name` led by this home's node and mounts it at a
    /// new directory next to this guard's mount.
    pub fn another_channel(&self, name: &str) -> Another {
        chanfs_ok(&self.home, &["channel", "create", name]);
        let mnt = self.tmp.path().join(format!("mnt-{name}"));
        std::fs::create_dir(&mnt).unwrap();
        chanfs_ok(&self.home, &["mount", name, mnt.to_str().unwrap()]);
        Another {
            home: self.home.clone(),
            mnt,
        }
    }
}

impl Another {
    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Another {
    fn drop(&mut self) {
        let _ = chanfs(&self.home, &["unmount", self.mnt.to_str().unwrap()]);
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .output();
    }
}
