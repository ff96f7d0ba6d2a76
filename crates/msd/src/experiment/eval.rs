//! One row's evaluation in the image reproduction: a balanced, seeded sample set from the
//! teacher (Heun with its guidance) or from a bundle of one-step students, scored with the
//! project's feature network (FD, KID, precision/recall, class accuracy) against the training
//! split, with the held-out split's FD as the floor. The same numbers `msd eval` reports, as a
//! typed record (`eval.json`), so a program can run the table without the CLI.

use crate::bundle::Bundle;
use crate::data::images::ImageDataset;
use crate::data::TrainingData;
use crate::diffusion::SamplerConfig;
use crate::eval::{
    balanced_labels, generate, generate_cached, image_metrics, raw_fd, Classifier, MetricsConfig,
    Reference,
};
use crate::model::EdmModel;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Tensor};

/// How every row is evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// Samples (balanced over the classes: sample i asks for class i mod C).
    pub n: usize,
    /// Samples per generation batch; batch b draws its noise after `manual_seed(seed + b)`.
    pub batch: usize,
    pub seed: u64,
}

/// `eval.json` of a row (field names as `msd eval` writes them, so either can be read).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalRecord {
    pub n: usize,
    pub fd: f64,
    pub kid: f64,
    pub kid_std: f64,
    pub precision: f64,
    pub recall: f64,
    pub class_accuracy: f64,
    pub per_class_accuracy: Vec<f64>,
    /// The held-out real images against the training split.
    pub floor_fd: f64,
    pub generation_seconds: f64,
    #[serde(default)]
    pub nfe: usize,
    /// How generated images were made 8-bit before features ([`crate::eval::QUANTIZATION`]);
    /// absent in evaluations scored on raw values, which are therefore made again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_as: Option<String>,
    /// FD of the same samples scored on their raw values (not clamped or quantised), as
    /// evaluations before quantisation scored them: how much the 8-bit scoring moved this row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_raw: Option<f64>,
}

/// What is evaluated.
pub enum Generator<'a> {
    /// The teacher with a multi-step sampler (its guidance applied).
    Teacher(&'a EdmModel, &'a SamplerConfig),
    /// One-step students, each sample from the student owning its class.
    Bundle(&'a Bundle),
}

/// The feature network, the real data and the reference statistics shared by every row.
pub struct Scorer {
    pub classifier: Classifier,
    pub data: ImageDataset,
    reference: Reference,
    floor_fd: f64,
    metrics: MetricsConfig,
}

impl Scorer {
    pub fn new(classifier: Classifier, data: ImageDataset) -> Result<Self> {
        let metrics = MetricsConfig::default();
        let reference = Reference::new(&classifier, data.train_images())?;
        let floor = image_metrics(
            &classifier,
            &reference,
            data.heldout_images(),
            data.heldout_labels(),
            &metrics,
        )?;
        Ok(Self {
            classifier,
            data,
            reference,
            floor_fd: floor.fd,
            metrics,
        })
    }

    /// Generates the sample set of `g` and scores it; returns the record and the samples with
    /// their labels (on the CPU).
    pub fn evaluate(
        &self,
        g: &Generator,
        s: &EvalSettings,
        device: Device,
    ) -> Result<(EvalRecord, Tensor, Vec<i64>)> {
        self.evaluate_resumable(g, s, device, None, &mut |_, _| {})
    }

    /// [`Self::evaluate`]; with `cache`, a teacher's generation keeps its finished batches there
    /// and resumes from them (see [`generate_cached`]; a stop request ends it between batches
    /// with [`crate::Error::Interrupted`]). `on(done, reused)` reports each teacher batch.
    pub fn evaluate_resumable(
        &self,
        g: &Generator,
        s: &EvalSettings,
        device: Device,
        cache: Option<&Path>,
        on: &mut dyn FnMut(usize, bool),
    ) -> Result<(EvalRecord, Tensor, Vec<i64>)> {
        let c = self.data.num_classes();
        let labels = balanced_labels(s.n, c);
        let t0 = Instant::now();
        let mut cached_seconds = None;
        let (x, nfe) = match g {
            Generator::Teacher(t, cfg) => {
                // The sampler applies the configured guidance.
                let shape = t.spec.net.sample_shape();
                let x = match cache {
                    Some(dir) => {
                        let (x, secs) = generate_cached(
                            *t, &shape, &labels, cfg, s.seed, s.batch, device, dir, on,
                        )?;
                        cached_seconds = Some(secs);
                        x
                    }
                    None => generate(
                        *t,
                        &shape,
                        &labels,
                        cfg,
                        s.seed,
                        s.batch,
                        device,
                        &mut |_| {},
                    )?,
                };
                (x, cfg.nfe() * if cfg.guidance != 1.0 { 2 } else { 1 })
            }
            Generator::Bundle(b) => {
                let mut xs = Vec::new();
                for (i, chunk) in labels.chunks(s.batch.max(1)).enumerate() {
                    let z = b.noise(chunk.len(), s.seed.wrapping_add(i as u64), device);
                    xs.push(b.generate(chunk, &z)?.0.to_device(Device::Cpu));
                }
                (Tensor::cat(&xs, 0), 1)
            }
        };
        let generation_seconds = cached_seconds.unwrap_or_else(|| t0.elapsed().as_secs_f64());
        let fd_raw = raw_fd(&self.classifier, &self.reference, &x)?;
        let m = image_metrics(
            &self.classifier,
            &self.reference,
            &x,
            &labels,
            &self.metrics,
        )?;
        Ok((
            EvalRecord {
                n: m.n,
                fd: m.fd,
                kid: m.kid,
                kid_std: m.kid_std,
                precision: m.precision,
                recall: m.recall,
                class_accuracy: m.class_accuracy,
                per_class_accuracy: m.per_class_accuracy,
                floor_fd: self.floor_fd,
                generation_seconds,
                nfe,
                samples_as: Some(crate::eval::QUANTIZATION.into()),
                fd_raw: Some(fd_raw),
            },
            x,
            labels,
        ))
    }
}
