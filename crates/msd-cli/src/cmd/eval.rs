//! `msd eval`: draws a balanced, seeded set of samples from a teacher (or a bundle of one-step
//! students), scores it with the project's feature network (FD, KID, precision/recall,
//! per-class accuracy) against the training split, puts the held-out split's scores beside it
//! as the floor, and writes `eval.json`, `eval.md` and a sample grid. The evaluation itself is
//! [`msd::evaluate`]; this file maps flags, trains a missing feature network and prints.
//!
//! Data and sampler default to those of the run the model belongs to (`<run>/config.toml`
//! beside `<run>/teacher` or `<run>/bundle*.json`); only without a run config does the data
//! fall back to the shipped MNIST-10k.

use crate::cmd::train_classifier::train_into;
use crate::progress;
use anyhow::{bail, Context, Result};
use msd::bundle::Bundle;
use msd::config::DataConfig;
use msd::eval::{Classifier, ClassifierTrainConfig};
use msd::evaluate::{
    beside, evaluate_bundle, evaluate_teacher, resolve, DataOrigin, EvalSettings, Scorer,
    DEFAULT_DATA,
};
use msd::model::EdmModel;
use msd::nets::Precision;
use std::path::{Path, PathBuf};

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
pub use msd::evaluate::hardware;

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
    let r = resolve(&anchor, a.data.as_deref(), a.steps, a.guidance)
        .with_context(|| format!("the run config beside {}", anchor.display()))?;
    if r.data_origin == DataOrigin::Default {
        println!(
            "no run config beside {}; scoring against {DEFAULT_DATA} (give --data to choose)",
            anchor.display()
        );
    }
    let dc = DataConfig::parse_spec(&r.data)?;
    let (mut teacher, mut bundle) = match &a.bundle {
        None => (
            Some(
                EdmModel::load_dir(&anchor, device)
                    .with_context(|| format!("--teacher {}", anchor.display()))?,
            ),
            None,
        ),
        Some(b) => (
            None,
            Some(Bundle::load(b, device).with_context(|| format!("--bundle {}", b.display()))?),
        ),
    };
    let data = dc
        .open_images(Path::new("."))
        .with_context(|| format!("--data {}", r.data))?;
    if let Some(t) = &teacher {
        msd::evaluate::check_data_fits(&data, t).with_context(|| format!("--data {}", r.data))?;
    }
    let clf_dir = a
        .classifier
        .clone()
        .unwrap_or_else(|| beside(&anchor, "classifier"));
    if !clf_dir.join("classifier.json").exists() {
        if a.classifier.is_some() && teacher.is_some() {
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
    if teacher.is_some() && rec.data_id != dc.id() {
        tracing::warn!(
            "the feature network was trained on {} but the evaluation data are {}",
            rec.data_id,
            dc.id()
        );
    }
    let out = a.out.clone().unwrap_or_else(|| beside(&anchor, "eval"));
    let scorer = Scorer::new(&clf, &clf_dir, &rec, &data, &r.data)?;
    let settings = EvalSettings {
        n: a.n,
        seed: a.seed,
        batch: a.batch,
        precision: a.precision,
        device,
    };
    let (what, label) = match &a.bundle {
        Some(_) => ("generating", "students"),
        None => ("sampling", "teacher"),
    };
    let bar = progress::bar(a.n as u64, what);
    let mut on = |d: usize| bar.set_position(d as u64);
    let e = match (&mut teacher, &mut bundle) {
        (Some(t), _) => evaluate_teacher(t, &anchor, &r.sampler, &scorer, &settings, &mut on)?,
        (None, Some(b)) => evaluate_bundle(b, &anchor, &scorer, &settings, &mut on)?,
        (None, None) => bail!("give --teacher or --bundle"),
    };
    bar.finish_and_clear();
    e.write(&out)
        .with_context(|| format!("writing the report into {}", out.display()))?;
    println!("{}", e.report.summary_line(label));
    println!(
        "report: {} and eval.md; grid: {}",
        out.join("eval.json").display(),
        out.join("samples.png").display()
    );
    Ok(())
}
