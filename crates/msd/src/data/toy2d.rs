//! The 2-D toy: 8 classes, each a mixture of 4 isotropic Gaussians, built from a fixed seed so the
//! same distribution exists everywhere. Centres are uniform in [−1.5, 1.5]², standard deviations
//! uniform in [0.04, 0.12], mixture weights ∝ uniform [1, 3] (ChaCha8 seeded with
//! `construction_seed`, default 2410, drawn class by class and mode by mode in that order).
//! Sharp, scattered modes make it hard for a small one-step generator to cover all classes.

use super::source::DataSource;
use super::{uniform_labels, TrainingData};
use crate::diffusion::denoiser::MixtureDenoiser;
use crate::{Error, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// `[data] kind = "toy2d"`: which toy to build. Its `Default` is the one owner of the standard
/// toy's shape (8 classes × 4 modes, construction seed 2410).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Toy2dConfig {
    pub classes: usize,
    pub modes: usize,
    pub construction_seed: u64,
}

impl Default for Toy2dConfig {
    fn default() -> Self {
        Self {
            classes: 8,
            modes: 4,
            construction_seed: 2410,
        }
    }
}

impl Toy2dConfig {
    /// Builds the toy; refuses an empty one.
    pub fn build(&self) -> Result<Toy2d> {
        if self.classes == 0 || self.modes == 0 {
            return Err(Error::config("data.classes / data.modes", "must be ≥ 1"));
        }
        Ok(Toy2d::new(self.classes, self.modes, self.construction_seed))
    }
}

impl DataSource for Toy2dConfig {
    fn open(&self, _base: &Path) -> Result<Box<dyn TrainingData>> {
        Ok(Box::new(self.build()?))
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        Vec::new()
    }
    fn to_spec(&self) -> String {
        "toy2d".into()
    }
}

/// One Gaussian component.
#[derive(Clone, Debug, PartialEq)]
pub struct Mode {
    pub weight: f64,
    pub mean: [f64; 2],
    pub std: f64,
}

/// The toy distribution.
#[derive(Clone, Debug)]
pub struct Toy2d {
    pub classes: Vec<Vec<Mode>>,
}

/// The fixed box used for histograms and plots: [−BOX, BOX]².
pub const BOX: f64 = 2.5;

impl Toy2d {
    /// The standard toy (8 classes × 4 modes, construction seed 2410).
    pub fn standard() -> Self {
        let c = Toy2dConfig::default();
        Self::new(c.classes, c.modes, c.construction_seed)
    }

    /// A toy with `num_classes` classes of `modes` modes each.
    pub fn new(num_classes: usize, modes: usize, construction_seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(construction_seed);
        let classes = (0..num_classes)
            .map(|_| {
                let mut ms: Vec<Mode> = (0..modes)
                    .map(|_| Mode {
                        mean: [rng.gen_range(-1.5..1.5), rng.gen_range(-1.5..1.5)],
                        std: rng.gen_range(0.04..0.12),
                        weight: rng.gen_range(1.0..3.0),
                    })
                    .collect();
                let total: f64 = ms.iter().map(|m| m.weight).sum();
                ms.iter_mut().for_each(|m| m.weight /= total);
                ms
            })
            .collect();
        Self { classes }
    }

    /// `n` points of class `c`, as `[x, y]` pairs.
    pub fn sample_class(&self, c: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<[f64; 2]> {
        let modes = &self.classes[c];
        (0..n)
            .map(|_| {
                let mut u: f64 = rng.gen();
                let m = modes.iter().find(|m| {
                    u -= m.weight;
                    u < 0.0
                });
                let m = m.unwrap_or(&modes[modes.len() - 1]);
                let a: f64 = StandardNormal.sample(rng);
                let b: f64 = StandardNormal.sample(rng);
                [m.mean[0] + m.std * a, m.mean[1] + m.std * b]
            })
            .collect()
    }

    /// The ideal (data) denoiser of this distribution, in closed form.
    pub fn ideal_denoiser(&self) -> MixtureDenoiser {
        MixtureDenoiser {
            classes: self
                .classes
                .iter()
                .map(|ms| {
                    ms.iter()
                        .map(|m| (m.weight, m.mean.to_vec(), m.std))
                        .collect()
                })
                .collect(),
        }
    }
}

impl TrainingData for Toy2d {
    fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }

    fn sample_shape(&self) -> Vec<i64> {
        vec![2]
    }

    fn batch(
        &self,
        n: usize,
        classes: &[i64],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        let labels = uniform_labels(n, classes, rng);
        let mut pts = Vec::with_capacity(2 * n);
        for &c in &labels {
            let p = self.sample_class(c as usize, 1, rng)[0];
            pts.extend([p[0] as f32, p[1] as f32]);
        }
        let x = Tensor::from_slice(&pts)
            .reshape([n as i64, 2])
            .to_device(device);
        Ok((x, Tensor::from_slice(&labels).to_device(device)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construction_is_fixed_and_inside_the_box() {
        let a = Toy2d::standard();
        let b = Toy2d::standard();
        assert_eq!(a.classes, b.classes);
        assert_eq!(a.classes.len(), 8);
        for ms in &a.classes {
            assert!((ms.iter().map(|m| m.weight).sum::<f64>() - 1.0).abs() < 1e-12);
            for m in ms {
                assert!(m.mean[0].abs() < 1.5 && m.mean[1].abs() < 1.5 && m.std < 0.12);
            }
        }
    }

    #[test]
    fn batches_respect_the_class_filter() {
        let t = Toy2d::standard();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (x, l) = t.batch(500, &[2, 5], &mut rng, Device::Cpu).unwrap();
        assert_eq!(x.size(), vec![500, 2]);
        let l: Vec<i64> = Vec::try_from(l).unwrap();
        assert!(l.iter().all(|&c| c == 2 || c == 5));
        assert!(l.contains(&2) && l.contains(&5));
    }
}
