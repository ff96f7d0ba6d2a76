//! One row's evaluation in the text experiment: `samples_per_prompt` samples for every prompt of
//! the standard prompt set (prompt i's noise after `manual_seed(eval_seed + i)`, the same for
//! every row and seed) from the teacher (its sampler and guidance) or a bundle of one-step
//! students (routed by the prompt's embedding), made 8-bit as every evaluation in the project
//! ([`crate::eval::QUANTIZATION`]), then scored: per prompt the digit the feature classifier
//! reads and the attribute levels measured on the image ([`crate::text::prompt_eval`]); FD of
//! the classifier's features overall and per group of the reference partition (K quadrants of
//! the training captions' embeddings, the same for every row), each with its real-vs-real floor
//! at the same n ([`super::group_fd`]). The feature network is the project's MNIST CNN
//! classifier, not Inception: the FDs are comparable between rows, not with published FIDs.

use super::group_fd::{group_fds, GroupFd};
use crate::bundle::Bundle;
use crate::data::captions::{caption_images, distinct_texts, training_templates, Thresholds};
use crate::data::ImageDataset;
use crate::diffusion::{sample, SamplerConfig};
use crate::eval::quantize::quantize_u8;
use crate::eval::Classifier;
use crate::model::EdmModel;
use crate::nets::text_encoder::TextEncoder;
use crate::partition::{Partition, Strategy};
use crate::text::captioned::CaptionedSet;
use crate::text::prompt_eval::{score_prompt, summaries, PromptScore, ScoreSummary};
use crate::text::prompt_set::{standard_prompts, PromptSpec};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How every row is evaluated (part of each evaluation's key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextEvalSettings {
    pub prompts_per_digit: usize,
    pub prompt_seed: u64,
    pub samples_per_prompt: usize,
    pub eval_seed: u64,
    /// Groups of the reference (quadrant) partition.
    pub groups: usize,
    pub caption_seed: u64,
}

/// `evals/<id>[/s<seed>]/eval.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TextEvalRecord {
    /// Hash of what made the row (students' or teacher's config hashes) and the settings.
    pub key: String,
    /// The teacher folder or the bundle file.
    pub model: String,
    pub sampling: String,
    /// Network evaluations per sample.
    pub nfe: usize,
    pub students: usize,
    pub params_per_student: i64,
    pub prompts: usize,
    pub samples_per_prompt: usize,
    /// All samples (prompts × samples per prompt).
    pub samples: usize,
    /// All prompts, training-template prompts, held-out-template prompts.
    pub summaries: Vec<ScoreSummary>,
    /// The overall FD (`group: null`) then one entry per reference group.
    pub fd: Vec<GroupFd>,
    /// Evaluation prompts per reference group.
    pub prompts_per_group: Vec<usize>,
    /// Evaluation prompts per student (bundles; empty for the teacher).
    pub prompts_per_student: Vec<usize>,
    /// Training captions per student of the row's own partition (bundles).
    pub partition_sizes: Vec<usize>,
    /// Summed training-loop seconds of every student and stage up to this row's (the
    /// teacher's own training for the teacher row).
    pub train_seconds: Option<f64>,
    pub generation_seconds: f64,
    /// Machine and threads (the machine may be shared: timings are indicative).
    pub hardware: String,
    pub samples_as: String,
    pub scores: Vec<PromptScore>,
}

/// What is evaluated.
pub enum TextGenerator<'a> {
    /// The teacher with its sampler (guidance applied).
    Teacher(&'a EdmModel, &'a SamplerConfig),
    /// One-step students, each prompt from its student.
    Bundle(&'a Bundle),
}

/// A row's samples and scores before the driver adds its key and training cost.
pub struct Evaluated {
    pub record: TextEvalRecord,
    /// `grid_per_prompt` samples of every prompt, prompt-major, and their prompt indices.
    pub grid: Tensor,
    pub grid_rows: Vec<i64>,
}

