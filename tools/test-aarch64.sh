#!/usr/bin/env bash
# Cross-compiles grist-kernels' tests for aarch64 and runs them under qemu user-mode
# emulation, twice, so both NEON paths are exercised on any x86-64 machine:
#   1. `-cpu max`        — every Armv8/9 feature: dispatch installs the `sdot` kernels, and
#                          tests/simd_neon.rs checks both the sdot and plain-NEON kernels;
#   2. `-cpu cortex-a53` — Armv8.0 without `dotprod`: dispatch must install the plain-NEON
#                          kernels (an `sdot` would be SIGILL here), tests skip sdot loudly.
#
# Installs what is missing: the Rust target (rustup) and Debian's cross linker, qemu and the
# arm64 libc (apt-get; needs root or sudo). Exits non-zero if anything fails.
#
# Environment:
#   GRIST_TEST_BLOCKS  random blocks per format in the equivalence tests (default here 100000;
#                      qemu runs them in about half a minute per CPU model on 2 cores)
#   CARGO_TARGET_DIR   honoured as usual
#   EXTRA_TEST_ARGS    extra arguments for `cargo test` (e.g. `--test simd_neon`)
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
cd "$(dirname "$0")/.."

log() { printf '== test-aarch64: %s\n' "$*" >&2; }

# --- prerequisites ---------------------------------------------------------------------------
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    log "installing Rust target $TARGET"
    rustup target add "$TARGET"
fi

if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64 >/dev/null \
    || [ ! -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ]; then
    log "installing gcc-aarch64-linux-gnu, qemu-user, libc6-dev-arm64-cross"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then SUDO="sudo"; else
            log "error: need root (or sudo) to apt-get install the cross toolchain"; exit 1
        fi
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        gcc-aarch64-linux-gnu qemu-user libc6-dev-arm64-cross
fi

export GRIST_TEST_BLOCKS="${GRIST_TEST_BLOCKS:-100000}"
# Linker and the default runner come from .cargo/config.toml; set them here too so the
# script also works if that file is absent or overridden.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc

# --- build once, run on two CPU models --------------------------------------------------------
# shellcheck disable=SC2086
cargo test -p grist-kernels --target "$TARGET" --no-run ${EXTRA_TEST_ARGS:-}

status=0
for cpu in max cortex-a53; do
    log "running grist-kernels tests under qemu-aarch64 -cpu $cpu (GRIST_TEST_BLOCKS=$GRIST_TEST_BLOCKS)"
    # shellcheck disable=SC2086
    if ! CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $SYSROOT -cpu $cpu" \
        cargo test -p grist-kernels --target "$TARGET" ${EXTRA_TEST_ARGS:-}; then
        log "FAILED under -cpu $cpu"
        status=1
    fi
done

if [ "$status" -eq 0 ]; then
    log "all aarch64 tests passed (sdot and plain-NEON paths)"
fi
exit "$status"
