#!/usr/bin/env bash
# Quick start: set everything up, then generate text on the CPU with the default model.
# Arguments go to `lpuc run`; with none, it continues "Once upon a time" for 32 tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ $# -eq 0 ]; then set -- -p "Once upon a time" -n 32; fi
exec ./target/release/lpuc run "$@"
