//! `lpuc passes`: what the pass registry holds.

use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// List every pass with its one-line summary and options (the default).
    #[arg(long)]
    list: bool,
}

pub fn run(_a: Args) -> super::CliResult {
    print!("{}", lpuc_passes::registry::list());
    Ok(())
}
