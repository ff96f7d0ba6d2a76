//! An in-memory labelled image dataset: pixels mapped to [−1, 1], shape `[C, H, W]`, with a
//! deterministic held-out split that no model trains on (the evaluation's real reference).
//!
//! The split is a seeded permutation (ChaCha8, `split_seed`): its first `heldout` indices are
//! held out, the rest form the training split. [`TrainingData::batch`] draws only from the
//! training split.

use super::{uniform_labels, TrainingData};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How the images are split and laid out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// Number of images held out from training (evaluation reference).
    pub heldout: usize,
    /// Seed of the permutation that picks the held-out images.
    pub split_seed: u64,
    /// Zero-intensity border (pixel value −1) added on every side, e.g. 2 turns 28×28 into 32×32.
    pub pad: i64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            heldout: 1000,
            split_seed: 1000,
            pad: 0,
        }
    }
}

impl SplitConfig {
    /// The default of `heldout` (serde default of every image source's field).
    pub(crate) fn default_heldout() -> usize {
        Self::default().heldout
    }
    /// The default of `split_seed`.
    pub(crate) fn default_split_seed() -> u64 {
        Self::default().split_seed
    }
    /// The default of `pad`.
    pub(crate) fn default_pad() -> i64 {
        Self::default().pad
    }
}

/// Labelled images with a train / held-out split.
#[derive(Debug)]
pub struct ImageDataset {
    num_classes: i64,
    shape: [i64; 3],
    /// `[N_train, C, H, W]` float in [−1, 1].
    train_x: Tensor,
    train_y: Vec<i64>,
    /// `[N_heldout, C, H, W]` float in [−1, 1].
    heldout_x: Tensor,
    heldout_y: Vec<i64>,
    /// Training-split indices of each class.
    by_class: Vec<Vec<i64>>,
}

impl ImageDataset {
    /// Builds the dataset from `n` images of `c×h×w` bytes (channel-major per image) and their
    /// labels in `0..num_classes` (`num_classes` = max label + 1 when `None`). `origin` names
    /// the source in errors.
    pub fn from_bytes(
        pixels: &[u8],
        dims: [usize; 4],
        labels: &[i64],
        num_classes: Option<i64>,
        split: &SplitConfig,
        origin: &str,
    ) -> Result<Self> {
        let [n, c, h, w] = dims;
        if pixels.len() != n * c * h * w || labels.len() != n {
            return Err(Error::Invalid(format!(
                "{origin}: {} pixel bytes and {} labels for {n} images of {c}×{h}×{w}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l < 0) {
            return Err(Error::Invalid(format!("{origin}: negative label {bad}")));
        }
        let max = labels.iter().copied().max().unwrap_or(-1);
        let num_classes = num_classes.unwrap_or(max + 1);
        if max >= num_classes {
            return Err(Error::Invalid(format!(
                "{origin}: label {max} is outside 0..{num_classes}"
            )));
        }
        if split.heldout >= n {
            return Err(Error::config(
                "data.heldout",
                format!(
                    "{} held-out images leave none of the {n} images of {origin} to train on",
                    split.heldout
                ),
            ));
        }
        // At most the image's own size on each side (a border, not a canvas).
        let max_pad = h.max(w) as i64;
        if split.pad < 0 || split.pad > max_pad {
            return Err(Error::config(
                "data.pad",
                format!(
                    "must be between 0 and {max_pad} (the image size), got {}",
                    split.pad
                ),
            ));
        }
        let all = Tensor::from_slice(pixels)
            .reshape([n as i64, c as i64, h as i64, w as i64])
            .to_kind(Kind::Float)
            / 127.5
            - 1.0;
        let all = if split.pad > 0 {
            let p = split.pad;
            all.f_pad([p, p, p, p], "constant", -1.0)?
        } else {
            all
        };
        let mut perm: Vec<i64> = (0..n as i64).collect();
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(split.split_seed));
        let (held, train) = perm.split_at(split.heldout);
        let mut train = train.to_vec();
        let mut held = held.to_vec();
        train.sort_unstable();
        held.sort_unstable();
        let take = |idx: &[i64]| all.index_select(0, &Tensor::from_slice(idx));
        let train_y: Vec<i64> = train.iter().map(|&i| labels[i as usize]).collect();
        let heldout_y: Vec<i64> = held.iter().map(|&i| labels[i as usize]).collect();
        let mut by_class = vec![Vec::new(); num_classes as usize];
        for (i, &l) in train_y.iter().enumerate() {
            by_class[l as usize].push(i as i64);
        }
        let size = all.size();
        Ok(Self {
            num_classes,
            shape: [size[1], size[2], size[3]],
            train_x: take(&train),
            train_y,
            heldout_x: take(&held),
            heldout_y,
            by_class,
        })
    }

    /// Training images `[N_train, C, H, W]` in [−1, 1].
    pub fn train_images(&self) -> &Tensor {
        &self.train_x
    }

    /// Training labels (`N_train`).
    pub fn train_labels(&self) -> &[i64] {
        &self.train_y
    }

    /// Held-out images `[N_heldout, C, H, W]` in [−1, 1]; no model trains on them.
    pub fn heldout_images(&self) -> &Tensor {
        &self.heldout_x
    }

    /// Held-out labels (`N_heldout`).
    pub fn heldout_labels(&self) -> &[i64] {
        &self.heldout_y
    }

    /// Number of training images of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        self.by_class.iter().map(Vec::len).collect()
    }

    /// Random training images with their labels (any class): `([n, C, H, W], [n])` on `device`.
    pub fn random_train(&self, n: usize, rng: &mut ChaCha8Rng, device: Device) -> (Tensor, Tensor) {
        let idx: Vec<i64> = (0..n)
            .map(|_| rng.gen_range(0..self.train_y.len() as i64))
            .collect();
        let y: Vec<i64> = idx.iter().map(|&i| self.train_y[i as usize]).collect();
        (
            self.train_x
                .index_select(0, &Tensor::from_slice(&idx))
                .to_device(device),
            Tensor::from_slice(&y).to_device(device),
        )
    }
}

impl TrainingData for ImageDataset {
    fn num_classes(&self) -> i64 {
        self.num_classes
    }

