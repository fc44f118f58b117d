//! `lpuc sim MODEL.lpu`: check and time a Groq schedule; `--functional` also runs it.

use clap::Args as ClapArgs;
use lpuc_targets::groq::program::LpuProgram;
use lpuc_targets::groq::{functional, sim};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The .lpu artifact from `lpuc compile --target groq`.
    file: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also execute the schedule on data and compare the logits with the reference
    /// interpreter (needs `weights random(seed = N)` in the source graph).
    #[arg(long)]
    functional: bool,
    /// Decode steps for `--functional` (a prompt of this many tokens, one at a time).
    #[arg(long, default_value_t = 4)]
    steps: u32,
}

pub fn run(a: Args) -> super::CliResult {
    let bytes = std::fs::read(&a.file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.file.display()))?;
    let prog: LpuProgram = lpuc_ir::artifact::decode(super::compile::KIND, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let report = sim::simulate(&prog).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let func = if a.functional {
        Some(
            functional::compare(&prog, a.steps)
                .map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?,
        )
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let (Some(f), Some(o)) = (&func, v.as_object_mut()) {
            o.insert("functional".into(), serde_json::to_value(f)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", sim::render(&report));
        if let Some(f) = &func {
            print!("{}", functional::render(f));
        }
    }
    Ok(())
}
