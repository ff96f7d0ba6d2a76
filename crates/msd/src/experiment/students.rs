//! The one place where experiments train students: a set of students through consecutive
//! stages (TSM → DM → ADM), each stage reused when finished and resumed when interrupted.
//! When `msd::pipeline::Distiller` exists this is the function to route through it.

use super::Observer;
use crate::data::TrainingData;
use crate::distill::pairs::RegressionPairs;
use crate::distill::trainer::{DistillProgress, Stage as TrainerStage};
use crate::distill::{distill_student, DistillConfig, StudentJob};
use crate::model::{EdmModel, ModelSpec};
use crate::partition::Partition;
use crate::teacher::{train_denoiser, DenoiserJob, Progress, TrainSummary};
use crate::train::checkpoint::read_json;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Device;

/// A student training stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Teacher score matching: initialises a smaller student.
    Tsm,
    /// Distribution matching.
    Dm,
    /// Adversarial distribution matching, continued from DM.
    Adm,
}

impl Stage {
    /// The folder and report name: `tsm`, `dm`, `adm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Tsm => "tsm",
            Stage::Dm => "dm",
            Stage::Adm => "adm",
        }
    }

    /// Whether `stages` are consecutive stages of tsm, dm, adm in that order.
    pub fn valid_sequence(stages: &[Stage]) -> bool {
        const ORDER: [Stage; 3] = [Stage::Tsm, Stage::Dm, Stage::Adm];
        !stages.is_empty() && ORDER.windows(stages.len().min(3)).any(|w| w == stages)
    }
}

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
    pub stages: &'a [Stage],
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
pub(crate) fn student_dir(root: &Path, k: usize, stage: Stage) -> PathBuf {
    root.join("students")
        .join(k.to_string())
        .join(stage.as_str())
}

/// Trains (or reuses) every student of `job` through its stages.
pub(crate) fn distil_students(job: &StudentsJob, obs: &mut dyn Observer) -> Result<StudentsDone> {
    if !Stage::valid_sequence(job.stages) {
        return Err(Error::Invalid(format!(
            "stages {:?}: give consecutive stages of tsm, dm, adm in that order",
            job.stages
        )));
    }
    let d = job.distill;
    let tsm_wanted = job.stages.contains(&Stage::Tsm);
    if tsm_wanted && d.student_net.is_none() {
        return Err(Error::config(
            "distill.student_net",
            "TSM initialises a smaller student; set the student network",
        ));
    }
    if (tsm_wanted || job.stages.contains(&Stage::Adm)) && job.data.is_none() {
        return Err(Error::Invalid("TSM and ADM need the real data".into()));
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
                let dir = student_dir(job.root, k, Stage::Tsm);
                let djob = DenoiserJob {
                    spec: &spec,
                    cfg: &d.tsm.as_train_config(),
                    data,
                    data_id: job.data_id,
                    classes: job.partition.classes_of(k),
                    target_teacher: Some((job.teacher, job.teacher_id)),
                    sigma_max_share: d.tsm.sigma_max_share,
                    sigma_max: d.sigma_max,
                    dir: &dir,
                    seed: job.seed.wrapping_add(k as u64),
                    device: job.device,
                    stage: "tsm",
                };
                obs.begin(&format!("{} tsm {k}", job.label), d.tsm.steps);
                let r = train_denoiser(&djob, &mut |p| {
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
            _ => finished_tsm(&student_dir(job.root, k, Stage::Tsm), job.device)?,
        };
        for &stage in job.stages.iter().filter(|s| **s != Stage::Tsm) {
            let dir = student_dir(job.root, k, stage);
            let dm_dir = student_dir(job.root, k, Stage::Dm);
            let sjob = StudentJob {
                teacher: job.teacher,
                partition: job.partition,
                student: k,
                pairs: job.pairs,
                dir: &dir,
                seed: job.seed,
                teacher_id: job.teacher_id,
                generator_init: tsm.as_ref().map(|(m, h)| (m, h.as_str())),
                stage: if stage == Stage::Adm {
                    TrainerStage::Adm
                } else {
                    TrainerStage::Dm
                },
                real_data: job.data,
                data_id: job.data_id,
                resume_from: (stage == Stage::Adm).then_some(dm_dir.as_path()),
            };
            let total = if stage == Stage::Adm {
                d.adm.iterations
            } else {
                d.iterations
            };
            obs.begin(&format!("{} {} {k}", job.label, stage.as_str()), total);
            let r = distill_student(d, &sjob, &mut |p| match p {
                DistillProgress::Start { step, .. } | DistillProgress::Step { step, .. } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_sequences_must_be_consecutive() {
        use Stage::*;
        assert!(Stage::valid_sequence(&[Tsm, Dm, Adm]));
        assert!(Stage::valid_sequence(&[Dm]));
        assert!(Stage::valid_sequence(&[Dm, Adm]));
        assert!(!Stage::valid_sequence(&[Tsm, Adm]));
        assert!(!Stage::valid_sequence(&[Adm, Dm]));
        assert!(!Stage::valid_sequence(&[]));
    }
}
