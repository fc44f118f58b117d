//! The machine model as data: every number the Groq target uses, each with its source.
//!
//! The struct mirrors the profile file (`targets/profiles/*.toml`) one to one, so the
//! file is the documentation and the code cannot silently disagree with it. Only
//! *independent* published numbers are stored; everything that follows from them
//! (lane count, plane count, SRAM capacity and bandwidth, peaks, link bandwidth) is a
//! method here, so an edited profile can never contain two numbers that contradict
//! each other.
//!
//! Invariant kept by [`MachineModel::validate`]: every parameter is in range and the
//! structural facts agree (lanes = vector bytes, one MEM queue per MEM slice, the install
//! streams of one hemisphere fit in one stream direction, a node is fully connected).
//! Source tags are checked by the loader (`profile.rs`), which sees every field.

use serde::{Deserialize, Serialize};

/// One parameter: its value and where the value comes from.
///
/// `source` starts with a MACHINE.md tag (`[P]`, `[R]`, `[S]`, `[U]`, `[D]`, combined as
/// `[S/U]`), with `assumption:` and a reason, or — only in [`FreeParams`] — `free:` and how
/// the value was set. The loader rejects anything else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param<T> {
    pub value: T,
    pub source: String,
}

impl<T: Copy> Param<T> {
    /// The value (parameters are small `Copy` numbers almost everywhere).
    pub fn get(&self) -> T {
        self.value
    }
}

/// What kind of profile this is: built from published numbers, or a what-if.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileStatus {
    Published,
    WhatIf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileInfo {
    pub name: String,
    pub title: String,
    pub status: ProfileStatus,
    pub summary: String,
}

/// Chip-wide geometry and the two clocks of the timing law (instruction skew, stream hop).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chip {
    pub clock_hz: Param<u64>,
    pub hemispheres: Param<u64>,
    pub superlanes: Param<u64>,
    pub lanes_per_superlane: Param<u64>,
    pub vector_bytes: Param<u64>,
    pub vector_length_step: Param<u64>,
    /// Cycles for an instruction to move from one superlane to the next (the skew).
    pub superlane_hop_cycles: Param<u64>,
    pub streams_per_direction: Param<u64>,
    /// Cycles for a stream value to advance one slice (δ per slice in Eq. 4).
    pub stream_hop_cycles: Param<u64>,
}

/// A functional slice kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SliceKind {
    Mem,
    Mxm,
    Sxm,
    Vxm,
}

impl SliceKind {
    pub fn name(self) -> &'static str {
        match self {
            SliceKind::Mem => "MEM",
            SliceKind::Mxm => "MXM",
            SliceKind::Sxm => "SXM",
            SliceKind::Vxm => "VXM",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceGroup {
    pub kind: SliceKind,
    pub count: u64,
}

/// Slice order. The west hemisphere is `hemisphere_outside_in` from the west edge, then
/// `center`, then the east hemisphere mirrored, so stream distances are symmetric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub hemisphere_outside_in: Param<Vec<SliceGroup>>,
    pub center: Param<Vec<SliceGroup>>,
}

/// Instruction queues per unit kind (the ICU feeds each in order; timing is static).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queues {
    pub mem: Param<u64>,
    pub mxm: Param<u64>,
    pub sxm: Param<u64>,
    pub vxm: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sram {
    pub slice_bytes: Param<u64>,
    pub banks_per_slice: Param<u64>,
    pub bank_access_bytes: Param<u64>,
    pub reads_per_slice_per_cycle: Param<u64>,
    pub writes_per_slice_per_cycle: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mxm {
    pub plane_rows: Param<u64>,
    pub plane_cols: Param<u64>,
    pub ops_per_mac: Param<u64>,
    pub fp16_rate_divisor: Param<u64>,
    pub activation_vectors_per_cycle: Param<u64>,
    pub weight_buffers: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vxm {
    pub alus_per_lane: Param<u64>,
    pub int4_unpack_ops_per_packed_byte: Param<u64>,
    pub scale_ops_per_element: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sxm {
    pub transpose_block: Param<u64>,
    pub vectors_per_cycle: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct C2c {
    pub links: Param<u64>,
    pub lanes_per_link: Param<u64>,
    pub lane_gbit_per_s: Param<f64>,
    /// Fraction of raw link bandwidth lost to the scheduled network's framing.
    pub network_overhead: Param<f64>,
    pub hop_latency_cycles: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub node_chips: Param<u64>,
    pub node_local_links_per_chip: Param<u64>,
    pub global_links_per_chip: Param<u64>,
    pub rack_nodes: Param<u64>,
    pub rack_spare_nodes: Param<u64>,
    pub max_chips: Param<u64>,
    pub max_hops: Param<u64>,
    pub max_end_to_end_ns: Param<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub pcie_bytes_per_s: Param<f64>,
    pub pcie_latency_s: Param<f64>,
}

/// The free parameters — the only numbers not read off a publication. There are exactly
/// three, by construction (this struct); see the module docs of `groq` for how each was set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeParams {
    /// Weight rows (320-byte vectors) one plane accepts per cycle during install.
    pub install_rows_per_cycle_per_plane: Param<u64>,
    /// Functional-unit latency `d_func` of Eq. 4 for MEM, MXM compute, VXM and SXM.
    pub d_func_cycles: Param<u64>,
    /// Share of SRAM the partitioner may fill with weights and KV cache.
    pub usable_sram_fraction: Param<f64>,
}

/// A published headline number the model does not consume (e.g. for a what-if chip whose
/// microarchitecture is unpublished). Printed by the report so readers see it, and why
/// it is not used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    pub what: String,
    pub value: String,
    pub source: String,
}

/// The whole machine model. Load one with [`MachineModel::v1`], [`MachineModel::builtin`],
/// [`MachineModel::load`] or [`MachineModel::from_toml_str`] (see `profile.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineModel {
    pub profile: ProfileInfo,
    pub chip: Chip,
    pub layout: Layout,
    pub queues: Queues,
    pub sram: Sram,
    pub mxm: Mxm,
    pub vxm: Vxm,
    pub sxm: Sxm,
    pub c2c: C2c,
    pub system: System,
    pub host: Host,
    pub free: FreeParams,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
}

/// Which side of the chip a slice is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    West,
    Center,
    East,
}

/// One physical slice: its kind, side, and its index among slices of that kind on that
/// side counted from the outside edge inwards (so West MXM 0 mirrors East MXM 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SliceId {
    pub kind: SliceKind,
    pub side: Side,
    pub index: u64,
}

