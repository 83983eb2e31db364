#!/usr/bin/env bash
# Install what the pjdfstest harness needs on a fresh Debian machine.
# Idempotent: every step checks first and does nothing if already satisfied.
#
#   - pjdfstest 0.2.2 (the Rust rewrite) via `cargo install`, unless a
#     `pjdfstest` binary is already on PATH or in ~/.cargo/bin
#   - a C linker (gcc) if `cc` is missing (needed by rustc to link; no other
#     native library is needed: the binary only links libc/libgcc_s)
#   - the dummy users pjdfstest switches to: `nobody` and `tests`, each with a
#     primary group (pjdfstest's default [dummy_auth] is
#     [nobody, <nobody's primary group>] and [tests, <tests' primary group>])
#
# Must run as root (useradd/groupadd/apt-get). Usage: tests/pjdfstest/install.sh
set -euo pipefail

PJDFSTEST_VERSION=0.2.2
CARGO_HOME_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

log() { printf 'pjdfstest-install: %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root" >&2
    exit 1
fi

apt_updated=0
apt_install() {
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# --- pjdfstest binary -------------------------------------------------------
export PATH="$CARGO_HOME_BIN:$PATH"
if command -v pjdfstest >/dev/null 2>&1; then
    log "pjdfstest already installed: $(command -v pjdfstest)"
else
    if ! command -v cargo >/dev/null 2>&1; then
        log "cargo not found; install a Rust toolchain first" >&2
        exit 1
    fi
    if ! command -v cc >/dev/null 2>&1; then
        apt_install gcc libc6-dev
    fi
    # Separate target dir so we never lock the project's own target/.
    export CARGO_TARGET_DIR="${PJDFSTEST_CARGO_TARGET_DIR:-/tmp/pjdfs-target}"
    log "cargo install pjdfstest --version $PJDFSTEST_VERSION --locked"
    cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked
fi

# --- dummy users/groups -----------------------------------------------------
ensure_user() {
    local user=$1 group=$2
    if id -u "$user" >/dev/null 2>&1; then
        log "user $user exists ($(id "$user"))"
        return
    fi
    if ! getent group "$group" >/dev/null 2>&1; then
        log "groupadd --system $group"
        groupadd --system "$group"
    fi
    log "useradd $user (group $group)"
    useradd --system --no-create-home --home-dir / --shell /usr/sbin/nologin \
        --gid "$group" --comment "Dummy user for pjdfstest" "$user"
}

# Debian's nobody is in group nogroup; other distros call it nobody.
nobody_group=nogroup
if ! getent group nogroup >/dev/null 2>&1; then
    nobody_group=nobody
fi
ensure_user nobody "$nobody_group"
ensure_user tests tests

# pjdfstest resolves the primary group of each dummy user by gid; make sure it
# exists (it always does after useradd above, but a hand-made passwd entry
# could point at a missing group).
for user in nobody tests; do
    gid=$(id -g "$user")
    if ! getent group "$gid" >/dev/null 2>&1; then
        log "primary gid $gid of $user has no group entry" >&2
        exit 1
    fi
done

log "done: $(pjdfstest --version)"
