//! The DM stage for one student: generator (initialised from the teacher), fake score
//! (initialised from the teacher, trained online on detached generator samples), frozen teacher,
//! TTUR, optional regression loss on shared pairs, EMA of the generator, atomic checkpoints and
//! exact resume. Each student is an independent job writing only into its own directory.

use super::adm::{discriminator_loss, generator_gan_loss, judge};
use super::dm::{dm_pseudo_loss, fake_score_loss, vsd_gradient};
use super::pairs::RegressionPairs;
use crate::data::uniform_labels;
use crate::data::TrainingData;
use crate::diffusion::precond::broadcast_to;
use crate::diffusion::SigmaDistribution;
use crate::diffusion::{Guided, KarrasGrid};
use crate::model::{EdmModel, ModelSpec};
use crate::nets::disc_head::{DiscHead, DiscHeadConfig};
use crate::nets::NetConfig;
use crate::partition::{Partition, Strategy};
use crate::teacher::TeacherTrainConfig;
use crate::teacher::{finish, finished, TrainSummary};
use crate::train::checkpoint::{self, config_hash, FORMAT_VERSION};
use crate::train::{
    ema_update, step_rng, step_seed, AdamW, AdamWConfig, CheckpointDir, StatsLog, TrainState,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::nn;
use tch::{Kind, Tensor};

/// Settings of multi-student distillation (the `[distill]` table of a run config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Number of students K.
    pub students: usize,
    /// How classes are split among students.
    pub partition: Strategy,
    /// k-means partitions: teacher samples per class whose mean embeds the class.
    pub kmeans_samples_per_class: usize,
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
    /// Classifier-free guidance scale of the real (teacher) score in the generator's VSD
    /// gradient (1 = none); match the teacher's evaluation guidance.
    pub real_guidance: f64,
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
    /// Adversarial distribution matching settings (stage 2).
    pub adm: AdmConfig,
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
            kmeans_samples_per_class: 64,
            iterations: 2000,
            batch_size: 256,
            ttur: 5,
            grid_levels: 1000,
            sigma_min: 0.002,
            sigma_max: 80.0,
            rho: 7.0,
            t_min_index: 20,
            t_max_index: 980,
            real_guidance: 1.0,
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
            adm: AdmConfig::default(),
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
        if !(self.real_guidance.is_finite() && self.real_guidance >= 0.0) {
            return bad(
                "real_guidance",
                "must be a finite number ≥ 0 (1 = no guidance)",
            );
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
    /// Which stage this job runs.
    pub stage: Stage,
    /// Real data of the student's classes (ADM's discriminator), and its id for hashes.
    pub real_data: Option<&'a dyn TrainingData>,
    pub data_id: &'a str,
    /// ADM: the DM stage directory whose last checkpoint the stage starts from.
    pub resume_from: Option<&'a Path>,
}

/// The distillation stages that train a generator against a fake score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Distribution matching (stage 1).
    Dm,
    /// Adversarial distribution matching (stage 2), resumed from DM.
    Adm,
}

/// Stage 2 (ADM) settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmConfig {
    pub iterations: u64,
    /// Learning rates (lower than DM's); other optimiser settings are DM's.
    pub generator_lr: f64,
    pub fake_lr: f64,
    /// w_G: weight of softplus(−D(fake)) in the generator loss (paper: 3e-3).
    pub generator_gan_weight: f64,
    /// w_D: weight of the discriminator loss in the fake-score step (paper: 1e-2).
    pub discriminator_gan_weight: f64,
    pub head: DiscHeadConfig,
}

