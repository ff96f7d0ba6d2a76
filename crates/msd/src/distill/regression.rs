//! The regression term of DMD: the distance between the generator's output G(z, c) and the
//! teacher's ODE sample y = ODE(σ_max·z, c) on the shared pairs ([`super::pairs`]).
//!
//! DMD weighs an LPIPS distance by 0.25; DMD2 drops the term. Our distances
//! ([`RegressionDistance`]):
//! - `l2`: mean over the batch and every element of (G − y)² (the default, as before);
//! - `pseudo_huber`: per sample √(‖G − y‖²/D + c²) − c with c = 0.00054, D the elements per
//!   sample — iCT's pseudo-Huber (c·√D) divided by √D, so that it is an RMS distance for large
//!   errors (pixel units, like `l2`) and its gradient per sample is bounded;
//!   mean over the batch;
//! - `perceptual`: LPIPS-style, through a frozen classifier that must **not** be the evaluation
//!   classifier (a second one, trained independently, e.g. `msd train-classifier` with another
//!   seed): per layer l (each conv stage's activations, then the features), activations are
//!   unit-normalised over channels, d_l = mean over positions of ‖n(a_l(G)) − n(a_l(y))‖²;
//!   the distance is the mean of d_l over layers, then over the batch (LPIPS without its learned
//!   per-channel weights). `msd distill` loads it from `<run>/regression-features/`
//!   ([`REGRESSION_FEATURES_DIR`]).

use crate::eval::classifier::Classifier;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Where `msd distill` looks for the perceptual distance's network, inside a run directory.
pub const REGRESSION_FEATURES_DIR: &str = "regression-features";

/// Which distance the regression term uses (`distill.regression_distance`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionDistance {
    /// Mean squared error over all elements.
    #[default]
    L2,
    /// The per-sample pseudo-Huber distance (see the module docs).
    PseudoHuber,
    /// LPIPS-style distance through a second classifier ([`FeatureDistance`]).
    Perceptual,
}

/// iCT's pseudo-Huber constant, per element (theirs is 0.00054·√D on the whole-sample norm).
pub const PSEUDO_HUBER_C: f64 = 0.00054;

impl RegressionDistance {
    /// Whether this is the default (kept out of serialised configs, so older config hashes hold).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The scalar loss between `x` (generator outputs, `[B, ...]`, with gradient) and `y`
    /// (teacher samples, same shape). `features` is needed by `perceptual` only.
    pub fn loss(
        self,
        x: &Tensor,
        y: &Tensor,
        features: Option<&FeatureDistance>,
    ) -> Result<Tensor> {
        let diff = x - y;
        Ok(match self {
            RegressionDistance::L2 => diff.square().mean(Kind::Float),
            RegressionDistance::PseudoHuber => {
                let ms = diff.square().flatten(1, -1).mean_dim(1, false, Kind::Float);
                let c2 = PSEUDO_HUBER_C * PSEUDO_HUBER_C;
                ((ms + c2).sqrt() - PSEUDO_HUBER_C).mean(Kind::Float)
            }
            RegressionDistance::Perceptual => features
                .ok_or_else(|| {
                    Error::config(
                        "distill.regression_distance",
                        format!(
                            "`perceptual` needs a feature network (a classifier other than the evaluation one) in <run>/{REGRESSION_FEATURES_DIR}/"
                        ),
                    )
                })?
                .distance(x, y)?,
        })
    }
}

