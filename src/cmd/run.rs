use clap::{Args as ClapArgs, ValueEnum};
use lpuc_ir::import::ImportOptions;
use lpuc_runtime::chat::{ChatMessage, ChatTemplate};
use lpuc_runtime::generate::{generate, top_k, Forward, GenerateOptions, InterpForward};
use lpuc_runtime::model::{resolve_model, Model};
use lpuc_runtime::sampler::SamplerConfig;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The reference interpreter (slow, the oracle).
    Interp,
    /// LLVM-JIT kernels.
    Jit,
}

#[derive(ClapArgs)]
pub struct Args {
    /// GGUF model (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// The prompt (raw text, or the user message with --chat).
    #[arg(short, long)]
    prompt: Option<String>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    n_predict: usize,
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8, value_parser = super::limits::parse_temp)]
    temp: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95, value_parser = super::limits::parse_prob)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05, value_parser = super::limits::parse_prob)]
    min_p: f32,
    /// Penalize repeats of the last --repeat-last-n tokens (1.0 = off).
    #[arg(long, default_value_t = 1.0, value_parser = super::limits::parse_penalty)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// RNG seed (random when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// Threads.
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Context size (tokens); default min(4096, the model's).
    #[arg(short = 'c', long)]
    ctx_size: Option<u64>,
    /// Execution backend [default: jit, falling back to interp (with a warning) when the
    /// JIT cannot run the model, e.g. a weight format it has no kernel for].
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Use the model's chat template; without -p, an interactive chat on stdin.
    #[arg(long)]
    chat: bool,
    /// System prompt for --chat.
    #[arg(long)]
    system: Option<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object (prompt_ids, ids, text, top_logits) instead of streaming.
    #[arg(long)]
    json: bool,
    /// Write all first-position logits as float32 .npy.
    #[arg(long, value_name = "FILE.npy")]
    logits_out: Option<PathBuf>,
    /// Tokens per forward call at most (llama.cpp's n_ubatch): the CPU memory plan is made
    /// for this many; longer prompts prefill in chunks.
    #[arg(short = 'u', long = "ubatch-size", visible_alias = "ub", default_value_t = lpuc_driver::DEFAULT_UBATCH)]
    ubatch: u64,
    /// Kernel tier: avx2, avxvnni or avx512vnni (no higher than the host's; default
    /// `$LPUC_ISA`, else the host's best).
    #[arg(long, value_name = "TIER")]
    isa: Option<String>,
    /// KV-cache dtype of K (`-ctk`, llama.cpp's flag; f16 is its default too).
    #[arg(long = "cache-type-k", value_enum, default_value_t = CacheType::F16)]
    cache_type_k: CacheType,
    /// KV-cache dtype of V (`-ctv`).
    #[arg(long = "cache-type-v", value_enum, default_value_t = CacheType::F16)]
    cache_type_v: CacheType,
    #[command(flatten)]
    pipe: super::pipeline::PipelineArgs,
}

/// A KV-cache element type: the dtype of the cache states in the IR, so the interpreter
/// and the JIT round the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CacheType {
    F16,
    F32,
}

impl CacheType {
    pub fn dtype(self) -> lpuc_ir::DType {
        match self {
            CacheType::F16 => lpuc_ir::DType::F16,
            CacheType::F32 => lpuc_ir::DType::F32,
        }
    }
}

