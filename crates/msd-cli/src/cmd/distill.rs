//! `msd distill`: trains students of a run (one, several, or all K, one after another). Each
//! student is an independent, resumable job writing only `students/<k>/<stage>/`.

use crate::{device, progress};
use anyhow::{bail, Context, Result};
use msd::distill::trainer::DistillProgress;
use msd::distill::trainer::Stage;
use msd::distill::{distill_student, DistillConfig, StudentJob};
use msd::model::EdmModel;
use msd::model::ModelSpec;
use msd::run::{assemble_bundle, ensure_pairs, ensure_partition, teacher_id, RunDir};
use msd::teacher::{train_denoiser, DenoiserJob, Progress, TrainSummary};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (with config.toml and teacher/).
    #[arg(long)]
    pub run: PathBuf,
    /// Which student(s) to train (repeatable or comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub student: Vec<usize>,
    /// Stages to run, in order: consecutive stages of tsm, dm, adm.
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
        DistillProgress::Start { step, .. } => {
            if step > 0 {
                bar.suspend(|| eprintln!("{label}: resuming from the checkpoint at step {step}"));
            }
            bar.set_position(step)
        }
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
    let stages: Vec<&str> = a.stages.iter().map(String::as_str).collect();
    const ORDER: [&str; 3] = ["tsm", "dm", "adm"];
    let valid = ORDER
        .windows(stages.len().clamp(1, 3))
        .any(|w| w == stages.as_slice())
        && !stages.is_empty();
    if !valid {
        bail!("--stages {}: give consecutive stages of tsm,dm,adm in that order (e.g. dm, tsm,dm, dm,adm)", a.stages.join(","));
    }
    let device = device::parse(&a.device)?;
    let run = RunDir::new(&a.run);
    let cfg = run.load_config()?;
    let teacher = run.load_teacher(device)?;
    let d = &cfg.distill;
    if stages.contains(&"tsm") && d.student_net.is_none() {
        bail!(
            "--stages tsm: TSM initialises a smaller student; set distill.student_net in {}",
            run.config_path().display()
        );
    }
    let data = if stages.contains(&"tsm") || stages.contains(&"adm") {
        Some(cfg.data.open(&run.root)?)
    } else {
        None
    };
    let partition = ensure_partition(
        &run.partition_path(),
        &teacher,
        d.students,
        d.partition,
        cfg.seed,
        &cfg.sampler,
        d.kmeans_samples_per_class,
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
        let tsm = match (&data, &d.student_net) {
            (Some(data), Some(net)) if stages.contains(&"tsm") => {
                let spec = ModelSpec {
                    net: net.clone(),
                    precond: teacher.spec.precond,
                };
                let tdir = run.student_dir(k, "tsm");
                let job = DenoiserJob {
                    spec: &spec,
                    cfg: &d.tsm.as_train_config(),
                    data: data.as_ref(),
                    data_id: &cfg.data.id(),
                    classes: partition.classes_of(k),
                    target_teacher: Some((&teacher, &tid)),
                    sigma_max_share: d.tsm.sigma_max_share,
                    sigma_max: d.sigma_max,
                    dir: &tdir,
                    seed: cfg.seed.wrapping_add(k as u64),
                    device,
                    stage: "tsm",
                };
                let bar = progress::bar(d.tsm.steps, &format!("tsm {k}"));
                let (m, s) = train_denoiser(&job, &mut |p| {
                    if let Progress::Step { step, .. } | Progress::Start { step, .. } = p {
                        bar.set_position(step)
                    }
                })
                .with_context(|| format!("student {k} TSM ({})", tdir.display()))?;
                bar.finish_and_clear();
                println!(
                    "student {k}: TSM {} steps, {:.0} s, {} parameters → {}",
                    s.steps,
                    s.train_seconds,
                    m.num_params(),
                    tdir.display()
                );
                Some((m, s.config_hash))
            }
            // A finished TSM stage from an earlier command still initialises DM.
            _ => finished_tsm(&run.student_dir(k, "tsm"), device)?,
        };
        let data_id = cfg.data.id();
        for stage in stages.iter().filter(|s| **s != "tsm") {
            let dir = run.student_dir(k, stage);
            let dm_dir = run.student_dir(k, "dm");
            let job = StudentJob {
                teacher: &teacher,
                partition: &partition,
                student: k,
                pairs: pairs.as_ref(),
                dir: &dir,
                seed: cfg.seed,
                teacher_id: &tid,
                generator_init: tsm.as_ref().map(|(m, h)| (m, h.as_str())),
                stage: if *stage == "adm" {
                    Stage::Adm
                } else {
                    Stage::Dm
                },
                real_data: data.as_deref(),
                data_id: &data_id,
                resume_from: (*stage == "adm").then_some(dm_dir.as_path()),
            };
            let (_, s) = train_one(d, &job, &format!("{stage} {k}"))?;
            println!(
                "student {k}: {stage}, classes {:?}, {} iterations, {:.0} s → {}",
                partition.classes_of(k),
                s.steps,
                s.train_seconds,
                dir.display()
            );
        }
    }
    let last = *stages.last().unwrap_or(&"dm");
    if last != "tsm"
        && (0..partition.students)
            .all(|k| run.student_dir(k, last).join("model.safetensors").exists())
    {
        assemble_bundle(&run, &partition, last, d.sigma_max)?;
        println!("bundle: {} ({last} students)", run.bundle_path().display());
    }
    Ok(())
}

/// The result of a finished TSM stage in `dir`, with its hash, if there is one.
fn finished_tsm(dir: &std::path::Path, device: tch::Device) -> Result<Option<(EdmModel, String)>> {
    match msd::train::checkpoint::read_json::<TrainSummary>(&dir.join("train.json")) {
        Ok(s) => Ok(Some((EdmModel::load_dir(dir, device)?, s.config_hash))),
        Err(_) => Ok(None),
    }
}
