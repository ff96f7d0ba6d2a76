//! Image evaluation as one library call: balanced, seeded generation from any [`Denoiser`], and
//! the metrics of a generated set against the real training split, all on the feature
//! network's penultimate features: FD, KID, k-NN precision/recall, and the per-class accuracy
//! (the classifier's prediction against the requested label). Every image set, generated or
//! real, is scored as the 8-bit image it would be saved as ([`super::quantize`]).

use super::classifier::{class_accuracy, Classifier, ClassifierRecord};
use super::quantize::quantize_u8;
use super::{fd::frechet_distance, fd::FeatureStats, kid::kid, prdc::precision_recall};
use crate::diffusion::{sample, Denoiser, SamplerConfig};
use crate::Result;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
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
    #[serde(deserialize_with = "null_as_nan")]
    pub fd: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub kid: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub kid_std: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub precision: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub recall: f64,
    /// Share of images the classifier assigns to their requested label.
    #[serde(deserialize_with = "null_as_nan")]
    pub class_accuracy: f64,
    /// NaN (`null` in JSON) for a class with no images.
    #[serde(deserialize_with = "nulls_as_nan")]
    pub per_class_accuracy: Vec<f64>,
}

/// The real reference: the training split's features and statistics.
pub struct Reference {
    pub features: Tensor,
    pub stats: FeatureStats,
}

impl Reference {
    /// Features of `real`: `[N, C, H, W]` under `clf` (as 8-bit images: a no-op for images
    /// decoded from bytes).
    pub fn new(clf: &Classifier, real: &Tensor) -> Result<Self> {
        let (features, _) = clf.embed(&quantize_u8(real)?)?;
        let stats = FeatureStats::from_features(&features)?;
        Ok(Self { features, stats })
    }
}

/// Metrics of `images`: `[N, C, H, W]` generated (or held out) for `labels` against `reference`.
/// The images are scored as 8-bit images: clamped to [−1, 1] and rounded to the 256 levels
/// ([`quantize_u8`]) before the feature network sees them.
pub fn image_metrics(
    clf: &Classifier,
    reference: &Reference,
    images: &Tensor,
    labels: &[i64],
    cfg: &MetricsConfig,
) -> Result<ImageMetrics> {
    let (f, logits) = clf.embed(&quantize_u8(images)?)?;
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

/// The FD of `images` scored on their raw values (neither clamped nor quantised), as reports
/// did before 8-bit scoring: kept beside the 8-bit FD so that re-scored figures can be compared
/// with the old ones.
pub fn raw_fd(clf: &Classifier, reference: &Reference, images: &Tensor) -> Result<f64> {
    let (f, _) = clf.embed(&images.to_kind(tch::Kind::Float))?;
    frechet_distance(&FeatureStats::from_features(&f)?, &reference.stats)
}

/// What every FD/KID figure of this project is computed on, for report lines.
pub const FEATURE_NET_KIND: &str =
    "msd CNN classifier (penultimate-layer features); FD/KID on these features are not Inception FID";

/// The feature network behind a report (`eval.json`'s `feature_net`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureNetInfo {
    /// The classifier's directory.
    pub path: PathBuf,
    pub heldout_accuracy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_n: Option<usize>,
    /// Width of the feature vector.
    pub features: i64,
    /// What the network is, and that its FD is not Inception FID ([`FEATURE_NET_KIND`]);
    /// empty in reports written before this field existed.
    #[serde(default)]
    pub kind: String,
}

impl FeatureNetInfo {
    /// The feature network of `clf` saved in `path` with its training `record`.
    pub fn new(path: &Path, clf: &Classifier, record: &ClassifierRecord) -> Self {
        Self {
            path: path.to_path_buf(),
            heldout_accuracy: record.heldout_accuracy,
            heldout_n: Some(record.heldout_n),
            features: clf.config.features,
            kind: FEATURE_NET_KIND.into(),
        }
    }

    /// The name of an FD made with this network, for a report line or a column header:
    /// "FD (msd CNN `path`, not Inception FID)".
    pub fn fd_label(&self) -> String {
        format!("FD (msd CNN `{}`, not Inception FID)", self.path.display())
    }
}

