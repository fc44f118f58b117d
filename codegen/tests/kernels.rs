//! Every generated kernel against a reference on seeded random data.
//!
//! Tolerances: kernels that do the same integer/f32 work as their reference in another
//! order (qmatmul vs `pack::qmatmul_ref`) agree to 1e-5 relative; kernels compared with the
//! f64 interpreter formulas agree to a few f32 ulps of the result's scale (1e-5), except
//! where the kernel uses its polynomial `exp` (≈2 ulp, so 1e-5 relative still holds);
//! activation quantization against unquantized f64 is bounded by the q8 step:
//! |Δ| ≤ Σ_blocks |w|·dx/2 per output, which the test computes.
//!
//! Modules are compiled by the `lpuc-kernelc` binary, found next to this test's directory
//! (`cargo test --workspace` builds it; alone, build it first with
//! `cargo build --release -p lpuc-kernelc`) or through `LPUC_KERNELC`. The disassembly check
//! needs LLVM in-process and lives in `kernelc/tests/`.

use half::f16;
use lpuc_codegen::jit::{load, Host};
use lpuc_codegen::kernels::{module_for, KernelSpec};
use lpuc_codegen::pack;
use lpuc_host::Tier;
use lpuc_ir::dtype::DType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The host at every kernel tier it can execute (the others are reported as skipped).
fn hosts() -> Vec<Host> {
    let f = lpuc_host::Features::detect();
    Tier::ALL
        .into_iter()
        .filter(|t| {
            let ok = t.runs_on(&f);
            if !ok {
                eprintln!("skipped: tier {}: this host cannot execute it", t.name());
            }
            ok
        })
        .map(Host::at)
        .collect()
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn randv(r: &mut ChaCha8Rng, n: usize, a: f32) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-a..a)).collect()
}

fn close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}: element {i}: kernel {x} vs reference {y} (scale {scale}, tol {rel})"
        );
    }
}

type Qmm = extern "C" fn(*const u8, *const i8, *const f32, *const f32, *mut f32, i64, i64, i64);
type Quant = extern "C" fn(*const f32, *mut i8, *mut f32, *mut f32, i64, i64);

fn quant_rows(k: usize, x: &[f32]) -> (Vec<i8>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / k;
    let nb = k / 32;
    let (mut q, mut d, mut s) = (
        vec![0i8; x.len()],
        vec![0f32; rows * nb],
        vec![0f32; rows * nb],
    );
    for r in 0..rows {
        pack::quantize_ref(
            &x[r * k..(r + 1) * k],
            k,
            &mut q[r * k..(r + 1) * k],
            &mut d[r * nb..(r + 1) * nb],
            &mut s[r * nb..(r + 1) * nb],
        );
    }
    (q, d, s)
}

