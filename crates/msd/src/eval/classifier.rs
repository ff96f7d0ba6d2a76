//! The project's own feature network: a small CNN classifier trained on the training split of an
//! image dataset. Its penultimate layer (after ReLU) gives the features for FD, KID and
//! precision/recall; its predictions give the per-class accuracy of generated samples (does the
//! model draw the class it was asked for). Its held-out accuracy is stored with it.
//!
//! Architecture, for `x: [B, C, H, W]` in [−1, 1]: per stage two 3×3 convs + ReLU, then 2×2
//! max-pool; adaptive average pool to 4×4; linear → `features` (ReLU) → dropout → linear →
//! logits. Saved as `classifier.json` (config + training record) and `classifier.safetensors`.

use crate::data::{ImageDataset, TrainingData};
use crate::train::checkpoint;
use crate::train::{step_rng, AdamW, AdamWConfig};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// Architecture of the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    pub in_channels: i64,
    pub num_classes: i64,
    /// Channels of each conv stage.
    #[serde(default = "d_channels")]
    pub channels: Vec<i64>,
    /// Width of the penultimate (feature) layer.
    #[serde(default = "d_features")]
    pub features: i64,
    #[serde(default = "d_dropout")]
    pub dropout: f64,
}

fn d_channels() -> Vec<i64> {
    vec![16, 32]
}
fn d_features() -> i64 {
    128
}
fn d_dropout() -> f64 {
    0.3
}

impl ClassifierConfig {
    /// The default architecture for `in_channels` and `num_classes`.
    pub fn new(in_channels: i64, num_classes: i64) -> Self {
        Self {
            in_channels,
            num_classes,
            channels: d_channels(),
            features: d_features(),
            dropout: d_dropout(),
        }
    }

    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels < 1 || self.num_classes < 2 || self.features < 1 {
            return Err(Error::config(
                "classifier",
                "in_channels ≥ 1, num_classes ≥ 2 and features ≥ 1 are required",
            ));
        }
        if self.channels.is_empty() || self.channels.iter().any(|&c| c < 1) {
            return Err(Error::config(
                "classifier.channels",
                format!("needs ≥ 1 stage, each ≥ 1, got {:?}", self.channels),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("classifier.dropout", "must be in [0, 1)"));
        }
        Ok(())
    }
}

/// Training settings of the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifierTrainConfig {
    pub steps: u64,
    pub batch_size: usize,
    /// Peak learning rate (cosine decay to zero after a short warm-up).
    pub lr: f64,
    pub seed: u64,
    /// Random translation of every training image by up to this many pixels.
    pub max_shift: i64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 128,
            lr: 2e-3,
            seed: 0,
            max_shift: 2,
        }
    }
}

/// What is stored with a trained classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierRecord {
    pub config: ClassifierConfig,
    pub train: ClassifierTrainConfig,
    /// Accuracy on the held-out split, which the classifier never trained on.
    pub heldout_accuracy: f64,
    pub heldout_n: usize,
    pub train_seconds: f64,
    /// Identifies the training data (the data config as JSON).
    pub data_id: String,
}

/// A small CNN classifier with its weights.
pub struct Classifier {
    pub vs: nn::VarStore,
    pub config: ClassifierConfig,
    convs: Vec<(nn::Conv2D, nn::Conv2D)>,
    fc: nn::Linear,
    head: nn::Linear,
}

/// Rows per forward pass in batched evaluation.
const EVAL_BATCH: i64 = 500;

