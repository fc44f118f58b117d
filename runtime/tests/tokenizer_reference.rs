//! The tokenizer against llama.cpp's own ids for SmolLM2
//! (`shared/reference/tokenizer_tricky.json` and `prompt_*.json`).

#[path = "tokenizer_common.rs"]
mod common;

use common::{ids, read_json, reference_dir, smollm2};

#[test]
fn tricky_strings_match_llama_cpp() {
    let Some(tok) = smollm2() else { return };
    let data = read_json("tokenizer_tricky.json");
    let strings = data["strings"].as_array().expect("strings array");
    assert_eq!(
        strings.len(),
        39,
        "the reference file should hold 39 strings"
    );
    let mut failures = Vec::new();
    for case in strings {
        let text = case["text"].as_str().expect("text");
        // (field, add_special, parse_special)
        for (field, add, parse) in [
            ("ids_add_special_parse_special", true, true),
            ("ids_no_special_no_parse", false, false),
            ("ids_add_special_no_parse", true, false),
        ] {
            let want = ids(&case[field]);
            let got = tok.encode(text, add, parse);
            if got != want {
                failures.push(format!("{text:?} {field}: got {got:?}, llama.cpp {want:?}"));
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

#[test]
fn tricky_pieces_match_llama_cpp() {
    let Some(tok) = smollm2() else { return };
    let data = read_json("tokenizer_tricky.json");
    for case in data["strings"].as_array().expect("strings array") {
        let text = case["text"].as_str().expect("text");
        let got_ids = tok.encode(text, true, true);
        let want_hex: Vec<&str> = case["pieces_hex"]
            .as_array()
            .expect("pieces_hex")
            .iter()
            .map(|h| h.as_str().expect("hex"))
            .collect();
        let got_hex: Vec<String> = got_ids
            .iter()
            .map(|&id| tok.piece(id).iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        assert_eq!(got_hex, want_hex, "pieces of {text:?}");
    }
}

#[test]
fn tricky_strings_round_trip() {
    let Some(tok) = smollm2() else { return };
    let data = read_json("tokenizer_tricky.json");
    for case in data["strings"].as_array().expect("strings array") {
        let text = case["text"].as_str().expect("text");
        let ok = case["detok_roundtrip_ok"]
            .as_bool()
            .expect("detok_roundtrip_ok");
        let back = tok.decode(&tok.encode(text, true, true));
        assert_eq!(back == text, ok, "round trip of {text:?} gave {back:?}");
        // Without special parsing every string is plain text and must survive too.
        assert_eq!(tok.decode(&tok.encode(text, false, false)), text);
    }
}

#[test]
fn reference_prompts_match_llama_cpp() {
    let Some(tok) = smollm2() else { return };
    let mut names: Vec<String> = std::fs::read_dir(reference_dir())
        .expect("reference dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("prompt_") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no prompt_*.json in {}",
        reference_dir().display()
    );
    for name in names {
        let p = read_json(&name);
        let prompt = p["prompt"].as_str().expect("prompt");
        assert_eq!(
            tok.encode(prompt, true, true),
            ids(&p["prompt_ids"]),
            "{name}: {prompt:?}"
        );
        if !p["prompt_ids_without_special"].is_null() {
            assert_eq!(
                tok.encode(prompt, false, false),
                ids(&p["prompt_ids_without_special"]),
                "{name}"
            );
        }
        if let Some(g) = p["greedy_ids"].as_array() {
            // the reference decodes generated tokens back to this text
            let gen: Vec<u32> = g
                .iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect();
            if let Some(text) = p["greedy_text"].as_str() {
                assert_eq!(tok.decode(&gen), text, "{name}: greedy text");
            }
        }
    }
}

#[test]
fn smollm2_special_tokens() {
    let Some(tok) = smollm2() else { return };
    let meta = &read_json("tokenizer_tricky.json")["meta"];
    assert_eq!(
        tok.n_vocab() as u64,
        meta["n_vocab"].as_u64().expect("n_vocab")
    );
    assert_eq!(tok.bos().map(u64::from), meta["bos_id"].as_u64());
    assert_eq!(tok.eos().map(u64::from), meta["eos_id"].as_u64());
    assert_eq!(tok.eot().map(u64::from), meta["eot_id"].as_u64());
    assert_eq!(tok.add_bos(), meta["add_bos"].as_bool().expect("add_bos"));
    assert_eq!(tok.add_eos(), meta["add_eos"].as_bool().expect("add_eos"));
    let im_end = tok.token_id("<|im_end|>").expect("<|im_end|>");
    let eot = tok.token_id("<|endoftext|>").expect("<|endoftext|>");
    assert!(tok.is_eog(im_end) && tok.is_eog(eot));
    assert!(!tok.is_eog(tok.token_id("<|im_start|>").expect("<|im_start|>")));
    assert!(!tok.is_eog(28), "',' is not end of generation");
    assert_eq!(tok.pre(), Some("smollm"));
    assert!(tok.chat_template().is_some());
}
