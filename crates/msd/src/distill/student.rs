//! One student's job and its dispatch: builds the stage's [`Method`](crate::train::Method)
//! (DM, ADM or CD) with the hash of that stage's own settings and what it starts from, and runs
//! it on the shared [`Runner`]. Each student is an independent job writing only into its own
//! stage directory.

use super::adm::GanAdversary;
use super::cd::CdMethod;
use super::checks::{check_pairs_sigma, distillation_copy, without_dropout};
use super::config::DistillConfig;
use super::dm::{AdmParts, DmMethod, DmParts};
use super::pairs::RegressionPairs;
use super::regression::RegressionDistance;
use super::StageKind;
use crate::data::TrainingData;
use crate::model::{EdmModel, ModelSpec};
use crate::partition::Partition;
use crate::teacher::Progress;
use crate::train::checkpoint::config_hash;
use crate::train::{step_rng, CheckpointDir, Runner, TrainSummary};
use crate::{Error, Result};
use std::path::Path;

/// One student's job: what it distils from and where it writes.
pub struct StudentJob<'a> {
    pub teacher: &'a EdmModel,
    pub partition: &'a Partition,
    pub student: usize,
    /// Shared regression pairs (all classes), if the regression loss is on.
    pub pairs: Option<&'a RegressionPairs>,
    /// The stage directory, e.g. `students/<k>/dm`.
    pub dir: &'a Path,
    pub seed: u64,
    /// Identifies the teacher (its config hash) so a directory is never resumed on another.
    pub teacher_id: &'a str,
    /// The generator's initialisation when it is not the teacher (e.g. the TSM result), with an
    /// id for hashes. `None`: copy the teacher if the generator has its network, else random.
    pub generator_init: Option<(&'a EdmModel, &'a str)>,
    /// Which stage this job runs: [`StageKind::Dm`], [`StageKind::Adm`] or [`StageKind::Cd`].
    pub stage: StageKind,
    /// Real data of the student's classes (ADM's discriminator, CD's training points), and its
    /// id for hashes.
    pub real_data: Option<&'a dyn TrainingData>,
    pub data_id: &'a str,
    /// ADM: the DM stage directory whose last checkpoint the stage starts from.
    pub resume_from: Option<&'a Path>,
}

