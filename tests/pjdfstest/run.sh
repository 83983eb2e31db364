#!/usr/bin/env bash
# Run pjdfstest 0.2.2 against a directory (normally a fresh chanfs mount) and
# check the failures against expected-failures.txt.
#
# Usage:  tests/pjdfstest/run.sh MOUNTPOINT [TEST_PATTERN...]
#   TEST_PATTERNs (optional) are passed to pjdfstest as substring filters on
#   test names, e.g. `run.sh /mnt/chanfs chmod:: rename::`.
#
# Environment (all optional):
#   PJDFSTEST_LOG           full pjdfstest output (default /tmp/pjdfstest.log)
#   PJDFSTEST_TIMEOUT       seconds before the run is killed (default 1200);
#                           a timeout counts as failure
#   PJDFSTEST_CONFIG        config file (default: pjdfstest.toml beside this)
#   PJDFSTEST_EXPECTED      expected failures (default: expected-failures.txt)
#   PJDFSTEST_SECONDARY_FS  directory on ANOTHER file system for the EXDEV
#                           tests; unset = pick one automatically (/dev/shm,
#                           /tmp, /var/tmp, /run), "none" = skip those tests
#   PJDFSTEST_BACKTRACE=1   keep Rust backtraces of failed tests in the log
#   PJDFSTEST_NO_PRECHECK=1 skip the "can nobody/tests enter MOUNTPOINT" check
#
# Exit status: 0 if every failing test is listed in expected-failures.txt;
# 1 if some failure is not listed, pjdfstest timed out/crashed, or the output
# could not be parsed; 2 on bad usage/setup.
# The last line printed is always `pjdfstest: N passed, N failed, N skipped`
# (except on usage/setup errors, exit 2, when pjdfstest did not run).
#
# What pjdfstest needs from the target (learned from 0.2.2's source and runs):
#   - Run as root: ~half the tests are root-only (chown, setuid/setgid bits,
#     switching users via seteuid to `nobody`/`tests`, block/char mknod);
#     as non-root they are reported "skipped". run.sh refuses non-root.
#   - Users `nobody` and `tests` with primary groups (install.sh).
#   - It creates a temp dir `.tmpXXXXXX` under MOUNTPOINT (then one 0755
#     subdir per test) and removes it at the end (a killed run leaves it).
#   - MOUNTPOINT and all its ancestors must be searchable (o+x) by
#     nobody/tests; mode 0755 is enough, 0777 is NOT needed. A 0700 dir (or a
#     mount below /root, which is 0700) makes every user-switching test fail
#     with EACCES. The umask must not remove o+x from pjdfstest's own temp
#     dir, so run.sh sets umask 022.
#   - FUSE mount options: `allow_other` is required (without it the kernel
#     refuses every access by nobody/tests, even on a root-owned mount);
#     `default_permissions` makes the kernel do POSIX permission checks
#     (otherwise the file system must do them itself); the mount must NOT be
#     `noexec` (ETXTBSY tests are skipped on noexec). `dev`/`suid` are not
#     needed. No remount is done (allow_remount = false => EROFS tests skip).
#   - Free space: tiny (< a few MB). A full run takes ~2.5 s on ext4 (398
#     tests, naptime 0.01); the 1200 s timeout is only a hang guard.
#   - FUSE attribute caching breaks ~30 tests (link/unlink/rename ctime and
#     st_nlink checks see stale cached attrs): seen on bindfs with default
#     timeouts (31 failures) vs attr_timeout=0,entry_timeout=0 (1 failure).
#     So chanfs should reply with TTL 0 (or invalidate) under test.
#   - A killed run leaves its `.tmpXXXXXX` dir behind; run.sh never cleans
#     MOUNTPOINT, so give it a fresh mount. If the FUSE daemon deadlocks so
#     badly that SIGKILL cannot reap pjdfstest, abort the connection
#     (echo 1 > /sys/fs/fuse/connections/<minor of st_dev>/abort).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }

