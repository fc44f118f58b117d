use clap::Args as ClapArgs;
use lpuc_runtime::fetch;

#[derive(ClapArgs)]
pub struct Args {
    /// Print only the model path (for scripts).
    #[arg(long)]
    quiet: bool,
}

/// Fetches the default model (SmolLM2-135M-Instruct Q4_1) into the cache; idempotent.
pub fn run(a: Args) -> super::CliResult {
    let p = fetch::ensure_default_model(!a.quiet)?;
    if a.quiet {
        println!("{}", p.display());
    } else {
        println!(
            "{} ({} bytes, sha256 {})",
            p.display(),
            fetch::DEFAULT_MODEL.size,
            fetch::DEFAULT_MODEL.sha256
        );
    }
    Ok(())
}
