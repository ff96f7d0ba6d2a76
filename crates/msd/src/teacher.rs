//! Teacher training: EDM denoising score matching with AdamW, EMA, clipping, warm-up, label
//! dropout (for classifier-free guidance), atomic checkpoints and exact resume.
//!
//! Writes into its directory: `checkpoints/`, `stats.jsonl`, and at the end the EMA weights as
//! `model.json` + `model.safetensors` (loadable with [`EdmModel::load_dir`]) and `train.json`.

use crate::data::TrainingData;
use crate::diffusion::precond::broadcast_to;
use crate::diffusion::{Denoiser, SigmaDistribution};
use crate::model::{EdmModel, ModelSpec};
use crate::train::checkpoint::{self, config_hash, FORMAT_VERSION};
use crate::train::{ema_update, step_rng, AdamW, AdamWConfig, CheckpointDir, StatsLog, TrainState};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

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
    /// Probability of replacing a label by the null label (classifier-free guidance).
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

/// Progress events for a caller that shows progress (the library never prints).
pub enum Progress<'a> {
    /// Training starts (or resumes) at `step` of `total`.
    Start { step: u64, total: u64 },
    /// A logged step.
    Step {
        step: u64,
        loss: f64,
        grad_norm: f64,
        lr: f64,
        examples_per_s: f64,
    },
    /// A checkpoint was written; `ema` is the current EMA model (for sample grids).
    Checkpoint { step: u64, ema: &'a EdmModel },
}

/// Summary written to `train.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub train_seconds: f64,
    pub params: i64,
    pub seed: u64,
    pub config_hash: String,
}

