//! Consistency distillation (CD; Song et al. 2023, arXiv 2303.01469), the alternative
//! per-student method, in EDM notation.
//!
//! The consistency function f(x, σ) = c_skip'(σ)·x + c_out'(σ)·F(c_in·x; c_noise, c), with
//! c_skip' = σ_d²/((σ − σ_min)² + σ_d²) and c_out' = (σ − σ_min)·σ_d/√(σ² + σ_d²), meets the
//! boundary condition f(x, σ_min) = x. The student is an ordinary EDM model D = c_skip·x +
//! c_out·F, so f is computed from D: with r = c_out'/c_out = (σ − σ_min)/σ,
//! f = (c_skip' − r·c_skip)·x + r·D ([`consistency`]). A step draws adjacent grid levels
//! σ_n < σ_{n+1}, noises real data x_{n+1} = x + σ_{n+1}·ε, takes one teacher Heun step to
//! x̂_n ([`heun_step`]) and minimises d(f_θ(x_{n+1}, σ_{n+1}), sg(f_θ⁻(x̂_n, σ_n))), θ⁻ an EMA of
//! θ, d = L2 or pseudo-Huber ([`cd_loss`]). The one-step sample is f(σ_max·z, σ_max); the
//! exported model is D, whose one-step output D(σ_max·z, σ_max) differs from f by the factor
//! r(σ_max) = 1 − σ_min/σ_max (2.5e-5 for 0.002/80) and c_skip-terms below 1e-8.
//!
//! For data N(μ, s²) the ideal consistency function is the ODE map to σ_min,
//! f*(x, σ) = μ + (x − μ)·√(s² + σ_min²)/√(s² + σ²); the tests check the loss vanishes there.

use super::config::DistillConfig;
use crate::data::TrainingData;
use crate::diffusion::precond::broadcast_to;
use crate::diffusion::{Denoiser, Guided, KarrasGrid};
use crate::model::EdmModel;
use crate::nets::NetConfig;
use crate::train::{
    ema_update, step_rng, step_seed, AdamW, AdamWConfig, LogLine, Method, Slot, StepReport,
};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Kind, Tensor};

/// The distance between the online and the target consistency outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CdDistance {
    /// Mean squared error.
    L2,
    /// √(‖a − b‖² + c²) − c per sample (Song & Dhariwal 2023), averaged over the batch.
    PseudoHuber,
}

/// The `[distill.cd]` table: consistency distillation settings. The grid's σ_min, σ_max and ρ
/// are the `[distill]` table's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdConfig {
    pub iterations: u64,
    pub batch_size: usize,
    /// Number N of levels of the Karras grid whose adjacent pairs are the CD steps.
    pub levels: usize,
    pub optimizer: AdamWConfig,
    /// Decay μ of the target network θ⁻ (an EMA of θ; 0 = stop-gradient θ).
    pub target_decay: f64,
    /// Decay of the exported EMA generator.
    pub ema_decay: f64,
    pub distance: CdDistance,
    /// The pseudo-Huber constant c.
    pub huber_c: f64,
    /// Classifier-free guidance of the teacher's Heun step (1 = none).
    pub guidance: f64,
}

impl Default for CdConfig {
    fn default() -> Self {
        Self {
            iterations: 2000,
            batch_size: 256,
            levels: 18,
            optimizer: AdamWConfig {
                lr: 1e-4,
                ..Default::default()
            },
            target_decay: 0.95,
            ema_decay: 0.99,
            distance: CdDistance::L2,
            huber_c: 0.03,
            guidance: 1.0,
        }
    }
}

impl CdConfig {
    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::config(format!("distill.cd.{f}"), m.to_string()));
        if self.iterations == 0 || self.batch_size == 0 {
            return bad("iterations / batch_size", "must be ≥ 1");
        }
        if self.levels < 2 {
            return bad("levels", "must be ≥ 2");
        }
        if !(0.0..1.0).contains(&self.target_decay) || !(0.0..1.0).contains(&self.ema_decay) {
            return bad("target_decay / ema_decay", "must be in [0, 1)");
        }
        if !(self.huber_c.is_finite() && self.huber_c > 0.0) {
            return bad("huber_c", "must be a finite number > 0");
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return bad("guidance", "must be a finite number ≥ 0 (1 = no guidance)");
        }
        Ok(())
    }
}

