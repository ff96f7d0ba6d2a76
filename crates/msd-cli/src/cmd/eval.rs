//! `msd eval`: draws a balanced, seeded set of samples from a teacher, scores it with the
//! project's feature network (FD, KID, precision/recall, per-class accuracy) against the
//! training split, puts the held-out split's scores beside it as the floor, and writes
//! `eval.json`, `eval.md` and a sample grid.
//!
//! Data and sampler default to those of the run the model belongs to (`<run>/config.toml`
//! beside `<run>/teacher` or `<run>/bundle*.json`); only without a run config does the data
//! fall back to the shipped MNIST-10k.

use crate::cmd::train_classifier::{train_into, DEFAULT_DATA};
use crate::{grid, progress};
use anyhow::{bail, Context, Result};
use msd::config::{DataConfig, RunConfig};
use msd::data::TrainingData;
use msd::diffusion::SamplerConfig;
use msd::eval::{
    balanced_labels, generate, image_metrics, Classifier, ClassifierTrainConfig, EvalReport,
    FeatureNetInfo, MetricsConfig, Reference, SeedsInfo,
};
use msd::model::EdmModel;
use msd::nets::Precision;
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
    /// Heun steps (2·steps − 1 network evaluations per sample; default: the run's sampler,
    /// else 18).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Number of generated samples (balanced over the classes).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Feature network directory; trained there first if it does not exist
    /// (default: a `classifier` folder beside the teacher).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Data: idx:IMAGES,LABELS or folder:DIR (relative to the working directory; default: the
    /// run's own data, from the config.toml beside the teacher or bundle, else MNIST-10k).
    #[arg(long)]
    pub data: Option<String>,
    /// Output folder (default: an `eval` folder beside the teacher).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Classifier-free guidance scale (1 = none; default: the run's sampler, else 1).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// First noise seed; batch b uses seed + b.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples per generation batch.
    #[arg(long, default_value_t = 250)]
    pub batch: usize,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
    /// Precision of the network's evaluation (f32, or bf16 weights and activations).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Prompt file (one prompt per line, plain or JSON; see `msd text prompts`) for a
    /// prompt-conditional teacher or bundle: --n samples per prompt, scored for the named digit
    /// and attributes; writes eval_prompts.{json,md} and prompts.png.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder for --prompts (default: scripts/setup-text-encoder.sh's).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
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

/// What an evaluation samples with and scores against, after defaults.
pub struct Resolved {
    /// The `--data` spec (paths relative to the working directory).
    pub data: String,
    /// The teacher's sampler (ignored for bundles).
    pub sampler: SamplerConfig,
}

/// The config of the run `anchor` (a teacher directory or a bundle file) belongs to:
/// `config.toml` in the folder holding it, if there is one.
fn run_config_beside(anchor: &Path) -> Result<Option<(PathBuf, RunConfig)>> {
    let root = beside(anchor, "");
    let p = root.join("config.toml");
    if !p.is_file() {
        return Ok(None);
    }
    let cfg = RunConfig::load(&p).with_context(|| format!("the run config {}", p.display()))?;
    Ok(Some((root, cfg)))
}

/// Fills in the defaults of `a` for the model at `anchor`: the flags, else its run's config,
/// else MNIST-10k and EDM's Heun-18 unguided.
pub fn resolve(a: &Args, anchor: &Path) -> Result<Resolved> {
    let run = run_config_beside(anchor)?;
    let data = match (&a.data, &run) {
        (Some(s), _) => s.clone(),
        (None, Some((root, cfg))) => {
            let mut d = cfg.data.clone();
            d.rebase(root, Path::new("."))?;
            d.to_spec()
        }
        (None, None) => {
            println!(
                "no run config beside {}; scoring against {DEFAULT_DATA} (give --data to choose)",
                anchor.display()
            );
            DEFAULT_DATA.into()
        }
    };
    let mut sampler = run.map(|(_, c)| c.sampler).unwrap_or_default();
    if let Some(s) = a.steps {
        sampler.steps = s;
    }
    if let Some(g) = a.guidance {
        sampler.guidance = g;
    }
    Ok(Resolved { data, sampler })
}

