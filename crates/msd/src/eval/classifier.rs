//! The project's own feature network: a small CNN classifier trained on the training split of an
//! image dataset. Its penultimate layer (after ReLU) gives the features for FD, KID and
//! precision/recall; its predictions give the per-class accuracy of generated samples (does the
//! model draw the class it was asked for). Its held-out accuracy is stored with it.
//!
//! Architecture, for `x: [B, C, H, W]` in [−1, 1]: per stage two 3×3 convs + ReLU, then 2×2
//! max-pool; adaptive average pool to 4×4; linear → `features` (ReLU) → dropout → linear →
//! logits. Saved as `classifier.json` (config + training record) and `classifier.safetensors`.
//! Training is a [`Method`] on the shared [`Runner`] (checkpoints, exact resume, stop requests).

use crate::data::{ImageDataset, TrainingData};
use crate::train::checkpoint::{self, config_hash};
use crate::train::{step_rng, AdamW, AdamWConfig, LogLine, Method, Runner, Slot, StepReport};
use crate::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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

/// The classifier's training as a [`Method`]: cross-entropy on randomly shifted training images,
/// AdamW with a cosine learning rate after a short warm-up.
struct ClassifierMethod<'a> {
    clf: Classifier,
    opt: AdamW,
    data: &'a ImageDataset,
    train: &'a ClassifierTrainConfig,
    device: Device,
    last_loss: f64,
}

impl Method for ClassifierMethod<'_> {
    type Output = Classifier;

    fn stage(&self) -> &str {
        "classifier"
    }

    fn total_steps(&self) -> u64 {
        self.train.steps
    }

    fn step(&mut self, step: u64) -> Result<StepReport> {
        let train = self.train;
        let mut rng = step_rng(train.seed, step, 1);
        let (x, y) = self
            .data
            .random_train(train.batch_size, &mut rng, Device::Cpu);
        let x = random_shift(&x, train.max_shift, &mut rng).to_device(self.device);
        let (_, logits) = self.clf.forward_t(&x, true);
        let loss = logits.cross_entropy_for_logits(&y.to_device(self.device));
        self.opt.config.lr = train.lr
            * 0.5
            * (1.0 + (std::f64::consts::PI * step as f64 / train.steps as f64).cos());
        self.opt.zero_grad();
        loss.backward();
        self.opt.step();
        self.last_loss = loss.double_value(&[]);
        Ok(StepReport {
            loss: self.last_loss,
            checked: vec![],
        })
    }

    fn log_line(&mut self, _secs: f64) -> LogLine {
        let mut record = serde_json::Map::new();
        record.insert("loss".into(), self.last_loss.into());
        record.insert("lr".into(), self.opt.current_lr().into());
        LogLine {
            loss: self.last_loss,
            examples_per_s: 0.0,
            record,
        }
    }

    fn state(&mut self) -> Vec<(&'static str, Slot<'_>)> {
        vec![
            ("classifier", Slot::Vars(&mut self.clf.vs)),
            ("optim", Slot::Optim(&mut self.opt)),
        ]
    }

    fn output(&self) -> &Classifier {
        &self.clf
    }

    /// The record (with the held-out accuracy) is written by [`train_classifier_in`] after the
    /// runner finishes, so `classifier.json` marks a finished directory.
    fn export(&self, _dir: &Path) -> Result<i64> {
        Ok(self
            .clf
            .vs
            .variables()
            .values()
            .map(|t| t.numel() as i64)
            .sum())
    }
}

/// Trains (or resumes, or reuses when finished) a classifier on the training split of `data` in
/// `dir` (checkpoints, `stats.jsonl`, `train.json`; at the end `classifier.json` +
/// `classifier.safetensors`), then measures its held-out accuracy. `on(step, loss)` is called
/// every 50 steps and at the end (the library never prints).
#[allow(clippy::too_many_arguments)]
pub fn train_classifier_in(
    dir: &Path,
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
    let hash = config_hash(&(config, train, data_id));
    let mut runner = Runner::new(dir, hash, train.seed, 500, 50);
    runner.model_file = "classifier.json";
    if runner.finished()?.is_some() {
        let (clf, record) = Classifier::load_dir(dir, device)?;
        return Ok((clf, record));
    }
    let _ = step_rng(train.seed, u64::MAX, 7); // seeds the initialisation
    let clf = Classifier::new(config, device);
    let warmup = (train.steps / 20).max(1);
    let opt = AdamW::new(
        &clf.vs,
        AdamWConfig {
            lr: train.lr,
            weight_decay: 1e-4,
            warmup_steps: warmup,
            grad_clip: 5.0,
            ..Default::default()
        },
    );
    let mut m = ClassifierMethod {
        clf,
        opt,
        data,
        train,
        device,
        last_loss: f64::NAN,
    };
    let summary = runner.run(&mut m, &mut |p| {
        if let crate::train::Progress::Step { step, loss, .. } = p {
            on(step, loss)
        }
    })?;
    let clf = m.clf;
    let pred = clf.predict(data.heldout_images())?;
    let (acc, _) = class_accuracy(&pred, data.heldout_labels(), config.num_classes);
    let record = ClassifierRecord {
        config: config.clone(),
        train: train.clone(),
        heldout_accuracy: acc,
        heldout_n: data.heldout_labels().len(),
        train_seconds: summary.train_seconds,
        data_id: data_id.to_string(),
    };
    clf.save_dir(dir, &record)?;
    Ok((clf, record))
}

/// [`train_classifier_in`] in a scratch directory under the system's temporary folder, removed
/// afterwards (no resume).
pub fn train_classifier(
    data: &ImageDataset,
    data_id: &str,
    config: &ClassifierConfig,
    train: &ClassifierTrainConfig,
    device: Device,
    on: &mut dyn FnMut(u64, f64),
) -> Result<(Classifier, ClassifierRecord)> {
    static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("msd-classifier-{}-{n}", std::process::id()));
    let r = train_classifier_in(&dir, data, data_id, config, train, device, on);
    let _ = std::fs::remove_dir_all(&dir);
    r
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
        let _rng = crate::rng_guard();
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
        assert_eq!(calls, 2, "logged at step 50 and at the end (60)");
        assert!(rec.heldout_accuracy > 0.95, "{}", rec.heldout_accuracy);
        assert_eq!(rec.heldout_n, 40);
        let d = tempfile::tempdir().unwrap();
        clf.save_dir(d.path(), &rec).unwrap();
        let (back, rec2) = Classifier::load_dir(d.path(), Device::Cpu).unwrap();
        // JSON keeps a float to within an ulp (serde_json's default parser).
        assert!((rec2.train_seconds - rec.train_seconds).abs() < 1e-9);
        assert_eq!(
            ClassifierRecord {
                train_seconds: rec.train_seconds,
                ..rec2
            },
            rec
        );
        let x = data.heldout_images();
        assert_eq!(back.predict(x).unwrap(), clf.predict(x).unwrap());
        // In a directory: the same weights (same seed), and a finished directory is reused.
        let kept = tempfile::tempdir().unwrap();
        let train_in = |on: &mut dyn FnMut(u64, f64)| {
            train_classifier_in(kept.path(), &data, "halves", &cfg, &tc, Device::Cpu, on).unwrap()
        };
        let (c1, _) = train_in(&mut |_, _| {});
        let mut again = 0;
        let (c2, _) = train_in(&mut |_, _| again += 1);
        assert_eq!(again, 0, "a finished classifier directory was retrained");
        for c in [&c1, &c2] {
            let v = c.vs.variables();
            assert!(clf.vs.variables().iter().all(|(n, t)| t.equal(&v[n])));
        }
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