pub fn run(mut a: Args) -> super::CliResult {
    use super::limits;
    if a.pipe.print_pipeline(lpuc_passes::TargetKind::Cpu)? {
        return Ok(());
    }
    // A tier asked for (`--isa`, `$LPUC_ISA`) that this CPU cannot run is an error, not a
    // reason to fall back to the interpreter.
    let host = match a.backend {
        Some(Backend::Interp) => None,
        _ => Some(lpuc_codegen::Host::select(a.isa.as_deref()).map_err(anyhow::Error::msg)?),
    };
    if let Some(t) = a.threads {
        let (t, warn) = limits::check_threads("-t", t, limits::cores())?;
        if let Some(w) = warn {
            eprintln!("{w}");
        }
        a.threads = Some(t);
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| anyhow::anyhow!("threads: {e}"))?;
    }
    if let Some(c) = a.ctx_size {
        limits::check_ctx("-c", c)?;
    }
    let t_load = Instant::now();
    let path = resolve_model(a.model.as_deref(), !a.json).map_err(anyhow::Error::msg)?;
    if let Some(p) = &a.logits_out {
        super::check_not_input("--logits-out", p, &[&path])?;
    }
    let opts = ImportOptions {
        max_ctx: None,
        all_logits: false,
        cache_k: Some(a.cache_type_k.dtype()),
        cache_v: Some(a.cache_type_v.dtype()),
    };
    let mut model = Model::load(&path, &opts).map_err(anyhow::Error::msg)?;
    for w in &model.warnings {
        eprintln!("lpuc: warning: {w}");
    }
    let trained = model.config.max_ctx;
    let ctx = a.ctx_size.unwrap_or(trained.min(4096));
    limits::check_ctx("-c", ctx)?;
    limits::check_kv_memory("-c", &model.config, ctx, limits::physical_memory())?;
    if let Some(w) = limits::ctx_warning("-c", ctx, trained) {
        eprintln!("{w}");
    }
    if ctx != model.config.max_ctx {
        model
            .reimport(&ImportOptions {
                max_ctx: Some(ctx),
                ..opts.clone()
            })
            .map_err(anyhow::Error::msg)?;
    }
    // The oracle runs the graph as written, or after `--passes=` when given.
    let passed = match &a.pipe.passes {
        Some(_) if a.backend == Some(Backend::Interp) => {
            let mut g = model.graph.clone();
            lpuc_driver::pass_manager(lpuc_passes::TargetKind::Cpu, &a.pipe.options())?
                .run(&mut g, &mut std::io::stderr())?;
            Some(g)
        }
        _ => None,
    };
    let interp_graph = passed.as_ref().unwrap_or(&model.graph);
    let interp = || -> Result<Box<dyn Forward + '_>, anyhow::Error> {
        Ok(Box::new(
            InterpForward::new(interp_graph, &model.weights).map_err(anyhow::Error::msg)?,
        ))
    };
    let opts = a.pipe.options();
    let jit = || {
        lpuc_driver::jit(
            model.graph.clone(),
            &model.weights,
            a.threads.unwrap_or_else(lpuc_runtime::jit::default_threads),
            a.ubatch,
            host.clone().expect("selected unless --backend interp"),
            &opts,
            &mut std::io::stderr(),
        )
        .map(|(j, _)| j)
    };
    let mut fwd: Box<dyn Forward + '_> = match a.backend {
        Some(Backend::Interp) => interp()?,
        Some(Backend::Jit) => Box::new(jit().map_err(anyhow::Error::msg)?),
        None => match jit() {
            Ok(j) => Box::new(j),
            Err(e) => {
                eprintln!(
                    "lpuc: warning: the JIT backend cannot run this model ({e}); \
                     using the reference interpreter (slow). Pass --backend to choose."
                );
                interp()?
            }
        },
    };
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let gen_opts = GenerateOptions {
        n_predict: a.n_predict,
        ignore_eos: a.ignore_eos,
        sampler: SamplerConfig {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            repeat_last_n: a.repeat_last_n,
            seed,
            ..SamplerConfig::default()
        },
    };
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    if !a.json {
        eprintln!(
            "lpuc: {} ({} layers, dim {}, {:.1} MiB), backend {}, ctx {ctx}, loaded in {load_ms:.0} ms",
            model.graph.name,
            model.config.n_layers,
            model.config.dim,
            model.graph.weight_bytes() as f64 / 1048576.0,
            fwd.name()
        );
    }
    let tok = &model.tokenizer;
    if a.chat && a.prompt.is_none() {
        return interactive(&mut *fwd, &model, &gen_opts, a.system.as_deref());
    }
    let prompt = a.prompt.clone().ok_or_else(|| {
        anyhow::anyhow!("give a prompt with -p (or use --chat for an interactive chat)")
    })?;
    let text = if a.chat {
        let tmpl = chat_template(&model)?;
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::system(s.clone()));
        }
        msgs.push(ChatMessage::user(prompt.clone()));
        tmpl.render(&msgs, true)
            .map_err(|e| anyhow::anyhow!("chat template: {e}"))?
    } else {
        prompt.clone()
    };
    let ids = tok.encode(&text, true, true);
    let stdout = std::io::stdout();
    let json = a.json;
    if !json && !a.chat {
        print!("{prompt}");
        let _ = stdout.lock().flush();
    }
    let g = generate(&mut *fwd, tok, &ids, &gen_opts, &mut |s| {
        if !json {
            let mut o = stdout.lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        }
    })
    .map_err(anyhow::Error::msg)?;
    if let Some(p) = &a.logits_out {
        super::check_not_input("--logits-out", p, &[&path])?;
        lpuc_runtime::npy::write_f32(p, &g.first_logits)
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    if json {
        let top: Vec<(u32, f32)> = top_k(&g.first_logits, 10);
        println!(
            "{}",
            serde_json::json!({ "prompt_ids": g.prompt_ids, "ids": g.ids, "text": g.text, "top_logits": top })
        );
    } else {
        println!();
        stats(&g);
    }
    Ok(())
}