/// Classifier features of `x` (`[N, C, H, W]`) in chunks: `[N, D]` on the CPU.
fn features(clf: &Classifier, x: &Tensor) -> Result<Tensor> {
    let n = x.size()[0];
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let len = 500.min(n - i);
        let (f, _) = clf.embed(&x.narrow(0, i, len))?;
        out.push(f.to_device(Device::Cpu).to_kind(Kind::Double));
        i += len;
    }
    Ok(Tensor::cat(&out, 0))
}

/// Embeddings of `texts` as points.
fn rows_of(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let dim = t.size()[1] as usize;
    let flat: Vec<f32> =
        Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?;
    Ok(flat.chunks(dim).map(<[f32]>::to_vec).collect())
}

/// The feature network, the prompts, the reference partition and the real images' features and
/// groups, shared by every row.
pub struct TextScorer {
    pub classifier: Classifier,
    pub settings: TextEvalSettings,
    pub thresholds: Thresholds,
    /// The reference partition: quadrants of the training captions' embeddings.
    pub reference: Partition,
    pub prompts: Vec<PromptSpec>,
    prompt_embeddings: Vec<Vec<f32>>,
    prompt_groups: Vec<usize>,
    train_points: Vec<Vec<f32>>,
    train_features: Tensor,
    train_groups: Vec<usize>,
    held_features: Tensor,
    held_groups: Vec<usize>,
    sample_shape: Vec<i64>,
}

impl TextScorer {
    /// Everything the rows share: the prompts and their embeddings, the reference partition
    /// of `set` (the training captions), the held-out images captioned the same way (their
    /// embeddings cached in `heldout_cache`) and assigned to its groups, and the real images'
    /// features.
    pub fn new(
        classifier: Classifier,
        data: &ImageDataset,
        set: &CaptionedSet,
        encoder: &TextEncoder,
        heldout_cache: &Path,
        settings: TextEvalSettings,
    ) -> Result<Self> {
        let train_points = set.points()?;
        let reference = Partition::of_prompts(
            Strategy::Quadrants,
            &train_points,
            settings.groups,
            settings.caption_seed,
        )?;
        let groups = reference
            .prompts
            .clone()
            .ok_or_else(|| Error::Partition("the reference partition has no groups".into()))?;
        let train_groups: Vec<usize> = train_points.iter().map(|p| groups.assign(p)).collect();
        let held_caps = caption_images(
            data.heldout_images(),
            data.heldout_labels(),
            &set.thresholds,
            &training_templates(),
            settings.caption_seed,
        )?;
        let (texts, rows) = distinct_texts(&held_caps);
        let (emb, _) = encoder.encode_cached(&texts, heldout_cache, 64)?;
        let distinct = rows_of(&emb)?;
        let held_groups: Vec<usize> = rows.iter().map(|&r| groups.assign(&distinct[r])).collect();
        let prompts = standard_prompts(settings.prompts_per_digit, settings.prompt_seed)?;
        let texts: Vec<&str> = prompts.iter().map(|p| p.text.as_str()).collect();
        let prompt_embeddings = rows_of(&encoder.encode(&texts, 64)?)?;
        let prompt_groups = prompt_embeddings.iter().map(|e| groups.assign(e)).collect();
        let train_features = features(&classifier, data.train_images())?;
        let held_features = features(&classifier, data.heldout_images())?;
        let sample_shape = data.train_images().size()[1..].to_vec();
        Ok(Self {
            classifier,
            settings,
            thresholds: set.thresholds.clone(),
            reference,
            prompts,
            prompt_embeddings,
            prompt_groups,
            train_points,
            train_features,
            train_groups,
            held_features,
            held_groups,
            sample_shape,
        })
    }

    /// Training captions per group of `p` (a prompt partition).
    pub fn partition_sizes(&self, p: &Partition) -> Result<Vec<usize>> {
        crate::text::pipeline::group_sizes(p, &self.train_points)
    }

