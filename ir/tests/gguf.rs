//! GGUF reader tests: valid files built with `GgufWriter` (every value type, nested
//! arrays, v2, custom alignment), one test per malformed-file class (each asserting the
//! error class and that its message names the key/tensor and the byte offset), and
//! robustness sweeps (every truncation, byte corruptions, a proptest of random mutations).

use lpuc_ir::gguf::{GgufError, GgufFile, GgufLayout, GgufWriter, MetaArray, MetaValue, StrArray};
use lpuc_ir::quant;
use lpuc_ir::DType;
use proptest::prelude::*;

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 257) as f32 / 64.0 * scale - 2.0 * scale)
        .collect()
}

/// Four kvs and three tensors of different dtypes.
fn sample() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", MetaValue::Str("llama".into()))
        .add_metadata("llama.block_count", MetaValue::U32(2))
        .add_metadata(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaArray::Str(["<s>", "a", "ß"].into_iter().collect())),
        )
        .add_metadata(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaArray::F32(vec![0.0, -1.5, 2.25])),
        );
    w.add_tensor(
        "token_embd.weight",
        &[64, 2],
        DType::Q8_0,
        quant::quantize(DType::Q8_0, &ramp(128, 1.0)).unwrap(),
    );
    w.add_tensor(
        "blk.0.attn_norm.weight",
        &[64],
        DType::F32,
        quant::quantize(DType::F32, &ramp(64, 0.5)).unwrap(),
    );
    w.add_tensor(
        "blk.0.attn_q.weight",
        &[64, 64],
        DType::Q4_1,
        quant::quantize(DType::Q4_1, &ramp(4096, 0.1)).unwrap(),
    );
    w
}

fn sample_bytes() -> (Vec<u8>, GgufLayout) {
    sample().to_bytes_with_layout()
}

fn put_u32(b: &mut [u8], at: u64, v: u32) {
    b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(b: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

fn parse_err(bytes: Vec<u8>) -> GgufError {
    GgufFile::from_bytes(bytes).expect_err("malformed file was accepted")
}

/// Asserts the message contains every fragment (so it names the item and the offset).
fn assert_msg(e: &GgufError, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "error message {msg:?} lacks {p:?}");
    }
}

// ---- Valid files ----------------------------------------------------------------------

