//! Cost primitives: exact values where the law is simple, monotonicity everywhere,
//! and errors for hardware the model does not have.

use lpuc_targets::groq::cost::{self, AllReduceAlgo, Cost, CostError, MatmulShape, MxmDtype};
use lpuc_targets::groq::model::{Side, SliceId, SliceKind};
use lpuc_targets::groq::MachineModel;

fn v1() -> MachineModel {
    MachineModel::v1()
}

/// `f` is non-decreasing (latency and occupancy) as its argument walks `xs` upwards.
fn non_decreasing(what: &str, xs: impl IntoIterator<Item = u64>, f: impl Fn(u64) -> Cost) {
    let mut prev: Option<(u64, Cost)> = None;
    for x in xs {
        let c = f(x);
        if let Some((px, p)) = prev {
            assert!(
                c.latency >= p.latency && c.occupancy >= p.occupancy,
                "{what}: f({x}) = {c:?} < f({px}) = {p:?}"
            );
        }
        prev = Some((x, c));
    }
}

/// `f` is non-increasing as its argument (a resource count) walks `xs` upwards.
fn non_increasing(what: &str, xs: impl IntoIterator<Item = u64>, f: impl Fn(u64) -> Cost) {
    let mut prev: Option<(u64, Cost)> = None;
    for x in xs {
        let c = f(x);
        if let Some((px, p)) = prev {
            assert!(
                c.latency <= p.latency && c.occupancy <= p.occupancy,
                "{what}: f({x}) = {c:?} > f({px}) = {p:?}"
            );
        }
        prev = Some((x, c));
    }
}

fn sizes() -> impl Iterator<Item = u64> + Clone {
    (0..200u64)
        .chain((200..100_000).step_by(997))
        .chain([1 << 20, 1 << 26])
}

#[test]
fn timing_law_for_a_single_vector_is_eq4() {
    let m = v1();
    // T = N + d_func for one vector (δ excluded): 20 + 4.
    assert_eq!(cost::mxm_stream(&m, 1, MxmDtype::Int8).latency, 24);
    assert_eq!(cost::vxm_elementwise(&m, 320, 1).latency, 24);
    assert_eq!(cost::sxm_shift(&m, 1).latency, 24);
    assert_eq!(cost::mem_read(&m, 320, 1).unwrap().latency, 24);
    // v vectors: the last lands v − 1 cycles later.
    assert_eq!(cost::mxm_stream(&m, 100, MxmDtype::Int8).latency, 99 + 24);
    assert_eq!(cost::mxm_stream(&m, 0, MxmDtype::Int8), Cost::ZERO);
}

#[test]
fn weight_install_is_monotone_and_bounded_by_the_plane() {
    let m = v1();
    for dtype in [MxmDtype::Int8, MxmDtype::Fp16] {
        non_decreasing("install rows", 0..=320, |r| {
            cost::weight_install(&m, r, 320, dtype).unwrap()
        });
        non_decreasing("install cols", 0..=320, |c| {
            cost::weight_install(&m, 320, c, dtype).unwrap()
        });
    }
    for (r, c) in [(1, 1), (16, 320), (320, 160), (320, 320)] {
        let i8 = cost::weight_install(&m, r, c, MxmDtype::Int8).unwrap();
        let f16 = cost::weight_install(&m, r, c, MxmDtype::Fp16).unwrap();
        assert!(f16.latency >= i8.latency);
    }
    // One 16-row slab is one issue cycle: only the skew remains.
    assert_eq!(
        cost::weight_install(&m, 16, 320, MxmDtype::Int8)
            .unwrap()
            .latency,
        20
    );
    assert!(matches!(
        cost::weight_install(&m, 321, 320, MxmDtype::Int8),
        Err(CostError::TileTooLarge { .. })
    ));
}