pub(crate) fn beside(teacher: &Path, name: &str) -> PathBuf {
    let t = teacher.components().as_path();
    t.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(name)
}

pub fn run(a: Args) -> Result<()> {
    if let Some(p) = a.prompts.clone() {
        return crate::cmd::eval_prompts::run(&a, &p);
    }
    let device = a.device;
    if a.n < 4 || a.steps == Some(0) {
        bail!("--n must be ≥ 4 and --steps ≥ 1");
    }
    if a.batch == 0 {
        bail!("--batch must be ≥ 1");
    }
    if let Some(g) = a.guidance.filter(|g| !g.is_finite()) {
        bail!("--guidance must be a finite number, got {g}");
    }
    // The folder outputs go beside: the teacher's, or the bundle file's.
    let anchor = match (&a.teacher, &a.bundle) {
        (Some(t), _) => t.clone(),
        (None, Some(b)) => b.clone(),
        _ => bail!("give --teacher or --bundle"),
    };
    let r = resolve(&a, &anchor)?;
    let dc = DataConfig::parse_spec(&r.data)?;
    if let Some(bpath) = &a.bundle {
        let data = dc
            .open_images(Path::new("."))
            .with_context(|| format!("--data {}", r.data))?;
        let clf_dir = a
            .classifier
            .clone()
            .unwrap_or_else(|| beside(&anchor, "classifier"));
        if !clf_dir.join("classifier.json").exists() {
            println!(
                "no feature network at {}; training one first",
                clf_dir.display()
            );
            train_into(&r.data, &clf_dir, &ClassifierTrainConfig::default(), device)?;
        }
        let (clf, rec) = Classifier::load_dir(&clf_dir, device)
            .with_context(|| format!("--classifier {}", clf_dir.display()))?;
        let out = a.out.clone().unwrap_or_else(|| beside(&anchor, "eval"));
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        return crate::cmd::eval_bundle::run(
            &a, &r.data, bpath, &data, &clf, &clf_dir, &rec, &out, device,
        );
    }
    let mut teacher = EdmModel::load_dir(&anchor, device)
        .with_context(|| format!("--teacher {}", anchor.display()))?;
    teacher.set_precision(a.precision);
    let data = dc
        .open_images(Path::new("."))
        .with_context(|| format!("--data {}", r.data))?;
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
        train_into(&r.data, &clf_dir, &ClassifierTrainConfig::default(), device)?;
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

    let cfg = r.sampler.clone();
    let labels = balanced_labels(a.n, teacher.num_classes());
    let through_net = a.batch as i64 * if cfg.guidance != 1.0 { 2 } else { 1 };
    msd::runtime::apply_threads(msd::runtime::CallSite::TeacherSampling, through_net);
    let bar = progress::bar(a.n as u64, "sampling");
    let t0 = Instant::now();
    let x = generate(
        &teacher,
        &teacher.spec.net.sample_shape(),
        &labels,
        &cfg,
        a.seed,
        a.batch,
        device,
        &mut |d| bar.set_position(d as u64),
    )?;
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

    let mut report = EvalReport::new(
        &m,
        &floor,
        FeatureNetInfo::new(&clf_dir, &clf, &rec),
        cfg.nfe(),
        SeedsInfo::new(a.seed, a.n, a.batch),
        &mc,
        &r.data,
        gen_seconds,
        &hardware(),
    );
    report.teacher = Some(anchor.clone());
    report.sampler = Some(cfg.clone());
    report.net_precision = Some(a.precision);
    report.save(&out.join("eval.json"))?;
    msd::train::checkpoint::write_bytes_atomic(
        &out.join("eval.md"),
        report.to_markdown().as_bytes(),
    )?;
    println!("{}", report.summary_line("teacher"));
    println!(
        "report: {} and eval.md; grid: {}",
        out.join("eval.json").display(),
        out.join("samples.png").display()
    );
    Ok(())
}
