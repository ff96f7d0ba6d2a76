//! The captions of a dataset written as files (what `msd captions` does): `captions.jsonl` (one
//! caption per training image), `thresholds.json`, `caption_texts.json` (the distinct texts),
//! their all-MiniLM-L6-v2 embeddings (`caption_embeddings.safetensors`, cached), the held-out
//! wording check, the summary `captions.json`, and `levels.png` (real images per attribute
//! level, [`super::level_grid`]).

use crate::config::DataConfig;
use crate::data::captions::{
    caption_training_set, distinct_texts, heldout_wording_check, Caption, Thresholds, WordingCheck,
    HELDOUT_TEMPLATES, TEMPLATES,
};
use crate::error::ResultExt;
use crate::nets::text_encoder::{default_model_dir, TextEncoder};
use crate::train::checkpoint::{write_bytes_atomic, write_json_atomic};
use crate::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The options of one captioning (the flags of `msd captions`).
#[derive(Clone, Debug)]
pub struct CaptionOptions {
    /// Data spec (`idx:IMAGES,LABELS` or `folder:DIR`), relative to the working directory.
    pub data: String,
    pub out: PathBuf,
    /// Seed of the template draw.
    pub seed: u64,
    /// The text encoder's folder (default: the cache's).
    pub encoder: Option<PathBuf>,
    /// Also embed the texts and run the held-out wording check.
    pub embed: bool,
    /// Texts per encoder batch.
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

/// The embeddings of the distinct texts.
#[derive(Clone, Debug)]
pub struct Embedded {
    /// `[texts, dim]`.
    pub shape: Vec<i64>,
    /// Read from the cache rather than computed.
    pub cached: bool,
    pub path: PathBuf,
    pub seconds: f64,
}

/// What [`write_captions`] made.
#[derive(Clone, Debug)]
pub struct Captioned {
    pub captions: Vec<Caption>,
    pub distinct_texts: usize,
    pub embedded: Option<Embedded>,
    /// The held-out wording check and its seconds.
    pub wording_check: Option<(WordingCheck, f64)>,
    /// `captions.json`.
    pub summary: PathBuf,
}

impl Captioned {
    /// What was made, as lines: the counts, `sample` captions spread over the set, the
    /// embeddings and the held-out wording check.
    pub fn report(&self, sample: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let captions = &self.captions;
        let _ = writeln!(
            s,
            "{} training captions ({} distinct texts, templates {:?} held out); a sample:",
            captions.len(),
            self.distinct_texts,
            HELDOUT_TEMPLATES
        );
        let step = (captions.len() / sample.max(1)).max(1);
        for c in captions.iter().step_by(step).take(sample) {
            let _ = writeln!(
                s,
                "  #{:<5} label {}  thick {:.2} slant {:+.2} size {:>3.0}  → {}",
                c.index,
                c.label,
                c.attributes.thickness,
                c.attributes.slant,
                c.attributes.size,
                c.text
            );
        }
        if let Some(e) = &self.embedded {
            let _ = writeln!(
                s,
                "embeddings {:?} {} {} in {:.1} s",
                e.shape,
                if e.cached {
                    "read from"
                } else {
                    "computed into"
                },
                e.path.display(),
                e.seconds
            );
        }
        if let Some((wc, seconds)) = &self.wording_check {
            let _ = writeln!(
                s,
                "held-out wordings ({} queries vs {} training wordings, {seconds:.1} s): nearest \
                 training wording names the same digit {:.1}%, thickness {:.1}%, slant {:.1}%, \
                 size {:.1}%, all four {:.1}%",
                wc.queries,
                wc.candidates,
                100.0 * wc.digit,
                100.0 * wc.thickness,
                100.0 * wc.slant,
                100.0 * wc.size,
                100.0 * wc.all
            );
        }
        s
    }
}

/// Images of each digit in every row of `levels.png`.
pub const LEVEL_GRID_PER_DIGIT: usize = 2;

/// Captions the training split of `o.data` into `o.out` (see the module doc).
pub fn write_captions(o: &CaptionOptions) -> Result<Captioned> {
    let dc = DataConfig::parse_spec(&o.data)?;
    let data = dc
        .open_images(Path::new("."))
        .ctx(|| format!("--data {}", o.data))?;
    let (thresholds, captions) = caption_training_set(&data, o.seed)?;
    std::fs::create_dir_all(&o.out)
        .map_err(|e| Error::io(&o.out, e))
        .ctx(|| format!("--out {}", o.out.display()))?;
    let mut lines = String::new();
    for c in &captions {
        lines.push_str(&serde_json::to_string(c).map_err(|e| Error::Invalid(e.to_string()))?);
        lines.push('\n');
    }
    write_bytes_atomic(&o.out.join("captions.jsonl"), lines.as_bytes())?;
    write_json_atomic(&o.out.join("thresholds.json"), &thresholds)?;
    let grid = super::level_grid::level_grid(data.train_images(), &captions, LEVEL_GRID_PER_DIGIT)?;
    crate::viz::save_png(&grid, &o.out.join("levels.png"))?;
    let (texts, _rows) = distinct_texts(&captions);
    write_json_atomic(&o.out.join("caption_texts.json"), &texts)?;
    let (mut embedded, mut wording_check) = (None, None);
    if o.embed {
        let dir = match &o.encoder {
            Some(d) => d.clone(),
            None => default_model_dir().ok_or_else(|| {
                Error::Invalid("cannot locate the cache; pass --encoder DIR".into())
            })?,
        };
        let enc = TextEncoder::load(&dir, tch::Device::Cpu)
            .ctx(|| format!("--encoder {}", dir.display()))?;
        let path = o.out.join("caption_embeddings.safetensors");
        let t0 = Instant::now();
        let (emb, cached) = enc.encode_cached(&texts, &path, o.batch_size)?;
        embedded = Some(Embedded {
            shape: emb.size(),
            cached,
            path,
            seconds: t0.elapsed().as_secs_f64(),
        });
        let t0 = Instant::now();
        let wc = heldout_wording_check(&enc, o.batch_size)?;
        wording_check = Some((wc, t0.elapsed().as_secs_f64()));
    }
    let summary = Summary {
        data: o.data.clone(),
        seed: o.seed,
        captions: captions.len(),
        distinct_texts: texts.len(),
        templates: TEMPLATES.to_vec(),
        heldout_templates: HELDOUT_TEMPLATES.to_vec(),
        thresholds,
        wording_check: wording_check.as_ref().map(|(w, _)| w.clone()),
    };
    let path = o.out.join("captions.json");
    write_json_atomic(&path, &summary)?;
    Ok(Captioned {
        captions,
        distinct_texts: texts.len(),
        embedded,
        wording_check,
        summary: path,
    })
}
