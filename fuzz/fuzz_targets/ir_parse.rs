//! Fuzz target: arbitrary bytes into the `.ir` text parser and the verifier (and, for bytes
//! that start with the artifact magic, the binary graph decoder), exactly as `lpuc verify`
//! feeds them. A parse or verification may fail, but must never panic, hang or
//! over-allocate; a graph that verifies must print, and its printed form must parse back
//! to the same text (`print(parse(t)) == t` for printed `t`, the text form's invariant).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lpuc_ir::text;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"LPUCART\0") {
        if let Ok(g) = lpuc_ir::artifact::graph_from_bytes(data) {
            if lpuc_ir::verify::verify(&g).is_ok() {
                let _ = text::print(&g);
            }
        }
        return;
    }
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(g) = text::parse_and_verify(src, "fuzz.ir") else {
        return;
    };
    let printed = text::print(&g);
    let again = text::parse_and_verify(&printed, "printed.ir")
        .expect("a printed, verified graph must parse and verify again");
    assert_eq!(text::print(&again), printed, "print(parse(t)) != t");
});