[[ $# -ge 1 ]] || usage
[[ $1 != -h && $1 != --help ]] || usage
target=$1
shift
patterns=("$@")

log=${PJDFSTEST_LOG:-/tmp/pjdfstest.log}
timeout_s=${PJDFSTEST_TIMEOUT:-1200}
config=${PJDFSTEST_CONFIG:-$here/pjdfstest.toml}
expected=${PJDFSTEST_EXPECTED:-$here/expected-failures.txt}

[[ $(id -u) -eq 0 ]] || die "must run as root (most pjdfstest cases need root)"
[[ -d $target ]] || die "not a directory: $target"
target=$(cd "$target" && pwd -P)
[[ -f $config ]] || die "config not found: $config"
[[ -f $expected ]] || die "expected-failures file not found: $expected"
[[ $timeout_s =~ ^[0-9]+$ ]] || die "PJDFSTEST_TIMEOUT must be a number of seconds"

export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
pjdfstest_bin=$(command -v pjdfstest) || die "pjdfstest not found; run $here/install.sh"
for u in nobody tests; do
    id -u "$u" >/dev/null 2>&1 || die "user $u missing; run $here/install.sh"
done

# Mount sanity (warnings only: the target may be a plain directory).
mnt_fstype=$(findmnt -n -o FSTYPE -T "$target" 2>/dev/null || true)
mnt_opts=$(findmnt -n -o OPTIONS -T "$target" 2>/dev/null || true)
if [[ ,$mnt_opts, == *,noexec,* ]]; then
    echo "run.sh: warning: $target is on a noexec mount; ETXTBSY tests will be skipped" >&2
fi
if [[ $mnt_fstype == fuse* && ,$mnt_opts, != *,allow_other,* ]]; then
    echo "run.sh: warning: FUSE mount without allow_other; tests run as nobody/tests will fail" >&2
fi

# Can the dummy users enter the directory? (catches 0700 dirs/ancestors and
# FUSE mounts without allow_other before 100+ confusing EACCES failures)
if [[ ${PJDFSTEST_NO_PRECHECK:-0} != 1 ]] && command -v runuser >/dev/null 2>&1; then
    for u in nobody tests; do
        runuser -u "$u" -- test -x "$target" ||
            die "user $u cannot search $target (needs o+x on it and every ancestor, and allow_other on a FUSE mount); set PJDFSTEST_NO_PRECHECK=1 to run anyway"
    done
fi

# Secondary file system for the EXDEV (cross-device link/rename) tests.
secondary=${PJDFSTEST_SECONDARY_FS:-auto}
secondary_tmp=
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    if [[ -n $secondary_tmp ]]; then rm -rf -- "$secondary_tmp"; fi
}
trap cleanup EXIT
if [[ $secondary == auto ]]; then
    secondary=none
    target_dev=$(stat -c %d "$target")
    for cand in /dev/shm /tmp /var/tmp /run; do
        if [[ -d $cand && -w $cand && $(stat -c %d "$cand") != "$target_dev" ]]; then
            secondary_tmp=$(mktemp -d "$cand/pjdfstest-xdev.XXXXXX")
            secondary=$secondary_tmp
            break
        fi
    done
fi
secondary_args=()
if [[ $secondary != none ]]; then
    [[ -d $secondary ]] || die "PJDFSTEST_SECONDARY_FS is not a directory: $secondary"
    secondary_args=(-s "$secondary")
fi

mkdir -p "$(dirname "$log")"
echo "run.sh: $pjdfstest_bin ($("$pjdfstest_bin" --version)) on $target" \
    "(fstype ${mnt_fstype:-?}, secondary fs: $secondary, timeout ${timeout_s}s)"
echo "run.sh: full output -> $log"

# Run. No colours (NO_COLOR); the parser strips ANSI codes anyway.
umask 022
if [[ ${PJDFSTEST_BACKTRACE:-0} == 1 ]]; then
    bt=(env RUST_BACKTRACE=1)
else
    bt=(env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE)
fi
start=$(date +%s)
rc=0
"${bt[@]}" NO_COLOR=1 timeout --kill-after=30 "$timeout_s" \
    "$pjdfstest_bin" -c "$config" -p "$target" "${secondary_args[@]}" -- "${patterns[@]}" \
    </dev/null >"$log" 2>&1 || rc=$?
elapsed=$(($(date +%s) - start))

# --- parse ------------------------------------------------------------------
# Result lines look like (padded with spaces, name first):
#   chmod::change_perm::regular            ok
#   chmod::erofs_named                skipped      (reasons follow, tab-indented)
#   chmod::clear_isgid_bit             FAILED      (panic message follows, tab-indented)
#   <name>                 PASSED UNEXPECTEDLY / failed as expected
#     (only with settings.expected_failures in the config, which we don't use)
# and at the end:
#   Summary: F failed, S skipped, P passed, E expected failures, T total
# Test names are rust paths like `module::test[::filetype]`.
clean=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log")
results=$(printf '%s\n' "$clean" | awk '
    match($0, /^[A-Za-z0-9_]+(::[A-Za-z0-9_]+)+ +(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)$/) {
        name = $1
        status = $0; sub(/^[^ ]+ +/, "", status)
        if (status == "ok" || status == "PASSED UNEXPECTEDLY") s = "pass"
        else if (status == "skipped") s = "skip"
        else s = "fail"
        print s, name
    }')
count() { printf '%s\n' "$results" | grep -c "^$1 " || true; }
n_pass=$(count pass)
n_fail=$(count fail)
n_skip=$(count skip)
failed_names=$(printf '%s\n' "$results" | awk '$1 == "fail" { print $2 }' | sort -u)

problems=0
summary_line=$(printf '%s\n' "$clean" | grep -E '^Summary: ' | tail -n 1 || true)
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "run.sh: ERROR: pjdfstest TIMED OUT after ${timeout_s}s (rc=$rc); counts below are partial"
    last=$(printf '%s\n' "$results" | tail -n 1 | awk '{ print $2 }')
    echo "run.sh: last finished test: ${last:-none} (the hanging one ran after it; see $log)"
    problems=1
elif [[ -z $summary_line ]]; then
    echo "run.sh: ERROR: pjdfstest exited (rc=$rc) without a Summary line (crash?); see $log"
    tail -n 20 "$log" | sed 's/^/    | /'
    problems=1
else
    total=$(printf '%s\n' "$summary_line" | sed -nE 's/.* ([0-9]+) total$/\1/p')
    if [[ $total != $((n_pass + n_fail + n_skip)) ]]; then
        echo "run.sh: ERROR: parsed $((n_pass + n_fail + n_skip)) results but pjdfstest says: $summary_line"
        problems=1
    fi
    # pjdfstest exits 1 whenever a test failed; anything else is odd.
    if [[ $rc -ne 0 && $n_fail -eq 0 ]]; then
        echo "run.sh: ERROR: pjdfstest exited with rc=$rc but no test failed; see $log"
        problems=1
    fi
fi

# Expected failures: first field of each non-comment line.
expected_names=$(sed -e 's/#.*//' "$expected" | awk 'NF { print $1 }' | sort -u)
unexpected=$(comm -23 <(printf '%s\n' "$failed_names" | sed '/^$/d') \
                      <(printf '%s\n' "$expected_names" | sed '/^$/d'))
# Listed but not failing: only meaningful for tests that actually passed.
passed_names=$(printf '%s\n' "$results" | awk '$1 == "pass" { print $2 }' | sort -u)
fixed=$(comm -12 <(printf '%s\n' "$expected_names" | sed '/^$/d') \
                 <(printf '%s\n' "$passed_names" | sed '/^$/d'))

# Panic message of a failed test, on one line: the tab-indented line right
# after its result line plus up to 3 continuation lines (assert_eq's
# "left:"/"right:"), stopping at the next result line or backtrace.
reason_of() {
    printf '%s\n' "$clean" | awk -v n="$1" '
        found == 1 && /^\t/ { sub(/^\t/, ""); msg = $0; found = 2; next }
        found == 2 && k < 3 && !/^Backtrace:/ && !/ (ok|FAILED|skipped)$/ {
            sub(/^ +/, ""); msg = msg " | " $0; k++; next }
        found { exit }
        $1 == n && / FAILED$/ { found = 1 }
        END { if (length(msg) > 200) msg = substr(msg, 1, 197) "..."; print msg }'
}

if [[ -n $failed_names ]]; then
    echo "run.sh: failing tests ($n_fail):"
    while IFS= read -r name; do
        if printf '%s\n' "$expected_names" | grep -qxF -- "$name"; then
            tag="expected  "
        else
            tag="UNEXPECTED"
        fi
        printf '  %s %s  -- %s\n' "$tag" "$name" "$(reason_of "$name")"
    done <<<"$failed_names"
fi
if [[ -n $fixed ]]; then
    echo "run.sh: note: listed in $(basename "$expected") but now passing (remove them):"
    printf '%s\n' "$fixed" | sed 's/^/  /'
fi
if [[ -n $unexpected ]]; then
    echo "run.sh: ERROR: $(printf '%s\n' "$unexpected" | wc -l) failure(s) NOT listed in $expected:"
    printf '%s\n' "$unexpected" | sed 's/^/  UNEXPECTED FAILURE: /'
    problems=1
fi

ran=$((n_pass + n_fail))
if [[ $ran -gt 0 ]]; then
    pct=$(awk -v p="$n_pass" -v r="$ran" 'BEGIN { printf "%.1f", 100 * p / r }')
else
    pct="n/a"
fi
echo "run.sh: pass rate ${pct}% of non-skipped tests ($n_pass/$ran), took ${elapsed}s, pjdfstest rc=$rc"
if [[ $problems -eq 0 ]]; then
    echo "run.sh: OK (all failures are expected)"
else
    echo "run.sh: FAILED"
fi
echo "pjdfstest: $n_pass passed, $n_fail failed, $n_skip skipped"
exit "$problems"
