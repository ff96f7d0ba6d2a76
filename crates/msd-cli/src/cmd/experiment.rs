//! `msd experiment mnist --out results/mnist --seeds 0,1,2`: flags, progress and pictures over
//! `msd::experiment::driver` (the paper's main table in miniature, over training seeds); besides
//! the report it draws the figures of [`msd::experiment::plots`].

use crate::progress;
use anyhow::{bail, Context, Result};
use msd::experiment::driver::{run_experiment, ExperimentOptions};
use msd::experiment::plan::ExperimentConfig;
use msd::experiment::Provenance;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The experiment: NAME reads configs/experiment-NAME.toml (e.g. `mnist`).
    pub name: String,
    /// The experiment config instead of configs/experiment-NAME.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder: report.md, report.json and evals/ (small, meant to be committed) and runs/
    /// (the students' weights and checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Training seeds (default: the config's `seeds`); each (run, seed) is its own run directory.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    /// Only these parts (comma-separated run names, or `teacher` for the teacher row), e.g. to
    /// split the work between two processes; the report lists what exists so far, over this
    /// call's seeds and those of the report already in --out.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure the latency and throughput of finished rows again (e.g. on an idle machine, so
    /// that every row is timed under the same conditions).
    #[arg(long)]
    pub retime: bool,
    /// Train and evaluate nothing; only write report.md/report.json and the plots from the rows
    /// that exist (while another process goes on training).
    #[arg(long, conflicts_with_all = ["only", "retime"])]
    pub report_only: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    let device = crate::device::parse(&a.device)?;
    let cfg_path = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("configs/experiment-{}.toml", a.name)));
    if !cfg_path.exists() {
        bail!(
            "no experiment config at {} (pass --config, or a NAME with configs/experiment-NAME.toml)",
            cfg_path.display()
        );
    }
    let exp = ExperimentConfig::load(&cfg_path)?;
    let opts = ExperimentOptions {
        config_path: cfg_path.clone(),
        exp,
        out: a.out.clone(),
        seeds: (!a.seeds.is_empty()).then(|| a.seeds.clone()),
        only: a.only.clone(),
        retime: a.retime,
        report_only: a.report_only,
        device,
        provenance: Provenance::of_build(env!("MSD_BUILD_COMMIT")),
    };
    let report = run_experiment(&opts, &mut progress::Console::default())
        .with_context(|| format!("experiment {}", cfg_path.display()))?;
    msd::experiment::plots::write_plots(&a.out, &report)?;
    for c in &report.claims {
        println!("{c}");
    }
    let dropped = report
        .rows
        .iter()
        .filter(|r| r.status == msd::experiment::report::RowStatus::Dropped)
        .count();
    println!(
        "experiment: {} of {} rows evaluated{} → {}",
        report.rows_done,
        report.rows.len(),
        match dropped {
            0 => String::new(),
            n => format!(" ({n} dropped by the config)"),
        },
        a.out.join("report.md").display()
    );
    Ok(())
}