/// A structural or range error found by [`MachineModel::validate`]: the dotted field
/// path (`chip.superlanes`) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelIssue {
    pub field: String,
    pub reason: String,
}

impl MachineModel {
    // ---- derived geometry ------------------------------------------------------------

    /// Lanes across the chip (20 × 16 = 320 on v1).
    pub fn lanes(&self) -> u64 {
        self.chip.superlanes.get() * self.chip.lanes_per_superlane.get()
    }

    /// `N` of Eq. 4: cycles for an instruction to reach every superlane of a slice.
    pub fn skew_cycles(&self) -> u64 {
        self.chip.superlanes.get() * self.chip.superlane_hop_cycles.get()
    }

    /// Slices of `kind` across the whole chip (both hemispheres plus the centre).
    pub fn slice_count(&self, kind: SliceKind) -> u64 {
        let per_side: u64 = count_of(&self.layout.hemisphere_outside_in.value, kind);
        per_side * self.chip.hemispheres.get() + count_of(&self.layout.center.value, kind)
    }

    /// MEM slices (88 on v1); also the SRAM slice count.
    pub fn sram_slices(&self) -> u64 {
        self.slice_count(SliceKind::Mem)
    }

    /// MXM planes (4 on v1): one plane per MXM slice.
    pub fn mxm_planes(&self) -> u64 {
        self.slice_count(SliceKind::Mxm)
    }

    /// MXM planes in one hemisphere; they share that hemisphere's outward streams.
    pub fn mxm_planes_per_hemisphere(&self) -> u64 {
        count_of(&self.layout.hemisphere_outside_in.value, SliceKind::Mxm)
    }

    /// MACs per plane (320 × 320 = 102,400 on v1).
    pub fn plane_macs(&self) -> u64 {
        self.mxm.plane_rows.get() * self.mxm.plane_cols.get()
    }

    /// MACs on the chip (409,600 on v1).
    pub fn mxm_macs(&self) -> u64 {
        self.plane_macs() * self.mxm_planes()
    }

    /// VXM ALUs on the chip (16 × 320 = 5,120 on v1).
    pub fn vxm_alus(&self) -> u64 {
        self.vxm.alus_per_lane.get() * self.lanes() * self.slice_count(SliceKind::Vxm)
    }

    /// Total instruction queues (144 on v1).
    pub fn total_queues(&self) -> u64 {
        self.queues.mem.get()
            + self.queues.mxm.get()
            + self.queues.sxm.get()
            + self.queues.vxm.get()
    }

