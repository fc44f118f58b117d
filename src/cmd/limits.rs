//! Limits on every size and number a user controls on the command line, checked before
//! anything is allocated or any thread is spawned.
//!
//! Invariant: a value that reaches a backend has passed one of these checks, so the size
//! arithmetic downstream (KV-cache mappings, kernel index math, the Groq partitioner's
//! `u32` fields) never overflows or truncates. Every refusal names the flag and, for memory,
//! the bytes the value would need; the arithmetic here is checked, so a value near `u64::MAX`
//! is a message, not a wrap-around.

use lpuc_ir::builder::LlamaConfig;

pub use lpuc_ir::builder::{MAX_BATCH, MAX_CTX};

/// Chips in one Groq compile (`--chips`, `--tp`): far above any deployed system (the largest
/// published GroqRack systems are hundreds of chips), low enough that per-chip tables stay small.
pub const MAX_CHIPS: u64 = 1 << 16;

/// Threads per available core that `-t` may ask for: oversubscription beyond a few threads
/// per core only adds contention, and far beyond it the process runs out of thread stacks
/// (`-t 100000` spawned threads until `EAGAIN`).
pub const THREADS_PER_CORE: usize = 8;

/// Memory a run may plan for when the machine's size is unknown (no `/proc/meminfo`).
const FALLBACK_MEMORY: u64 = 64 << 30;

/// The machine's physical memory (`MemTotal`), the ceiling for any one allocation plan:
/// the KV caches are mapped lazily, but a mapping larger than RAM fails (or is the start of
/// swapping to death) once it is written.
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let v = l.strip_prefix("MemTotal:")?;
                let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
                kb.checked_mul(1024)
            })
        })
        .unwrap_or(FALLBACK_MEMORY)
}

/// `n` bytes for a message: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A context size (`-c`, `--max-ctx`, `--context`): at least 1, at most [`MAX_CTX`].
pub fn check_ctx(flag: &str, ctx: u64) -> anyhow::Result<u64> {
    if ctx == 0 {
        anyhow::bail!("{flag} must be at least 1");
    }
    if ctx > MAX_CTX {
        anyhow::bail!(
            "{flag} {ctx} is too large: at most {MAX_CTX} tokens are supported \
             (the KV cache, rope positions and kernel indices are sized for that)"
        );
    }
    Ok(ctx)
}

/// A count that must be in `1..=max` (`--batch`, `--chips`, `--tp`, …).
pub fn check_count(flag: &str, v: u64, max: u64) -> anyhow::Result<u64> {
    if v == 0 {
        anyhow::bail!("{flag} must be at least 1");
    }
    if v > max {
        anyhow::bail!("{flag} {v} is too large (at most {max})");
    }
    Ok(v)
}

/// The KV caches' bytes at `ctx` tokens as the JIT lays them out: per layer a K and a V
/// cache of `kv_heads × ctx × head_dim` f32 (the JIT rounds `ctx` up to whole 16-key
/// tiles). `None` if the product does not fit in `u64`.
pub fn kv_cache_bytes(cfg: &LlamaConfig, ctx: u64) -> Option<u64> {
    let tiles = ctx.checked_add(15)? / 16 * 16;
    // K and V each in their own dtype (f16 or f32).
    let per_token = u64::from(cfg.n_layers)
        .checked_mul(cfg.n_kv_heads)?
        .checked_mul(cfg.head_dim)?;
    let k = per_token.checked_mul(cache_elem_bytes(cfg.cache_k_dtype))?;
    let v = per_token.checked_mul(cache_elem_bytes(cfg.cache_v_dtype))?;
    k.checked_add(v)?.checked_mul(tiles)
}

fn cache_elem_bytes(d: lpuc_ir::DType) -> u64 {
    if d == lpuc_ir::DType::F16 {
        2
    } else {
        4
    }
}

/// Refuses a context whose KV caches would not fit in `limit` bytes of memory.
pub fn check_kv_memory(flag: &str, cfg: &LlamaConfig, ctx: u64, limit: u64) -> anyhow::Result<()> {
    let how = format!(
        "{} layers × {} kv-heads × {ctx} tokens × {} head-dim × ({} + {}) bytes for K and V",
        cfg.n_layers,
        cfg.n_kv_heads,
        cfg.head_dim,
        cache_elem_bytes(cfg.cache_k_dtype),
        cache_elem_bytes(cfg.cache_v_dtype)
    );
    match kv_cache_bytes(cfg, ctx) {
        Some(b) if b <= limit => Ok(()),
        Some(b) => anyhow::bail!(
            "{flag} {ctx}: the KV cache would need {} ({how} = {b} bytes), more than this \
             machine's {} of memory; lower {flag}",
            human_bytes(b),
            human_bytes(limit)
        ),
        None => {
            anyhow::bail!("{flag} {ctx}: the KV cache size ({how}) overflows 64 bits; lower {flag}")
        }
    }
}

