//! `mount.chanfs`: the mount(8) helper for chanfs.
//!
//! `mount -t chanfs work /mnt/work -o home=/home/alice/.chanfs,allow_other`
//! (or the equivalent `/etc/fstab` line) makes mount(8) execute
//!
//! ```text
//! /sbin/mount.chanfs work /mnt/work [-sfnv] [-o home=/home/alice/.chanfs,allow_other]
//! ```
//!
//! (mount(8) always adds `rw`, plus `noexec,nosuid,nodev` for fstab `user`
//! lines, and drops `noauto`, `x-*` and `comment=`), and this helper runs
//! `chanfs --home /home/alice/.chanfs mount work /mnt/work --allow-other`.
//! `chanfs` is looked up next to this executable first (mount(8) may reset
//! `PATH`), then on `PATH`. Without `home=`, `chanfs` uses `CHANFS_HOME` or
//! `~/.chanfs`; mount(8) usually removes `HOME` from the helper's
//! environment, so fstab lines should give `home=`.
//!
//! Exit status follows mount(8): 0 success, 1 usage error, 32 mount failure.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Exit status for incorrect invocation (mount(8) convention).
const EXIT_USAGE: u8 = 1;
/// Exit status for a failed mount (mount(8) convention).
const EXIT_MOUNT_FAILURE: u8 = 32;

/// Generic mount(8)/fstab options that mean nothing to chanfs and are ignored.
const IGNORED: &str = "rw defaults auto noauto user users nouser owner group _netdev nofail \
    exec noexec suid nosuid dev nodev atime noatime relatime norelatime strictatime \
    nostrictatime lazytime nolazytime diratime nodiratime sync async dirsync silent loud \
    nosymfollow";

/// Option prefixes that are ignored (`user=NAME` is added by mount(8) for user mounts).
const IGNORED_PREFIXES: &[&str] = &["x-", "X-", "comment=", "user="];

/// What the helper was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Invocation {
    /// Channel name (mount's "source").
    channel: OsString,
    /// Mount point.
    dir: OsString,
    /// `-f`: only print what would run.
    fake: bool,
    /// `-v`: print the command before running it.
    verbose: bool,
    /// Parsed `-o` options.
    options: Options,
}

/// The chanfs-relevant subset of the `-o` options.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    /// `home=DIR`.
    home: Option<PathBuf>,
    /// `allow_other`.
    allow_other: bool,
}

/// Splits a mount option string at commas outside double quotes.
fn split_options(list: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in list.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|o| !o.is_empty());
    out
}

/// Applies one comma-separated `-o` list to `opts`.
fn parse_options(list: &str, opts: &mut Options) -> Result<(), String> {
    for opt in split_options(list) {
        let opt = opt.as_str();
        if let Some(home) = opt.strip_prefix("home=") {
            if home.is_empty() {
                return Err("option home= needs a directory".into());
            }
            opts.home = Some(PathBuf::from(home));
        } else if opt == "allow_other" {
            opts.allow_other = true;
        } else if opt == "ro" {
            return Err("read-only mounts are not supported yet".into());
        } else if !IGNORED.split_whitespace().any(|g| g == opt)
            && !IGNORED_PREFIXES.iter().any(|p| opt.starts_with(p))
        {
            return Err(format!("unknown mount option `{opt}`"));
        }
    }
    Ok(())
}

/// Parses the helper's arguments (without argv\[0\]).
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, String> {
    let mut inv = Invocation::default();
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "-o" || text == "-t" || text == "-N" {
            let value = args
                .next()
                .ok_or_else(|| format!("option {text} needs a value"))?;
            let value = value.to_str().ok_or("option value is not valid UTF-8")?;
            match text.as_ref() {
                "-o" => parse_options(value, &mut inv.options)?,
                "-t" if value == "chanfs" || value.ends_with(".chanfs") => {}
                "-t" => return Err(format!("unexpected filesystem type `{value}`")),
                _ => return Err("mount namespaces (-N) are not supported".into()),
            }
        } else if let Some(list) = text.strip_prefix("-o").filter(|_| text.len() > 2) {
            parse_options(list, &mut inv.options)?;
        } else if text.starts_with('-') && text.len() > 1 {
            for flag in text[1..].chars() {
                match flag {
                    'f' => inv.fake = true,
                    'v' => inv.verbose = true,
                    's' | 'n' => {}
                    _ => return Err(format!("unknown flag -{flag}")),
                }
            }
        } else {
            positional.push(arg);
        }
    }
    let [channel, dir]: [OsString; 2] = positional
        .try_into()
        .map_err(|_| "usage: mount.chanfs CHANNEL DIR [-sfnv] [-o OPTIONS]".to_string())?;
    (inv.channel, inv.dir) = (channel, dir);
    Ok(inv)
}

