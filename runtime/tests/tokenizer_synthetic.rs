//! Tokenizer behaviour on small hand-made vocabularies (no model file needed):
//! SentencePiece merges and byte fallback, special-token partitioning,
//! EOG detection, streaming detokenization.

use lpuc_runtime::tokenizer::{token_type, StreamDecoder, Tokenizer, TokenizerError, VocabData};

/// A tiny SentencePiece vocabulary: <unk> <s> </s>, 256 byte tokens, pieces.
fn spm() -> Tokenizer {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![
        token_type::UNKNOWN,
        token_type::CONTROL,
        token_type::CONTROL,
    ];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(token_type::BYTE);
        scores.push(0.0);
    }
    let pieces: &[(&str, f32)] = &[
        ("▁", -10.0),
        ("h", -10.0),
        ("e", -10.0),
        ("l", -10.0),
        ("o", -10.0),
        ("w", -10.0),
        ("r", -10.0),
        ("d", -10.0),
        ("ll", -1.0),
        ("ld", -1.2),
        ("or", -1.5),
        ("▁h", -2.0),
        ("▁w", -2.0),
        ("▁he", -3.0),
        ("▁wor", -3.0),
        ("▁hell", -4.0),
        ("▁world", -4.0),
        ("▁hello", -5.0),
    ];
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(token_type::NORMAL);
        scores.push(*s);
    }
    Tokenizer::new(VocabData {
        model: "llama".into(),
        tokens,
        token_types: types,
        scores,
        ..Default::default()
    })
    .expect("valid SPM vocab")
}

fn texts(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| tok.token_text(i).unwrap_or("?").to_string())
        .collect()
}

#[test]
fn spm_merges_by_score_and_prefixes_a_space() {
    let tok = spm();
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert!(tok.add_bos(), "llama vocabularies add BOS by default");
    let ids = tok.encode("hello world", false, false);
    assert_eq!(texts(&tok, &ids), ["▁hello", "▁world"]);
    let with_bos = tok.encode("hello world", true, false);
    assert_eq!(with_bos[0], 1);
    assert_eq!(&with_bos[1..], &ids[..]);
    // The prefix space of the first piece is removed on decode.
    assert_eq!(tok.decode(&ids), "hello world");
    // llama.cpp keeps it when a leading BOS is stripped (remove_special).
    assert_eq!(tok.decode_with(&with_bos, true, false), " hello world");
    assert_eq!(tok.decode_with(&with_bos, false, true), "<s> hello world");
}

#[test]
fn spm_byte_fallback() {
    let tok = spm();
    let ids = tok.encode("hi€", false, false);
    assert_eq!(
        texts(&tok, &ids),
        ["▁h", "<0x69>", "<0xE2>", "<0x82>", "<0xAC>"]
    );
    assert_eq!(tok.decode(&ids), "hi€");
}

#[test]
fn spm_special_tokens_reset_the_space_prefix() {
    let tok = spm();
    let ids = tok.encode("<s>hello", false, true);
    assert_eq!(texts(&tok, &ids), ["<s>", "▁hello"]);
    // Without parse_special the control text is ordinary text.
    let plain = tok.encode("<s>", false, false);
    assert!(!plain.contains(&1));
    assert_eq!(tok.decode(&plain), "<s>");
}

/// A tiny byte-level BPE vocabulary: the 256 byte symbols, a few merges, a
/// control token, a user-defined token and an EOG-looking token.
fn bpe(extra: &[(&str, i32)]) -> Tokenizer {
    use lpuc_runtime::tokenizer::unicode::byte_to_char;
    let mut tokens: Vec<String> = Vec::new();
    let mut types = Vec::new();
    for (t, ty) in [
        ("<|endoftext|>", token_type::CONTROL),
        ("<|im_end|>", token_type::CONTROL),
    ] {
        tokens.push(t.into());
        types.push(ty);
    }
    for (t, ty) in extra {
        tokens.push(t.to_string());
        types.push(*ty);
    }
    for b in 0..=255u8 {
        tokens.push(byte_to_char(b).to_string());
        types.push(token_type::NORMAL);
    }
    let merges = [
        "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld",
    ];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(token_type::NORMAL);
    }
    Tokenizer::new(VocabData {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens,
        token_types: types,
        merges: merges.iter().map(|s| s.to_string()).collect(),
        eos: Some(0),
        bos: Some(0),
        ..Default::default()
    })
    .expect("valid BPE vocab")
}

#[test]
fn bpe_merges_by_rank() {
    let tok = bpe(&[]);
    let ids = tok.encode("hello world", false, false);
    assert_eq!(texts(&tok, &ids), ["hello", "Ġworld"]);
    assert_eq!(tok.decode(&ids), "hello world");
    // Unmergeable bytes fall back to the single-byte symbols.
    let ids = tok.encode("hé", false, false);
    assert_eq!(texts(&tok, &ids), ["h", "Ã", "©"]);
    assert_eq!(tok.decode(&ids), "hé");
    assert!(!tok.add_bos(), "gpt-2 pre-tokenizer: no BOS by default");
}