impl Classifier {
    /// A freshly initialised classifier (call [`ClassifierConfig::validate`] first).
    pub fn new(config: &ClassifierConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let p = vs.root();
        let cc = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        let mut cin = config.in_channels;
        let convs = config
            .channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let q = &p / format!("stage{i}");
                let pair = (
                    nn::conv2d(&q / "conv0", cin, c, 3, cc),
                    nn::conv2d(&q / "conv1", c, c, 3, cc),
                );
                cin = c;
                pair
            })
            .collect();
        let fc = nn::linear(&p / "fc", cin * 16, config.features, Default::default());
        let head = nn::linear(
            &p / "head",
            config.features,
            config.num_classes,
            Default::default(),
        );
        Self {
            vs,
            config: config.clone(),
            convs,
            fc,
            head,
        }
    }

    /// `x`: `[B, C, H, W]` in [−1, 1] → (features `[B, F]`, logits `[B, num_classes]`).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for (a, b) in &self.convs {
            h = b.forward(&a.forward(&h).relu()).relu().max_pool2d(
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                false,
            );
        }
        let f = self
            .fc
            .forward(&h.adaptive_avg_pool2d([4, 4]).flatten(1, -1))
            .relu();
        let logits = self.head.forward(&f.dropout(self.config.dropout, train));
        (f, logits)
    }

    /// The activations a perceptual distance compares (eval mode, with gradient to `x`): each
    /// conv stage's output after its second ReLU (before pooling), `[B, C_i, H_i, W_i]`, then the
    /// features `[B, F]`. `x`: `[B, C, H, W]` in [−1, 1].
    pub fn activations(&self, x: &Tensor) -> Vec<Tensor> {
        let mut out = Vec::with_capacity(self.convs.len() + 1);
        let mut h = x.shallow_clone();
        for (a, b) in &self.convs {
            let act = b.forward(&a.forward(&h).relu()).relu();
            h = act.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
            out.push(act);
        }
        let f = self
            .fc
            .forward(&h.adaptive_avg_pool2d([4, 4]).flatten(1, -1))
            .relu();
        out.push(f);
        out
    }

    /// Features and logits of many images, in eval mode and batches, on the classifier's device:
    /// `x`: `[N, C, H, W]` → (`[N, F]`, `[N, num_classes]`) on the CPU.
    pub fn embed(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let s = x.size();
        if s.len() != 4 || s[1] != self.config.in_channels {
            return Err(Error::Invalid(format!(
                "classifier expects [N, {}, H, W] images, got {s:?}",
                self.config.in_channels
            )));
        }
        let dev = self.vs.device();
        let (mut fs, mut ls) = (Vec::new(), Vec::new());
        tch::no_grad(|| {
            for start in (0..s[0]).step_by(EVAL_BATCH as usize) {
                let len = EVAL_BATCH.min(s[0] - start);
                let (f, l) = self.forward_t(
                    &x.narrow(0, start, len).to_device(dev).to_kind(Kind::Float),
                    false,
                );
                fs.push(f.to_device(Device::Cpu));
                ls.push(l.to_device(Device::Cpu));
            }
        });
        Ok((Tensor::cat(&fs, 0), Tensor::cat(&ls, 0)))
    }

    /// Predicted classes of `x`: `[N, C, H, W]` → `N` labels.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<i64>> {
        let (_, l) = self.embed(x)?;
        Ok(Vec::<i64>::try_from(l.argmax(1, false))?)
    }

    /// Writes `dir/classifier.json` (the record) and `dir/classifier.safetensors` atomically.
    pub fn save_dir(&self, dir: &Path, record: &ClassifierRecord) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        checkpoint::save_varstore(&self.vs, &dir.join("classifier.safetensors"))?;
        checkpoint::write_json_atomic(&dir.join("classifier.json"), record)
    }

    /// Loads a classifier saved by [`Classifier::save_dir`], checking every tensor name and shape.
    pub fn load_dir(dir: &Path, device: Device) -> Result<(Self, ClassifierRecord)> {
        let record: ClassifierRecord = checkpoint::read_json(&dir.join("classifier.json"))?;
        record.config.validate()?;
        let mut c = Self::new(&record.config, device);
        checkpoint::load_varstore(&mut c.vs, &dir.join("classifier.safetensors"))?;
        c.vs.freeze();
        Ok((c, record))
    }
}

/// Overall accuracy and accuracy per class (NaN for a class with no examples).
pub fn class_accuracy(pred: &[i64], labels: &[i64], num_classes: i64) -> (f64, Vec<f64>) {
    let mut hit = vec![0usize; num_classes as usize];
    let mut tot = vec![0usize; num_classes as usize];
    for (p, l) in pred.iter().zip(labels) {
        if (0..num_classes).contains(l) {
            tot[*l as usize] += 1;
            hit[*l as usize] += (p == l) as usize;
        }
    }
    let n: usize = tot.iter().sum();
    let overall = if n == 0 {
        f64::NAN
    } else {
        hit.iter().sum::<usize>() as f64 / n as f64
    };
    (
        overall,
        hit.iter()
            .zip(&tot)
            .map(|(&h, &t)| {
                if t == 0 {
                    f64::NAN
                } else {
                    h as f64 / t as f64
                }
            })
            .collect(),
    )
}

/// Shifts every image of `x`: `[B, C, H, W]` by its own random offset in `[−s, s]²` (the border
/// filled with −1, the background).
fn random_shift(x: &Tensor, s: i64, rng: &mut impl Rng) -> Tensor {
    if s == 0 {
        return x.shallow_clone();
    }
    let sz = x.size();
    let padded = x.pad([s, s, s, s], "constant", -1.0);
    let rows: Vec<Tensor> = (0..sz[0])
        .map(|i| {
            let (dy, dx) = (rng.gen_range(0..=2 * s), rng.gen_range(0..=2 * s));
            padded.get(i).narrow(1, dy, sz[2]).narrow(2, dx, sz[3])
        })
        .collect();
    Tensor::stack(&rows, 0)
}

