//! `lpuc compile MODEL.ir --target groq …`: static schedule for the Groq LPU, written
//! as an `.lpu` artifact (the `lpuc_ir::artifact` binary form).

use clap::Args as ClapArgs;
use lpuc_targets::groq::program::{CompileOptions, WeightMode};
use lpuc_targets::groq::{trace, MachineModel};
use std::path::PathBuf;

/// The artifact kind `lpuc sim` expects.
pub const KIND: &str = "groq-program";

#[derive(ClapArgs)]
pub struct Args {
    /// The model (.ir text or binary graph artifact).
    file: PathBuf,
    /// Target: `groq` (the CPU path is `lpuc run`).
    #[arg(long)]
    target: String,
    /// Machine profile: a built-in name (v1, v2-whatif) or a profile .toml file.
    #[arg(long, default_value = "v1")]
    profile: String,
    /// Chips to use at most, or `auto` for the fewest that fit.
    #[arg(long, default_value = "auto")]
    chips: String,
    /// Force the tensor-parallel degree (chips per stage); default: chosen.
    #[arg(long)]
    tp: Option<u32>,
    /// Concurrent sequences.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Context (KV-cache tokens per sequence; decode is timed at a full context).
    /// Default: the model's bound of P.
    #[arg(long)]
    context: Option<u64>,
    /// Weight storage: int4, int8, or auto (chosen per block).
    #[arg(long, default_value = "auto")]
    weights: String,
    /// Prompt length for the time-to-first-token estimate.
    #[arg(long, default_value_t = 128)]
    prompt: u64,
    /// Output .lpu artifact.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// `asm`: print the per-queue listing of every distinct program.
    #[arg(long)]
    emit: Option<String>,
    /// Write a Chrome/Perfetto trace (JSON) of one decode step.
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
    #[command(flatten)]
    pipe: super::pipeline::PipelineArgs,
}

pub fn run(a: Args) -> super::CliResult {
    match a.target.as_str() {
        "groq" => {
            if a.pipe.print_pipeline(lpuc_passes::TargetKind::Groq)? {
                return Ok(());
            }
        }
        "cpu" => {
            return Err(anyhow::anyhow!(
            "`lpuc compile --target cpu` is not available: use `lpuc run`/`lpuc opt --target cpu`"
        )
            .into())
        }
        other => return Err(anyhow::anyhow!("unknown target `{other}` (known: groq, cpu)").into()),
    }
    let chips = match a.chips.as_str() {
        "auto" => None,
        s => Some(super::limits::check_count(
            "--chips",
            s.parse::<u64>().map_err(|_| {
                anyhow::anyhow!("`--chips {s}`: expected a number of chips or `auto`")
            })?,
            super::limits::MAX_CHIPS,
        )?),
    };
    // Checked here, before the partitioner's `u32` arithmetic sees them.
    use super::limits::{check_count, check_ctx, MAX_BATCH, MAX_CHIPS, MAX_CTX};
    if let Some(t) = a.tp {
        check_count("--tp", u64::from(t), MAX_CHIPS)?;
    }
    check_count("--batch", a.batch, MAX_BATCH)?;
    if let Some(c) = a.context {
        check_ctx("--context", c)?;
    }
    if a.prompt > MAX_CTX {
        return Err(
            anyhow::anyhow!("--prompt {} is too large (at most {MAX_CTX})", a.prompt).into(),
        );
    }
    let weights = match a.weights.as_str() {
        "int4" => WeightMode::Int4,
        "int8" => WeightMode::Int8,
        "auto" => WeightMode::Auto,
        s => {
            return Err(
                anyhow::anyhow!("`--weights {s}`: expected `int4`, `int8` or `auto`").into(),
            )
        }
    };
    if let Some(e) = &a.emit {
        if e != "asm" {
            return Err(anyhow::anyhow!("`--emit {e}`: the Groq target emits `asm`").into());
        }
    }
    if a.output.is_none() && a.emit.is_none() && a.trace.is_none() {
        return Err(anyhow::anyhow!(
            "nothing to write: give `-o MODEL.lpu`, `--emit=asm` or `--trace FILE.json`"
        )
        .into());
    }
    let machine = load_profile(&a.profile)?;
    let g = super::load_graph(&a.file)?;
    {
        let w = super::weights_file(&g);
        let profile = std::path::Path::new(&a.profile);
        let mut ins = vec![a.file.as_path(), profile];
        ins.extend(w.as_deref());
        if let Some(o) = &a.output {
            super::check_not_input("-o", o, &ins)?;
            if let Some(t) = &a.trace {
                super::check_not_input("--trace", t, &[o])?;
            }
        }
        if let Some(t) = &a.trace {
            super::check_not_input("--trace", t, &ins)?;
        }
    }
    let context = match a.context {
        Some(c) => c,
        None => g.syms.bound(lpuc_ir::Sym::P).ok_or_else(|| {
            anyhow::anyhow!("{} has no bound for P: give `--context`", a.file.display())
        })?,
    };
    let opts = CompileOptions {
        chips,
        tp: a.tp,
        batch: a.batch,
        context,
        weights,
        prompt: a.prompt.min(context),
    };
    let prog = lpuc_driver::groq(
        g,
        &machine,
        &opts,
        &a.pipe.options(),
        &mut std::io::stderr(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    if let Some(out) = &a.output {
        let bytes = lpuc_ir::artifact::encode(KIND, &prog)?;
        super::write_out(out, &bytes)?;
    }
    if a.emit.is_some() {
        print!("{}", trace::listing_all(&prog));
    }
    if let Some(t) = &a.trace {
        let v = trace::trace_json(&prog);
        super::write_out(t, serde_json::to_string(&v)?.as_bytes())?;
    }
    Ok(())
}

/// A built-in profile by name, or a profile file.
pub fn load_profile(name: &str) -> Result<MachineModel, super::CliError> {
    if name.ends_with(".toml") || std::path::Path::new(name).exists() {
        // Bounded: a profile is a few KB, and `/dev/zero` must not be read forever.
        lpuc_ir::fsio::read_limited(std::path::Path::new(name), 16 << 20)?;
        return Ok(MachineModel::load(std::path::Path::new(name))?);
    }
    Ok(MachineModel::builtin(name)?)
}
