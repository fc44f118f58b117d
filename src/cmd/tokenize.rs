use clap::Args as ClapArgs;
use lpuc_runtime::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The text to tokenize.
    text: String,
    /// GGUF model (default: SmolLM2-135M-Instruct Q4_1, fetched on first use).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Print JSON: ids and pieces.
    #[arg(long)]
    json: bool,
    /// Do not add BOS/EOS even if the model asks for them.
    #[arg(long)]
    no_special: bool,
    /// Treat special-token text like `<|im_start|>` as plain text.
    #[arg(long)]
    no_parse_special: bool,
}

pub fn run(a: Args) -> super::CliResult {
    let path =
        lpuc_runtime::model::resolve_model(a.model.as_deref(), true).map_err(anyhow::Error::msg)?;
    let f = lpuc_ir::gguf::GgufFile::open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let tok = Tokenizer::from_gguf(&f)
        .map_err(|e| anyhow::anyhow!("{}: tokenizer: {e}", path.display()))?;
    let ids = tok.encode(&a.text, !a.no_special, !a.no_parse_special);
    let pieces: Vec<String> = ids
        .iter()
        .map(|&i| String::from_utf8_lossy(tok.piece_with(i, true)).into_owned())
        .collect();
    if a.json {
        println!("{}", serde_json::json!({ "ids": ids, "pieces": pieces }));
    } else {
        for (id, p) in ids.iter().zip(&pieces) {
            println!("{id:>7} -> {p:?}");
        }
    }
    Ok(())
}
