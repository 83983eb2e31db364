//! The home directory: where identity, config, store, control socket and
//! log live, and the config file format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The config file (`config.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// QUIC listen address for peers.
    pub listen: String,
    /// Peers to contact at start (`host:port`).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Addresses other nodes should use to reach this one (port
    /// forwarding, NAT, a proxy), announced in invitations and joins
    /// instead of `listen`.
    #[serde(default)]
    pub advertise: Vec<String>,
    /// Seconds a read waits for a chunk no reachable member has before it
    /// fails with `EIO` (default 10).
    #[serde(default)]
    pub fetch_timeout: Option<f64>,
    /// Seconds between garbage collections while anything changes
    /// (default 60; 0 turns them off, leaving `chanfs gc` and, with
    /// `cache_max`, the collections that evict fetched content).
    #[serde(default)]
    pub gc_interval: Option<f64>,
    /// Most bytes of content fetched from peers kept here (`"20 GiB"`, or
    /// a number of bytes); beyond it the least recently read goes (a later
    /// read fetches it again). Content written here is never evicted.
    /// Unset: everything fetched stays.
    #[serde(default)]
    pub cache_max: Option<bytesize::ByteSize>,
}

/// Paths inside one home.
#[derive(Debug, Clone)]
pub struct Home {
    /// The home directory.
    pub dir: PathBuf,
}

/// Resolves the home: `--home`/`CHANFS_HOME`, else `~/.chanfs` (the home
/// directory from the password database when `HOME` is unset, as under
/// mount(8)).
pub fn resolve(arg: Option<PathBuf>) -> Home {
    let dir = arg.unwrap_or_else(|| {
        let base = std::env::var_os("HOME")
            .map(PathBuf::from)
            .or_else(|| {
                nix::unistd::User::from_uid(nix::unistd::getuid())
                    .ok()
                    .flatten()
                    .map(|u| u.dir)
            })
            .unwrap_or_else(|| PathBuf::from("/"));
        base.join(".chanfs")
    });
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    Home { dir }
}

impl Home {
    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// The control socket of the running node.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("node.sock")
    }
    /// The node's log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("node.log")
    }
    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.join("store")
    }
    /// Identity directory (cert.pem, key.pem).
    pub fn identity(&self) -> &Path {
        &self.dir
    }
    /// True when `chanfs init` ran here.
    pub fn initialized(&self) -> bool {
        self.dir.join("key.pem").exists() && self.config_path().exists()
    }
    /// Reads the config file.
    pub fn config(&self) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(self.config_path())?;
        Ok(toml::from_str(&text)?)
    }
}
