use clap::Args as ClapArgs;
use lpuc_ir::Op;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The .ir file.
    file: PathBuf,
}

pub fn run(a: Args) -> super::CliResult {
    let g = super::load_graph(&a.file)?;
    let vals = g.values();
    let ops = vals
        .iter()
        .filter(|v| {
            !matches!(
                g.op(**v),
                Op::Input { .. } | Op::Weight { .. } | Op::Output { .. }
            )
        })
        .count();
    let weights = g.weights().len();
    let params = g.param_count();
    println!(
        "{}: ok: graph \"{}\": {ops} ops, {} values, {weights} weights, {params} parameters ({}), {:.1} MiB of weights",
        a.file.display(),
        g.name,
        vals.len(),
        human(params),
        g.weight_bytes() as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

fn human(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} K", n / 1e3)
    } else {
        format!("{n}")
    }
}
