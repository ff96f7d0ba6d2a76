//! `msd import-teacher`: brings an already trained teacher into a run directory, checked against
//! the config, so distillation can start at once (e.g. the shipped MNIST teacher).

use anyhow::{Context, Result};
use msd::teacher::import_teacher;
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
    msd::config::RunConfig::load(&a.config)?;
    // One writer per run directory, as for train-teacher.
    let _lock = msd::train::lock::RunLock::acquire(&a.out)?;
    let cfg = crate::cmd::train_teacher::prepare_run(&a.config, &a.out, a.seed)?;
    let dir = a.out.join("teacher");
    let s = import_teacher(
        &a.teacher,
        &cfg.model,
        &cfg.teacher,
        cfg.seed,
        &cfg.data.id(),
        &dir,
    )
    .with_context(|| format!("--teacher {}", a.teacher.display()))?;
    println!(
        "teacher: imported from {} ({} parameters, trained {} steps) → {}",
        a.teacher.display(),
        s.params,
        s.steps,
        dir.display()
    );
    Ok(())
}
