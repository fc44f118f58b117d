//! The pipeline flags every compiling command shares (`opt`, `run`, `bench`, `compile`,
//! `eval`), with one meaning everywhere.

use clap::Args as ClapArgs;
use lpuc_driver::PipelineOptions;
use lpuc_passes::TargetKind;

#[derive(ClapArgs, Clone, Debug, Default)]
pub struct PipelineArgs {
    /// Pipeline text instead of the target's default, e.g.
    /// `canonicalize,fuse-int4-dequant,tile{target=cpu},plan-buffers{s=512}`.
    #[arg(long)]
    pub passes: Option<String>,
    /// Print the pipeline that would run (one line, the form --passes accepts) and exit.
    #[arg(long)]
    pub print_pipeline: bool,
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print the IR after the named pass(es) (to stderr).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub print_ir_after: Vec<String>,
    /// Print the IR after every pass that changed it (to stderr).
    #[arg(long)]
    pub print_ir_after_change: bool,
    /// Print a table of the time each pass took (to stderr).
    #[arg(long)]
    pub time_passes: bool,
    /// Run the verifier after every pass (always on in debug builds).
    #[arg(long)]
    pub verify_each: bool,
    /// Run only the first N passes (find the pass that breaks a model by bisection).
    #[arg(long, value_name = "N")]
    pub opt_bisect_limit: Option<usize>,
}

impl PipelineArgs {
    pub fn options(&self) -> PipelineOptions {
        PipelineOptions {
            passes: self.passes.clone(),
            time_passes: self.time_passes,
            print_ir_after_all: self.print_ir_after_all,
            print_ir_after: self.print_ir_after.clone(),
            print_ir_after_change: self.print_ir_after_change,
            verify_each: self.verify_each,
            opt_bisect_limit: self.opt_bisect_limit,
        }
    }

    /// With `--print-pipeline`: prints the pipeline `target` would run and returns true
    /// (the command then exits).
    pub fn print_pipeline(&self, target: TargetKind) -> Result<bool, super::CliError> {
        if !self.print_pipeline {
            return Ok(false);
        }
        let pm = lpuc_driver::pass_manager(target, &self.options())?;
        println!("{}", pm.pipeline_text());
        Ok(true)
    }
}
