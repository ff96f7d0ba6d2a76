//! `msd eval --prompts FILE`: samples a prompt-conditional teacher (its run's sampler, or
//! `--steps`/`--guidance`) or bundle (one step, each prompt routed by its embedding) `--n` times
//! per prompt, scores the samples against what each prompt asks for (digit by the feature
//! classifier, thickness/slant/size levels measured on the image) and computes FD against the
//! training images; writes `eval_prompts.json`, `eval_prompts.md` and `prompts.png` (one row of
//! up to 8 samples per prompt).

use super::eval::Args;
use crate::cmd::text::load_encoder;
use anyhow::{bail, Context, Result};
use msd::bundle::Bundle;
use msd::config::DataConfig;
use msd::data::captions::caption_training_set;
use msd::diffusion::sample;
use msd::eval::Classifier;
use msd::evaluate::{beside, hardware, resolve};
use msd::model::EdmModel;
use msd::text::prompt::embed_prompt;
use msd::text::prompt_eval::{feature_fd, score_prompt, summaries, PromptEvalReport};
use msd::text::prompt_set::read_prompt_file;
use msd::train::checkpoint::{write_bytes_atomic, write_json_atomic};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

enum Model {
    Teacher(EdmModel),
    Bundle(Bundle),
}

pub fn run(a: &Args, file: &Path) -> Result<()> {
    let device = a.device;
    if a.n < 1 {
        bail!("--n (samples per prompt with --prompts) must be ≥ 1");
    }
    let prompts =
        read_prompt_file(file).with_context(|| format!("--prompts {}", file.display()))?;
    let anchor = match (&a.teacher, &a.bundle) {
        (Some(t), _) => t.clone(),
        (None, Some(b)) => b.clone(),
        _ => bail!("--prompts needs --teacher or --bundle"),
    };
    let resolved = resolve(&anchor, a.data.as_deref(), a.steps, a.guidance)
        .with_context(|| format!("the run config beside {}", anchor.display()))?;
    let cpath = a
        .classifier
        .clone()
        .unwrap_or_else(|| beside(&anchor, "classifier"));
    let (clf, _) = Classifier::load_dir(&cpath, device)
        .with_context(|| format!("--classifier {}", cpath.display()))?;
    let data = DataConfig::parse_spec(&resolved.data)?
        .open_images(Path::new("."))
        .with_context(|| format!("--data {}", resolved.data))?;
    let (thresholds, _) = caption_training_set(&data, 0)?;
    let encoder = load_encoder(a.encoder.as_deref(), Device::Cpu)?;
    let (model, sampling) = match (&a.teacher, &a.bundle) {
        (Some(t), _) => {
            let mut m = EdmModel::load_dir(t, device)
                .with_context(|| format!("--teacher {}", t.display()))?;
            if m.spec.net.cond().embedding_dim() != Some(encoder.dim()) {
                bail!(
                    "--teacher {}: it does not take prompt embeddings",
                    t.display()
                );
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
        (None, Some(b)) => {
            let mut bundle =
                Bundle::load(b, device).with_context(|| format!("--bundle {}", b.display()))?;
            if !bundle.is_prompt_conditional() {
                bail!(
                    "--bundle {}: its students take classes, not prompts",
                    b.display()
                );
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
        _ => unreachable!("checked above"),
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| beside(&anchor, "eval-prompts"));
    std::fs::create_dir_all(&out).with_context(|| format!("--out {}", out.display()))?;
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
            .with_context(|| format!("--prompts {}: prompt {}", file.display(), i + 1))?;
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
    crate::grid::write_class_grid(&Tensor::cat(&grid, 0), &rows, &out.join("prompts.png"))?;
    for m in &report.summaries {
        println!(
            "{}: {} prompts, digit accuracy {}, thickness {}, slant {}, size {}",
            m.name,
            m.prompts,
            m.digit_accuracy
                .map_or("–".into(), |v| format!("{:.1}%", 100.0 * v)),
            m.thickness
                .map_or("–".into(), |v| format!("{:.1}%", 100.0 * v)),
            m.slant.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v)),
            m.size.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v)),
        );
    }
    println!(
        "FD {fd:.3}; report: {}",
        out.join("eval_prompts.md").display()
    );
    Ok(())
}
