#!/usr/bin/env bash
# Runs every test of chanfs: the Rust unit and integration tests (real FUSE
# mounts, real redb files) and the POSIX suite pjdfstest against a fresh
# mount. Needs root (pjdfstest switches users; FUSE allow_other).
# Usage: tests/run.sh            (README: "Run the tests")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ -e /dev/fuse ]] || { echo "tests/run.sh: /dev/fuse is missing: these tests need FUSE" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "tests/run.sh: fusermount3 missing: run contrib/setup.sh (apt-get install fuse3)" >&2; exit 1; }

cargo test --all-targets 2>&1

# pjdfstest against a fresh mount; the directory must be enterable by the
# test users, so it lives in a 0755 directory.
cargo build --quiet
bin=$PWD/target/debug/chanfs
work=$(mktemp -d /tmp/chanfs-pjdfstest.XXXXXX)
chmod 755 "$work"
mkdir -m 755 "$work/mnt"
cleanup() {
    "$bin" --home "$work/home" unmount "$work/mnt" 2>/dev/null || fusermount3 -u -z "$work/mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$bin" --home "$work/home" init >/dev/null
"$bin" --home "$work/home" channel create posix >/dev/null
"$bin" --home "$work/home" mount posix "$work/mnt" --allow-other
tests/pjdfstest/run.sh "$work/mnt"
