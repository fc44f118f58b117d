use clap::Args as ClapArgs;
use lpuc_ir::graph::WeightSource;
use lpuc_ir::interp::Interpreter;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The .ir file (with `weights random(seed = N)`).
    file: PathBuf,
    /// Comma-separated token ids, run as one prefill.
    #[arg(long, value_delimiter = ',', required = true)]
    tokens: Vec<u32>,
    /// How many of the highest logits to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pipe: super::pipeline::PipelineArgs,
}

pub fn run(a: Args) -> super::CliResult {
    if a.pipe.print_pipeline(lpuc_passes::TargetKind::Cpu)? {
        return Ok(());
    }
    let mut g = super::load_graph(&a.file)?;
    // The interpreter is the oracle: it runs the graph as written, or after `--passes=`
    // (any pass output is interpretable), through the driver's pass manager.
    if a.pipe.passes.is_some() {
        let pm = lpuc_driver::pass_manager(lpuc_passes::TargetKind::Cpu, &a.pipe.options())?;
        let report = pm.run(&mut g, &mut std::io::stderr())?;
        if a.pipe.time_passes {
            eprint!("{}", report.timing_table(&[]));
        }
    }
    // The interpreter holds every weight as f32 next to its stored form, and every
    // activation of the run: refuse up front rather than grow until the machine kills us.
    let limit = super::limits::physical_memory();
    match super::limits::interp_bytes(&g, a.tokens.len() as u64) {
        Some(b) if b <= limit => {}
        b => {
            return Err(anyhow::anyhow!(
                "{}: running {} tokens on the reference interpreter would need {} \
                 ({} parameters as f32 plus the stored weights and every activation), more \
                 than this machine's {}; use a smaller model (e.g. `lpuc build --preset tiny`)",
                a.file.display(),
                a.tokens.len(),
                b.map_or(
                    "more than 2^64 bytes".to_string(),
                    super::limits::human_bytes
                ),
                g.param_count(),
                super::limits::human_bytes(limit)
            )
            .into())
        }
    }
    let store = match &g.weights {
        WeightSource::Random { seed } => lpuc_ir::weights::random_weights(&g, *seed).map_err(anyhow::Error::msg)?,
        WeightSource::None => {
            return Err(anyhow::anyhow!(
                "{} has no weights (`weights none`): build it with `--random-weights SEED`, or run a GGUF model with `lpuc run`",
                a.file.display()
            )
            .into())
        }
        WeightSource::Gguf { path } => {
            return Err(anyhow::anyhow!("{} takes its weights from GGUF {path}: run it with `lpuc run -m {path}`", a.file.display()).into())
        }
    };
    let mut it = Interpreter::new(&g, &store)?;
    let logits = it.run_tokens(&a.tokens)?;
    let rows = logits.numel() / logits.shape.last().copied().unwrap_or(1).max(1);
    let last = logits.row(rows - 1);
    let mut idx: Vec<usize> = (0..last.len()).collect();
    idx.sort_by(|&x, &y| last[y].total_cmp(&last[x]).then(x.cmp(&y)));
    idx.truncate(a.top);
    if a.json {
        let top: Vec<(usize, f32)> = idx.iter().map(|&i| (i, last[i])).collect();
        println!(
            "{}",
            serde_json::json!({ "shape": logits.shape, "top_logits": top })
        );
    } else {
        println!(
            "logits {:?}; top {} at the last position:",
            logits.shape,
            idx.len()
        );
        for (r, i) in idx.iter().enumerate() {
            println!("{:>3}. id {:>6}  {:>10.4}", r + 1, i, last[*i]);
        }
    }
    Ok(())
}
