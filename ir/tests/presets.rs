//! Presets: build, verify, text and binary round trips, parameter counts.

use lpuc_ir::builder::{build_llama, LlamaConfig, PRESETS};
use lpuc_ir::graph::WeightSource;
use lpuc_ir::{artifact, text, verify};

#[test]
fn every_preset_builds_verifies_and_round_trips() {
    for name in PRESETS {
        let cfg = LlamaConfig::preset(name).unwrap();
        let g = build_llama(&cfg, WeightSource::None).unwrap();
        verify::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = text::print(&g);
        let g2 = text::parse(&t, "x.ir").unwrap_or_else(|e| panic!("{name}: {e}"));
        verify::verify(&g2).unwrap();
        assert_eq!(text::print(&g2), t, "{name}: text round trip");
        let bytes = artifact::graph_to_bytes(&g).unwrap();
        let g3 = artifact::graph_from_bytes(&bytes).unwrap();
        assert_eq!(text::print(&g3), t, "{name}: bincode round trip");
        assert_eq!(
            g.param_count(),
            cfg.param_count(),
            "{name}: builder and config agree"
        );
    }
}

fn params(name: &str) -> f64 {
    let g = build_llama(&LlamaConfig::preset(name).unwrap(), WeightSource::None).unwrap();
    g.param_count() as f64
}

#[test]
fn published_parameter_counts() {
    let close = |got: f64, want: f64, tol: f64| (got - want).abs() / want < tol;
    assert!(
        close(params("llama3-70b"), 70.6e9, 0.005),
        "{}",
        params("llama3-70b")
    );
    assert!(
        close(params("llama3-8b"), 8.03e9, 0.005),
        "{}",
        params("llama3-8b")
    );
    assert!(
        close(params("llama2-70b"), 68.98e9, 0.005),
        "{}",
        params("llama2-70b")
    );
    assert!(
        close(params("llama2-7b"), 6.74e9, 0.005),
        "{}",
        params("llama2-7b")
    );
    assert!(
        close(params("smollm2-135m"), 134.5e6, 0.002),
        "{}",
        params("smollm2-135m")
    );
}

#[test]
fn artifact_rejects_garbage() {
    assert!(matches!(
        artifact::graph_from_bytes(b"nope"),
        Err(artifact::ArtifactError::BadMagic)
    ));
    let g = build_llama(&LlamaConfig::preset("tiny").unwrap(), WeightSource::None).unwrap();
    let mut bytes = artifact::graph_to_bytes(&g).unwrap();
    bytes.truncate(bytes.len() / 2);
    let e = artifact::graph_from_bytes(&bytes).unwrap_err();
    assert!(e.to_string().starts_with("corrupt artifact"), "{e}");
    let other = artifact::encode("schedule", &1u32).unwrap();
    let e = artifact::graph_from_bytes(&other).unwrap_err();
    assert!(e.to_string().contains("\"schedule\""), "{e}");
}