#[test]
fn writer_round_trip_every_value_type() {
    let nested = MetaArray::Array(vec![
        MetaArray::I32(vec![1, -2]),
        MetaArray::Str(["x", ""].into_iter().collect()),
        MetaArray::Array(vec![MetaArray::Bool(vec![true, false])]),
        MetaArray::U8(vec![]),
    ]);
    let values = vec![
        ("t.u8", MetaValue::U8(200)),
        ("t.i8", MetaValue::I8(-100)),
        ("t.u16", MetaValue::U16(60000)),
        ("t.i16", MetaValue::I16(-30000)),
        ("t.u32", MetaValue::U32(4_000_000_000)),
        ("t.i32", MetaValue::I32(-2_000_000_000)),
        ("t.f32", MetaValue::F32(1.25)),
        ("t.bool", MetaValue::Bool(true)),
        ("t.str", MetaValue::Str("héllo".into())),
        ("t.u64", MetaValue::U64(u64::MAX)),
        ("t.i64", MetaValue::I64(i64::MIN)),
        ("t.f64", MetaValue::F64(-0.1)),
        ("t.arr.u8", MetaValue::Array(MetaArray::U8(vec![1, 2]))),
        ("t.arr.i8", MetaValue::Array(MetaArray::I8(vec![-1]))),
        ("t.arr.u16", MetaValue::Array(MetaArray::U16(vec![9]))),
        ("t.arr.i16", MetaValue::Array(MetaArray::I16(vec![-9]))),
        ("t.arr.u32", MetaValue::Array(MetaArray::U32(vec![7, 8]))),
        ("t.arr.i32", MetaValue::Array(MetaArray::I32(vec![1, 2, 3]))),
        ("t.arr.f32", MetaValue::Array(MetaArray::F32(vec![0.5]))),
        (
            "t.arr.bool",
            MetaValue::Array(MetaArray::Bool(vec![false, true])),
        ),
        ("t.arr.u64", MetaValue::Array(MetaArray::U64(vec![1 << 40]))),
        (
            "t.arr.i64",
            MetaValue::Array(MetaArray::I64(vec![-(1 << 40)])),
        ),
        ("t.arr.f64", MetaValue::Array(MetaArray::F64(vec![2.5]))),
        (
            "t.arr.str",
            MetaValue::Array(MetaArray::Str(StrArray::new())),
        ),
        ("t.arr.nested", MetaValue::Array(nested)),
    ];
    let mut w = GgufWriter::new();
    for (k, v) in &values {
        w.add_metadata(*k, v.clone());
    }
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.version(), 3);
    let got: Vec<(&str, &MetaValue)> = f.metadata().iter().map(|(k, v)| (k.as_str(), v)).collect();
    let want: Vec<(&str, &MetaValue)> = values.iter().map(|(k, v)| (*k, v)).collect();
    assert_eq!(got, want);
    assert!(f.tensors().is_empty());

    // Typed getters widen any integer that fits and refuse ones that do not.
    assert_eq!(f.get_u32("t.u8"), Some(200));
    assert_eq!(f.get_u32("t.u16"), Some(60000));
    assert_eq!(f.get_u32("t.i8"), None);
    assert_eq!(f.get_u32("t.u64"), None);
    assert_eq!(f.get_u64("t.u64"), Some(u64::MAX));
    assert_eq!(f.get_i64("t.i64"), Some(i64::MIN));
    assert_eq!(f.get_f32("t.f64"), Some(-0.1f64 as f32));
    assert_eq!(f.get_bool("t.bool"), Some(true));
    assert_eq!(f.get_str("t.str"), Some("héllo"));
    assert_eq!(f.get_str("t.u8"), None);
    assert_eq!(f.get_i32_array("t.arr.u16"), Some(vec![9]));
    assert_eq!(f.get_i32_array("t.arr.u64"), None); // 2^40 does not fit i32
    assert_eq!(f.get_f32_array("t.arr.f64"), Some(vec![2.5]));
    assert_eq!(f.get_str_array("t.arr.str"), Some(vec![]));
    assert_eq!(f.get("missing"), None);
    let packed = f.get_str_array_packed("t.arr.nested");
    assert!(packed.is_none()); // an array of arrays is not a string array
    assert_eq!(f.get("t.arr.i32").unwrap().type_name(), "array of i32");
}

#[test]
fn str_array_is_packed_and_indexable() {
    let a: StrArray = ["<s>", "", "ß", "ab"].into_iter().collect();
    assert_eq!((a.len(), a.data_len()), (4, 7));
    assert_eq!((&a[0], &a[1], &a[2]), ("<s>", "", "ß"));
    assert_eq!(a.get(4), None);
    assert_eq!((&a).into_iter().collect::<Vec<_>>(), ["<s>", "", "ß", "ab"]);
}

