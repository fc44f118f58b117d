//! `lpuc-passes`: the pass pipeline, the heart of the compiler.
//!
//! Reading order: [`pass`] (the small `Pass` trait), [`registry`] (every pass by name),
//! [`pipeline`] (pipeline text and the default pipelines), [`manager`] (running a pipeline
//! with the instruments), [`phase`] (invariants that hold from a phase on), [`lowerable`]
//! (the closed op set each backend accepts: the pipeline's last phase), [`target`]
//! (the little of a machine tiling and costs need), [`egraph`] (equality saturation on
//! bounded islands: language, rules, cost model), and [`passes`], one file per pass.
//!
//! ```
//! use lpuc_ir::builder::{build_llama, LlamaConfig};
//! use lpuc_ir::graph::WeightSource;
//! use lpuc_passes::{manager::PassManager, target::TargetKind};
//! let cfg = LlamaConfig::preset("tiny").unwrap();
//! let mut g = build_llama(&cfg, WeightSource::None).unwrap();
//! let pm = PassManager::parse("fuse-int4-dequant,dce", TargetKind::Cpu).unwrap();
//! pm.run(&mut g, &mut std::io::sink()).unwrap();
//! assert!(g.values().iter().all(|v| g.op(*v).name() != "tensor.dequant"));
//! ```

pub mod egraph;
pub mod lowerable;
pub mod manager;
pub mod pass;
pub mod passes;
pub mod phase;
pub mod pipeline;
pub mod registry;
pub mod target;

pub use manager::{PassManager, PipelineError};
pub use pass::{Pass, PassContext};
pub use target::TargetKind;
