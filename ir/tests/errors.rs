//! Every class of malformed `.ir` input gets a located error (`file:line:col: message`),
//! never a panic. One test per class; each asserts the position and the message.

use lpuc_ir::text::parse_and_verify;

/// Parses `src`, expects failure, and checks the first error's `line:col` and message.
fn expect_err(src: &str, line: usize, col: usize, msg: &str) {
    let errs = match parse_and_verify(src, "t.ir") {
        Ok(_) => panic!("expected an error containing {msg:?}"),
        Err(e) => e,
    };
    let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let want = format!("t.ir:{line}:{col}: ");
    assert!(
        all.iter().any(|e| e.starts_with(&want) && e.contains(msg)),
        "wanted {want}…{msg:?}, got:\n{}",
        all.join("\n")
    );
}

const HEAD: &str = "graph \"t\" {\n  sym B <= 1\n  sym P <= 8\n  sym S <= 8\n";

fn g(body: &str) -> String {
    format!("{HEAD}{body}}}\n")
}

#[test]
fn well_formed_minimal_graph_parses() {
    let src = g("  %0 = input \"tokens\" : i32[B, S]\n  %1 = output \"o\"(%0) : i32[B, S]\n");
    parse_and_verify(&src, "t.ir").unwrap();
}

#[test]
fn syntax_error_missing_colon() {
    expect_err(
        &g("  %0 = input \"tokens\" i32[B, S]\n"),
        5,
        23,
        "expected `:`, found `i32`",
    );
}

#[test]
fn syntax_error_unexpected_character() {
    expect_err(
        &g("  %0 = input \"tokens\" : i32[B; S]\n"),
        5,
        30,
        "unexpected character `;`",
    );
}

#[test]
fn unterminated_string() {
    expect_err(
        &g("  %0 = input \"tokens : i32[B, S]\n"),
        5,
        14,
        "unterminated string",
    );
}

#[test]
fn missing_closing_brace() {
    expect_err(
        &format!("{HEAD}  %0 = input \"tokens\" : i32[B, S]\n"),
        6,
        1,
        "missing `}` closing the graph",
    );
}

#[test]
fn unknown_op_suggests_the_closest() {
    expect_err(
        &g("  %0 = input \"t\" : i32[B, S]\n  %1 = tensor.sofmax(%0) : f32[B, S]\n"),
        6,
        8,
        "unknown op `tensor.sofmax`; did you mean `tensor.softmax`?",
    );
}

#[test]
fn unknown_attribute_and_missing_attribute() {
    let base = "  %0 = weight \"x\" : f32[4, 8]\n";
    expect_err(
        &g(&format!(
            "{base}  %1 = tensor.scale(%0) {{factr = 2}} : f32[4, 8]\n"
        )),
        6,
        8,
        "missing attribute `factor`",
    );
    expect_err(
        &g(&format!(
            "{base}  %1 = tensor.scale(%0) {{factor = 2, eps = 1}} : f32[4, 8]\n"
        )),
        6,
        8,
        "`tensor.scale` has no attribute `eps`",
    );
}

#[test]
fn wrong_operand_count() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4, 8]\n  %1 = tensor.matmul(%0) : f32[4, 4]\n"),
        6,
        8,
        "`tensor.matmul` takes 2 operand(s), found 1",
    );
}

#[test]
fn undefined_value() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4, 8]\n  %1 = tensor.silu(%7) : f32[4, 8]\n"),
        6,
        20,
        "use of undefined value `%7`",
    );
}

#[test]
fn value_defined_twice() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4, 8]\n  %0 = weight \"y\" : f32[4, 8]\n"),
        6,
        3,
        "value `%0` is defined twice",
    );
}

#[test]
fn shape_mismatch_in_matmul() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4, 8]\n  %1 = weight \"w\" : f32[16, 6]\n  %2 = tensor.matmul(%0, %1) : f32[4, 16]\n  %3 = output \"o\"(%2) : f32[4, 16]\n"),
        7,
        3,
        "%2 = tensor.matmul: contraction dims differ: lhs f32[4, 8] has K = 8, rhs f32[16, 6] has K = 6",
    );
}

#[test]
fn declared_type_disagrees_with_inferred() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4, 8]\n  %1 = tensor.silu(%0) : f32[4, 9]\n  %2 = output \"o\"(%1) : f32[4, 9]\n"),
        6,
        3,
        "%1 = tensor.silu: declared type f32[4, 9] but the operands give f32[4, 8]",
    );
}

#[test]
fn reshape_changing_element_count() {
    expect_err(
        &g("  %0 = input \"t\" : i32[B, S]\n  %1 = weight \"e\" : f32[10, 8]\n  %2 = tensor.embedding(%1, %0) : f32[B, S, 8]\n  %3 = tensor.reshape(%2) : f32[B, S, 3, 3]\n  %4 = output \"o\"(%3) : f32[B, S, 3, 3]\n"),
        8,
        3,
        "reshape from f32[B, S, 8] to f32[B, S, 3, 3] changes the element count",
    );
}

