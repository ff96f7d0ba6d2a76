//! `msd train-teacher`: trains (or resumes) the teacher of a run directory.

use crate::progress;
use anyhow::Result;
use msd::config::RunConfig;
use msd::run::RunDir;
use msd::teacher::Progress;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run config (TOML), e.g. configs/toy.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory; the teacher goes to OUT/teacher. Rerunning resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Overrides the config's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device;
    // One writer per run directory (taken once the config reads); killed writers' temp files
    // are removed.
    RunConfig::load(&a.config)?;
    let _lock = msd::train::lock::RunLock::acquire(&a.out)?;
    let run = RunDir::new(&a.out);
    let cfg = run.create(&a.config, a.seed)?;
    let dir = run.teacher_dir();
    let bar = progress::bar(cfg.teacher.steps, "teacher");
    let t = run.train_teacher_with_previews(&cfg, device, &mut |p| match p {
        Progress::Start { step, .. } => bar.set_position(step),
        Progress::Step {
            step,
            loss,
            examples_per_s,
            ..
        } => {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4} · {examples_per_s:.0} ex/s"));
        }
        Progress::Checkpoint { .. } | Progress::Resumed { .. } => {}
    })?;
    bar.finish_and_clear();
    if let Some(e) = t.preview_error {
        tracing::warn!("could not render a preview: {e:#}");
    }
    println!(
        "teacher: {} steps, final loss {:.4}, {:.0} s, {} parameters",
        t.summary.steps,
        t.summary.final_loss,
        t.summary.train_seconds,
        t.model.num_params()
    );
    println!("weights: {}", dir.join("model.safetensors").display());
    println!("previews: {}", dir.join("samples").display());
    if t.loss_curve {
        println!("loss curve: {}", dir.join("loss.png").display());
    }
    Ok(())
}