    /// Generates and scores the prompt set with `g`; `grid_per_prompt` samples of every prompt
    /// come back for a picture. Key and training cost are left for the caller.
    pub fn evaluate(
        &self,
        g: &TextGenerator,
        grid_per_prompt: usize,
        device: Device,
    ) -> Result<Evaluated> {
        let s = &self.settings;
        let spp = s.samples_per_prompt as i64;
        let mut shape = vec![spp];
        shape.extend(&self.sample_shape);
        let (students, params, nfe, model, sampling) = match g {
            TextGenerator::Teacher(t, cfg) => (
                1,
                t.num_params(),
                cfg.nfe() * if cfg.guidance != 1.0 { 2 } else { 1 },
                "teacher".to_string(),
                format!(
                    "Heun-{} with guidance {} ({} NFE per sample)",
                    cfg.steps,
                    cfg.guidance,
                    cfg.nfe() * if cfg.guidance != 1.0 { 2 } else { 1 }
                ),
            ),
            TextGenerator::Bundle(b) => {
                let m = &b.manifest;
                let params = m.students.iter().map(|s| s.params).sum::<i64>()
                    / m.students.len().max(1) as i64;
                (
                    b.students.len(),
                    params,
                    1,
                    "bundle".to_string(),
                    format!(
                        "{} one-step students ({} partition), 1 NFE per sample",
                        b.students.len(),
                        crate::experiment::plan::partition_name(m.partition.strategy)
                    ),
                )
            }
        };
        let mut per_student = match g {
            TextGenerator::Bundle(b) => vec![0usize; b.students.len()],
            TextGenerator::Teacher(..) => Vec::new(),
        };
        let (mut scores, mut feats, mut gen_groups) = (Vec::new(), Vec::new(), Vec::new());
        let (mut grid, mut grid_rows) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        for (i, spec) in self.prompts.iter().enumerate() {
            let e = &self.prompt_embeddings[i];
            tch::manual_seed(s.eval_seed.wrapping_add(i as u64) as i64);
            let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
            let (x, student) = match g {
                TextGenerator::Bundle(b) => {
                    let (x, k) = b.generate_prompt(e, &z)?;
                    per_student[k] += 1;
                    (x, Some(k))
                }
                TextGenerator::Teacher(m, cfg) => {
                    let c = Tensor::from_slice(e)
                        .to_device(device)
                        .unsqueeze(0)
                        .expand([spp, e.len() as i64], false);
                    (sample(*m, &z, &c, cfg)?, None)
                }
            };
            let x = quantize_u8(&x)?;
            scores.push(score_prompt(
                spec,
                student,
                &x,
                &self.classifier,
                &self.thresholds,
            )?);
            feats.push(features(&self.classifier, &x)?);
            gen_groups.extend(std::iter::repeat_n(self.prompt_groups[i], spp as usize));
            let show = (grid_per_prompt as i64).min(spp);
            grid.push(x.narrow(0, 0, show));
            grid_rows.extend(std::iter::repeat_n(i as i64, show as usize));
        }
        let generation_seconds = t0.elapsed().as_secs_f64();
        let fd = group_fds(
            (&Tensor::cat(&feats, 0), &gen_groups),
            (&self.train_features, &self.train_groups),
            (&self.held_features, &self.held_groups),
            s.groups,
        )?;
        let mut prompts_per_group = vec![0; s.groups];
        for &g in &self.prompt_groups {
            prompts_per_group[g] += 1;
        }
        let partition_sizes = match g {
            TextGenerator::Bundle(b) => self.partition_sizes(&b.manifest.partition)?,
            TextGenerator::Teacher(..) => Vec::new(),
        };
        Ok(Evaluated {
            record: TextEvalRecord {
                key: String::new(),
                model,
                sampling,
                nfe,
                students,
                params_per_student: params,
                prompts: self.prompts.len(),
                samples_per_prompt: s.samples_per_prompt,
                samples: self.prompts.len() * s.samples_per_prompt,
                summaries: summaries(&scores),
                fd,
                prompts_per_group,
                prompts_per_student: per_student,
                partition_sizes,
                train_seconds: None,
                generation_seconds,
                hardware: crate::evaluate::hardware(),
                samples_as: crate::eval::QUANTIZATION.into(),
                scores,
            },
            grid: Tensor::cat(&grid, 0),
            grid_rows,
        })
    }
}
