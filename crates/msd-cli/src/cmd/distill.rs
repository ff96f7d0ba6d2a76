//! `msd distill`: trains students of a run (one, several, or all K, one after another) through
//! [`msd::pipeline::Distiller`]; this file maps flags onto its options and shows its progress.

use crate::progress;
use anyhow::{anyhow, bail, Result};
use msd::pipeline::{check_stages, DistillOptions, Distiller, Observer, StageDone, StageKind};
use msd::teacher::Progress;
use msd::train::lock::RunLock;
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
        let s = d.summary;
        match d.stage {
            StageKind::Tsm => println!(
                "student {}: TSM {} steps, {:.0} s, {} parameters → {}",
                d.student,
                s.steps,
                s.train_seconds,
                s.params,
                d.dir.display()
            ),
            stage => println!(
                "student {}: {stage}, classes {:?}, {} iterations, {:.0} s → {}",
                d.student,
                d.classes,
                s.steps,
                s.train_seconds,
                d.dir.display()
            ),
        }
    }

    fn bundle_written(&mut self, path: &Path, stage: StageKind) {
        println!("bundle: {} ({stage} students)", path.display());
    }
}

pub fn run(a: Args) -> Result<()> {
    check_stages(&a.stages).map_err(|e| anyhow!("--stages: {e}"))?;
    let device = a.device;
    let distiller = Distiller::new(&a.run);
    distiller.run.load_config()?;
    // Students of one run may train side by side (one job each): the run is locked shared,
    // each student's folder exclusively; killed writers' temp files go.
    let _run_lock = RunLock::shared(&a.run)?;
    let partition = distiller.partition(&distiller.run.load_teacher(device)?)?;
    if let Some(&k) = a.student.iter().find(|&&k| k >= partition.students) {
        bail!(
            "--student {k}: the partition has students 0..{}",
            partition.students - 1
        );
    }
    let mine: Vec<usize> = if a.student.is_empty() {
        (0..partition.students).collect()
    } else {
        a.student.clone()
    };
    let _student_locks = mine
        .iter()
        .map(|k| RunLock::acquire(&a.run.join("students").join(k.to_string())))
        .collect::<msd::Result<Vec<_>>>()?;
    let opts = DistillOptions {
        students: a.student,
        stages: a.stages,
        device,
    };
    let mut bars = Bars::default();
    let r = distiller.run(&opts, &mut bars);
    if let Some(b) = bars.bar.take() {
        b.finish_and_clear();
    }
    r?;
    Ok(())
}