/// Runs (or resumes, or reuses when finished) one stage of one student. Returns the EMA
/// generator and a summary; writes `model.json`/`model.safetensors` (EMA generator),
/// `train.json`, `stats.jsonl` and `checkpoints/` into `job.dir`. ADM starts from the last
/// checkpoint of the DM stage (`job.resume_from`) with its own learning rates and iterations.
pub fn distill_student(
    cfg: &DistillConfig,
    job: &StudentJob,
    on: &mut dyn FnMut(Progress),
) -> Result<(EdmModel, TrainSummary)> {
    cfg.validate()?;
    let classes = job.partition.classes_of(job.student);
    if classes.is_empty() {
        return Err(Error::Partition(format!(
            "student {} owns no condition",
            job.student
        )));
    }
    if let (Some(p), true, StageKind::Dm | StageKind::Adm) =
        (job.pairs, cfg.regression_weight > 0.0, job.stage)
    {
        check_pairs_sigma(p, cfg.sigma_max)?;
        if cfg.regression_distance == RegressionDistance::Perceptual && p.features.is_none() {
            // The same error the loss would give at its first step, before anything is written.
            let _ = cfg.regression_distance.loss(&p.y, &p.y, None)?;
        }
    }
    let text = job.teacher.spec.net.cond().embedding_dim().is_some();
    if text && job.pairs.is_some() && cfg.regression_weight > 0.0 {
        return Err(Error::config(
            "distill.regression_weight",
            "regression pairs are per class; set it to 0 for an embedding-conditioned teacher",
        ));
    }
    let needs_data = matches!(job.stage, StageKind::Adm | StageKind::Cd) || text;
    if needs_data && job.real_data.is_none() {
        return Err(Error::Invalid(format!(
            "the {} stage needs real data (the student's classes{})",
            job.stage,
            if text {
                "; and the prompt embeddings to generate for"
            } else {
                ""
            }
        )));
    }
    let init_id = job
        .generator_init
        .map(|(_, id)| id)
        .unwrap_or("teacher-or-random");
    // What every stage of this student shares: partition, seed, teacher, initialisation.
    let common = (
        &job.partition.owner,
        job.student,
        job.seed,
        job.teacher_id,
        init_id,
    );
    let hash = match job.stage {
        StageKind::Dm => config_hash(&(cfg.dm_semantics(), common, job.pairs.is_some())),
        StageKind::Adm => {
            // ADM is tied to the DM run it starts from and to its real data.
            let from = job
                .resume_from
                .and_then(|p| CheckpointDir::new(p).latest().ok().flatten())
                .map(|(_, s)| s.config_hash);
            config_hash(&(
                cfg.dm_semantics(),
                &cfg.adm,
                common,
                job.pairs.is_some(),
                job.data_id,
                from,
            ))
        }
        StageKind::Cd => config_hash(&(cfg.cd_semantics(), common, job.data_id)),
        StageKind::Tsm => {
            return Err(Error::Invalid(
                "the tsm stage trains a denoiser: use distill::tsm::train_tsm".into(),
            ))
        }
    };
    // A perceptual regression is tied to its feature network (other hashes stay as they were).
    let hash = match (
        job.stage,
        cfg.regression_distance,
        job.pairs.and_then(|p| p.features.as_ref()),
    ) {
        (StageKind::Dm | StageKind::Adm, RegressionDistance::Perceptual, Some(f)) => {
            config_hash(&(&hash, &f.id))
        }
        _ => hash,
    };
    // A text student is tied to the prompts it generates for (class hashes stay as they were).
    let hash = if text {
        config_hash(&(&hash, "prompts", job.data_id))
    } else {
        hash
    };
    let runner = Runner::new(job.dir, hash, job.seed, cfg.checkpoint_every, cfg.log_every);
    let device = job.teacher.device();
    if let Some(done) = runner.finished()? {
        return Ok((EdmModel::load_dir(job.dir, device)?, done));
    }
    let generator = initial_generator(cfg, job)?;
    match job.stage {
        StageKind::Cd => {
            let data = job
                .real_data
                .ok_or_else(|| Error::Invalid("no data".into()))?;
            let mut m = CdMethod::new(
                cfg,
                job.teacher,
                job.teacher.num_classes(),
                data,
                classes,
                job.student,
                job.seed,
                generator,
            )?;
            let s = runner.run(&mut m, on)?;
            Ok((m.into_ema(), s))
        }
        _ => {
            let adm = match (job.stage, job.real_data) {
                (StageKind::Adm, Some(data)) => Some(AdmParts {
                    adversary: Box::new(GanAdversary::new(
                        cfg,
                        job.teacher,
                        data,
                        classes.clone(),
                        job.seed,
                        job.student,
                    )?),
                    generator_lr: cfg.adm.generator_lr,
                    fake_lr: cfg.adm.fake_lr,
                    iterations: cfg.adm.iterations,
                    start_from: job.resume_from.ok_or_else(|| {
                        Error::Invalid(
                            "the ADM stage needs the DM stage's directory to start from".into(),
                        )
                    })?,
                }),
                _ => None,
            };
            let mut m = DmMethod::new(DmParts {
                cfg,
                student: job.student,
                classes,
                conditions: if text { job.real_data } else { None },
                seed: job.seed,
                teacher: job.teacher,
                pairs: job.pairs,
                generator,
                adm,
            })?;
            let s = runner.run(&mut m, on)?;
            Ok((m.into_ema(), s))
        }
    }
}

/// The generator's starting point: the given init, else the teacher when it has the students'
/// network, else a random init seeded by `(seed, student)`.
fn initial_generator(cfg: &DistillConfig, job: &StudentJob) -> Result<EdmModel> {
    let device = job.teacher.device();
    // The generator runs without dropout, whatever the teacher's config says (DMD2).
    let spec = without_dropout(&ModelSpec {
        net: cfg
            .student_net
            .clone()
            .unwrap_or_else(|| job.teacher.spec.net.clone()),
        precond: job.teacher.spec.precond,
    });
    let copy_of = distillation_copy;
    let generator = match job.generator_init {
        Some((init, _)) => copy_of(init)?,
        None if spec == without_dropout(&job.teacher.spec) => copy_of(job.teacher)?,
        None => {
            let _ = step_rng(job.seed, job.student as u64, 0x1A17);
            EdmModel::from_spec(&spec, device)
        }
    };
    if generator.spec != spec {
        return Err(Error::config(
            "distill.student_net",
            "the generator's initialisation has another network than distill.student_net",
        ));
    }
    Ok(generator)
}
