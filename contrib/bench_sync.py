#!/usr/bin/env python3
"""Workloads of contrib/bench-sync.sh: two chanfs nodes and two Syncthing
instances on 127.0.0.1, the same workloads on both, one table at the end.

Run through contrib/bench-sync.sh (it installs what is missing, makes the
working directory and cleans up after a failure or an interrupt). Processes
this script starts are appended to WORK/pids ("pid name"), chanfs mounts to
WORK/mounts ("home<TAB>mountpoint"), so that the shell's trap can end them.

All timestamps are time.perf_counter() (CLOCK_MONOTONIC: one clock for every
process on the machine), so a poller in another process can be compared with
the writer's close.
"""
import argparse
import json
import math
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET

now = time.perf_counter
MiB = 1 << 20
POLL = 0.003  # seconds between two polls on B
SETTLE = 3.0  # seconds of quiet before and after a measured edit (wire bytes)


def log(msg):
    print(time.strftime("[%H:%M:%S] ") + msg, file=sys.stderr, flush=True)


class Timeout(Exception):
    """A wait ran out of time; the message says what B showed last."""


def fmt_s(x):
    if x is None:
        return "-"
    if math.isinf(x):
        return "timeout"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_kb(x):
    if x is None:
        return "-"
    if math.isinf(x):
        return "timeout"
    return f"{x / 1000:.0f} KB" if x < 10e6 else f"{x / 1e6:.1f} MB"


def fmt_mbs(x):
    if x is None:
        return "-"
    if x == 0:
        return "timeout"
    return f"{x / 1e6:.0f} MB/s"


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# --------------------------------------------------------------------------
# Polling B


def touched_buffer(size):
    """A buffer of size bytes with every page already in memory: a fresh
    one (bytearray(n)) takes its page faults during the read it is handed
    to, which on a VM costs more than the copy itself and is not the
    filesystem's time."""
    return bytearray(b"\xff") * size


def read_compare(path, exp, buf=None):
    """Reads path in full into buf (len(exp) + 1 bytes, made if None);
    (equal, seconds of the read, bytes read, time the read ended)."""
    size = len(exp)
    if buf is None:
        buf = touched_buffer(size + 1)
    mv = memoryview(buf)
    n = 0
    with open(path, "rb", buffering=0) as f:
        t0 = now()
        while n <= size:
            k = f.readinto(mv[n : min(n + 4 * MiB, size + 1)])
            if not k:
                break
            n += k
        t1 = now()
    # Compared after the clock stopped: a memoryview compares at a few
    # hundred MB/s, which is not the filesystem's time.
    ok = n == size and mv[:n] == exp
    return ok, t1 - t0, n, t1


def wait_content(path, exp, deadline, probe=None, buf=None):
    """Polls B until path holds exactly exp. probe(fd) is a cheap check
    (e.g. pread of the edited range) done before each full read; buf (see
    read_compare) is best made before the clock starts. Returns (time of
    the successful read's end, seconds that read took)."""
    last = "missing"
    if buf is None:
        buf = touched_buffer(len(exp) + 1)
    while True:
        try:
            st = os.stat(path)
            if st.st_size != len(exp):
                last = f"size {st.st_size} of {len(exp)}"
            elif probe is not None and not probe(path):
                last = "old content in the probed range"
            else:
                ok, dt, n, t_end = read_compare(path, exp, buf)
                if ok:
                    return t_end, dt
                last = f"wrong bytes (read {n} of {len(exp)})"
        except FileNotFoundError:
            last = "missing"
        except OSError as e:
            last = f"{type(e).__name__}: {e}"
        if now() > deadline:
            raise Timeout(last)
        time.sleep(POLL)


def pread_probe(off, data):
    def probe(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, len(data), off) == data
        finally:
            os.close(fd)

    return probe


def many_content(base, i):
    b = bytearray(base)
    b[:8] = i.to_bytes(8, "little")
    return bytes(b)