/// Checks the qmatmul of `dt` compiled for `tier`, or prints why it is skipped (a tier the
/// host cannot execute is reported, never passed silently).
fn check_qmatmul(dt: DType, tier: Tier, n: usize, k: usize, ms: &[usize], seed: u64) {
    if !tier.runs_on(&lpuc_host::Features::detect()) {
        eprintln!(
            "skipped: qmatmul {dt} on tier {}: this host cannot execute it",
            tier.name()
        );
        return;
    }
    let host = Host::at(tier);
    let vnni = host.vnni512();
    let mut r = rng(seed);
    let wf = randv(&mut r, n * k, 1.0);
    let wbytes = lpuc_ir::quant::quantize(dt, &wf).unwrap();
    let wdq = lpuc_ir::quant::dequantize_to_vec(dt, &wbytes).unwrap();
    let packed = pack::pack(dt, &wbytes, n, k).unwrap();
    let bits = pack::packed_bits(dt).unwrap();
    let spec = KernelSpec::QMatmul {
        n,
        k,
        bits,
        vnni,
        m_tile: lpuc_codegen::kernels::QMM_TILE,
    };
    let kq = KernelSpec::Quantize { k };
    let kern = load(
        &module_for(&[spec.clone(), kq.clone()]),
        &host,
        &[spec.symbol(), kq.symbol()],
    )
    .unwrap();
    let f: Qmm = unsafe { std::mem::transmute(kern.addr(&spec.symbol())) };
    let qf: Quant = unsafe { std::mem::transmute(kern.addr(&kq.symbol())) };
    for &m in ms {
        let x = randv(&mut r, m * k, 2.0);
        let (xq, dx, sx) = quant_rows(k, &x);
        // The quantize kernel is bit-identical to its reference.
        let nb = k / 32;
        let (mut q2, mut d2, mut s2) = (vec![0i8; m * k], vec![0f32; m * nb], vec![0f32; m * nb]);
        qf(
            x.as_ptr(),
            q2.as_mut_ptr(),
            d2.as_mut_ptr(),
            s2.as_mut_ptr(),
            0,
            m as i64,
        );
        assert_eq!(q2, xq, "quantized bytes");
        assert_eq!(d2, dx, "block scales");
        assert_eq!(s2, sx, "block sums");
        let mut y = vec![f32::NAN; m * n];
        // Two calls over split group ranges, as two threads would.
        let g = n / 16;
        f(
            packed.as_ptr(),
            xq.as_ptr(),
            dx.as_ptr(),
            sx.as_ptr(),
            y.as_mut_ptr(),
            m as i64,
            0,
            (g / 2) as i64,
        );
        f(
            packed.as_ptr(),
            xq.as_ptr(),
            dx.as_ptr(),
            sx.as_ptr(),
            y.as_mut_ptr(),
            m as i64,
            (g / 2) as i64,
            g as i64,
        );
        let mut yr = vec![0f32; m * n];
        pack::qmatmul_ref(bits, &packed, n, k, &xq, &dx, &sx, m, &mut yr);
        close(
            &y,
            &yr,
            1e-5,
            &format!("{dt} vnni={vnni} m={m} vs packed reference"),
        );
        // Against the unquantized product: the error is the activation rounding only.
        for i in 0..m {
            for row in 0..n {
                let mut exact = 0f64;
                let mut bound = 0f64;
                for j in 0..k {
                    exact += f64::from(wdq[row * k + j]) * f64::from(x[i * k + j]);
                    bound +=
                        f64::from(wdq[row * k + j].abs()) * f64::from(dx[i * nb + j / 32]) * 0.5;
                }
                let got = f64::from(y[i * n + row]);
                assert!(
                    (got - exact).abs() <= bound * 1.2 + 1e-4,
                    "{dt} m={m} row {row}: {got} vs exact {exact}, bound {bound}"
                );
            }
        }
    }
}

#[test]
fn qmatmul_q4_1_every_tier() {
    for t in Tier::ALL {
        check_qmatmul(DType::Q4_1, t, 48, 96, &[1, 3, 4, 9], 1);
    }
}

#[test]
fn qmatmul_q4_0_every_tier() {
    for t in Tier::ALL {
        check_qmatmul(DType::Q4_0, t, 32, 64, &[1, 5], 2);
    }
}

#[test]
fn qmatmul_q8_0_every_tier() {
    for t in Tier::ALL {
        check_qmatmul(DType::Q8_0, t, 32, 128, &[1, 6], 3);
    }
}

#[test]
fn packed_reference_matches_dequantized_weights() {
    // With exact-integer activations (dx = 1), the packed reference is the plain product.
    let (n, k) = (16, 64);
    let mut r = rng(9);
    for dt in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
        let wf = randv(&mut r, n * k, 1.0);
        let wb = lpuc_ir::quant::quantize(dt, &wf).unwrap();
        let wdq = lpuc_ir::quant::dequantize_to_vec(dt, &wb).unwrap();
        let packed = pack::pack(dt, &wb, n, k).unwrap();
        let xq: Vec<i8> = (0..k).map(|_| r.gen_range(-127..=127)).collect();
        let dx = vec![1f32; k / 32];
        let sx: Vec<f32> = xq
            .chunks(32)
            .map(|c| c.iter().map(|&v| f32::from(v)).sum())
            .collect();
        let mut y = vec![0f32; n];
        pack::qmatmul_ref(
            pack::packed_bits(dt).unwrap(),
            &packed,
            n,
            k,
            &xq,
            &dx,
            &sx,
            1,
            &mut y,
        );
        let want: Vec<f32> = (0..n)
            .map(|row| {
                (0..k)
                    .map(|j| f64::from(wdq[row * k + j]) * f64::from(xq[j]))
                    .sum::<f64>() as f32
            })
            .collect();
        close(&y, &want, 1e-5, &format!("{dt} packed reference"));
    }
}

