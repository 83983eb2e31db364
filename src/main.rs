//! The `chanfs` command: a thin client of the node, except for `init`,
//! `id`, `completions` and the hidden `node` command that runs the daemon.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser};

use chanfs::cli::{ChannelCommand, Cli, Command};
use chanfs::control::{self, ClientError, Reply, Request, Status};
use chanfs::home::{self, Config, Home};
use chanfs::{identity, node};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = home::resolve(cli.home.clone());
    let logs_to_file = matches!(cli.command, Command::Node);
    if matches!(
        cli.command,
        Command::Id
            | Command::Status { .. }
            | Command::Channel { .. }
            | Command::Completions { .. }
    ) {
        default_sigpipe();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHANFS_LOG").unwrap_or_else(|_| {
                // fuser's session warns on every unmount that it could not
                // unmount again what umount(2) already did (EINVAL).
                tracing_subscriber::EnvFilter::new(if logs_to_file {
                    "info,fuser::session=error"
                } else {
                    "warn,fuser::session=error"
                })
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(cli, &home) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chanfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Commands that print end quietly when their reader goes away (`chanfs
/// status | head`), as other command-line tools do, instead of panicking
/// on the broken pipe (Rust ignores SIGPIPE by default).
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: sets a signal disposition at startup, before any other
    // thread exists; SIG_DFL needs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn need_init(home: &Home) -> anyhow::Result<()> {
    if !home.initialized() {
        bail!(
            "home {} is not initialized: run `chanfs init` first",
            home.dir.display()
        );
    }
    Ok(())
}

fn not_running() -> anyhow::Error {
    anyhow::anyhow!("node not running: start it with `chanfs mount CHANNEL DIR`")
}

/// Sends a request to the running node.
fn ask(home: &Home, req: &Request) -> anyhow::Result<Reply> {
    answer(control::call(&home.socket(), req))
}

/// The node's answer as the user sees it: its refusals and a missing node
/// are errors.
fn answer(r: Result<Reply, ClientError>) -> anyhow::Result<Reply> {
    match r {
        Ok(Reply::Err(e)) => bail!("{e}"),
        Ok(r) => Ok(r),
        Err(ClientError::NotRunning) => Err(not_running()),
        Err(e) => Err(e.into()),
    }
}

/// True when the node that got the request was ending: stopping, or gone
/// (killed and not yet gone: it closed the socket before answering).
fn node_was_ending(r: &Result<Reply, ClientError>) -> bool {
    match r {
        Ok(Reply::Err(e)) => e == node::STOPPING,
        Err(ClientError::NotRunning) => true,
        Err(ClientError::Io(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}

fn run(cli: Cli, home: &Home) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { listen, cert, key } => {
            init(home, &listen, cert.as_deref().zip(key.as_deref()))
        }
        Command::Id => {
            need_init(home)?;
            println!("{}", identity::load(home.identity())?.id);
            Ok(())
        }
        Command::Channel { command } => channel(home, command),
        Command::Mount {
            name,
            dir,
            foreground,
            allow_other,
        } => mount(home, &name, &dir, foreground, allow_other),
        Command::Unmount { dir } => {
            let dir = std::path::absolute(&dir)?;
            match ask(home, &Request::Unmount { dir: dir.clone() }) {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().starts_with("node not running") && is_mountpoint(&dir) => {
                    node::unmount_dir(&dir).map_err(|e| anyhow::anyhow!(e))
                }
                Err(e) => Err(e),
            }
        }
        Command::Status { json } => {
            need_init(home)?;
            let Reply::Status(s) = ask(home, &Request::Status)? else {
                bail!("unexpected reply")
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_status(&s);
            }
            Ok(())
        }
        Command::Gc => {
            need_init(home)?;
            let Reply::Text(t) = ask(home, &Request::Gc)? else {
                bail!("unexpected reply")
            };
            println!("{t}");
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "chanfs", &mut std::io::stdout());
            Ok(())
        }
        Command::Node => {
            need_init(home)?;
            let _ = nix::unistd::setsid();
            node::run(home, None, false)
        }
        Command::Serve => {
            need_init(home)?;
            if control::running(&home.socket()) {
                bail!(
                    "a node is already running for {}: unmount its mounts first",
                    home.dir.display()
                );
            }
            node::run(home, None, true)
        }
    }
}

