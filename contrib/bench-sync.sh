#!/usr/bin/env bash
# Benchmark sync between two chanfs nodes against two Syncthing instances, in
# one run, everything on 127.0.0.1.
#
# A temporary directory (under --dir or $TMPDIR or /tmp) holds two chanfs
# homes with channel "bench" mounted at mnt-a/ and mnt-b/, and two Syncthing
# homes sharing one folder (data-a/, data-b/). Each round runs every workload
# on both systems, chanfs first in odd rounds and Syncthing first in even
# rounds; the table gives each figure's median over the rounds, the ratio and
# chanfs's target. Everything is unmounted, stopped and removed on exit, also
# after a failure or an interrupt. Workloads are in contrib/bench_sync.py.
#
# Usage: contrib/bench-sync.sh [--rounds N] [--quick] [--only chanfs|syncthing]
#                              [--timeout S] [--small N] [--small-syncthing N]
#                              [--dir PARENT] [--keep]
#   --rounds N           rounds of the large workloads (default 3)
#   --quick              1 round, 16 MiB files, 1,000 small files, fewer samples
#   --only SYSTEM        measure only chanfs or only syncthing
#   --timeout S          limit of every wait, printed as "timeout" (default 120)
#   --small N            small files timed on chanfs (default 50; quick 10)
#   --small-syncthing N  small files timed on Syncthing (default 20, each takes
#                        its watcher delay, about 10 s; quick 3)
#   --dir PARENT         where to make the temporary directory
#   --keep               keep the temporary directory (logs) for inspection
#
# Needs root (FUSE mounts of two nodes). Installs fuse3, syncthing and
# python3 when missing and builds target/release/chanfs (brought up to date).
#
# Workloads (A writes, B polls every 3 ms; times run from A's close to the end
# of B's first read that returns exactly the right bytes):
#  1 small files of 100 bytes, one at a time: median and p99 (nearest rank)
#    chanfs targets <= 100 ms median, <= 500 ms p99 (first round only)
#  2 a 100 MiB file: readable in full on B; B's read throughput for that
#    read                                           <= 1 s, >= 300 MB/s
#  3 10,000 files of 4 KiB (distinct contents): from A's last close until B
#    has read every one (B lists and reads while A writes, pausing 3x each
#    pass, at least 5 ms, so the poller takes at most 1/4 of a CPU)  <= 3 s
#  4 in a 64 MiB file already read on B: a 4 KiB overwrite in the middle, then
#    the file rewritten with one byte prepended: bytes on the wire for each,
#    (A's counters, 3 s quiet before, until B read it + 3 s), and the time
#    until B reads the new content                  <= 150 KB each
#
# Syncthing's B has the file's bytes in its page cache (it wrote them), so
# its read throughput is a memory copy; chanfs's B fetches chunks from A.
# B's reader reads into a buffer made (every page touched) before A starts
# writing: page faults of a fresh 100 MiB buffer cost this VM about 0.2 s,
# which is the benchmark's own time, not the filesystem's.
# Full run: about 13 minutes (Syncthing's 10,000 files take most); --quick: 3.
#
# Syncthing runs with its default folder settings (watcher on, 10 s delay);
# discovery, relays, NAT traversal, STUN, usage and crash reporting are off,
# and each device knows the other at tcp://127.0.0.1:PORT.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3
parent=${TMPDIR:-/tmp}
keep=0
pyargs=()
while (($#)); do
    case $1 in
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    --quick) pyargs+=(--quick); rounds=1; shift ;;
    --only)
        [[ ${2:-} == chanfs || ${2:-} == syncthing ]] ||
            { echo "bench-sync.sh: --only chanfs|syncthing" >&2; exit 2; }
        pyargs+=(--only "$2"); shift 2 ;;
    --timeout) pyargs+=(--timeout "${2:?--timeout needs seconds}"); shift 2 ;;
    --small) pyargs+=(--small "${2:?--small needs a number}"); shift 2 ;;
    --small-syncthing) pyargs+=(--small-syncthing "${2:?--small-syncthing needs a number}"); shift 2 ;;
    --dir) parent=${2:?--dir needs a directory}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-sync.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench-sync.sh: --rounds needs a positive number" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench-sync.sh: run as root" >&2; exit 2; }

# shellcheck source=contrib/bench-lib.sh
. "$repo/contrib/bench-lib.sh"

# --- dependencies -----------------------------------------------------------
bench_prepare "$repo" fusermount3=fuse3 syncthing=syncthing python3=python3

# --- temporary directory and cleanup ----------------------------------------
mkdir -p "$parent"
W=$(mktemp -d "$parent/chanfs-bench-sync.XXXXXX")
chmod 0755 "$W"
: >"$W/pids"
: >"$W/mounts"
py_pid=

cleanup() {
    local rc=$? home mnt pid name i child
    trap - EXIT INT TERM
    set +e
    # The workload process first (after an interrupt it may still run).
    if [[ -n $py_pid ]] && kill -0 "$py_pid" 2>/dev/null; then
        for child in $(pgrep -P "$py_pid" 2>/dev/null); do
            kill -TERM "$child" 2>/dev/null
        done
        kill -TERM "$py_pid" 2>/dev/null
        for ((i = 0; i < 50; i++)); do kill -0 "$py_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$py_pid" 2>/dev/null
    fi
    # chanfs mounts, B before A: flush and unmount, else detach.
    tac "$W/mounts" 2>/dev/null | while IFS=$'\t' read -r home mnt; do
        if mountpoint -q "$mnt" 2>/dev/null; then
            timeout 60 "$bin" --home "$home" unmount "$mnt" >/dev/null 2>&1 ||
                fusermount3 -u -z "$mnt" 2>/dev/null
        fi
    done
    # Processes this run started (chanfs nodes end with their last mount),
    # with their children (syncthing serve runs its own monitor process).
    while read -r pid name; do
        [[ -n $pid ]] || continue
        for child in $(pgrep -P "$pid" 2>/dev/null); do
            kill -TERM "$child" 2>/dev/null
        done
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null
            for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null
        fi
    done <"$W/pids"
    if ((keep)); then
        log "kept $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

avail_mib=$(($(df -P -k "$W" | awk 'NR==2 {print $4}') / 1024))
want_mib=$((rounds * 1200 + 1024))
((avail_mib >= want_mib)) || { echo "bench-sync.sh: $avail_mib MiB free under $parent, want $want_mib" >&2; exit 1; }

title="chanfs $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
title+=" vs $(syncthing --version | awk '{print $1, $2}'), 127.0.0.1, $(nproc) CPUs"
log "working directory $W ($rounds rounds)"
# In the background so that the traps run at once on a signal.
python3 "$repo/contrib/bench_sync.py" --work "$W" --chanfs "$bin" --rounds "$rounds" \
    --title "$title" "${pyargs[@]}" &
py_pid=$!
wait "$py_pid"
