//! `msd distill`: trains students of a run (one, several, or all K, one after another). Each
//! student is an independent, resumable job writing only `students/<k>/<stage>/`.

use crate::{device, progress};
use anyhow::{bail, Context, Result};
use msd::distill::trainer::DistillProgress;
use msd::distill::{distill_student, DistillConfig, StudentJob};
use msd::model::EdmModel;
use msd::run::{assemble_bundle, ensure_pairs, ensure_partition, teacher_id, RunDir};
use msd::teacher::TrainSummary;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (with config.toml and teacher/).
    #[arg(long)]
    pub run: PathBuf,
    /// Which student(s) to train (repeatable or comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub student: Vec<usize>,
    /// Stages to run, in order (this build: dm).
    #[arg(long, value_delimiter = ',', default_value = "dm")]
    pub stages: Vec<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Trains one student with a progress bar labelled `label`.
pub fn train_one(
    cfg: &DistillConfig,
    job: &StudentJob,
    label: &str,
) -> Result<(EdmModel, TrainSummary)> {
    let bar = progress::bar(cfg.iterations, label);
    let r = distill_student(cfg, job, &mut |p| match p {
        DistillProgress::Start { step, .. } => bar.set_position(step),
        DistillProgress::Step {
            step,
            vsd_loss,
            fake_loss,
            images_per_s,
            ..
        } => {
            bar.set_position(step);
            bar.set_message(format!(
                "vsd {vsd_loss:.2e} fake {fake_loss:.3} · {images_per_s:.0} img/s"
            ));
        }
    });
    bar.finish_and_clear();
    r.with_context(|| format!("student {} ({})", job.student, job.dir.display()))
}

pub fn run(a: Args) -> Result<()> {
    if let Some(s) = a.stages.iter().find(|s| s.as_str() != "dm") {
        bail!("--stages: stage `{s}` is not available in this build (available: dm)");
    }
    let device = device::parse(&a.device)?;
    let run = RunDir::new(&a.run);
    let cfg = run.load_config()?;
    let teacher = run.load_teacher(device)?;
    let d = &cfg.distill;
    let partition = ensure_partition(
        &run.partition_path(),
        &teacher,
        d.students,
        d.partition,
        cfg.seed,
        &cfg.sampler,
    )?;
    let students: Vec<usize> = if a.student.is_empty() {
        (0..partition.students).collect()
    } else {
        a.student.clone()
    };
    if let Some(&k) = students.iter().find(|&&k| k >= partition.students) {
        bail!(
            "--student {k}: the partition has students 0..{}",
            partition.students - 1
        );
    }
    let pairs = ensure_pairs(&run.pairs_path(), &teacher, d, &cfg.sampler, cfg.seed)?;
    let tid = teacher_id(&run.teacher_dir());
    for &k in &students {
        let dir = run.student_dir(k, "dm");
        let job = StudentJob {
            teacher: &teacher,
            partition: &partition,
            student: k,
            pairs: pairs.as_ref(),
            dir: &dir,
            seed: cfg.seed,
            teacher_id: &tid,
        };
        let (_, s) = train_one(d, &job, &format!("student {k}"))?;
        println!(
            "student {k}: classes {:?}, {} iterations, {:.0} s → {}",
            partition.classes_of(k),
            s.steps,
            s.train_seconds,
            dir.display()
        );
    }
    if (0..partition.students).all(|k| run.student_dir(k, "dm").join("model.safetensors").exists())
    {
        assemble_bundle(&run, &partition, "dm", d.sigma_max)?;
        println!("bundle: {}", run.bundle_path().display());
    }
    Ok(())
}
