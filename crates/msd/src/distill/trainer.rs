//! The DM stage for one student: generator (initialised from the teacher), fake score
//! (initialised from the teacher, trained online on detached generator samples), frozen teacher,
//! TTUR, optional regression loss on shared pairs, EMA of the generator, atomic checkpoints and
//! exact resume. Each student is an independent job writing only into its own directory.

use super::dm::{dm_pseudo_loss, fake_score_loss, vsd_gradient};
use super::pairs::RegressionPairs;
use crate::data::uniform_labels;
use crate::diffusion::KarrasGrid;
use crate::diffusion::SigmaDistribution;
use crate::model::{EdmModel, ModelSpec};
use crate::nets::NetConfig;
use crate::partition::{Partition, Strategy};
use crate::teacher::TeacherTrainConfig;
use crate::teacher::TrainSummary;
use crate::train::checkpoint::{self, config_hash, FORMAT_VERSION};
use crate::train::{
    ema_update, step_rng, step_seed, AdamW, AdamWConfig, CheckpointDir, StatsLog, TrainState,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Kind, Tensor};

/// Settings of multi-student distillation (the `[distill]` table of a run config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Number of students K.
    pub students: usize,
    /// How classes are split among students.
    pub partition: Strategy,
    /// Iterations per student; the fake score steps every iteration.
    pub iterations: u64,
    pub batch_size: usize,
    /// The generator steps once every `ttur` iterations.
    pub ttur: u64,
    /// Karras grid for distillation: levels, σ_min, σ_max, ρ.
    pub grid_levels: usize,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    /// Grid index range for the generator's VSD noise level (inclusive).
    pub t_min_index: usize,
    pub t_max_index: usize,
    pub generator_optimizer: AdamWConfig,
    pub fake_optimizer: AdamWConfig,
    pub ema_decay: f64,
    /// Weight of the regression loss (0 = off).
    pub regression_weight: f64,
    /// Regression pairs per class, generated once by the teacher and shared by all students.
    pub regression_pairs_per_class: usize,
    pub regression_batch: usize,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// The students' network; `None` = the teacher's (same-size students, initialised from it).
    /// A different (smaller) network is initialised by TSM when that stage runs, else randomly.
    pub student_net: Option<NetConfig>,
    /// Teacher Score Matching settings (stage 0, for smaller students).
    pub tsm: TsmConfig,
}

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

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            students: 4,
            partition: Strategy::Contiguous,
            iterations: 2000,
            batch_size: 256,
            ttur: 5,
            grid_levels: 1000,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            t_min_index: 20,
            t_max_index: 980,
            generator_optimizer: AdamWConfig {
                lr: 1e-4,
                beta1: 0.0,
                beta2: 0.99,
                ..Default::default()
            },
            fake_optimizer: AdamWConfig {
                lr: 1e-4,
                beta1: 0.0,
                beta2: 0.99,
                ..Default::default()
            },
            ema_decay: 0.99,
            regression_weight: 0.25,
            regression_pairs_per_class: 512,
            regression_batch: 128,
            checkpoint_every: 1000,
            log_every: 50,
            student_net: None,
            tsm: TsmConfig::default(),
        }
    }
}

impl DistillConfig {
    /// The Karras grid these settings describe.
    pub fn grid(&self) -> KarrasGrid {
        KarrasGrid::new(self.grid_levels, self.sigma_min, self.sigma_max, self.rho)
    }

    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::config(format!("distill.{f}"), m.to_string()));
        if self.students == 0 {
            return bad("students", "must be ≥ 1");
        }
        if self.iterations == 0 || self.batch_size == 0 || self.ttur == 0 {
            return bad("iterations / batch_size / ttur", "must be ≥ 1");
        }
        if self.grid_levels < 2
            || self.t_min_index > self.t_max_index
            || self.t_max_index >= self.grid_levels
        {
            return bad(
                "t_min_index / t_max_index",
                "need t_min_index ≤ t_max_index < grid_levels",
            );
        }
        Ok(())
    }
}

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
}

/// Progress events.
pub enum DistillProgress {
    Start {
        step: u64,
        total: u64,
    },
    Step {
        step: u64,
        vsd_loss: f64,
        fake_loss: f64,
        regression_loss: f64,
        generator_grad_norm: f64,
        fake_grad_norm: f64,
        images_per_s: f64,
    },
}

const STREAM_STEP: u64 = 11;

