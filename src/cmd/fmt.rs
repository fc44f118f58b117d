use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The .ir file.
    file: PathBuf,
    /// Write here instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn run(a: Args) -> super::CliResult {
    let g = super::load_graph(&a.file)?;
    if let Some(o) = &a.output {
        let w = super::weights_file(&g);
        let mut ins = vec![a.file.as_path()];
        ins.extend(w.as_deref());
        super::check_not_input("-o", o, &ins)?;
    }
    let t = lpuc_ir::text::print(&g);
    super::write_out(
        a.output.as_deref().unwrap_or(std::path::Path::new("-")),
        t.as_bytes(),
    )?;
    Ok(())
}
