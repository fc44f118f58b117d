//! GGUF import: a GGUF written from a preset's random weights imports to a graph that
//! computes the same logits; malformed or foreign files get clear errors naming the key or
//! tensor.

use lpuc_ir::builder::{build_llama, LlamaConfig};
use lpuc_ir::gguf::{GgufFile, GgufWriter, MetaValue};
use lpuc_ir::graph::WeightSource;
use lpuc_ir::import::{import_gguf, GgufWeights, ImportError, ImportOptions};
use lpuc_ir::interp::Interpreter;
use lpuc_ir::weights::{random_weights, WeightStore};
use lpuc_ir::{DType, Op};
use std::path::Path;

/// A GGUF file holding `cfg`'s shapes with random weights (seed 3), with `llama.*` metadata.
fn write_gguf(
    cfg: &LlamaConfig,
    skip_key: Option<&str>,
    tweak: impl Fn(&str, Vec<u64>) -> Vec<u64>,
) -> (Vec<u8>, lpuc_ir::Graph) {
    write_gguf_replacing(cfg, skip_key, None, tweak)
}

/// As [`write_gguf`], with one metadata key given another value (or type).
fn write_gguf_replacing(
    cfg: &LlamaConfig,
    skip_key: Option<&str>,
    replace: Option<(&str, MetaValue)>,
    tweak: impl Fn(&str, Vec<u64>) -> Vec<u64>,
) -> (Vec<u8>, lpuc_ir::Graph) {
    let g = build_llama(cfg, WeightSource::Random { seed: 3 }).unwrap();
    let w = random_weights(&g, 3).unwrap();
    let mut wr = GgufWriter::new();
    let meta: Vec<(&str, MetaValue)> = vec![
        ("general.architecture", MetaValue::Str("llama".into())),
        ("general.name", MetaValue::Str("test-llama".into())),
        ("llama.block_count", MetaValue::U32(cfg.n_layers)),
        ("llama.context_length", MetaValue::U32(cfg.max_ctx as u32)),
        ("llama.embedding_length", MetaValue::U32(cfg.dim as u32)),
        (
            "llama.feed_forward_length",
            MetaValue::U32(cfg.ffn_dim as u32),
        ),
        (
            "llama.attention.head_count",
            MetaValue::U32(cfg.n_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            MetaValue::U32(cfg.n_kv_heads as u32),
        ),
        ("llama.rope.freq_base", MetaValue::F32(cfg.rope_theta)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(cfg.norm_eps),
        ),
        ("llama.rope.dimension_count", MetaValue::U32(cfg.rope_dims)),
    ];
    for (k, v) in meta {
        if Some(k) == skip_key {
            continue;
        }
        match &replace {
            Some((rk, rv)) if *rk == k => wr.add_metadata(k, rv.clone()),
            _ => wr.add_metadata(k, v),
        };
    }
    for v in g.weights() {
        let Op::Weight { name } = g.op(v) else {
            continue;
        };
        let view = w.get(name).unwrap();
        let dims: Vec<u64> = view.shape.iter().rev().copied().collect();
        wr.add_tensor(
            name.clone(),
            &tweak(name, dims),
            view.dtype,
            view.bytes.to_vec(),
        );
    }
    (wr.to_bytes(), g)
}

fn import(bytes: Vec<u8>) -> Result<(lpuc_ir::Graph, GgufWeights), ImportError> {
    let f = GgufFile::from_bytes(bytes)?;
    let (g, _) = import_gguf(&f, Path::new("test.gguf"), &ImportOptions::default())?;
    Ok((g, GgufWeights::new(f)))
}

#[test]
fn imported_graph_computes_what_the_builder_graph_computes() {
    for tied in [true, false] {
        let mut cfg = LlamaConfig::preset("tiny").unwrap();
        cfg.tied_embeddings = tied;
        cfg.output_dtype = DType::F16;
        let (bytes, g0) = write_gguf(&cfg, None, |_, d| d);
        let (g, w) = import(bytes).unwrap();
        lpuc_ir::verify::verify(&g).unwrap();
        assert_eq!(g.param_count(), g0.param_count());
        let w0 = random_weights(&g0, 3).unwrap();
        let tokens = [5u32, 17, 200, 3, 9];
        let a = Interpreter::new(&g0, &w0)
            .unwrap()
            .run_tokens(&tokens)
            .unwrap();
        let b = Interpreter::new(&g, &w)
            .unwrap()
            .run_tokens(&tokens)
            .unwrap();
        assert_eq!(a, b, "tied = {tied}");
    }
}

#[test]
fn foreign_architecture_is_a_clear_error() {
    let mut wr = GgufWriter::new();
    wr.add_metadata("general.architecture", MetaValue::Str("gpt2".into()));
    let e = import(wr.to_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported architecture \"gpt2\" (lpuc imports \"llama\")"
    );
    let e = import(GgufWriter::new().to_bytes()).unwrap_err();
    assert_eq!(e.to_string(), "the file has no `general.architecture` key");
}

#[test]
fn missing_key_names_the_key() {
    let cfg = LlamaConfig::preset("tiny").unwrap();
    let (bytes, _) = write_gguf(&cfg, Some("llama.block_count"), |_, d| d);
    let e = import(bytes).unwrap_err();
    assert_eq!(e.to_string(), "missing metadata key `llama.block_count`");
}

#[test]
fn wrong_key_type_says_expected_and_found() {
    let cfg = LlamaConfig::preset("tiny").unwrap();
    for (key, v, want) in [
        (
            "llama.block_count",
            MetaValue::Str("2".into()),
            "metadata `llama.block_count` has the wrong type: expected an unsigned integer, found string",
        ),
        (
            "llama.context_length",
            MetaValue::F32(4096.0),
            "metadata `llama.context_length` has the wrong type: expected an unsigned integer, found f32",
        ),
        (
            "llama.rope.freq_base",
            MetaValue::U32(10000),
            "metadata `llama.rope.freq_base` has the wrong type: expected a float (f32 or f64), found u32",
        ),
        (
            "general.architecture",
            MetaValue::U32(1),
            "metadata `general.architecture` has the wrong type: expected a string, found u32",
        ),
    ] {
        let (bytes, _) = write_gguf_replacing(&cfg, None, Some((key, v)), |_, d| d);
        let e = import(bytes).unwrap_err().to_string();
        assert!(e.starts_with(want), "{key}: {e}");
    }
}

#[test]
fn wrong_tensor_shape_names_the_tensor_and_offset() {
    let cfg = LlamaConfig::preset("tiny").unwrap();
    let (bytes, _) = write_gguf(&cfg, None, |n, d| {
        if n == "blk.1.attn_k.weight" {
            vec![d[0], d[1] / 2]
        } else {
            d
        }
    });
    let e = import(bytes).unwrap_err().to_string();
    assert!(
        e.starts_with("tensor `blk.1.attn_k.weight` (info at byte "),
        "{e}"
    );
    assert!(
        e.ends_with("shape [16, 64] in the file, [32, 64] expected from the metadata"),
        "{e}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let cfg = LlamaConfig::preset("tiny").unwrap();
    let g = build_llama(&cfg, WeightSource::None).unwrap();
    let (bytes, _) = write_gguf(&cfg, None, |_, d| d);
    // Rebuild without one tensor.
    let f = GgufFile::from_bytes(bytes).unwrap();
    let mut wr = GgufWriter::new();
    for (k, v) in f.metadata() {
        wr.add_metadata(k.clone(), v.clone());
    }
    for t in f.tensors() {
        if t.name != "blk.0.ffn_up.weight" {
            wr.add_tensor(t.name.clone(), &t.dims, t.dtype, f.tensor_data(t).to_vec());
        }
    }
    let e = import(wr.to_bytes()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `blk.0.ffn_up.weight` is missing from the file"
    );
    assert!(g.weights().len() > 10);
}
