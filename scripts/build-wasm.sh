#!/usr/bin/env bash
# Builds every wasm32-wasip1 artifact of the workspace: the kafka-upstream filter and the test
# filters under test-filters/. Output: target/wasm32-wasip1/wasm/<name>.wasm.
#
# Route 1 (normal): rustup's wasm32-wasip1 target and the machine's cargo.
# Route 2 (no rustup download possible): Debian's rustc-web/cargo-web with the Rust sources and
# wasi-libc, building std for the target (-Zbuild-std), as verified on this project's machines.
#
# Then the filter (the shipped module) is rewritten by binaryen's `wasm-opt` when it is installed
# (Debian's `binaryen`, which `make wasm` installs): without its name section and producers, and
# re-encoded compactly (LLVM pads every call's function index to five bytes): 600 KB -> 494 KB,
# the same code. No optimisation pass: `-O3` saved 33 KB more but cost 2.7 % more instructions on
# a 64 KiB JSON request, `-Os` 8 % (bench/OPTIMISATIONS.md, "Issue 15"). `WASM_KEEP_NAMES=1` keeps
# the name section, for profiling with function names (host-sim's `HOST_SIM_PERFMAP=1` perf map,
# callgrind). Without wasm-opt the module is cargo's, names kept.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(-p kafka-upstream)
for manifest in test-filters/*/Cargo.toml; do
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)
    packages+=(-p "$name")
done

out=target/wasm32-wasip1/wasm

# cargo's module (target/.../deps, which cargo keeps) through wasm-opt to the shipped path. The
# shipped file is first a hard link to cargo's: it is replaced, never written through.
compact_filter() {
    if ! command -v wasm-opt >/dev/null 2>&1; then
        echo "build-wasm: wasm-opt (Debian package binaryen) not found; kafka_upstream.wasm is cargo's (names kept, not compacted)" >&2
        return
    fi
    local names=(--strip-debug)
    [ "${WASM_KEEP_NAMES:-0}" = 1 ] && names=(--debuginfo)
    wasm-opt "${names[@]}" --strip-producers "$out/deps/kafka_upstream.wasm" -o "$out/kafka_upstream.wasm.opt"
    mv -f "$out/kafka_upstream.wasm.opt" "$out/kafka_upstream.wasm"
}

if command -v rustup >/dev/null 2>&1 && rustup target add wasm32-wasip1 >/dev/null 2>&1; then
    cargo build --profile wasm --target wasm32-wasip1 "${packages[@]}" "$@"
    compact_filter
    exit 0
fi

echo "build-wasm: rustup cannot provide wasm32-wasip1; using Debian's rustc-web toolchain" >&2
needed=(rustc-web cargo-web rust-web-src wasi-libc lld-22)
missing=()
for pkg in "${needed[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi
RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no" \
    /usr/bin/cargo build --profile wasm -Zbuild-std=std,panic_abort \
    --target wasm32-wasip1 "${packages[@]}" "$@"
compact_filter
