#!/usr/bin/env bash
# Benchmark chanfs against the native filesystem in one run.
#
# A temporary directory (mode 0755, under --dir or $TMPDIR or /var/tmp) holds
# a chanfs home with channel "bench" mounted at mnt/, and a plain directory
# native/ on the same filesystem. Each round runs every figure on both,
# native first in odd rounds and chanfs first in even rounds; the table gives
# each figure's median over the rounds, the chanfs/native ratio and the
# target. Everything is unmounted and removed on exit, also after a failure.
#
# Usage: contrib/bench.sh [--rounds N] [--quick] [--dir PARENT] [--keep]
#   --rounds N   rounds (default 3)
#   --quick      1 round, 256 MiB file, shorter fio runs, smaller tree
#   --dir PARENT where to make the temporary directory
#   --keep       keep the temporary directory (unmounted) for inspection
#
# Needs root (drop_caches). Installs fio, fuse3 and python3 when missing
# and builds target/release/chanfs (cargo build --release: up to date first).
#
# Figures (targets are chanfs relative to native in the same run):
#  1 sequential write, 1 MiB blocks, end_fsync=1 (fio counts the fsync)   >=0.75x
#  2 sequential read after drop_caches                                    >=0.55x
#  3 4 KiB random reads, psync, cold, 10 s                                >=0.55x
#  4 buffered 4 KiB random writes on the file, 20 s, end_fsync=1          >=0.5x
#  5 tar x + sync of ~12,000 files / ~200 MiB of crate sources            <=8x time
#  6 10,000 files of 4 KiB (distinct contents) created, written, closed   <=8x time
#  7 4 KiB pwrite + close at a random offset of the file (open untimed),
#    median latency of 20 <=50 ms; new stored bytes per write            <=512 KiB
#  8 cp of the file inside the mount: new stored bytes, % of its size     <=1%
#  9 node resident memory after 100,000 files of 4 KiB (fresh node)      <=150 MiB
#
# Nothing is deleted before the end: on ext4 without a journal, file
# creation is slow for about a minute after a bulk delete, which would
# distort figures 5 and 6. Those run last in each round, after drop_caches.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3
quick=0
parent=${TMPDIR:-/var/tmp}
keep=0
while (($#)); do
    case $1 in
    --rounds) rounds=${2:?--rounds needs a number}; shift 2 ;;
    --quick) quick=1; rounds=1; shift ;;
    --dir) parent=${2:?--dir needs a directory}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --rounds needs a positive number" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "bench.sh: run as root (drop_caches)" >&2; exit 2; }

if ((quick)); then
    size_mib=256 randread_s=5 randwrite_s=10 tree_files=3000 tree_mib=50 nfiles=2500
else
    size_mib=1024 randread_s=10 randwrite_s=20 tree_files=12000 tree_mib=200 nfiles=10000
fi
nwrites=20
rss_files=100000
start_s=$SECONDS

# shellcheck source=contrib/bench-lib.sh
. "$repo/contrib/bench-lib.sh"

# --- dependencies -----------------------------------------------------------
bench_prepare "$repo" fio=fio fusermount3=fuse3 python3=python3

# --- temporary directory and cleanup ----------------------------------------
mkdir -p "$parent"
T=$(mktemp -d "$parent/chanfs-bench.XXXXXX")
chmod 0755 "$T"
H=$T/home M=$T/mnt N=$T/native
H9=$T/home-rss M9=$T/mnt-rss
mkdir -p "$M" "$N" "$M9"

