//! Differential test against llama.cpp for every supported pre-tokenizer.
//!
//! `tokenizer_llamacpp_oracle.json` holds llama.cpp's ids (llama-cpp-python
//! 0.3.36, vocab-only load) for 282 random strings mixing ASCII, whitespace of
//! all kinds, accents and combining marks, CJK, RTL scripts, emoji with ZWJ,
//! numbers of other scripts, control, private-use and unassigned code points,
//! and special-token texts — tokenized with SmolLM2's vocabulary and merges
//! but each listed `tokenizer.ggml.pre`, with and without special handling.

#[path = "tokenizer_common.rs"]
mod common;

use lpuc_ir::gguf::GgufFile;
use lpuc_runtime::tokenizer::{Tokenizer, VocabData};

#[test]
fn every_pre_tokenizer_matches_llama_cpp() {
    if common::smollm2().is_none() {
        return;
    }
    let path = common::model_path();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let base = VocabData::from_metadata(&file).expect("vocab metadata");
    let oracle: serde_json::Value =
        serde_json::from_str(include_str!("tokenizer_llamacpp_oracle.json")).expect("oracle json");
    let strings: Vec<&str> = oracle["strings"]
        .as_array()
        .expect("strings")
        .iter()
        .map(|s| s.as_str().expect("string"))
        .collect();
    let per_pre = oracle["ids"].as_object().expect("ids");
    assert!(per_pre.len() >= 14);
    let mut failures = Vec::new();
    for (pre, cases) in per_pre {
        let tok = Tokenizer::new(VocabData {
            pre: Some(pre.clone()),
            ..base.clone()
        })
        .unwrap_or_else(|e| panic!("pre {pre}: {e}"));
        let cases = cases.as_array().expect("cases");
        assert_eq!(cases.len(), strings.len());
        for (s, case) in strings.iter().zip(cases) {
            let with = common::ids(&case[0]);
            let without = common::ids(&case[1]);
            let (got_with, got_without) = (tok.encode(s, true, true), tok.encode(s, false, false));
            if got_with != with || got_without != without {
                failures.push(format!(
                    "pre {pre}, {s:?}:\n  ours      {got_with:?} / {got_without:?}\n  llama.cpp {with:?} / {without:?}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
