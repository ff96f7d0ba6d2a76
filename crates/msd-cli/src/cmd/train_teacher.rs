//! `msd train-teacher`: trains (or resumes) the teacher of a run directory.

use crate::progress;
use anyhow::{Context, Result};
use msd::config::RunConfig;
use msd::teacher::{train_teacher, Progress};
use std::path::{Path, PathBuf};

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

/// Loads `config` (with an optional seed override) and stores the resolved copy as
/// `out/config.toml`, its data paths re-expressed relative to `out`.
pub fn prepare_run(config: &Path, out: &Path, seed: Option<u64>) -> Result<RunConfig> {
    let mut cfg = RunConfig::load(config)?;
    if let Some(s) = seed {
        cfg.seed = s;
    }
    std::fs::create_dir_all(out).with_context(|| format!("--out {}", out.display()))?;
    let base = config.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    cfg.data.rebase(&base, out)?;
    cfg.save(&out.join("config.toml"))?;
    Ok(cfg)
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device;
    // One writer per run directory (taken once the config reads); killed writers' temp files
    // are removed.
    RunConfig::load(&a.config)?;
    let _lock = msd::train::lock::RunLock::acquire(&a.out)?;
    let cfg = prepare_run(&a.config, &a.out, a.seed)?;
    let data = cfg.data.open(&a.out)?;
    let dir = a.out.join("teacher");
    let bar = progress::bar(cfg.teacher.steps, "teacher");
    let samples_dir = dir.join("samples");
    let sampler = cfg.sampler.clone();
    let seed = cfg.seed;
    let mut render_err = None;
    let (model, summary) = train_teacher(
        &cfg.model,
        &cfg.teacher,
        data.as_ref(),
        &cfg.data.id(),
        &dir,
        cfg.seed,
        device,
        &mut |p| match p {
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
                let _ = crate::curves::write_loss_curve(
                    &dir.join("stats.jsonl"),
                    &dir.join("loss.png"),
                );
                let out = samples_dir.join(format!("step-{step:07}.png"));
                if let Err(e) = crate::cmd::sample::preview(ema, &sampler, seed, &out) {
                    render_err.get_or_insert(e);
                }
            }
            // A kill between a checkpoint and its preview: the preview is redone on resume.
            Progress::Resumed { step, model: ema } => {
                let out = samples_dir.join(format!("step-{step:07}.png"));
                if !out.exists() {
                    if let Err(e) = crate::cmd::sample::preview(ema, &sampler, seed, &out) {
                        render_err.get_or_insert(e);
                    }
                }
            }
        },
    )?;
    bar.finish_and_clear();
    // An imported teacher has no training log of its own here.
    let stats = dir.join("stats.jsonl");
    if stats.exists() {
        crate::curves::write_loss_curve(&stats, &dir.join("loss.png"))?;
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
