//! One `msd eval` run end to end, from typed options: the defaults taken from the model's run
//! ([`crate::evaluate::resolve`]), a feature network trained first where missing, the image
//! evaluation of a teacher or bundle ([`crate::evaluate`]) with its files, or, given a prompt
//! file, the prompt evaluation of a prompt-conditional teacher or bundle (`eval_prompts.json`,
//! `eval_prompts.md`, `prompts.png`). Progress and notes go to an
//! [`Observer`](crate::experiment::Observer); nothing is printed.

use crate::bundle::Bundle;
use crate::config::DataConfig;
use crate::data::captions::caption_training_set;
use crate::data::TrainingData;
use crate::diffusion::sample;
use crate::draw::Source;
use crate::error::ResultExt;
use crate::eval::classifier::train_classifier_in;
use crate::eval::{Classifier, ClassifierConfig, ClassifierRecord, ClassifierTrainConfig};
use crate::evaluate::{
    beside, evaluate_bundle, evaluate_teacher, hardware, resolve, DataOrigin, EvalSettings,
    Evaluated, Scorer, DEFAULT_DATA,
};
use crate::experiment::Observer;
use crate::model::EdmModel;
use crate::nets::Precision;
use crate::text::prompt::{embed_prompt, load_encoder};
use crate::text::prompt_eval::{feature_fd, score_prompt, summaries, PromptEvalReport};
use crate::text::prompt_set::read_prompt_file;
use crate::train::checkpoint::{write_bytes_atomic, write_json_atomic};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The options of one evaluation (the flags of `msd eval`).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub model: Source,
    /// Sampler steps (default: the run's sampler, else 18).
    pub steps: Option<usize>,
    /// Generated samples (per prompt with a prompt file).
    pub n: usize,
    /// Feature network folder (default: `classifier` beside the model).
    pub classifier: Option<PathBuf>,
    /// Data spec (default: the run's, else [`DEFAULT_DATA`]).
    pub data: Option<String>,
    /// Output folder (default: `eval` / `eval-prompts` beside the model).
    pub out: Option<PathBuf>,
    pub guidance: Option<f64>,
    pub seed: u64,
    pub batch: usize,
    pub device: Device,
    pub precision: Precision,
    /// The text encoder's folder for prompt evaluations.
    pub encoder: Option<PathBuf>,
}

impl EvalOptions {
    /// The teacher directory or bundle file the defaults and outputs are found beside.
    pub fn anchor(&self) -> &Path {
        match &self.model {
            Source::Teacher(p) | Source::Bundle(p) => p,
        }
    }
}

/// A finished image evaluation, written into `out`.
pub struct EvalDone {
    pub evaluated: Evaluated,
    pub out: PathBuf,
}

/// The line a trained classifier is announced with.
pub fn classifier_line(rec: &ClassifierRecord, out: &Path) -> String {
    format!(
        "classifier: held-out accuracy {:.2}% on {} images, {:.0} s, saved to {}",
        100.0 * rec.heldout_accuracy,
        rec.heldout_n,
        rec.train_seconds,
        out.display()
    )
}

/// Trains (or resumes, or reuses) a classifier on the data `data_spec` in `out` (locked while
/// it trains); `on` sees (step, loss).
pub fn train_classifier_into(
    data_spec: &str,
    out: &Path,
    train: &ClassifierTrainConfig,
    device: Device,
    on: &mut dyn FnMut(u64, f64),
) -> Result<ClassifierRecord> {
    let dc = DataConfig::parse_spec(data_spec)?;
    let data = dc
        .open_images(Path::new("."))
        .ctx(|| format!("--data {data_spec}"))?;
    let cfg = ClassifierConfig::new(data.sample_shape()[0], data.num_classes());
    // One writer per classifier folder; killed writers' temp files go.
    let _lock = crate::train::lock::RunLock::acquire(out)?;
    let (_, rec) = train_classifier_in(out, &data, &dc.id(), &cfg, train, device, on)?;
    Ok(rec)
}

