//! EDM preconditioning (Karras et al. 2022, Table 1): the coefficients that wrap a raw network F
//! into a denoiser D(x; σ) = c_skip·x + c_out·F(c_in·x; c_noise).
//!
//! ```
//! use msd::diffusion::EdmPrecond;
//! let p = EdmPrecond::default();
//! let c = p.coefficients(0.5);
//! assert!((c.c_skip - 0.5).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// EDM preconditioning with a configurable σ_data.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdmPrecond {
    /// Standard deviation of the data (0.5 for images in [-1, 1]).
    #[serde(default = "default_sigma_data")]
    pub sigma_data: f64,
}

fn default_sigma_data() -> f64 {
    0.5
}

impl Default for EdmPrecond {
    fn default() -> Self {
        Self {
            sigma_data: default_sigma_data(),
        }
    }
}

/// The four preconditioning coefficients at one noise level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coefficients {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

impl EdmPrecond {
    /// Checks `sigma_data` (finite, > 0); errors name `model.precond.sigma_data`.
    pub fn validate(&self) -> crate::Result<()> {
        crate::limits::check_positive("model.precond.sigma_data", self.sigma_data)
    }

    /// Scalar coefficients at noise level `sigma` (> 0).
    pub fn coefficients(&self, sigma: f64) -> Coefficients {
        let sd2 = self.sigma_data * self.sigma_data;
        let s2 = sigma * sigma;
        Coefficients {
            c_skip: sd2 / (s2 + sd2),
            c_out: sigma * self.sigma_data / (s2 + sd2).sqrt(),
            c_in: 1.0 / (s2 + sd2).sqrt(),
            c_noise: sigma.ln() / 4.0,
        }
    }

    /// Per-sample coefficients for `sigma` of shape `[B]`; each result has shape `[B]`.
    /// Returns `(c_skip, c_out, c_in, c_noise)`.
    pub fn coefficients_t(&self, sigma: &Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
        let sd = self.sigma_data;
        let s2sd2 = sigma.square() + sd * sd;
        let c_skip = (sd * sd) / &s2sd2;
        let c_out = sigma * sd / s2sd2.sqrt();
        let c_in = s2sd2.sqrt().reciprocal();
        let c_noise = sigma.log() / 4.0;
        (c_skip, c_out, c_in, c_noise)
    }

    /// EDM's loss weight λ(σ) = (σ² + σ_d²)/(σ·σ_d)², shape `[B]` for `sigma` of shape `[B]`.
    pub fn loss_weight(&self, sigma: &Tensor) -> Tensor {
        let sd = self.sigma_data;
        (sigma.square() + sd * sd) / (sigma * sd).square()
    }
}

/// Reshapes a per-sample `[B]` tensor so it broadcasts against `like` (`[B, ...]`).
pub fn broadcast_to(v: &Tensor, like: &Tensor) -> Tensor {
    let mut shape = vec![-1i64];
    shape.extend(std::iter::repeat_n(1, like.dim().saturating_sub(1)));
    v.reshape(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_match_hand_computed_values() {
        let p = EdmPrecond::default();
        // σ = 1, σ_d = 0.5: σ²+σ_d² = 1.25.
        let c = p.coefficients(1.0);
        assert!((c.c_skip - 0.25 / 1.25).abs() < 1e-12);
        assert!((c.c_out - 0.5 / 1.25f64.sqrt()).abs() < 1e-12);
        assert!((c.c_in - 1.0 / 1.25f64.sqrt()).abs() < 1e-12);
        assert!(c.c_noise.abs() < 1e-12);
        // σ = 80: c_skip tiny, c_out ≈ σ_d.
        let c = p.coefficients(80.0);
        assert!((c.c_skip - 0.25 / 6400.25).abs() < 1e-12);
        assert!((c.c_out - 40.0 / 6400.25f64.sqrt()).abs() < 1e-12);
        assert!((c.c_noise - 80f64.ln() / 4.0).abs() < 1e-12);
        // EDM's defining identity: c_out² = c_skip·σ² at every σ.
        for s in [0.002, 0.1, 1.0, 10.0, 80.0] {
            let c = p.coefficients(s);
            assert!((c.c_out * c.c_out - c.c_skip * s * s).abs() < 1e-9 * (1.0 + s * s));
        }
    }

    #[test]
    fn tensor_coefficients_agree_with_scalar_ones() {
        let p = EdmPrecond { sigma_data: 0.7 };
        let sig = [0.01, 0.3, 2.0, 50.0];
        let t = Tensor::from_slice(&sig).to_kind(tch::Kind::Double);
        let (a, b, c, d) = p.coefficients_t(&t);
        let w = p.loss_weight(&t);
        for (i, s) in sig.iter().enumerate() {
            let k = p.coefficients(*s);
            let i = i as i64;
            assert!((a.double_value(&[i]) - k.c_skip).abs() < 1e-12);
            assert!((b.double_value(&[i]) - k.c_out).abs() < 1e-12);
            assert!((c.double_value(&[i]) - k.c_in).abs() < 1e-12);
            assert!((d.double_value(&[i]) - k.c_noise).abs() < 1e-12);
            let lw = (s * s + 0.49) / (s * 0.7).powi(2);
            assert!((w.double_value(&[i]) - lw).abs() < 1e-9 * lw);
        }
    }
}
