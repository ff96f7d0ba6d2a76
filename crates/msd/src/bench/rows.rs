//! The timed rows of `msd bench`: the networks and inputs ([`Ctx`]) and one function per row.

use super::{median_ms_warm, BenchError, Key};
use crate::diffusion::precond::broadcast_to;
use crate::diffusion::{sample, Denoiser, Guided, SamplerConfig};
use crate::distill::dm::{DmMethod, DmParts};
use crate::distill::DistillConfig;
use crate::model::EdmModel;
use crate::nets::Precision;
use crate::teacher::per_sample_mean;
use crate::train::{AdamW, AdamWConfig, Method};
use tch::{Device, Kind, Tensor};

/// Inputs and networks of the timed rows.
pub(crate) struct Ctx {
    pub teacher: EdmModel,
    pub generator: EdmModel,
    pub shape: Vec<i64>,
    pub classes: i64,
    pub guidance: f64,
    pub dm_batch: i64,
    pub reps: usize,
}

fn opts() -> (Kind, Device) {
    (Kind::Float, Device::Cpu)
}

impl Ctx {
    fn noise(&self, b: i64) -> Tensor {
        let mut s = vec![b];
        s.extend(&self.shape);
        Tensor::randn(s.as_slice(), opts())
    }

    fn labels(&self, b: i64) -> Tensor {
        Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(self.classes)
    }

    fn student_one_step(&self, b: i64, p: Precision) -> Result<f64, BenchError> {
        let m = self.generator.copy_in(p)?;
        let (z, l) = (self.noise(b), self.labels(b));
        Ok(median_ms_warm(2, self.reps, || {
            let _ = tch::no_grad(|| m.generate(&z, &l, 80.0));
        }))
    }

    /// The teacher train step; in bf16 the forward/backward run on a bf16 shadow whose gradients
    /// are added to the f32 master before the step, then the shadow is re-synced.
    fn train_step(&self, b: i64, p: Precision) -> Result<f64, BenchError> {
        let master = self.teacher.copy_in(Precision::F32)?;
        let mut shadow = (p != Precision::F32)
            .then(|| master.copy_in(p))
            .transpose()?;
        let mut opt = AdamW::new(&master.vs, AdamWConfig::default());
        let (x, l) = (self.noise(b), self.labels(b));
        let sd = master.spec.precond.sigma_data;
        let mut err = None;
        let ms = median_ms_warm(2, self.reps, || {
            let sigma = (Tensor::randn([b], opts()) * 1.2 - 1.2).exp();
            let noisy = &x + x.randn_like() * broadcast_to(&sigma, &x);
            let net = shadow.as_ref().unwrap_or(&master);
            let d = net.denoise_t(&noisy, &sigma, &l, true);
            let w = (sigma.square() + sd * sd) / (&sigma * sd).square();
            let loss = (w * per_sample_mean(&(d - &x).square())).mean(Kind::Float);
            opt.zero_grad();
            loss.backward();
            if let Some(s) = shadow.as_mut() {
                let r = EdmModel::take_grads_from(&master, s);
                opt.step();
                err = err.take().or(r.and_then(|_| s.sync_from(&master)).err());
            } else {
                opt.step();
            }
        });
        match err {
            Some(e) => Err(e.into()),
            None => Ok(ms),
        }
    }

    /// One DM iteration of the training code itself ([`DmMethod`] with TTUR 1: a generator
    /// update whose VSD direction uses the guided teacher and the fake score, then a fake-score
    /// update) in `distill.precision = p` (bf16: bf16 copies of the teacher and the fake score,
    /// f32 masters, optimiser state and losses).
    fn dm_iteration(&self, p: Precision) -> Result<f64, BenchError> {
        let opt = AdamWConfig {
            lr: 2e-4,
            beta1: 0.0,
            beta2: 0.99,
            ..Default::default()
        };
        let cfg = DistillConfig {
            batch_size: self.dm_batch as usize,
            ttur: 1,
            regression_weight: 0.0,
            real_guidance: self.guidance,
            generator_optimizer: opt.clone(),
            fake_optimizer: opt,
            precision: p,
            ..Default::default()
        };
        let mut m = DmMethod::new(DmParts {
            cfg: &cfg,
            student: 0,
            classes: (0..self.classes).collect(),
            seed: 0,
            teacher: &self.teacher,
            pairs: None,
            generator: self.generator.copy_in(Precision::F32)?,
            adm: None,
            conditions: None,
        })?;
        let (mut it, mut err) = (0, None);
        let ms = median_ms_warm(2, self.reps, || {
            if let Err(e) = m.step(it) {
                err.get_or_insert(e);
            }
            it += 1;
        });
        match err {
            Some(e) => Err(e.into()),
            None => Ok(ms),
        }
    }

    fn teacher_heun(
        &self,
        b: i64,
        steps: usize,
        reps: usize,
        p: Precision,
    ) -> Result<f64, BenchError> {
        let t = self.teacher.copy_in(p)?;
        let cfg = SamplerConfig {
            steps,
            guidance: self.guidance,
            ..Default::default()
        };
        let (z, l) = (self.noise(b), self.labels(b));
        let mut err = None;
        // The sampler applies cfg.guidance itself (two network rows per sample).
        let ms = median_ms_warm(0, reps, || {
            if let Err(e) = sample(&t, &z, &l, &cfg) {
                err = Some(e);
            }
        });
        match err {
            Some(e) => Err(e.into()),
            None => Ok(ms),
        }
    }

    /// One guided teacher evaluation of batch `b` (the allocator row).
    pub fn teacher_forward(&self, b: i64, p: Precision) -> Result<f64, BenchError> {
        let t = self.teacher.copy_in(p)?;
        let g = Guided {
            inner: &t as &dyn Denoiser,
            scale: self.guidance,
            null_label: self.classes,
        };
        let (x, l) = (self.noise(b) * 10.0, self.labels(b));
        let s = Tensor::full([b], 10.0, opts());
        Ok(median_ms_warm(1, self.reps.clamp(1, 3), || {
            let _ = tch::no_grad(|| g.denoise(&x, &s, &l));
        }))
    }

    /// Times row `key` (teacher sampling rows with `teacher_steps` steps, `teacher_reps` runs).
    pub fn time(
        &self,
        key: &Key,
        teacher_steps: usize,
        teacher_reps: usize,
    ) -> Result<f64, BenchError> {
        let (name, b, p) = (key.0.as_str(), key.1, key.2);
        match name {
            "student_one_step" => self.student_one_step(b, p),
            "train_step" => self.train_step(b, p),
            "dm_iteration" => self.dm_iteration(p),
            n if n.starts_with("teacher_heun") => {
                self.teacher_heun(b, teacher_steps, teacher_reps, p)
            }
            "teacher_guided_forward" => self.teacher_forward(b, p),
            _ => Err(BenchError::Invalid(format!("unknown bench row {name}"))),
        }
    }
}
