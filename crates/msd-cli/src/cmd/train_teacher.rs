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
    let samples_dir = dir.join("samples");
    let sampler = cfg.sampler.clone();
    let seed = cfg.seed;
    let mut render_err = None;
    let (model, summary) = run.train_teacher(&cfg, device, &mut |p| match p {
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
        Progress::Checkpoint { step, model: ema } => {
            let _ = msd::viz::write_loss_curve(&dir.join("stats.jsonl"), &dir.join("loss.png"));
            let out = samples_dir.join(format!("step-{step:07}.png"));
            if let Err(e) = msd::draw::preview(ema, &sampler, seed, &out) {
                render_err.get_or_insert(e);
            }
        }
        // A kill between a checkpoint and its preview: the preview is redone on resume.
        Progress::Resumed { step, model: ema } => {
            let out = samples_dir.join(format!("step-{step:07}.png"));
            if !out.exists() {
                if let Err(e) = msd::draw::preview(ema, &sampler, seed, &out) {
                    render_err.get_or_insert(e);
                }
            }
        }
    })?;
    bar.finish_and_clear();
    // An imported teacher has no training log of its own here.
    let stats = dir.join("stats.jsonl");
    if stats.exists() {
        msd::viz::write_loss_curve(&stats, &dir.join("loss.png"))?;
    }
    if let Some(e) = render_err {
        tracing::warn!("could not render a preview: {e:#}");
    }
    println!(
        "teacher: {} steps, final loss {:.4}, {:.0} s, {} parameters",
        summary.steps,
        summary.final_loss,
        summary.train_seconds,
        model.num_params()
    );
    println!("weights: {}", dir.join("model.safetensors").display());
    println!("previews: {}", samples_dir.display());
    if stats.exists() {
        println!("loss curve: {}", dir.join("loss.png").display());
    }
    Ok(())
}