fn stats(g: &lpuc_runtime::generate::Generation) {
    let p = g.prompt_time.as_secs_f64();
    let e = g.gen_time.as_secs_f64();
    eprintln!(
        "lpuc: prompt {} tokens in {:.1} ms ({:.1} tok/s); generated {} tokens in {:.1} ms ({:.1} tok/s); stop: {:?}",
        g.prompt_ids.len(),
        p * 1e3,
        g.prompt_ids.len() as f64 / p.max(1e-9),
        g.ids.len(),
        e * 1e3,
        g.ids.len() as f64 / e.max(1e-9),
        g.stop
    );
}

fn chat_template(model: &Model) -> Result<ChatTemplate, super::CliError> {
    match ChatTemplate::from_tokenizer(&model.tokenizer) {
        Ok(t) => Ok(t),
        Err(lpuc_runtime::chat::ChatError::NoTemplate) => {
            eprintln!("lpuc: the model has no chat template; using ChatML");
            Ok(lpuc_runtime::chat::chatml_fallback())
        }
        Err(e) => Err(anyhow::anyhow!("chat template: {e}").into()),
    }
}

/// Multi-turn chat on stdin. The whole conversation is re-rendered each turn and only the
/// tokens past what the KV cache already holds are decoded.
fn interactive(
    fwd: &mut dyn Forward,
    model: &Model,
    opts: &GenerateOptions,
    system: Option<&str>,
) -> super::CliResult {
    let tmpl = chat_template(model)?;
    let tok = &model.tokenizer;
    let mut msgs = Vec::new();
    if let Some(s) = system {
        msgs.push(ChatMessage::system(s.to_string()));
    }
    let mut cached: Vec<u32> = Vec::new();
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    eprintln!("lpuc: chat; an empty line or end of input quits");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        msgs.push(ChatMessage::user(line.trim_end().to_string()));
        let text = tmpl
            .render(&msgs, true)
            .map_err(|e| anyhow::anyhow!("chat template: {e}"))?;
        let ids = tok.encode(&text, true, true);
        let keep = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        if keep < cached.len() || keep == ids.len() {
            fwd.reset();
            cached.clear();
        }
        let start = cached.len();
        let g = generate(fwd, tok, &ids[start..], opts, &mut |s| {
            let mut o = stdout.lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        })
        .map_err(anyhow::Error::msg)?;
        println!();
        cached = ids;
        // The last sampled token was never fed back; the cache holds all but it.
        cached.extend(&g.ids[..g.ids.len().saturating_sub(1)]);
        msgs.push(ChatMessage::assistant(g.text.clone()));
        stats(&g);
    }
    Ok(())
}