fn init(home: &Home, listen: &str, import: Option<(&Path, &Path)>) -> anyhow::Result<()> {
    if home.initialized() {
        bail!(
            "home {} is already initialized (node id {})",
            home.dir.display(),
            identity::load(home.identity())?.id
        );
    }
    let mut addr = listen
        .parse::<std::net::SocketAddr>()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:7000"))?;
    if addr.port() == 0 {
        // Peers find a node again at the address they knew: pick a free
        // port once and keep it.
        addr = free_port(addr.ip())?;
    }
    let listen = addr.to_string();
    std::fs::create_dir_all(&home.dir)
        .with_context(|| format!("creating {}", home.dir.display()))?;
    let id = identity::create(home.identity(), import)?;
    let cfg = Config {
        listen: listen.clone(),
        bootstrap: Vec::new(),
        fetch_timeout: None,
        gc_interval: None,
        cache_max: None,
        advertise: Vec::new(),
    };
    std::fs::write(home.config_path(), toml::to_string(&cfg)?)?;
    println!("{}", id.id);
    Ok(())
}

/// A UDP port free on `ip` now, chosen below the kernel's ephemeral range
/// when one is free there: a port from that range is handed to the next
/// program that asks for any port, and the node would find it taken when it
/// starts later.
fn free_port(ip: std::net::IpAddr) -> anyhow::Result<std::net::SocketAddr> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const FROM: u16 = 10000;
    if low > FROM + 1000 {
        for _ in 0..64 {
            let port = rand::Rng::gen_range(&mut rand::thread_rng(), FROM..low);
            if let Ok(s) = std::net::UdpSocket::bind((ip, port)) {
                return Ok(s.local_addr()?);
            }
        }
    }
    let s =
        std::net::UdpSocket::bind((ip, 0)).with_context(|| format!("no free UDP port on {ip}"))?;
    Ok(s.local_addr()?)
}

fn open_store(home: &Home) -> anyhow::Result<chanfs::store::Store> {
    let ident = identity::load(home.identity())?;
    Ok(chanfs::store::Store::open(
        &home.store(),
        ident.key,
        ident.id.0,
    )?)
}

fn valid_channel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.')
}

