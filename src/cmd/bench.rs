//! `lpuc bench`: llama-bench-compatible throughput tests (pp = prompt processing of `-p`
//! tokens as one batch from an empty cache, tg = `-n` single-token decode steps from an
//! empty cache), the same table columns, so numbers compare line by line.

use clap::Args as ClapArgs;
use lpuc_ir::import::{GgufWeights, ImportOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(ClapArgs)]
pub struct Args {
    /// GGUF model (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Prompt lengths (comma-separated; 0 skips).
    #[arg(
        short = 'p',
        long = "n-prompt",
        default_value = "512",
        value_delimiter = ','
    )]
    n_prompt: Vec<usize>,
    /// Generated tokens (comma-separated; 0 skips).
    #[arg(
        short = 'n',
        long = "n-gen",
        default_value = "128",
        value_delimiter = ','
    )]
    n_gen: Vec<usize>,
    /// Thread counts (comma-separated).
    #[arg(short = 't', long, value_delimiter = ',')]
    threads: Option<Vec<usize>>,
    /// Repetitions per test.
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Output format: md or json.
    #[arg(short = 'o', long, default_value = "md")]
    output: String,
    /// Print where the time goes, per op kind (adds a clock read per step).
    #[arg(long)]
    profile: bool,
    /// Write the generated kernels' LLVM IR (`kernels.ll`, `kernels.opt.ll`) and object file
    /// to this directory, compiled by `lpuc-kernelc` as a cache miss would be
    /// (`objdump -d DIR/kernels.o` shows the machine code).
    #[arg(long, value_name = "DIR")]
    dump_kernels: Option<PathBuf>,
    /// Tokens per forward call at most (llama-bench's -ub): the memory plan is made for
    /// this many; longer prompts run in chunks.
    #[arg(short = 'u', long = "ubatch-size", visible_alias = "ub", default_value_t = lpuc_driver::DEFAULT_UBATCH)]
    ubatch: u64,
    /// Kernel tier: avx2, avxvnni or avx512vnni (no higher than the host's; default
    /// `$LPUC_ISA`, else the host's best).
    #[arg(long, value_name = "TIER")]
    isa: Option<String>,
    /// KV-cache dtype of K (`-ctk`): f16 (llama.cpp's default) or f32.
    #[arg(long = "cache-type-k", value_enum, default_value_t = super::run::CacheType::F16)]
    cache_type_k: super::run::CacheType,
    /// KV-cache dtype of V (`-ctv`).
    #[arg(long = "cache-type-v", value_enum, default_value_t = super::run::CacheType::F16)]
    cache_type_v: super::run::CacheType,
    #[command(flatten)]
    pipe: super::pipeline::PipelineArgs,
}

