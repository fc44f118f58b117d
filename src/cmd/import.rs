use clap::Args as ClapArgs;
use lpuc_ir::gguf::GgufFile;
use lpuc_ir::import::{import_gguf, ImportOptions};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The GGUF model file.
    model: PathBuf,
    /// Output .ir file (`-` for stdout; `.bin` for the binary artifact).
    #[arg(short, long)]
    output: PathBuf,
    /// Context length (bound of P and S); the file's own by default.
    #[arg(short = 'c', long)]
    ctx_size: Option<u64>,
    /// Logits for every new position, not only the last.
    #[arg(long)]
    all_logits: bool,
}

pub fn run(a: Args) -> super::CliResult {
    super::check_not_input("-o", &a.output, &[&a.model])?;
    if let Some(c) = a.ctx_size {
        super::limits::check_ctx("-c", c)?;
    }
    let f = GgufFile::open(&a.model).map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let opts = ImportOptions {
        max_ctx: a.ctx_size,
        all_logits: a.all_logits,
        ..Default::default()
    };
    let (g, _) = import_gguf(&f, &a.model, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    let bytes = if a.output.extension().is_some_and(|e| e == "bin") {
        lpuc_ir::artifact::graph_to_bytes(&g)?
    } else {
        lpuc_ir::text::print(&g).into_bytes()
    };
    super::write_out(&a.output, &bytes)?;
    Ok(())
}
