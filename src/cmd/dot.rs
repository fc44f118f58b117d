use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The .ir file.
    file: PathBuf,
    /// Output .dot file (`-` for stdout).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(a: Args) -> super::CliResult {
    let g = super::load_graph(&a.file)?;
    super::write_out(&a.output, lpuc_ir::dot::to_dot(&g).as_bytes())?;
    Ok(())
}
