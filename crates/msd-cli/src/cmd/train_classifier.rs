//! `msd train-classifier`: trains the feature network (a small CNN classifier) on the training
//! split of an image dataset and stores it with its held-out accuracy.

use crate::progress;
use anyhow::Result;
use msd::eval::ClassifierTrainConfig;
use msd::eval_run::{classifier_line, train_classifier_into};
use std::path::PathBuf;

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

pub fn run(a: Args) -> Result<()> {
    let train = ClassifierTrainConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        seed: a.seed,
        ..Default::default()
    };
    let bar = progress::bar(train.steps, "classifier");
    let rec = train_classifier_into(&a.data, &a.out, &train, a.device, &mut |s, loss| {
        bar.set_position(s);
        bar.set_message(format!("loss {loss:.4}"));
    });
    bar.finish_and_clear();
    println!("{}", classifier_line(&rec?, &a.out));
    Ok(())
}
