#!/usr/bin/env bash
# Builds every wasm32-wasip1 artifact of the workspace: the kafka-upstream filter and the test
# filters under test-filters/. Output: target/wasm32-wasip1/wasm/<name>.wasm.
#
# Route 1 (normal): rustup's wasm32-wasip1 target and the machine's cargo.
# Route 2 (no rustup download possible): Debian's rustc-web/cargo-web with the Rust sources and
# wasi-libc, building std for the target (-Zbuild-std), as verified on this project's machines.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(-p kafka-upstream)
for manifest in test-filters/*/Cargo.toml; do
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)
    packages+=(-p "$name")
done

if command -v rustup >/dev/null 2>&1 && rustup target add wasm32-wasip1 >/dev/null 2>&1; then
    exec cargo build --profile wasm --target wasm32-wasip1 "${packages[@]}" "$@"
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
    exec /usr/bin/cargo build --profile wasm -Zbuild-std=std,panic_abort \
    --target wasm32-wasip1 "${packages[@]}" "$@"