/// The settings the CD stage computes with: what its hash covers.
#[derive(Serialize)]
pub(crate) struct CdSemantics<'a> {
    cd: &'a CdConfig,
    grid: (f64, f64, f64),
    student_net: &'a Option<NetConfig>,
}

impl DistillConfig {
    /// The part of the config the CD stage's hash covers.
    pub(crate) fn cd_semantics(&self) -> CdSemantics<'_> {
        CdSemantics {
            cd: &self.cd,
            grid: (self.sigma_min, self.sigma_max, self.rho),
            student_net: &self.student_net,
        }
    }
}

/// The boundary-condition coefficients `(a, r)` with f = a·x + r·D: r = (σ − σ_min)/σ and
/// a = c_skip' − r·c_skip. `sigma`: `[B]` → two `[B]` tensors.
pub fn boundary_coefficients(sigma: &Tensor, sigma_min: f64, sigma_data: f64) -> (Tensor, Tensor) {
    let sd2 = sigma_data * sigma_data;
    let r = (sigma - sigma_min) / sigma;
    let c_skip_cd = (sigma - sigma_min).square().g_add_scalar(sd2).reciprocal() * sd2;
    let c_skip = (sigma.square() + sd2).reciprocal() * sd2;
    (c_skip_cd - &r * c_skip, r)
}

/// The consistency function of an EDM model: f(x, σ) = a(σ)·x + r(σ)·D(x; σ, c).
/// `x`: `[B, ...]`, `sigma`: `[B]`, `labels`: `[B]` → `[B, ...]`.
pub fn consistency(
    model: &EdmModel,
    x: &Tensor,
    sigma: &Tensor,
    labels: &Tensor,
    sigma_min: f64,
    train: bool,
) -> Tensor {
    let d = model.denoise_t(x, sigma, labels, train);
    let (a, r) = boundary_coefficients(sigma, sigma_min, model.spec.precond.sigma_data);
    broadcast_to(&a, x) * x + broadcast_to(&r, x) * d
}

/// One Heun step of the probability-flow ODE dx/dσ = (x − D(x; σ))/σ from `from` to `to`
/// (both `[B]`, > 0). `x`: `[B, ...]` → `[B, ...]`.
pub fn heun_step(
    den: &dyn Denoiser,
    x: &Tensor,
    from: &Tensor,
    to: &Tensor,
    labels: &Tensor,
) -> Tensor {
    let (sf, st) = (broadcast_to(from, x), broadcast_to(to, x));
    let h = &st - &sf;
    let d1 = (x - den.denoise(x, from, labels)) / &sf;
    let xe = x + &h * &d1;
    let d2 = (&xe - den.denoise(&xe, to, labels)) / &st;
    x + h * (d1 + d2) * 0.5
}

/// The distance `d(a, b)`, averaged over the batch (`[B, ...]` each → scalar).
pub fn distance(a: &Tensor, b: &Tensor, kind: CdDistance, huber_c: f64) -> Tensor {
    match kind {
        CdDistance::L2 => (a - b).square().mean(Kind::Float),
        CdDistance::PseudoHuber => {
            let sq = (a - b)
                .square()
                .flatten(1, -1)
                .sum_dim_intlist(1, false, Kind::Float);
            ((sq + huber_c * huber_c).sqrt() - huber_c).mean(Kind::Float)
        }
    }
}

/// The CD loss of one batch: clean `x0` (`[B, ...]`), `noise` like it, adjacent levels
/// `sigma_n < sigma_next` (`[B]` each). `online`/`target` are the consistency functions
/// f_θ and f_θ⁻ of (x, σ); the target side and the teacher step carry no gradient.
#[allow(clippy::too_many_arguments)]
pub fn cd_loss(
    online: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    target: &dyn Fn(&Tensor, &Tensor) -> Tensor,
    teacher: &dyn Denoiser,
    x0: &Tensor,
    noise: &Tensor,
    labels: &Tensor,
    sigma_n: &Tensor,
    sigma_next: &Tensor,
    kind: CdDistance,
    huber_c: f64,
) -> Tensor {
    let x_next = x0 + noise * broadcast_to(sigma_next, x0);
    let goal = tch::no_grad(|| {
        let x_hat = heun_step(teacher, &x_next, sigma_next, sigma_n, labels);
        target(&x_hat, sigma_n)
    });
    distance(&online(&x_next, sigma_next), &goal, kind, huber_c)
}

const STREAM_STEP: u64 = 13;