cleanup() {
    local rc=$? h d pids=() pid i
    trap - EXIT INT TERM
    set +e
    for h in "$H" "$H9"; do
        pid=$(node_pid "$h")
        [[ -n $pid ]] && pids+=("$pid")
    done
    for d in "$M" "$M9"; do
        if mountpoint -q "$d" 2>/dev/null; then
            if [[ $d == "$M" ]]; then h=$H; else h=$H9; fi
            timeout 120 "$bin" --home "$h" unmount "$d" >/dev/null 2>&1 ||
                fusermount3 -u -z "$d" 2>/dev/null
        fi
    done
    for pid in "${pids[@]}"; do
        for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    if ((keep)); then
        log "kept $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

node_pid() {
    [[ -S $1/node.sock ]] || return 0
    timeout 10 "$bin" --home "$1" status --json 2>/dev/null | python3 -c \
        'import json,sys; print(json.load(sys.stdin).get("pid") or "")' 2>/dev/null || true
}

# --- helpers in python --------------------------------------------------------
cat >"$T/helper.py" <<'PY'
import json, os, random, statistics, sys, time

def pick_tree(root, max_files, max_bytes):
    """Crate directories in name order while the totals stay in bounds."""
    n = b = 0
    for reg in sorted(os.listdir(root)):
        for crate in sorted(os.listdir(os.path.join(root, reg))):
            dn = db = 0
            for dp, _, fns in os.walk(os.path.join(root, reg, crate)):
                for f in fns:
                    try:
                        st = os.lstat(os.path.join(dp, f))
                    except OSError:
                        continue
                    dn += 1
                    db += st.st_size
            if n + dn <= max_files and b + db <= max_bytes:
                print(os.path.join(reg, crate))
                n += dn
                b += db
    print(f"{n} files, {b / 2**20:.0f} MiB", file=sys.stderr)

def create(d, count, subdirs):
    """count files of 4 KiB with distinct contents; prints seconds."""
    buf = bytearray(os.urandom(4096))
    dirs = [d] if subdirs <= 1 else [os.path.join(d, f"{i:03}") for i in range(subdirs)]
    for x in dirs:
        os.makedirs(x, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(count):
        buf[:8] = i.to_bytes(8, "little")
        fd = os.open(os.path.join(dirs[i % len(dirs)], f"f{i:06}"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, buf)
        os.close(fd)
    print(f"{time.perf_counter() - t0:.6f}")

def pwrites(path, count):
    """count 4 KiB pwrite+close at random 4 KiB offsets; median ms."""
    blocks = os.stat(path).st_size // 4096
    lat = []
    for _ in range(count):
        data = os.urandom(4096)
        off = random.randrange(blocks) * 4096
        fd = os.open(path, os.O_WRONLY)
        t0 = time.perf_counter()
        os.pwrite(fd, data, off)
        os.close(fd)
        lat.append(time.perf_counter() - t0)
    print(f"{statistics.median(lat) * 1000:.3f}")

def fio(path):
    """Bytes/s of a fio JSON result: io_bytes over runtime (incl. end_fsync)."""
    with open(path) as f:
        j = json.load(f)["jobs"][0]
    if j.get("error"):
        sys.exit(f"fio error {j['error']}")
    op = j["write"] if j["write"]["io_bytes"] else j["read"]
    print(op["io_bytes"] / (op["runtime"] / 1000))

def status(field):
    print(json.load(sys.stdin)[field])

ROWS = [
    # key, label, unit, kind, target
    ("seqwrite", "1 seq write 1M +fsync", "MiB/s", "tput", 0.75),
    ("seqread", "2 seq read, cold", "MiB/s", "tput", 0.55),
    ("randread", "3 4k rand read, cold", "MiB/s", "tput", 0.55),
    ("randwrite", "4 4k rand write +fsync", "MiB/s", "tput", 0.5),
    ("randwrite_stored", "4b stored by fig 4", "MiB", "info", None),
    ("untar", "5 tar x + sync", "s", "time", 8.0),
    ("create", "6 create 4k files", "s", "time", 8.0),
    ("pwrite_ms", "7 4k pwrite+close p50", "ms", "abs", 50.0),
    ("pwrite_stored", "7b stored per 4k write", "KiB", "abs", 512.0),
    ("copy_stored", "8 cp file: stored", "% size", "abs", 1.0),
    ("copy_s", "8b cp file + sync", "s", "info", None),
    ("rss_rounds", "9b node RSS after rounds", "MiB", "info", None),
    ("rss", "9 node RSS, 100k files", "MiB", "abs", 150.0),
    ("gc_s", "9c gc over 100k files", "s", "info", None),
]

def summary(path, title):
    vals = {}
    with open(path) as f:
        for line in f:
            key, target, value = line.split()
            vals.setdefault((key, target), []).append(float(value))
    def med(key, target):
        v = vals.get((key, target))
        return statistics.median(v) if v else None
    def fmt(x):
        if x is None:
            return "-"
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    head = ("figure", "unit", "native", "chanfs", "ratio", "target", "result")
    rows = []
    for key, label, unit, kind, target in ROWS:
        n, c = med(key, "native"), med(key, "chanfs")
        if c is None:
            continue
        ratio = c / n if n else None
        if kind == "tput":
            tgt, ok = f">={target}x", ratio is not None and ratio >= target
        elif kind == "time":
            tgt, ok = f"<={target:g}x", ratio is not None and ratio <= target
        elif kind == "abs":
            tgt, ok = f"<={target:g} {unit}", c <= target
        else:
            tgt, ok = "-", None
        res = "-" if ok is None else ("PASS" if ok else "MISS")
        rows.append((label, unit, fmt(n), fmt(c),
                     "-" if ratio is None else f"{ratio:.2f}x", tgt, res))
    w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    print(title)
    for r in [head] + rows:
        print("  ".join(str(x).ljust(w[i]) if i == 0 else str(x).rjust(w[i])
                        for i, x in enumerate(r)))

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "pick-tree":
    pick_tree(args[0], int(args[1]), int(args[2]))
elif cmd == "create":
    create(args[0], int(args[1]), int(args[2]))
elif cmd == "pwrites":
    pwrites(args[0], int(args[1]))
elif cmd == "fio":
    fio(args[0])
elif cmd == "status":
    status(args[0])
elif cmd == "summary":
    summary(args[0], args[1])
else:
    sys.exit(f"helper: unknown command {cmd}")
PY
py() { python3 "$T/helper.py" "$@"; }
results=$T/results.tsv
: >"$results"

record() { # key target value
    printf '%s %s %s\n' "$1" "$2" "$3" >>"$results"
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
settle() { sync; sleep 2; }
stored() { "$bin" --home "$1" status --json | py status stored_bytes; }
rss() { "$bin" --home "$1" status --json | py status rss_bytes; }
elapsed() { python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.6f}')" "$1"; }
now() { date +%s.%N; }
dir_of() { if [[ $1 == native ]]; then echo "$N"; else echo "$M"; fi; }
mib() { python3 -c "import sys; print(f'{float(sys.argv[1])/2**20:.3f}')" "$1"; }

run_fio() { # out-json fio-args...
    local out=$1
    shift
    timeout -k 10 1200 fio --name=bench --ioengine=psync --output-format=json \
        --output="$out" "$@" >/dev/null
    py fio "$out"
}

# --- setup --------------------------------------------------------------------
avail_gib=$(($(df -P -k "$T" | awk 'NR==2 {print $4}') / 1048576))
want_gib=$((rounds * size_mib * 7 / 1024 + 3))
((avail_gib >= want_gib)) || { echo "bench.sh: $avail_gib GiB free under $parent, want $want_gib" >&2; exit 1; }

log "temporary directory $T ($rounds rounds, file $size_mib MiB)"
"$bin" --home "$H" init >/dev/null
"$bin" --home "$H" channel create bench >/dev/null
"$bin" --home "$H" mount bench "$M"

registry=${CARGO_HOME:-$HOME/.cargo}/registry/src
[[ -d $registry ]] || { echo "bench.sh: no crate sources in $registry (run cargo build once)" >&2; exit 1; }
py pick-tree "$registry" "$tree_files" "$((tree_mib << 20))" >"$T/tree.list"
tar -C "$registry" -cf "$T/tree.tar" -T "$T/tree.list"
log "tarball: $(tar -tf "$T/tree.tar" | wc -l) entries, $(($(stat -c %s "$T/tree.tar") >> 20)) MiB"

# --- rounds -------------------------------------------------------------------
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order=(native chanfs); else order=(chanfs native); fi
    log "round $r/$rounds: ${order[*]}"
    for t in "${order[@]}"; do mkdir -p "$(dir_of "$t")/r$r"; done
    bigfile() { echo "$(dir_of "$1")/r$r/big"; }

    for t in "${order[@]}"; do
        settle
        v=$(run_fio "$T/fio.json" --filename="$(bigfile "$t")" --rw=write --bs=1M \
            --size="${size_mib}M" --end_fsync=1)
        record seqwrite "$t" "$(mib "$v")"
        log "  1 seq write    $t $(mib "$v") MiB/s"
    done
    for t in "${order[@]}"; do
        drop_caches
        v=$(run_fio "$T/fio.json" --filename="$(bigfile "$t")" --rw=read --bs=1M \
            --size="${size_mib}M")
        record seqread "$t" "$(mib "$v")"
        log "  2 seq read     $t $(mib "$v") MiB/s"
    done
    for t in "${order[@]}"; do
        drop_caches
        v=$(run_fio "$T/fio.json" --filename="$(bigfile "$t")" --rw=randread --bs=4k \
            --size="${size_mib}M" --time_based --runtime="$randread_s")
        record randread "$t" "$(mib "$v")"
        log "  3 rand read    $t $(mib "$v") MiB/s"
    done
    for t in "${order[@]}"; do
        settle
        [[ $t == chanfs ]] && s0=$(stored "$H")
        v=$(run_fio "$T/fio.json" --filename="$(bigfile "$t")" --rw=randwrite --bs=4k \
            --size="${size_mib}M" --time_based --runtime="$randwrite_s" --end_fsync=1)
        record randwrite "$t" "$(mib "$v")"
        log "  4 rand write   $t $(mib "$v") MiB/s"
        if [[ $t == chanfs ]]; then
            sync -f "$M"
            record randwrite_stored chanfs "$(mib $(($(stored "$H") - s0)))"
        fi
    done
    for t in "${order[@]}"; do
        settle
        f=$(bigfile "$t")
        [[ $t == chanfs ]] && s0=$(stored "$H")
        v=$(py pwrites "$f" "$nwrites")
        record pwrite_ms "$t" "$v"
        log "  7 pwrite+close $t $v ms"
        if [[ $t == chanfs ]]; then
            sync -f "$M"
            d=$(($(stored "$H") - s0))
            record pwrite_stored chanfs "$(python3 -c "import sys; print(int(sys.argv[1])/int(sys.argv[2])/1024)" "$d" "$nwrites")"
        fi
    done
    for t in "${order[@]}"; do
        settle
        f=$(bigfile "$t")
        [[ $t == chanfs ]] && s0=$(stored "$H")
        t0=$(now)
        timeout -k 10 1200 cp "$f" "$f.copy"
        sync -f "$f.copy"
        v=$(elapsed "$t0")
        record copy_s "$t" "$v"
        if [[ $t == chanfs ]]; then
            d=$(($(stored "$H") - s0))
            record copy_stored chanfs "$(python3 -c "import sys; print(100*int(sys.argv[1])/int(sys.argv[2]))" "$d" "$((size_mib << 20))")"
            log "  8 cp           $t ${v}s, stored +$d bytes"
        else
            log "  8 cp           $t ${v}s"
        fi
    done
    for t in "${order[@]}"; do
        d=$(dir_of "$t")/r$r/tree
        mkdir -p "$d"
        drop_caches
        cat "$T/tree.tar" >/dev/null
        sleep 2
        t0=$(now)
        timeout -k 10 1200 tar -C "$d" -xf "$T/tree.tar"
        sync
        v=$(elapsed "$t0")
        record untar "$t" "$v"
        log "  5 tar x + sync $t ${v}s"
    done
    for t in "${order[@]}"; do
        drop_caches
        sleep 2
        v=$(timeout -k 10 1200 python3 "$T/helper.py" create "$(dir_of "$t")/r$r/files" "$nfiles" 1)
        record create "$t" "$v"
        log "  6 create       $t ${v}s for $nfiles files"
    done
done

settle
v=$(rss "$H")
record rss_rounds chanfs "$(mib "$v")"
log "bench node RSS after the rounds: $(mib "$v") MiB"

# --- figure 9: a fresh node (own home), 100,000 files -------------------------
timeout 120 "$bin" --home "$H" unmount "$M"
"$bin" --home "$H9" init >/dev/null
"$bin" --home "$H9" channel create rss >/dev/null
"$bin" --home "$H9" mount rss "$M9"
v=$(timeout -k 10 1800 python3 "$T/helper.py" create "$M9/files" "$rss_files" 100)
sync -f "$M9"
sleep 2
b=$(rss "$H9")
record rss chanfs "$(mib "$b")"
log "  9 $rss_files files in ${v}s, node RSS $(mib "$b") MiB"
t0=$(date +%s.%N)
g=$("$bin" --home "$H9" gc)
t1=$(date +%s.%N)
v=$(python3 -c "print(round($t1 - $t0, 3))")
record gc_s chanfs "$v"
log "  9c chanfs gc over $rss_files files: ${v}s ($g)"
timeout 120 "$bin" --home "$H9" unmount "$M9"

# --- report -------------------------------------------------------------------
title="chanfs $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
title+=" vs native $(findmnt -no FSTYPE,SOURCE -T "$T" | tr -s ' ' ' '), medians of $rounds round(s)"
((quick)) && title+=", quick sizes"
echo
py summary "$results" "$title"
echo
for h in "$H" "$H9"; do
    if [[ -f $h/node.log ]]; then
        n=$(grep -cE ' (WARN|ERROR) ' "$h/node.log" || true)
        echo "$(basename "$h")/node.log: $n WARN/ERROR lines"
        if ((n)); then
            grep -E ' (WARN|ERROR) ' "$h/node.log" | cut -d' ' -f2- | sed 's/  */ /g' | sort | uniq -c | sort -rn | head -5 || true
        fi
        # When the garbage collector ran during the rounds, and what it did.
        grep 'garbage collection' "$h/node.log" | sed -E 's/^[0-9-]+T([0-9:]+)\.[0-9]+Z +INFO [^ ]+ /  [\1] /' || true
    fi
done
echo "total $((SECONDS - start_s)) s"
