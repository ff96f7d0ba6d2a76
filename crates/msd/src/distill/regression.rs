//! The regression term of DMD: the distance between the generator's output G(z, c) and the
//! teacher's ODE sample y = ODE(σ_max·z, c) on the shared pairs ([`super::pairs`]).
//!
//! DMD weighs an LPIPS distance by 0.25; DMD2 drops the term. Our distances
//! ([`RegressionDistance`]):
//! - `l2`: mean over the batch and every element of (G − y)² (the default, as before);
//! - `pseudo_huber`: per sample √(‖G − y‖²/D + c²) − c with c = 0.00054, D the elements per
//!   sample — iCT's pseudo-Huber (c·√D) divided by √D, so that it is an RMS distance for large
//!   errors (pixel units, like `l2`) and its gradient per sample is bounded;
//!   mean over the batch.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which distance the regression term uses (`distill.regression_distance`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionDistance {
    /// Mean squared error over all elements.
    #[default]
    L2,
    /// The per-sample pseudo-Huber distance (see the module docs).
    PseudoHuber,
}

/// iCT's pseudo-Huber constant, per element (theirs is 0.00054·√D on the whole-sample norm).
pub const PSEUDO_HUBER_C: f64 = 0.00054;

impl RegressionDistance {
    /// Whether this is the default (kept out of serialised configs, so older config hashes hold).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The scalar loss between `x` (generator outputs, `[B, ...]`, with gradient) and `y`
    /// (teacher samples, same shape).
    pub fn loss(self, x: &Tensor, y: &Tensor) -> Tensor {
        let diff = x - y;
        match self {
            RegressionDistance::L2 => diff.square().mean(Kind::Float),
            RegressionDistance::PseudoHuber => {
                let ms = diff.square().flatten(1, -1).mean_dim(1, false, Kind::Float);
                let c2 = PSEUDO_HUBER_C * PSEUDO_HUBER_C;
                ((ms + c2).sqrt() - PSEUDO_HUBER_C).mean(Kind::Float)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn distances_match_their_definitions() {
        // Two samples of 4 elements: differences (1, 1, 1, 1) and (0, 0, 0, 2).
        let y = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
        let x = Tensor::from_slice(&[1.0f32, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 2.0]).reshape([2, 4]);
        let l2 = RegressionDistance::L2.loss(&x, &y).double_value(&[]);
        assert!((l2 - 8.0 / 8.0).abs() < 1e-6, "{l2}");
        let c = PSEUDO_HUBER_C;
        let want = (((1.0 + c * c) as f64).sqrt() - c + ((1.0 + c * c) as f64).sqrt() - c) / 2.0;
        let ph = RegressionDistance::PseudoHuber
            .loss(&x, &y)
            .double_value(&[]);
        assert!((ph - want).abs() < 1e-6, "{ph} vs {want}");
        // Near zero it is quadratic: ½·ms/c for ms ≪ c².
        let tiny = &y + 1e-6;
        let ph0 = RegressionDistance::PseudoHuber
            .loss(&tiny, &y)
            .double_value(&[]);
        assert!((ph0 - 0.5 * 1e-12 / c).abs() < 1e-10, "{ph0}");
    }

    #[test]
    fn pseudo_huber_gradient_is_bounded_per_sample() {
        // Far from the target the gradient norm per sample is 1/(B·√D), whatever the error.
        for scale in [1.0f64, 100.0] {
            let x =
                (Tensor::ones([2, 4], (Kind::Float, Device::Cpu)) * scale).set_requires_grad(true);
            let y = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
            RegressionDistance::PseudoHuber.loss(&x, &y).backward();
            let n = x.grad().get(0).norm().double_value(&[]);
            assert!((n - 1.0 / (2.0 * 2.0)).abs() < 1e-3, "scale {scale}: {n}");
        }
    }

    #[test]
    fn names_in_config() {
        #[derive(Deserialize)]
        struct W {
            d: RegressionDistance,
        }
        let w: W = toml::from_str("d = \"pseudo_huber\"").unwrap();
        assert_eq!(w.d, RegressionDistance::PseudoHuber);
        assert!(toml::from_str::<W>("d = \"lpips\"").is_err());
    }
}
