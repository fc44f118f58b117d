#!/usr/bin/env bash
# Runs the whole test suite (release mode: the reference interpreter runs the real model).
# Sets up first (system packages, model download), so it passes on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo test --release --workspace --all-targets
cargo test --release --workspace --doc