#[test]
fn tensors_round_trip_zero_copy() {
    let (bytes, layout) = sample_bytes();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens"),
        Some(vec!["<s>", "a", "ß"])
    );
    assert_eq!(
        f.get_f32_array("tokenizer.ggml.scores"),
        Some(vec![0.0, -1.5, 2.25])
    );
    assert_eq!(f.data_offset(), layout.data_offset);
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "token_embd.weight",
            "blk.0.attn_norm.weight",
            "blk.0.attn_q.weight"
        ]
    );

    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.dims.clone(), emb.shape(), emb.n_elems()),
        (vec![64, 2], vec![2, 64], 128)
    );
    assert_eq!((emb.dtype, emb.size), (DType::Q8_0, 136));
    for (t, l) in f.tensors().iter().zip(&layout.tensors) {
        assert_eq!(t.offset, l.data_at);
        assert_eq!(t.offset % 32, 0);
        let data = f.tensor_data(t);
        assert_eq!(data.len() as u64, t.size);
        // Zero-copy: the slice points into the file's own buffer.
        assert!(std::ptr::eq(
            data.as_ptr(),
            f.bytes()[t.offset as usize..].as_ptr()
        ));
    }
    let norm = f.tensor("blk.0.attn_norm.weight").unwrap();
    assert_eq!(f.tensor_f32(norm).unwrap(), ramp(64, 0.5));
    let q = f.tensor("blk.0.attn_q.weight").unwrap();
    let want = quant::dequantize_to_vec(DType::Q4_1, f.tensor_data(q)).unwrap();
    assert_eq!(f.tensor_f32(q).unwrap(), want);
    assert_eq!(
        f.tensor_info_offset("blk.0.attn_q.weight"),
        Some(layout.tensors[2].info_at)
    );
}

#[test]
fn version_2_is_accepted() {
    let mut w = sample();
    w.set_version(2);
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.tensors().len(), 3);
}

#[test]
fn custom_alignment_is_honoured() {
    let mut w = sample();
    w.add_metadata("general.alignment", MetaValue::U32(256));
    let (bytes, layout) = w.to_bytes_with_layout();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.alignment(), 256);
    assert_eq!(f.data_offset() % 256, 0);
    for (t, l) in f.tensors().iter().zip(&layout.tensors) {
        assert_eq!(t.offset, l.data_at);
        assert_eq!((t.offset - f.data_offset()) % 256, 0);
    }
}

#[test]
fn zero_dim_scalar_tensor_is_one_element() {
    let mut w = GgufWriter::new();
    w.add_tensor("scale", &[], DType::F32, 3.5f32.to_le_bytes());
    let f = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let t = &f.tensors()[0];
    assert_eq!((t.n_elems(), t.shape(), t.size), (1, vec![], 4));
    assert_eq!(f.tensor_f32(t).unwrap(), vec![3.5]);
}

#[test]
fn open_reads_from_disk_via_mmap() {
    let dir = std::env::temp_dir().join(format!("lpuc-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.gguf");
    std::fs::write(&path, sample().to_bytes()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensors().len(), 3);
    let e = GgufFile::open(&dir.join("absent.gguf")).unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert_msg(&e, &["absent.gguf"]);
    std::fs::write(&path, b"").unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn foreign_tensor_info_does_not_panic() {
    let f = GgufFile::from_bytes(sample().to_bytes()).unwrap();
    let mut t = f.tensors()[2].clone();
    t.offset = u64::MAX - 3;
    assert!(f.tensor_data(&t).is_empty());
    let e = f.tensor_f32(&t).unwrap_err();
    assert!(matches!(e, GgufError::Dequantize { .. }));
    assert_msg(&e, &["blk.0.attn_q.weight", "but the source has 0 bytes"]);
    t.dims = vec![u64::MAX, u64::MAX];
    assert!(f.tensor_f32(&t).is_err());
}

// ---- Header -----------------------------------------------------------------------------

#[test]
fn malformed_truncated_header() {
    let (bytes, _) = sample_bytes();
    let e = parse_err(bytes[..2].to_vec());
    assert!(matches!(e, GgufError::Truncated { .. }));
    assert_msg(
        &e,
        &["header: magic at byte 0", "needs 4 bytes but only 2 remain"],
    );
    let e = parse_err(bytes[..20].to_vec());
    assert_msg(
        &e,
        &[
            "header: metadata_kv_count at byte 16",
            "needs 8 bytes but only 4",
        ],
    );
}

#[test]
fn malformed_bad_magic() {
    let mut b = sample_bytes().0;
    b[..4].copy_from_slice(b"GGML");
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BadMagic { .. }));
    assert_msg(&e, &["byte 0", "\"GGML\"", "starts with \"GGUF\""]);
}

