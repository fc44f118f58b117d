//! The chip facts of `shared/groq/MACHINE.md`, pinned against the v1 profile.
//! These are acceptance criteria: if one fails, the model (not the test) is wrong.

use lpuc_targets::groq::cost::{self, MxmDtype};
use lpuc_targets::groq::{MachineModel, ProfileStatus};

fn v1() -> MachineModel {
    MachineModel::v1()
}

#[test]
fn builtin_profiles_load_and_validate() {
    for name in lpuc_targets::groq::builtin_names() {
        let m = MachineModel::builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(m.validate().is_empty(), "{name}: {:?}", m.validate());
    }
    assert_eq!(v1().profile.status, ProfileStatus::Published);
    assert_eq!(
        MachineModel::builtin("v2-whatif").unwrap().profile.status,
        ProfileStatus::WhatIf
    );
}

#[test]
fn full_chip_weight_install_is_under_40_cycles() {
    let m = v1();
    // [R] "all 409,600 weights installed in < 40 cycles": four 320×320 int8 planes,
    // each installing on its own streams at the same time.
    assert_eq!(m.mxm_macs(), 409_600);
    let per_plane = cost::weight_install(&m, 320, 320, MxmDtype::Int8).unwrap();
    assert!(
        per_plane.latency < 40,
        "install took {} cycles",
        per_plane.latency
    );
    assert_eq!(per_plane.latency, 39, "20 issue cycles − 1 + N = 20 skew");
    // The fit is tight: one row per cycle less and the fact is violated.
    let mut slower = m.clone();
    slower.free.install_rows_per_cycle_per_plane.value -= 1;
    assert!(
        cost::weight_install(&slower, 320, 320, MxmDtype::Int8)
            .unwrap()
            .latency
            >= 40
    );
    // Average rate implied by the fact: at least 10,240 B/cycle (MACHINE.md ≈ 9.2 TB/s).
    let p = cost::peaks(&m);
    assert!(p.install_sustained_bytes_per_cycle >= 10_240.0);
    assert!((p.install_sustained_bytes_per_cycle - 409_600.0 / 39.0).abs() < 1e-9);
    assert_eq!(p.install_stream_bytes_per_cycle, 20_480);
    // fp16 weights are two bytes: twice the stream vectors for the same tile.
    let fp16 = cost::weight_install(&m, 320, 320, MxmDtype::Fp16).unwrap();
    assert_eq!(fp16.latency, 40 - 1 + 20);
}

#[test]
fn mxm_int8_peak_is_737_tops() {
    let p = cost::peaks(&v1());
    // 409,600 MACs × 2 ops/MAC × 900 MHz = 737.28e12 exactly (tolerance: float rounding,
    // 1e-9 relative). Against the published "≈ 737–750 TOPS" range: inside it.
    let expect = 409_600.0 * 2.0 * 900e6;
    assert!((p.mxm_int8_ops_per_s - expect).abs() / expect < 1e-9);
    assert!(
        (p.mxm_int8_ops_per_s / 1e12 - 737.0).abs() / 737.0 < 0.001,
        "within 0.1 % of 737"
    );
    assert!((737e12..=750e12).contains(&p.mxm_int8_ops_per_s));
}

#[test]
fn fp16_peak_is_a_quarter_of_int8() {
    let m = v1();
    let p = cost::peaks(&m);
    assert_eq!(p.mxm_fp16_flops_per_s * 4.0, p.mxm_int8_ops_per_s);
    // 184.32 TFLOPS; the product brief's "≈ 188" is 2 % higher (it rounds 750/4).
    assert!((p.mxm_fp16_flops_per_s / 188e12 - 1.0).abs() < 0.02);
    // The streaming primitive agrees: an fp16 vector takes 4 issue cycles.
    let i8 = cost::mxm_stream(&m, 1000, MxmDtype::Int8);
    let f16 = cost::mxm_stream(&m, 1000, MxmDtype::Fp16);
    assert_eq!(f16.occupancy, 4 * i8.occupancy);
}

