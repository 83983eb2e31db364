# Shared by the benchmark scripts (sourced, not run): logging, installing
# what the machine lacks, and building the release binary under test.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# bench_prepare REPO COMMAND=PACKAGE...: installs the Debian package of
# each missing command, then builds chanfs (a no-op when up to date, so a
# stale binary is never measured) and sets $bin to it.
bench_prepare() {
    local repo=$1 need=() pair
    shift
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || need+=("${pair#*=}")
    done
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    log "building chanfs (release)"
    (cd "$repo" && cargo build --release --quiet)
    bin=$repo/target/release/chanfs
}