/// Runs (or resumes, or reuses when finished) the DM stage of one student. Returns the EMA
/// generator and a summary; writes `model.json`/`model.safetensors` (EMA generator),
/// `train.json`, `stats.jsonl` and `checkpoints/` into `job.dir`.
pub fn distill_student(
    cfg: &DistillConfig,
    job: &StudentJob,
    on: &mut dyn FnMut(DistillProgress),
) -> Result<(EdmModel, TrainSummary)> {
    cfg.validate()?;
    let classes = job.partition.classes_of(job.student);
    if classes.is_empty() {
        return Err(Error::Partition(format!(
            "student {} owns no condition",
            job.student
        )));
    }
    let dir = job.dir;
    let gen_spec = ModelSpec {
        net: cfg
            .student_net
            .clone()
            .unwrap_or_else(|| job.teacher.spec.net.clone()),
        precond: job.teacher.spec.precond,
    };
    let init_id = job
        .generator_init
        .map(|(_, id)| id)
        .unwrap_or("teacher-or-random");
    let hash = config_hash(&(
        cfg,
        &job.partition.owner,
        job.student,
        job.seed,
        job.teacher_id,
        job.pairs.is_some(),
        init_id,
    ));
    if let Ok(s) = checkpoint::read_json::<TrainSummary>(&dir.join("train.json")) {
        if s.config_hash == hash && dir.join("model.safetensors").exists() {
            return Ok((EdmModel::load_dir(dir, job.teacher.device())?, s));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let device = job.teacher.device();
    let copy_of = |src: &EdmModel| -> Result<EdmModel> {
        let mut m = EdmModel::from_spec(&src.spec, device);
        m.copy_from(src)?;
        Ok(m)
    };
    // Generator: the given init, else the teacher when same-size, else a seeded random init.
    let mut generator = match job.generator_init {
        Some((init, _)) => copy_of(init)?,
        None if gen_spec == job.teacher.spec => copy_of(job.teacher)?,
        None => {
            let _ = step_rng(job.seed, job.student as u64, 0x1A17);
            EdmModel::from_spec(&gen_spec, device)
        }
    };
    if generator.spec != gen_spec {
        return Err(Error::config(
            "distill.student_net",
            "the generator's initialisation has another network than distill.student_net",
        ));
    }
    let mut ema = copy_of(&generator)?;
    ema.vs.freeze();
    let mut fake = copy_of(job.teacher)?;
    let mut g_opt = AdamW::new(&generator.vs, cfg.generator_optimizer.clone());
    let mut f_opt = AdamW::new(&fake.vs, cfg.fake_optimizer.clone());
    let ckpts = CheckpointDir::new(dir);
    let (mut start, mut secs_before) = (0, 0.0);
    if let Some((cdir, state)) = ckpts.latest()? {
        if state.config_hash != hash {
            return Err(Error::Invalid(format!(
                "{} holds a student made with another config, partition, seed or teacher (hash {} vs {hash}); use another run directory or delete it",
                dir.display(),
                state.config_hash
            )));
        }
        generator.load_weights(&cdir.join("generator.safetensors"))?;
        ema.load_weights(&cdir.join("ema.safetensors"))?;
        fake.load_weights(&cdir.join("fake.safetensors"))?;
        g_opt.load(&cdir.join("generator_optim.safetensors"))?;
        f_opt.load(&cdir.join("fake_optim.safetensors"))?;
        start = state.step;
        secs_before = state
            .extra
            .get("train_seconds")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
    }

    let grid = cfg.grid();
    let sseed = step_seed(job.seed, job.student as u64, 0xD157);
    let mut stats = StatsLog::open(&dir.join("stats.jsonl"), start)?;
    let bs = cfg.batch_size;
    let mut shape = vec![bs as i64];
    shape.extend(job.teacher.spec.net.sample_shape());
    let t0 = Instant::now();
    let mut window = Instant::now();
    let mut acc = [0.0f64; 5];
    let (mut n_fake, mut n_gen) = (0u64, 0u64);
    let mut last_fake = f64::NAN;
    on(DistillProgress::Start {
        step: start,
        total: cfg.iterations,
    });
    for it in start..cfg.iterations {
        let mut rng = step_rng(sseed, it, STREAM_STEP);
        let labels = Tensor::from_slice(&uniform_labels(bs, &classes, &mut rng)).to_device(device);
        let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
        if it % cfg.ttur == 0 {
            let x = generator.generate_t(&z, &labels, cfg.sigma_max, true);
            let sigma = grid.sample(bs as i64, cfg.t_min_index, cfg.t_max_index, device);
            let g = vsd_gradient(&x, &sigma, &labels, job.teacher, &fake);
            let vsd = dm_pseudo_loss(&x, &g);
            let mut loss = vsd.shallow_clone();
            let mut reg_v = 0.0;
            if let (Some(p), true) = (job.pairs, cfg.regression_weight > 0.0) {
                let idx = Tensor::randint(
                    p.len(),
                    [cfg.regression_batch as i64],
                    (Kind::Int64, device),
                );
                let (zp, lp, yp) = p.select(&idx);
                let reg = (generator.generate_t(&zp, &lp, cfg.sigma_max, true) - yp)
                    .square()
                    .mean(Kind::Float);
                reg_v = reg.double_value(&[]);
                loss += reg * cfg.regression_weight;
            }
            g_opt.zero_grad();
            loss.backward();
            let gn = g_opt.step();
            let v = vsd.double_value(&[]);
            if !gn.is_finite() || !v.is_finite() || !reg_v.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("student {} generator loss/gradient", job.student),
                    step: it,
                });
            }
            ema_update(&ema.vs, &generator.vs, cfg.ema_decay);
            acc[0] += v;
            acc[2] += reg_v;
            acc[3] += gn;
            n_gen += 1;
        }
        let x = tch::no_grad(|| generator.generate_t(&z, &labels, cfg.sigma_max, false));
        let sigma = grid.sample(bs as i64, 0, cfg.grid_levels - 1, device);
        let f_loss = fake_score_loss(&fake, &x, &sigma, &labels);
        f_opt.zero_grad();
        f_loss.backward();
        let fnorm = f_opt.step();
        let fl = f_loss.double_value(&[]);
        if !fl.is_finite() || !fnorm.is_finite() {
            return Err(Error::NonFinite {
                what: format!("student {} fake-score loss/gradient", job.student),
                step: it,
            });
        }
        last_fake = fl;
        acc[1] += fl;
        acc[4] += fnorm;
        n_fake += 1;
        let done = it + 1;
        if done % cfg.log_every.max(1) == 0 || done == cfg.iterations {
            let secs = window.elapsed().as_secs_f64().max(1e-9);
            let ng = n_gen.max(1) as f64;
            let nf = n_fake.max(1) as f64;
            let ev = DistillProgress::Step {
                step: done,
                vsd_loss: acc[0] / ng,
                fake_loss: acc[1] / nf,
                regression_loss: acc[2] / ng,
                generator_grad_norm: acc[3] / ng,
                fake_grad_norm: acc[4] / nf,
                images_per_s: nf * bs as f64 / secs,
            };
            if let DistillProgress::Step {
                vsd_loss,
                fake_loss,
                regression_loss,
                generator_grad_norm,
                fake_grad_norm,
                images_per_s,
                ..
            } = &ev
            {
                stats.log(&serde_json::json!({
                    "stage": "dm", "student": job.student, "step": done, "vsd_loss": vsd_loss,
                    "fake_loss": fake_loss, "regression_loss": regression_loss,
                    "generator_grad_norm": generator_grad_norm, "fake_grad_norm": fake_grad_norm,
                    "images_per_s": images_per_s, "generator_lr": g_opt.current_lr(), "fake_lr": f_opt.current_lr(),
                }))?;
            }
            on(ev);
            acc = [0.0; 5];
            n_fake = 0;
            n_gen = 0;
            window = Instant::now();
        }
        if done % cfg.checkpoint_every.max(1) == 0 || done == cfg.iterations {
            let state = TrainState {
                format_version: FORMAT_VERSION,
                step: done,
                seed: job.seed,
                config_hash: hash.clone(),
                extra: serde_json::json!({ "train_seconds": secs_before + t0.elapsed().as_secs_f64(), "fake_loss": fl }),
            };
            ckpts.save(&state, |d| {
                checkpoint::save_varstore(&generator.vs, &d.join("generator.safetensors"))?;
                checkpoint::save_varstore(&ema.vs, &d.join("ema.safetensors"))?;
                checkpoint::save_varstore(&fake.vs, &d.join("fake.safetensors"))?;
                g_opt.save(&d.join("generator_optim.safetensors"))?;
                f_opt.save(&d.join("fake_optim.safetensors"))
            })?;
        }
    }
    let (_, state) = ckpts
        .latest()?
        .ok_or_else(|| Error::Invalid("no checkpoint after distillation".into()))?;
    let summary = TrainSummary {
        steps: cfg.iterations,
        final_loss: if last_fake.is_nan() {
            state
                .extra
                .get("fake_loss")
                .and_then(|v| v.as_f64())
                .unwrap_or(f64::NAN)
        } else {
            last_fake
        },
        train_seconds: state
            .extra
            .get("train_seconds")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0),
        params: ema.num_params(),
        seed: job.seed,
        config_hash: hash,
    };
    ema.save_dir(dir)?;
    checkpoint::write_json_atomic(&dir.join("train.json"), &summary)?;
    Ok((ema, summary))
}
