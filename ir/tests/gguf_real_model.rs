//! Real-model test: opens SmolLM2-135M-Instruct (Q4_1) from the lpuc model cache.
//!
//! The file is required: a missing file FAILS the test with instructions, unless
//! `LPUC_SKIP_MODEL_TESTS=1` is set (for machines without the model). Expected values were
//! recorded with the official `gguf` Python package (0.19.0) from the same file.

use lpuc_ir::gguf::GgufFile;
use lpuc_ir::DType;

fn open_model() -> Option<GgufFile> {
    // Where `lpuc fetch` puts it ($LPUC_CACHE_DIR or the user's cache directory).
    let path = lpuc_runtime::fetch::default_model_path();
    let shown = path.display();
    if !path.exists() {
        if std::env::var("LPUC_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
            eprintln!("skipped: real-model test: {shown} missing and LPUC_SKIP_MODEL_TESTS=1");
            return None;
        }
        panic!(
            "real-model test needs {shown} (SmolLM2-135M-Instruct.Q4_1.gguf, 98362432 bytes); \
             run `lpuc fetch`, or set LPUC_SKIP_MODEL_TESTS=1 to skip model tests"
        );
    }
    Some(GgufFile::open(&path).unwrap_or_else(|e| panic!("{shown}: {e}")))
}

#[test]
fn real_model_smollm2_135m_q4_1_header_metadata_and_tensors() {
    let Some(f) = open_model() else { return };
    assert_eq!(f.len(), 98_362_432);
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.metadata().len(), 33);
    assert_eq!(f.get_u32("llama.block_count"), Some(30));
    assert_eq!(f.get_u32("llama.embedding_length"), Some(576));
    assert_eq!(f.get_u64("llama.feed_forward_length"), Some(1536));
    assert_eq!(f.get_u32("llama.attention.head_count"), Some(9));
    assert_eq!(f.get_u32("llama.attention.head_count_kv"), Some(3));
    assert_eq!(f.get_f32("llama.rope.freq_base"), Some(100000.0));
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon"),
        Some(1e-5)
    );
    assert_eq!(f.get_bool("tokenizer.ggml.add_bos_token"), Some(false));
    assert_eq!(f.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id"), Some(1));
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id"), Some(2));

    let tokens = f
        .get_str_array_packed("tokenizer.ggml.tokens")
        .expect("tokens");
    assert_eq!(tokens.len(), 49152);
    assert_eq!(tokens.get(0), Some("<|endoftext|>"));
    assert_eq!(tokens.get(2), Some("<|im_end|>"));
    assert_eq!(tokens.get(49151), Some("ectable"));
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type")
            .map(|v| v.len()),
        Some(49152)
    );
    let merges = f.get_str_array("tokenizer.ggml.merges").expect("merges");
    assert_eq!((merges.len(), merges[0]), (48900, "Ġ t"));

    // token_embd + 30 blocks x 9 + output_norm.
    assert_eq!(f.tensors().len(), 272);
    for i in 0..30 {
        for part in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            let name = format!("blk.{i}.{part}.weight");
            let t = f.tensor(&name).unwrap_or_else(|| panic!("missing {name}"));
            let want = if part.ends_with("norm") {
                DType::F32
            } else {
                DType::Q4_1
            };
            assert_eq!(t.dtype, want, "{name}");
        }
    }
    assert!(f.tensor("blk.30.attn_q.weight").is_none());

    let emb = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(emb.dtype, DType::Q8_0);
    assert_eq!(emb.dims, vec![576, 49152]);
    assert_eq!(emb.shape(), vec![49152, 576]);
    assert_eq!((emb.offset, emb.size), (1_785_664, 30_081_024));
    let down = f.tensor("blk.0.ffn_down.weight").expect("ffn_down");
    assert_eq!(down.shape(), vec![576, 1536]);
}

#[test]
fn real_model_smollm2_135m_q4_1_dequantizes() {
    let Some(f) = open_model() else { return };
    let q = f.tensor("blk.0.attn_q.weight").expect("attn_q");
    assert_eq!(q.dtype, DType::Q4_1);
    assert_eq!(q.offset, 33_806_656);
    let w = f.tensor_f32(q).expect("dequantize attn_q");
    assert_eq!(w.len(), 576 * 576);
    assert!(
        w.iter().all(|v| v.is_finite()),
        "non-finite weight in {}",
        q.name
    );
    assert_eq!(w[..4], [-0.09631348, 0.15734863, -0.09631348, -0.73046875]);
    assert_eq!(w[w.len() - 2..], [-0.14984131, -0.25585938]);

    let emb = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(f.tensor_data(emb).len(), 30_081_024);
    let e = f.tensor_f32(emb).expect("dequantize token_embd");
    assert_eq!(e[..4], [-0.106544495, 0.032978058, 0.0481987, -0.022830963]);
    assert_eq!(e[e.len() - 2..], [-0.11989403, -0.04170227]);

    let norm = f.tensor("output_norm.weight").expect("output_norm");
    let n = f.tensor_f32(norm).expect("output_norm");
    assert_eq!(n[..4], [1.7578125, 1.8203125, 1.78125, 1.6015625]);
}