/// The real reference of a report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    /// Which split (`train`).
    pub split: String,
    pub n: usize,
}

/// How the noise seeds of a generated set were drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedsInfo {
    pub first: u64,
    pub last: u64,
    pub batch: usize,
    pub rule: String,
}

impl SeedsInfo {
    /// The seeds of `n` samples generated in batches of `batch` from seed `first` on.
    pub fn new(first: u64, n: usize, batch: usize) -> Self {
        let batches = n.div_ceil(batch.max(1)).max(1);
        Self {
            first,
            last: first + batches as u64 - 1,
            batch,
            rule: "batch b draws its noise after manual_seed(first + b); sample i asks for class i mod C".into(),
        }
    }
}

/// One student of a bundle evaluation: its own samples against the real images of its classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudentEval {
    pub student: usize,
    pub classes: Vec<i64>,
    pub params: i64,
    pub n: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub fd_own_classes: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub class_accuracy: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub precision: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub recall: f64,
}

/// `eval.json`: one evaluation of a teacher (`teacher` + `sampler`) or of a bundle of one-step
/// students (`bundle` + `students` + `per_student`). The field names are those of the reports
/// committed under `results/`, which all parse.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub n: usize,
    #[serde(deserialize_with = "null_as_nan")]
    pub fd: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub kid: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub kid_std: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub precision: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub recall: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub class_accuracy: f64,
    #[serde(deserialize_with = "nulls_as_nan")]
    pub per_class_accuracy: Vec<f64>,
    /// The held-out real split's FD (also in `floor`).
    #[serde(deserialize_with = "null_as_nan")]
    pub floor_fd: f64,
    pub floor: ImageMetrics,
    pub reference: ReferenceInfo,
    pub feature_net: FeatureNetInfo,
    /// How generated images were made 8-bit before features ([`super::QUANTIZATION`]); absent
    /// in reports scored on raw values, before quantisation was introduced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_as: Option<String>,
    /// The FD of the same samples on their raw values ([`raw_fd`]); absent in older reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd_raw: Option<f64>,
    /// The evaluated teacher's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<PathBuf>,
    /// The teacher's sampler (guidance included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerConfig>,
    /// The evaluated bundle file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// Number of students in the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub students: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_student: Option<Vec<StudentEval>>,
    /// Network evaluations per sample.
    pub nfe: usize,
    pub seeds: SeedsInfo,
    pub metrics: MetricsConfig,
    /// The data spec (`idx:…` or `folder:…`).
    pub data: String,
    pub generation_seconds: f64,
    pub hardware: String,
    /// Numeric precision of the network's evaluation (`f32`/`bf16`); absent in reports made
    /// before `--precision` existed, which were f32. (`precision` above is the PRDC metric.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_precision: Option<crate::nets::Precision>,
}

