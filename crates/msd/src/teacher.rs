//! Teacher training: EDM denoising score matching with AdamW, EMA, clipping, warm-up and label
//! dropout (for classifier-free guidance), as a [`Method`] on the shared [`Runner`] (atomic
//! checkpoints, exact resume). Teacher Score Matching ([`crate::distill::tsm`]) is the same
//! method with the teacher's denoised output as the target.
//!
//! Writes into its directory: `checkpoints/`, `stats.jsonl`, and at the end the EMA weights as
//! `model.json` + `model.safetensors` (loadable with [`EdmModel::load_dir`]) and `train.json`.

use crate::data::TrainingData;
use crate::diffusion::precond::broadcast_to;
use crate::diffusion::{Denoiser, SigmaDistribution};
use crate::model::{EdmModel, ModelSpec};
use crate::nets::condition::drop_conditions;
use crate::train::checkpoint::{self, config_hash};
use crate::train::{
    ema_update, step_rng, AdamW, AdamWConfig, LogLine, Method, Runner, Slot, StepReport,
};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub use crate::train::TrainSummary;

/// Settings of teacher training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherTrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    #[serde(default)]
    pub optimizer: AdamWConfig,
    #[serde(default = "default_ema")]
    pub ema_decay: f64,
    /// Probability of replacing a condition by the null condition (classifier-free guidance):
    /// the null label, or for embedding-conditioned networks the zero (null) embedding.
    #[serde(default)]
    pub label_dropout: f64,
    #[serde(default)]
    pub sigma: SigmaDistribution,
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: u64,
    #[serde(default = "default_log")]
    pub log_every: u64,
}

fn default_ema() -> f64 {
    0.999
}
fn default_ckpt() -> u64 {
    1000
}
fn default_log() -> u64 {
    50
}

/// Progress events of denoiser training; `model` at a checkpoint is the current EMA model.
pub type Progress<'a> = crate::train::Progress<'a, EdmModel>;

impl TeacherTrainConfig {
    /// Checks value ranges; errors name the field (`teacher.ema_decay`, …).
    pub fn validate(&self) -> Result<()> {
        use crate::limits::{check_range, check_size, MAX_BATCH};
        check_size(
            "teacher.batch_size",
            self.batch_size as u64,
            1,
            MAX_BATCH as u64,
        )?;
        check_range("teacher.ema_decay", self.ema_decay, 0.0, 1.0)?;
        check_range("teacher.label_dropout", self.label_dropout, 0.0, 1.0)?;
        self.optimizer.validate("teacher.optimizer")
    }

    /// The settings that change what training computes (not the checkpoint or log cadence):
    /// the part of the config that a stage's hash covers.
    pub fn semantic(&self) -> impl Serialize + '_ {
        (
            self.steps,
            self.batch_size,
            &self.optimizer,
            self.ema_decay,
            self.label_dropout,
            &self.sigma,
        )
    }
}

/// The config hash that ties a teacher directory to what made it.
pub fn teacher_hash(
    spec: &ModelSpec,
    cfg: &TeacherTrainConfig,
    seed: u64,
    data_id: &str,
) -> String {
    config_hash(&(spec, cfg.semantic(), seed, data_id))
}

/// Adopts an already trained teacher (`src`: `model.json` + `model.safetensors`) as the teacher
/// of `dir` for this config: its network must be the config's; weights are checked on load.
/// Writes `dir/model.*` and a `train.json` carrying this config's hash, so `train_teacher` with
/// the same config reuses it. Returns the summary (steps and time from `src/train.json` if any).
pub fn import_teacher(
    src: &Path,
    spec: &ModelSpec,
    cfg: &TeacherTrainConfig,
    seed: u64,
    data_id: &str,
    dir: &Path,
) -> Result<TrainSummary> {
    let m = EdmModel::load_dir(src, Device::Cpu)?;
    if &m.spec != spec {
        return Err(Error::format(
            src.join("model.json"),
            "its network or preconditioning differs from the config's [model]",
        ));
    }
    let prev = checkpoint::read_json::<TrainSummary>(&src.join("train.json")).ok();
    let summary = TrainSummary {
        steps: prev.as_ref().map(|p| p.steps).unwrap_or(0),
        final_loss: prev.as_ref().map(|p| p.final_loss).unwrap_or(f64::NAN),
        train_seconds: prev.as_ref().map(|p| p.train_seconds).unwrap_or(0.0),
        params: m.num_params(),
        seed,
        config_hash: teacher_hash(spec, cfg, seed, data_id),
    };
    m.save_dir(dir)?;
    checkpoint::write_json_atomic(&dir.join("train.json"), &summary)?;
    Ok(summary)
}

/// Stream ids for per-step generators.
const STREAM_BATCH: u64 = 1;
const STREAM_INIT: u64 = 2;

/// Per-sample mean over all non-batch axes: `[B, ...]` → `[B]`.
pub fn per_sample_mean(t: &Tensor) -> Tensor {
    if t.dim() == 1 {
        return t.shallow_clone();
    }
    t.flatten(1, -1).mean_dim(1, false, Kind::Float)
}