/// The CD stage of one student: online generator θ, target θ⁻ and an exported EMA.
pub struct CdMethod<'a> {
    cfg: &'a DistillConfig,
    student: usize,
    teacher: &'a dyn Denoiser,
    null_label: i64,
    data: &'a dyn TrainingData,
    classes: Vec<i64>,
    generator: EdmModel,
    target: EdmModel,
    ema: EdmModel,
    opt: AdamW,
    /// The grid's σ, ascending, `[levels]`.
    table: Tensor,
    step_seed: u64,
    loss_sum: f64,
    loss_n: u64,
    last_grad_norm: f64,
}

impl<'a> CdMethod<'a> {
    /// `generator` is the starting point (usually the teacher's weights); `null_label` is the
    /// teacher's label for "no condition" (its class count) for guidance.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &'a DistillConfig,
        teacher: &'a dyn Denoiser,
        null_label: i64,
        data: &'a dyn TrainingData,
        classes: Vec<i64>,
        student: usize,
        seed: u64,
        generator: EdmModel,
    ) -> Result<Self> {
        cfg.cd.validate()?;
        let device = generator.device();
        let copy = |src: &EdmModel| -> Result<EdmModel> {
            let mut m = EdmModel::from_spec(&src.spec, device);
            m.copy_from(src)?;
            m.vs.freeze();
            Ok(m)
        };
        let (target, ema) = (copy(&generator)?, copy(&generator)?);
        let opt = AdamW::new(&generator.vs, cfg.cd.optimizer.clone());
        let grid = KarrasGrid::new(cfg.cd.levels, cfg.sigma_min, cfg.sigma_max, cfg.rho);
        let sigmas: Vec<f32> = (0..grid.len()).map(|i| grid.sigma(i) as f32).collect();
        Ok(Self {
            cfg,
            student,
            teacher,
            null_label,
            data,
            classes,
            generator,
            target,
            ema,
            opt,
            table: Tensor::from_slice(&sigmas).to_device(device),
            step_seed: step_seed(seed, student as u64, 0xCD57),
            loss_sum: 0.0,
            loss_n: 0,
            last_grad_norm: f64::NAN,
        })
    }

    /// The exported EMA generator.
    pub fn into_ema(self) -> EdmModel {
        self.ema
    }
}