impl EvalReport {
    /// The metrics of a generated set `m` beside the held-out `floor`, with everything but the
    /// model-specific fields (`teacher`/`sampler` or `bundle`/`students`/`per_student`), which
    /// the caller sets.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        m: &ImageMetrics,
        floor: &ImageMetrics,
        feature_net: FeatureNetInfo,
        nfe: usize,
        seeds: SeedsInfo,
        metrics: &MetricsConfig,
        data: &str,
        generation_seconds: f64,
        hardware: &str,
    ) -> Self {
        Self {
            n: m.n,
            fd: m.fd,
            kid: m.kid,
            kid_std: m.kid_std,
            precision: m.precision,
            recall: m.recall,
            class_accuracy: m.class_accuracy,
            per_class_accuracy: m.per_class_accuracy.clone(),
            floor_fd: floor.fd,
            floor: floor.clone(),
            reference: ReferenceInfo {
                split: "train".into(),
                n: m.n_reference,
            },
            feature_net,
            samples_as: Some(super::QUANTIZATION.into()),
            fd_raw: None,
            teacher: None,
            sampler: None,
            bundle: None,
            students: None,
            per_student: None,
            nfe,
            seeds,
            metrics: metrics.clone(),
            data: data.into(),
            generation_seconds,
            hardware: hardware.into(),
            net_precision: None,
        }
    }

    /// The generated set's metrics as an [`ImageMetrics`].
    pub fn metrics_of_samples(&self) -> ImageMetrics {
        ImageMetrics {
            n: self.n,
            n_reference: self.reference.n,
            fd: self.fd,
            kid: self.kid,
            kid_std: self.kid_std,
            precision: self.precision,
            recall: self.recall,
            class_accuracy: self.class_accuracy,
            per_class_accuracy: self.per_class_accuracy.clone(),
        }
    }

    /// Reads `eval.json`.
    pub fn load(path: &Path) -> Result<Self> {
        crate::train::checkpoint::read_json(path)
    }

    /// Writes `eval.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::train::checkpoint::write_json_atomic(path, self)
    }

    /// The one-line summary printed after an evaluation: `who: FD … (floor …), …`, with the
    /// feature network named.
    pub fn summary_line(&self, who: &str) -> String {
        format!(
            "{who}: {} {:.3} (floor {:.3}), KID {:.4}, precision {:.3}, recall {:.3}, class accuracy {:.2}% on {} samples ({} NFE)",
            self.feature_net.fd_label(),
            self.fd,
            self.floor_fd,
            self.kid,
            self.precision,
            self.recall,
            100.0 * self.class_accuracy,
            self.n,
            self.nfe
        )
    }

    /// `eval.md`: the feature network (and that it is not Inception), how the samples were
    /// made, the metrics table beside the floor, per-student and per-class breakdowns.
    /// `title` names the model (`teacher path` or `bundle path`).
    pub fn to_markdown(&self) -> String {
        let fnet = &self.feature_net;
        let fd = fnet.fd_label();
        let (title, set_name) = match (&self.teacher, &self.bundle) {
            (Some(t), _) => (format!("`{}`", t.display()), "teacher samples"),
            (None, Some(b)) => (
                format!(
                    "`{}` ({} one-step students)",
                    b.display(),
                    self.students.unwrap_or(0)
                ),
                "students (pooled)",
            ),
            _ => ("samples".into(), "samples"),
        };
        let heldout = match fnet.heldout_n {
            Some(n) => format!(" on {n} images"),
            None => String::new(),
        };
        let mut md = format!(
            "# Evaluation of {title}\n\nFeature network: the project's own CNN classifier `{}` (penultimate layer, {} features; held-out accuracy {:.2}%{heldout}) — not Inception, so these FD/KID figures are not comparable with published FID.\n\n",
            fnet.path.display(),
            fnet.features,
            100.0 * fnet.heldout_accuracy,
        );
        let classes = self.per_class_accuracy.len();
        let how = match &self.sampler {
            Some(s) => format!(
                "{:?}-{} ({} NFE), guidance {}",
                s.method, s.steps, self.nfe, s.guidance
            ),
            None => format!("{} NFE each from the owning student", self.nfe),
        };
        let scored = match (&self.samples_as, self.fd_raw) {
            (Some(q), Some(raw)) => format!(
                "scored as 8-bit images ({q}; the same samples on their raw values: FD {raw:.3})"
            ),
            (Some(q), None) => format!("scored as 8-bit images ({q})"),
            (None, _) => "scored on raw values (not quantised)".into(),
        };
        md.push_str(&format!(
            "Samples: {} (balanced, classes i mod {classes}), {how}, seeds {}..={} (batches of {}), {scored}; reference: {} split ({} images). Hardware: {}; generation took {:.1} s.\n\n",
            self.n, self.seeds.first, self.seeds.last, self.seeds.batch, self.reference.split, self.reference.n, self.hardware, self.generation_seconds
        ));
        md.push_str(&format!(
            "| set | n | {fd} | KID | precision | recall | class accuracy |\n|---|---|---|---|---|---|---|\n"
        ));
        for (name, r) in [
            (set_name, &self.metrics_of_samples()),
            ("held-out real (floor)", &self.floor),
        ] {
            md.push_str(&format!(
                "| {name} | {} | {:.3} | {:.4} ± {:.4} | {:.3} | {:.3} | {:.2}% |\n",
                r.n,
                r.fd,
                r.kid,
                r.kid_std,
                r.precision,
                r.recall,
                100.0 * r.class_accuracy
            ));
        }
        if let Some(per) = &self.per_student {
            md.push_str(&format!(
                "\nPer student ({fd} against the real images of its own classes):\n\n| student | classes | params | n | {fd}, own classes | class accuracy |\n|---|---|---|---|---|---|\n"
            ));
            for s in per {
                md.push_str(&format!(
                    "| {} | {:?} | {} | {} | {:.3} | {:.2}% |\n",
                    s.student,
                    s.classes,
                    s.params,
                    s.n,
                    s.fd_own_classes,
                    100.0 * s.class_accuracy
                ));
            }
        }
        let title = if self.teacher.is_some() {
            "Per-class accuracy of the teacher's samples:"
        } else {
            "Per-class accuracy:"
        };
        md.push_str(&per_class_table(title, &self.per_class_accuracy));
        md
    }
}

