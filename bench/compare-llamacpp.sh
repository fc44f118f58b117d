#!/usr/bin/env bash
# lpuc bench vs llama.cpp on the same GGUF, prompt length and threads, interleaved
# (one repetition of each in turn, ROUNDS times) so machine noise hits both alike;
# prints medians and ratios (lpuc / llama.cpp).
#
#   bench/compare-llamacpp.sh [-m MODEL] [-p 512] [-n 128] [-t 1,2] [-r ROUNDS] [-e native|python]
#
# llama.cpp is the one vendored by llama-cpp-python (pinned below, from PyPI):
#   -e native (default): its own `llama-bench`, built from the sdist's llama.cpp sources
#      with cmake (from PyPI) and -DGGML_NATIVE=ON — what llama.cpp users run;
#   -e python: through the Python binding (`bench/llamacpp_bench.py`), which adds
#      per-token Python overhead (≈ 20 % slower decode here).
# Either is built once (several minutes on 2 cores) under ${LPUC_BENCH_CACHE:-~/.cache/lpuc/bench}.
set -euo pipefail
LLAMA_CPP_PYTHON_VERSION=0.3.36
MODEL="${HOME}/.cache/lpuc/models/SmolLM2-135M-Instruct.Q4_1.gguf"
P=512; N=128; THREADS=1,2; ROUNDS=5; ENGINE=native
while getopts "m:p:n:t:r:e:" o; do
  case $o in m) MODEL=$OPTARG;; p) P=$OPTARG;; n) N=$OPTARG;; t) THREADS=$OPTARG;; r) ROUNDS=$OPTARG;; e) ENGINE=$OPTARG;;
  *) echo "usage: $0 [-m model] [-p n_prompt] [-n n_gen] [-t threads] [-r rounds] [-e native|python]" >&2; exit 2;; esac
done
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
CACHE="${LPUC_BENCH_CACHE:-$HOME/.cache/lpuc/bench}"
VENV="$CACHE/venv-llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION"
case $ENGINE in native|python) ;; *) echo "-e must be native or python" >&2; exit 2;; esac
[ -x "$VENV/bin/pip" ] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q --upgrade pip >&2; }
if [ "$ENGINE" = python ] && ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION into $VENV (builds llama.cpp; minutes)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$VENV/bin/pip" install -q --no-cache-dir "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2
fi
LLAMA_BENCH="$CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION/build/bin/llama-bench"
if [ "$ENGINE" = native ] && [ ! -x "$LLAMA_BENCH" ]; then
  echo "building llama-bench from llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION's llama.cpp (minutes)" >&2
  SRC="$CACHE/src"; mkdir -p "$SRC"
  "$VENV/bin/pip" install -q cmake >&2
  "$VENV/bin/pip" download -q --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$SRC" >&2
  tar xzf "$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz" -C "$SRC"
  "$VENV/bin/cmake" -S "$SRC/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp" \
    -B "$CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
  "$VENV/bin/cmake" --build "$CACHE/llama.cpp-$LLAMA_CPP_PYTHON_VERSION/build" \
    --target llama-bench -j"$(nproc)" >&2
fi
[ -f "$MODEL" ] || { echo "model $MODEL missing (lpuc fetch)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release -q --workspace --bin lpuc --bin lpuc-kernelc)
LPUC="$ROOT/target/release/lpuc"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
IFS=, read -ra TS <<< "$THREADS"
for ((r = 1; r <= ROUNDS; r++)); do
  for t in "${TS[@]}"; do
    "$LPUC" bench -m "$MODEL" -p "$P" -n "$N" -t "$t" -r 1 -o json 2>/dev/null > "$TMP/lpuc.$t.$r.json"
    if [ "$ENGINE" = native ]; then
      "$LLAMA_BENCH" -m "$MODEL" -p "$P" -n "$N" -t "$t" -r 1 -o json 2>/dev/null \
        | python3 "$HERE/llamabench_samples.py" \
        > "$TMP/llama.$t.$r.json"
    else
      "$VENV/bin/python" "$HERE/llamacpp_bench.py" "$MODEL" "$P" "$N" "$t" 1 > "$TMP/llama.$t.$r.json"
    fi
  done
  echo "round $r/$ROUNDS done" >&2
done
ENGINE_NAME="$ENGINE" python3 - "$TMP" "$P" "$N" "$THREADS" <<'PY'
import json, glob, os, statistics, sys
tmp, p, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
print(f"llama.cpp engine: {os.environ.get('ENGINE_NAME', '')}")
print(f"| threads | test | lpuc t/s (median) | llama.cpp t/s (median) | ratio |")
print(f"| ---: | ---: | ---: | ---: | ---: |")
for t in threads:
    lp, ll = {}, {}
    for f in sorted(glob.glob(f"{tmp}/lpuc.{t}.*.json")):
        for row in json.load(open(f)):
            lp.setdefault(row["test"], []).extend(row["samples_ts"])
    for f in sorted(glob.glob(f"{tmp}/llama.{t}.*.json")):
        for k, v in json.load(open(f))["samples"].items():
            ll.setdefault(k, []).extend(v)
    for test in [x for x in (f"pp{p}" if p else None, f"tg{n}" if n else None) if x]:
        a, b = statistics.median(lp[test]), statistics.median(ll[test])
        print(f"| {t} | {test} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
PY
