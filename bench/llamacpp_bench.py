"""llama.cpp (through llama-cpp-python) on the same tests as `lpuc bench`: pp<N> = one
batch of N tokens from an empty cache, tg<N> = N single-token decodes from an empty cache.
Prints one JSON object per test with the tokens/second of each repetition."""
import json, sys, time
import llama_cpp

model, p, n, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = llama_cpp.Llama(model_path=model, n_ctx=max(1024, p + n + 8), n_batch=max(512, p), n_ubatch=max(512, p),
                      n_threads=threads, n_threads_batch=threads, verbose=False, logits_all=False)
vocab = llm.n_vocab()
x = 0x2545F4914F6CDD1D
toks = []
for _ in range(max(p, n)):
    x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF; x ^= x >> 7; x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
    toks.append(x % vocab)
def pp():
    llm.reset(); llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    t = time.perf_counter(); llm.eval(toks[:p]); return p / (time.perf_counter() - t)
def tg():
    llm.reset(); llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    t = time.perf_counter()
    for tk in toks[:n]:
        llm.eval([tk])
    return n / (time.perf_counter() - t)
if p: pp()
if n: tg()
out = {}
if p: out[f"pp{p}"] = [pp() for _ in range(reps)]
if n: out[f"tg{n}"] = [tg() for _ in range(reps)]
print(json.dumps({"engine": "llama.cpp", "version": llama_cpp.__version__, "threads": threads, "samples": out}))
