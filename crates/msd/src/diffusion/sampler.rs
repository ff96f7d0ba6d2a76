//! Deterministic and stochastic samplers for the probability-flow ODE (Karras et al. 2022,
//! Algorithms 1 and 2): Euler, Heun, and Heun with churn.
//!
//! With N steps, Euler costs N network evaluations and Heun 2N − 1 (Heun-18 = 35 NFE).

use super::{karras_sigmas, Denoiser, Guided};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which ODE integrator to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SamplerMethod {
    Euler,
    Heun,
}

/// Sampler settings; the defaults are EDM's deterministic Heun-18.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplerConfig {
    pub method: SamplerMethod,
    pub steps: usize,
    pub sigma_min: f64,
    /// Where the teacher's ODE starts when it samples (evaluation, the server's teacher
    /// comparison, partition embeddings). The regression pairs instead start from the
    /// generator's σ_max, `distill.sigma_max`.
    pub sigma_max: f64,
    pub rho: f64,
    /// Stochasticity (0 = deterministic).
    pub s_churn: f64,
    pub s_tmin: f64,
    /// Upper end of the churn range; infinite by default, which JSON writes as `null` (read
    /// back as infinity).
    #[serde(deserialize_with = "null_as_infinity")]
    pub s_tmax: f64,
    pub s_noise: f64,
    /// Classifier-free guidance scale (1 = none), applied by [`sample`] itself with the
    /// denoiser's null label.
    pub guidance: f64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            method: SamplerMethod::Heun,
            steps: 18,
            sigma_min: 0.002,
            sigma_max: super::sigma::EDM_SIGMA_MAX,
            rho: 7.0,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
            guidance: 1.0,
        }
    }
}

/// JSON has no infinity: serde_json writes `null` for it; read `null` back as +∞.
fn null_as_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

impl SamplerConfig {
    /// Checks value ranges; errors name the field (`sampler.steps`, …).
    pub fn validate(&self) -> crate::Result<()> {
        use crate::limits::{check_positive, check_range, check_size, MAX_STEPS};
        check_size("sampler.steps", self.steps as u64, 1, MAX_STEPS as u64)?;
        // sigma_max has its own check (`diffusion::sigma::check_sigma_max`, in `RunConfig`).
        check_positive("sampler.sigma_min", self.sigma_min)?;
        check_positive("sampler.rho", self.rho)?;
        check_range("sampler.s_churn", self.s_churn, 0.0, 1e6)?;
        check_range("sampler.s_noise", self.s_noise, 0.0, 1e3)?;
        check_range("sampler.guidance", self.guidance, 0.0, 1e3)?;
        if self.s_tmin.is_nan() || self.s_tmin < 0.0 || self.s_tmax.is_nan() {
            return Err(crate::Error::config(
                "sampler.s_tmin / s_tmax",
                "must be numbers with 0 ≤ s_tmin (s_tmax may be infinite)",
            ));
        }
        Ok(())
    }

    /// Number of network evaluations per sample.
    pub fn nfe(&self) -> usize {
        match self.method {
            SamplerMethod::Euler => self.steps,
            SamplerMethod::Heun => 2 * self.steps - 1,
        }
    }
}

/// Integrates from `noise` (z ~ N(0, I), shape `[B, ...]`) to data with denoiser `den` for
/// `labels` (`[B]`), with classifier-free guidance `cfg.guidance` (through `den`'s null label;
/// pass the bare denoiser, never one already wrapped in [`Guided`]). Randomness (churn only)
/// comes from the global seeded torch generator. Returns `[B, ...]`; an error (naming
/// `sampler.guidance`) when guidance ≠ 1 is asked of a denoiser without a null label.
pub fn sample(
    den: &dyn Denoiser,
    noise: &Tensor,
    labels: &Tensor,
    cfg: &SamplerConfig,
) -> crate::Result<Tensor> {
    let guided = Guided::new(den, cfg.guidance, "sampler.guidance")?;
    Ok(integrate(&guided, noise, labels, cfg))
}