#[test]
fn special_tokens_partition_like_llama_cpp() {
    let tok = bpe(&[
        ("<tool>", token_type::USER_DEFINED),
        ("<tool>x", token_type::CONTROL),
    ]);
    let tool = tok.token_id("<tool>").expect("<tool>");
    let toolx = tok.token_id("<tool>x").expect("<tool>x");
    // User-defined tokens split out even without parse_special.
    let ids = tok.encode("a<tool>b", false, false);
    assert_eq!(texts(&tok, &ids), ["a", "<tool>", "b"]);
    // The longest special text wins when parsing specials.
    let ids = tok.encode("a<tool>xb<tool>", false, true);
    assert_eq!(ids.iter().filter(|&&i| i == toolx).count(), 1);
    assert_eq!(ids.last(), Some(&tool));
    let im_end = tok.token_id("<|im_end|>").expect("<|im_end|>");
    assert_eq!(tok.encode("<|im_end|>", false, true), [im_end]);
    assert_ne!(tok.encode("<|im_end|>", false, false), [im_end]);
    // Control tokens render only when asked to.
    assert_eq!(tok.decode_with(&[im_end], false, false), "");
    assert_eq!(tok.decode_with(&[im_end], false, true), "<|im_end|>");
}

#[test]
fn eog_and_eot_detection() {
    let tok = bpe(&[]);
    let endoftext = tok.token_id("<|endoftext|>").expect("token");
    let im_end = tok.token_id("<|im_end|>").expect("token");
    assert_eq!(tok.eot(), Some(endoftext), "lowest-id EOT-looking token");
    assert!(tok.is_eog(endoftext) && tok.is_eog(im_end));
    assert!(!tok.is_eog(tok.token_id("h").expect("h")));
    assert!(!tok.is_eog(u32::MAX));
}

#[test]
fn bad_vocabularies_are_errors() {
    let err = Tokenizer::new(VocabData {
        model: "bert".into(),
        tokens: vec!["a".into()],
        ..Default::default()
    });
    assert!(matches!(err, Err(TokenizerError::UnsupportedModel(_))));
    let err = Tokenizer::new(VocabData {
        model: "gpt2".into(),
        pre: Some("no-such-pre".into()),
        tokens: vec!["a".into()],
        merges: vec!["a a".into()],
        ..Default::default()
    });
    assert!(matches!(err, Err(TokenizerError::UnknownPreTokenizer(_))));
    let err = Tokenizer::new(VocabData {
        model: "gpt2".into(),
        tokens: vec!["a".into(), "a".into()],
        merges: vec!["a a".into()],
        ..Default::default()
    });
    assert!(matches!(err, Err(TokenizerError::DuplicateToken { .. })));
    let err = Tokenizer::new(VocabData {
        model: "llama".into(),
        ..Default::default()
    });
    assert!(matches!(err, Err(TokenizerError::EmptyVocab)));
}

#[test]
fn out_of_range_ids_decode_to_nothing() {
    let tok = bpe(&[]);
    assert_eq!(tok.piece(u32::MAX), b"");
    assert_eq!(tok.decode(&[u32::MAX, 7]), tok.decode(&[7]));
}

#[test]
fn stream_decoder_emits_only_whole_characters() {
    let mut d = StreamDecoder::new(true);
    assert_eq!(d.push_bytes(&[0xF0, 0x9F]), "");
    assert_eq!(d.pending(), &[0xF0, 0x9F]);
    assert_eq!(d.push_bytes(&[0x98]), "");
    assert_eq!(d.push_bytes(&[0x80, b'!']), "😀!");
    // A byte that can never start a character is replaced at once.
    assert_eq!(d.push_bytes(&[0xFF, b'a']), "\u{FFFD}a");
    // An unfinished character at the end is flushed lossily.
    assert_eq!(d.push_bytes(&[0xE2, 0x82]), "");
    assert_eq!(d.finish(), "\u{FFFD}");
    assert_eq!(d.finish(), "");
}

#[test]
fn stream_decoder_with_tokens() {
    let tok = bpe(&[]);
    let ids = tok.encode("hé 😀 world", false, false);
    let mut d = StreamDecoder::new(false);
    let mut out = String::new();
    for &id in &ids {
        let s = d.push(&tok, id);
        assert!(!s.contains('\u{FFFD}'));
        out.push_str(&s);
    }
    out.push_str(&d.finish());
    assert_eq!(out, "hé 😀 world");
    let im_end = tok.token_id("<|im_end|>").expect("token");
    assert_eq!(StreamDecoder::new(false).push(&tok, im_end), "");
    assert_eq!(StreamDecoder::new(true).push(&tok, im_end), "<|im_end|>");
}

#[test]
fn tokenizer_and_decoder_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    assert_send_sync::<StreamDecoder>();
}

#[test]
fn unreadable_gguf_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("lpuc-tok-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join("not-a-model.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00garbage").expect("write");
    assert!(matches!(
        Tokenizer::from_gguf_path(&p),
        Err(TokenizerError::Gguf(_))
    ));
    assert!(matches!(
        Tokenizer::from_gguf_path(&dir.join("missing.gguf")),
        Err(TokenizerError::Gguf(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
