//! Students of the toy sweep: K students of one partition through their stages (TSM → DM, or
//! TSM → CD), each stage reused when finished and resumed when interrupted. The toy's cells share
//! one teacher and one set of regression pairs across many partitions, so they call the per-stage
//! trainers here; run directories of their own (the image experiment) go through
//! [`crate::pipeline::Distiller`].

use super::Observer;
use crate::data::TrainingData;
use crate::distill::pairs::RegressionPairs;
use crate::distill::tsm::{train_tsm, TsmJob};
use crate::distill::{distill_student, DistillConfig, StageKind, StudentJob};
use crate::model::{EdmModel, ModelSpec};
use crate::partition::Partition;
use crate::pipeline::check_stages;
use crate::teacher::Progress;
use crate::train::checkpoint::read_json;
use crate::train::TrainSummary;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Device;

/// K students of one partition, trained through `stages` into `root/students/<k>/<stage>/`.
pub(crate) struct StudentsJob<'a> {
    pub distill: &'a DistillConfig,
    pub teacher: &'a EdmModel,
    pub teacher_id: &'a str,
    pub partition: &'a Partition,
    pub pairs: Option<&'a RegressionPairs>,
    /// Real data (TSM and ADM need it) and its id.
    pub data: Option<&'a dyn TrainingData>,
    pub data_id: &'a str,
    pub root: &'a Path,
    /// The training seed (TSM of student k uses seed + k, DM and ADM the seed).
    pub seed: u64,
    pub stages: &'a [StageKind],
    pub device: Device,
    /// Prefix of progress labels.
    pub label: &'a str,
    /// Train only this student (pilot runs); `None` = all.
    pub only: Option<usize>,
}

/// What the students' stages cost and which configs made them.
pub(crate) struct StudentsDone {
    /// Summed training-loop seconds of every student and stage.
    pub train_seconds: f64,
    /// Config hashes of every (student, stage), in order.
    pub hashes: Vec<String>,
    /// Parameters of one student's generator.
    pub params: i64,
}

/// A stage directory of student `k` under `root`.
pub(crate) fn student_dir(root: &Path, k: usize, stage: StageKind) -> PathBuf {
    root.join("students").join(k.to_string()).join(stage.name())
}

/// Trains (or reuses) every student of `job` through its stages.
pub(crate) fn distil_students(job: &StudentsJob, obs: &mut dyn Observer) -> Result<StudentsDone> {
    check_stages(job.stages)?;
    let d = job.distill;
    let tsm_wanted = job.stages.contains(&StageKind::Tsm);
    if tsm_wanted && d.student_net.is_none() {
        return Err(Error::config(
            "distill.student_net",
            "TSM initialises a smaller student; set the student network",
        ));
    }
    if job.stages.iter().any(|s| *s != StageKind::Dm) && job.data.is_none() {
        return Err(Error::Invalid("TSM, ADM and CD need the real data".into()));
    }
    let mut done = StudentsDone {
        train_seconds: 0.0,
        hashes: Vec::new(),
        params: 0,
    };
    for k in (0..job.partition.students).filter(|k| job.only.is_none_or(|o| o == *k)) {
        let tsm = match (job.data, &d.student_net) {
            (Some(data), Some(net)) if tsm_wanted => {
                let spec = ModelSpec {
                    net: net.clone(),
                    precond: job.teacher.spec.precond,
                };
                let dir = student_dir(job.root, k, StageKind::Tsm);
                let tjob = TsmJob {
                    spec: &spec,
                    teacher: job.teacher,
                    teacher_id: job.teacher_id,
                    data,
                    data_id: job.data_id,
                    classes: job.partition.classes_of(k),
                    sigma_max: d.sigma_max,
                    dir: &dir,
                    seed: job.seed.wrapping_add(k as u64),
                    device: job.device,
                };
                obs.begin(&format!("{} tsm {k}", job.label), d.tsm.steps);
                let r = train_tsm(&d.tsm, &tjob, &mut |p| {
                    if let Progress::Step { step, .. } | Progress::Start { step, .. } = p {
                        obs.step(step)
                    }
                });
                obs.end();
                let (m, s) = r?;
                done.train_seconds += s.train_seconds;
                done.hashes.push(s.config_hash.clone());
                Some((m, s.config_hash))
            }
            // A finished TSM stage from an earlier call still initialises DM.
            _ => finished_tsm(&student_dir(job.root, k, StageKind::Tsm), job.device)?,
        };
        for &stage in job.stages.iter().filter(|s| **s != StageKind::Tsm) {
            let dir = student_dir(job.root, k, stage);
            let dm_dir = student_dir(job.root, k, StageKind::Dm);
            let sjob = StudentJob {
                teacher: job.teacher,
                partition: job.partition,
                student: k,
                pairs: job.pairs,
                dir: &dir,
                seed: job.seed,
                teacher_id: job.teacher_id,
                generator_init: tsm.as_ref().map(|(m, h)| (m, h.as_str())),
                stage,
                real_data: job.data,
                data_id: job.data_id,
                resume_from: (stage == StageKind::Adm).then_some(dm_dir.as_path()),
            };
            let total = match stage {
                StageKind::Adm => d.adm.iterations,
                StageKind::Cd => d.cd.iterations,
                _ => d.iterations,
            };
            obs.begin(&format!("{} {} {k}", job.label, stage.name()), total);
            let r = distill_student(d, &sjob, &mut |p| {
                if let Progress::Step { step, .. } | Progress::Start { step, .. } = p {
                    obs.step(step)
                }
            });
            obs.end();
            let (g, s) = r?;
            done.train_seconds += s.train_seconds;
            done.hashes.push(s.config_hash);
            done.params = g.num_params();
        }
    }
    Ok(done)
}

/// The result of a finished TSM stage in `dir`, with its hash, if there is one.
fn finished_tsm(dir: &Path, device: Device) -> Result<Option<(EdmModel, String)>> {
    match read_json::<TrainSummary>(&dir.join("train.json")) {
        Ok(s) => Ok(Some((EdmModel::load_dir(dir, device)?, s.config_hash))),
        Err(_) => Ok(None),
    }
}