/// Loads the `perceptual` distance's network from `<run_root>/regression-features/` into the
/// pairs when `distance` is `perceptual` (no-op otherwise, or without pairs).
pub fn attach_features(
    pairs: &mut Option<super::pairs::RegressionPairs>,
    distance: RegressionDistance,
    run_root: &Path,
    device: Device,
) -> Result<()> {
    if let (Some(p), RegressionDistance::Perceptual) = (pairs.as_mut(), distance) {
        let dir = run_root.join(REGRESSION_FEATURES_DIR);
        if !dir.join("classifier.json").exists() {
            return Err(Error::config(
                "distill.regression_distance",
                format!(
                    "`perceptual` needs a second classifier (not the evaluation one) in {}; e.g. `msd train-classifier --out {}` with another seed",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        p.features = Some(FeatureDistance::load(&dir, device)?);
    }
    Ok(())
}

/// An LPIPS-style distance through a frozen classifier (see the module docs).
pub struct FeatureDistance {
    net: Classifier,
    /// Identifies the network: a hash of its weights file (part of the students' config hash).
    pub id: String,
}

/// A short hash of a classifier directory's weights file.
pub fn weights_id(dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let p = dir.join("classifier.safetensors");
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl FeatureDistance {
    /// Loads the classifier saved in `dir` (`classifier.json` + `classifier.safetensors`).
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let (net, _) = Classifier::load_dir(dir, device)?;
        Ok(Self {
            net,
            id: weights_id(dir)?,
        })
    }

    /// Refuses the evaluation classifier in `eval_dir` (same weights) as the feature network:
    /// a regression through the network that scores the samples would optimise the score.
    pub fn check_not_eval_classifier(&self, eval_dir: &Path) -> Result<()> {
        if weights_id(eval_dir)? == self.id {
            return Err(Error::config(
                "distill.regression_distance",
                format!(
                    "the perceptual feature network has the same weights as the evaluation classifier {}; train a second one (another seed)",
                    eval_dir.display()
                ),
            ));
        }
        Ok(())
    }

    /// The distance between `x` (with gradient) and `y` (a target), both `[B, C, H, W]` in
    /// [−1, 1] with the classifier's channel count. Returns a scalar.
    pub fn distance(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let s = x.size();
        if s.len() != 4 || s[1] != self.net.config.in_channels {
            return Err(Error::config(
                "distill.regression_distance",
                format!(
                    "`perceptual` needs images [B, {}, H, W]; the generator makes {s:?}",
                    self.net.config.in_channels
                ),
            ));
        }
        let unit =
            |a: &Tensor| a / (a.square().sum_dim_intlist(1, true, Kind::Float).sqrt() + 1e-10);
        let ax = self.net.activations(x);
        let ay = tch::no_grad(|| self.net.activations(&y.detach()));
        let layers = ax.len() as f64;
        let mut total = Tensor::zeros([], (Kind::Float, x.device()));
        for (a, b) in ax.iter().zip(&ay) {
            let d = (unit(a) - unit(b))
                .square()
                .sum_dim_intlist(1, false, Kind::Float);
            total += d.mean(Kind::Float);
        }
        Ok(total / layers)
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
        let l2 = RegressionDistance::L2
            .loss(&x, &y, None)
            .unwrap()
            .double_value(&[]);
        assert!((l2 - 8.0 / 8.0).abs() < 1e-6, "{l2}");
        let c = PSEUDO_HUBER_C;
        let want = (1.0 + c * c).sqrt() - c;
        let ph = RegressionDistance::PseudoHuber
            .loss(&x, &y, None)
            .unwrap()
            .double_value(&[]);
        assert!((ph - want).abs() < 1e-6, "{ph} vs {want}");
        // Near zero it is quadratic: ½·ms/c for ms ≪ c².
        let tiny = &y + 1e-6;
        let ph0 = RegressionDistance::PseudoHuber
            .loss(&tiny, &y, None)
            .unwrap()
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
            RegressionDistance::PseudoHuber
                .loss(&x, &y, None)
                .unwrap()
                .backward();
            let n = x.grad().get(0).norm().double_value(&[]);
            assert!((n - 1.0 / (2.0 * 2.0)).abs() < 1e-3, "scale {scale}: {n}");
        }
    }

    #[test]
    fn perceptual_distance_is_zero_on_equal_images_and_refuses_its_own_evaluator() {
        use crate::eval::classifier::{ClassifierConfig, ClassifierRecord, ClassifierTrainConfig};
        let _g = crate::rng_guard();
        let save = |seed: i64, dir: &Path| {
            tch::manual_seed(seed);
            let cfg = ClassifierConfig::new(1, 3);
            let c = Classifier::new(&cfg, Device::Cpu);
            let rec = ClassifierRecord {
                config: cfg,
                train: ClassifierTrainConfig::default(),
                heldout_accuracy: 0.0,
                heldout_n: 0,
                train_seconds: 0.0,
                data_id: "test".into(),
            };
            c.save_dir(dir, &rec).unwrap();
        };
        let d = tempfile::tempdir().unwrap();
        let (fa, fb) = (d.path().join("a"), d.path().join("b"));
        save(1, &fa);
        save(2, &fb);
        let f = FeatureDistance::load(&fa, Device::Cpu).unwrap();
        assert!(f.check_not_eval_classifier(&fb).is_ok());
        let e = f.check_not_eval_classifier(&fa).unwrap_err().to_string();
        assert!(e.contains("distill.regression_distance"), "{e}");

        tch::manual_seed(3);
        let y = Tensor::rand([2, 1, 12, 12], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let same = RegressionDistance::Perceptual
            .loss(&y, &y, Some(&f))
            .unwrap()
            .double_value(&[]);
        assert!(same.abs() < 1e-8, "{same}");
        // A different image is at a positive distance, and the gradient reaches the input.
        let x = (Tensor::rand([2, 1, 12, 12], (Kind::Float, Device::Cpu)) * 2.0 - 1.0)
            .set_requires_grad(true);
        let dist = RegressionDistance::Perceptual
            .loss(&x, &y, Some(&f))
            .unwrap();
        assert!(dist.double_value(&[]) > 1e-4);
        dist.backward();
        assert!(x.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // Without a network, or on non-image data, it is refused by name.
        let e = RegressionDistance::Perceptual
            .loss(&y, &y, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("distill.regression_distance"), "{e}");
        let flat = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu));
        assert!(RegressionDistance::Perceptual
            .loss(&flat, &flat, Some(&f))
            .is_err());
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