/// The markdown table of per-class accuracies under a `title` line.
pub fn per_class_table(title: &str, acc: &[f64]) -> String {
    let mut md = format!("\n{title}\n\n| class |");
    for c in 0..acc.len() {
        md.push_str(&format!(" {c} |"));
    }
    md.push_str(&format!(
        "\n|---|{}\n| accuracy |",
        "---|".repeat(acc.len())
    ));
    for v in acc {
        md.push_str(&format!(" {:.1}% |", 100.0 * v));
    }
    md.push('\n');
    md
}

/// JSON has no NaN: serde_json writes `null` for it; read `null` back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// [`null_as_nan`] for every entry of a list.
fn nulls_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

/// Balanced labels: image i asks for class `i mod num_classes`.
pub fn balanced_labels(n: usize, num_classes: i64) -> Vec<i64> {
    (0..n).map(|i| i as i64 % num_classes).collect()
}

/// Generates `labels.len()` images of `shape` (`[C, H, W]`) with `den` and the sampler `cfg`,
/// (its guidance included) in batches of `batch`; batch b draws its noise after
/// `tch::manual_seed(seed + b)`, so every image is fixed by (seed, its index, batch). `on(done)`
/// reports progress. Returns the images on the CPU.
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
) -> Result<Tensor> {
    let batch = batch.max(1);
    let mut out = Vec::new();
    for (b, chunk) in labels.chunks(batch).enumerate() {
        out.push(sample_batch(den, shape, chunk, cfg, seed, b, device)?);
        on(b * batch + chunk.len());
    }
    Ok(Tensor::cat(&out, 0))
}

/// Batch `b` of [`generate`]: the images of `chunk`'s labels from the noise drawn after
/// `tch::manual_seed(seed + b)`, on the CPU.
fn sample_batch(
    den: &dyn Denoiser,
    shape: &[i64],
    chunk: &[i64],
    cfg: &SamplerConfig,
    seed: u64,
    b: usize,
    device: Device,
) -> Result<Tensor> {
    tch::manual_seed(seed.wrapping_add(b as u64) as i64);
    let mut s = vec![chunk.len() as i64];
    s.extend_from_slice(shape);
    let z = Tensor::randn(s.as_slice(), (Kind::Float, device));
    let l = Tensor::from_slice(chunk).to_device(device);
    Ok(sample(den, &z, &l, cfg)?.to_device(Device::Cpu))
}

