//! One module per subcommand, plus the shared loading and error-reporting helpers.

pub mod bench;
pub mod build;
pub mod compile;
pub mod dot;
pub mod eval;
pub mod fetch;
pub mod fmt;
pub mod import;
pub mod opt;
pub mod passes;
pub mod pipeline;
pub mod run;
pub mod sim;
pub mod tokenize;
pub mod verify;

use lpuc_ir::text::SourceError;
use lpuc_ir::Graph;
use std::path::Path;

/// What a command can fail with: located source errors are rendered with miette.
pub enum CliError {
    Source(Vec<SourceError>),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Other(e.into())
    }
}

pub type CliResult = Result<(), CliError>;

pub fn report(e: CliError) {
    match e {
        CliError::Source(errs) => {
            let n = errs.len();
            for e in errs {
                eprintln!("{:?}", miette::Report::new(e));
            }
            if n > 1 {
                eprintln!("error: {n} errors");
            }
        }
        CliError::Other(e) => eprintln!("error: {e:#}"),
    }
}

/// Loads a graph from an `.ir` text file (or an lpuc binary artifact), verified.
pub fn load_graph(path: &Path) -> Result<Graph, CliError> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    if bytes.starts_with(b"LPUCART\0") {
        let g = lpuc_ir::artifact::graph_from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        lpuc_ir::verify::verify(&g).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        return Ok(g);
    }
    let src = String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {off})",
            path.display()
        )
    })?;
    lpuc_ir::text::parse_and_verify(&src, &path.display().to_string()).map_err(CliError::Source)
}

/// Writes a file, or stdout for `-`.
pub fn write_out(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(content)?;
        return Ok(());
    }
    std::fs::write(path, content)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
