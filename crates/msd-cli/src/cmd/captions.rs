//! `msd captions`: captions the training images of a dataset (label + measured thickness, slant
//! and size, worded by the training templates), embeds the distinct captions once with
//! all-MiniLM-L6-v2 (cached), and checks whether held-out wordings land nearest to training
//! wordings of the same digit and attributes (a first look at prompt routing).

use crate::cmd::train_classifier::DEFAULT_DATA;
use anyhow::Result;
use msd::text::caption_files::{write_captions, CaptionOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Data: idx:IMAGES,LABELS or folder:DIR (paths relative to the working directory).
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: String,
    /// Output directory: captions.jsonl, thresholds.json, caption_texts.json,
    /// caption_embeddings.safetensors, captions.json (summary), levels.png (real images per
    /// attribute level: one row per level, 2 images of every digit).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the template draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Captions printed as a sample.
    #[arg(long, default_value_t = 12)]
    pub sample: usize,
    /// The all-MiniLM-L6-v2 folder (default: where scripts/setup-text-encoder.sh puts it).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Skip the embeddings and the held-out wording check (captions only).
    #[arg(long)]
    pub no_embed: bool,
    /// Texts per encoder batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

pub fn run(a: Args) -> Result<()> {
    let c = write_captions(&CaptionOptions {
        data: a.data,
        out: a.out,
        seed: a.seed,
        encoder: a.encoder,
        embed: !a.no_embed,
        batch_size: a.batch_size,
    })?;
    print!("{}", c.report(a.sample));
    println!("wrote {}", c.summary.display());
    Ok(())
}