type Rms = extern "C" fn(*const f32, *const f32, *mut f32, i64, i64);
type Bin = extern "C" fn(*const f32, *const f32, *mut f32, i64, i64);

#[test]
fn elementwise_kernels() {
    for host in hosts() {
        let d = 96;
        let specs = [
            KernelSpec::RmsNorm {
                d,
                eps: 1e-5,
                scaled: true,
            },
            KernelSpec::RmsNorm {
                d,
                eps: 1e-5,
                scaled: false,
            },
            KernelSpec::SwiGlu,
            KernelSpec::Add,
        ];
        let syms: Vec<String> = specs.iter().map(|s| s.symbol()).collect();
        let k = load(&module_for(&specs), &host, &syms).unwrap();
        let mut r = rng(11);
        let rows = 5;
        let x = randv(&mut r, rows * d, 3.0);
        let w = randv(&mut r, d, 1.5);
        for (si, scaled) in [(0, true), (1, false)] {
            let f: Rms = unsafe { std::mem::transmute(k.addr(&syms[si])) };
            let mut y = vec![0f32; rows * d];
            f(x.as_ptr(), w.as_ptr(), y.as_mut_ptr(), 0, rows as i64);
            let mut want = vec![0f32; rows * d];
            for rr in 0..rows {
                let row = &x[rr * d..(rr + 1) * d];
                let ms = row
                    .iter()
                    .map(|&a| f64::from(a) * f64::from(a))
                    .sum::<f64>()
                    / d as f64;
                let inv = 1.0 / (ms + 1e-5f64).sqrt();
                for j in 0..d {
                    let s = if scaled { f64::from(w[j]) } else { 1.0 };
                    want[rr * d + j] = (f64::from(row[j]) * inv * s) as f32;
                }
            }
            close(&y, &want, 1e-5, "rms_norm");
        }
        let a = randv(&mut r, 1000, 20.0);
        let b = randv(&mut r, 1000, 2.0);
        let sw: Bin = unsafe { std::mem::transmute(k.addr(&syms[2])) };
        let mut y = vec![0f32; 1000];
        sw(a.as_ptr(), b.as_ptr(), y.as_mut_ptr(), 0, 1000);
        for i in 0..1000 {
            let want = lpuc_ir::interp::silu(a[i]) * b[i];
            assert!(
                (y[i] - want).abs() <= 1e-5 * want.abs().max(1.0),
                "swiglu {i}: {} vs {want}",
                y[i]
            );
        }
        let add: Bin = unsafe { std::mem::transmute(k.addr(&syms[3])) };
        add(a.as_ptr(), b.as_ptr(), y.as_mut_ptr(), 10, 990);
        for i in 10..990 {
            assert_eq!(y[i], a[i] + b[i]);
        }
    }
}

type RopeTab = extern "C" fn(*mut f32, i64, i64);
type Rope = extern "C" fn(*const f32, *mut f32, *const f32, i64);

#[test]
fn rope_matches_interpreter_formula() {
    for host in hosts() {
        let (heads, hd, dims, theta) = (3usize, 16usize, 12u32, 10000f32);
        for neox in [false, true] {
            let specs = [
                KernelSpec::RopeTable { dims, theta },
                KernelSpec::Rope {
                    heads,
                    hd,
                    dims,
                    neox,
                },
            ];
            let syms: Vec<String> = specs.iter().map(|s| s.symbol()).collect();
            let k = load(&module_for(&specs), &host, &syms).unwrap();
            let tabf: RopeTab = unsafe { std::mem::transmute(k.addr(&syms[0])) };
            let ropef: Rope = unsafe { std::mem::transmute(k.addr(&syms[1])) };
            let (s, p) = (5usize, 1000i64);
            let mut tab = vec![0f32; s * dims as usize];
            tabf(tab.as_mut_ptr(), s as i64, p);
            let x = randv(&mut rng(12), s * heads * hd, 2.0);
            let mut y = x.clone();
            ropef(y.as_ptr(), y.as_mut_ptr(), tab.as_ptr(), s as i64); // in place
            let half = dims as usize / 2;
            let mut want = x.clone();
            for (ri, row) in want.chunks_mut(hd).enumerate() {
                let pos = (p as usize + ri / heads) as f64;
                for i in 0..half {
                    let freq = f64::from(theta).powf(-2.0 * i as f64 / f64::from(dims));
                    let (sn, cs) = (pos * freq).sin_cos();
                    let (i0, i1) = if neox {
                        (i, i + half)
                    } else {
                        (2 * i, 2 * i + 1)
                    };
                    let (x0, x1) = (f64::from(row[i0]), f64::from(row[i1]));
                    row[i0] = (x0 * cs - x1 * sn) as f32;
                    row[i1] = (x0 * sn + x1 * cs) as f32;
                }
            }
            close(&y, &want, 1e-6, "rope");
        }
    }
}

