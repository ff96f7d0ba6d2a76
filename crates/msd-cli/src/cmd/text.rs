//! `msd text`: the prompt-conditional run of a directory (see [`msd::text::pipeline`]):
//! `teacher` trains the text teacher (optionally from a class teacher), `distill` builds the
//! prompt partition and trains the students on their groups, then writes the bundle.

use crate::cmd::distill::Bars;
use crate::progress;
use anyhow::{Context, Result};
use msd::config::RunConfig;
use msd::pipeline::{DistillOptions, StageKind};
use msd::teacher::Progress;
use msd::text::pipeline::TextRun;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand)]
pub enum Sub {
    /// Train (or resume) the prompt-conditional teacher into OUT/teacher.
    Teacher(TeacherArgs),
    /// Partition the prompts and distil the students of a text run; writes bundle.json.
    Distill(DistillArgs),
    /// Partition a text run's training captions (k-means or quadrants) without training
    /// anything, and print the group sizes (the run's own partition is made by `distill`).
    Partition(PartitionArgs),
    /// Write the standard evaluation prompt file (for `msd eval --prompts`): per digit, seeded
    /// attribute levels worded once by a training and once by a held-out template.
    Prompts(PromptsArgs),
    /// The seeded comparison of issue 14 (teacher vs 1 student vs K prompt-partitioned
    /// students, quadrants vs k-means), resumable; writes OUT/report.{md,json}.
    Experiment(ExperimentArgs),
}

#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// The experiment config, e.g. configs/experiment-text.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Output folder: report.md, report.json and evals/ (small, meant to be committed) and
    /// runs/ (the students' weights and checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Training seeds (default: the config's `seeds`).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Only these parts (comma-separated: teacher, k1, k4-quadrants, k4-kmeans); the report
    /// covers this call's seeds and those of the report already in --out.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Train and evaluate nothing; only rewrite the report from what exists.
    #[arg(long, conflicts_with = "only")]
    pub report_only: bool,
    /// The all-MiniLM-L6-v2 folder (default: the config's, else the cache's).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

#[derive(clap::Args)]
pub struct PartitionArgs {
    /// Run directory (with config.toml).
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long, value_enum)]
    pub strategy: msd::partition::Strategy,
    #[arg(long)]
    pub students: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the partition (JSON); nothing is written without it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder (default: where scripts/setup-text-encoder.sh puts it).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct PromptsArgs {
    /// Output file (JSON lines).
    #[arg(long)]
    pub out: PathBuf,
    /// Level combinations per digit (2 prompts each).
    #[arg(long, default_value_t = 2)]
    pub per_digit: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(clap::Args)]
pub struct TeacherArgs {
    /// Run config (TOML) with an embedding-conditioned [model.net], e.g. configs/text-mnist.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Run directory. Rerunning resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Start from this class-conditional teacher (all weights but the condition input; the
    /// prompt projection is fitted to its label table), e.g. results/mnist-teacher.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder (default: where scripts/setup-text-encoder.sh puts it).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

#[derive(clap::Args)]
pub struct DistillArgs {
    /// Run directory (with config.toml and teacher/ from `msd text teacher`).
    #[arg(long)]
    pub run: PathBuf,
    /// Which student(s) to train (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    pub student: Vec<usize>,
    /// Stages, in order: dm, or dm,adm.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dm")]
    pub stages: Vec<StageKind>,
    /// The all-MiniLM-L6-v2 folder (default: where scripts/setup-text-encoder.sh puts it).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

pub use msd::text::prompt::load_encoder;

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Sub::Teacher(t) => teacher(t),
        Sub::Distill(d) => distill(d),
        Sub::Partition(p) => partition(p),
        Sub::Experiment(e) => experiment(e),
        Sub::Prompts(p) => {
            if p.per_digit == 0 {
                anyhow::bail!("--per-digit must be ≥ 1");
            }
            let set = msd::text::prompt_set::standard_prompts(p.per_digit, p.seed)?;
            let text = msd::text::prompt_set::to_prompt_file(&set);
            msd::train::checkpoint::write_bytes_atomic(&p.out, text.as_bytes())
                .with_context(|| format!("--out {}", p.out.display()))?;
            println!("{} prompts → {}", set.len(), p.out.display());
            Ok(())
        }
    }
}