    fn sample_shape(&self) -> Vec<i64> {
        self.shape.to_vec()
    }

    /// Labels uniform over `classes`, then an image drawn uniformly within each label's class.
    fn batch(
        &self,
        n: usize,
        classes: &[i64],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> Result<(Tensor, Tensor)> {
        if classes.is_empty() {
            return Err(Error::Invalid("batch: empty class filter".into()));
        }
        for &c in classes {
            if c < 0 || c >= self.num_classes || self.by_class[c as usize].is_empty() {
                return Err(Error::Invalid(format!(
                    "batch: class {c} has no training images"
                )));
            }
        }
        let labels = uniform_labels(n, classes, rng);
        let idx: Vec<i64> = labels
            .iter()
            .map(|&c| {
                let members = &self.by_class[c as usize];
                members[rng.gen_range(0..members.len())]
            })
            .collect();
        let x = self
            .train_x
            .index_select(0, &Tensor::from_slice(&idx))
            .to_device(device);
        Ok((x, Tensor::from_slice(&labels).to_device(device)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize, heldout: usize, pad: i64) -> ImageDataset {
        // Image i has every pixel equal to i (so its identity survives the split), label i % 3.
        let px: Vec<u8> = (0..n).flat_map(|i| vec![i as u8; 4]).collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
        ImageDataset::from_bytes(
            &px,
            [n, 1, 2, 2],
            &labels,
            None,
            &SplitConfig {
                heldout,
                split_seed: 5,
                pad,
            },
            "toy",
        )
        .unwrap()
    }

    fn ids(x: &Tensor) -> Vec<i64> {
        let v: Vec<f32> = Vec::try_from(x.select(1, 0).select(1, 0).select(1, 0)).unwrap();
        v.iter()
            .map(|p| ((p + 1.0) * 127.5).round() as i64)
            .collect()
    }

    #[test]
    fn split_is_disjoint_deterministic_and_scaled() {
        let a = toy(50, 10, 0);
        let b = toy(50, 10, 0);
        let (ta, ha) = (ids(a.train_images()), ids(a.heldout_images()));
        assert_eq!(ha.len(), 10);
        assert_eq!(ta.len(), 40);
        assert_eq!(ha, ids(b.heldout_images()));
        assert!(ha.iter().all(|i| !ta.contains(i)));
        // Labels travel with their images.
        for (i, l) in ha.iter().zip(a.heldout_labels()) {
            assert_eq!(i % 3, *l);
        }
        let other = ImageDataset::from_bytes(
            &(0..50u8).flat_map(|i| vec![i; 4]).collect::<Vec<_>>(),
            [50, 1, 2, 2],
            &(0..50).map(|i| i % 3).collect::<Vec<_>>(),
            None,
            &SplitConfig {
                heldout: 10,
                split_seed: 6,
                pad: 0,
            },
            "t",
        )
        .unwrap();
        assert_ne!(ha, ids(other.heldout_images()));
        let max = a.train_images().max().double_value(&[]);
        assert!((max - (49.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert_eq!(a.num_classes(), 3);
        assert_eq!(a.sample_shape(), vec![1, 2, 2]);
    }

    #[test]
    fn padding_adds_a_black_border() {
        let a = toy(20, 2, 2);
        assert_eq!(a.sample_shape(), vec![1, 6, 6]);
        let x = a.train_images();
        assert_eq!(x.double_value(&[0, 0, 0, 0]), -1.0);
        assert_eq!(x.double_value(&[0, 0, 5, 5]), -1.0);
    }

    #[test]
    fn batches_come_from_the_training_split_and_the_filter() {
        let a = toy(60, 15, 0);
        let held = ids(a.heldout_images());
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (x, l) = a.batch(200, &[1, 2], &mut rng, Device::Cpu).unwrap();
        assert_eq!(x.size(), vec![200, 1, 2, 2]);
        let l: Vec<i64> = Vec::try_from(l).unwrap();
        for (i, c) in ids(&x).iter().zip(&l) {
            assert!(*c == 1 || *c == 2);
            assert_eq!(i % 3, *c);
            assert!(!held.contains(i));
        }
        assert!(a.batch(4, &[7], &mut rng, Device::Cpu).is_err());
    }

    #[test]
    fn too_large_a_heldout_is_refused() {
        let px = vec![0u8; 8];
        let e = ImageDataset::from_bytes(
            &px,
            [2, 1, 2, 2],
            &[0, 1],
            None,
            &SplitConfig {
                heldout: 2,
                ..Default::default()
            },
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("data.heldout"), "{e}");
    }
}
