//! The roadmap's int4 matmul benchmark: `y[M, N] = x[M, K] · Wᵀ` with `W` in Q4_1, three
//! ways, at batch `M` = 1 (decode, GEMV) and 512 (prefill), on 576×1536 (SmolLM2's FFN
//! up-projection: K = 576, N = 1536) and 4096×4096 (a 7B attention projection):
//!
//! - `naive_int4`: the textbook loop nest, dequantizing each weight as it is used;
//! - `dequant_sgemm`: W dequantized to f32 once (outside the timing), then a tuned f32
//!   sgemm (`matrixmultiply`) — 8× the weight bytes;
//! - `fused_jit`: lpuc's kernels, activations quantized to q8 blocks, integer dot products
//!   on packed int4 weights (AVX-512 VNNI here), one thread.
//!
//! Counters: bytes = the weight bytes the variant reads per call (GB/s), items = FLOPs
//! (2·M·N·K; read "item/s" as FLOP/s). Run: `cargo bench -p lpuc-codegen --bench qmatmul`.

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use lpuc_codegen::jit::{load, Host};
use lpuc_codegen::kernels::{module_for, KernelSpec};
use lpuc_codegen::pack;
use lpuc_ir::dtype::DType;
use rand::{Rng, SeedableRng};

fn main() {
    divan::main();
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1536, 576),
    (512, 1536, 576),
    (1, 4096, 4096),
    (512, 4096, 4096),
];

struct Data {
    m: usize,
    n: usize,
    k: usize,
    x: Vec<f32>,
    wq: Vec<u8>,
}

fn data(&(m, n, k): &(usize, usize, usize)) -> Data {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let w: Vec<f32> = (0..n * k).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let x: Vec<f32> = (0..m * k).map(|_| r.gen_range(-1.0f32..1.0)).collect();
    let wq = lpuc_ir::quant::quantize(DType::Q4_1, &w).unwrap();
    Data { m, n, k, x, wq }
}

fn flops(d: &Data) -> ItemsCount {
    ItemsCount::new(2 * d.m * d.n * d.k)
}

fn label(s: &(usize, usize, usize)) -> String {
    format!("M{}_{}x{}", s.0, s.2, s.1)
}

#[divan::bench(args = SHAPES.iter().map(|s| (label(s), *s)).collect::<Vec<_>>(), sample_count = 3, sample_size = 1)]
fn naive_int4(b: Bencher, arg: &(String, (usize, usize, usize))) {
    let d = data(&arg.1);
    let nb = d.k / 32;
    let mut y = vec![0f32; d.m * d.n];
    b.counter(BytesCount::new(d.wq.len()))
        .counter(flops(&d))
        .bench_local(|| {
            for i in 0..d.m {
                let x = &d.x[i * d.k..(i + 1) * d.k];
                for row in 0..d.n {
                    let mut acc = 0f32;
                    for blk in 0..nb {
                        let o = &d.wq[(row * nb + blk) * 20..][..20];
                        let dd = half::f16::from_le_bytes([o[0], o[1]]).to_f32();
                        let mm = half::f16::from_le_bytes([o[2], o[3]]).to_f32();
                        for j in 0..16 {
                            let q = o[4 + j];
                            acc += ((q & 15) as f32 * dd + mm) * x[blk * 32 + j];
                            acc += ((q >> 4) as f32 * dd + mm) * x[blk * 32 + 16 + j];
                        }
                    }
                    y[i * d.n + row] = acc;
                }
            }
            divan::black_box(&y);
        });
}

#[divan::bench(args = SHAPES.iter().map(|s| (label(s), *s)).collect::<Vec<_>>(), sample_count = 5, sample_size = 1)]
fn dequant_sgemm(b: Bencher, arg: &(String, (usize, usize, usize))) {
    let d = data(&arg.1);
    let w = lpuc_ir::quant::dequantize_to_vec(DType::Q4_1, &d.wq).unwrap();
    let mut y = vec![0f32; d.m * d.n];
    b.counter(BytesCount::new(w.len() * 4))
        .counter(flops(&d))
        .bench_local(|| {
            // y[m, n] = x[m, k] · w[n, k]ᵀ: w read as a [k, n] matrix with strides (1, k).
            unsafe {
                matrixmultiply::sgemm(
                    d.m,
                    d.k,
                    d.n,
                    1.0,
                    d.x.as_ptr(),
                    d.k as isize,
                    1,
                    w.as_ptr(),
                    1,
                    d.k as isize,
                    0.0,
                    y.as_mut_ptr(),
                    d.n as isize,
                    1,
                );
            }
            divan::black_box(&y);
        });
}

type Qmm = extern "C" fn(*const u8, *const i8, *const f32, *const f32, *mut f32, i64, i64, i64);
type Quant = extern "C" fn(*const f32, *mut i8, *mut f32, *mut f32, i64, i64);

#[divan::bench(args = SHAPES.iter().map(|s| (label(s), *s)).collect::<Vec<_>>(), sample_count = 20, sample_size = 1)]
fn fused_jit(b: Bencher, arg: &(String, (usize, usize, usize))) {
    let d = data(&arg.1);
    let host = Host::detect();
    let spec = KernelSpec::QMatmul {
        n: d.n,
        k: d.k,
        bits: 4,
        vnni: host.vnni512(),
        m_tile: lpuc_codegen::kernels::QMM_TILE,
    };
    let qs = KernelSpec::Quantize { k: d.k };
    let kern = load(
        &module_for(&[spec.clone(), qs.clone()]),
        &host,
        &[spec.symbol(), qs.symbol()],
    )
    .unwrap();
    let f: Qmm = unsafe { std::mem::transmute(kern.addr(&spec.symbol())) };
    let q: Quant = unsafe { std::mem::transmute(kern.addr(&qs.symbol())) };
    let packed = pack::pack(DType::Q4_1, &d.wq, d.n, d.k).unwrap();
    let nb = d.k / 32;
    let (mut xq, mut dx, mut sx) = (
        vec![0i8; d.m * d.k],
        vec![0f32; d.m * nb],
        vec![0f32; d.m * nb],
    );
    let mut y = vec![0f32; d.m * d.n];
    b.counter(BytesCount::new(packed.len()))
        .counter(flops(&d))
        .bench_local(|| {
            q(
                d.x.as_ptr(),
                xq.as_mut_ptr(),
                dx.as_mut_ptr(),
                sx.as_mut_ptr(),
                0,
                d.m as i64,
            );
            f(
                packed.as_ptr(),
                xq.as_ptr(),
                dx.as_ptr(),
                sx.as_ptr(),
                y.as_mut_ptr(),
                d.m as i64,
                0,
                (d.n / 16) as i64,
            );
            divan::black_box(&y);
        });
}