/// The integrator of [`sample`], on a denoiser already guided.
fn integrate(den: &dyn Denoiser, noise: &Tensor, labels: &Tensor, cfg: &SamplerConfig) -> Tensor {
    tch::no_grad(|| {
        let mut t = karras_sigmas(cfg.steps.max(1), cfg.sigma_min, cfg.sigma_max, cfg.rho);
        t.push(0.0);
        let b = noise.size()[0];
        let sig = |s: f64| Tensor::full([b], s, (Kind::Float, noise.device()));
        let d_at = |x: &Tensor, s: f64| den.denoise(x, &sig(s), labels);
        let n = t.len() - 1;
        let mut x = noise * t[0];
        for i in 0..n {
            let (t_cur, t_next) = (t[i], t[i + 1]);
            let gamma = if cfg.s_churn > 0.0 && t_cur >= cfg.s_tmin && t_cur <= cfg.s_tmax {
                (cfg.s_churn / n as f64).min(2f64.sqrt() - 1.0)
            } else {
                0.0
            };
            let t_hat = t_cur + gamma * t_cur;
            let x_hat = if gamma > 0.0 {
                &x + x.randn_like() * ((t_hat * t_hat - t_cur * t_cur).sqrt() * cfg.s_noise)
            } else {
                x.shallow_clone()
            };
            let d = (&x_hat - d_at(&x_hat, t_hat)) / t_hat;
            let mut x_next = &x_hat + &d * (t_next - t_hat);
            if cfg.method == SamplerMethod::Heun && t_next > 0.0 {
                let d2 = (&x_next - d_at(&x_next, t_next)) / t_next;
                x_next = &x_hat + (d + d2) * (0.5 * (t_next - t_hat));
            }
            x = x_next;
        }
        x
    })
}

