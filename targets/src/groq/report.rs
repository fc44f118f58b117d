//! The machine model as a plain-text table with sources (`lpuc sim --machine`).
//!
//! Three parts: every stored parameter with its source, the derived quantities with the
//! formula that produces them (so a reader can check the arithmetic), and — for what-if
//! profiles — published claims the model does not consume.

use std::fmt::Write as _;

use super::cost::{self, AllReduceAlgo};
use super::model::{MachineModel, ProfileStatus};
use super::profile::{group_thousands, ParamRow};

/// Render `m` as a table. Pure: the caller decides where it goes.
pub fn render(m: &MachineModel) -> String {
    let mut out = String::new();
    let status = match m.profile.status {
        ProfileStatus::Published => "published",
        ProfileStatus::WhatIf => "WHAT-IF (not a prediction for a real chip)",
    };
    let _ = writeln!(
        out,
        "machine profile {} — {}",
        m.profile.name, m.profile.title
    );
    let _ = writeln!(out, "status: {status}");
    let _ = writeln!(out, "{}", m.profile.summary);
    let _ = writeln!(
        out,
        "tags: [P] primary  [R] review of ISCA'20  [S] secondary  [U] uncertain  [D] derived; free: = free parameter"
    );

    let (params, claims): (Vec<ParamRow>, Vec<ParamRow>) = m
        .params()
        .into_iter()
        .partition(|r| !r.path.starts_with("claims["));
    out.push('\n');
    table(
        &mut out,
        ["parameter", "value", "source"],
        &rows_of(&params),
    );

    let p = cost::peaks(m);
    let n = m.skew_cycles();
    let derived: Vec<[String; 3]> = vec![
        row("lanes", int(m.lanes()), "superlanes × lanes_per_superlane"),
        row(
            "N (skew, Eq. 4)",
            format!("{n} cycles"),
            "superlanes × superlane_hop_cycles",
        ),
        row(
            "MEM slices",
            int(m.sram_slices()),
            "layout, both hemispheres",
        ),
        row(
            "MXM planes",
            int(m.mxm_planes()),
            "layout, one plane per MXM slice",
        ),
        row(
            "MXM MACs",
            int(m.mxm_macs()),
            "planes × plane_rows × plane_cols",
        ),
        row("VXM ALUs", int(m.vxm_alus()), "alus_per_lane × lanes"),
        row(
            "instruction queues",
            int(m.total_queues()),
            "mem + mxm + sxm + vxm",
        ),
        row(
            "SRAM capacity",
            format!(
                "{} B = {:.1} MiB = {:.1} MB",
                int(p.sram_capacity_bytes),
                p.sram_capacity_bytes as f64 / (1u64 << 20) as f64,
                p.sram_capacity_bytes as f64 / 1e6
            ),
            "MEM slices × slice_bytes",
        ),
        row(
            "SRAM usable",
            format!("{} B", int(p.sram_usable_bytes)),
            "capacity × free.usable_sram_fraction",
        ),
        row(
            "SRAM bandwidth",
            format!(
                "{} B/cycle = {:.1} TB/s",
                int(p.sram_bytes_per_cycle),
                p.sram_bytes_per_s / 1e12
            ),
            "MEM slices × banks × bank_access_bytes × clock (reads + writes)",
        ),
        row(
            "MXM int8 peak",
            format!("{:.2} TOPS", p.mxm_int8_ops_per_s / 1e12),
            "MACs × ops_per_mac × clock",
        ),
        row(
            "MXM fp16 peak",
            format!("{:.2} TFLOPS", p.mxm_fp16_flops_per_s / 1e12),
            "int8 peak / fp16_rate_divisor",
        ),
        row(
            "full-chip weight install",
            format!("{} cycles", p.full_install_cycles),
            "⌈320 / install_rows_per_cycle_per_plane⌉ − 1 + N (published: < 40)",
        ),
        row(
            "install, sustained",
            format!(
                "{} B/cycle = {:.2} TB/s",
                int(p.install_sustained_bytes_per_cycle.round() as u64),
                p.install_sustained_bytes_per_cycle * m.clock_hz() / 1e12
            ),
            "MACs (1 B each) / full-chip install cycles; fills not overlapped",
        ),
        row(
            "install, streaming peak",
            format!("{} B/cycle", int(p.install_stream_bytes_per_cycle)),
            "planes × install_rows_per_cycle_per_plane × vector_bytes",
        ),
        row(
            "VXM peak",
            format!("{:.2} T ALU-ops/s", p.vxm_alu_ops_per_s / 1e12),
            "ALUs × clock",
        ),
        row(
            "C2C per link per direction",
            format!(
                "{:.3} GB/s = {:.2} B/cycle",
                p.c2c_link_bytes_per_s / 1e9,
                m.link_bytes_per_cycle()
            ),
            "lanes_per_link × lane_gbit_per_s / 8 × (1 − network_overhead)",
        ),
        row(
            "C2C per chip",
            format!("{:.0} GB/s", p.c2c_chip_bytes_per_s / 1e9),
            "links × 2 directions",
        ),
        row(
            "C2C hop",
            format!(
                "{} cycles = {:.0} ns",
                cost::hop_cycles(m),
                m.seconds(cost::hop_cycles(m)) * 1e9
            ),
            "hop_latency_cycles / clock",
        ),
        row("rack chips", int(m.rack_chips()), "rack_nodes × node_chips"),
        row(
            "host 1 MiB transfer",
            format!("{} cycles", int(cost::host_transfer(m, 1 << 20).latency)),
            "bytes / pcie_bytes_per_s + pcie_latency_s",
        ),
        row(
            "8-chip all-reduce, 8 KiB",
            allreduce_summary(m, 8 << 10),
            "cheapest of one-shot / two-phase / ring",
        ),
    ];
    out.push('\n');
    table(&mut out, ["derived", "value", "how"], &derived);

    if !claims.is_empty() {
        out.push('\n');
        table(
            &mut out,
            ["published claim (not consumed)", "value", "source"],
            &rows_of(&claims),
        );
    }
    out
}

