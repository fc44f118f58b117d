//! Sizes near the integer boundaries: a context or batch bound the builder accepts gives a
//! graph that verifies and round-trips through the text form; anything else is an error
//! naming the field. Never a panic, never a graph the verifier rejects (`build --max-ctx
//! 9223372036854775808` used to write one).

use lpuc_ir::builder::{build_llama, LlamaConfig, MAX_BATCH, MAX_CTX};
use lpuc_ir::graph::WeightSource;
use proptest::prelude::*;

fn near(bases: Vec<u64>) -> impl Strategy<Value = u64> {
    (proptest::sample::select(bases), -8i64..8).prop_map(|(b, d)| b.wrapping_add_signed(d))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bounds_near_the_limits_build_or_are_refused(
        ctx in near(vec![0, MAX_CTX, u64::from(u32::MAX), 1 << 32, 1 << 62, 1 << 63, u64::MAX]),
        batch in near(vec![0, 1, MAX_BATCH, u64::from(u32::MAX), u64::MAX]),
    ) {
        let mut cfg = LlamaConfig::preset("tiny").unwrap();
        cfg.max_ctx = ctx;
        cfg.max_batch = batch;
        match build_llama(&cfg, WeightSource::None) {
            Ok(g) => {
                prop_assert!((1..=MAX_CTX).contains(&ctx) && (1..=MAX_BATCH).contains(&batch));
                prop_assert!(lpuc_ir::verify::verify(&g).is_ok());
                let t = lpuc_ir::text::print(&g);
                let back = lpuc_ir::text::parse_and_verify(&t, "t.ir");
                prop_assert!(back.is_ok());
                prop_assert_eq!(lpuc_ir::text::print(&back.unwrap()), t);
            }
            Err(e) => prop_assert!(e.contains("max_ctx") || e.contains("max_batch"), "{}", e),
        }
    }
}