    /// Chips in a rack, spare node included (9 × 8 = 72 on v1).
    pub fn rack_chips(&self) -> u64 {
        self.system.rack_nodes.get() * self.system.node_chips.get()
    }

    // ---- derived memory --------------------------------------------------------------

    /// SRAM bytes on one chip (88 × 2.5 MiB = 220 MiB on v1).
    pub fn sram_capacity_bytes(&self) -> u64 {
        self.sram_slices() * self.sram.slice_bytes.get()
    }

    /// SRAM bytes the partitioner may plan with (capacity × the free usable fraction).
    pub fn sram_usable_bytes(&self) -> u64 {
        (self.sram_capacity_bytes() as f64 * self.free.usable_sram_fraction.get()).floor() as u64
    }

    /// Peak SRAM bytes per cycle, reads and writes together: every bank of every slice
    /// moves one 320-byte vector (88 × 2 × 320 = 56,320 on v1). Reads alone are half
    /// of it, because the ports are one read + one write per slice.
    pub fn sram_bandwidth_bytes_per_cycle(&self) -> u64 {
        self.sram_slices() * self.sram.banks_per_slice.get() * self.sram.bank_access_bytes.get()
    }

    /// Peak SRAM read bytes per cycle (one read per slice per cycle).
    pub fn sram_read_bytes_per_cycle(&self) -> u64 {
        self.sram_slices()
            * self.sram.reads_per_slice_per_cycle.get()
            * self.sram.bank_access_bytes.get()
    }

    // ---- derived links ---------------------------------------------------------------

    /// Usable bytes per second per C2C link per direction: lanes × lane rate, less the
    /// scheduled network's overhead (4 × 30 Gb/s = 15 GB/s raw → 14.625 GB/s on v1,
    /// inside the published "≈ 14–15 GB/s").
    pub fn link_bytes_per_s(&self) -> f64 {
        let raw = self.c2c.lanes_per_link.get() as f64 * self.c2c.lane_gbit_per_s.get() * 1e9 / 8.0;
        raw * (1.0 - self.c2c.network_overhead.get())
    }

    /// [`Self::link_bytes_per_s`] per chip clock cycle (16.25 B/cycle on v1).
    pub fn link_bytes_per_cycle(&self) -> f64 {
        self.link_bytes_per_s() / self.clock_hz()
    }

    /// Clock in Hz as a float, for unit conversions.
    pub fn clock_hz(&self) -> f64 {
        self.chip.clock_hz.get() as f64
    }

    /// Seconds → whole cycles (rounded up: a partial cycle is still a cycle). Values
    /// within float noise of a whole cycle count as that cycle, so that e.g. 10 µs is
    /// 9,000 cycles and not 9,001.
    pub fn cycles_from_seconds(&self, seconds: f64) -> u64 {
        let x = seconds * self.clock_hz();
        let nearest = x.round();
        if (x - nearest).abs() <= 1e-9 * nearest.max(1.0) {
            nearest.max(0.0) as u64
        } else {
            x.ceil().max(0.0) as u64
        }
    }

