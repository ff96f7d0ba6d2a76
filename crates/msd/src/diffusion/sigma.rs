//! Noise levels: the training σ distribution (log-normal), and the Karras et al. σ schedule used by
//! the samplers and, as a 1000-level grid, by distillation.
//!
//! ```
//! let s = msd::diffusion::karras_sigmas(18, 0.002, 80.0, 7.0);
//! assert_eq!(s.len(), 18);
//! assert!((s[0] - 80.0).abs() < 1e-9 && (s[17] - 0.002).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

pub use super::precond::EdmPrecond;

/// EDM's largest noise level, 80: the one owner of the default σ_max (the sampler's
/// [`crate::diffusion::SamplerConfig`] and distillation's `distill.sigma_max` both default to it).
pub const EDM_SIGMA_MAX: f64 = 80.0;

/// Largest σ_max a config or a bundle may declare.
pub const SIGMA_MAX_LIMIT: f64 = 1000.0;

/// `v` as a short number: plain between 1e-4 and 1e6, in exponent form beyond (`1e308`, not
/// 309 digits).
pub fn short(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e6).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// The one check of a declared σ_max (configs and bundles): finite, positive, at most
/// [`SIGMA_MAX_LIMIT`].
pub fn check_sigma_max(sigma_max: f64) -> std::result::Result<(), String> {
    if !(sigma_max.is_finite() && sigma_max > 0.0 && sigma_max <= SIGMA_MAX_LIMIT) {
        return Err(format!(
            "sigma_max must be a finite number in (0, {SIGMA_MAX_LIMIT}], got {}",
            short(sigma_max)
        ));
    }
    Ok(())
}

/// The log-normal training distribution ln σ ~ N(p_mean, p_std²).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigmaDistribution {
    #[serde(default = "default_p_mean")]
    pub p_mean: f64,
    #[serde(default = "default_p_std")]
    pub p_std: f64,
}

fn default_p_mean() -> f64 {
    -1.2
}
fn default_p_std() -> f64 {
    1.2
}

impl Default for SigmaDistribution {
    fn default() -> Self {
        Self {
            p_mean: default_p_mean(),
            p_std: default_p_std(),
        }
    }
}

impl SigmaDistribution {
    /// Draws `n` noise levels, shape `[n]`, from the global (seeded) torch generator.
    pub fn sample(&self, n: i64, device: Device) -> Tensor {
        (Tensor::randn([n], (Kind::Float, device)) * self.p_std + self.p_mean).exp()
    }
}

/// EDM's loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)² for `sigma` of shape `[B]`.
pub fn loss_weight(sigma: &Tensor, sigma_data: f64) -> Tensor {
    EdmPrecond { sigma_data }.loss_weight(sigma)
}

/// The Karras schedule σ_i = (σ_max^{1/ρ} + i/(n−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..n,
/// **descending** from σ_max to σ_min (without the trailing 0 the samplers append).
pub fn karras_sigmas(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    if n == 1 {
        return vec![sigma_max];
    }
    let a = sigma_max.powf(1.0 / rho);
    let b = sigma_min.powf(1.0 / rho);
    (0..n)
        .map(|i| (a + i as f64 / (n - 1) as f64 * (b - a)).powf(rho))
        .collect()
}

/// A discrete grid of noise levels for distillation, **ascending**: index 0 is σ_min.
#[derive(Debug)]
pub struct KarrasGrid {
    sigmas: Vec<f64>,
    table: Tensor,
}

impl KarrasGrid {
    /// `n` levels from σ_min to σ_max with exponent ρ (the paper: 1000, 0.002, 80, 7).
    pub fn new(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Self {
        let mut sigmas = karras_sigmas(n, sigma_min, sigma_max, rho);
        sigmas.reverse();
        let table = Tensor::from_slice(&sigmas).to_kind(Kind::Float);
        Self { sigmas, table }
    }

    /// Number of levels.
    pub fn len(&self) -> usize {
        self.sigmas.len()
    }

    /// Whether the grid is empty.
    pub fn is_empty(&self) -> bool {
        self.sigmas.is_empty()
    }

    /// The σ at index `i` (0 = smallest).
    pub fn sigma(&self, i: usize) -> f64 {
        self.sigmas[i]
    }

    /// Draws `n` indices uniformly in `[lo, hi]` (inclusive) and returns their σ, shape `[n]`.
    pub fn sample(&self, n: i64, lo: usize, hi: usize, device: Device) -> Tensor {
        let hi = hi.min(self.len() - 1);
        let lo = lo.min(hi);
        let idx = Tensor::randint_low(lo as i64, hi as i64 + 1, [n], (Kind::Int64, Device::Cpu));
        self.table.index_select(0, &idx).to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_sigma_max_is_named_in_short_form() {
        let e = check_sigma_max(1e308).unwrap_err();
        assert!(e.ends_with("got 1e308"), "{e}");
        assert!(e.len() < 80, "{e}");
        assert!(check_sigma_max(-1.0).unwrap_err().ends_with("got -1"));
        assert!(check_sigma_max(f64::NAN).unwrap_err().ends_with("got NaN"));
        assert_eq!(
            (short(80.0), short(2e-7), short(0.0)),
            ("80".into(), "2e-7".into(), "0".into())
        );
        check_sigma_max(80.0).unwrap();
    }

    #[test]
    fn karras_endpoints_and_monotone() {
        let s = karras_sigmas(1000, 0.002, 80.0, 7.0);
        assert!((s[0] - 80.0).abs() < 1e-9);
        assert!((s[999] - 0.002).abs() < 1e-12);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        let g = KarrasGrid::new(1000, 0.002, 80.0, 7.0);
        assert!((g.sigma(0) - 0.002).abs() < 1e-12 && (g.sigma(999) - 80.0).abs() < 1e-9);
    }

    #[test]
    fn karras_middle_value_by_hand() {
        // n = 3, ρ = 1: a linear schedule, the middle is the mean of the ends.
        let s = karras_sigmas(3, 1.0, 3.0, 1.0);
        assert_eq!(s, vec![3.0, 2.0, 1.0]);
        // ρ = 2: ((√8 + √2)/2)² = (3/√2·... ) = 4.5.
        let s = karras_sigmas(3, 2.0, 8.0, 2.0);
        assert!((s[1] - 4.5).abs() < 1e-12);
    }

    #[test]
    fn grid_sampling_stays_in_index_range() {
        let _rng = crate::rng_guard();
        tch::manual_seed(0);
        let g = KarrasGrid::new(1000, 0.002, 80.0, 7.0);
        let s = g.sample(4096, 20, 980, Device::Cpu);
        let min = s.min().double_value(&[]);
        let max = s.max().double_value(&[]);
        assert!(
            min >= g.sigma(20) as f32 as f64 - 1e-9 && max <= g.sigma(980) as f32 as f64 + 1e-6
        );
        assert!(min < g.sigma(40) && max > g.sigma(960));
    }

    #[test]
    fn lognormal_moments() {
        let _rng = crate::rng_guard();
        tch::manual_seed(1);
        let d = SigmaDistribution::default();
        let s = d.sample(200_000, Device::Cpu).log();
        assert!((s.mean(Kind::Double).double_value(&[]) + 1.2).abs() < 0.02);
        assert!((s.std(true).double_value(&[]) - 1.2).abs() < 0.02);
    }
}