/// The interpreter's attention for kernel-layout `q: [s, h, d]` against `k, v: [kvh, t, d]`,
/// returned in the kernel's layout `[s, h, d]`.
#[allow(clippy::too_many_arguments)]
fn reference_attention(
    q: &[f32],
    kf: &[f32],
    vf: &[f32],
    h: usize,
    kvh: usize,
    s: usize,
    t: usize,
    d: usize,
    scale: f32,
) -> Vec<f32> {
    use lpuc_ir::interp::{attention, Tensor};
    let mut qt = vec![0f32; h * s * d];
    for i in 0..s {
        for hh in 0..h {
            qt[(hh * s + i) * d..][..d].copy_from_slice(&q[(i * h + hh) * d..][..d]);
        }
    }
    let rt = attention(
        &Tensor::new(vec![1, h, s, d], qt),
        &Tensor::new(vec![1, kvh, t, d], kf.to_vec()),
        &Tensor::new(vec![1, kvh, t, d], vf.to_vec()),
        scale,
    );
    let mut want = vec![0f32; s * h * d];
    for i in 0..s {
        for hh in 0..h {
            want[(i * h + hh) * d..][..d].copy_from_slice(&rt.data[(hh * s + i) * d..][..d]);
        }
    }
    want
}

type KvApp = extern "C" fn(*const f32, *mut f32, i64, i64, i64);
type Attn = extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i64, i64, i64, i64);