    /// Cycles → seconds.
    pub fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / self.clock_hz()
    }

    // ---- layout ----------------------------------------------------------------------

    /// Every slice from the west edge to the east edge, in physical order.
    pub fn slices_west_to_east(&self) -> Vec<SliceId> {
        let side_slices = |side: Side, groups: &[SliceGroup]| {
            let mut seen = std::collections::HashMap::new();
            let mut out = Vec::new();
            for g in groups {
                for _ in 0..g.count {
                    let idx = seen.entry(g.kind).or_insert(0u64);
                    out.push(SliceId {
                        kind: g.kind,
                        side,
                        index: *idx,
                    });
                    *idx += 1;
                }
            }
            out
        };
        let west = side_slices(Side::West, &self.layout.hemisphere_outside_in.value);
        let center = side_slices(Side::Center, &self.layout.center.value);
        let mut east = side_slices(Side::East, &self.layout.hemisphere_outside_in.value);
        east.reverse();
        // `validate` insists on two mirrored hemispheres, so west + centre + east is all.
        let mut all = west;
        all.extend(center);
        all.extend(east);
        all
    }

    /// Physical position of a slice (0 = west edge), or `None` if the chip has no such slice.
    pub fn slice_position(&self, id: SliceId) -> Option<u64> {
        self.slices_west_to_east()
            .iter()
            .position(|s| *s == id)
            .map(|p| p as u64)
    }

    // ---- validation ------------------------------------------------------------------

    /// Range and consistency checks. Returns every problem found, each naming its field.
    pub fn validate(&self) -> Vec<ModelIssue> {
        let mut issues = Vec::new();
        let mut need = |ok: bool, field: &str, reason: String| {
            if !ok {
                issues.push(ModelIssue {
                    field: field.to_string(),
                    reason,
                });
            }
        };
        // Every count, size and rate below is a divisor or a multiplier somewhere: zero
        // would make a primitive divide by zero or claim an impossible free lunch.
        let positive: [(&str, u64); 37] = [
            ("chip.clock_hz", self.chip.clock_hz.get()),
            ("chip.hemispheres", self.chip.hemispheres.get()),
            ("chip.superlanes", self.chip.superlanes.get()),
            (
                "chip.lanes_per_superlane",
                self.chip.lanes_per_superlane.get(),
            ),
            ("chip.vector_bytes", self.chip.vector_bytes.get()),
            (
                "chip.vector_length_step",
                self.chip.vector_length_step.get(),
            ),
            (
                "chip.superlane_hop_cycles",
                self.chip.superlane_hop_cycles.get(),
            ),
            (
                "chip.streams_per_direction",
                self.chip.streams_per_direction.get(),
            ),
            ("chip.stream_hop_cycles", self.chip.stream_hop_cycles.get()),
            ("queues.mem", self.queues.mem.get()),
            ("queues.mxm", self.queues.mxm.get()),
            ("queues.sxm", self.queues.sxm.get()),
            ("queues.vxm", self.queues.vxm.get()),
            ("sram.slice_bytes", self.sram.slice_bytes.get()),
            ("sram.banks_per_slice", self.sram.banks_per_slice.get()),
            ("sram.bank_access_bytes", self.sram.bank_access_bytes.get()),
            (
                "sram.reads_per_slice_per_cycle",
                self.sram.reads_per_slice_per_cycle.get(),
            ),
            (
                "sram.writes_per_slice_per_cycle",
                self.sram.writes_per_slice_per_cycle.get(),
            ),
            ("mxm.plane_rows", self.mxm.plane_rows.get()),
            ("mxm.plane_cols", self.mxm.plane_cols.get()),
            ("mxm.ops_per_mac", self.mxm.ops_per_mac.get()),
            ("mxm.fp16_rate_divisor", self.mxm.fp16_rate_divisor.get()),
            (
                "mxm.activation_vectors_per_cycle",
                self.mxm.activation_vectors_per_cycle.get(),
            ),
            ("mxm.weight_buffers", self.mxm.weight_buffers.get()),
            ("vxm.alus_per_lane", self.vxm.alus_per_lane.get()),
            (
                "vxm.int4_unpack_ops_per_packed_byte",
                self.vxm.int4_unpack_ops_per_packed_byte.get(),
            ),
            ("sxm.transpose_block", self.sxm.transpose_block.get()),
            ("sxm.vectors_per_cycle", self.sxm.vectors_per_cycle.get()),
            ("c2c.links", self.c2c.links.get()),
            ("c2c.lanes_per_link", self.c2c.lanes_per_link.get()),
            ("c2c.hop_latency_cycles", self.c2c.hop_latency_cycles.get()),
            ("system.node_chips", self.system.node_chips.get()),
            ("system.rack_nodes", self.system.rack_nodes.get()),
            ("system.max_chips", self.system.max_chips.get()),
            ("system.max_hops", self.system.max_hops.get()),
            (
                "system.max_end_to_end_ns",
                self.system.max_end_to_end_ns.get(),
            ),
            (
                "free.install_rows_per_cycle_per_plane",
                self.free.install_rows_per_cycle_per_plane.get(),
            ),
        ];
        for (field, v) in positive {
            need(v > 0, field, format!("must be at least 1, found {v}"));
        }
        let positive_f: [(&str, f64); 3] = [
            ("c2c.lane_gbit_per_s", self.c2c.lane_gbit_per_s.get()),
            ("host.pcie_bytes_per_s", self.host.pcie_bytes_per_s.get()),
            ("host.pcie_latency_s", self.host.pcie_latency_s.get()),
        ];
        for (field, v) in positive_f {
            // pcie_latency_s may be zero in a what-if; only negative or non-finite is wrong.
            let ok = v.is_finite() && (v > 0.0 || (field == "host.pcie_latency_s" && v == 0.0));
            need(
                ok,
                field,
                format!("must be a positive finite number, found {v}"),
            );
        }
        let overhead = self.c2c.network_overhead.get();
        need(
            overhead.is_finite() && (0.0..1.0).contains(&overhead),
            "c2c.network_overhead",
            format!("must be a fraction in [0, 1), found {overhead}"),
        );
        let usable = self.free.usable_sram_fraction.get();
        need(
            usable.is_finite() && usable > 0.0 && usable <= 1.0,
            "free.usable_sram_fraction",
            format!("must be a fraction in (0, 1], found {usable}"),
        );

        // Structure. The layout is described per hemisphere and mirrored.
        let hemis = self.chip.hemispheres.get();
        need(
            hemis == 2,
            "chip.hemispheres",
            format!("the layout is mirrored across exactly 2 hemispheres; {hemis} is not modelled"),
        );
        for (field, groups) in [
            (
                "layout.hemisphere_outside_in",
                &self.layout.hemisphere_outside_in.value,
            ),
            ("layout.center", &self.layout.center.value),
        ] {
            if let Some(g) = groups.iter().find(|g| g.count == 0) {
                need(false, field, format!("{} group has count 0", g.kind.name()));
            }
        }
        for kind in [SliceKind::Mem, SliceKind::Mxm, SliceKind::Vxm] {
            need(
                self.slice_count(kind) > 0,
                "layout.hemisphere_outside_in",
                format!("the chip needs at least one {} slice", kind.name()),
            );
        }
        need(
            self.lanes() == self.chip.vector_bytes.get(),
            "chip.vector_bytes",
            format!(
                "a vector is one byte per lane: superlanes × lanes_per_superlane = {}, vector_bytes = {}",
                self.lanes(),
                self.chip.vector_bytes.get()
            ),
        );
        let step = self.chip.vector_length_step.get();
        need(
            step > 0 && self.chip.vector_bytes.get() % step == 0,
            "chip.vector_length_step",
            format!(
                "must divide vector_bytes ({})",
                self.chip.vector_bytes.get()
            ),
        );
        need(
            self.queues.mem.get() == self.sram_slices(),
            "queues.mem",
            format!(
                "one MEM queue per MEM slice: the layout has {} MEM slices, queues.mem = {}",
                self.sram_slices(),
                self.queues.mem.get()
            ),
        );
        need(
            self.sram.bank_access_bytes.get() == self.chip.vector_bytes.get(),
            "sram.bank_access_bytes",
            "a bank access moves one vector; must equal chip.vector_bytes".to_string(),
        );
        need(
            self.sram.reads_per_slice_per_cycle.get() + self.sram.writes_per_slice_per_cycle.get()
                <= self.sram.banks_per_slice.get(),
            "sram.reads_per_slice_per_cycle",
            "reads + writes per slice per cycle cannot exceed the banks (they must hit different banks)"
                .to_string(),
        );
        need(
            self.mxm.plane_rows.get() == self.lanes(),
            "mxm.plane_rows",
            format!(
                "a plane row is one streamed vector: must equal the lane count {}",
                self.lanes()
            ),
        );
        let install = self.free.install_rows_per_cycle_per_plane.get();
        need(
            install <= self.mxm.plane_rows.get(),
            "free.install_rows_per_cycle_per_plane",
            format!(
                "cannot exceed mxm.plane_rows ({})",
                self.mxm.plane_rows.get()
            ),
        );
        need(
            install * self.mxm_planes_per_hemisphere() <= self.chip.streams_per_direction.get(),
            "free.install_rows_per_cycle_per_plane",
            format!(
                "the {} planes of a hemisphere install from one stream direction: {} × {} > {} streams",
                self.mxm_planes_per_hemisphere(),
                self.mxm_planes_per_hemisphere(),
                install,
                self.chip.streams_per_direction.get()
            ),
        );
        let node = self.system.node_chips.get();
        need(
            self.system.node_local_links_per_chip.get() + 1 == node,
            "system.node_local_links_per_chip",
            format!(
                "a fully connected node of {node} chips needs {} local links per chip",
                node.saturating_sub(1)
            ),
        );
        need(
            self.system.node_local_links_per_chip.get() + self.system.global_links_per_chip.get()
                <= self.c2c.links.get(),
            "system.global_links_per_chip",
            format!(
                "local + global links exceed c2c.links ({})",
                self.c2c.links.get()
            ),
        );
        need(
            self.system.rack_spare_nodes.get() < self.system.rack_nodes.get(),
            "system.rack_spare_nodes",
            "a rack needs at least one non-spare node".to_string(),
        );
        issues
    }
}

fn count_of(groups: &[SliceGroup], kind: SliceKind) -> u64 {
    groups
        .iter()
        .filter(|g| g.kind == kind)
        .map(|g| g.count)
        .sum()
}