#[test]
fn malformed_big_endian() {
    let mut b = sample_bytes().0;
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = parse_err(b.clone());
    assert!(matches!(e, GgufError::BigEndian { offset: 4, .. }));
    assert_msg(
        &e,
        &[
            "byte 4",
            "version 3 byte-swapped",
            "big-endian",
            "only little-endian",
        ],
    );
    b[..4].copy_from_slice(b"FUGG");
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BigEndian { offset: 0, .. }));
}

#[test]
fn malformed_version_1_and_unknown_versions() {
    let mut b = sample_bytes().0;
    put_u32(&mut b, 4, 1);
    let e = parse_err(b.clone());
    assert!(matches!(
        e,
        GgufError::UnsupportedVersion { version: 1, .. }
    ));
    assert_msg(
        &e,
        &["byte 4", "version 1 is not supported", "32-bit counts"],
    );
    put_u32(&mut b, 4, 4);
    assert_msg(&parse_err(b), &["byte 4: GGUF version 4 is not supported"]);
}

#[test]
fn malformed_absurd_kv_count() {
    let mut b = sample_bytes().0;
    put_u64(&mut b, 16, u64::MAX / 3);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::CountTooLarge { .. }));
    assert_msg(
        &e,
        &[
            "header: metadata_kv_count at byte 16",
            &format!("count {}", u64::MAX / 3),
        ],
    );
}

#[test]
fn malformed_absurd_tensor_count() {
    let (mut b, _) = sample_bytes();
    let len = b.len() as u64;
    put_u64(&mut b, 8, len); // > remaining / 24
    let e = parse_err(b);
    assert!(matches!(e, GgufError::CountTooLarge { .. }));
    assert_msg(
        &e,
        &["header: tensor_count at byte 8", &format!("count {len}")],
    );
}

// ---- Metadata -------------------------------------------------------------------------

/// Two kvs, the first long enough that a cut inside the second still leaves more bytes than
/// the kv count's lower bound (so the cut shows up as a truncation, not a bad count).
fn two_kvs() -> (Vec<u8>, GgufLayout) {
    let mut w = GgufWriter::new();
    w.add_metadata("general.name", MetaValue::Str("x".repeat(200)))
        .add_metadata("general.architecture", MetaValue::Str("llama".into()));
    w.to_bytes_with_layout()
}

#[test]
fn malformed_truncated_key() {
    let (b, l) = two_kvs();
    let at = l.kvs[1].key_at;
    let e = parse_err(b[..at as usize + 11].to_vec());
    assert!(
        matches!(
            e,
            GgufError::Truncated {
                need: 20,
                available: 3,
                ..
            }
        ),
        "{e}"
    );
    assert_msg(
        &e,
        &[&format!(
            "metadata key #1 (string of 20 bytes) at byte {}",
            at + 8
        )],
    );
}

#[test]
fn malformed_truncated_value() {
    let (b, l) = two_kvs();
    let at = l.kvs[1].value_at;
    let e = parse_err(b[..at as usize + 10].to_vec());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    assert_msg(
        &e,
        &[&format!(
            "value of key 'general.architecture' (string of 5 bytes) at byte {}",
            at + 8
        )],
    );
}

#[test]
fn malformed_string_length_past_end() {
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.kvs[0].key_at, 1 << 40);
    let e = parse_err(b);
    assert!(matches!(
        e,
        GgufError::Truncated {
            need: 1099511627776,
            ..
        }
    ));
    assert_msg(
        &e,
        &["metadata key #0 (string of 1099511627776 bytes) at byte 32"],
    );
}

#[test]
fn malformed_absurd_array_length() {
    let (mut b, l) = sample_bytes();
    let at = l.kvs[2].value_at;
    put_u64(&mut b, at + 4, 1 << 60);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::CountTooLarge { .. }));
    assert_msg(
        &e,
        &[
            &format!("value of key 'tokenizer.ggml.tokens' (array of string) at byte {at}"),
            "count 1152921504606846976 is impossible",
        ],
    );
}