struct Row {
    threads: usize,
    test: String,
    n_prompt: usize,
    n_gen: usize,
    samples: Vec<f64>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Deterministic token ids spread over the vocabulary (llama-bench uses random ids too).
fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

pub fn run(a: Args) -> super::CliResult {
    if a.pipe.print_pipeline(lpuc_passes::TargetKind::Cpu)? {
        return Ok(());
    }
    if a.output != "md" && a.output != "json" {
        return Err(anyhow::anyhow!("-o must be md or json, not `{}`", a.output).into());
    }
    if a.repetitions == 0 {
        return Err(anyhow::anyhow!("-r must be at least 1").into());
    }
    use super::limits;
    let mut a = a;
    if let Some(ts) = &mut a.threads {
        for t in ts.iter_mut() {
            let (c, warn) = limits::check_threads("-t", *t, limits::cores())?;
            if let Some(w) = warn {
                eprintln!("{w}");
            }
            *t = c;
        }
    }
    for (flag, v) in a
        .n_prompt
        .iter()
        .map(|v| ("-p", v))
        .chain(a.n_gen.iter().map(|v| ("-n", v)))
    {
        if *v as u64 > limits::MAX_CTX {
            return Err(anyhow::anyhow!(
                "{flag} {v} is too large (at most {} tokens)",
                limits::MAX_CTX
            )
            .into());
        }
    }
    let path = lpuc_runtime::model::resolve_model(a.model.as_deref(), a.output == "md")
        .map_err(anyhow::Error::msg)?;
    let w = GgufWeights::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let need = a
        .n_prompt
        .iter()
        .chain(&a.n_gen)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as u64;
    let (g, cfg) = lpuc_ir::import::import_gguf(
        &w.file,
        &path,
        &ImportOptions {
            max_ctx: Some(need.max(512)),
            all_logits: false,
            cache_k: Some(a.cache_type_k.dtype()),
            cache_v: Some(a.cache_type_v.dtype()),
        },
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    limits::check_kv_memory("-p/-n", &cfg, need.max(512), limits::physical_memory())?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let params = cfg.param_count();
    let ftype = cfg.weight_dtype.name().to_uppercase();
    let model_desc = format!("{} {}M {ftype}", "llama", (params as f64 / 1e6).round());
    let threads = a
        .threads
        .clone()
        .unwrap_or_else(|| vec![lpuc_runtime::jit::default_threads()]);
    let host = lpuc_codegen::Host::select(a.isa.as_deref()).map_err(anyhow::Error::msg)?;
    let tier = host.tier.name();
    let t_lower = Instant::now();
    let lowered = lpuc_driver::lower_cpu(g, a.ubatch, &a.pipe.options(), &mut std::io::stderr())?;
    let lower_s = t_lower.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    for &t in &threads {
        let t0 = Instant::now();
        let mut jit = lpuc_driver::jit_from(&lowered, &w, t.max(1), host.clone())?;
        if a.output == "md" {
            eprintln!(
                "lpuc bench: {t} threads, {tier} kernels, pass pipeline {:.0} ms, kernels {} in {:.0} ms, ready in {:.0} ms",
                lower_s * 1e3,
                if jit.compile.cache_hit {
                    "loaded from cache"
                } else {
                    "compiled"
                },
                jit.compile.seconds * 1e3,
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        if std::env::var_os("LPUC_SHOW_RSS").is_some() {
            let st = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            for l in st
                .lines()
                .filter(|l| l.starts_with("Rss") || l.starts_with("VmHWM"))
            {
                eprintln!("after load: {l}");
            }
            let sm = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
            let mut cur = String::new();
            let mut per: std::collections::BTreeMap<String, u64> = Default::default();
            for l in sm.lines() {
                if l.starts_with("Rss:") {
                    let kb: u64 = l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                    *per.entry(cur.clone()).or_default() += kb;
                } else if !l.contains(':') || l.split_whitespace().count() >= 5 && l.contains('-') {
                    cur = l.split_whitespace().nth(5).unwrap_or("[anon]").to_string();
                }
            }
            for (k, v) in per.iter().filter(|(_, v)| **v > 1024) {
                eprintln!("  {v:>8} kB {k}");
            }
        }
        if let Some(dir) = &a.dump_kernels {
            // Compiled by `lpuc-kernelc` exactly as a cache miss would be.
            let m = lpuc_codegen::module_for(&jit_specs(&lowered.graph, &host)?);
            lpuc_codegen::jit::dump(&m, &host, dir).map_err(anyhow::Error::msg)?;
            eprintln!("lpuc bench: kernels written to {}", dir.display());
        }
        let vocab = cfg.vocab as usize;
        // Warm-up (llama-bench does one too): page in weights, plan the arena.
        let warm = a.n_prompt.iter().copied().max().unwrap_or(0).max(1);
        jit.forward(&tokens(warm, vocab))
            .map_err(anyhow::Error::msg)?;
        jit.reset();
        jit.forward(&tokens(1, vocab)).map_err(anyhow::Error::msg)?;
        jit.set_profiling(a.profile);
        for &p in a.n_prompt.iter().filter(|&&p| p > 0) {
            let toks = tokens(p, vocab);
            let mut samples = vec![];
            for _ in 0..a.repetitions {
                jit.reset();
                let t0 = Instant::now();
                jit.forward(&toks).map_err(anyhow::Error::msg)?;
                samples.push(p as f64 / t0.elapsed().as_secs_f64());
            }
            rows.push(Row {
                threads: t,
                test: format!("pp{p}"),
                n_prompt: p,
                n_gen: 0,
                samples,
            });
        }
        for &n in a.n_gen.iter().filter(|&&n| n > 0) {
            let toks = tokens(n, vocab);
            let mut samples = vec![];
            for _ in 0..a.repetitions {
                jit.reset();
                let t0 = Instant::now();
                for &tk in &toks {
                    jit.forward(&[tk]).map_err(anyhow::Error::msg)?;
                }
                samples.push(n as f64 / t0.elapsed().as_secs_f64());
            }
            rows.push(Row {
                threads: t,
                test: format!("tg{n}"),
                n_prompt: 0,
                n_gen: n,
                samples,
            });
        }
        if a.profile {
            let p = jit.profile();
            let total: f64 = p.by_kind.iter().map(|k| k.1).sum();
            eprintln!("profile ({t} threads, all tests): op, seconds, share, calls");
            for (k, s, n) in &p.by_kind {
                eprintln!("  {k:<11} {s:>8.3} s {:>5.1} % {n:>8}", 100.0 * s / total);
            }
        }
    }
    let size_s = if size >= 1 << 30 {
        format!("{:.2} GiB", size as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", size as f64 / (1u64 << 20) as f64)
    };
    let params_s = if params >= 1_000_000_000 {
        format!("{:.2} B", params as f64 / 1e9)
    } else {
        format!("{:.2} M", params as f64 / 1e6)
    };
    if a.output == "md" {
        println!("| model                          |       size |     params | backend    | isa        | threads |          test |                  t/s |");
        println!("| ------------------------------ | ---------: | ---------: | ---------- | ---------- | ------: | ------------: | -------------------: |");
        for r in &rows {
            let (m, sd) = mean_sd(&r.samples);
            println!(
                "| {:<30} | {:>10} | {:>10} | {:<10} | {:<10} | {:>7} | {:>13} | {:>20} |",
                model_desc,
                size_s,
                params_s,
                "JIT",
                tier,
                r.threads,
                r.test,
                format!("{m:.2} ± {sd:.2}")
            );
        }
    } else {
        let arr: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let (m, sd) = mean_sd(&r.samples);
                serde_json::json!({
                    "model_filename": path.display().to_string(),
                    "model_type": model_desc,
                    "model_size": size,
                    "model_n_params": params,
                    "backends": "JIT",
                    "isa": tier,
                    "n_threads": r.threads,
                    "n_prompt": r.n_prompt,
                    "n_gen": r.n_gen,
                    "test": r.test,
                    "avg_ts": m,
                    "stddev_ts": sd,
                    "samples_ts": r.samples,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
    }
    Ok(())
}

fn jit_specs(
    g: &lpuc_ir::Graph,
    host: &lpuc_codegen::Host,
) -> Result<Vec<lpuc_codegen::KernelSpec>, anyhow::Error> {
    Ok(lpuc_runtime::jit::lower::lower(g, host.vnni512())
        .map_err(anyhow::Error::msg)?
        .specs)
}
