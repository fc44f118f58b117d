use clap::Args as ClapArgs;
use lpuc_ir::builder::{build_llama, LlamaConfig, PRESETS};
use lpuc_ir::graph::WeightSource;
use lpuc_ir::DType;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// Model shape: tiny, smollm2-135m, llama2-7b, llama2-70b, llama3-8b, llama3-70b.
    #[arg(long)]
    preset: String,
    /// Deterministic random weights from this seed (otherwise shapes only).
    #[arg(long, value_name = "SEED")]
    random_weights: Option<u64>,
    /// Output file (`.ir` text; a name ending in `.bin` gets the binary artifact).
    #[arg(short, long)]
    output: PathBuf,
    /// dtype of the projection and FFN matrices (default: the preset's).
    #[arg(long)]
    weights: Option<String>,
    /// Compute logits for every new position, not only the last.
    #[arg(long)]
    all_logits: bool,
    /// Context length (bound of P and S).
    #[arg(long)]
    max_ctx: Option<u64>,
    /// Bound of the batch B.
    #[arg(long)]
    batch: Option<u64>,
}

pub fn run(a: Args) -> super::CliResult {
    let mut cfg = LlamaConfig::preset(&a.preset).ok_or_else(|| {
        let hint = lpuc_ir::text::did_you_mean(&a.preset, PRESETS.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "unknown preset `{}`{hint}; presets: {}",
            a.preset,
            PRESETS.join(", ")
        )
    })?;
    if let Some(w) = &a.weights {
        let dt = DType::from_name(w)
            .filter(|d| !d.is_int())
            .ok_or_else(|| anyhow::anyhow!("`--weights {w}` is not a weight dtype"))?;
        cfg.weight_dtype = dt;
        if !cfg.tied_embeddings {
            cfg.embed_dtype = dt;
            cfg.output_dtype = dt;
        }
    }
    cfg.all_logits = a.all_logits;
    if let Some(c) = a.max_ctx {
        cfg.max_ctx = super::limits::check_ctx("--max-ctx", c)?;
    }
    if let Some(b) = a.batch {
        cfg.max_batch = super::limits::check_count("--batch", b, super::limits::MAX_BATCH)?;
    }
    let ws = match a.random_weights {
        Some(seed) => WeightSource::Random { seed },
        None => WeightSource::None,
    };
    let g = build_llama(&cfg, ws).map_err(|e| anyhow::anyhow!("preset {}: {e}", a.preset))?;
    let bytes = if a.output.extension().is_some_and(|e| e == "bin") {
        lpuc_ir::artifact::graph_to_bytes(&g)?
    } else {
        lpuc_ir::text::print(&g).into_bytes()
    };
    super::write_out(&a.output, &bytes)?;
    Ok(())
}
