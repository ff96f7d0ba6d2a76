//! `msd sample`: samples from a teacher (multi-step) or from a bundle of students (one network
//! evaluation per sample, routed by class), written as a picture (scatter plot for 2-D data) and
//! optionally as raw values (`.csv` or `.npy`); with `--prompt`, one row per prompt. The work is
//! [`msd::draw`]; this file maps flags and prints.

use anyhow::Result;
use msd::diffusion::{SamplerConfig, SamplerMethod};
use msd::draw::{draw_to_files, DrawOptions, Drawn, Source};
use msd::nets::Precision;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["teacher", "bundle"])))]
pub struct Args {
    /// Teacher directory (holding model.json and model.safetensors).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Bundle of one-step students (bundle.json); --steps/--method/--churn/--guidance do not apply.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Class to sample (repeatable or comma-separated; default: every class).
    #[arg(long, value_delimiter = ',')]
    pub class: Vec<i64>,
    /// Prompt to sample instead of classes (repeatable), for prompt-conditional teachers and
    /// bundles; a bundle routes each prompt to its group's student by the prompt's embedding.
    #[arg(long)]
    pub prompt: Vec<String>,
    /// The all-MiniLM-L6-v2 folder for --prompt (default: scripts/setup-text-encoder.sh's).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Samples per class (per prompt with --prompt).
    #[arg(long, default_value_t = 1000)]
    pub n: i64,
    /// Sampler steps (Heun: 2·steps − 1 network evaluations).
    #[arg(long, default_value_t = 18)]
    pub steps: usize,
    /// The ODE integrator.
    #[arg(long, value_enum, default_value = "heun")]
    pub method: SamplerMethod,
    /// Stochastic churn S_churn (0 = deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Classifier-free guidance scale (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Picture to write (PNG).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the samples as .csv or .npy (with labels in the last CSV column).
    #[arg(long)]
    pub points: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
    /// Precision of the network's evaluation (f32, or bf16 weights and activations).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

pub fn run(a: Args) -> Result<()> {
    let o = DrawOptions {
        source: Source::from_flags(a.teacher, a.bundle)?,
        classes: a.class,
        prompts: a.prompt,
        encoder: a.encoder,
        n: a.n,
        sampler: SamplerConfig {
            method: a.method,
            steps: a.steps,
            s_churn: a.churn,
            guidance: a.guidance,
            ..Default::default()
        },
        seed: a.seed,
        out: a.out,
        points: a.points,
        device: a.device,
        precision: a.precision,
    };
    let done = draw_to_files(&o)?;
    if let Drawn::Prompts { routed } = &done.drawn {
        for (i, (p, k)) in o.prompts.iter().zip(routed).enumerate() {
            println!("prompt {i} {:?} → student {k}", p.trim());
        }
    }
    if let Some(p) = &o.points {
        println!("points: {}", p.display());
    }
    let out = o.out.display();
    match done.drawn {
        Drawn::Teacher { nfe } => {
            println!("picture: {out} ({} samples, {nfe} NFE each)", done.samples)
        }
        Drawn::Bundle { students } => println!(
            "picture: {out} ({} samples, 1 NFE each, students {students:?})",
            done.samples
        ),
        Drawn::Prompts { .. } => println!(
            "picture: {out} ({} prompts × {} samples, one row per prompt)",
            o.prompts.len(),
            o.n
        ),
    }
    Ok(())
}
