//! `msd import-teacher`: brings an already trained teacher into a run directory, checked against
//! the config, so distillation can start at once (e.g. the shipped MNIST teacher).

use anyhow::{Context, Result};
use msd::run::RunDir;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run config whose [model] the teacher must match.
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory; the teacher goes to OUT/teacher.
    #[arg(long)]
    pub out: PathBuf,
    /// The trained teacher (model.json + model.safetensors [+ train.json]).
    #[arg(long)]
    pub teacher: PathBuf,
    #[arg(long)]
    pub seed: Option<u64>,
}

pub fn run(a: Args) -> Result<()> {
    let run = RunDir::new(&a.out);
    let cfg = run.create(&a.config, a.seed)?;
    let s = run
        .import_teacher(&cfg, &a.teacher)
        .with_context(|| format!("--teacher {}", a.teacher.display()))?;
    println!(
        "teacher: imported from {} ({} parameters, trained {} steps) → {}",
        a.teacher.display(),
        s.params,
        s.steps,
        run.teacher_dir().display()
    );
    Ok(())
}