/// Trains a classifier on the training split of `data`, then measures its held-out accuracy.
/// `on(step, loss)` is called every 50 steps (the library never prints).
pub fn train_classifier(
    data: &ImageDataset,
    data_id: &str,
    config: &ClassifierConfig,
    train: &ClassifierTrainConfig,
    device: Device,
    on: &mut dyn FnMut(u64, f64),
) -> Result<(Classifier, ClassifierRecord)> {
    config.validate()?;
    if config.num_classes != data.num_classes() || config.in_channels != data.sample_shape()[0] {
        return Err(Error::config(
            "classifier",
            "in_channels / num_classes differ from the data",
        ));
    }
    if train.steps == 0 || train.batch_size == 0 {
        return Err(Error::config(
            "classifier.steps / batch_size",
            "must be ≥ 1",
        ));
    }
    let t0 = Instant::now();
    let _ = step_rng(train.seed, u64::MAX, 7); // seeds the initialisation
    let clf = Classifier::new(config, device);
    let warmup = (train.steps / 20).max(1);
    let mut opt = AdamW::new(
        &clf.vs,
        AdamWConfig {
            lr: train.lr,
            weight_decay: 1e-4,
            warmup_steps: warmup,
            grad_clip: 5.0,
            ..Default::default()
        },
    );
    for step in 0..train.steps {
        let mut rng = step_rng(train.seed, step, 1);
        let (x, y) = data.random_train(train.batch_size, &mut rng, Device::Cpu);
        let x = random_shift(&x, train.max_shift, &mut rng).to_device(device);
        let (_, logits) = clf.forward_t(&x, true);
        let loss = logits.cross_entropy_for_logits(&y.to_device(device));
        opt.config.lr = train.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * step as f64 / train.steps as f64).cos());
        opt.zero_grad();
        loss.backward();
        opt.step();
        if (step + 1) % 50 == 0 {
            let lv = loss.double_value(&[]);
            if !lv.is_finite() {
                return Err(Error::NonFinite {
                    what: "classifier loss".into(),
                    step,
                });
            }
            on(step + 1, lv);
        }
    }
    let pred = clf.predict(data.heldout_images())?;
    let (acc, _) = class_accuracy(&pred, data.heldout_labels(), config.num_classes);
    let record = ClassifierRecord {
        config: config.clone(),
        train: train.clone(),
        heldout_accuracy: acc,
        heldout_n: data.heldout_labels().len(),
        train_seconds: t0.elapsed().as_secs_f64(),
        data_id: data_id.to_string(),
    };
    Ok((clf, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitConfig;

    /// Two easily separated classes: a bright left half vs a bright right half (plus noise).
    fn halves(n: usize) -> ImageDataset {
        let mut px = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let c = (i % 2) as i64;
            for _r in 0..8 {
                for col in 0..8 {
                    let bright = (col < 4) == (c == 0);
                    px.push(if bright {
                        200 + (i * 7 + col) as u8 % 50
                    } else {
                        (i * 13 + col) as u8 % 40
                    });
                }
            }
            labels.push(c);
        }
        ImageDataset::from_bytes(
            &px,
            [n, 1, 8, 8],
            &labels,
            None,
            &SplitConfig {
                heldout: 40,
                split_seed: 0,
                pad: 0,
            },
            "halves",
        )
        .unwrap()
    }

    #[test]
    fn learns_a_separable_task_and_roundtrips() {
        let data = halves(200);
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
            max_shift: 1,
        };
        let mut calls = 0;
        let (clf, rec) = train_classifier(&data, "halves", &cfg, &tc, Device::Cpu, &mut |_, _| {
            calls += 1
        })
        .unwrap();
        assert_eq!(calls, 1);
        assert!(rec.heldout_accuracy > 0.95, "{}", rec.heldout_accuracy);
        assert_eq!(rec.heldout_n, 40);
        let d = tempfile::tempdir().unwrap();
        clf.save_dir(d.path(), &rec).unwrap();
        let (back, rec2) = Classifier::load_dir(d.path(), Device::Cpu).unwrap();
        assert_eq!(rec2, rec);
        let x = data.heldout_images();
        assert_eq!(back.predict(x).unwrap(), clf.predict(x).unwrap());
        let (f, l) = back.embed(x).unwrap();
        assert_eq!((f.size(), l.size()), (vec![40, 8], vec![40, 2]));
        // A classifier of another shape is refused with the tensor named.
        let other = Classifier::new(
            &ClassifierConfig {
                channels: vec![5],
                ..cfg.clone()
            },
            Device::Cpu,
        );
        other
            .save_dir(d.path(), &ClassifierRecord { config: cfg, ..rec })
            .unwrap();
        let e = Classifier::load_dir(d.path(), Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("fc.weight") && e.contains("shape"), "{e}");
    }

    #[test]
    fn per_class_accuracy() {
        let (all, per) = class_accuracy(&[0, 1, 1, 2, 2], &[0, 1, 0, 2, 2], 4);
        assert!((all - 0.8).abs() < 1e-12);
        assert_eq!(&per[..3], &[0.5, 1.0, 1.0]);
        assert!(per[3].is_nan());
    }
}