/// One-step generation with a denoiser used as a generator: G(z, c) = D(σ·z; σ, c), `z`: `[B, ...]`.
pub fn one_step(den: &dyn Denoiser, z: &Tensor, labels: &Tensor, sigma: f64) -> Tensor {
    let s = Tensor::full([z.size()[0]], sigma, (Kind::Float, z.device()));
    den.denoise(&(z * sigma), &s, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::denoiser::{GaussianDenoiser, MixtureDenoiser};
    use tch::Device;

    fn moments(x: &Tensor) -> (f64, f64) {
        let x = x.to_kind(Kind::Double);
        (
            x.mean(Kind::Double).double_value(&[]),
            x.std(true).double_value(&[]),
        )
    }

    // With n samples, the sample mean has std s/√n and the sample std has std ≈ s/√(2n).
    // n = 40 000, s = 0.3: 1.5e-3 and 1.1e-3, so 5σ tolerances are 0.008 and 0.006. The
    // integrator's own error must be far below that, so these runs use 256 steps (Heun's error
    // on this problem is then < 1e-3; at 18 steps it is 6%, checked exactly below).
    fn run(method: SamplerMethod, steps: usize, churn: f64) {
        let _rng = crate::rng_guard();
        tch::manual_seed(7);
        let mu = 0.8;
        let s = 0.3;
        let den = GaussianDenoiser {
            mean: Tensor::from_slice(&[mu]).to_kind(Kind::Float),
            std: s,
        };
        let z = Tensor::randn([40_000, 1], (Kind::Float, Device::Cpu));
        let labels = Tensor::zeros([40_000], (Kind::Int64, Device::Cpu));
        let cfg = SamplerConfig {
            method,
            steps,
            s_churn: churn,
            ..Default::default()
        };
        let x = sample(&den, &z, &labels, &cfg).unwrap();
        let (m, sd) = moments(&x);
        assert!((m - mu).abs() < 0.008, "{method:?} churn {churn}: mean {m}");
        assert!((sd - s).abs() < 0.006, "{method:?} churn {churn}: std {sd}");
    }

    #[test]
    fn heun_reproduces_gaussian_moments() {
        run(SamplerMethod::Heun, 256, 0.0);
    }

    #[test]
    fn heun_with_churn_reproduces_gaussian_moments() {
        run(SamplerMethod::Heun, 256, 40.0);
    }

    /// For Gaussian data the ODE is linear, x − μ = k·σ·z, so each integrator maps z to
    /// μ + k_N·z with a factor computable exactly by running its recursion in f64.
    fn discrete_factor(cfg: &SamplerConfig, s: f64) -> f64 {
        let mut t = karras_sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho);
        t.push(0.0);
        let d = |x: f64, sg: f64| x * s * s / (s * s + sg * sg);
        let mut x = t[0];
        for i in 0..cfg.steps {
            let (a, b) = (t[i], t[i + 1]);
            let g = (x - d(x, a)) / a;
            let mut xn = x + (b - a) * g;
            if cfg.method == SamplerMethod::Heun && b > 0.0 {
                xn = x + (b - a) * 0.5 * (g + (xn - d(xn, b)) / b);
            }
            x = xn;
        }
        x
    }

    #[test]
    fn heun18_and_euler18_follow_their_exact_recursions() {
        let _rng = crate::rng_guard();
        let s = 0.3;
        let den = GaussianDenoiser {
            mean: Tensor::from_slice(&[0.0f32]),
            std: s,
        };
        let z = Tensor::from_slice(&[1.0f32, -2.0]).reshape([2, 1]);
        let l = Tensor::zeros([2], (Kind::Int64, Device::Cpu));
        for method in [SamplerMethod::Heun, SamplerMethod::Euler] {
            let cfg = SamplerConfig {
                method,
                ..Default::default()
            };
            let k = discrete_factor(&cfg, s);
            let x: Vec<f32> =
                Vec::try_from(sample(&den, &z, &l, &cfg).unwrap().flatten(0, -1)).unwrap();
            assert!(
                (x[0] as f64 - k).abs() < 1e-4 && (x[1] as f64 + 2.0 * k).abs() < 2e-4,
                "{method:?}: {x:?} vs {k}"
            );
        }
        // The two integrators differ by far more than that (0.319 vs 0.251 here).
        let h = discrete_factor(&SamplerConfig::default(), s);
        let e = discrete_factor(
            &SamplerConfig {
                method: SamplerMethod::Euler,
                ..Default::default()
            },
            s,
        );
        assert!(h - e > 0.05);
    }

    #[test]
    fn two_d_gaussian_each_axis() {
        let _rng = crate::rng_guard();
        tch::manual_seed(3);
        let den = GaussianDenoiser {
            mean: Tensor::from_slice(&[-1.0f32, 2.0]),
            std: 0.5,
        };
        let z = Tensor::randn([20_000, 2], (Kind::Float, Device::Cpu));
        let l = Tensor::zeros([20_000], (Kind::Int64, Device::Cpu));
        let x = sample(
            &den,
            &z,
            &l,
            &SamplerConfig {
                steps: 256,
                ..Default::default()
            },
        )
        .unwrap();
        let m = x.mean_dim(0, false, Kind::Double);
        let sd = x.to_kind(Kind::Double).std_dim(0, true, false);
        assert!(
            (m.double_value(&[0]) + 1.0).abs() < 0.02 && (m.double_value(&[1]) - 2.0).abs() < 0.02
        );
        assert!(
            (sd.double_value(&[0]) - 0.5).abs() < 0.02
                && (sd.double_value(&[1]) - 0.5).abs() < 0.02
        );
    }

    #[test]
    fn heun18_mixture_lands_in_the_right_modes_in_proportion() {
        let _rng = crate::rng_guard();
        tch::manual_seed(11);
        // Class 0: modes at (-2, 0) w 0.25 and (2, 0) w 0.75; class 1: one mode at (0, 3).
        let mix = MixtureDenoiser {
            classes: vec![
                vec![(0.25, vec![-2.0, 0.0], 0.1), (0.75, vec![2.0, 0.0], 0.1)],
                vec![(1.0, vec![0.0, 3.0], 0.1)],
            ],
        };
        let n = 8000;
        let z = Tensor::randn([n, 2], (Kind::Float, Device::Cpu));
        let mut lv = vec![0i64; n as usize / 2];
        lv.extend(vec![1i64; n as usize / 2]);
        let l = Tensor::from_slice(&lv);
        let cfg = SamplerConfig::default();
        assert_eq!(cfg.nfe(), 35);
        let x = sample(&mix, &z, &l, &cfg).unwrap();
        let xs: Vec<f32> = Vec::try_from(x.flatten(0, -1)).unwrap();
        let (mut left, mut right, mut top, mut stray) = (0, 0, 0, 0);
        for (i, p) in xs.chunks(2).enumerate() {
            let near = |cx: f32, cy: f32| ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt() < 0.5;
            match (lv[i], near(-2.0, 0.0), near(2.0, 0.0), near(0.0, 3.0)) {
                (0, true, _, _) => left += 1,
                (0, _, true, _) => right += 1,
                (1, _, _, true) => top += 1,
                _ => stray += 1,
            }
        }
        assert!(stray < 20, "{stray} samples outside their class's modes");
        assert_eq!(top, 4000);
        // 4000 draws with p = 0.25: std of the count is 27; allow 5σ.
        assert!(
            (left as i64 - 1000).abs() < 140,
            "left {left} right {right}"
        );
    }

    /// Gaussian data N(c, 0.3²) for class c, N(0, 0.3²) for the null label 10: guidance w
    /// turns class c into N(w·c, ·) (the denoiser is linear in the mean).
    struct ClassMean;
    impl Denoiser for ClassMean {
        fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: &Tensor) -> Tensor {
            let mu = labels
                .to_kind(Kind::Float)
                .where_self(&labels.ne(10), &labels.zeros_like().to_kind(Kind::Float))
                .unsqueeze(1);
            let (s2, sig2) = (0.09, sigma.square().unsqueeze(1));
            (x * s2 + &sig2 * mu) / (sig2 + s2)
        }
        fn null_label(&self) -> Option<i64> {
            Some(10)
        }
    }

    /// Regression: `SamplerConfig::guidance` used to be ignored by `sample` (callers wrapped
    /// `Guided` by hand, and one forgot: the server's teacher comparison ran unguided at 1.25).
    #[test]
    fn sample_applies_its_configured_guidance() {
        let z = Tensor::zeros([2, 1], (Kind::Float, Device::Cpu));
        let l = Tensor::from_slice(&[1i64, 2]);
        let at = |w: f64| -> Vec<f32> {
            let cfg = SamplerConfig {
                steps: 64,
                guidance: w,
                ..Default::default()
            };
            Vec::try_from(sample(&ClassMean, &z, &l, &cfg).unwrap().flatten(0, -1)).unwrap()
        };
        // From z = 0 the ODE lands at the class mean w·c (up to the integrator's tiny error).
        for (w, want) in [(1.0, [1.0, 2.0]), (2.0, [2.0, 4.0]), (1.25, [1.25, 2.5])] {
            let x = at(w);
            assert!(
                (x[0] as f64 - want[0]).abs() < 0.02 && (x[1] as f64 - want[1]).abs() < 0.04,
                "guidance {w}: {x:?}, want {want:?}"
            );
        }
        // The same as wrapping by hand and sampling unguided.
        let cfg = SamplerConfig {
            steps: 8,
            guidance: 1.5,
            ..Default::default()
        };
        let by_hand = Guided {
            inner: &ClassMean,
            scale: 1.5,
            null_label: 10,
        };
        let a = sample(&ClassMean, &z, &l, &cfg).unwrap();
        let b = sample(
            &by_hand,
            &z,
            &l,
            &SamplerConfig {
                guidance: 1.0,
                ..cfg.clone()
            },
        )
        .unwrap();
        assert!(a.equal(&b));
        // A denoiser without a null label cannot be guided: a config error, not a silent no-op.
        let g = GaussianDenoiser {
            mean: Tensor::from_slice(&[0.0f32]),
            std: 0.3,
        };
        let e = sample(&g, &z, &l, &cfg).unwrap_err().to_string();
        assert!(e.contains("sampler.guidance"), "{e}");
        assert!(sample(&g, &z, &l, &SamplerConfig::default()).is_ok());
    }
}