/// The image evaluation (FD, KID, precision/recall, class accuracy) of a teacher or bundle,
/// written as `eval.json`, `eval.md` and `samples.png`.
pub fn run_eval(a: &EvalOptions, obs: &mut dyn Observer) -> Result<EvalDone> {
    if a.n < 4 || a.steps == Some(0) {
        return Err(Error::Invalid("--n must be ≥ 4 and --steps ≥ 1".into()));
    }
    if a.batch == 0 {
        return Err(Error::Invalid("--batch must be ≥ 1".into()));
    }
    if let Some(g) = a.guidance.filter(|g| !g.is_finite()) {
        return Err(Error::Invalid(format!(
            "--guidance must be a finite number, got {g}"
        )));
    }
    let anchor = a.anchor().to_path_buf();
    let r = resolve(&anchor, a.data.as_deref(), a.steps, a.guidance)
        .ctx(|| format!("the run config beside {}", anchor.display()))?;
    if r.data_origin == DataOrigin::Default {
        obs.note(&format!(
            "no run config beside {}; scoring against {DEFAULT_DATA} (give --data to choose)",
            anchor.display()
        ));
    }
    let dc = DataConfig::parse_spec(&r.data)?;
    let (mut teacher, mut bundle) = match &a.model {
        Source::Teacher(t) => (
            Some(EdmModel::load_dir(t, a.device).ctx(|| format!("--teacher {}", t.display()))?),
            None,
        ),
        Source::Bundle(b) => (
            None,
            Some(Bundle::load(b, a.device).ctx(|| format!("--bundle {}", b.display()))?),
        ),
    };
    let data = dc
        .open_images(Path::new("."))
        .ctx(|| format!("--data {}", r.data))?;
    if let Some(t) = &teacher {
        crate::evaluate::check_data_fits(&data, t).ctx(|| format!("--data {}", r.data))?;
    }
    let clf_dir = a
        .classifier
        .clone()
        .unwrap_or_else(|| beside(&anchor, "classifier"));
    if !clf_dir.join("classifier.json").exists() {
        if a.classifier.is_some() && teacher.is_some() {
            return Err(Error::Invalid(format!(
                "--classifier {}: no classifier.json there (train one with `msd train-classifier`)",
                clf_dir.display()
            )));
        }
        obs.note(&format!(
            "no feature network at {}; training one first",
            clf_dir.display()
        ));
        let train = ClassifierTrainConfig::default();
        obs.begin("classifier", train.steps);
        let rec =
            train_classifier_into(&r.data, &clf_dir, &train, a.device, &mut |s, _| obs.step(s));
        obs.end();
        obs.note(&classifier_line(&rec?, &clf_dir));
    }
    let (clf, rec) = Classifier::load_dir(&clf_dir, a.device)
        .ctx(|| format!("--classifier {}", clf_dir.display()))?;
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
        device: a.device,
    };
    obs.begin(
        if bundle.is_some() {
            "generating"
        } else {
            "sampling"
        },
        a.n as u64,
    );
    let mut on = |d: usize| obs.step(d as u64);
    let e = match (&mut teacher, &mut bundle) {
        (Some(t), _) => evaluate_teacher(t, &anchor, &r.sampler, &scorer, &settings, &mut on),
        (None, Some(b)) => evaluate_bundle(b, &anchor, &scorer, &settings, &mut on),
        (None, None) => unreachable!("one model is loaded above"),
    };
    obs.end();
    let e = e?;
    e.write(&out)
        .ctx(|| format!("writing the report into {}", out.display()))?;
    Ok(EvalDone { evaluated: e, out })
}

enum Model {
    Teacher(EdmModel),
    Bundle(Bundle),
}

