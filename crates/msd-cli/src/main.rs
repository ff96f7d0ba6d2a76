//! `msd`: the command-line front end. Each subcommand is glue over a library function: it parses
//! flags, shows progress, and writes pictures and tables.

mod cmd;
mod device;
mod progress;
mod stop_signal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

/// Multi-Student Distillation: distil a diffusion teacher into K one-step students.
#[derive(Parser)]
#[command(name = "msd", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads for CPU tensor work (default: all cores), 1 to 1024.
    #[arg(long, global = true, value_parser = clap::value_parser!(i32).range(1..=1024))]
    threads: Option<i32>,
}

#[derive(Subcommand)]
enum Command {
    /// Train (or resume) a teacher from a config into OUT/teacher.
    TrainTeacher(cmd::train_teacher::Args),
    /// Adopt an already trained teacher into a run directory (checked against the config).
    ImportTeacher(cmd::import_teacher::Args),
    /// Draw samples from a teacher (multi-step) or a bundle (one step) as a picture and/or values.
    Sample(cmd::sample::Args),
    /// Split the classes of a run among K students (partition.json).
    Partition(cmd::partition::Args),
    /// Distil students of a run (each an independent, resumable job).
    Distill(cmd::distill::Args),
    /// Assemble and validate a run's bundle.json.
    Bundle(cmd::bundle::Args),
    /// Run the students as jobs of a cluster scheduler (Slurm job array, Kubernetes Indexed Job).
    Launch(cmd::launch::Args),
    /// The 2-D toy experiment: distance to the teacher as the number of students grows.
    Toy(cmd::toy::Args),
    /// Train the feature network (a small CNN classifier) used by `msd eval`.
    TrainClassifier(cmd::train_classifier::Args),
    /// Evaluate a teacher: FD, KID, precision/recall, per-class accuracy; eval.json + eval.md.
    Eval(cmd::eval::Args),
    /// The reproduction table (teacher, 1 vs K students, DM/ADM, smaller students with and
    /// without TSM, K and partition ablations): trains what is missing, evaluates every row.
    Experiment(cmd::experiment::Args),
    /// Time the UNet (forward, train step, Heun-18 vs one step) against its PyTorch twin.
    Bench(cmd::bench::Args),
    /// Serve a bundle over HTTP: router, per-student batching, web page, metrics.
    Serve(cmd::serve::Args),
    /// Load benchmark of `serve`: samples/s over HTTP against the raw batched generator.
    ServeBench(cmd::serve_bench::Args),
    /// Caption the training digits (label, thickness, slant, size) and embed the captions.
    Captions(cmd::captions::Args),
    /// Prompt-conditional runs: train a text teacher, partition prompts, distil students.
    Text(cmd::text::Args),
}

fn main() -> ExitCode {
    // Before any tensor exists: keep large freed blocks in the heap (see msd::runtime).
    msd::runtime::configure_allocator(msd::runtime::AllocatorPolicy::from_env());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MSD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Negative numbers reach each command's own validation (which names the range) instead of
    // being taken for flags.
    let matches = match Cli::command()
        .mut_subcommands(|c| c.allow_negative_numbers(true))
        .try_get_matches()
    {
        Ok(m) => m,
        Err(e) => return flag_error(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return flag_error(e),
    };
    if let Some(n) = cli.threads {
        msd::runtime::fix_threads(n);
    }
    if matches!(
        cli.command,
        Command::TrainTeacher(_)
            | Command::Distill(_)
            | Command::Experiment(_)
            | Command::Toy(_)
            | Command::Text(_)
    ) {
        stop_signal::install();
    }
    let result = match cli.command {
        Command::TrainTeacher(a) => cmd::train_teacher::run(a),
        Command::Sample(a) => cmd::sample::run(a),
        Command::ImportTeacher(a) => cmd::import_teacher::run(a),
        Command::Partition(a) => cmd::partition::run(a),
        Command::Distill(a) => cmd::distill::run(a),
        Command::Bundle(a) => cmd::bundle::run(a),
        Command::Launch(a) => cmd::launch::run(a),
        Command::Toy(a) => cmd::toy::run(a),
        Command::TrainClassifier(a) => cmd::train_classifier::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Experiment(a) => cmd::experiment::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Serve(a) => cmd::serve::run(a, cli.threads),
        Command::ServeBench(a) => cmd::serve_bench::run(a, cli.threads),
        Command::Captions(a) => cmd::captions::run(a),
        Command::Text(a) => cmd::text::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if stop_signal::interrupted(&e) => {
            eprintln!("stopped: {e:#}");
            ExitCode::from(stop_signal::EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A bad flag as one `error:` line (with the accepted values of a closed set), like every other
/// error of the binary; help and version print as usual.
fn flag_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let valid = match e.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(v)) => format!(" (expected one of: {})", v.join(", ")),
        _ => String::new(),
    };
    eprintln!("error: {first}{valid}");
    ExitCode::from(2)
}
