"""Reads `llama-bench -o json` on stdin; prints {"samples": {"pp512": [...], "tg128": [...]}},
the shape `compare-llamacpp.sh` reads for both engines."""
import json
import sys

rows = json.load(sys.stdin)
out = {}
for x in rows:
    test = f"tg{x['n_gen']}" if x["n_gen"] else f"pp{x['n_prompt']}"
    out[test] = x["samples_ts"]
print(json.dumps({"engine": "llama-bench", "build": x.get("build_commit"), "samples": out}))
