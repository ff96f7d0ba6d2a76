//! `msd distill`: trains students of a run (one, several, or all K, one after another) through
//! [`msd::pipeline::Distiller`]; this file maps flags onto its options and shows its progress.

use crate::progress;
use anyhow::Result;
use msd::pipeline::{DistillOptions, Distiller, Observer, StageDone, StageKind};
use msd::teacher::Progress;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (with config.toml and teacher/).
    #[arg(long)]
    pub run: PathBuf,
    /// Which student(s) to train (repeatable or comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub student: Vec<usize>,
    /// Stages to run, in order: consecutive stages of tsm, dm, adm (or tsm, cd).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dm")]
    pub stages: Vec<StageKind>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

/// Shows a progress bar for a training run and clears it at the end.
fn show(bar: &indicatif::ProgressBar, p: Progress) {
    match p {
        Progress::Start { step, .. } => {
            if step > 0 {
                // Shown even without a terminal: the log of a requeued job says it resumed.
                let what = bar.prefix();
                bar.suspend(|| eprintln!("{what}: resuming from the checkpoint at step {step}"));
            }
            bar.set_position(step)
        }
        Progress::Step {
            step,
            loss,
            examples_per_s,
            ..
        } => {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.3e} · {examples_per_s:.0} img/s"));
        }
        Progress::Checkpoint { .. } | Progress::Resumed { .. } => {}
    }
}

/// Progress bars and one line per finished stage.
#[derive(Default)]
pub(crate) struct Bars {
    pub(crate) bar: Option<indicatif::ProgressBar>,
}

impl Observer for Bars {
    fn stage_started(&mut self, student: usize, stage: StageKind, total_steps: u64) {
        self.bar = Some(progress::bar(total_steps, &format!("{stage} {student}")));
    }

    fn training(&mut self, event: Progress) {
        if let Some(b) = &self.bar {
            show(b, event);
        }
    }

    fn stage_finished(&mut self, d: &StageDone) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!("{d}");
    }

    fn bundle_written(&mut self, path: &Path, stage: StageKind) {
        println!("bundle: {} ({stage} students)", path.display());
    }
}

pub fn run(a: Args) -> Result<()> {
    let opts = DistillOptions {
        students: a.student,
        stages: a.stages,
        device: a.device,
    };
    let mut bars = Bars::default();
    let r = Distiller::new(&a.run).run_locked(&opts, &mut bars);
    if let Some(b) = bars.bar.take() {
        b.finish_and_clear();
    }
    r?;
    Ok(())
}
