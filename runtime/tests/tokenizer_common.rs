//! Shared helpers for the tokenizer/chat tests: locating `shared/reference`
//! and the SmolLM2 model, and loading its vocabulary.
//!
//! Included by the test files with `#[path = "tokenizer_common.rs"] mod common;`
//! (it also builds as its own empty test target).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use lpuc_ir::gguf::GgufFile;
use lpuc_runtime::tokenizer::Tokenizer;

/// `shared/reference`: `$LPUC_SHARED_DIR/reference`, else the first
/// `shared/reference` found walking up from the crate (the repo sits next to
/// `shared/`, whether it is the main checkout, a worktree or CI's clone).
pub fn reference_dir() -> PathBuf {
    if let Ok(d) = std::env::var("LPUC_SHARED_DIR") {
        let p = Path::new(&d).join("reference");
        if p.is_dir() {
            return p;
        }
        panic!("LPUC_SHARED_DIR={d} has no reference/ folder");
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for anc in manifest.ancestors() {
        let p = anc.join("shared").join("reference");
        if p.is_dir() {
            return p;
        }
    }
    panic!(
        "cannot find shared/reference above {} (set LPUC_SHARED_DIR to the folder holding reference/)",
        manifest.display()
    );
}

pub fn read_json(name: &str) -> serde_json::Value {
    let p = reference_dir().join(name);
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}

/// The default model (SmolLM2-135M-Instruct Q4_1) where `lpuc_runtime::fetch`
/// puts it (`$LPUC_CACHE_DIR/models/...`, else the user cache).
pub fn model_path() -> PathBuf {
    lpuc_runtime::fetch::default_model_path()
}

/// The SmolLM2 tokenizer, or `None` (test skipped) when the model file is
/// missing and `LPUC_SKIP_MODEL_TESTS=1`. Missing otherwise is a failure.
pub fn smollm2() -> Option<&'static Tokenizer> {
    use std::sync::OnceLock;
    static TOK: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = model_path();
        if !path.exists() {
            if std::env::var("LPUC_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
                eprintln!(
                    "skipped: {} missing and LPUC_SKIP_MODEL_TESTS=1",
                    path.display()
                );
                return None;
            }
            panic!(
                "model file {} is missing: run scripts/setup.sh (or `lpuc fetch`) to download it, \
                 or set LPUC_SKIP_MODEL_TESTS=1 to skip the tests that need it",
                path.display()
            );
        }
        let file =
            GgufFile::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        Some(
            Tokenizer::from_gguf(&file)
                .unwrap_or_else(|e| panic!("loading the tokenizer of {}: {e}", path.display())),
        )
    })
    .as_ref()
}

/// JSON array of integers -> ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of ids, got {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap_or_else(|| panic!("bad id {x}")) as u32)
        .collect()
}