#[test]
fn one_c2c_hop_is_216_cycles() {
    let m = v1();
    assert_eq!(cost::hop_cycles(&m), 216);
    // ≈ 240 ns at 900 MHz.
    assert!((m.seconds(216) * 1e9 - 240.0).abs() < 0.5);
    // Each extra hop on a path costs exactly one hop latency (cut-through).
    let one = cost::c2c_transfer(&m, 4096, 1, 1).unwrap();
    let two = cost::c2c_transfer(&m, 4096, 1, 2).unwrap();
    assert_eq!(two.latency - one.latency, 216);
    // Link rate inside the published "≈ 14–15 GB/s per link per direction".
    assert!((14e9..=15e9).contains(&m.link_bytes_per_s()));
    // 16 links × 2 directions × 15 GB/s raw = 480 GB/s ([R]); usable is 2.5 % less.
    assert!((cost::peaks(&m).c2c_chip_bytes_per_s - 480e9 * 0.975).abs() < 1.0);
}

#[test]
fn sram_is_220_mib_and_56320_bytes_per_cycle() {
    let m = v1();
    assert_eq!(m.sram_slices(), 88);
    assert_eq!(m.sram_capacity_bytes(), 220 << 20);
    // 230.7 MB in decimal units.
    assert!((m.sram_capacity_bytes() as f64 / 1e6 - 230.7).abs() < 0.05);
    assert_eq!(m.sram_bandwidth_bytes_per_cycle(), 56_320);
    // ≈ 50.7 TB/s at 900 MHz — and not the marketing 80 TB/s.
    let tbs = cost::peaks(&m).sram_bytes_per_s / 1e12;
    assert!((tbs - 50.7).abs() < 0.05, "{tbs}");
    // Reads alone: one per slice per cycle.
    assert_eq!(m.sram_read_bytes_per_cycle(), 28_160);
    assert_eq!(m.sram_usable_bytes(), ((220u64 << 20) as f64 * 0.8) as u64);
}

#[test]
fn chip_structure_matches_machine_md() {
    let m = v1();
    assert_eq!(m.lanes(), 320);
    assert_eq!(m.skew_cycles(), 20);
    assert_eq!(m.mxm_planes(), 4);
    assert_eq!(m.mxm_planes_per_hemisphere(), 2);
    assert_eq!(m.vxm_alus(), 5_120);
    assert_eq!(m.total_queues(), 144);
    assert_eq!(m.rack_chips(), 72);
    assert_eq!(m.slices_west_to_east().len(), 2 * (2 + 1 + 44) + 1);
    // Host model: 10 µs alone is 9,000 cycles.
    assert_eq!(cost::host_transfer(&m, 0).latency, 9_000);
    // 24 GB/s: 24,000 bytes take 1 µs more.
    assert_eq!(cost::host_transfer(&m, 24_000).latency, 9_900);
}

#[test]
fn exactly_three_free_parameters_all_marked_free() {
    let m = v1();
    let free: Vec<_> = m
        .params()
        .into_iter()
        .filter(|r| r.source.starts_with("free:"))
        .collect();
    assert_eq!(free.len(), 3, "{free:?}");
    assert!(free.iter().all(|r| r.path.starts_with("free.")));
}

#[test]
fn every_parameter_has_a_tagged_source() {
    for name in lpuc_targets::groq::builtin_names() {
        let m = MachineModel::builtin(name).unwrap();
        let params = m.params();
        assert!(params.len() >= 45, "{name}: only {} params", params.len());
        for r in &params {
            let in_free = r.path.starts_with("free.");
            lpuc_targets::groq::profile::check_source(&r.source, in_free)
                .unwrap_or_else(|e| panic!("{name} {}: {e}", r.path));
        }
    }
}

#[test]
fn profile_round_trips_through_toml() {
    for name in lpuc_targets::groq::builtin_names() {
        let m = MachineModel::builtin(name).unwrap();
        let text = m.to_toml_string().unwrap();
        let back = MachineModel::from_toml_str(&text, "round-trip").unwrap();
        assert_eq!(m, back, "{name}");
    }
}

#[test]
fn report_lists_every_parameter_with_its_source() {
    let m = v1();
    let text = lpuc_targets::groq::report::render(&m);
    for r in m.params() {
        assert!(text.contains(&r.path), "missing {}", r.path);
        assert!(text.contains(&r.source), "missing source of {}", r.path);
    }
    assert!(text.contains("737.28 TOPS"));
    assert!(text.contains("56,320 B/cycle"));
    assert!(!text.contains("80 TB/s"));
    let whatif = lpuc_targets::groq::report::render(&MachineModel::builtin("v2-whatif").unwrap());
    assert!(whatif.contains("WHAT-IF"));
    assert!(whatif.contains("150 TB/s"), "claims are shown");
}
