#!/usr/bin/env bash
# Installs what lpuc needs on a fresh Debian machine, builds it in release mode and fetches
# the default model. Idempotent: every step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# LLVM 19 (dynamically linked) for the CPU JIT's kernel compiler, lpuc-kernelc (inkwell).
if ! command -v llvm-config-19 >/dev/null 2>&1; then need_apt+=(llvm-19-dev); fi
# zlib/zstd/xml headers that llvm-19-dev's link line may name.
for pkg in zlib1g-dev libzstd-dev libxml2-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

echo "setup: building lpuc and lpuc-kernelc (release)" >&2
# lpuc runs lpuc-kernelc (from its own directory) when a kernel is not in the cache yet.
cargo build --release --quiet --workspace --bin lpuc --bin lpuc-kernelc
# Fetch the default model into the cache (verified by SHA-256; no-op when present).
./target/release/lpuc fetch --quiet >/dev/null