#[test]
fn mxm_matmul_exact_gemv_and_monotone() {
    let m = v1();
    // Batch-1 decode GEMV, 8192×8192 int8 on 4 planes: 26 N tiles over 4 planes → 7 per
    // plane × 26 K tiles = 182 installs per plane; each 39 cycles, one activation vector
    // each, so installs bind: 39 + 181·39 + (0 + 20 + 4).
    let g = cost::mxm_matmul(
        &m,
        MatmulShape {
            m: 1,
            k: 8192,
            n: 8192,
        },
        MxmDtype::Int8,
        4,
    )
    .unwrap();
    assert_eq!(
        (g.k_tiles, g.n_tiles, g.planes_used, g.tiles_per_plane),
        (26, 26, 4, 182)
    );
    assert_eq!(g.cost.latency, 39 * 182 + 24);
    // Large M: compute binds and installs hide behind it (double buffering).
    let big = cost::mxm_matmul(
        &m,
        MatmulShape {
            m: 10_000,
            k: 320,
            n: 320,
        },
        MxmDtype::Int8,
        1,
    )
    .unwrap();
    assert_eq!(big.cost.latency, 39 + 9_999 + 24);
    // A single weight buffer cannot hide the install.
    let mut single = m.clone();
    single.mxm.weight_buffers.value = 1;
    let s = cost::mxm_matmul(
        &single,
        MatmulShape {
            m: 1,
            k: 8192,
            n: 8192,
        },
        MxmDtype::Int8,
        4,
    )
    .unwrap();
    assert!(s.cost.latency > g.cost.latency);

    let shape = |mm, k, n| MatmulShape { m: mm, k, n };
    for dtype in [MxmDtype::Int8, MxmDtype::Fp16] {
        let f = |s: MatmulShape, p: u64| cost::mxm_matmul(&m, s, dtype, p).unwrap().cost;
        non_decreasing("matmul M", (0..64).chain([500, 5_000]), |x| {
            f(shape(x, 1024, 1024), 4)
        });
        non_decreasing("matmul K", (0..3000).step_by(37), |x| {
            f(shape(8, x, 1024), 4)
        });
        non_decreasing("matmul N", (0..3000).step_by(37), |x| {
            f(shape(8, 1024, x), 4)
        });
        non_increasing("matmul planes", 1..=4, |p| f(shape(8, 4096, 4096), p));
        assert!(
            f(shape(64, 4096, 4096), 4).latency
                >= cost::mxm_matmul(&m, shape(64, 4096, 4096), MxmDtype::Int8, 4)
                    .unwrap()
                    .cost
                    .latency
        );
    }
    assert!(cost::mxm_matmul(&m, shape(1, 1, 1), MxmDtype::Int8, 0).is_err());
    assert!(cost::mxm_matmul(&m, shape(1, 1, 1), MxmDtype::Int8, 5).is_err());
}

#[test]
fn vxm_and_int4_unpack_are_monotone() {
    let m = v1();
    non_decreasing("vxm elements", sizes(), |n| cost::vxm_elementwise(&m, n, 3));
    non_decreasing("vxm ops", 0..64, |o| cost::vxm_elementwise(&m, 100_000, o));
    non_increasing("vxm alus", 1..=16, |a| {
        cost::vxm_elementwise_on(&m, 100_000, 5, a).unwrap()
    });
    assert!(cost::vxm_elementwise_on(&m, 1, 1, 0).is_err());
    assert!(cost::vxm_elementwise_on(&m, 1, 1, 17).is_err());
    // 5,120 ALUs: 16 vectors × 1 op in one issue cycle.
    assert_eq!(cost::vxm_elementwise(&m, 16 * 320, 1).occupancy, 1);

    non_decreasing("int4 unpack", sizes(), |n| cost::int4_unpack(&m, n, false));
    non_decreasing("int4 unpack+scale", sizes(), |n| {
        cost::int4_unpack(&m, n, true)
    });
    for n in [1u64, 320, 4096, 1 << 20] {
        assert!(cost::int4_unpack(&m, n, true).latency >= cost::int4_unpack(&m, n, false).latency);
    }
    // ≈ 3 ALU ops per packed byte: 1 MiB packed = 3,277 vectors × 3 / 16 ALUs.
    assert_eq!(
        cost::int4_unpack(&m, 1 << 20, false).occupancy,
        (3277u64 * 3).div_ceil(16)
    );
}

#[test]
fn sxm_is_monotone() {
    let m = v1();
    non_decreasing("sxm shift", sizes(), |v| cost::sxm_shift(&m, v));
    non_decreasing("sxm transpose rows", 0..700, |r| {
        cost::sxm_transpose(&m, r, 320)
    });
    non_decreasing("sxm transpose cols", 0..700, |c| {
        cost::sxm_transpose(&m, 320, c)
    });
    // A 16×16 block waits for all 16 inputs before the first output.
    assert_eq!(
        cost::sxm_transpose(&m, 16, 16).latency,
        cost::sxm_shift(&m, 16).latency + 15
    );
}

#[test]
fn mem_is_monotone_in_bytes_and_slices() {
    let m = v1();
    non_decreasing("mem read bytes", sizes(), |n| {
        cost::mem_read(&m, n, 8).unwrap()
    });
    non_decreasing("mem write bytes", sizes(), |n| {
        cost::mem_write(&m, n, 8).unwrap()
    });
    non_increasing("mem read slices", 1..=88, |s| {
        cost::mem_read(&m, 1 << 20, s).unwrap()
    });
    non_increasing("mem write slices", 1..=88, |s| {
        cost::mem_write(&m, 1 << 20, s).unwrap()
    });
    // All 88 slices read one vector each per cycle: 28,160 B/cycle.
    assert_eq!(cost::mem_read(&m, 28_160 * 10, 88).unwrap().occupancy, 10);
    assert!(cost::mem_read(&m, 1, 0).is_err());
    assert!(cost::mem_read(&m, 1, 89).is_err());
}