#[test]
fn malformed_unknown_value_type() {
    let (mut b, l) = sample_bytes();
    put_u32(&mut b, l.kvs[1].type_at, 13);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::UnknownValueType { type_id: 13, .. }));
    assert_msg(
        &e,
        &[&format!(
            "value of key 'llama.block_count' at byte {}",
            l.kvs[1].type_at
        )],
    );
}

#[test]
fn malformed_unknown_array_element_type() {
    let (mut b, l) = sample_bytes();
    put_u32(&mut b, l.kvs[3].value_at, 99);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::UnknownValueType { type_id: 99, .. }));
    assert_msg(
        &e,
        &[
            "'tokenizer.ggml.scores' (array element type)",
            &l.kvs[3].value_at.to_string(),
        ],
    );
}

#[test]
fn malformed_bad_bool() {
    let mut w = GgufWriter::new();
    w.add_metadata("tokenizer.ggml.add_bos_token", MetaValue::Bool(true));
    let (mut b, l) = w.to_bytes_with_layout();
    b[l.kvs[0].value_at as usize] = 2;
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BadBool { value: 2, .. }));
    assert_msg(
        &e,
        &[
            "'tokenizer.ggml.add_bos_token'",
            &format!("byte {}", l.kvs[0].value_at),
        ],
    );
}

#[test]
fn malformed_nesting_too_deep() {
    let mut a = MetaArray::U8(vec![1]);
    for _ in 0..12 {
        a = MetaArray::Array(vec![a]);
    }
    let mut w = GgufWriter::new();
    w.add_metadata("deep", MetaValue::Array(a));
    let e = parse_err(w.to_bytes());
    assert!(matches!(e, GgufError::NestingTooDeep { .. }));
    assert_msg(
        &e,
        &["value of key 'deep' element #0", "nested deeper than 8"],
    );
}

#[test]
fn malformed_duplicate_key() {
    let mut w = sample();
    w.add_metadata("llama.block_count", MetaValue::U32(3));
    let (b, l) = w.to_bytes_with_layout();
    let e = parse_err(b);
    assert!(matches!(e, GgufError::DuplicateKey { .. }));
    assert_msg(
        &e,
        &[
            &format!("key 'llama.block_count' at byte {}", l.kvs[4].key_at),
            &format!("first defined at byte {}", l.kvs[1].key_at),
        ],
    );
}

#[test]
fn malformed_bad_utf8_key() {
    let (mut b, l) = sample_bytes();
    b[l.kvs[1].key_at as usize + 8] = 0xFF;
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BadUtf8 { .. }));
    assert_msg(
        &e,
        &[
            &format!("metadata key #1 at byte {}", l.kvs[1].key_at),
            "not valid UTF-8",
        ],
    );
}

#[test]
fn malformed_bad_utf8_string_value() {
    let (mut b, l) = sample_bytes();
    // Third token "ß" (2 bytes): element strings start after elem type + count.
    let third = l.kvs[2].value_at + 12 + (8 + 3) + (8 + 1);
    b[third as usize + 8] = 0xC3;
    b[third as usize + 9] = 0x28; // invalid continuation
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BadUtf8 { .. }));
    assert_msg(
        &e,
        &[&format!(
            "value of key 'tokenizer.ggml.tokens' element #2 at byte {third}"
        )],
    );
}

#[test]
fn malformed_alignment_not_power_of_two() {
    let mut w = sample();
    w.add_metadata("general.alignment", MetaValue::U32(48));
    let (b, l) = w.to_bytes_with_layout();
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BadAlignment { .. }));
    assert_msg(
        &e,
        &[
            &format!("'general.alignment' at byte {}", l.kvs[4].key_at),
            "48 is not a power of two",
        ],
    );
    let mut w = sample();
    w.add_metadata("general.alignment", MetaValue::U32(0));
    assert_msg(&parse_err(w.to_bytes()), &["0 is not a power of two"]);
}