fn allreduce_summary(m: &MachineModel, bytes: u64) -> String {
    match cost::allreduce(m, bytes, m.system.node_chips.get(), 2) {
        Ok(ar) => {
            let name = match ar.algo {
                AllReduceAlgo::Ring => "ring",
                AllReduceAlgo::TwoPhase => "two-phase",
                AllReduceAlgo::OneShot => "one-shot",
            };
            format!("{} cycles ({name})", ar.cost.latency)
        }
        Err(e) => format!("n/a ({e})"),
    }
}

fn int(v: u64) -> String {
    group_thousands(v.min(i64::MAX as u64) as i64)
}

fn row(a: &str, b: String, c: &str) -> [String; 3] {
    [a.to_string(), b, c.to_string()]
}

fn rows_of(params: &[ParamRow]) -> Vec<[String; 3]> {
    params
        .iter()
        .map(|r| [r.path.clone(), r.value.clone(), r.source.clone()])
        .collect()
}

/// Two padded columns and a free-running last column (sources are long prose).
fn table(out: &mut String, header: [&str; 3], rows: &[[String; 3]]) {
    let w0 = rows
        .iter()
        .map(|r| r[0].chars().count())
        .chain([header[0].len()])
        .max()
        .unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r[1].chars().count())
        .chain([header[1].len()])
        .max()
        .unwrap_or(0)
        .min(40);
    let line = |out: &mut String, a: &str, b: &str, c: &str| {
        let _ = writeln!(out, "{a:<w0$}  {b:<w1$}  {c}");
    };
    line(out, header[0], header[1], header[2]);
    line(
        out,
        &"-".repeat(w0),
        &"-".repeat(w1),
        &"-".repeat(header[2].len().max(6)),
    );
    for r in rows {
        line(out, &r[0], &r[1], &r[2]);
    }
}
