#!/usr/bin/env bash
# One command from a fresh Debian machine to a working chanfs mount:
# installs fuse3 when missing, builds chanfs, creates a home (identity,
# config, store) and a channel if there is none, and mounts it.
# Usage: contrib/setup.sh [CHANNEL [DIR]]    (defaults: home, ~/chanfs/home)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
channel=${1:-home}
dir=${2:-$HOME/chanfs/$channel}

if ! command -v fusermount3 >/dev/null; then
    sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq fuse3
fi
cargo build --release
bin=$PWD/target/release/chanfs
"$bin" id >/dev/null 2>&1 || "$bin" init
"$bin" channel list | grep -qx "$channel" || "$bin" channel create "$channel"
mkdir -p "$dir"
"$bin" mount "$channel" "$dir"
echo "chanfs: channel $channel mounted at $dir ($bin status; $bin unmount $dir)"
