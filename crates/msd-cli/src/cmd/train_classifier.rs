//! `msd train-classifier`: trains the feature network (a small CNN classifier) on the training
//! split of an image dataset and stores it with its held-out accuracy.

use crate::progress;
use anyhow::{Context, Result};
use msd::config::DataConfig;
use msd::data::TrainingData;
use msd::eval::classifier::train_classifier_in;
use msd::eval::{ClassifierConfig, ClassifierTrainConfig};
use std::path::{Path, PathBuf};

/// The shipped dataset, relative to the repository root.
pub use msd::evaluate::DEFAULT_DATA;

#[derive(clap::Args)]
pub struct Args {
    /// Data: idx:IMAGES,LABELS or folder:DIR (paths relative to the working directory).
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: String,
    /// Output directory (classifier.json + classifier.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = ClassifierTrainConfig::default().steps)]
    pub steps: u64,
    #[arg(long, default_value_t = ClassifierTrainConfig::default().batch_size)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

/// Trains (or resumes, or reuses) a classifier on `data` in `out` and returns its held-out
/// accuracy.
pub fn train_into(
    data_spec: &str,
    out: &Path,
    train: &ClassifierTrainConfig,
    device: tch::Device,
) -> Result<f64> {
    let dc = DataConfig::parse_spec(data_spec)?;
    let data = dc
        .open_images(Path::new("."))
        .with_context(|| format!("--data {data_spec}"))?;
    let cfg = ClassifierConfig::new(data.sample_shape()[0], data.num_classes());
    let bar = progress::bar(train.steps, "classifier");
    let (_, rec) =
        train_classifier_in(out, &data, &dc.id(), &cfg, train, device, &mut |s, loss| {
            bar.set_position(s);
            bar.set_message(format!("loss {loss:.4}"));
        })?;
    bar.finish_and_clear();
    println!(
        "classifier: held-out accuracy {:.2}% on {} images, {:.0} s, saved to {}",
        100.0 * rec.heldout_accuracy,
        rec.heldout_n,
        rec.train_seconds,
        out.display()
    );
    Ok(rec.heldout_accuracy)
}

pub fn run(a: Args) -> Result<()> {
    let device = a.device;
    let train = ClassifierTrainConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        seed: a.seed,
        ..Default::default()
    };
    train_into(&a.data, &a.out, &train, device)?;
    Ok(())
}
