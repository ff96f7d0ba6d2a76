//! `msd toy`: flags and printing over [`msd::experiment::toy_sweep`] (the paper's Fig. 4 on the
//! 2-D toy, swept over student widths, numbers of students and training seeds; `--jobs N` runs
//! the (width, seed) groups as N worker processes). Writes `toy_report.json`, `toy_report.md`
//! and `toy.png`.

use crate::progress;
use anyhow::Result;
use msd::experiment::toy::ToyMethod;
use msd::experiment::toy_sweep::{run_toy_sweep, ToySweepOptions};
use msd::experiment::Provenance;
use std::path::PathBuf;

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
    pub method: ToyMethod,
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
    let o = ToySweepOptions {
        out: a.out,
        config: a.config,
        seed: a.seed,
        seeds: a.seeds,
        widths: a.widths,
        students: a.students,
        method: a.method,
        samples: a.samples,
        jobs: a.jobs,
        quick: a.quick,
        worker: a.worker,
        pilot_student: a.pilot_student,
        provenance: Provenance::of_build(env!("MSD_BUILD_COMMIT")),
    };
    let Some(outcome) = run_toy_sweep(&o, &mut progress::Console::default())? else {
        return Ok(());
    };
    for c in &outcome.report.claims {
        println!("{c}");
    }
    println!(
        "noise floor (teacher vs teacher) {:.4}; teacher to data {:.4}",
        outcome.report.noise_floor_l1, outcome.report.teacher.l1_to_data
    );
    println!("report: {}", o.out.join("toy_report.json").display());
    println!("figure: {}", o.out.join("toy.png").display());
    Ok(())
}