/// Trains (or resumes, or reuses when finished) a teacher in `dir`. `data_id` names the data
/// so that a run directory is never resumed on other data.
#[allow(clippy::too_many_arguments)]
pub fn train_teacher(
    spec: &ModelSpec,
    cfg: &TeacherTrainConfig,
    data: &dyn TrainingData,
    data_id: &str,
    dir: &Path,
    seed: u64,
    device: Device,
    on: &mut dyn FnMut(Progress),
) -> Result<(EdmModel, TrainSummary)> {
    let job = DenoiserJob {
        spec,
        cfg,
        data,
        data_id,
        classes: (0..data.num_classes()).collect(),
        target_teacher: None,
        sigma_max_share: 0.0,
        sigma_max: crate::diffusion::sigma::EDM_SIGMA_MAX,
        init: None,
        dir,
        seed,
        device,
        stage: "teacher",
    };
    train_denoiser(&job, on)
}

/// A denoiser-training job: the teacher (target = clean data, all classes) or Teacher Score
/// Matching for a smaller student (target = the teacher's denoised output, the student's classes,
/// plus a share of every batch at σ_max where the student will be used as a generator).
pub struct DenoiserJob<'a> {
    pub spec: &'a ModelSpec,
    pub cfg: &'a TeacherTrainConfig,
    pub data: &'a dyn TrainingData,
    pub data_id: &'a str,
    /// Classes trained on (labels uniform over them).
    pub classes: Vec<i64>,
    /// TSM: the teacher whose D(x_σ; σ, c) is the regression target, and its id (for hashes).
    pub target_teacher: Option<(&'a dyn Denoiser, &'a str)>,
    /// Fraction of each batch drawn at exactly σ_max (TSM; 0 for a teacher).
    pub sigma_max_share: f64,
    pub sigma_max: f64,
    /// A model to start from instead of a fresh initialisation, and its id (for hashes): every
    /// parameter it shares by name and shape with the job's network is copied (e.g. a text
    /// teacher from a class teacher: all but the condition input). `None`: fresh.
    pub init: Option<(&'a EdmModel, &'a str)>,
    pub dir: &'a Path,
    pub seed: u64,
    pub device: Device,
    /// Stage name for `stats.jsonl` ("teacher", "tsm").
    pub stage: &'a str,
}

/// Trains (or resumes, or reuses when finished) the denoiser of `job` in `job.dir`.
pub fn train_denoiser(
    job: &DenoiserJob,
    on: &mut dyn FnMut(Progress),
) -> Result<(EdmModel, TrainSummary)> {
    let (spec, cfg, data, device) = (job.spec, job.cfg, job.data, job.device);
    spec.net.validate()?;
    if cfg.batch_size == 0 || cfg.steps == 0 {
        return Err(Error::config(
            format!("{}.steps / {}.batch_size", job.stage, job.stage),
            "must be ≥ 1",
        ));
    }
    if spec.net.sample_shape() != data.sample_shape() {
        return Err(Error::config(
            "model.net",
            format!(
                "makes samples of shape {:?} but the data's are {:?} (e.g. an MLP's dim must be the data's dimension)",
                spec.net.sample_shape(),
                data.sample_shape()
            ),
        ));
    }
    // A training batch holds its activations for the backward pass: refuse one that cannot
    // fit before allocating it.
    crate::limits::check_fits(
        &format!("{}.batch_size = {}", job.stage, cfg.batch_size),
        crate::limits::sampling_bytes(&spec.net, cfg.batch_size as u64, false).saturating_mul(3),
    )?;
    match (spec.net.cond().embedding_dim(), data.condition_dim()) {
        (None, None) if spec.net.num_classes() != data.num_classes() => {
            return Err(Error::config(
                "net.num_classes",
                format!(
                    "is {} but the data has {} classes",
                    spec.net.num_classes(),
                    data.num_classes()
                ),
            ));
        }
        (a, b) if a != b => {
            let say = |d: Option<i64>| match d {
                None => "class labels".to_string(),
                Some(d) => format!("{d}-d embeddings"),
            };
            return Err(Error::config(
                "net.cond",
                format!("the network takes {} but the data gives {}", say(a), say(b)),
            ));
        }
        _ => {}
    }
    if job.classes.is_empty()
        || job
            .classes
            .iter()
            .any(|&c| c < 0 || c >= data.num_classes())
    {
        return Err(Error::Invalid(format!(
            "{}: invalid class subset {:?}",
            job.stage, job.classes
        )));
    }
    // A teacher's hash is (spec, cfg, seed, data); TSM adds what else defines it.
    let hash = match job.target_teacher {
        None => teacher_hash(spec, cfg, job.seed, job.data_id),
        Some((_, tid)) => config_hash(&(
            spec,
            cfg.semantic(),
            job.seed,
            job.data_id,
            &job.classes,
            tid,
            job.sigma_max_share,
            job.sigma_max,
        )),
    };
    let hash = match job.init {
        Some((_, id)) => config_hash(&(&hash, "init", id)),
        None => hash,
    };
    let runner = Runner::new(job.dir, hash, job.seed, cfg.checkpoint_every, cfg.log_every);
    if let Some(done) = runner.finished()? {
        return Ok((EdmModel::load_dir(job.dir, device)?, done));
    }
    let mut method = DenoiserMethod::new(job)?;
    let summary = runner.run(&mut method, on)?;
    Ok((method.ema, summary))
}

