//! `msd eval`: draws a balanced, seeded set of samples from a teacher, scores it with the
//! project's feature network (FD, KID, precision/recall, per-class accuracy) against the
//! training split, puts the held-out split's scores beside it as the floor, and writes
//! `eval.json`, `eval.md` and a sample grid.

use crate::cmd::train_classifier::{train_into, DEFAULT_DATA};
use crate::{device, grid, progress};
use anyhow::{bail, Context, Result};
use msd::config::DataConfig;
use msd::data::TrainingData;
use msd::diffusion::{Denoiser, Guided, SamplerConfig};
use msd::eval::{
    balanced_labels, generate, image_metrics, Classifier, ClassifierTrainConfig, MetricsConfig,
    Reference,
};
use msd::model::EdmModel;
use msd::nets::Precision;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["teacher", "bundle"])))]
pub struct Args {
    /// Teacher directory (model.json + model.safetensors).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// A bundle of one-step students (bundle.json) instead of a teacher.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Heun steps (2·steps − 1 network evaluations per sample).
    #[arg(long, default_value_t = 18)]
    pub steps: usize,
    /// Number of generated samples (balanced over the classes).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Feature network directory; trained there first if it does not exist
    /// (default: a `classifier` folder beside the teacher).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Data: idx:IMAGES,LABELS or folder:DIR (relative to the working directory).
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: String,
    /// Output folder (default: an `eval` folder beside the teacher).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f64,
    /// First noise seed; batch b uses seed + b.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per generation batch.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Precision of the network's evaluation (recorded in eval.json).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

/// CPU model name and the number of threads torch uses.
pub fn hardware() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {} torch threads", tch::get_num_threads())
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

fn beside(teacher: &Path, name: &str) -> PathBuf {
    let t = teacher.components().as_path();
    t.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(name)
}

pub fn run(a: Args) -> Result<()> {
    let device = device::parse(&a.device)?;
    if a.n < 4 || a.steps < 1 {
        bail!("--n must be ≥ 4 and --steps ≥ 1");
    }
    // The folder outputs go beside: the teacher's, or the bundle file's.
    let anchor = match (&a.teacher, &a.bundle) {
        (Some(t), _) => t.clone(),
        (None, Some(b)) => b.clone(),
        _ => bail!("give --teacher or --bundle"),
    };
    let dc = DataConfig::parse_spec(&a.data)?;
    if let Some(bpath) = &a.bundle {
        let data = dc
            .open_images(Path::new("."))
            .with_context(|| format!("--data {}", a.data))?;
        let clf_dir = a
            .classifier
            .clone()
            .unwrap_or_else(|| beside(&anchor, "classifier"));
        if !clf_dir.join("classifier.json").exists() {
            println!(
                "no feature network at {}; training one first",
                clf_dir.display()
            );
            train_into(&a.data, &clf_dir, &ClassifierTrainConfig::default(), device)?;
        }
        let (clf, rec) = Classifier::load_dir(&clf_dir, device)
            .with_context(|| format!("--classifier {}", clf_dir.display()))?;
        let out = a.out.clone().unwrap_or_else(|| beside(&anchor, "eval"));
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        return crate::cmd::eval_bundle::run(
            &a,
            bpath,
            &data,
            &clf,
            &clf_dir,
            rec.heldout_accuracy,
            &out,
            device,
        );
    }
    let mut teacher = EdmModel::load_dir(&anchor, device)
        .with_context(|| format!("--teacher {}", anchor.display()))?;
    teacher.set_precision(a.precision);
    let data = dc
        .open_images(Path::new("."))
        .with_context(|| format!("--data {}", a.data))?;
    if data.num_classes() != teacher.num_classes()
        || data.sample_shape() != teacher.spec.net.sample_shape()
    {
        bail!(
            "--data has {} classes of shape {:?} but the teacher makes {} classes of shape {:?}",
            data.num_classes(),
            data.sample_shape(),
            teacher.num_classes(),
            teacher.spec.net.sample_shape()
        );
    }
    let clf_dir = a
        .classifier
        .clone()
        .unwrap_or_else(|| beside(&anchor, "classifier"));
    if !clf_dir.join("classifier.json").exists() {
        if a.classifier.is_some() {
            bail!(
                "--classifier {}: no classifier.json there (train one with `msd train-classifier`)",
                clf_dir.display()
            );
        }
        println!(
            "no feature network at {}; training one first",
            clf_dir.display()
        );
        train_into(&a.data, &clf_dir, &ClassifierTrainConfig::default(), device)?;
    }
    let (clf, rec) = Classifier::load_dir(&clf_dir, device)
        .with_context(|| format!("--classifier {}", clf_dir.display()))?;
    if rec.data_id != dc.id() {
        tracing::warn!(
            "the feature network was trained on {} but the evaluation data are {}",
            rec.data_id,
            dc.id()
        );
    }
    let out = a.out.clone().unwrap_or_else(|| beside(&anchor, "eval"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mc = MetricsConfig::default();
    let reference = Reference::new(&clf, data.train_images())?;
    let floor = image_metrics(
        &clf,
        &reference,
        data.heldout_images(),
        data.heldout_labels(),
        &mc,
    )?;

    let cfg = SamplerConfig {
        steps: a.steps,
        guidance: a.guidance,
        ..Default::default()
    };
    let labels = balanced_labels(a.n, teacher.num_classes());
    let guided = Guided {
        inner: &teacher as &dyn Denoiser,
        scale: a.guidance,
        null_label: teacher.num_classes(),
    };
    let through_net = a.batch as i64 * if a.guidance != 1.0 { 2 } else { 1 };
    msd::runtime::apply_threads(msd::runtime::CallSite::TeacherSampling, through_net);
    let bar = progress::bar(a.n as u64, "sampling");
    let t0 = Instant::now();
    let x = generate(
        &guided,
        &teacher.spec.net.sample_shape(),
        &labels,
        &cfg,
        a.seed,
        a.batch,
        device,
        &mut |d| bar.set_position(d as u64),
    );
    let gen_seconds = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let m = image_metrics(&clf, &reference, &x, &labels, &mc)?;

    let per_grid = 10.min(a.n / teacher.num_classes() as usize).max(1);
    let take = (per_grid * teacher.num_classes() as usize).min(a.n) as i64;
    grid::write_class_grid(
        &x.narrow(0, 0, take),
        &labels[..take as usize],
        &out.join("samples.png"),
    )?;

    let hw = hardware();
    let batches = a.n.div_ceil(a.batch);
    let report = json!({
        "n": m.n,
        "fd": m.fd,
        "kid": m.kid,
        "kid_std": m.kid_std,
        "precision": m.precision,
        "recall": m.recall,
        "class_accuracy": m.class_accuracy,
        "per_class_accuracy": m.per_class_accuracy,
        "floor_fd": floor.fd,
        "floor": floor,
        "reference": { "split": "train", "n": m.n_reference },
        "feature_net": { "path": clf_dir, "heldout_accuracy": rec.heldout_accuracy, "heldout_n": rec.heldout_n, "features": clf.config.features },
        "teacher": anchor,
        "sampler": cfg,
        "nfe": cfg.nfe(),
        "seeds": { "first": a.seed, "last": a.seed + batches as u64 - 1, "batch": a.batch, "rule": "batch b draws its noise after manual_seed(first + b); sample i asks for class i mod C" },
        "metrics": mc,
        "data": a.data,
        "generation_seconds": gen_seconds,
        "hardware": hw,
        "precision": a.precision,
    });
    msd::train::checkpoint::write_json_atomic(&out.join("eval.json"), &report)?;

    let mut md = String::new();
    md.push_str(&format!(
        "# Evaluation of `{}`\n\nFeature network: the project's own CNN classifier `{}` (penultimate layer, {} features; held-out accuracy {:.2}% on {} images) — not Inception, so these FD/KID figures are not comparable with published FID.\n\n",
        anchor.display(),
        clf_dir.display(),
        clf.config.features,
        100.0 * rec.heldout_accuracy,
        rec.heldout_n
    ));
    md.push_str(&format!(
        "Samples: {} (balanced, classes i mod {}), Heun-{} ({} NFE), guidance {}, seeds {}..={} (batches of {}); reference: training split ({} images). Hardware: {}; generation took {:.0} s.\n\n",
        m.n, teacher.num_classes(), a.steps, cfg.nfe(), a.guidance, a.seed, a.seed + batches as u64 - 1, a.batch, m.n_reference, hw, gen_seconds
    ));
    md.push_str("| set | n | FD | KID | precision | recall | class accuracy |\n|---|---|---|---|---|---|---|\n");
    for (name, r) in [("teacher samples", &m), ("held-out real (floor)", &floor)] {
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
    md.push_str(&per_class_table(
        "Per-class accuracy of the teacher's samples:",
        &m.per_class_accuracy,
    ));
    msd::train::checkpoint::write_bytes_atomic(&out.join("eval.md"), md.as_bytes())?;
    println!(
        "teacher: FD {:.3} (floor {:.3}), KID {:.4}, precision {:.3}, recall {:.3}, class accuracy {:.2}% on {} samples",
        m.fd, floor.fd, m.kid, m.precision, m.recall, 100.0 * m.class_accuracy, m.n
    );
    println!(
        "report: {} and eval.md; grid: {}",
        out.join("eval.json").display(),
        out.join("samples.png").display()
    );
    Ok(())
}