#[test]
fn cycle_is_reported_at_a_value_on_it() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4]\n  %1 = tensor.add(%0, %2) : f32[4]\n  %2 = tensor.silu(%1) : f32[4]\n  %3 = output \"o\"(%2) : f32[4]\n"),
        6,
        3,
        "is on a cycle",
    );
}

#[test]
fn bad_dims() {
    expect_err(
        &g("  %0 = input \"t\" : i32[B, Q]\n"),
        5,
        27,
        "unknown dimension `Q`",
    );
    expect_err(
        &g("  %0 = input \"t\" : i32[B, -3]\n"),
        5,
        27,
        "expected a dimension, found `-`",
    );
    expect_err(
        &g("  %0 = input \"t\" : i32[B, 99999999999999999999]\n"),
        5,
        27,
        "integer `99999999999999999999` is too large",
    );
    expect_err(
        &g("  %0 = input \"t\" : i32[S*B]\n"),
        5,
        25,
        "expected `,`, found `*`",
    );
}

#[test]
fn unknown_dtype_suggests() {
    expect_err(
        &g("  %0 = weight \"x\" : q4_2[4, 32]\n"),
        5,
        21,
        "unknown dtype `q4_2`; did you mean `q4_0`?",
    );
}

#[test]
fn quantized_weight_needs_whole_blocks() {
    expect_err(
        &g("  %0 = weight \"x\" : q4_0[4, 48]\n  %1 = tensor.dequant(%0) : f32[4, 48]\n  %2 = output \"o\"(%1) : f32[4, 48]\n"),
        5,
        3,
        "innermost dim 48 is not a multiple of the q4_0 block size 32",
    );
}

#[test]
fn state_errors() {
    let body = "  %0 = input \"t\" : i32[B, S]\n  %1 = weight \"e\" : f32[10, 8]\n  %2 = tensor.embedding(%1, %0) : f32[B, S, 8]\n  %3 = tensor.reshape(%2) : f32[B, 1, S, 8]\n  %4 = tensor.kv_append(%3) {cache = \"kk\"} : f32[B, 1, P+S, 8]\n  %5 = output \"o\"(%4) : f32[B, 1, P+S, 8]\n";
    let with_state = |decl: &str| format!("{HEAD}{decl}{body}}}\n");
    expect_err(
        &with_state("  state \"k\" : f32[B, 1, P, 8]\n"),
        10,
        3,
        "no state named \"kk\" is declared; did you mean \"k\"?",
    );
    expect_err(
        &with_state("  state \"kk\" : f32[B, 1, 8, 8]\n"),
        5,
        3,
        "needs exactly one axis that is `P`",
    );
    expect_err(
        &with_state("  state \"kk\" : f32[B, 1, P, 8]\n  state \"unused\" : f32[B, 1, P, 8]\n"),
        6,
        3,
        "state \"unused\" is never appended to",
    );
}

#[test]
fn names_must_be_unique_and_an_output_must_exist() {
    expect_err(
        &g("  %0 = weight \"x\" : f32[4]\n  %1 = weight \"x\" : f32[4]\n  %2 = tensor.add(%0, %1) : f32[4]\n  %3 = output \"o\"(%2) : f32[4]\n"),
        6,
        3,
        "the name \"x\" is used twice",
    );
    expect_err(
        &g("  %0 = weight \"x\" : f32[4]\n"),
        1,
        1,
        "the graph has no `output`",
    );
}

#[test]
fn trailing_garbage_after_graph() {
    let src = format!(
        "{}oops\n",
        g("  %0 = input \"t\" : i32[B, S]\n  %1 = output \"o\"(%0) : i32[B, S]\n")
    );
    expect_err(&src, 8, 1, "unexpected `oops` after the graph");
}

#[test]
fn never_panics_on_arbitrary_text() {
    use proptest::prelude::*;
    let valid = lpuc_ir::text::print(
        &lpuc_ir::builder::build_llama(
            &lpuc_ir::builder::LlamaConfig::preset("tiny").unwrap(),
            lpuc_ir::graph::WeightSource::None,
        )
        .unwrap(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    // Random edits of a valid program: delete a span, or insert a random snippet.
    runner
        .run(
            &(0..valid.len(), 0usize..40, "[ -~\\n]{0,12}", any::<bool>()),
            |(at, len, ins, delete)| {
                let at = (0..=at)
                    .rev()
                    .find(|i| valid.is_char_boundary(*i))
                    .unwrap_or(0);
                let mut s = valid.clone();
                if delete {
                    let end = (at + len).min(s.len());
                    let end = (end..=s.len())
                        .find(|i| s.is_char_boundary(*i))
                        .unwrap_or(s.len());
                    s.replace_range(at..end, "");
                } else {
                    s.insert_str(at, &ins);
                }
                let _ = parse_and_verify(&s, "fuzz.ir");
                Ok(())
            },
        )
        .unwrap();
}
