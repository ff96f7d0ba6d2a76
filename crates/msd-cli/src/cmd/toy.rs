//! `msd toy`: flags and pictures over `msd::experiment::toy` (the paper's Fig. 4 on the 2-D toy,
//! swept over student widths, numbers of students and training seeds). With `--jobs N` the
//! (width, seed) groups run as N parallel single-thread worker processes (libtorch's generator
//! is process-global, so threads would not be reproducible); the report is written once all
//! are done. Writes `toy_report.json`, `toy_report.md` and `toy.png`.

use crate::progress;
use anyhow::{bail, Context, Result};
use msd::config::RunConfig;
use msd::experiment::toy::{quick_config, ToyContext, ToyMethod, ToyOptions, TOY_CONFIG};
use msd::experiment::workers::{run_workers, WorkerEvent, WorkerTask};
use msd::experiment::Provenance;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::Device;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Method {
    /// Distribution matching.
    Dm,
    /// Consistency distillation.
    Cd,
}

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (reused: finished pieces are not recomputed).
    #[arg(long)]
    pub out: PathBuf,
    /// The config's seed (teacher, pairs, evaluation noise) instead of its own.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training seeds of the students (every figure is mean ± std over them).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// Student widths (default: the teacher's); narrower students start from TSM.
    #[arg(long, value_delimiter = ',')]
    pub widths: Vec<i64>,
    /// Numbers of students to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub students: Vec<usize>,
    /// The per-student distillation method.
    #[arg(long, value_enum, default_value = "dm")]
    pub method: Method,
    /// Samples per class of every histogram (default 10000; 2000 with --quick).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Parallel single-thread worker processes, one per (width, seed) group.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// A tiny budget (≤ 2 minutes) for smoke tests; the numbers are not meaningful.
    #[arg(long)]
    pub quick: bool,
    /// Another config instead of the embedded configs/toy.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Internal: train and evaluate the given cells only, write no report.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Pilot runs: train and evaluate only student K of every cell (no report).
    #[arg(long, hide = true)]
    pub pilot_student: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    let wall = Instant::now();
    let (text, origin) = match &a.config {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?,
            p.clone(),
        ),
        None => (
            TOY_CONFIG.to_string(),
            PathBuf::from("configs/toy.toml (embedded)"),
        ),
    };
    let mut cfg = RunConfig::from_toml(&text, &origin)?;
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let mut n_eval = 10_000;
    if a.quick {
        n_eval = quick_config(&mut cfg);
    }
    if a.jobs == 0 {
        bail!("--jobs must be ≥ 1");
    }
    let opts = ToyOptions {
        config: cfg,
        out: a.out.clone(),
        seeds: a.seeds.clone(),
        widths: a.widths.clone(),
        students: a.students.clone(),
        method: match a.method {
            Method::Dm => ToyMethod::Dm,
            Method::Cd => ToyMethod::Cd,
        },
        samples_per_class: a.samples.unwrap_or(n_eval),
        report: !a.worker,
        quick: a.quick,
        provenance: Provenance::of_this_process(),
        device: Device::Cpu,
        pilot_student: a.pilot_student,
    };
    let mut obs = progress::Console::default();
    let ctx = ToyContext::prepare(opts, &mut obs)?;
    let o = ctx.options();
    let widths = o.widths()?;
    if a.pilot_student.is_some() {
        ctx.cells(&widths, &o.seeds, &mut obs)?;
        return Ok(());
    }
    if a.worker || a.jobs == 1 {
        ctx.cells(&widths, &o.seeds, &mut obs)?;
    } else {
        workers(&a, &widths, &o.seeds)?;
    }
    if a.worker {
        return Ok(());
    }
    let outcome = ctx.report(wall, &mut obs)?;
    msd::viz::save_png(&outcome.figure(), &a.out.join("toy.png"))?;
    for c in &outcome.report.claims {
        println!(
            "{}: {} ({:+.1}%) → {}",
            c.claim,
            c.ours,
            100.0 * c.relative_change,
            c.verdict.as_str()
        );
    }
    println!(
        "noise floor (teacher vs teacher) {:.4}; teacher to data {:.4}",
        outcome.report.noise_floor_l1, outcome.report.teacher.l1_to_data
    );
    println!("report: {}", a.out.join("toy_report.json").display());
    println!("figure: {}", a.out.join("toy.png").display());
    Ok(())
}

/// Runs one worker process per (width, seed) group, `--jobs` at a time; their output goes to
/// `OUT/logs/`.
fn workers(a: &Args, widths: &[i64], seeds: &[u64]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the msd binary for --jobs")?;
    let mut tasks = Vec::new();
    for &w in widths {
        for &s in seeds {
            let mut c = Command::new(&exe);
            c.args(["--threads", "1", "toy", "--worker", "--out"])
                .arg(&a.out)
                .args(["--seeds", &s.to_string(), "--widths", &w.to_string()])
                .arg("--students")
                .arg(
                    a.students
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .args([
                    "--method",
                    match a.method {
                        Method::Dm => "dm",
                        Method::Cd => "cd",
                    },
                ]);
            if let Some(p) = &a.config {
                c.arg("--config").arg(p);
            }
            if let Some(s) = a.seed {
                c.args(["--seed", &s.to_string()]);
            }
            if let Some(n) = a.samples {
                c.args(["--samples", &n.to_string()]);
            }
            if a.quick {
                c.arg("--quick");
            }
            tasks.push(WorkerTask {
                label: format!("width {w}, seed {s}"),
                command: c,
                log: a.out.join("logs").join(format!("w{w}-s{s}.log")),
            });
        }
    }
    run_workers(tasks, a.jobs, &mut |e| match e {
        WorkerEvent::Started { label, log } => println!("worker: {label} → {}", log.display()),
        WorkerEvent::Finished { label } => println!("worker: {label} done"),
    })
    .context("toy workers")?;
    Ok(())
}