/// A warning when `ctx` exceeds what the model was trained on (it runs, but positions past
/// the trained range are extrapolated and quality degrades).
pub fn ctx_warning(flag: &str, ctx: u64, trained: u64) -> Option<String> {
    (ctx > trained).then(|| {
        format!(
            "lpuc: warning: {flag} {ctx} exceeds the model's trained context of {trained} \
             tokens; output past {trained} tokens will degrade"
        )
    })
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A thread count (`-t`): at least 1; above [`THREADS_PER_CORE`] × the cores it is capped
/// (the returned message says so).
pub fn check_threads(
    flag: &str,
    t: usize,
    cores: usize,
) -> anyhow::Result<(usize, Option<String>)> {
    if t == 0 {
        anyhow::bail!("{flag} must be at least 1");
    }
    let max = cores.max(1).saturating_mul(THREADS_PER_CORE);
    if t > max {
        return Ok((
            max,
            Some(format!(
                "lpuc: warning: {flag} {t} is more than {THREADS_PER_CORE} threads per core \
                 ({cores} cores); using {max}"
            )),
        ));
    }
    Ok((t, None))
}

/// Interpreter memory for one prefill of `tokens` tokens at an empty cache: weights as
/// stored, plus dequantized to f32 (the interpreter caches every dequantized weight), plus
/// every activation (the interpreter keeps all values of a run). `None` on overflow or a
/// shape that does not evaluate.
pub fn interp_bytes(g: &lpuc_ir::Graph, tokens: u64) -> Option<u64> {
    let b = lpuc_ir::types::Bindings {
        b: 1,
        p: 0,
        s: tokens,
    };
    let mut total = g
        .weight_bytes()
        .checked_add(g.param_count().checked_mul(4)?)?;
    for v in g.values() {
        if matches!(g.op(v), lpuc_ir::Op::Weight { .. }) {
            continue;
        }
        let n = g
            .ty(v)
            .shape
            .iter()
            .try_fold(1u64, |a, d| a.checked_mul(d.eval(&b)?))?;
        total = total.checked_add(n.checked_mul(4)?)?;
    }
    Some(total)
}

/// A float flag that must be finite and within `lo..=hi`, for clap's `value_parser`.
fn float_in(s: &str, lo: f32, hi: f32, what: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || v < lo || v > hi {
        return Err(format!("`{s}`: {what}"));
    }
    Ok(v)
}

/// `--temp`: finite, `>= 0` (0 is greedy).
pub fn parse_temp(s: &str) -> Result<f32, String> {
    float_in(
        s,
        0.0,
        f32::MAX,
        "the temperature must be a finite number >= 0 (0 = greedy)",
    )
}

/// `--top-p`, `--min-p`: a probability in `[0, 1]`.
pub fn parse_prob(s: &str) -> Result<f32, String> {
    float_in(s, 0.0, 1.0, "expected a probability between 0 and 1")
}

/// `--repeat-penalty`: finite and `> 0` (1 = off).
pub fn parse_penalty(s: &str) -> Result<f32, String> {
    let v = float_in(
        s,
        0.0,
        f32::MAX,
        "the penalty must be a finite number > 0 (1 = off)",
    )?;
    if v == 0.0 {
        return Err(format!("`{s}`: the penalty must be > 0 (1 = off)"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_bytes_of_smollm2() {
        let cfg = LlamaConfig::preset("smollm2-135m").unwrap();
        // 30 layers × 2 × 3 kv-heads × 4096 × 64 × 4 bytes.
        assert_eq!(kv_cache_bytes(&cfg, 4096), Some(30 * 2 * 3 * 4096 * 64 * 4));
        assert_eq!(kv_cache_bytes(&cfg, u64::MAX), None);
        // An f16 cache (the default of `lpuc run`) is half of that.
        let mut h = cfg.clone();
        h.cache_k_dtype = lpuc_ir::DType::F16;
        h.cache_v_dtype = lpuc_ir::DType::F16;
        assert_eq!(kv_cache_bytes(&h, 4096), Some(30 * 2 * 3 * 4096 * 64 * 2));
        assert!(check_kv_memory("-c", &cfg, 10_000_000, 24 << 30).is_err());
        assert!(check_kv_memory("-c", &cfg, 4096, 24 << 30).is_ok());
    }

    #[test]
    fn threads_are_capped() {
        assert_eq!(check_threads("-t", 4, 2).unwrap(), (4, None));
        let (t, msg) = check_threads("-t", 100_000, 2).unwrap();
        assert_eq!(t, 16);
        assert!(msg.unwrap().contains("-t 100000"));
        assert!(check_threads("-t", 0, 2).is_err());
    }

    #[test]
    fn float_flags() {
        assert!(parse_temp("nan").is_err());
        assert!(parse_temp("-1").is_err());
        assert!(parse_temp("inf").is_err());
        assert_eq!(parse_temp("0"), Ok(0.0));
        assert!(parse_prob("1.5").is_err());
        assert!(parse_prob("NaN").is_err());
        assert!(parse_penalty("0").is_err());
        assert_eq!(parse_penalty("1.1"), Ok(1.1));
    }

    proptest::proptest! {
        /// Sizes anywhere near the integer boundaries go through the checks without a
        /// panic, and whatever passes has a KV size that fits the machine limit.
        #[test]
        fn sizes_near_limits_never_panic(
            base in proptest::sample::select(vec![
                0u64, 1, MAX_CTX, u64::from(u32::MAX), 1 << 32, 1 << 62, 1 << 63, u64::MAX,
            ]),
            delta in -64i64..64,
            layers in 1u32..256,
            kvh in 1u64..128,
            hd in 1u64..1024,
        ) {
            let v = base.wrapping_add_signed(delta);
            let mut cfg = LlamaConfig::preset("tiny").unwrap();
            cfg.n_layers = layers;
            cfg.n_kv_heads = kvh;
            cfg.head_dim = hd;
            let limit = 24u64 << 30;
            if let Ok(c) = check_ctx("-c", v) {
                proptest::prop_assert!((1..=MAX_CTX).contains(&c));
                if check_kv_memory("-c", &cfg, c, limit).is_ok() {
                    proptest::prop_assert!(kv_cache_bytes(&cfg, c).unwrap() <= limit);
                }
            }
            let _ = check_kv_memory("-c", &cfg, v, limit);
            if let Ok(b) = check_count("--batch", v, MAX_BATCH) {
                proptest::prop_assert!(u32::try_from(b).is_ok());
            }
            let _ = check_threads("-t", v as usize, 2);
        }
    }
}
