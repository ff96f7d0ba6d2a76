//! `msd eval`: draws a balanced, seeded set of samples from a teacher (or a bundle of one-step
//! students), scores it with the project's feature network (FD, KID, precision/recall,
//! per-class accuracy) against the training split, puts the held-out split's scores beside it
//! as the floor, and writes `eval.json`, `eval.md` and a sample grid. With `--prompts`, the
//! prompt evaluation. The work is [`msd::eval_run`]; this file maps flags and prints.
//!
//! Data and sampler default to those of the run the model belongs to (`<run>/config.toml`
//! beside `<run>/teacher` or `<run>/bundle*.json`); only without a run config does the data
//! fall back to the shipped MNIST-10k.

use crate::progress::Console;
use anyhow::Result;
use msd::draw::Source;
use msd::eval_run::{run_eval, run_prompt_eval, EvalOptions};
use msd::nets::Precision;
use std::path::PathBuf;

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
    let o = EvalOptions {
        model: Source::from_flags(a.teacher, a.bundle)?,
        steps: a.steps,
        n: a.n,
        classifier: a.classifier,
        data: a.data,
        out: a.out,
        guidance: a.guidance,
        seed: a.seed,
        batch: a.batch,
        device: a.device,
        precision: a.precision,
        encoder: a.encoder,
    };
    if let Some(file) = &a.prompts {
        return prompts(&o, file);
    }
    let done = run_eval(&o, &mut Console::default())?;
    let label = match o.model {
        Source::Bundle(_) => "students",
        Source::Teacher(_) => "teacher",
    };
    println!("{}", done.evaluated.report.summary_line(label));
    println!(
        "report: {} and eval.md; grid: {}",
        done.out.join("eval.json").display(),
        done.out.join("samples.png").display()
    );
    Ok(())
}

fn prompts(o: &EvalOptions, file: &std::path::Path) -> Result<()> {
    let (report, out) = run_prompt_eval(o, file)?;
    for m in &report.summaries {
        println!("{m}");
    }
    println!(
        "FD {:.3}; report: {}",
        report.fd,
        out.join("eval_prompts.md").display()
    );
    Ok(())
}
