//! `lpuc opt`: run a pass pipeline on an `.ir` file (in the spirit of `mlir-opt`).

use clap::Args as ClapArgs;
use lpuc_passes::{PassManager, TargetKind};
use std::path::PathBuf;
use std::time::Instant;

#[derive(ClapArgs)]
pub struct Args {
    /// The input .ir file (not needed with --print-pipeline).
    file: Option<PathBuf>,
    /// Target whose default pipeline runs when --passes is not given: cpu or groq.
    #[arg(long, default_value = "cpu")]
    target: String,
    /// Pipeline text, e.g. `canonicalize,fuse-int4-dequant,tile{target=cpu},plan-buffers{s=512}`.
    #[arg(long)]
    passes: Option<String>,
    /// Output file (`-` for stdout).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    /// Print the pipeline that would run (one line, the form --passes accepts) and exit.
    #[arg(long)]
    print_pipeline: bool,
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    print_ir_after_all: bool,
    /// Print the IR after the named pass(es) (to stderr).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    print_ir_after: Vec<String>,
    /// Print the IR after every pass that changed it (to stderr).
    #[arg(long)]
    print_ir_after_change: bool,
    /// Print a table of the time each pass took (to stderr).
    #[arg(long)]
    time_passes: bool,
    /// Run the verifier after every pass (always on in debug builds).
    #[arg(long)]
    verify_each: bool,
    /// Run only the first N passes (find the pass that breaks a model by bisection).
    #[arg(long, value_name = "N")]
    opt_bisect_limit: Option<usize>,
    /// Print pass statistics (to stderr).
    #[arg(long)]
    stats: bool,
}

pub fn run(a: Args) -> super::CliResult {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let target = TargetKind::parse(&a.target).map_err(anyhow::Error::msg)?;
    let mut pm = match &a.passes {
        Some(text) => PassManager::parse(text, target)?,
        None => PassManager::default_for(target),
    };
    if a.print_pipeline {
        println!("{}", pm.pipeline_text());
        return Ok(());
    }
    let file = a.file.as_ref().ok_or_else(|| {
        anyhow::anyhow!("no input file (usage: lpuc opt IN.ir [--passes=…] [-o OUT.ir])")
    })?;
    pm.set_print_ir_after(a.print_ir_after.clone())?;
    let ins = &mut pm.instruments;
    ins.print_ir_after_all = a.print_ir_after_all;
    ins.print_ir_after_change = a.print_ir_after_change;
    ins.time_passes = a.time_passes;
    ins.verify_each |= a.verify_each;
    ins.opt_bisect_limit = a.opt_bisect_limit;
    let t0 = Instant::now();
    let mut g = super::load_graph(file)?;
    let w = super::weights_file(&g);
    let mut ins = vec![file.as_path()];
    ins.extend(w.as_deref());
    super::check_not_input("-o", &a.output, &ins)?;
    let parse = t0.elapsed();
    let report = pm.run(&mut g, &mut std::io::stderr())?;
    let t1 = Instant::now();
    let text = lpuc_ir::text::print(&g);
    let print = t1.elapsed();
    super::write_out(&a.output, text.as_bytes())?;
    if a.stats {
        eprint!("{}", report.stats.table());
        for (k, v) in &report.notes {
            eprintln!("{k}: {v}");
        }
    }
    if a.time_passes {
        eprint!(
            "{}",
            report.timing_table(&[("parse + verify input", parse), ("print", print)])
        );
    }
    Ok(())
}
