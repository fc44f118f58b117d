//! Differential tests against llama.cpp (llama-cpp-python 0.3.36, vocab-only
//! loads), with its ids stored next to this file:
//!
//! - `tokenizer_llamacpp_oracle.json`: 282 random strings mixing ASCII,
//!   whitespace of all kinds, accents and combining marks, CJK, RTL scripts,
//!   emoji with ZWJ, numbers of other scripts, control, private-use and
//!   unassigned code points, and special-token texts — tokenized with
//!   SmolLM2's vocabulary and merges under each listed `tokenizer.ggml.pre`,
//!   with and without special handling;
//! - `tokenizer_llamacpp_oracle_spm.json`: the same kind of strings through a
//!   SentencePiece vocabulary derived from SmolLM2's, plus `llama_detokenize`
//!   output for all four flag combinations and the EOG/EOT ids.

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
    assert!(per_pre.len() >= 27);
    let mut failures = Vec::new();
    for (pre, cases) in per_pre {
        let tok = Tokenizer::new(VocabData {
            pre: Some(pre.clone()),
            ..base.clone()
        })
        .unwrap_or_else(|e| panic!("pre {pre}: {e}"));
        let cases = cases.as_array().expect("cases");
        assert_eq!(cases.len(), strings.len());
        for (i, (s, case)) in strings.iter().zip(cases).enumerate() {
            // A string entry names another pre-type with the same ids here.
            let case = match case.as_str() {
                Some(other) => &per_pre[other][i],
                None => case,
            };
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

fn smollm2_vocab() -> Option<VocabData> {
    common::smollm2()?;
    let path = common::model_path();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(VocabData::from_metadata(&file).expect("vocab metadata"))
}

/// The SentencePiece vocabulary described in the SPM oracle's `meta.spm_vocab`.
fn derived_spm_vocab(base: &VocabData) -> VocabData {
    use lpuc_runtime::tokenizer::{token_type, unicode::char_to_byte};
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![
        token_type::UNKNOWN,
        token_type::CONTROL,
        token_type::CONTROL,
    ];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(token_type::BYTE);
        scores.push(0.0);
    }
    let mut seen: std::collections::HashSet<String> = tokens.iter().cloned().collect();
    for (i, t) in base.tokens.iter().skip(17).enumerate() {
        let Some(bytes) = t.chars().map(char_to_byte).collect::<Option<Vec<u8>>>() else {
            continue;
        };
        let Ok(raw) = String::from_utf8(bytes) else {
            continue;
        };
        let t2 = raw.replace(' ', "\u{2581}");
        if t2.is_empty() || !seen.insert(t2.clone()) {
            continue;
        }
        tokens.push(t2);
        types.push(token_type::NORMAL);
        scores.push(-(i as f32));
    }
    for (t, ty) in [
        ("<|im_start|>", token_type::CONTROL),
        ("<|im_end|>", token_type::CONTROL),
        ("<tool>", token_type::USER_DEFINED),
    ] {
        tokens.push(t.to_string());
        types.push(ty);
        scores.push(0.0);
    }
    VocabData {
        model: "llama".into(),
        tokens,
        token_types: types,
        scores,
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        ..Default::default()
    }
}

#[test]
fn sentencepiece_and_detokenize_match_llama_cpp() {
    let Some(base) = smollm2_vocab() else { return };
    let oracle: serde_json::Value =
        serde_json::from_str(include_str!("tokenizer_llamacpp_oracle_spm.json")).expect("json");
    let spm = Tokenizer::new(derived_spm_vocab(&base)).expect("spm vocab");
    let mut failures = Vec::new();
    let strings = oracle["strings"].as_array().expect("strings");
    let cases = oracle["spm"].as_array().expect("spm");
    assert_eq!(strings.len(), cases.len());
    for (s, case) in strings.iter().zip(cases) {
        let s = s.as_str().expect("string");
        let (a, b) = (spm.encode(s, true, true), spm.encode(s, false, false));
        if a != common::ids(&case[0]) || b != common::ids(&case[1]) {
            failures.push(format!(
                "spm {s:?}: ours {a:?} / {b:?}, llama.cpp {} / {}",
                case[0], case[1]
            ));
        }
    }
    let gpt2 = Tokenizer::new(VocabData {
        pre: Some("gpt-2".into()),
        ..base
    })
    .expect("gpt-2");
    for (name, tok) in [("spm", &spm), ("gpt-2", &gpt2)] {
        let d = &oracle["detok"][name];
        let eog: Vec<u32> = tok.eog_ids().collect();
        assert_eq!(eog, common::ids(&d["eog"]), "{name}: EOG set");
        assert_eq!(tok.eot().map(u64::from), d["eot"].as_u64(), "{name}: EOT");
        for seq in d["seqs"].as_array().expect("seqs") {
            let ids = common::ids(&seq[0]);
            for (k, (rm, unp)) in [(false, false), (false, true), (true, false), (true, true)]
                .into_iter()
                .enumerate()
            {
                let want: Vec<u8> = common::ids(&seq[k + 1])
                    .into_iter()
                    .map(|b| b as u8)
                    .collect();
                let got = tok.decode_bytes_with(&ids, rm, unp);
                if got != want {
                    failures.push(format!(
                        "{name} detokenize {ids:?} remove_special={rm} unparse_special={unp}: ours {:?}, llama.cpp {:?}",
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want)
                    ));
                }
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
