//! `lpuc opt`: run a pass pipeline on an `.ir` file (in the spirit of `mlir-opt`).

use clap::Args as ClapArgs;
use lpuc_passes::TargetKind;
use std::path::PathBuf;
use std::time::Instant;

#[derive(ClapArgs)]
pub struct Args {
    /// The input .ir file (not needed with --print-pipeline).
    file: Option<PathBuf>,
    /// Target whose default pipeline runs when --passes is not given: cpu or groq.
    #[arg(long, default_value = "cpu")]
    target: String,
    /// Output file (`-` for stdout).
    #[arg(short, long, default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    pipe: super::pipeline::PipelineArgs,
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
    if a.pipe.print_pipeline(target)? {
        return Ok(());
    }
    let file = a.file.as_ref().ok_or_else(|| {
        anyhow::anyhow!("no input file (usage: lpuc opt IN.ir [--passes=…] [-o OUT.ir])")
    })?;
    let pm = lpuc_driver::pass_manager(target, &a.pipe.options())?;
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
    if a.pipe.time_passes {
        eprint!(
            "{}",
            report.timing_table(&[("parse + verify input", parse), ("print", print)])
        );
    }
    Ok(())
}
