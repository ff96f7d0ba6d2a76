//! Stage 0, Teacher Score Matching (TSM), for students smaller than the teacher: a
//! multi-noise-level denoiser regressing onto the teacher's denoised output on the student's
//! classes, with a share of every batch at σ_max (where the student will generate). It is the
//! teacher's denoising method ([`crate::teacher::DenoiserMethod`]) with another target, so it
//! runs on the same [`crate::train::Runner`]; its hash covers its own settings only.

use crate::data::TrainingData;
use crate::diffusion::SigmaDistribution;
use crate::model::{EdmModel, ModelSpec};
use crate::teacher::{train_denoiser, DenoiserJob, Progress, TeacherTrainConfig};
use crate::train::{AdamWConfig, TrainSummary};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Device;

/// Stage 0 (TSM) settings: a multi-noise-level denoiser regressing onto the teacher's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TsmConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub optimizer: AdamWConfig,
    pub ema_decay: f64,
    /// Share of each batch at σ_max, where the generator will be evaluated.
    pub sigma_max_share: f64,
    pub sigma: SigmaDistribution,
    pub checkpoint_every: u64,
    pub log_every: u64,
}

impl Default for TsmConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 256,
            optimizer: AdamWConfig {
                lr: 1e-3,
                warmup_steps: 100,
                ..Default::default()
            },
            ema_decay: 0.999,
            sigma_max_share: 0.1,
            sigma: SigmaDistribution::default(),
            checkpoint_every: 1000,
            log_every: 50,
        }
    }
}

impl TsmConfig {
    /// The equivalent denoiser-training settings.
    pub fn as_train_config(&self) -> TeacherTrainConfig {
        TeacherTrainConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            optimizer: self.optimizer.clone(),
            ema_decay: self.ema_decay,
            label_dropout: 0.0,
            sigma: self.sigma,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
        }
    }
}

/// One student's TSM job.
pub struct TsmJob<'a> {
    /// The student's (smaller) network, with the teacher's preconditioning.
    pub spec: &'a ModelSpec,
    pub teacher: &'a EdmModel,
    /// Identifies the teacher (its config hash) for the stage's hash.
    pub teacher_id: &'a str,
    pub data: &'a dyn TrainingData,
    pub data_id: &'a str,
    /// The student's classes.
    pub classes: Vec<i64>,
    /// σ_max of the students' generator.
    pub sigma_max: f64,
    pub dir: &'a Path,
    pub seed: u64,
    pub device: Device,
}

/// Trains (or resumes, or reuses when finished) one student's TSM stage in `job.dir`.
pub fn train_tsm(
    cfg: &TsmConfig,
    job: &TsmJob,
    on: &mut dyn FnMut(Progress),
) -> Result<(EdmModel, TrainSummary)> {
    let train = cfg.as_train_config();
    let denoiser = DenoiserJob {
        spec: job.spec,
        cfg: &train,
        data: job.data,
        data_id: job.data_id,
        classes: job.classes.clone(),
        target_teacher: Some((job.teacher, job.teacher_id)),
        sigma_max_share: cfg.sigma_max_share,
        sigma_max: job.sigma_max,
        init: None,
        dir: job.dir,
        seed: job.seed,
        device: job.device,
        stage: "tsm",
    };
    train_denoiser(&denoiser, on)
}