#[test]
fn kv_append_and_flash_attention_match_reference() {
    for host in hosts() {
        let (h, kvh, d, cap) = (6usize, 2usize, 16usize, 200usize);
        for (block, s, p) in [(8usize, 1usize, 37usize), (16, 23, 0), (4, 9, 50)] {
            let specs = [
                KernelSpec::KvAppend {
                    kvh,
                    d,
                    transposed: false,
                    f16: false,
                },
                KernelSpec::KvAppend {
                    kvh,
                    d,
                    transposed: true,
                    f16: false,
                },
                KernelSpec::Attention {
                    h,
                    kvh,
                    d,
                    block,
                    scale: 0.25,
                    k_f16: false,
                    v_f16: false,
                },
            ];
            let syms: Vec<String> = specs.iter().map(|s| s.symbol()).collect();
            let k = load(&module_for(&specs), &host, &syms).unwrap();
            let app: KvApp = unsafe { std::mem::transmute(k.addr(&syms[0])) };
            let app_t: KvApp = unsafe { std::mem::transmute(k.addr(&syms[1])) };
            let att: Attn = unsafe { std::mem::transmute(k.addr(&syms[2])) };
            let mut r = rng(13 + s as u64);
            let t = p + s;
            // Full K/V in [kvh, t, d]; the first p rows are "already cached".
            let kf = randv(&mut r, kvh * t * d, 2.0);
            let vf = randv(&mut r, kvh * t * d, 2.0);
            // K in transposed 16-key tiles, V [kvh, cap, d]. Stale garbage past the live keys
            // must not matter.
            let mut kc = vec![1e30f32; kvh * cap.div_ceil(16) * 16 * d];
            let kt = |hh: usize, j: usize, dd: usize| {
                lpuc_codegen::kernels::k_tile_offset(hh, j, dd, d, cap)
            };
            let mut vc = vec![0f32; kvh * cap * d];
            for hh in 0..kvh {
                for j in 0..p {
                    for dd in 0..d {
                        kc[kt(hh, j, dd)] = kf[(hh * t + j) * d + dd];
                    }
                    vc[(hh * cap + j) * d..][..d].copy_from_slice(&vf[(hh * t + j) * d..][..d]);
                }
            }
            // New rows come in [s, kvh, d].
            let mut knew = vec![0f32; s * kvh * d];
            let mut vnew = vec![0f32; s * kvh * d];
            for i in 0..s {
                for hh in 0..kvh {
                    knew[(i * kvh + hh) * d..][..d]
                        .copy_from_slice(&kf[(hh * t + p + i) * d..][..d]);
                    vnew[(i * kvh + hh) * d..][..d]
                        .copy_from_slice(&vf[(hh * t + p + i) * d..][..d]);
                }
            }
            app_t(
                knew.as_ptr(),
                kc.as_mut_ptr(),
                s as i64,
                p as i64,
                cap as i64,
            );
            app(
                vnew.as_ptr(),
                vc.as_mut_ptr(),
                s as i64,
                p as i64,
                cap as i64,
            );
            for hh in 0..kvh {
                assert_eq!(
                    &vc[hh * cap * d..][..t * d],
                    &vf[hh * t * d..][..t * d],
                    "kv_append"
                );
                for j in 0..t {
                    for dd in 0..d {
                        assert_eq!(
                            kc[kt(hh, j, dd)],
                            kf[(hh * t + j) * d + dd],
                            "transposed kv_append"
                        );
                    }
                }
            }
            let q = randv(&mut r, s * h * d, 2.0);
            let mut o = vec![f32::NAN; s * h * d];
            let rows = (h * s) as i64;
            att(
                q.as_ptr(),
                kc.as_ptr(),
                vc.as_ptr(),
                o.as_mut_ptr(),
                s as i64,
                p as i64,
                0,
                rows / 2,
                cap as i64,
            );
            att(
                q.as_ptr(),
                kc.as_ptr(),
                vc.as_ptr(),
                o.as_mut_ptr(),
                s as i64,
                p as i64,
                rows / 2,
                rows,
                cap as i64,
            );
            let want = reference_attention(&q, &kf, &vf, h, kvh, s, t, d, 0.25);
            close(
                &o,
                &want,
                1e-5,
                &format!("attention block={block} s={s} p={p}"),
            );
        }
    }
}

type KvAppH = extern "C" fn(*const f32, *mut u16, i64, i64, i64);
type AttnH = extern "C" fn(*const f32, *const u16, *const u16, *mut f32, i64, i64, i64, i64, i64);

/// An f16 cache: `kv_append` rounds to nearest even exactly as `half` (and so the
/// interpreter) does, and attention over it equals attention over the rounded values.
#[test]
fn f16_kv_cache_rounds_like_the_interpreter() {
    for host in hosts() {
        let (h, kvh, d, cap, s) = (4usize, 2usize, 16usize, 40usize, 7usize);
        let specs = [
            KernelSpec::KvAppend {
                kvh,
                d,
                transposed: false,
                f16: true,
            },
            KernelSpec::KvAppend {
                kvh,
                d,
                transposed: true,
                f16: true,
            },
            KernelSpec::Attention {
                h,
                kvh,
                d,
                block: 16,
                scale: 0.25,
                k_f16: true,
                v_f16: true,
            },
        ];
        let syms: Vec<String> = specs.iter().map(|s| s.symbol()).collect();
        let k = load(&module_for(&specs), &host, &syms).unwrap();
        let app: KvAppH = unsafe { std::mem::transmute(k.addr(&syms[0])) };
        let app_t: KvAppH = unsafe { std::mem::transmute(k.addr(&syms[1])) };
        let att: AttnH = unsafe { std::mem::transmute(k.addr(&syms[2])) };
        let mut r = rng(77);
        let knew = randv(&mut r, s * kvh * d, 3.0);
        let vnew = randv(&mut r, s * kvh * d, 3.0);
        let mut kc = vec![0u16; kvh * cap.div_ceil(16) * 16 * d];
        let mut vc = vec![0u16; kvh * cap * d];
        app_t(knew.as_ptr(), kc.as_mut_ptr(), s as i64, 0, cap as i64);
        app(vnew.as_ptr(), vc.as_mut_ptr(), s as i64, 0, cap as i64);
        let round = |x: f32| half::f16::from_f32(x);
        let (mut kf, mut vf) = (vec![0f32; kvh * s * d], vec![0f32; kvh * s * d]);
        for i in 0..s {
            for hh in 0..kvh {
                for dd in 0..d {
                    let (kx, vx) = (knew[(i * kvh + hh) * d + dd], vnew[(i * kvh + hh) * d + dd]);
                    let kt = lpuc_codegen::kernels::k_tile_offset(hh, i, dd, d, cap);
                    assert_eq!(kc[kt], round(kx).to_bits(), "K bits at {hh},{i},{dd}");
                    assert_eq!(vc[(hh * cap + i) * d + dd], round(vx).to_bits(), "V bits");
                    kf[(hh * s + i) * d + dd] = round(kx).to_f32();
                    vf[(hh * s + i) * d + dd] = round(vx).to_f32();
                }
            }
        }
        let q = randv(&mut r, s * h * d, 2.0);
        let mut o = vec![f32::NAN; s * h * d];
        att(
            q.as_ptr(),
            kc.as_ptr(),
            vc.as_ptr(),
            o.as_mut_ptr(),
            s as i64,
            0,
            0,
            (h * s) as i64,
            cap as i64,
        );
        let want = reference_attention(&q, &kf, &vf, h, kvh, s, s, d, 0.25);
        close(&o, &want, 1e-5, "attention over f16 caches");
    }
}