impl Default for AdmConfig {
    fn default() -> Self {
        Self {
            iterations: 1000,
            generator_lr: 5e-5,
            fake_lr: 5e-5,
            generator_gan_weight: 3e-3,
            discriminator_gan_weight: 1e-2,
            head: DiscHeadConfig::default(),
        }
    }
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

/// Runs (or resumes, or reuses when finished) one stage (DM or ADM) of one student. Returns the
/// EMA generator and a summary; writes `model.json`/`model.safetensors` (EMA generator),
/// `train.json`, `stats.jsonl` and `checkpoints/` into `job.dir`. ADM starts from the last
/// checkpoint of the DM stage (`job.resume_from`) with its own learning rates and iterations.
pub fn distill_student(
    cfg: &DistillConfig,
    job: &StudentJob,
    on: &mut dyn FnMut(DistillProgress),
) -> Result<(EdmModel, TrainSummary)> {
    cfg.validate()?;
    let adm = job.stage == Stage::Adm;
    let classes = job.partition.classes_of(job.student);
    if classes.is_empty() {
        return Err(Error::Partition(format!(
            "student {} owns no condition",
            job.student
        )));
    }
    if adm && job.real_data.is_none() {
        return Err(Error::Invalid(
            "the ADM stage needs real data (the student's classes)".into(),
        ));
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
    // ADM is tied to the DM run it starts from and to its real data.
    let adm_id = adm.then(|| {
        let from = job
            .resume_from
            .and_then(|p| CheckpointDir::new(p).latest().ok().flatten())
            .map(|(_, s)| s.config_hash);
        (job.data_id, from)
    });
    let hash = config_hash(&(
        cfg,
        &job.partition.owner,
        job.student,
        job.seed,
        job.teacher_id,
        job.pairs.is_some(),
        init_id,
        adm_id,
    ));
    if let Some(done) = finished(dir, &hash, job.teacher.device())? {
        return Ok(done);
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
    // The discriminator head (ADM only) lives in its own store, stepped with the fake score.
    let mut head_vs = nn::VarStore::new(device);
    let head = if adm {
        let shape = fake.bottleneck_shape().ok_or_else(|| {
            Error::config(
                "model.net",
                "ADM needs a network with an encoder bottleneck (kind = \"unet\")",
            )
        })?;
        let _ = step_rng(job.seed, job.student as u64, 0x4EAD);
        Some(DiscHead::new(head_vs.root(), &shape, &cfg.adm.head))
    } else {
        None
    };
    let (g_cfg, f_cfg, iterations) = if adm {
        (
            AdamWConfig {
                lr: cfg.adm.generator_lr,
                ..cfg.generator_optimizer.clone()
            },
            AdamWConfig {
                lr: cfg.adm.fake_lr,
                ..cfg.fake_optimizer.clone()
            },
            cfg.adm.iterations,
        )
    } else {
        (
            cfg.generator_optimizer.clone(),
            cfg.fake_optimizer.clone(),
            cfg.iterations,
        )
    };
    let mut g_opt = AdamW::new(&generator.vs, g_cfg);
    let mut f_opt = AdamW::new(&fake.vs, f_cfg.clone());
    let mut h_opt = AdamW::new(&head_vs, f_cfg);
    let ckpts = CheckpointDir::new(dir);
    let (mut start, mut secs_before) = (0, 0.0);
    if let Some((cdir, state)) = ckpts.resume(&hash)? {
        generator.load_weights(&cdir.join("generator.safetensors"))?;
        ema.load_weights(&cdir.join("ema.safetensors"))?;
        fake.load_weights(&cdir.join("fake.safetensors"))?;
        g_opt.load(&cdir.join("generator_optim.safetensors"))?;
        f_opt.load(&cdir.join("fake_optim.safetensors"))?;
        if adm {
            checkpoint::load_varstore(&mut head_vs, &cdir.join("head.safetensors"))?;
            h_opt.load(&cdir.join("head_optim.safetensors"))?;
        }
        start = state.step;
        secs_before = state.train_seconds();
    } else if adm {
        // Fresh ADM stage: resume the networks (not the optimisers) from the DM stage.
        let from = job.resume_from.ok_or_else(|| {
            Error::Invalid("the ADM stage needs the DM stage's directory to start from".into())
        })?;
        let (cdir, _) = CheckpointDir::new(from).latest()?.ok_or_else(|| {
            Error::Invalid(format!(
                "{} has no DM checkpoint to start the ADM stage from; run the dm stage first",
                from.display()
            ))
        })?;
        generator.load_weights(&cdir.join("generator.safetensors"))?;
        ema.load_weights(&cdir.join("ema.safetensors"))?;
        fake.load_weights(&cdir.join("fake.safetensors"))?;
    }
    run_loop(
        cfg,
        job,
        on,
        Models {
            generator,
            ema,
            fake,
            head,
            head_vs,
        },
        Opts {
            g: g_opt,
            f: f_opt,
            h: h_opt,
        },
        start,
        secs_before,
        iterations,
        hash,
        classes,
    )
}

struct Models {
    generator: EdmModel,
    ema: EdmModel,
    fake: EdmModel,
    head: Option<DiscHead>,
    head_vs: nn::VarStore,
}

struct Opts {
    g: AdamW,
    f: AdamW,
    h: AdamW,
}

/// Running sums of the logged quantities between two log lines.
#[derive(Default)]
struct Window {
    vsd: f64,
    fake: f64,
    reg: f64,
    g_norm: f64,
    f_norm: f64,
    gan_g: f64,
    gan_d: f64,
    d_real: f64,
    d_fake: f64,
    grad_ratio: f64,
    n_ratio: u64,
    n_gen: u64,
    n_fake: u64,
}

#[allow(clippy::too_many_arguments)]
fn run_loop(
    cfg: &DistillConfig,
    job: &StudentJob,
    on: &mut dyn FnMut(DistillProgress),
    m: Models,
    mut o: Opts,
    start: u64,
    secs_before: f64,
    iterations: u64,
    hash: String,
    classes: Vec<i64>,
) -> Result<(EdmModel, TrainSummary)> {
    let Models {
        generator,
        ema,
        fake,
        head,
        head_vs,
    } = m;
    let adm = head.is_some();
    let stage = if adm { "adm" } else { "dm" };
    let dir = job.dir;
    let device = job.teacher.device();
    let ckpts = CheckpointDir::new(dir);
    let grid = cfg.grid();
    let sseed = step_seed(
        job.seed,
        job.student as u64,
        if adm { 0xAD57 } else { 0xD157 },
    );
    let mut stats = StatsLog::open(&dir.join("stats.jsonl"), start)?;
    let bs = cfg.batch_size;
    let mut shape = vec![bs as i64];
    shape.extend(job.teacher.spec.net.sample_shape());
    let real = Guided {
        inner: job.teacher,
        scale: cfg.real_guidance,
        null_label: job.teacher.num_classes(),
    };
    let t0 = Instant::now();
    let mut window = Instant::now();
    let mut w = Window::default();
    let mut last_fake = f64::NAN;
    on(DistillProgress::Start {
        step: start,
        total: iterations,
    });
    for it in start..iterations {
        let mut rng = step_rng(sseed, it, STREAM_STEP);
        let labels = Tensor::from_slice(&uniform_labels(bs, &classes, &mut rng)).to_device(device);
        let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
        let done = it + 1;
        let log_now = done % cfg.log_every.max(1) == 0 || done == iterations;
        if it % cfg.ttur == 0 {
            let x = generator.generate_t(&z, &labels, cfg.sigma_max, true);
            let sigma = grid.sample(bs as i64, cfg.t_min_index, cfg.t_max_index, device);
            let g = vsd_gradient(&x, &sigma, &labels, &real, &fake);
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
            if let Some(h) = &head {
                let sigma_gan = grid.sample(bs as i64, 0, cfg.grid_levels - 1, device);
                let (_, logits, _) = judge(&fake, h, &x, &sigma_gan, &labels, true)?;
                let gan = generator_gan_loss(&logits) * cfg.adm.generator_gan_weight;
                if w.n_ratio == 0 {
                    // Health signal, once per log window (its first generator step, so it exists
                    // whatever log_every and ttur are): |∂(GAN)/∂x| against |∂(VSD)/∂x| = |g|/numel.
                    let gx = Tensor::run_backward(&[&gan], &[&x], true, false);
                    let gan_norm = gx[0].norm().double_value(&[]);
                    let vsd_norm = g.norm().double_value(&[]) / x.numel() as f64;
                    w.grad_ratio += gan_norm / vsd_norm.max(1e-30);
                    w.n_ratio += 1;
                }
                w.gan_g += gan.double_value(&[]);
                loss += gan;
            }
            o.g.zero_grad();
            loss.backward();
            let gn = o.g.step();
            let v = vsd.double_value(&[]);
            if !gn.is_finite() || !v.is_finite() || !reg_v.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("student {} generator loss/gradient ({stage})", job.student),
                    step: it,
                });
            }
            ema_update(&ema.vs, &generator.vs, cfg.ema_decay);
            w.vsd += v;
            w.reg += reg_v;
            w.g_norm += gn;
            w.n_gen += 1;
        }
        let x = tch::no_grad(|| generator.generate_t(&z, &labels, cfg.sigma_max, false));
        let sigma = grid.sample(bs as i64, 0, cfg.grid_levels - 1, device);
        let (f_loss, fl) = match (&head, job.real_data) {
            (Some(h), Some(data)) => {
                // One forward of the fake score gives both its denoising loss and D(fake).
                let (d, logits_fake, _) = judge(&fake, h, &x, &sigma, &labels, true)?;
                let wgt = fake.spec.precond.loss_weight(&sigma);
                let dsm = (broadcast_to(&wgt, &x) * (d - &x).square()).mean(Kind::Float);
                let (real, real_labels) = data.batch(bs, &classes, &mut rng, device)?;
                let sigma_r = grid.sample(bs as i64, 0, cfg.grid_levels - 1, device);
                let (_, logits_real, _) = judge(&fake, h, &real, &sigma_r, &real_labels, true)?;
                let disc = discriminator_loss(&logits_fake, &logits_real)
                    * cfg.adm.discriminator_gan_weight;
                w.gan_d += disc.double_value(&[]);
                w.d_real += logits_real.mean(Kind::Float).double_value(&[]);
                w.d_fake += logits_fake.mean(Kind::Float).double_value(&[]);
                let fl = dsm.double_value(&[]);
                (dsm + disc, fl)
            }
            _ => {
                let l = fake_score_loss(&fake, &x, &sigma, &labels);
                let fl = l.double_value(&[]);
                (l, fl)
            }
        };
        o.f.zero_grad();
        o.h.zero_grad();
        f_loss.backward();
        let fnorm = o.f.step();
        if adm {
            o.h.step();
        }
        if !fl.is_finite() || !fnorm.is_finite() {
            return Err(Error::NonFinite {
                what: format!("student {} fake-score loss/gradient ({stage})", job.student),
                step: it,
            });
        }
        last_fake = fl;
        w.fake += fl;
        w.f_norm += fnorm;
        w.n_fake += 1;
        if log_now {
            let secs = window.elapsed().as_secs_f64().max(1e-9);
            let ng = w.n_gen.max(1) as f64;
            let nf = w.n_fake.max(1) as f64;
            let ev = DistillProgress::Step {
                step: done,
                vsd_loss: w.vsd / ng,
                fake_loss: w.fake / nf,
                regression_loss: w.reg / ng,
                generator_grad_norm: w.g_norm / ng,
                fake_grad_norm: w.f_norm / nf,
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
                let mut rec = serde_json::json!({
                    "stage": stage, "student": job.student, "step": done, "vsd_loss": vsd_loss,
                    "fake_loss": fake_loss, "regression_loss": regression_loss,
                    "generator_grad_norm": generator_grad_norm, "fake_grad_norm": fake_grad_norm,
                    "images_per_s": images_per_s, "generator_lr": o.g.current_lr(), "fake_lr": o.f.current_lr(),
                });
                if adm {
                    rec["gan_generator_loss"] = (w.gan_g / ng).into();
                    rec["gan_discriminator_loss"] = (w.gan_d / nf).into();
                    rec["d_real_mean"] = (w.d_real / nf).into();
                    rec["d_fake_mean"] = (w.d_fake / nf).into();
                    rec["gan_to_vsd_grad_ratio"] = (w.grad_ratio / w.n_ratio.max(1) as f64).into();
                }
                stats.log(&rec)?;
            }
            on(ev);
            w = Window::default();
            window = Instant::now();
        }
        // Preemption (SIGTERM): checkpoint at this step and stop; a rerun resumes here.
        let stop = crate::train::stop::stop_requested() && done < iterations;
        if done % cfg.checkpoint_every.max(1) == 0 || done == iterations || stop {
            let state = TrainState {
                format_version: FORMAT_VERSION,
                step: done,
                seed: job.seed,
                config_hash: hash.clone(),
                extra: serde_json::json!({ "train_seconds": secs_before + t0.elapsed().as_secs_f64(), "loss": fl }),
            };
            ckpts.save(&state, |d| {
                checkpoint::save_varstore(&generator.vs, &d.join("generator.safetensors"))?;
                checkpoint::save_varstore(&ema.vs, &d.join("ema.safetensors"))?;
                checkpoint::save_varstore(&fake.vs, &d.join("fake.safetensors"))?;
                o.g.save(&d.join("generator_optim.safetensors"))?;
                o.f.save(&d.join("fake_optim.safetensors"))?;
                if adm {
                    checkpoint::save_varstore(&head_vs, &d.join("head.safetensors"))?;
                    o.h.save(&d.join("head_optim.safetensors"))?;
                }
                Ok(())
            })?;
            if stop {
                return Err(Error::Interrupted { step: done });
            }
        }
    }
    let summary = finish(dir, &ckpts, &ema, iterations, last_fake, job.seed, hash)?;
    Ok((ema, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_a_bad_real_guidance() {
        for g in [f64::NAN, -1.0, f64::INFINITY] {
            let e = DistillConfig {
                real_guidance: g,
                ..Default::default()
            }
            .validate()
            .unwrap_err();
            assert!(e.to_string().contains("distill.real_guidance"), "{e}");
        }
        assert!(DistillConfig::default().validate().is_ok());
    }
}