/// Denoising score matching of one model (with its EMA) towards clean data or a teacher.
pub struct DenoiserMethod<'a> {
    job: &'a DenoiserJob<'a>,
    model: EdmModel,
    ema: EdmModel,
    opt: AdamW,
    n_at_max: i64,
    loss_sum: f64,
    loss_n: u64,
    last_grad_norm: f64,
}

impl<'a> DenoiserMethod<'a> {
    /// A freshly initialised model (seeded by the job's seed) and its optimiser.
    pub fn new(job: &'a DenoiserJob<'a>) -> Result<Self> {
        let _ = step_rng(job.seed, 0, STREAM_INIT);
        let mut model = EdmModel::from_spec(job.spec, job.device);
        if let Some((init, _)) = job.init {
            model.copy_shared_from(init)?;
        }
        let mut ema = EdmModel::from_spec(job.spec, job.device);
        ema.copy_from(&model)?;
        ema.vs.freeze();
        let opt = AdamW::new(&model.vs, job.cfg.optimizer.clone());
        let n_at_max =
            (job.sigma_max_share.clamp(0.0, 1.0) * job.cfg.batch_size as f64).round() as i64;
        Ok(Self {
            job,
            model,
            ema,
            opt,
            n_at_max,
            loss_sum: 0.0,
            loss_n: 0,
            last_grad_norm: f64::NAN,
        })
    }
}

impl Method for DenoiserMethod<'_> {
    type Output = EdmModel;

    fn stage(&self) -> &str {
        self.job.stage
    }

    fn total_steps(&self) -> u64 {
        self.job.cfg.steps
    }

    fn step(&mut self, step: u64) -> Result<StepReport> {
        let (cfg, data, device) = (self.job.cfg, self.job.data, self.job.device);
        let null = data.num_classes();
        let mut rng = step_rng(self.job.seed, step, STREAM_BATCH);
        let (x, labels) = data.batch(cfg.batch_size, &self.job.classes, &mut rng, device)?;
        let labels = if cfg.label_dropout > 0.0 {
            let drop: Vec<bool> = (0..labels.size()[0])
                .map(|_| rng.gen::<f64>() < cfg.label_dropout)
                .collect();
            drop_conditions(&labels, &drop, null)?
        } else {
            labels
        };
        let sigma = cfg.sigma.sample(cfg.batch_size as i64, device);
        if self.n_at_max > 0 {
            let _ = sigma.narrow(0, 0, self.n_at_max).fill_(self.job.sigma_max);
        }
        let noisy = &x + x.randn_like() * broadcast_to(&sigma, &x);
        // Teacher: the clean data. TSM: the teacher's denoised output (no gradient).
        let target = match self.job.target_teacher {
            None => x.shallow_clone(),
            Some((t, _)) => tch::no_grad(|| t.denoise(&noisy, &sigma, &labels)),
        };
        let d = self.model.denoise_t(&noisy, &sigma, &labels, true);
        let w = self.model.spec.precond.loss_weight(&sigma);
        let loss = (w * per_sample_mean(&(d - &target).square())).mean(Kind::Float);
        self.opt.zero_grad();
        loss.backward();
        let gn = self.opt.step();
        let lv = loss.double_value(&[]);
        if lv.is_finite() && gn.is_finite() {
            ema_update(&self.ema.vs, &self.model.vs, cfg.ema_decay);
        }
        self.loss_sum += lv;
        self.loss_n += 1;
        self.last_grad_norm = gn;
        Ok(StepReport {
            loss: lv,
            checked: vec![("gradient norm", gn)],
        })
    }

    fn log_line(&mut self, secs: f64) -> LogLine {
        let n = self.loss_n.max(1) as f64;
        let eps = n * self.job.cfg.batch_size as f64 / secs;
        let loss = self.loss_sum / n;
        let mut record = serde_json::Map::new();
        record.insert("loss".into(), loss.into());
        record.insert("grad_norm".into(), self.last_grad_norm.into());
        record.insert("lr".into(), self.opt.current_lr().into());
        record.insert("examples_per_s".into(), eps.into());
        (self.loss_sum, self.loss_n) = (0.0, 0);
        LogLine {
            loss,
            examples_per_s: eps,
            record,
        }
    }

    fn state(&mut self) -> Vec<(&'static str, Slot<'_>)> {
        vec![
            ("model", Slot::Vars(&mut self.model.vs)),
            ("ema", Slot::Vars(&mut self.ema.vs)),
            ("optim", Slot::Optim(&mut self.opt)),
        ]
    }

    fn output(&self) -> &EdmModel {
        &self.ema
    }

    fn export(&self, dir: &Path) -> Result<i64> {
        self.ema.save_dir(dir)?;
        Ok(self.ema.num_params())
    }
}
