//! Image evaluation as one library call: balanced, seeded generation from any [`Denoiser`], and
//! the metrics of a generated set against the real training split, all on the feature
//! network's penultimate features: FD, KID, k-NN precision/recall, and the per-class accuracy
//! (the classifier's prediction against the requested label).

use super::classifier::{class_accuracy, Classifier};
use super::{fd::frechet_distance, fd::FeatureStats, kid::kid, prdc::precision_recall};
use crate::diffusion::{sample, Denoiser, SamplerConfig};
use crate::Result;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Settings of the metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    /// Neighbours defining the precision/recall manifolds.
    pub k: i64,
    /// Seed of the KID subset draws.
    pub seed: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            kid_subsets: 100,
            kid_subset_size: 1000,
            k: 3,
            seed: 0,
        }
    }
}

/// Metrics of one image set against the real reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageMetrics {
    /// Number of evaluated images.
    pub n: usize,
    /// Number of real reference images.
    pub n_reference: usize,
    pub fd: f64,
    pub kid: f64,
    pub kid_std: f64,
    pub precision: f64,
    pub recall: f64,
    /// Share of images the classifier assigns to their requested label.
    pub class_accuracy: f64,
    pub per_class_accuracy: Vec<f64>,
}

/// The real reference: the training split's features and statistics.
pub struct Reference {
    pub features: Tensor,
    pub stats: FeatureStats,
}

impl Reference {
    /// Features of `real`: `[N, C, H, W]` under `clf`.
    pub fn new(clf: &Classifier, real: &Tensor) -> Result<Self> {
        let (features, _) = clf.embed(real)?;
        let stats = FeatureStats::from_features(&features)?;
        Ok(Self { features, stats })
    }
}

/// Metrics of `images`: `[N, C, H, W]` generated (or held out) for `labels` against `reference`.
pub fn image_metrics(
    clf: &Classifier,
    reference: &Reference,
    images: &Tensor,
    labels: &[i64],
    cfg: &MetricsConfig,
) -> Result<ImageMetrics> {
    let (f, logits) = clf.embed(images)?;
    let pred: Vec<i64> = Vec::try_from(logits.argmax(1, false))?;
    let (acc, per) = class_accuracy(&pred, labels, clf.config.num_classes);
    let fd = frechet_distance(&FeatureStats::from_features(&f)?, &reference.stats)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let (k, ks) = kid(
        &f,
        &reference.features,
        cfg.kid_subsets,
        cfg.kid_subset_size,
        &mut rng,
    )?;
    let (p, r) = precision_recall(&reference.features, &f, cfg.k)?;
    Ok(ImageMetrics {
        n: labels.len(),
        n_reference: reference.features.size()[0] as usize,
        fd,
        kid: k,
        kid_std: ks,
        precision: p,
        recall: r,
        class_accuracy: acc,
        per_class_accuracy: per,
    })
}

/// Balanced labels: image i asks for class `i mod num_classes`.
pub fn balanced_labels(n: usize, num_classes: i64) -> Vec<i64> {
    (0..n).map(|i| i as i64 % num_classes).collect()
}