#[test]
fn stream_distance_follows_the_layout() {
    let m = v1();
    let id = |kind, side, index| SliceId { kind, side, index };
    let w_mxm0 = id(SliceKind::Mxm, Side::West, 0);
    let e_mxm0 = id(SliceKind::Mxm, Side::East, 0);
    let vxm = id(SliceKind::Vxm, Side::Center, 0);
    // Edge to edge: 95 slices, 94 hops; the VXM sits in the middle.
    assert_eq!(cost::stream_distance(&m, w_mxm0, e_mxm0).unwrap(), 94);
    assert_eq!(cost::stream_distance(&m, w_mxm0, vxm).unwrap(), 47);
    assert_eq!(cost::stream_distance(&m, vxm, e_mxm0).unwrap(), 47);
    // West MEM 0 (outermost MEM) sits next to the SXM, MEM 43 next to the VXM.
    let w_sxm = id(SliceKind::Sxm, Side::West, 0);
    assert_eq!(
        cost::stream_distance(&m, w_sxm, id(SliceKind::Mem, Side::West, 0)).unwrap(),
        1
    );
    assert_eq!(
        cost::stream_distance(&m, vxm, id(SliceKind::Mem, Side::West, 43)).unwrap(),
        1
    );
    assert_eq!(
        cost::stream_distance(&m, vxm, id(SliceKind::Mem, Side::East, 43)).unwrap(),
        1
    );
    assert!(cost::stream_distance(&m, vxm, id(SliceKind::Mem, Side::West, 44)).is_err());
}

#[test]
fn c2c_is_monotone_and_checks_links_and_hops() {
    let m = v1();
    non_decreasing("c2c bytes", sizes(), |n| {
        cost::c2c_transfer(&m, n, 1, 1).unwrap()
    });
    non_decreasing("c2c hops", 1..=5, |h| {
        cost::c2c_transfer(&m, 4096, 1, h).unwrap()
    });
    non_increasing("c2c links", 1..=16, |l| {
        cost::c2c_transfer(&m, 1 << 20, l, 1).unwrap()
    });
    assert!(cost::c2c_transfer(&m, 1, 0, 1).is_err());
    assert!(cost::c2c_transfer(&m, 1, 17, 1).is_err());
    assert!(cost::c2c_transfer(&m, 1, 1, 0).is_err());
    assert!(cost::c2c_transfer(&m, 1, 1, 6).is_err(), "≤ 5 hops");
    // A 320-byte vector: one hop + 20 cycles on a 16.25 B/cycle link.
    assert_eq!(cost::c2c_transfer(&m, 320, 1, 1).unwrap().latency, 216 + 20);
    assert_eq!(
        cost::stage_handoff(&m, 8192, 1).unwrap(),
        cost::c2c_transfer(&m, 8192, 1, 1).unwrap()
    );
    non_decreasing("handoff bytes", sizes(), |n| {
        cost::stage_handoff(&m, n, 2).unwrap()
    });
}

#[test]
fn allreduce_picks_the_cheapest_and_is_monotone() {
    let m = v1();
    for bytes in [2u64, 64, 1024, 16 << 10, 1 << 20, 16 << 20] {
        for k in 2..=8 {
            let ar = cost::allreduce(&m, bytes, k, 2).unwrap();
            let min = ar.candidates.iter().map(|(_, c)| c.latency).min().unwrap();
            assert_eq!(ar.cost.latency, min);
            assert_ne!(
                ar.algo,
                AllReduceAlgo::Ring,
                "a ring never wins in a fully connected node"
            );
        }
    }
    // Small messages (decode activations): one hop beats two.
    assert_eq!(
        cost::allreduce(&m, 256, 8, 2).unwrap().algo,
        AllReduceAlgo::OneShot
    );
    // Large ones: n/k per link beats n.
    assert_eq!(
        cost::allreduce(&m, 1 << 20, 8, 2).unwrap().algo,
        AllReduceAlgo::TwoPhase
    );
    // One chip: nothing to do.
    assert_eq!(cost::allreduce(&m, 1 << 20, 1, 2).unwrap().cost, Cost::ZERO);
    for k in 2..=8 {
        non_decreasing("allreduce bytes", sizes(), |n| {
            cost::allreduce(&m, n, k, 2).unwrap().cost
        });
    }
    // At least one hop, however small.
    assert!(cost::allreduce(&m, 2, 8, 2).unwrap().cost.latency >= 216);
    assert!(cost::allreduce(&m, 1, 9, 2).is_err(), "beyond one node");
}

#[test]
fn host_transfer_is_monotone() {
    let m = v1();
    non_decreasing("host bytes", sizes(), |n| cost::host_transfer(&m, n));
}
