//! A model loaded from a GGUF file: the imported graph, its weights (memory-mapped, zero
//! copy) and its tokenizer, all from the one file.

use std::path::{Path, PathBuf};

use lpuc_ir::builder::LlamaConfig;
use lpuc_ir::import::{import_gguf, GgufWeights, ImportOptions};
use lpuc_ir::Graph;

use crate::tokenizer::Tokenizer;

pub struct Model {
    pub path: PathBuf,
    pub graph: Graph,
    pub config: LlamaConfig,
    pub weights: GgufWeights,
    pub tokenizer: Tokenizer,
    /// Things about the file worth telling the user that do not stop it from running
    /// (e.g. an embedding table with rows no token names).
    pub warnings: Vec<String>,
}

impl Model {
    pub fn load(path: &Path, opts: &ImportOptions) -> Result<Model, String> {
        let weights = GgufWeights::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (graph, config) = import_gguf(&weights.file, path, opts)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf(&weights.file)
            .map_err(|e| format!("{}: tokenizer: {e}", path.display()))?;
        let mut warnings = Vec::new();
        let (n_tok, rows) = (tokenizer.n_vocab() as u64, config.vocab);
        if n_tok > rows {
            // Ids past the table would index past the embedding (and the logits).
            return Err(format!(
                "{}: the tokenizer has {n_tok} tokens but the embedding table \
                 (token_embd.weight) has only {rows} rows: the file is inconsistent",
                path.display()
            ));
        }
        if n_tok < rows {
            // Padded tables are common (vocab rounded up for the matmul); ids past the
            // tokenizer decode to nothing.
            warnings.push(format!(
                "{}: the tokenizer has {n_tok} tokens, fewer than the embedding table's \
                 {rows} rows; generated ids {n_tok}..{rows} have no text",
                path.display()
            ));
        }
        Ok(Model {
            path: path.to_path_buf(),
            graph,
            config,
            weights,
            tokenizer,
            warnings,
        })
    }

    /// Re-imports the graph only (weights and tokenizer stay), e.g. for another context
    /// size: cheaper than [`Model::load`] and never holds two tokenizers at once.
    pub fn reimport(&mut self, opts: &ImportOptions) -> Result<(), String> {
        let (graph, config) = import_gguf(&self.weights.file, &self.path, opts)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.graph = graph;
        self.config = config;
        Ok(())
    }
}

/// `-m` if given, else the default model (fetched on first use).
pub fn resolve_model(m: Option<&Path>, progress: bool) -> Result<PathBuf, String> {
    match m {
        Some(p) => Ok(p.to_path_buf()),
        None => crate::fetch::ensure_default_model(progress)
            .map_err(|e| format!("fetching the default model: {e}")),
    }
}
