//! The `lpuc` command line. Argument parsing and printing only: every command calls into the
//! crates (`lpuc-ir`, `lpuc-passes`, `lpuc-runtime`, `lpuc-targets`).

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lpuc",
    version,
    about = "A compiler for LLaMA-family models: CPU (LLVM JIT) and Groq LPU (static schedule + simulator)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a model graph from a preset (shapes only, or random weights).
    Build(cmd::build::Args),
    /// Parse and verify an .ir file; print a one-line summary.
    Verify(cmd::verify::Args),
    /// Print an .ir file in canonical form.
    Fmt(cmd::fmt::Args),
    /// Write a Graphviz rendering of an .ir file.
    Dot(cmd::dot::Args),
    /// Run an .ir file on the reference interpreter and print the top logits.
    Eval(cmd::eval::Args),
    /// Run a pass pipeline on an .ir file (the target's default pipeline without --passes).
    Opt(cmd::opt::Args),
    /// List the passes (`lpuc passes --list`).
    Passes(cmd::passes::Args),
    /// Fetch the default model (SmolLM2-135M-Instruct Q4_1) into the cache.
    Fetch(cmd::fetch::Args),
    /// Import a GGUF model as an .ir program (weights referenced by name).
    Import(cmd::import::Args),
    /// Generate text on the CPU (llama.cpp-style flags).
    Run(cmd::run::Args),
    /// Print a text's token ids (and pieces).
    Tokenize(cmd::tokenize::Args),
    /// Measure prompt and generation throughput (llama-bench compatible).
    Bench(cmd::bench::Args),
    /// Compile for the Groq LPU: static schedule, partition, `.lpu` artifact.
    Compile(cmd::compile::Args),
    /// Check, time (and optionally execute) a Groq `.lpu` schedule.
    Sim(cmd::sim::Args),
}

fn main() -> ExitCode {
    // llama.cpp spells some flags with several letters after one dash (`-ub`, `-ctk`,
    // `-ctv`), which clap would read as clusters of short flags; accept them by name.
    let cli = Cli::parse_from(std::env::args_os().map(|a| match a.to_str() {
        Some("-ub") => "--ubatch-size".into(),
        Some("-ctk") => "--cache-type-k".into(),
        Some("-ctv") => "--cache-type-v".into(),
        _ => a,
    }));
    let r = match cli.command {
        Command::Build(a) => cmd::build::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Fmt(a) => cmd::fmt::run(a),
        Command::Dot(a) => cmd::dot::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Opt(a) => cmd::opt::run(a),
        Command::Passes(a) => cmd::passes::run(a),
        Command::Fetch(a) => cmd::fetch::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Compile(a) => cmd::compile::run(a),
        Command::Sim(a) => cmd::sim::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cmd::report(e);
            ExitCode::FAILURE
        }
    }
}