/// Generates `labels.len()` images of `shape` (`[C, H, W]`) with `den` and the sampler `cfg`,
/// in batches of `batch`; batch b draws its noise after `tch::manual_seed(seed + b)`, so every
/// image is fixed by (seed, its index, batch). `on(done)` reports progress. Returns the images
/// on the CPU.
#[allow(clippy::too_many_arguments)]
pub fn generate(
    den: &dyn Denoiser,
    shape: &[i64],
    labels: &[i64],
    cfg: &SamplerConfig,
    seed: u64,
    batch: usize,
    device: Device,
    on: &mut dyn FnMut(usize),
) -> Tensor {
    let batch = batch.max(1);
    let mut out = Vec::new();
    for (b, chunk) in labels.chunks(batch).enumerate() {
        tch::manual_seed(seed.wrapping_add(b as u64) as i64);
        let mut s = vec![chunk.len() as i64];
        s.extend_from_slice(shape);
        let z = Tensor::randn(s.as_slice(), (Kind::Float, device));
        let l = Tensor::from_slice(chunk).to_device(device);
        out.push(sample(den, &z, &l, cfg).to_device(Device::Cpu));
        on(b * batch + chunk.len());
    }
    Tensor::cat(&out, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageDataset, SplitConfig, TrainingData};
    use crate::eval::{train_classifier, ClassifierConfig, ClassifierTrainConfig};

    #[test]
    fn real_heldout_scores_well_and_wrong_labels_score_badly() {
        // Two classes: left-bright vs right-bright 8×8 images with noise.
        let n = 240;
        let mut px = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = (i % 2) as i64;
            for r in 0..8usize {
                for col in 0..8usize {
                    let bright = (col < 4) == (c == 0);
                    let noise = ((i * 31 + r * 7 + col * 13) % 60) as u8;
                    px.push(if bright { 180 + noise } else { noise });
                }
            }
            labels.push(c);
        }
        let data = ImageDataset::from_bytes(
            &px,
            [n, 1, 8, 8],
            &labels,
            None,
            &SplitConfig {
                heldout: 60,
                split_seed: 0,
                pad: 0,
            },
            "t",
        )
        .unwrap();
        let cfg = ClassifierConfig {
            channels: vec![4],
            features: 8,
            ..ClassifierConfig::new(1, 2)
        };
        let tc = ClassifierTrainConfig {
            steps: 60,
            batch_size: 32,
            lr: 5e-3,
            seed: 1,
            max_shift: 0,
        };
        let (clf, _) =
            train_classifier(&data, "t", &cfg, &tc, Device::Cpu, &mut |_, _| {}).unwrap();
        let reference = Reference::new(&clf, data.train_images()).unwrap();
        let mc = MetricsConfig {
            kid_subsets: 10,
            kid_subset_size: 50,
            k: 3,
            seed: 0,
        };
        let good = image_metrics(
            &clf,
            &reference,
            data.heldout_images(),
            data.heldout_labels(),
            &mc,
        )
        .unwrap();
        assert_eq!(good.n, 60);
        assert!(
            good.class_accuracy > 0.95 && good.precision > 0.8,
            "{good:?}"
        );
        // Asking for the other class: the accuracy collapses; blank images are far away.
        let flipped: Vec<i64> = data.heldout_labels().iter().map(|l| 1 - l).collect();
        let bad = image_metrics(&clf, &reference, data.heldout_images(), &flipped, &mc).unwrap();
        assert!(bad.class_accuracy < 0.05);
        let blank = Tensor::full([60, 1, 8, 8], -1.0, (Kind::Float, Device::Cpu))
            + Tensor::randn([60, 1, 8, 8], (Kind::Float, Device::Cpu)) * 0.01;
        let far = image_metrics(&clf, &reference, &blank, data.heldout_labels(), &mc).unwrap();
        assert!(
            far.fd > 10.0 * good.fd.max(1e-3) && far.kid > good.kid,
            "{far:?} vs {good:?}"
        );
        assert_eq!(data.num_classes(), 2);
    }

    #[test]
    fn generation_is_balanced_and_seeded() {
        use crate::diffusion::denoiser::GaussianDenoiser;
        let den = GaussianDenoiser {
            mean: Tensor::zeros([1, 2, 2], (Kind::Float, Device::Cpu)),
            std: 0.5,
        };
        let labels = balanced_labels(7, 3);
        assert_eq!(labels, vec![0, 1, 2, 0, 1, 2, 0]);
        let cfg = SamplerConfig {
            steps: 4,
            ..Default::default()
        };
        let mut seen = Vec::new();
        let a = generate(
            &den,
            &[1, 2, 2],
            &labels,
            &cfg,
            9,
            3,
            Device::Cpu,
            &mut |d| seen.push(d),
        );
        let b = generate(
            &den,
            &[1, 2, 2],
            &labels,
            &cfg,
            9,
            3,
            Device::Cpu,
            &mut |_| {},
        );
        assert_eq!(a.size(), vec![7, 1, 2, 2]);
        assert_eq!(seen, vec![3, 6, 7]);
        assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
    }
}