/// [`generate`] that keeps every finished batch in the folder `cache`
/// (`batch-NNNNN.safetensors`: its images and the seconds they took), reuses the batches found
/// there, and stops between batches on a stop request ([`crate::train::stop`]) with
/// [`Error::Interrupted`] — so that a long evaluation (10,000 Heun samples) resumes where it
/// stopped, with the same images as an uninterrupted run. The folder must belong to one
/// (model, sampler, labels, seed, batch): callers key it by a hash of them; a batch file of
/// another size is made again. `on(done, reused)` reports each batch. Returns the images (on
/// the CPU) and the generation seconds summed over every process that made them.
#[allow(clippy::too_many_arguments)]
pub fn generate_cached(
    den: &dyn Denoiser,
    shape: &[i64],
    labels: &[i64],
    cfg: &SamplerConfig,
    seed: u64,
    batch: usize,
    device: Device,
    cache: &std::path::Path,
    on: &mut dyn FnMut(usize, bool),
) -> Result<(Tensor, f64)> {
    use crate::train::checkpoint::{read_tensors, write_tensors_atomic};
    std::fs::create_dir_all(cache).map_err(|e| crate::Error::io(cache, e))?;
    let batch = batch.max(1);
    let (mut out, mut seconds) = (Vec::new(), 0.0);
    for (b, chunk) in labels.chunks(batch).enumerate() {
        let mut s = vec![chunk.len() as i64];
        s.extend_from_slice(shape);
        let file = cache.join(format!("batch-{b:05}.safetensors"));
        let kept = read_tensors(&file).ok().and_then(|ts| {
            let get = |n: &str| {
                ts.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, t)| t.shallow_clone())
            };
            let (x, secs) = (get("x")?, get("seconds")?);
            (x.size() == s).then(|| (x, secs.double_value(&[])))
        });
        let reused = kept.is_some();
        let (x, secs) = match kept {
            Some(k) => k,
            None => {
                if crate::train::stop::stop_requested() {
                    return Err(crate::Error::Interrupted { step: b as u64 });
                }
                let t0 = std::time::Instant::now();
                let x = sample_batch(den, shape, chunk, cfg, seed, b, device)?;
                let secs = t0.elapsed().as_secs_f64();
                write_tensors_atomic(
                    &file,
                    &[
                        ("x".into(), x.shallow_clone()),
                        ("seconds".into(), Tensor::from(secs)),
                    ],
                )?;
                (x, secs)
            }
        };
        seconds += secs;
        out.push(x);
        on(b * batch + chunk.len(), reused);
    }
    Ok((Tensor::cat(&out, 0), seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ImageDataset, SplitConfig, TrainingData};
    use crate::eval::{train_classifier, ClassifierConfig, ClassifierTrainConfig};

    /// Two classes of 8×8 images (left-bright vs right-bright, with noise) and a classifier
    /// trained on them.
    fn two_class_fixture() -> (ImageDataset, Classifier) {
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
        (data, clf)
    }

    /// A cached generation stopped part-way resumes to the images of an uninterrupted run.
    #[test]
    fn cached_generation_resumes_to_the_same_images() {
        let _rng = crate::rng_guard();
        let den = crate::test_support::random_model(&crate::test_support::tiny_unet(), 3);
        let cfg = SamplerConfig {
            steps: 3,
            guidance: 1.0,
            ..Default::default()
        };
        let labels = balanced_labels(10, 3);
        let shape = den.spec.net.sample_shape();
        let d = tempfile::tempdir().unwrap();
        let plain = generate(&den, &shape, &labels, &cfg, 7, 4, Device::Cpu, &mut |_| {}).unwrap();
        // Generates into the cache; returns the images, seconds and which batches were reused.
        let cached = || {
            let mut reused = Vec::new();
            let (x, secs) = generate_cached(
                &den,
                &shape,
                &labels,
                &cfg,
                7,
                4,
                Device::Cpu,
                d.path(),
                &mut |_, r| reused.push(r),
            )
            .unwrap();
            (x, secs, reused)
        };
        let (x, _, reused) = cached();
        assert_eq!(reused, [false, false, false]);
        assert!(x.allclose(&plain, 0.0, 0.0, false));
        // As if the first process had stopped after batch 0, and batch 1's file were of
        // another size (it is made again).
        for b in 1..3 {
            std::fs::remove_file(d.path().join(format!("batch-{b:05}.safetensors"))).unwrap();
        }
        crate::train::checkpoint::write_tensors_atomic(
            &d.path().join("batch-00001.safetensors"),
            &[
                (
                    "x".into(),
                    Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)),
                ),
                ("seconds".into(), Tensor::from(1.0)),
            ],
        )
        .unwrap();
        tch::manual_seed(999); // the global RNG state must not matter
        let (x, secs, reused) = cached();
        assert_eq!(reused, [true, false, false]);
        assert!(x.allclose(&plain, 0.0, 0.0, false), "resumed images differ");
        assert!(secs > 0.0);
    }

    #[test]
    fn real_heldout_scores_well_and_wrong_labels_score_badly() {
        let _rng = crate::rng_guard();
        let (data, clf) = two_class_fixture();
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

    /// An independent 8-bit rendering, scalar f32: clamp, scale, round half to even, decode.
    fn as_bytes_by_hand(x: &Tensor) -> Tensor {
        let v: Vec<f32> = Vec::try_from(x.flatten(0, -1)).unwrap();
        let q: Vec<f32> = v
            .iter()
            .map(|&p| {
                let b = (p.clamp(-1.0, 1.0) + 1.0) * 127.5;
                let r = b.round_ties_even() as u8;
                r as f32 / 127.5 - 1.0
            })
            .collect();
        Tensor::from_slice(&q).reshape(x.size())
    }

    #[test]
    fn generated_sets_are_scored_as_8_bit_images() {
        let _rng = crate::rng_guard();
        let (data, clf) = two_class_fixture();
        let reference = Reference::new(&clf, data.train_images()).unwrap();
        let mc = MetricsConfig {
            kid_subsets: 10,
            kid_subset_size: 50,
            k: 3,
            seed: 0,
        };
        // A "generated" set: held-out images pushed well outside [−1, 1] plus sub-level noise,
        // as an overshooting one-step student would make.
        tch::manual_seed(3);
        let held = data.heldout_images();
        let gen = held * 1.4 + 0.2 + held.randn_like() * 0.002;
        let max = gen.abs().max().double_value(&[]);
        assert!(max > 1.2, "the set must overshoot, max |x| = {max}");
        let labels = data.heldout_labels();
        let raw = image_metrics(&clf, &reference, &gen, labels, &mc).unwrap();
        let bytes = image_metrics(&clf, &reference, &as_bytes_by_hand(&gen), labels, &mc).unwrap();
        assert_eq!(raw, bytes, "a set must score as its 8-bit copy");
        // Only clamping: still different (the sub-level noise must be rounded away too).
        let clamped_only = gen.clamp(-1.0, 1.0);
        let (f_clamped, _) = clf.embed(&clamped_only).unwrap();
        let (f_bytes, _) = clf.embed(&as_bytes_by_hand(&gen)).unwrap();
        assert!(!f_clamped.equal(&f_bytes));
        // The unquantised features give another FD: scoring raw values would change the figure.
        let (f_raw, _) = clf.embed(&gen).unwrap();
        let fd_raw = frechet_distance(
            &FeatureStats::from_features(&f_raw).unwrap(),
            &reference.stats,
        )
        .unwrap();
        assert!(
            (fd_raw - raw.fd).abs() > 1e-6 * raw.fd.max(1.0),
            "raw {fd_raw} vs 8-bit {}",
            raw.fd
        );
        // Real images decoded from bytes are fixed points: the floor is unchanged.
        let (f_real, _) = clf.embed(held).unwrap();
        let (f_real_q, _) = clf.embed(&quantize_u8(held).unwrap()).unwrap();
        assert!(f_real.equal(&f_real_q));
    }

    fn eval_jsons(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                eval_jsons(&p, out);
            } else if p.file_name().is_some_and(|n| n == "eval.json") {
                out.push(p);
            }
        }
    }

    #[test]
    fn committed_reports_parse_and_round_trip() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../results");
        let mut files = Vec::new();
        eval_jsons(&root, &mut files);
        assert!(files.len() >= 10, "found {files:?}");
        let (mut teachers, mut bundles) = (0, 0);
        let (mut seeded, mut cells) = (0, 0);
        for f in &files {
            // The experiments' own records have their own types: the image rows' EvalRecord
            // (`evals/<row>/s<seed>/` and the teacher row `evals/teacher/`; scored as 8-bit
            // images, with the raw-value FD beside it), the text rows' TextEvalRecord
            // (`text/evals/…`) and the toy cells' ToyCellResult (`<cell>/s<seed>/`). Reports of
            // `msd eval` (EvalReport) carry the held-out `floor`.
            let json: serde_json::Value = crate::train::checkpoint::read_json(f)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let seed_dir = f
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| {
                    n.len() > 1 && n.starts_with('s') && n[1..].parse::<u64>().is_ok()
                });
            let in_evals = f.components().any(|c| c.as_os_str() == "evals");
            if json.get("floor").is_none() {
                if in_evals && f.starts_with(root.join("text")) {
                    let r: crate::text::experiment::eval::TextEvalRecord =
                        serde_json::from_value(json)
                            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    assert!(r.samples_as.starts_with("uint8"), "{}", f.display());
                } else if in_evals {
                    let r: crate::experiment::eval::EvalRecord = serde_json::from_value(json)
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    assert!(
                        r.samples_as.is_some() && r.fd_raw.is_some(),
                        "{}",
                        f.display()
                    );
                    seeded += 1;
                } else {
                    assert!(seed_dir, "{}: not a known record", f.display());
                    let r: crate::experiment::toy::ToyCellResult = serde_json::from_value(json)
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                    assert!(r.l1_to_teacher.is_finite(), "{}", f.display());
                    cells += 1;
                }
                continue;
            }
            let r = EvalReport::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            match (&r.sampler, &r.per_student) {
                (Some(s), None) => {
                    assert!(s.s_tmax.is_infinite(), "{}", f.display());
                    teachers += 1
                }
                (None, Some(p)) => {
                    assert_eq!(p.len(), r.students.unwrap());
                    bundles += 1
                }
                _ => panic!("{}: neither a teacher nor a bundle report", f.display()),
            }
            // Committed before quantisation: marked as scored on raw values.
            let back: EvalReport =
                serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
        assert!(teachers >= 1 && bundles >= 1);
        assert!(seeded >= 1 && cells >= 1, "seeded {seeded}, cells {cells}");
    }

    #[test]
    fn nan_and_infinity_survive_json() {
        let m = ImageMetrics {
            n: 4,
            n_reference: 8,
            fd: 1.0,
            kid: f64::NAN,
            kid_std: 0.0,
            precision: 0.5,
            recall: 0.5,
            class_accuracy: 1.0,
            per_class_accuracy: vec![1.0, f64::NAN],
        };
        let fnet = FeatureNetInfo {
            path: "clf".into(),
            heldout_accuracy: 0.9,
            heldout_n: Some(10),
            features: 8,
            kind: FEATURE_NET_KIND.into(),
        };
        let mut r = EvalReport::new(
            &m,
            &m,
            fnet,
            35,
            SeedsInfo::new(5, 10, 4),
            &MetricsConfig::default(),
            "idx:a,b",
            1.0,
            "cpu",
        );
        r.sampler = Some(SamplerConfig::default());
        assert_eq!((r.seeds.first, r.seeds.last), (5, 7));
        let back: EvalReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert!(back.kid.is_nan() && back.per_class_accuracy[1].is_nan());
        assert!(back.sampler.unwrap().s_tmax.is_infinite());
        assert_eq!(back.samples_as.as_deref(), Some(crate::eval::QUANTIZATION));
        let md = r.to_markdown();
        assert!(
            md.contains("not Inception FID") && md.contains("8-bit"),
            "{md}"
        );
        assert!(r.summary_line("teacher").contains("not Inception FID"));
    }

    #[test]
    fn generation_is_balanced_and_seeded() {
        use crate::diffusion::denoiser::GaussianDenoiser;
        // generate() seeds libtorch's process-global generator: other tests must not reseed it
        // between the two draws.
        let _rng = crate::rng_guard();
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
        )
        .unwrap();
        let b = generate(
            &den,
            &[1, 2, 2],
            &labels,
            &cfg,
            9,
            3,
            Device::Cpu,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(a.size(), vec![7, 1, 2, 2]);
        assert_eq!(seen, vec![3, 6, 7]);
        assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
    }
}
