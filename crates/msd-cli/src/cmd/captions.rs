//! `msd captions`: captions the training images of a dataset (label + measured thickness, slant
//! and size, worded by the training templates), embeds the distinct captions once with
//! all-MiniLM-L6-v2 (cached), and checks whether held-out wordings land nearest to training
//! wordings of the same digit and attributes (a first look at prompt routing).

use crate::cmd::train_classifier::DEFAULT_DATA;
use anyhow::{Context, Result};
use msd::config::DataConfig;
use msd::data::captions::{
    caption_training_set, distinct_texts, heldout_wording_check, Thresholds, WordingCheck,
    HELDOUT_TEMPLATES, TEMPLATES,
};
use msd::nets::text_encoder::{default_model_dir, TextEncoder};
use msd::train::checkpoint::{write_bytes_atomic, write_json_atomic};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Data: idx:IMAGES,LABELS or folder:DIR (paths relative to the working directory).
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: String,
    /// Output directory: captions.jsonl, thresholds.json, caption_texts.json,
    /// caption_embeddings.safetensors, captions.json (summary).
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

/// `captions.json`: what was captioned and how the held-out wordings fared.
#[derive(Serialize)]
struct Summary {
    data: String,
    seed: u64,
    captions: usize,
    distinct_texts: usize,
    templates: Vec<&'static str>,
    heldout_templates: Vec<usize>,
    thresholds: Thresholds,
    wording_check: Option<WordingCheck>,
}

pub fn run(a: Args) -> Result<()> {
    let dc = DataConfig::parse_spec(&a.data)?;
    let data = dc
        .open_images(Path::new("."))
        .with_context(|| format!("--data {}", a.data))?;
    let (thresholds, captions) = caption_training_set(&data, a.seed)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    let mut lines = String::new();
    for c in &captions {
        lines.push_str(&serde_json::to_string(c)?);
        lines.push('\n');
    }
    write_bytes_atomic(&a.out.join("captions.jsonl"), lines.as_bytes())?;
    write_json_atomic(&a.out.join("thresholds.json"), &thresholds)?;
    let (texts, _rows) = distinct_texts(&captions);
    write_json_atomic(&a.out.join("caption_texts.json"), &texts)?;
    println!(
        "{} training captions ({} distinct texts, templates {:?} held out); a sample:",
        captions.len(),
        texts.len(),
        HELDOUT_TEMPLATES
    );
    let step = (captions.len() / a.sample.max(1)).max(1);
    for c in captions.iter().step_by(step).take(a.sample) {
        println!(
            "  #{:<5} label {}  thick {:.2} slant {:+.2} size {:>3.0}  → {}",
            c.index, c.label, c.attributes.thickness, c.attributes.slant, c.attributes.size, c.text
        );
    }
    let mut wording_check = None;
    if !a.no_embed {
        let dir = match &a.encoder {
            Some(d) => d.clone(),
            None => default_model_dir().context("cannot locate the cache; pass --encoder DIR")?,
        };
        let enc = TextEncoder::load(&dir, tch::Device::Cpu)
            .with_context(|| format!("--encoder {}", dir.display()))?;
        let cache = a.out.join("caption_embeddings.safetensors");
        let t0 = std::time::Instant::now();
        let (emb, hit) = enc.encode_cached(&texts, &cache, a.batch_size)?;
        println!(
            "embeddings {:?} {} {} in {:.1} s",
            emb.size(),
            if hit { "read from" } else { "computed into" },
            cache.display(),
            t0.elapsed().as_secs_f64()
        );
        let t0 = std::time::Instant::now();
        let wc = heldout_wording_check(&enc, a.batch_size)?;
        println!(
            "held-out wordings ({} queries vs {} training wordings, {:.1} s): nearest training \
             wording names the same digit {:.1}%, thickness {:.1}%, slant {:.1}%, size {:.1}%, \
             all four {:.1}%",
            wc.queries,
            wc.candidates,
            t0.elapsed().as_secs_f64(),
            100.0 * wc.digit,
            100.0 * wc.thickness,
            100.0 * wc.slant,
            100.0 * wc.size,
            100.0 * wc.all
        );
        wording_check = Some(wc);
    }
    let summary = Summary {
        data: a.data.clone(),
        seed: a.seed,
        captions: captions.len(),
        distinct_texts: texts.len(),
        templates: TEMPLATES.to_vec(),
        heldout_templates: HELDOUT_TEMPLATES.to_vec(),
        thresholds,
        wording_check,
    };
    write_json_atomic(&a.out.join("captions.json"), &summary)?;
    println!("wrote {}", a.out.join("captions.json").display());
    Ok(())
}