fn teacher(a: TeacherArgs) -> Result<()> {
    RunConfig::load(&a.config)?;
    let _lock = msd::train::lock::RunLock::acquire(&a.out)?;
    msd::run::RunDir::new(&a.out).create(&a.config, None)?;
    let run = TextRun::new(&a.out, load_encoder(a.encoder.as_deref(), a.device)?);
    let cfg = run.config()?;
    let bar = progress::bar(cfg.teacher.steps, "text teacher");
    let r = run.train_teacher(a.init.as_deref(), &mut |p| match p {
        Progress::Start { step, .. } => bar.set_position(step),
        Progress::Step { step, loss, .. } => {
            bar.set_position(step);
            bar.set_message(format!("loss {loss:.4}"));
        }
        Progress::Checkpoint { .. } | Progress::Resumed { .. } => {}
    });
    bar.finish_and_clear();
    let (_, summary, init) = r.with_context(|| format!("--init / --out {}", a.out.display()))?;
    if let Some(i) = init {
        println!(
            "initialised from {}: {} weights copied, projection fitted (max residual {:.2e})",
            a.init.unwrap_or_default().display(),
            i.copied,
            i.fit_residual
        );
    }
    println!(
        "text teacher: {} steps, final loss {:.4}, {:.0} s, {} parameters → {}",
        summary.steps,
        summary.final_loss,
        summary.train_seconds,
        summary.params,
        run.run.teacher_dir().display()
    );
    Ok(())
}

fn distill(a: DistillArgs) -> Result<()> {
    let _lock = msd::train::lock::RunLock::acquire(&a.run)?;
    let run = TextRun::new(&a.run, load_encoder(a.encoder.as_deref(), a.device)?);
    let opts = DistillOptions {
        students: a.student,
        stages: a.stages,
        device: a.device,
    };
    let mut bars = Bars::default();
    let r = run.distill(&opts, &mut bars);
    if let Some(b) = bars.bar.take() {
        b.finish_and_clear();
    }
    if r?.is_none() {
        println!("not every student has finished the last stage yet: no bundle written");
    }
    Ok(())
}

fn partition(a: PartitionArgs) -> Result<()> {
    let run = TextRun::new(
        &a.run,
        load_encoder(a.encoder.as_deref(), tch::Device::Cpu)?,
    );
    let (p, sizes) = run.trial_partition(a.strategy, a.students, a.seed)?;
    println!(
        "{:?} partition of {} training captions into {} groups: sizes {sizes:?}",
        a.strategy,
        sizes.iter().sum::<usize>(),
        a.students
    );
    if let Some(out) = &a.out {
        p.save(out)
            .with_context(|| format!("--out {}", out.display()))?;
        println!("partition: {}", out.display());
    }
    Ok(())
}

fn experiment(a: ExperimentArgs) -> Result<()> {
    use msd::text::experiment::driver::{run_text_experiment, TextExperimentOptions};
    let exp = msd::text::experiment::TextExperimentConfig::load(&a.config)
        .with_context(|| format!("--config {}", a.config.display()))?;
    let opts = TextExperimentOptions {
        config_path: a.config.clone(),
        exp,
        out: a.out.clone(),
        seeds: (!a.seeds.is_empty()).then(|| a.seeds.clone()),
        only: a.only,
        report_only: a.report_only,
        encoder: a.encoder,
        device: a.device,
        provenance: msd::experiment::Provenance::of_build(env!("MSD_BUILD_COMMIT")),
    };
    let report = run_text_experiment(&opts, &mut progress::Console::default())
        .with_context(|| format!("text experiment {}", a.config.display()))?;
    for c in &report.claims {
        println!(
            "{}: {} → {}",
            c.claim,
            c.ours,
            c.verdict.map_or("pending", |v| v.as_str())
        );
    }
    println!(
        "text experiment: {} of {} rows evaluated for every seed → {}",
        report.rows_done,
        report.rows.len(),
        a.out.join("report.md").display()
    );
    Ok(())
}