#[test]
fn malformed_alignment_wrong_type() {
    let mut w = sample();
    w.add_metadata("general.alignment", MetaValue::I32(32));
    let e = parse_err(w.to_bytes());
    assert!(matches!(e, GgufError::BadAlignment { .. }));
    assert_msg(&e, &["general.alignment", "has type i32, expected u32"]);
}

// ---- Tensor infos ---------------------------------------------------------------------

#[test]
fn malformed_truncated_tensor_info() {
    let (b, l) = sample_bytes();
    let t = &l.tensors[1];
    let e = parse_err(b[..t.type_at as usize + 2].to_vec());
    assert!(matches!(e, GgufError::Truncated { .. }));
    assert_msg(
        &e,
        &[&format!(
            "tensor 'blk.0.attn_norm.weight' (info at byte {}): type at byte {}",
            t.info_at, t.type_at
        )],
    );
}

#[test]
fn malformed_too_many_dims() {
    let (mut b, l) = sample_bytes();
    put_u32(&mut b, l.tensors[0].n_dims_at, 5);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }));
    assert_msg(
        &e,
        &[
            "tensor 'token_embd.weight' (info at byte",
            "5 dimensions, at most 4",
        ],
    );
}

#[test]
fn malformed_zero_dim() {
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.tensors[0].dims_at + 8, 0);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::ZeroDim { axis: 1, .. }));
    assert_msg(
        &e,
        &[
            &format!(
                "tensor 'token_embd.weight' (info at byte {})",
                l.tensors[0].info_at
            ),
            "dimension 1 is 0",
        ],
    );
}

#[test]
fn malformed_shape_overflow() {
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.tensors[0].dims_at, 1 << 32);
    put_u64(&mut b, l.tensors[0].dims_at + 8, 1 << 32);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::ShapeOverflow { .. }));
    assert_msg(
        &e,
        &[
            "tensor 'token_embd.weight'",
            "[4294967296, 4294967296] overflow",
        ],
    );
    // Fits u64 but not i64, as ggml requires.
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.tensors[1].dims_at, 1 << 63);
    assert!(matches!(parse_err(b), GgufError::ShapeOverflow { .. }));
}

#[test]
fn malformed_unknown_tensor_type() {
    let (mut b, l) = sample_bytes();
    put_u32(&mut b, l.tensors[2].type_at, 1000);
    let e = parse_err(b);
    assert!(matches!(
        e,
        GgufError::UnknownTensorType { type_id: 1000, .. }
    ));
    assert_msg(
        &e,
        &[
            &format!(
                "tensor 'blk.0.attn_q.weight' (info at byte {})",
                l.tensors[2].info_at
            ),
            "unknown ggml type id 1000",
        ],
    );
}

#[test]
fn malformed_unsupported_tensor_type() {
    let mut w = GgufWriter::new();
    w.add_tensor_raw("w", &[32], 6, vec![0u8; 22]);
    let e = parse_err(w.to_bytes());
    assert!(matches!(
        e,
        GgufError::UnsupportedTensorType { type_id: 6, .. }
    ));
    assert_msg(
        &e,
        &[
            "tensor 'w' (info at byte 24)",
            "Q5_0 (id 6) is not supported",
        ],
    );
}

#[test]
fn malformed_not_block_multiple() {
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.tensors[0].dims_at, 48);
    let e = parse_err(b);
    assert!(matches!(
        e,
        GgufError::NotBlockMultiple {
            ne0: 48,
            block: 32,
            ..
        }
    ));
    assert_msg(
        &e,
        &[
            "tensor 'token_embd.weight'",
            "innermost dimension 48 is not a multiple of the q8_0 block size 32",
        ],
    );
}

#[test]
fn malformed_duplicate_tensor_name() {
    let mut w = sample();
    w.add_tensor("blk.0.attn_norm.weight", &[8], DType::F32, vec![0u8; 32]);
    let (b, l) = w.to_bytes_with_layout();
    let e = parse_err(b);
    assert!(matches!(e, GgufError::DuplicateTensor { .. }));
    assert_msg(
        &e,
        &[
            &format!(
                "tensor 'blk.0.attn_norm.weight' (info at byte {})",
                l.tensors[3].info_at
            ),
            &format!("first at byte {}", l.tensors[1].info_at),
        ],
    );
}