type Emb = extern "C" fn(*const u8, *const i32, *mut f32, i64);

#[test]
fn embedding_q8_0_is_exact() {
    for host in hosts() {
        let (v, d) = (20usize, 64usize);
        let spec = KernelSpec::EmbedQ8 { d };
        let k = load(
            &module_for(std::slice::from_ref(&spec)),
            &host,
            &[spec.symbol()],
        )
        .unwrap();
        let f: Emb = unsafe { std::mem::transmute(k.addr(&spec.symbol())) };
        let tab = lpuc_ir::quant::quantize(DType::Q8_0, &randv(&mut rng(14), v * d, 1.0)).unwrap();
        let full = lpuc_ir::quant::dequantize_to_vec(DType::Q8_0, &tab).unwrap();
        let ids = [3i32, 0, 19, 3];
        let mut out = vec![0f32; ids.len() * d];
        f(
            tab.as_ptr(),
            ids.as_ptr(),
            out.as_mut_ptr(),
            ids.len() as i64,
        );
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(
                &out[i * d..(i + 1) * d],
                &full[id as usize * d..(id as usize + 1) * d]
            );
        }
        let _ = f16::ZERO;
    }
}

/// Exact ties: a block whose max is 127·d with d = 1 puts elements at k + 0.5 exactly, and
/// the kernel must round them as the reference does (half away from zero), not to even.
#[test]
fn quantize_kernel_rounds_ties_like_the_reference() {
    for host in hosts() {
        let k = 64;
        let kq = KernelSpec::Quantize { k };
        let kern = load(
            &module_for(std::slice::from_ref(&kq)),
            &host,
            &[kq.symbol()],
        )
        .unwrap();
        let qf: Quant = unsafe { std::mem::transmute(kern.addr(&kq.symbol())) };
        let mut x = vec![0f32; k];
        x[0] = 127.0;
        let ties = [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5];
        x[1..1 + ties.len()].copy_from_slice(&ties);
        // second block: max 127·0.5, ties at 0.25 (→ 0.5 after scaling)
        x[32] = -63.5;
        x[33] = 0.25;
        x[34] = -0.75;
        let (xq, dx, sx) = quant_rows(k, &x);
        assert_eq!(&xq[1..1 + ties.len()], &[1, 2, 3, -1, -2, -3, 127, -127]);
        assert_eq!(&xq[33..35], &[1, -2]);
        let (mut q2, mut d2, mut s2) = (vec![0i8; k], vec![0f32; 2], vec![0f32; 2]);
        qf(
            x.as_ptr(),
            q2.as_mut_ptr(),
            d2.as_mut_ptr(),
            s2.as_mut_ptr(),
            0,
            1,
        );
        assert_eq!(q2, xq, "quantized bytes on exact ties");
        assert_eq!(d2, dx, "block scales");
        assert_eq!(s2, sx, "block sums");
    }
}
