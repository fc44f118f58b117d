//! Fuzz target: arbitrary bytes into the GGUF reader. A parse may fail, but must never
//! panic, hang or over-allocate; on success every metadata value and every tensor is
//! touched the way a consumer would (raw bytes read, then dequantized), and the reader's
//! invariants are asserted: data is exactly `size` bytes and dequantizes to `n_elems`
//! values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lpuc_ir::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for (k, v) in f.metadata() {
        assert!(f.get(k).is_some());
        let _ = v.to_string();
    }
    let _ = (f.architecture(), f.version(), f.alignment());
    for t in f.tensors() {
        assert!(f.tensor(&t.name).is_some());
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.size);
        let checksum = bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        std::hint::black_box(checksum);
        let values = f
            .tensor_f32(t)
            .expect("a tensor the parser accepted must dequantize");
        assert_eq!(values.len() as u64, t.n_elems());
        assert_eq!(t.shape().iter().product::<u64>(), t.n_elems());
    }
});