/// The config hash that ties a teacher directory to what made it.
pub fn teacher_hash(
    spec: &ModelSpec,
    cfg: &TeacherTrainConfig,
    seed: u64,
    data_id: &str,
) -> String {
    config_hash(&(spec, cfg, seed, data_id))
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

/// The finished model of a stage directory, if it was made with config hash `hash`.
pub(crate) fn finished(
    dir: &Path,
    hash: &str,
    device: Device,
) -> Result<Option<(EdmModel, TrainSummary)>> {
    match checkpoint::read_json::<TrainSummary>(&dir.join("train.json")) {
        Ok(s) if s.config_hash == hash && dir.join("model.safetensors").exists() => {
            Ok(Some((EdmModel::load_dir(dir, device)?, s)))
        }
        _ => Ok(None),
    }
}

/// Ends a stage: writes the (EMA) model and `train.json` from the last checkpoint's state.
/// `last_loss` is NaN when no step ran in this process (the checkpoint's value is used).
pub(crate) fn finish(
    dir: &Path,
    ckpts: &CheckpointDir,
    model: &EdmModel,
    steps: u64,
    last_loss: f64,
    seed: u64,
    hash: String,
) -> Result<TrainSummary> {
    let (_, state) = ckpts.latest()?.ok_or_else(|| {
        Error::Invalid(format!("{}: no checkpoint after training", dir.display()))
    })?;
    let final_loss = if last_loss.is_nan() {
        state
            .extra
            .get("loss")
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    } else {
        last_loss
    };
    let summary = TrainSummary {
        steps,
        final_loss,
        train_seconds: state.train_seconds(),
        params: model.num_params(),
        seed,
        config_hash: hash,
    };
    model.save_dir(dir)?;
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
        sigma_max: 80.0,
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
    let (spec, cfg, data, dir, seed, device) =
        (job.spec, job.cfg, job.data, job.dir, job.seed, job.device);
    spec.net.validate()?;
    if cfg.batch_size == 0 || cfg.steps == 0 {
        return Err(Error::config(
            format!("{}.steps / {}.batch_size", job.stage, job.stage),
            "must be ≥ 1",
        ));
    }
    if spec.net.num_classes() != data.num_classes() {
        return Err(Error::config(
            "net.num_classes",
            format!(
                "is {} but the data has {} classes",
                spec.net.num_classes(),
                data.num_classes()
            ),
        ));
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
    // A teacher's hash stays (spec, cfg, seed, data); TSM adds what else defines it.
    let hash = match job.target_teacher {
        None => teacher_hash(spec, cfg, seed, job.data_id),
        Some((_, tid)) => config_hash(&(
            spec,
            cfg,
            seed,
            job.data_id,
            &job.classes,
            tid,
            job.sigma_max_share,
            job.sigma_max,
        )),
    };
    if let Some(done) = finished(dir, &hash, device)? {
        return Ok(done);
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let _ = step_rng(seed, 0, STREAM_INIT);
    let mut model = EdmModel::from_spec(spec, device);
    let mut ema = EdmModel::from_spec(spec, device);
    ema.copy_from(&model)?;
    ema.vs.freeze();
    let mut opt = AdamW::new(&model.vs, cfg.optimizer.clone());
    let ckpts = CheckpointDir::new(dir);
    let mut start = 0;
    let mut elapsed_before = 0.0;
    if let Some((cdir, state)) = ckpts.resume(&hash)? {
        // Weights are copied in place, so the optimiser keeps pointing at the right tensors.
        model.load_weights(&cdir.join("model.safetensors"))?;
        ema.load_weights(&cdir.join("ema.safetensors"))?;
        opt.load(&cdir.join("optim.safetensors"))?;
        start = state.step;
        elapsed_before = state.train_seconds();
    }
    run_loop(job, on, model, ema, opt, start, elapsed_before, hash)
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    job: &DenoiserJob,
    on: &mut dyn FnMut(Progress),
    model: EdmModel,
    ema: EdmModel,
    mut opt: AdamW,
    start: u64,
    elapsed_before: f64,
    hash: String,
) -> Result<(EdmModel, TrainSummary)> {
    let (cfg, data, dir, seed, device) = (job.cfg, job.data, job.dir, job.seed, job.device);
    let ckpts = CheckpointDir::new(dir);
    let mut stats = StatsLog::open(&dir.join("stats.jsonl"), start)?;
    let classes = &job.classes;
    let null = data.num_classes();
    let n_at_max = (job.sigma_max_share.clamp(0.0, 1.0) * cfg.batch_size as f64).round() as i64;
    let t0 = Instant::now();
    let mut last_log = Instant::now();
    let mut loss_acc = 0.0;
    let mut loss_n = 0u64;
    let mut last_loss = f64::NAN;
    on(Progress::Start {
        step: start,
        total: cfg.steps,
    });
    for step in start..cfg.steps {
        let mut rng = step_rng(seed, step, STREAM_BATCH);
        let (x, labels) = data.batch(cfg.batch_size, classes, &mut rng, device)?;
        let labels = if cfg.label_dropout > 0.0 {
            let l: Vec<i64> = Vec::<i64>::try_from(labels.to_device(Device::Cpu))?
                .into_iter()
                .map(|c| {
                    if rng.gen::<f64>() < cfg.label_dropout {
                        null
                    } else {
                        c
                    }
                })
                .collect();
            Tensor::from_slice(&l).to_device(device)
        } else {
            labels
        };
        let sigma = cfg.sigma.sample(cfg.batch_size as i64, device);
        if n_at_max > 0 {
            let _ = sigma.narrow(0, 0, n_at_max).fill_(job.sigma_max);
        }
        let noisy = &x + x.randn_like() * broadcast_to(&sigma, &x);
        // Teacher: the clean data. TSM: the teacher's denoised output (no gradient).
        let target = match job.target_teacher {
            None => x.shallow_clone(),
            Some((t, _)) => tch::no_grad(|| t.denoise(&noisy, &sigma, &labels)),
        };
        let d = model.denoise_t(&noisy, &sigma, &labels, true);
        let w = model.spec.precond.loss_weight(&sigma);
        let loss = (w * per_sample_mean(&(d - &target).square())).mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        let gn = opt.step();
        let lv = loss.double_value(&[]);
        if !lv.is_finite() || !gn.is_finite() {
            return Err(Error::NonFinite {
                what: if lv.is_finite() {
                    "gradient norm".into()
                } else {
                    "teacher loss".into()
                },
                step,
            });
        }
        ema_update(&ema.vs, &model.vs, cfg.ema_decay);
        loss_acc += lv;
        loss_n += 1;
        last_loss = lv;
        let done = step + 1;
        if done % cfg.log_every.max(1) == 0 || done == cfg.steps {
            let secs = last_log.elapsed().as_secs_f64().max(1e-9);
            let eps = (loss_n as f64 * cfg.batch_size as f64) / secs;
            let mean_loss = loss_acc / loss_n as f64;
            stats.log(&serde_json::json!({
                "stage": job.stage, "step": done, "loss": mean_loss, "grad_norm": gn,
                "lr": opt.current_lr(), "examples_per_s": eps,
            }))?;
            on(Progress::Step {
                step: done,
                loss: mean_loss,
                grad_norm: gn,
                lr: opt.current_lr(),
                examples_per_s: eps,
            });
            loss_acc = 0.0;
            loss_n = 0;
            last_log = Instant::now();
        }
        // Preemption (SIGTERM): checkpoint at this step and stop; a rerun resumes here.
        let stop = crate::train::stop::stop_requested() && done < cfg.steps;
        if done % cfg.checkpoint_every.max(1) == 0 || done == cfg.steps || stop {
            let secs = elapsed_before + t0.elapsed().as_secs_f64();
            let state = TrainState {
                format_version: FORMAT_VERSION,
                step: done,
                seed,
                config_hash: hash.clone(),
                extra: serde_json::json!({ "train_seconds": secs, "loss": lv }),
            };
            ckpts.save(&state, |d| {
                checkpoint::save_varstore(&model.vs, &d.join("model.safetensors"))?;
                checkpoint::save_varstore(&ema.vs, &d.join("ema.safetensors"))?;
                opt.save(&d.join("optim.safetensors"))
            })?;
            if stop {
                return Err(Error::Interrupted { step: done });
            }
            on(Progress::Checkpoint {
                step: done,
                ema: &ema,
            });
        }
    }
    let summary = finish(dir, &ckpts, &ema, cfg.steps, last_loss, seed, hash)?;
    Ok((ema, summary))
}
