//! `lpuc sim MODEL.lpu`: check and time a Groq schedule; `--functional` also runs it.

use clap::Args as ClapArgs;
use lpuc_targets::groq::program::LpuProgram;
use lpuc_targets::groq::{functional, sim};
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    /// The .lpu artifact from `lpuc compile --target groq`.
    #[arg(required_unless_present = "machine")]
    file: Option<PathBuf>,
    /// Print the machine model (every parameter with its source, derived peaks) instead.
    #[arg(long)]
    machine: bool,
    /// Profile for `--machine`: a built-in name or a .toml file.
    #[arg(long, default_value = "v1")]
    profile: String,
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
    if a.machine {
        let m = super::compile::load_profile(&a.profile)?;
        print!("{}", lpuc_targets::groq::report::render(&m));
        return Ok(());
    }
    let file = a.file.unwrap_or_default();
    // Bounded like any artifact (a wrong path such as /dev/zero must not be read forever).
    let bytes = lpuc_ir::fsio::read_limited(&file, 1 << 30)?;
    let prog: LpuProgram = lpuc_ir::artifact::decode(super::compile::KIND, &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let report = sim::simulate(&prog).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let func = if a.functional {
        Some(
            functional::compare(&prog, a.steps)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
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