/// The prompt evaluation: `n` samples per prompt of `file`, scored against what each prompt
/// asks for (digit by the feature classifier, attribute levels measured on the image), and FD
/// against the training images; writes `eval_prompts.{json,md}` and `prompts.png` (one row of
/// up to 8 samples per prompt) into the returned folder.
pub fn run_prompt_eval(a: &EvalOptions, file: &Path) -> Result<(PromptEvalReport, PathBuf)> {
    let device = a.device;
    if a.n < 1 {
        return Err(Error::Invalid(
            "--n (samples per prompt with --prompts) must be ≥ 1".into(),
        ));
    }
    let prompts = read_prompt_file(file).ctx(|| format!("--prompts {}", file.display()))?;
    let anchor = a.anchor().to_path_buf();
    let resolved = resolve(&anchor, a.data.as_deref(), a.steps, a.guidance)
        .ctx(|| format!("the run config beside {}", anchor.display()))?;
    let cpath = a
        .classifier
        .clone()
        .unwrap_or_else(|| beside(&anchor, "classifier"));
    let (clf, _) =
        Classifier::load_dir(&cpath, device).ctx(|| format!("--classifier {}", cpath.display()))?;
    let data = DataConfig::parse_spec(&resolved.data)?
        .open_images(Path::new("."))
        .ctx(|| format!("--data {}", resolved.data))?;
    let (thresholds, _) = caption_training_set(&data, 0)?;
    let encoder = load_encoder(a.encoder.as_deref(), Device::Cpu)?;
    let (model, sampling) = match &a.model {
        Source::Teacher(t) => {
            let mut m =
                EdmModel::load_dir(t, device).ctx(|| format!("--teacher {}", t.display()))?;
            if m.spec.net.cond().embedding_dim() != Some(encoder.dim()) {
                return Err(Error::Invalid(format!(
                    "--teacher {}: it does not take prompt embeddings",
                    t.display()
                )));
            }
            m.set_precision(a.precision);
            let s = &resolved.sampler;
            let what = format!(
                "teacher, {:?} {} steps, guidance {} ({} NFE per sample)",
                s.method,
                s.steps,
                s.guidance,
                s.nfe()
            );
            (Model::Teacher(m), what)
        }
        Source::Bundle(b) => {
            let mut bundle = Bundle::load(b, device).ctx(|| format!("--bundle {}", b.display()))?;
            if !bundle.is_prompt_conditional() {
                return Err(Error::Invalid(format!(
                    "--bundle {}: its students take classes, not prompts",
                    b.display()
                )));
            }
            for s in &mut bundle.students {
                s.set_precision(a.precision);
            }
            let what = format!(
                "{} one-step students ({} partition), 1 NFE per sample",
                bundle.students.len(),
                format!("{:?}", bundle.manifest.partition.strategy).to_lowercase()
            );
            (Model::Bundle(bundle), what)
        }
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| beside(&anchor, "eval-prompts"));
    std::fs::create_dir_all(&out)
        .map_err(|e| Error::io(&out, e))
        .ctx(|| format!("--out {}", out.display()))?;
    let mut shape = vec![a.n as i64];
    shape.extend(data.train_images().size()[1..].iter().copied());
    let (mut scores, mut all, mut grid, mut rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_student = match &model {
        Model::Bundle(b) => vec![0usize; b.students.len()],
        Model::Teacher(_) => Vec::new(),
    };
    let t0 = Instant::now();
    for (i, spec) in prompts.iter().enumerate() {
        let e = embed_prompt(&encoder, &spec.text, "text")
            .ctx(|| format!("--prompts {}: prompt {}", file.display(), i + 1))?;
        tch::manual_seed(a.seed.wrapping_add(i as u64) as i64);
        let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
        let (x, student) = match &model {
            Model::Bundle(b) => {
                let (x, k) = b.generate_prompt(&e, &z)?;
                per_student[k] += 1;
                (x, Some(k))
            }
            Model::Teacher(m) => {
                let c = Tensor::from_slice(&e)
                    .to_device(device)
                    .unsqueeze(0)
                    .expand([a.n as i64, e.len() as i64], false);
                (sample(m, &z, &c, &resolved.sampler)?, None)
            }
        };
        let x = x.to_device(Device::Cpu).to_kind(Kind::Float);
        scores.push(score_prompt(spec, student, &x, &clf, &thresholds)?);
        let show = x.size()[0].min(8);
        grid.push(x.narrow(0, 0, show));
        rows.extend(std::iter::repeat_n(i as i64, show as usize));
        all.push(x);
    }
    let generate_seconds = t0.elapsed().as_secs_f64();
    let x = Tensor::cat(&all, 0);
    let real = data.train_images().shallow_clone();
    let fd = feature_fd(&clf, &x, &real)?;
    let report = PromptEvalReport {
        model: anchor.display().to_string(),
        sampling,
        prompt_file: file.display().to_string(),
        samples_per_prompt: a.n,
        seed: a.seed,
        hardware: hardware(),
        generate_seconds,
        fd,
        fd_real: real.size()[0] as usize,
        prompts_per_student: per_student,
        summaries: summaries(&scores),
        scores,
    };
    write_json_atomic(&out.join("eval_prompts.json"), &report)?;
    write_bytes_atomic(
        &out.join("eval_prompts.md"),
        report.to_markdown().as_bytes(),
    )?;
    let img = crate::viz::class_grid(&Tensor::cat(&grid, 0), &rows)?;
    let png = out.join("prompts.png");
    crate::viz::save_png(&img, &png).ctx(|| format!("writing {}", png.display()))?;
    Ok((report, out))
}