#[test]
fn malformed_tensor_name_too_long() {
    let mut w = GgufWriter::new();
    let name = "n".repeat(65);
    w.add_tensor(name.as_str(), &[1], DType::F32, vec![0u8; 4]);
    let e = parse_err(w.to_bytes());
    assert!(matches!(e, GgufError::NameTooLong { len: 65, .. }));
    assert_msg(
        &e,
        &[&format!("tensor '{name}' (info at byte 24)"), "65 bytes"],
    );
}

#[test]
fn malformed_bad_utf8_tensor_name() {
    let (mut b, l) = sample_bytes();
    b[l.tensors[1].info_at as usize + 8] = 0xFE;
    let e = parse_err(b);
    assert!(matches!(e, GgufError::BadUtf8 { .. }));
    assert_msg(
        &e,
        &[&format!(
            "tensor info #1 name at byte {}",
            l.tensors[1].info_at
        )],
    );
}

// ---- Tensor data ----------------------------------------------------------------------

#[test]
fn malformed_misaligned_tensor_offset() {
    let (mut b, l) = sample_bytes();
    let at = l.tensors[1].offset_at;
    let rel = get_u64(&b, at);
    put_u64(&mut b, at, rel + 4);
    let e = parse_err(b);
    assert!(matches!(
        e,
        GgufError::MisalignedTensor { alignment: 32, .. }
    ));
    assert_msg(
        &e,
        &[
            &format!("tensor 'blk.0.attn_norm.weight' (info at byte {})", l.tensors[1].info_at),
            &format!("data offset {} (relative to the data section) is not a multiple of the alignment 32", rel + 4),
        ],
    );
}

#[test]
fn malformed_tensor_data_past_end_of_file() {
    let (mut b, l) = sample_bytes();
    let at = l.tensors[2].offset_at;
    let rel = get_u64(&b, at) + (1 << 20);
    put_u64(&mut b, at, rel);
    let len = b.len();
    let e = parse_err(b);
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }));
    assert_msg(
        &e,
        &[&format!(
            "tensor 'blk.0.attn_q.weight' (info at byte {}): data [offset {}, +2560) runs past end of file ({len} bytes)",
            l.tensors[2].info_at,
            l.data_offset + rel
        )],
    );
}

#[test]
fn malformed_truncated_tensor_data() {
    let (b, l) = sample_bytes();
    let cut = l.tensors[2].data_at as usize + 100;
    let e = parse_err(b[..cut].to_vec());
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }));
    assert_msg(
        &e,
        &[
            "tensor 'blk.0.attn_q.weight'",
            &format!("end of file ({cut} bytes)"),
        ],
    );
}

#[test]
fn malformed_offset_overflow() {
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.tensors[0].offset_at, u64::MAX - 31);
    let e = parse_err(b);
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }));
    assert_msg(&e, &["tensor 'token_embd.weight'", "runs past end of file"]);
}

#[test]
fn malformed_overlapping_tensors() {
    let (mut b, l) = sample_bytes();
    put_u64(&mut b, l.tensors[1].offset_at, 64); // inside token_embd's [0, 136)
    let e = parse_err(b);
    assert!(matches!(e, GgufError::OverlappingTensors { .. }));
    let d = l.data_offset;
    assert_msg(
        &e,
        &[
            &format!(
                "tensor 'blk.0.attn_norm.weight' (info at byte {})",
                l.tensors[1].info_at
            ),
            &format!("data [{}, {})", d + 64, d + 64 + 256),
            &format!(
                "overlaps tensor 'token_embd.weight' (info at byte {}) data [{d}, {})",
                l.tensors[0].info_at,
                d + 136
            ),
        ],
    );
}