fn channel(home: &Home, cmd: ChannelCommand) -> anyhow::Result<()> {
    need_init(home)?;
    let running = control::running(&home.socket());
    match cmd {
        ChannelCommand::Create { name } => {
            if !valid_channel_name(&name) {
                bail!("invalid channel name {name:?}: use letters, digits, '-', '_' and '.'");
            }
            if running {
                ask(home, &Request::ChannelCreate { name: name.clone() })?;
            } else {
                let s = open_store(home)?;
                s.create_channel(&name)?;
                s.close()?;
            }
            println!("created channel {name}");
        }
        ChannelCommand::AddMember {
            name,
            node_id,
            role,
            addr,
        } => {
            let token = text(ask_started(
                home,
                &Request::AddMember {
                    name: name.clone(),
                    id: node_id.clone(),
                    role,
                    addr,
                },
            )?)?;
            println!("added {node_id} to {name}; on that node run:");
            println!("chanfs channel join {token}");
        }
        ChannelCommand::RemoveMember { name, node_id } => {
            ask_started(
                home,
                &Request::RemoveMember {
                    name: name.clone(),
                    id: node_id.clone(),
                },
            )?;
            println!("removed {node_id} from {name}");
        }
        ChannelCommand::Invite { name, role } => {
            let token = text(ask_started(home, &Request::Invite { name, role })?)?;
            println!("{token}");
        }
        ChannelCommand::Join { token } => {
            let name = text(ask_started(home, &Request::Join { token })?)?;
            println!("joined channel {name}: mount it with `chanfs mount {name} DIR`");
        }
        ChannelCommand::Show { name } => match ask_started(home, &Request::Show { name })? {
            Reply::Channel(c) => print_channel(&c),
            _ => bail!("unexpected reply"),
        },
        ChannelCommand::List => {
            let names = if running {
                match ask(home, &Request::ChannelList)? {
                    Reply::Channels(c) => c,
                    _ => bail!("unexpected reply"),
                }
            } else {
                let s = open_store(home)?;
                let c = s.channels()?.into_iter().map(|c| c.name).collect();
                s.close()?;
                c
            };
            for n in names {
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// Asks the node, starting it first when it is not running (it serves
/// peers while it runs; it stops by itself when nothing is mounted).
fn ask_started(home: &Home, req: &Request) -> anyhow::Result<Reply> {
    if !control::running(&home.socket()) {
        start_node(home)?;
    }
    ask(home, req)
}

fn text(r: Reply) -> anyhow::Result<String> {
    match r {
        Reply::Text(t) => Ok(t),
        _ => bail!("unexpected reply from the node"),
    }
}

fn print_channel(c: &control::ChannelStatus) {
    println!(
        "channel  {}  id {}  (in {}, out {}; {} to apply, {} chunks fetching)",
        c.name,
        c.id,
        human(c.bytes_in),
        human(c.bytes_out),
        c.to_apply,
        c.fetching
    );
    for m in &c.members {
        let what = if m.me {
            "this node".to_string()
        } else if m.connected {
            format!(
                "connected {:.1} ms, {} to send",
                m.rtt_ms.unwrap_or(0.0),
                m.to_send
            )
        } else {
            "not connected".to_string()
        };
        println!(
            "{}  {}  {}  {}  {}",
            if m.leader { "leader" } else { "member" },
            m.id,
            m.role,
            m.addr.as_deref().unwrap_or("-"),
            what
        );
    }
}

fn is_mountpoint(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy().replace(' ', "\\040");
    text.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

fn mount(
    home: &Home,
    name: &str,
    dir: &Path,
    foreground: bool,
    allow_other: bool,
) -> anyhow::Result<()> {
    need_init(home)?;
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "no FUSE device (/dev/fuse): install fuse3 and load the fuse module (`modprobe fuse`)"
        );
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("mount directory {} does not exist", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let dir = std::fs::canonicalize(dir)?;
    if is_mountpoint(&dir) {
        bail!("{} is already mounted", dir.display());
    }
    if foreground {
        if control::running(&home.socket()) {
            bail!(
                "a node is already running for {}: mount without --foreground",
                home.dir.display()
            );
        }
        return node::run(home, Some((name.to_string(), dir, allow_other)), false);
    }
    let req = Request::Mount {
        channel: name.to_string(),
        dir: dir.clone(),
        allow_other,
    };
    for _ in 0..3 {
        if !control::running(&home.socket()) {
            start_node(home)?;
        }
        let r = control::call(&home.socket(), &req);
        if !node_was_ending(&r) {
            return answer(r).map(|_| ());
        }
        // Ask again, of a new node if that one went.
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!(
        "the node kept stopping; try again (log: {})",
        home.log().display()
    )
}

/// Starts the node detached and waits until it answers.
fn start_node(home: &Home) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.log())?;
    let mut child = std::process::Command::new(exe)
        .arg("--home")
        .arg(&home.dir)
        .arg("node")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the node")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if control::running(&home.socket()) {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            let text = std::fs::read_to_string(home.log()).unwrap_or_default();
            let last = text.lines().last().unwrap_or("").to_string();
            bail!(
                "the node exited ({st}) at start: {last} (log: {})",
                home.log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the node did not start within 20 s (log: {})",
        home.log().display()
    )
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

fn print_status(s: &Status) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "node     pid {}  id {}", s.pid, s.node_id);
    let _ = writeln!(o, "listen   {}", s.listen);
    for m in &s.mounts {
        let _ = writeln!(
            o,
            "mount    {} at {}  ({} files, {})",
            m.channel,
            m.dir.display(),
            m.files,
            human(m.logical_bytes)
        );
    }
    if s.mounts.is_empty() {
        let _ = writeln!(o, "mount    (none)");
    }
    let _ = writeln!(
        o,
        "store    {} logical, {} stored ({} on disk), dedup {:.2}x, {} chunks",
        human(s.logical_bytes),
        human(s.stored_bytes),
        human(s.pack_bytes),
        s.dedup_ratio,
        s.chunks
    );
    if s.fetched_bytes > 0 || s.cache_max.is_some() {
        let quota = s.cache_max.map_or("no quota".to_string(), |m| {
            format!("cache_max {}", human(m))
        });
        let _ = writeln!(
            o,
            "fetched  {} of the stored bytes came from peers ({quota})",
            human(s.fetched_bytes)
        );
    }
    let _ = writeln!(o, "journal  {} entries", s.journal_entries);
    let _ = writeln!(
        o,
        "network  {} in, {} out, {} chunks being fetched",
        human(s.bytes_in),
        human(s.bytes_out),
        s.fetching
    );

    let _ = writeln!(o, "memory   {} resident", human(s.rss_bytes));
    drop(o);
    for c in &s.channels {
        print_channel(c);
    }
}