def poll_many(bdir, n, base, deadline, conn, done):
    """Child process: until every f{i:06} in bdir has its content on B.
    Throttled while A still creates files (done not set), flat out after."""
    pending = set(range(n))
    last = "directory missing"
    t_listed = None
    parent = os.getppid()
    try:
        while pending:
            t_pass = now()
            try:
                names = os.listdir(bdir)
            except FileNotFoundError:
                names = []
            if t_listed is None and len(names) >= n:
                t_listed = now()
            for name in names:
                if len(name) != 7 or name[0] != "f" or not name[1:].isdigit():
                    continue
                i = int(name[1:])
                if i not in pending:
                    continue
                try:
                    # os.open, not open(): no isatty ioctl on each file.
                    fd = os.open(os.path.join(bdir, name), os.O_RDONLY)
                    try:
                        data = os.read(fd, 8192)
                    finally:
                        os.close(fd)
                except OSError as e:
                    last = f"{name}: {e}"
                    continue
                if data == many_content(base, i):
                    pending.discard(i)
                else:
                    last = f"{name}: wrong bytes ({len(data)} bytes)"
            if not pending:
                break
            if os.getppid() != parent:  # the benchmark is gone
                return
            if now() > deadline:
                conn.send(("timeout", f"{len(pending)} of {n} not readable; last: {last}"))
                return
            # Listing 10,000 names takes a while: at most a quarter of a CPU
            # while A creates, so that the poller does not slow down what it
            # measures; once A closed its last file, as fast as a reader goes
            # (a long pause after a long pass would be timed, not B).
            if not done.is_set():
                done.wait(max(0.005, 3 * (now() - t_pass)))
            else:
                time.sleep(0.003)
        conn.send(("ok", now(), t_listed))
    except Exception as e:  # noqa: BLE001 - report anything to the parent
        conn.send(("timeout", f"poller failed: {e!r}"))


def write_file(path, data, flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL):
    """Writes data in 1 MiB pieces and closes; returns the time after close."""
    fd = os.open(path, flags, 0o644)
    mv = memoryview(data)
    for o in range(0, len(data), MiB):
        os.write(fd, mv[o : o + MiB])
    os.close(fd)
    return now()


# --------------------------------------------------------------------------
# Systems


class Tracker:
    def __init__(self, work):
        self.work = work

    def pid(self, pid, name):
        with open(os.path.join(self.work, "pids"), "a") as f:
            f.write(f"{pid} {name}\n")

    def mount(self, home, mnt):
        with open(os.path.join(self.work, "mounts"), "a") as f:
            f.write(f"{home}\t{mnt}\n")