// ---- Robustness sweeps ------------------------------------------------------------------

/// Parses, then touches every tensor as a consumer would. Must never panic.
fn parse_and_touch(bytes: Vec<u8>) -> Result<(), GgufError> {
    let f = GgufFile::from_bytes(bytes)?;
    for (k, v) in f.metadata() {
        let _ = (f.get(k), v.to_string());
    }
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
        let y = f.tensor_f32(t).expect("a parsed tensor always dequantizes");
        assert_eq!(y.len() as u64, t.n_elems());
    }
    Ok(())
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    let (b, l) = sample_bytes();
    let last = &l.tensors[2];
    let end_of_data = last.data_at as usize + 2560;
    for cut in 0..b.len() {
        let r = parse_and_touch(b[..cut].to_vec());
        // Only the trailing padding after the last tensor is optional.
        assert_eq!(r.is_ok(), cut >= end_of_data, "cut at {cut}: {r:?}");
    }
}

#[test]
fn every_header_byte_corruption_is_handled() {
    let (b, l) = sample_bytes();
    for pos in 0..l.data_offset as usize {
        for v in [0x00u8, 0xFF, 0x80, b[pos].wrapping_add(1), b[pos] ^ 0x40] {
            let mut m = b.clone();
            m[pos] = v;
            let _ = parse_and_touch(m);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn prop_mutated_files_never_panic(
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        insert in proptest::option::of((any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 1..16))),
    ) {
        let (mut b, l) = sample_bytes();
        // Bias mutations toward the header, kvs and infos, where the parser's decisions are.
        let head = l.data_offset as usize;
        for (i, v) in muts {
            let pos = i.index(head);
            b[pos] = v;
        }
        if let Some((i, bytes)) = insert {
            let pos = i.index(b.len());
            b.splice(pos..pos, bytes);
        }
        if do_cut {
            let n = cut.index(b.len());
            b.truncate(n);
        }
        let _ = parse_and_touch(b);
    }
}

/// Writes the fuzz seed corpus (`fuzz/seeds/gguf_parse/`). Run by hand after changing the
/// writer: `cargo test -p lpuc-ir --test gguf -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/gguf_parse");
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![("sample.gguf", sample().to_bytes())];
    let mut w = sample();
    w.set_version(2);
    seeds.push(("sample_v2.gguf", w.to_bytes()));
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", MetaValue::U32(64))
        .add_metadata("b", MetaValue::Bool(false))
        .add_metadata("i", MetaValue::I64(-7))
        .add_metadata(
            "nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1]),
                MetaArray::Bool(vec![true]),
                MetaArray::Str(["q"].into_iter().collect()),
            ])),
        );
    let x = ramp(256, 1.0);
    w.add_tensor("q4k", &[256], DType::Q4K, vec![0x5Au8; 144])
        .add_tensor("q6k", &[256], DType::Q6K, vec![0xA5u8; 210])
        .add_tensor(
            "q4_0",
            &[32, 2],
            DType::Q4_0,
            quant::quantize(DType::Q4_0, &x[..64]).unwrap(),
        )
        .add_tensor(
            "f16",
            &[4, 2],
            DType::F16,
            quant::quantize(DType::F16, &x[..8]).unwrap(),
        )
        .add_tensor(
            "bf16",
            &[8],
            DType::BF16,
            quant::quantize(DType::BF16, &x[..8]).unwrap(),
        )
        .add_tensor("i8", &[2, 2, 2, 2], DType::I8, vec![1u8; 16])
        .add_tensor("i32", &[3], DType::I32, vec![2u8; 12])
        .add_tensor("scalar", &[], DType::F32, 1.0f32.to_le_bytes());
    seeds.push(("all_dtypes.gguf", w.to_bytes()));
    for (name, bytes) in seeds {
        GgufFile::from_bytes(bytes.clone()).unwrap();
        assert!(
            bytes.len() <= 4096,
            "{name} exceeds libFuzzer's default max_len"
        );
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
