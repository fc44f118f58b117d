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
    let w = super::weights_file(&g);
    let mut ins = vec![a.file.as_path()];
    ins.extend(w.as_deref());
    super::check_not_input("-o", &a.output, &ins)?;
    super::write_out(&a.output, lpuc_ir::dot::to_dot(&g).as_bytes())?;
    Ok(())
}