impl Invocation {
    /// The arguments to give `chanfs`.
    fn chanfs_args(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(home) = &self.options.home {
            argv.extend(["--home".into(), home.clone().into_os_string()]);
        }
        argv.extend(["mount".into(), self.channel.clone(), self.dir.clone()]);
        if self.options.allow_other {
            argv.push("--allow-other".into());
        }
        argv
    }
}

/// Finds `chanfs`: in `exe_dir` if present there, else the first hit on `path`,
/// else the bare name (so the spawn error names it).
fn find_chanfs(exe_dir: Option<&Path>, path: Option<&OsStr>) -> PathBuf {
    let beside = exe_dir.map(|d| d.join("chanfs"));
    let on_path = path
        .into_iter()
        .flat_map(env::split_paths)
        .map(|d| d.join("chanfs"));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .unwrap_or_else(|| "chanfs".into())
}

/// Renders a command line for `-f`/`-v` output.
fn render(program: &Path, args: &[OsString]) -> String {
    let args = args.iter().map(|a| a.to_string_lossy());
    std::iter::once(program.to_string_lossy())
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() -> ExitCode {
    let inv = match parse_args(env::args_os().skip(1)) {
        Ok(inv) => inv,
        Err(msg) => {
            eprintln!("mount.chanfs: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let exe = env::current_exe().ok();
    let program = find_chanfs(
        exe.as_deref().and_then(Path::parent),
        env::var_os("PATH").as_deref(),
    );
    let args = inv.chanfs_args();
    if inv.fake || inv.verbose {
        let what = if inv.fake { "would run" } else { "running" };
        println!("mount.chanfs: {what}: {}", render(&program, &args));
    }
    if inv.fake {
        return ExitCode::SUCCESS;
    }
    match Command::new(&program).args(&args).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("mount.chanfs: {} failed ({status})", program.display());
            ExitCode::from(EXIT_MOUNT_FAILURE)
        }
        Err(err) => {
            eprintln!("mount.chanfs: cannot run {}: {err}", program.display());
            ExitCode::from(EXIT_MOUNT_FAILURE)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, String> {
        parse_args(args.iter().map(OsString::from))
    }

    fn argv(inv: &Invocation) -> String {
        render(Path::new("chanfs"), &inv.chanfs_args())
    }

    #[test]
    fn typical_mount_line() {
        let inv = parse(&["work", "/mnt/work", "-o", "rw,home=\"/h,c\",allow_other"]).unwrap();
        let want = "chanfs --home /h,c mount work /mnt/work --allow-other";
        assert_eq!(argv(&inv), want);
        assert!(!inv.fake && !inv.verbose);
    }

    #[test]
    fn fstab_generic_options_are_ignored() {
        let o = "defaults,noauto,user,user=alice,_netdev,nofail,nosuid,nodev,noatime,x-systemd.automount";
        let inv = parse(&["work", "/mnt/w", "-o", o]).unwrap();
        assert_eq!(inv.options, Options::default());
        assert_eq!(argv(&inv), "chanfs mount work /mnt/w");
    }

    #[test]
    fn flags_and_type() {
        let inv = parse(&["work", "/mnt/w", "-s", "-f", "-n", "-v", "-t", "chanfs"]).unwrap();
        assert!(inv.fake && inv.verbose);
        let inv = parse(&["-fv", "-ohome=/x", "work", "/mnt/w"]).unwrap();
        assert!(inv.fake && inv.verbose);
        assert_eq!(inv.options.home, Some(PathBuf::from("/x")));
    }

    #[test]
    fn errors() {
        let err = parse(&["w", "/d", "-o", "ro"]).unwrap_err();
        assert_eq!(err, "read-only mounts are not supported yet");
        assert!(parse(&["w", "/d", "-o", "bogus"])
            .unwrap_err()
            .contains("`bogus`"));
        assert!(parse(&["w", "/d", "-o", "home="]).is_err());
        assert!(parse(&["w", "/d", "-o"]).is_err());
        assert!(parse(&["w", "/d", "-x"]).is_err());
        assert!(parse(&["w", "/d", "-t", "ext4"]).is_err());
        assert!(parse(&["w"]).unwrap_err().starts_with("usage:"));
        assert!(parse(&["w", "/d", "extra"]).is_err());
    }

    #[test]
    fn finds_chanfs_beside_then_on_path() {
        let root = env::temp_dir().join(format!("mount-chanfs-test-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("chanfs"), "").unwrap();
        let path = env::join_paths([&a, &b]).unwrap();
        assert_eq!(find_chanfs(Some(&a), Some(&path)), b.join("chanfs"));
        std::fs::write(a.join("chanfs"), "").unwrap();
        assert_eq!(find_chanfs(Some(&a), Some(&path)), a.join("chanfs"));
        assert_eq!(find_chanfs(None, None), PathBuf::from("chanfs"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