class Chanfs:
    name = "chanfs"

    def __init__(self, work, binary, tracker, timeout):
        self.bin = binary
        self.t = tracker
        self.timeout = timeout
        root = os.path.join(work, "chanfs")
        self.ha, self.hb = os.path.join(root, "home-a"), os.path.join(root, "home-b")
        self.a, self.b = os.path.join(root, "mnt-a"), os.path.join(root, "mnt-b")
        for d in (self.a, self.b):
            os.makedirs(d)
        self.pids = []

    def cli(self, home, *args):
        r = subprocess.run(
            [self.bin, "--home", home, *args],
            capture_output=True, text=True, timeout=self.timeout,
        )
        if r.returncode:
            raise RuntimeError(f"chanfs {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def status(self, home):
        return json.loads(self.cli(home, "status", "--json"))

    def check_listen(self, home):
        with open(os.path.join(home, "config.toml")) as f:
            cfg = f.read()
        for line in cfg.splitlines():
            k = line.split("=", 1)[0].strip()
            if k in ("listen", "advertise") and "=" in line:
                v = line.split("=", 1)[1]
                if "127.0.0.1" not in v and v.strip() not in ('""', "[]"):
                    raise RuntimeError(f"{home}/config.toml: {line.strip()} is not 127.0.0.1")

    def setup(self):
        self.cli(self.ha, "init")
        self.check_listen(self.ha)
        self.cli(self.ha, "channel", "create", "bench")
        self.t.mount(self.ha, self.a)
        self.cli(self.ha, "mount", "bench", self.a)
        pid = self.status(self.ha)["pid"]
        self.t.pid(pid, "chanfs-node-a")
        self.pids.append(pid)
        token = self.cli(self.ha, "channel", "invite", "bench").strip()
        self.cli(self.hb, "init")
        self.check_listen(self.hb)
        self.cli(self.hb, "channel", "join", token)
        self.t.mount(self.hb, self.b)
        self.cli(self.hb, "mount", "bench", self.b)
        pid = self.status(self.hb)["pid"]
        self.t.pid(pid, "chanfs-node-b")
        self.pids.append(pid)
        deadline = now() + self.timeout
        while not (self.connected(self.ha) and self.connected(self.hb)):
            if now() > deadline:
                raise Timeout("chanfs nodes did not connect")
            time.sleep(0.1)

    def connected(self, home):
        s = self.status(home)
        return any(m["connected"] for c in s["channels"] for m in c["members"] if not m["me"])

    def progress(self):
        """What A has committed and not yet sent, what B shows (for the log)."""
        a, b = self.status(self.ha), self.status(self.hb)
        to_send = sum(m["to_send"] for c in a["channels"] for m in c["members"])
        return (f"A journal {a['journal_entries']} to_send {to_send}, "
                f"B journal {b['journal_entries']} files {sum(m['files'] for m in b['mounts'])}")

    def wire(self):
        s = self.status(self.ha)
        return s["bytes_in"] + s["bytes_out"]

    def quiesce(self):
        deadline = now() + self.timeout
        while True:
            busy = []
            for h in (self.ha, self.hb):
                s = self.status(h)
                for c in s["channels"]:
                    if c["to_apply"]:
                        busy.append(f"to_apply {c['to_apply']}")
                    busy += [f"to_send {m['to_send']}" for m in c["members"] if m["to_send"]]
                if s.get("fetching"):
                    busy.append(f"fetching {s['fetching']}")
            if not busy or now() > deadline:
                return
            time.sleep(0.2)

    def teardown(self):
        for h, m in ((self.hb, self.b), (self.ha, self.a)):
            try:
                self.cli(h, "unmount", m)
            except Exception as e:  # noqa: BLE001 - the shell's trap retries
                log(f"chanfs unmount {m}: {e}")

    def logs(self):
        return [os.path.join(self.ha, "node.log"), os.path.join(self.hb, "node.log")]


class Syncthing:
    name = "syncthing"
    FOLDER = "bench"

    def __init__(self, work, tracker, timeout):
        self.t = tracker
        self.timeout = timeout
        root = os.path.join(work, "syncthing")
        self.homes = [os.path.join(root, "home-a"), os.path.join(root, "home-b")]
        self.a, self.b = os.path.join(root, "data-a"), os.path.join(root, "data-b")
        for d in (self.a, self.b):
            os.makedirs(d)
        self.procs = []
        self.gui = []
        self.keys = []
        self.listen = []
        self.ids = []
        # Never a proxy: every request goes to 127.0.0.1 directly.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def api(self, i, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.gui[i]}{path}", data=data, method=method,
            headers={"X-API-Key": self.keys[i], "Content-Type": "application/json"},
        )
        with self.opener.open(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def configure(self, home, gui_port, listen_port):
        path = os.path.join(home, "config.xml")
        tree = ET.parse(path)
        root = tree.getroot()
        gui = root.find("gui")
        gui.find("address").text = f"127.0.0.1:{gui_port}"
        key = gui.find("apikey").text
        opts = root.find("options")
        for e in opts.findall("listenAddress"):
            opts.remove(e)
        la = ET.SubElement(opts, "listenAddress")
        la.text = f"tcp://127.0.0.1:{listen_port}"
        settings = {
            "globalAnnounceEnabled": "false",
            "localAnnounceEnabled": "false",
            "relaysEnabled": "false",
            "natEnabled": "false",
            "startBrowser": "false",
            "urAccepted": "-1",
            "urSeen": "3",
            "autoUpgradeIntervalH": "0",
            "crashReportingEnabled": "false",
            "stunKeepaliveStartS": "0",
            "announceLANAddresses": "false",
        }
        for k, v in settings.items():
            e = opts.find(k)
            if e is None:
                e = ET.SubElement(opts, k)
            e.text = v
        tree.write(path)
        return key

    def setup(self):
        env = dict(os.environ, STNOUPGRADE="1", STNODEFAULTFOLDER="1", STNORESTART="1")
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            env.pop(k, None)
        for i, home in enumerate(self.homes):
            subprocess.run(
                ["syncthing", "generate", f"--home={home}", "--no-default-folder"],
                check=True, capture_output=True, timeout=self.timeout,
            )
            self.gui.append(free_port())
            self.listen.append(free_port())
            self.keys.append(self.configure(home, self.gui[i], self.listen[i]))
            logf = open(os.path.join(home, "stdout.log"), "ab")
            p = subprocess.Popen(
                ["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart",
                 "--no-upgrade", "--no-default-folder", "--logflags=3",
                 f"--logfile={os.path.join(home, 'syncthing.log')}"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
            self.procs.append(p)
            self.t.pid(p.pid, f"syncthing-{'ab'[i]}")
        for i in range(2):
            deadline = now() + self.timeout
            while True:
                try:
                    self.ids.append(self.api(i, "GET", "/rest/system/status")["myID"])
                    break
                except OSError:
                    if now() > deadline or self.procs[i].poll() is not None:
                        raise Timeout(f"syncthing {'ab'[i]}: REST API not up")
                    time.sleep(0.2)
        for i in range(2):
            j = 1 - i
            dev = self.api(i, "GET", "/rest/config/defaults/device")
            dev.update(deviceID=self.ids[j], name=f"bench-{'ab'[j]}",
                       addresses=[f"tcp://127.0.0.1:{self.listen[j]}"])
            self.api(i, "POST", "/rest/config/devices", dev)
        for i in range(2):
            fol = self.api(i, "GET", "/rest/config/defaults/folder")
            fol.update(id=self.FOLDER, label=self.FOLDER, path=[self.a, self.b][i],
                       type="sendreceive",
                       devices=[{"deviceID": d} for d in self.ids])
            self.api(i, "POST", "/rest/config/folders", fol)
        f = self.api(0, "GET", f"/rest/config/folders/{self.FOLDER}")
        log(f"syncthing folder: fsWatcherEnabled={f['fsWatcherEnabled']} "
            f"fsWatcherDelayS={f['fsWatcherDelayS']} rescanIntervalS={f['rescanIntervalS']}")
        deadline = now() + self.timeout
        while True:
            c = [self.api(i, "GET", "/rest/system/connections")["connections"] for i in range(2)]
            if c[0].get(self.ids[1], {}).get("connected") and c[1].get(self.ids[0], {}).get("connected"):
                log(f"syncthing connected: {c[0][self.ids[1]].get('address')} ({c[0][self.ids[1]].get('type')})")
                break
            if now() > deadline:
                raise Timeout("syncthing instances did not connect")
            time.sleep(0.2)
        self.quiesce()

    def progress(self):
        return None

    def wire(self):
        t = self.api(0, "GET", "/rest/system/connections")["total"]
        return t["inBytesTotal"] + t["outBytesTotal"]

    def quiesce(self):
        deadline = now() + self.timeout
        while True:
            sts = [self.api(i, "GET", f"/rest/db/status?folder={self.FOLDER}") for i in range(2)]
            if all(s["state"] == "idle" and not s.get("needTotalItems") for s in sts):
                return
            if now() > deadline:
                log(f"syncthing not idle: {[s['state'] for s in sts]}")
                return
            time.sleep(0.2)

    def teardown(self):
        for i, p in enumerate(self.procs):
            try:
                self.api(i, "POST", "/rest/system/shutdown")
            except Exception:  # noqa: BLE001
                pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.terminate()

    def logs(self):
        return [os.path.join(h, "syncthing.log") for h in self.homes]


# --------------------------------------------------------------------------
# Workloads


class Bench:
    def __init__(self, args):
        self.args = args
        self.results = {}  # (key, system) -> list of values (inf = timeout)
        self.notes = []

    def rec(self, key, system, value):
        self.results.setdefault((key, system), []).append(value)

    def deadline(self):
        return now() + self.args.timeout

    def warmup(self, s):
        os.makedirs(os.path.join(s.a, "small"))
        data = os.urandom(100)
        write_file(os.path.join(s.a, "small", "warmup"), data)
        t0 = now()
        try:
            t, _ = wait_content(os.path.join(s.b, "small", "warmup"), data, self.deadline())
            log(f"{s.name}: warm-up file on B after {fmt_s(t - t0)}")
        except Timeout as e:
            log(f"{s.name}: warm-up file: timeout ({e})")
            self.notes.append(f"{s.name}: warm-up file never readable on B: {e}")

    def small(self, s, count):
        lat = []
        for i in range(count):
            data = os.urandom(100)
            t0 = write_file(os.path.join(s.a, "small", f"f{i:03}"), data)
            try:
                t1, _ = wait_content(os.path.join(s.b, "small", f"f{i:03}"), data, self.deadline())
            except Timeout as e:
                self.notes.append(f"{s.name}: small file {i} not readable on B: {e}")
                log(f"{s.name}: small file {i}: timeout ({e}); stopping this workload")
                lat.append(math.inf)
                break
            lat.append(t1 - t0)
        srt = sorted(lat)
        p50 = statistics.median(srt)
        p99 = srt[max(0, math.ceil(0.99 * len(srt)) - 1)]  # nearest rank
        self.rec("small_p50", s.name, p50)
        self.rec("small_p99", s.name, p99)
        log(f"{s.name}: small files: n={len(lat)} p50 {fmt_s(p50)} p99 {fmt_s(p99)} "
            f"min {fmt_s(srt[0])} max {fmt_s(srt[-1])}")

    def big(self, s, r, size):
        data = os.urandom(size)
        name = f"big-r{r}"
        buf = touched_buffer(size + 1)
        t0 = write_file(os.path.join(s.a, name), data)
        try:
            t1, dt = wait_content(os.path.join(s.b, name), data, self.deadline(), buf=buf)
        except Timeout as e:
            self.notes.append(f"{s.name}: round {r}: {size >> 20} MiB file not readable on B: {e}")
            log(f"{s.name}: big file: timeout ({e})")
            self.rec("big_s", s.name, math.inf)
            self.rec("big_mbs", s.name, 0.0)
            return
        self.rec("big_s", s.name, t1 - t0)
        self.rec("big_mbs", s.name, size / dt)
        log(f"{s.name}: {size >> 20} MiB file readable on B after {fmt_s(t1 - t0)}, "
            f"read {fmt_mbs(size / dt)} ({dt:.3f} s)")

    def many(self, s, r, n):
        rel = f"many-r{r}"
        adir, bdir = os.path.join(s.a, rel), os.path.join(s.b, rel)
        base = os.urandom(4096)
        ctx = multiprocessing.get_context("fork")
        pconn, cconn = ctx.Pipe(duplex=False)
        done = ctx.Event()
        child = ctx.Process(target=poll_many,
                            args=(bdir, n, base, now() + self.args.timeout + 600, cconn, done))
        child.start()
        os.makedirs(adir)
        t_start = now()
        for i in range(n):
            t_last = write_file(os.path.join(adir, f"f{i:06}"), many_content(base, i))
        done.set()
        create_s = t_last - t_start
        deadline = t_last + self.args.timeout
        res = None
        trace, last_p = [], None
        while res is None:
            p = s.progress()
            if p is not None and p != last_p:
                trace.append(f"+{now() - t_last:.2f}s {p}")
                last_p = p
            if pconn.poll(0.25):
                res = pconn.recv()
            elif now() > deadline:
                res = ("timeout", "no answer from the poller")
        if trace:
            log(f"{s.name}: after the last close: " + "; ".join(trace))
        child.terminate() if child.is_alive() else None
        child.join(5)
        if res[0] == "ok":
            v = max(0.0, res[1] - t_last)
            self.rec("many_s", s.name, v)
            listed = "-" if res[2] is None else fmt_s(res[2] - t_last)
            log(f"{s.name}: {n} files created on A in {create_s:.2f} s; "
                f"all readable on B {fmt_s(v)} after the last close (all listed after {listed})")
        else:
            self.rec("many_s", s.name, math.inf)
            self.notes.append(f"{s.name}: round {r}: {n} files: {res[1]}")
            log(f"{s.name}: {n} files: timeout ({res[1]})")

    def edit(self, s, r, kind, path_a, path_b, old, do_edit, new, probe):
        """Wire bytes and time of one edit; returns the new content."""
        s.quiesce()
        w_q = s.wire()
        time.sleep(SETTLE)
        w0 = s.wire()
        buf = touched_buffer(len(new) + 1)
        t0 = do_edit()
        try:
            t1, _ = wait_content(path_b, new, self.deadline(), probe, buf)
            v = t1 - t0
        except Timeout as e:
            self.notes.append(f"{s.name}: round {r}: {kind}: not readable on B: {e}")
            log(f"{s.name}: {kind}: timeout ({e})")
            v = math.inf
        time.sleep(SETTLE)
        s.quiesce()
        w1 = s.wire()
        self.rec(f"{kind}_s", s.name, v)
        self.rec(f"{kind}_wire", s.name, float(w1 - w0))
        log(f"{s.name}: {kind}: B reads the new content after {fmt_s(v)}; "
            f"{w1 - w0} bytes on the wire (idle before: {w0 - w_q} bytes in {SETTLE:.0f} s)")
        return new

    def edits(self, s, r, size):
        name = f"edit-r{r}"
        pa, pb = os.path.join(s.a, name), os.path.join(s.b, name)
        data = os.urandom(size)
        buf = touched_buffer(size + 1)
        t0 = write_file(pa, data)
        try:
            t1, _ = wait_content(pb, data, self.deadline(), buf=buf)
            log(f"{s.name}: {size >> 20} MiB edit file on B after {fmt_s(t1 - t0)}")
        except Timeout as e:
            self.notes.append(f"{s.name}: round {r}: {size >> 20} MiB edit file not on B: {e}")
            log(f"{s.name}: edit file: timeout ({e}); skipping the edits")
            for k in ("overwrite", "insert"):
                self.rec(f"{k}_s", s.name, math.inf)
                self.rec(f"{k}_wire", s.name, math.inf)
            return
        # 4 KiB overwrite in the middle.
        off = size // 2
        patch = os.urandom(4096)
        new = bytearray(data)
        new[off : off + 4096] = patch
        new = bytes(new)

        def overwrite():
            fd = os.open(pa, os.O_WRONLY)
            os.pwrite(fd, patch, off)
            os.close(fd)
            return now()

        self.edit(s, r, "overwrite", pa, pb, data, overwrite, new, pread_probe(off, patch))
        # 1-byte insert at the start: the file rewritten with one byte prepended.
        new2 = os.urandom(1) + new

        def insert():
            return write_file(pa, new2, os.O_WRONLY | os.O_TRUNC)

        self.edit(s, r, "insert", pa, pb, new, insert, new2, pread_probe(0, new2[:4096]))


# --------------------------------------------------------------------------
# Table

ROWS = [
    # key, label, fmt, kind, target, reference (Syncthing 1.19.2, earlier)
    ("small_p50", "small file ({small}) propagation, median", fmt_s, "time", 0.1, 10.0),
    ("small_p99", "small file ({small}) propagation, p99", fmt_s, "time", 0.5, None),
    ("big_s", "{big} MiB file: readable in full on B", fmt_s, "time", 1.0, 10.7),
    ("big_mbs", "{big} MiB file: B's read throughput", fmt_mbs, "tput", 300e6, None),
    ("many_s", "{many} x 4 KiB files: all readable on B", fmt_s, "time", 3.0, 24.2),
    ("overwrite_wire", "4 KiB overwrite in {edit} MiB: wire", fmt_kb, "bytes", 150e3, 154e3),
    ("overwrite_s", "4 KiB overwrite in {edit} MiB: on B", fmt_s, "time", None, None),
    ("insert_wire", "1-byte insert at start: wire", fmt_kb, "bytes", 150e3, 154e3),
    ("insert_s", "1-byte insert at start: on B", fmt_s, "time", None, None),
]


def median(vals):
    if not vals:
        return None
    return statistics.median(sorted(vals))


def table(bench, sizes, title, quick):
    head = ("workload", "chanfs", "syncthing", "ratio", "chanfs target", "result",
            "syncthing earlier")
    rows = []
    for key, label, fmt, kind, target, ref in ROWS:
        c = median(bench.results.get((key, "chanfs"), []))
        st = median(bench.results.get((key, "syncthing"), []))
        if c is None and st is None:
            continue
        ratio = "-"
        if c is not None and st is not None:
            if kind == "tput":
                if st > 0 and c > 0:
                    ratio = f"{c / st:.2f}x"
            elif math.isinf(c) or math.isinf(st):
                ratio = "-"
            elif c > 0:
                ratio = f"{st / c:.1f}x" if st / c >= 10 else f"{st / c:.2f}x"
        if target is None:
            tgt, res = "-", "-"
        else:
            if kind == "tput":
                tgt = f">= {fmt(target)}"
                ok = c is not None and c >= target
            else:
                tgt = f"<= {fmt(target)}"
                ok = c is not None and c <= target
            res = "-" if c is None else ("pass" if ok else "MISS")
        nc = bench.results.get((key, "chanfs"), [])
        cell_c = fmt(c) if c is not None else "-"
        if nc and any(math.isinf(v) or (kind == "tput" and v == 0) for v in nc) and not (
                c is not None and (math.isinf(c) or c == 0)):
            cell_c += f" ({sum(math.isinf(v) or v == 0 for v in nc)} timeout)"
        cell_ref = fmt(ref) if (ref is not None and not quick) else "-"
        rows.append((label.format(**sizes), cell_c, fmt(st) if st is not None else "-",
                     ratio, tgt, res, cell_ref))
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    out = [title]
    for r in [head] + rows:
        out.append("  ".join(x.ljust(w[i]) if i == 0 else x.rjust(w[i]) for i, x in enumerate(r)))
    out.append("ratio: syncthing/chanfs for times and bytes, chanfs/syncthing for throughput "
               "(>1: chanfs ahead); KB = 1000 bytes, MB/s = 10^6 bytes/s; medians over the rounds;")
    out.append("wire: bytes_in+bytes_out of node A (chanfs, QUIC UDP payload) / inBytesTotal+"
               "outBytesTotal of instance A (syncthing), from the edit until B read it plus "
               f"{SETTLE:.0f} s.")
    return "\n".join(out)


def log_summary(paths):
    out = []
    for p in paths:
        if not os.path.exists(p):
            continue
        with open(p, errors="replace") as f:
            lines = [ln for ln in f if " WARN " in ln or " ERROR " in ln
                     or "WARNING:" in ln or "FAILURE" in ln]
        out.append(f"{p}: {len(lines)} WARN/ERROR lines")
        counts = {}
        for ln in lines:
            k = " ".join(ln.split()[2:])[:160]
            counts[k] = counts.get(k, 0) + 1
        for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:5]:
            out.append(f"  {n:5} {k}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--chanfs", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["chanfs", "syncthing"])
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--small", type=int)
    ap.add_argument("--small-syncthing", type=int)
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    if a.quick:
        big, many, edit = 16 * MiB, 1000, 16 * MiB
        small_c, small_s = a.small or 10, a.small_syncthing or a.small or 3
    else:
        big, many, edit = 100 * MiB, 10000, 64 * MiB
        small_c, small_s = a.small or 50, a.small_syncthing or a.small or 20
    tracker = Tracker(a.work)
    systems = []
    bench = Bench(a)
    try:
        if a.only != "syncthing":
            log("setting up two chanfs nodes")
            systems.append(Chanfs(a.work, a.chanfs, tracker, a.timeout))
            systems[-1].setup()
        if a.only != "chanfs":
            log("setting up two syncthing instances")
            systems.append(Syncthing(a.work, tracker, a.timeout))
            systems[-1].setup()
        for s in systems:
            bench.warmup(s)
        for r in range(1, a.rounds + 1):
            order = systems if r % 2 else systems[::-1]
            log(f"round {r}/{a.rounds}: {' then '.join(s.name for s in order)}")
            for s in order:
                if r == 1:
                    s.quiesce()
                    bench.small(s, small_c if s.name == "chanfs" else small_s)
                s.quiesce()
                bench.big(s, r, big)
                s.quiesce()
                bench.many(s, r, many)
                bench.edits(s, r, edit)
    finally:
        for s in systems:
            log(f"stopping {s.name}")
            s.teardown()
    sizes = dict(
        small=f"100 B, n={small_c}" + ("" if a.only == "chanfs" else f"/{small_s}"),
        big=big >> 20, many=f"{many:,}", edit=edit >> 20,
    )
    title = a.title + f", medians of {a.rounds} round(s)" + (", quick sizes" if a.quick else "")
    print()
    print(table(bench, sizes, title, a.quick))
    if bench.notes:
        print("\nproblems:")
        for n in bench.notes:
            print(f"  {n}")
    print()
    print(log_summary([p for s in systems for p in s.logs()]))
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump({f"{k}/{sy}": v for (k, sy), v in bench.results.items()}, f)


if __name__ == "__main__":
    main()
