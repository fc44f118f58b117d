//! One module per subcommand, plus the shared loading and error-reporting helpers.

pub mod bench;
pub mod build;
pub mod compile;
pub mod dot;
pub mod eval;
pub mod fetch;
pub mod fmt;
pub mod import;
pub mod limits;
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

/// The most an `.ir` text or graph artifact may be: weights live elsewhere (GGUF files or
/// seeds), so even a 70B graph is well under a megabyte; the limit only stops a wrong path
/// (`/dev/zero`, a model file) from being read into memory whole.
pub const MAX_GRAPH_FILE_BYTES: u64 = 256 << 20;

/// What a file's first bytes say it is, when it is not an `.ir` program.
fn sniff(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"GGUF") {
        Some("a GGUF model file")
    } else if head.starts_with(b"\x93NUMPY") {
        Some("a NumPy .npy array")
    } else if head.starts_with(b"\x7fELF") {
        Some("an executable or shared object")
    } else {
        None
    }
}

fn not_ir(path: &Path, what: &str) -> CliError {
    let shown = path.display();
    let hint = if what.contains("GGUF") {
        format!(
            ": run it with `lpuc run -m {shown}`, or turn it into an .ir program with \
             `lpuc import {shown} -o MODEL.ir`"
        )
    } else {
        String::new()
    };
    anyhow::anyhow!("{shown} is {what}, not an .ir program{hint}").into()
}

/// Loads a graph from an `.ir` text file (or an lpuc binary artifact), verified.
pub fn load_graph(path: &Path) -> Result<Graph, CliError> {
    let shown = path.display();
    // A regular file is recognised by its first bytes before it is read whole (a model
    // file is gigabytes); a pipe can be read only once, so it is recognised afterwards.
    let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
    if regular {
        use std::io::Read;
        let mut head = [0u8; 8];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .unwrap_or(0);
        if let Some(what) = sniff(&head[..n]) {
            return Err(not_ir(path, what));
        }
    }
    let bytes = lpuc_ir::fsio::read_limited(path, MAX_GRAPH_FILE_BYTES)?;
    if let Some(what) = sniff(&bytes) {
        return Err(not_ir(path, what));
    }
    if bytes.starts_with(b"LPUCART\0") {
        let g = lpuc_ir::artifact::graph_from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        lpuc_ir::verify::verify(&g).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        return Ok(g);
    }
    let src = String::from_utf8(bytes).map_err(|e| {
        let off = e.utf8_error().valid_up_to();
        anyhow::anyhow!(
            "{shown}: not an .ir program: not UTF-8 text (invalid byte at offset {off}); \
             .ir files are text (`lpuc build`, `lpuc import` write them) or lpuc binary artifacts"
        )
    })?;
    lpuc_ir::text::parse_and_verify(&src, &path.display().to_string()).map_err(CliError::Source)
}

/// Refuses to write `output` (given with `flag`) when it is one of `inputs`: the input
/// would be destroyed (`lpuc dot X.ir -o X.ir`). Compared by device and inode, so links
/// and other spellings of the same path count.
pub fn check_not_input(flag: &str, output: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    if output == Path::new("-") {
        return Ok(());
    }
    for i in inputs {
        if lpuc_ir::fsio::same_file(output, i) {
            anyhow::bail!(
                "{flag} {}: that is the input {}; writing it would destroy the input \
                 (choose another output file)",
                output.display(),
                i.display()
            );
        }
    }
    Ok(())
}

/// The GGUF file a graph takes its weights from, if any (an input too).
pub fn weights_file(g: &Graph) -> Option<std::path::PathBuf> {
    match &g.weights {
        lpuc_ir::graph::WeightSource::Gguf { path } => Some(path.into()),
        _ => None,
    }
}

/// Writes a file atomically (a temporary beside it, synced, renamed into place: a failure
/// midway leaves any old file intact), or stdout for `-`.
pub fn write_out(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    if path == Path::new("-") {
        use std::io::Write;
        std::io::stdout().write_all(content)?;
        return Ok(());
    }
    lpuc_ir::fsio::write_atomic(path, |w| w.write_all(content))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