impl Method for CdMethod<'_> {
    type Output = EdmModel;

    fn stage(&self) -> &str {
        "cd"
    }

    fn describe(&self) -> String {
        format!("student {} (cd)", self.student)
    }

    fn total_steps(&self) -> u64 {
        self.cfg.cd.iterations
    }

    fn step(&mut self, it: u64) -> Result<StepReport> {
        let c = &self.cfg.cd;
        let device = self.generator.device();
        let mut rng = step_rng(self.step_seed, it, STREAM_STEP);
        let (x0, labels) = self
            .data
            .batch(c.batch_size, &self.classes, &mut rng, device)?;
        let n = Tensor::randint(
            c.levels as i64 - 1,
            [c.batch_size as i64],
            (Kind::Int64, device),
        );
        let sigma_n = self.table.index_select(0, &n);
        let sigma_next = self.table.index_select(0, &(&n + 1));
        let noise = x0.randn_like();
        let teacher = Guided {
            inner: self.teacher,
            scale: c.guidance,
            null_label: self.null_label,
        };
        let smin = self.cfg.sigma_min;
        let (g, t) = (&self.generator, &self.target);
        let loss = cd_loss(
            &|x, s| consistency(g, x, s, &labels, smin, true),
            &|x, s| consistency(t, x, s, &labels, smin, false),
            &teacher,
            &x0,
            &noise,
            &labels,
            &sigma_n,
            &sigma_next,
            c.distance,
            c.huber_c,
        );
        self.opt.zero_grad();
        loss.backward();
        let gn = self.opt.step();
        let lv = loss.double_value(&[]);
        if lv.is_finite() && gn.is_finite() {
            ema_update(&self.target.vs, &self.generator.vs, c.target_decay);
            ema_update(&self.ema.vs, &self.generator.vs, c.ema_decay);
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
        let loss = self.loss_sum / n;
        let ips = n * self.cfg.cd.batch_size as f64 / secs;
        let mut r = serde_json::Map::new();
        r.insert("student".into(), self.student.into());
        r.insert("cd_loss".into(), loss.into());
        r.insert("grad_norm".into(), self.last_grad_norm.into());
        r.insert("lr".into(), self.opt.current_lr().into());
        r.insert("images_per_s".into(), ips.into());
        (self.loss_sum, self.loss_n) = (0.0, 0);
        LogLine {
            loss,
            examples_per_s: ips,
            record: r,
        }
    }

    fn state(&mut self) -> Vec<(&'static str, Slot<'_>)> {
        vec![
            ("generator", Slot::Vars(&mut self.generator.vs)),
            ("target", Slot::Vars(&mut self.target.vs)),
            ("ema", Slot::Vars(&mut self.ema.vs)),
            ("generator_optim", Slot::Optim(&mut self.opt)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::denoiser::GaussianDenoiser;
    use crate::diffusion::EdmPrecond;
    use crate::nets::MlpConfig;
    use crate::train::Runner;
    use rand_chacha::ChaCha8Rng;
    use tch::{nn, Device};

    const MU: f64 = 1.5;
    const S: f64 = 0.6;
    const SMIN: f64 = 0.002;

    fn teacher() -> GaussianDenoiser {
        GaussianDenoiser {
            mean: Tensor::from_slice(&[MU as f32]),
            std: S,
        }
    }

    /// f(x, σ) = m + (x − m)·√(q² + σ_min²)/√(q² + σ²): the ideal consistency function of
    /// N(m, q²); f* at m = μ, q = s.
    fn family(m: &Tensor, q: &Tensor, x: &Tensor, sigma: &Tensor) -> Tensor {
        let ratio = (q.square() + SMIN * SMIN).sqrt() * (sigma.square() + q.square()).rsqrt();
        m + (x - m) * broadcast_to(&ratio, x)
    }

    /// CD loss and gradient norm of `family` at (m, q) over every adjacent pair of a 200-level
    /// Karras grid (fine enough that the teacher's Heun steps are nearly exact).
    fn loss_and_grad(m0: f64, q0: f64) -> (f64, f64) {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = vs.root().var("m", &[1], nn::Init::Const(m0));
        let q = vs.root().var("q", &[1], nn::Init::Const(q0));
        let levels = 200;
        let grid = KarrasGrid::new(levels, SMIN, 80.0, 7.0);
        let per = 64;
        let at = |r: std::ops::Range<usize>| {
            let v: Vec<f32> = r
                .flat_map(|i| std::iter::repeat_n(grid.sigma(i) as f32, per))
                .collect();
            Tensor::from_slice(&v)
        };
        let (lo, hi) = (at(0..levels - 1), at(1..levels));
        let n = lo.size()[0];
        let x0 = Tensor::randn([n, 1], (Kind::Float, Device::Cpu)) * S + MU;
        let noise = Tensor::randn([n, 1], (Kind::Float, Device::Cpu));
        let labels = Tensor::zeros([n], (Kind::Int64, Device::Cpu));
        let (md, qd) = (m.detach(), q.detach());
        let loss = cd_loss(
            &|x, s| family(&m, &q, x, s),
            &|x, s| family(&md, &qd, x, s),
            &teacher(),
            &x0,
            &noise,
            &labels,
            &lo,
            &hi,
            CdDistance::L2,
            0.03,
        );
        loss.backward();
        let g = (m.grad().square() + q.grad().square())
            .sum(Kind::Float)
            .sqrt();
        (loss.double_value(&[]), g.double_value(&[]))
    }

    #[test]
    fn the_ideal_consistency_function_of_a_gaussian_has_zero_loss_and_gradient() {
        let _rng = crate::rng_guard();
        tch::manual_seed(3);
        let (l_star, g_star) = loss_and_grad(MU, S);
        let (l_off, g_off) = loss_and_grad(MU + 0.3, 0.8 * S);
        assert!(
            l_star < 1e-4 * l_off && g_star < 1e-2 * g_off,
            "at f*: loss {l_star:.3e}, |grad| {g_star:.3e}; off f*: {l_off:.3e}, {g_off:.3e}"
        );
    }

    #[test]
    fn the_consistency_function_meets_the_boundary_condition() {
        let _rng = crate::rng_guard();
        tch::manual_seed(0);
        let net = NetConfig::Mlp(MlpConfig {
            dim: 2,
            num_classes: 3,
            width: 16,
            depth: 1,
            noise_freqs: 4,
            cond: Default::default(),
        });
        let m = EdmModel::new(&net, EdmPrecond::default(), Device::Cpu);
        let x = Tensor::randn([6, 2], (Kind::Float, Device::Cpu));
        let l = Tensor::zeros([6], (Kind::Int64, Device::Cpu));
        let s = Tensor::full([6], SMIN, (Kind::Float, Device::Cpu));
        let f = consistency(&m, &x, &s, &l, SMIN, false);
        assert!(f.allclose(&x, 1e-6, 1e-6, false));
        // Away from σ_min it is the model's own output scaled as the EDM form implies.
        let s = Tensor::full([6], 1.0, (Kind::Float, Device::Cpu));
        let (a, r) = boundary_coefficients(&s, SMIN, 0.5);
        let d = m.denoise_t(&x, &s, &l, false);
        let f = consistency(&m, &x, &s, &l, SMIN, false);
        let want = broadcast_to(&a, &x) * &x + broadcast_to(&r, &x) * d;
        assert!(f.allclose(&want, 1e-6, 1e-6, false));
        // c_skip' and c_out' by hand at σ = 1: a + r·c_skip = σ_d²/((1 − σ_min)² + σ_d²).
        let (a, r) = (a.double_value(&[0]), r.double_value(&[0]));
        assert!((r - (1.0 - SMIN)).abs() < 1e-6);
        assert!((a + r * 0.25 / 1.25 - 0.25 / ((1.0 - SMIN).powi(2) + 0.25)).abs() < 1e-6);
    }

    /// One-dimensional N(μ, s²) data with a single class.
    struct Gaussian;
    impl TrainingData for Gaussian {
        fn num_classes(&self) -> i64 {
            1
        }
        fn sample_shape(&self) -> Vec<i64> {
            vec![1]
        }
        fn batch(
            &self,
            n: usize,
            _: &[i64],
            _: &mut ChaCha8Rng,
            device: Device,
        ) -> Result<(Tensor, Tensor)> {
            let x = Tensor::randn([n as i64, 1], (Kind::Float, device)) * S + MU;
            Ok((x, Tensor::zeros([n as i64], (Kind::Int64, device))))
        }
    }

    /// Mean and std of 4000 one-step samples f(σ_max·z, σ_max).
    fn one_step_moments(m: &EdmModel) -> (f64, f64) {
        tch::manual_seed(11);
        let z = Tensor::randn([4000, 1], (Kind::Float, Device::Cpu));
        let l = Tensor::zeros([4000], (Kind::Int64, Device::Cpu));
        let s = Tensor::full([4000], 80.0, (Kind::Float, Device::Cpu));
        let x = tch::no_grad(|| consistency(m, &(z * 80.0), &s, &l, SMIN, false));
        (
            x.mean(Kind::Float).double_value(&[]),
            x.std(true).double_value(&[]),
        )
    }

    #[test]
    fn a_few_hundred_cd_steps_move_one_step_samples_towards_the_data() {
        let _rng = crate::rng_guard();
        tch::manual_seed(2);
        let net = NetConfig::Mlp(MlpConfig {
            dim: 1,
            num_classes: 1,
            width: 64,
            depth: 2,
            noise_freqs: 8,
            cond: Default::default(),
        });
        let g = EdmModel::new(&net, EdmPrecond::default(), Device::Cpu);
        let (m0, s0) = one_step_moments(&g);
        let cfg = DistillConfig {
            cd: CdConfig {
                iterations: 400,
                batch_size: 256,
                optimizer: AdamWConfig {
                    lr: 3e-3,
                    ..Default::default()
                },
                target_decay: 0.9,
                ema_decay: 0.9,
                ..Default::default()
            },
            ..Default::default()
        };
        let t = teacher();
        let mut method = CdMethod::new(&cfg, &t, 1, &Gaussian, vec![0], 0, 0, g).unwrap();
        let dir = tempfile::tempdir().unwrap();
        Runner::new(dir.path(), "h".into(), 0, 1000, 100)
            .run(&mut method, &mut |_| {})
            .unwrap();
        let (m1, s1) = one_step_moments(&method.into_ema());
        assert!(
            (m1 - MU).abs() < 0.3 * (m0 - MU).abs() && (s1 - S).abs() < 0.5 * (s0 - S).abs(),
            "one-step mean {m0:.3} → {m1:.3} (data {MU}), std {s0:.3} → {s1:.3} (data {S})"
        );
    }
}
