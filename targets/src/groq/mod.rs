//! The Groq LPU target: the **machine model** and chip-level **cost primitives**
//! (phase 1), and on top of them (phase 2) **lowering**, a **static scheduler**, a
//! **multi-chip partitioner** and a **simulator** that times and executes schedules.
//!
//! lpuc has no Groq hardware. Its numbers are therefore only as good as this model, and
//! the model is built strictly from published facts (`shared/groq/MACHINE.md`).
//!
//! # The model is data
//!
//! [`MachineModel`] is plain serde data stored as a human-edited TOML profile:
//! `targets/profiles/v1.toml` (GroqChip v1, embedded with `include_str!`, see
//! [`MachineModel::v1`]) and `targets/profiles/v2-whatif.toml` (a clearly labelled what-if
//! for the newer chip, of which almost nothing is published). Users can load their own
//! with [`MachineModel::load`]. Every parameter is a [`Param`]: a value and a `source`
//! that starts with a MACHINE.md tag (`[P]` primary, `[R]` page-cited review, `[S]`
//! secondary, `[U]` uncertain, `[D]` derived) or with `assumption:` and a reason; the
//! loader rejects anything else and points at the line. Only independent numbers are
//! stored: totals (lanes, planes, SRAM capacity and bandwidth, peaks, link bandwidth)
//! are derived methods, so an edited profile cannot contradict itself. The marketing
//! "80 TB/s" SRAM figure is not in the papers and is not used.
//!
//! # The timing law
//!
//! The TSP is statically scheduled: no caches, arbiters or back-pressure. ISCA'20
//! Eq. 4 gives the time for an instruction on slice *i* consuming a stream produced at
//! slice *j*:
//!
//! ```text
//!     T = N + d_func + δ(j, i)
//! ```
//!
//! `N` = 20 is the superlane skew (an instruction moves one superlane per cycle),
//! `d_func` the unit's latency, `δ` the stream distance (one slice per cycle). For `v`
//! vectors issued back to back the last one lands at `(v − 1) + N + d_func + δ`; every
//! on-chip primitive in [`cost`] is this law with its own `v`, and returns both the
//! resource occupancy and the latency (see [`cost::Cost`]). δ is left to the caller,
//! who knows the placement ([`cost::stream_distance`]).
//!
//! # What "409,600 weights in < 40 cycles" implies
//!
//! The published statement is about the whole chip: all four 320×320 planes. Read as
//! an average it is ≥ 409,600 / 40 = 10,240 B/cycle (MACHINE.md's "≈ 9.2 TB/s"). Read
//! through Eq. 4 it says more: installing is itself a streamed instruction, so a plane
//! taking `r` rows per cycle finishes at `⌈320 / r⌉ − 1 + N`. With N = 20 that is < 40
//! only for `r ≥ 16` (r = 16 → 39 cycles; r = 15 → 41), and then the fact leaves
//! `d_func = 0` for installs. r = 16 is also what the streams allow: the two planes of a
//! hemisphere take 2 × 16 = the 32 streams of one direction. During streaming that is
//! 4 × 16 × 320 = 20,480 B/cycle; counting the 19-cycle fill once per install gives
//! 409,600 / 39 ≈ 10,503 B/cycle sustained, which is what the model uses (whether
//! back-to-back fills overlap is not published; see [`cost::weight_install`]).
//! Double buffering (published) overlaps installs with compute, not with each other.
//!
//! # Free parameters (exactly three, in the profile's `[free]` table)
//!
//! | parameter | v1 | how it was set |
//! |---|---|---|
//! | `install_rows_per_cycle_per_plane` | 16 | **fitted** to the install fact above: the smallest integer meeting "< 40 cycles"; cross-checked against 32 streams per direction |
//! | `d_func_cycles` | 4 | **prior, not fitted**: no chip-level fact in MACHINE.md constrains the unit latency of MEM/MXM-compute/VXM/SXM (the install fact pins only the install path, at 0). Every dependent op on a critical path pays it once, so reports must show sensitivity to it |
//! | `usable_sram_fraction` | 0.8 | **planning margin**, not hardware: the share of SRAM the partitioner may fill (instructions, alignment, fragmentation); 0.8 is MACHINE.md's own example |
//!
//! Nothing is fitted to end-to-end LLM throughput: tokens/s must come out of the model
//! as a prediction. The hop latency (216 cycles), link rate and host model are published
//! numbers, not knobs.
//!
//! # Peaks (v1, pinned by tests in `targets/tests/groq_machine.rs`)
//!
//! MXM int8 737.28 TOPS (409,600 MACs × 2 × 900 MHz), fp16 ¼ of that; SRAM 220 MiB and
//! 56,320 B/cycle; full-chip weight install 39 cycles; one C2C hop 216 cycles.
//!
//! # Example
//!
//! ```
//! use lpuc_targets::groq::{cost, MachineModel, MatmulShape, MxmDtype};
//!
//! let m = MachineModel::v1();
//! // One token of an 8192×8192 int8 projection on all four planes: install-bound.
//! let gemv = cost::mxm_matmul(&m, MatmulShape { m: 1, k: 8192, n: 8192 }, MxmDtype::Int8, 4)?;
//! assert_eq!(gemv.tiles_per_plane, 182);
//! let us = m.seconds(gemv.cost.latency) * 1e6;
//! assert!(us > 7.0 && us < 8.5, "{us} µs");
//! // The same table `lpuc sim --machine` prints:
//! assert!(lpuc_targets::groq::report::render(&m).contains("737.28 TOPS"));
//! # Ok::<(), lpuc_targets::groq::CostError>(())
//! ```
//!
//! # Phase 2, in the order data flows
//!
//! | module | does | invariant it keeps |
//! |---|---|---|
//! | [`lower`] | the Groq pipeline's output (phase "lowerable for groq") → macro-ops in blocks (head, layers, tail) | every op lowered or refused naming its `%N`; op order structural |
//! | [`codegen`] | one block on one chip: instruction selection per op family (`isel_linear`, `isel_attention`, `isel_vector`, `collectives`), SRAM allocation (`alloc`), one place-and-repair loop (`place`) → scheduled instructions | no two operands of one chain on one slice |
//! | [`sched`] | chains → queues and cycles, with reservation tables | the timing law inside chains; no resource held twice |
//! | [`check`] | re-derives every fact from the instructions; rejects conflicts and late operands | nothing trusted from the scheduler |
//! | [`compile`] | tensor × pipeline parallelism, per-block int4/int8, batching, from scheduled blocks | every stage within the usable SRAM |
//! | [`sim`] | pipeline timing, lower bound, utilization, TTFT | times only checked schedules |
//! | [`functional`] | executes the schedule on data; compares with the interpreter | int8/fp16 numerics; exact mode bit-faithful |
//! | [`trace`] | `--emit=asm` listing, Perfetto trace | one track per exclusive unit |
//!
//! # Layering (lowest first; a module uses only those above it)
//!
//! 1. [`model`], [`profile`], [`report`], [`cost`] — the machine model as data, its
//!    loader and table, the cost primitives.
//! 2. [`isa`] — instructions, the floorplan, each instruction's timing law; [`timing`] —
//!    the facts the scheduler plans with and the checker re-derives (when a write is
//!    readable, whether two regions overlap), so neither depends on the other.
//! 3. [`mops`] — the macro-op program (lowering's output); [`program`] — the scheduled
//!    artifact (`LpuProgram`, `BlockProgram`).
//! 4. The analyses read only a program (layers 1–3): [`check`], then [`sim`] (times
//!    checked schedules), then [`functional`] (validates with `sim`); [`trace`].
//! 5. The producers: [`lower`] (graph → macro-ops), [`sched`] (chains → cycles),
//!    [`codegen`] (macro-ops → chains, placed through `sched`), and [`compile`], the
//!    driver (partitioning by scheduled makespans, timed with `sim`).
//!
//! Phase 2 adds no hardware numbers: every cycle comes from the profile through the
//! primitives above or the ISA's timing law (`isa.rs`), and every assumption it makes
//! (reduction tree, link placement, host-side embedding, hops between racks) is named
//! where it is made and listed in `targets/README-groq.md`.

pub mod check;
pub mod codegen;
pub mod compile;
pub mod cost;
pub mod functional;
pub mod isa;
pub mod lower;
pub mod model;
pub mod mops;
pub mod profile;
pub mod program;
pub mod report;
pub mod sched;
pub mod sim;
pub mod timing;
pub mod trace;

/// Runs the Groq pass pipeline (`lpuc_passes::pipeline::GROQ_PIPELINE`) on `g`: what the
/// driver does before [`compile::compile`], for tests and library users that start
/// from `build_llama`'s primitive graph. The error is the pipeline's, as text.
pub fn pipeline_output(mut g: lpuc_ir::Graph) -> Result<lpuc_ir::Graph, String> {
    lpuc_passes::PassManager::default_for(lpuc_passes::TargetKind::Groq)
        .run(&mut g, &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    Ok(g)
}

pub use cost::{Cost, CostError, Cycles, MatmulShape, MxmDtype, Peaks};
pub use model::{MachineModel, Param, ProfileStatus, SliceId, SliceKind};
pub use profile::{builtin_names, FieldError, ProfileError};
