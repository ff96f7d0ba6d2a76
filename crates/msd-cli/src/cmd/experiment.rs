//! `msd experiment mnist --out results/mnist --seeds 0,1,2`: flags, progress and pictures over
//! `msd::experiment::driver` (the paper's main table in miniature, over training seeds).
//! Besides the library's report.json/report.md it draws `fd_vs_k.png` (FD against K per student
//! size, ± std) and `fd_vs_iterations.png` (the K = 1 capacity-bound student's FD against its
//! per-student iterations).

use crate::{plot, progress};
use anyhow::{bail, Context, Result};
use msd::experiment::driver::{run_experiment, ExperimentOptions};
use msd::experiment::plan::ExperimentConfig;
use msd::experiment::report::{ExperimentReport, ReportRow};
use msd::experiment::Provenance;
use msd::viz::errorbar_chart;
use std::path::{Path, PathBuf};

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
    /// split the work between two processes; the report lists what exists so far.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure the latency and throughput of finished rows again (e.g. on an idle machine, so
    /// that every row is timed under the same conditions).
    #[arg(long)]
    pub retime: bool,
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
        device,
        provenance: Provenance::of_this_process(),
    };
    let report = run_experiment(&opts, &mut progress::Console::default())
        .with_context(|| format!("experiment {}", cfg_path.display()))?;
    write_plots(&a.out, &report)?;
    for c in &report.claims {
        println!(
            "({}) {}: {} → {}",
            c.question,
            c.claim,
            c.ours,
            c.verdict.map_or("pending", |v| v.as_str())
        );
    }
    println!(
        "experiment: {} of {} rows evaluated → {}",
        report.rows_done,
        report.rows.len(),
        a.out.join("report.md").display()
    );
    Ok(())
}

/// `fd_vs_k.png` (one panel per student size with a K sweep) and `fd_vs_iterations.png`.
fn write_plots(out: &Path, r: &ExperimentReport) -> Result<()> {
    let pts = |rows: &[&ReportRow]| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|v| (v.fd.unwrap_or(f64::NAN), v.fd_std.unwrap_or(0.0)))
            .collect()
    };
    let floor = r.rows.iter().find_map(|v| v.floor_fd).unwrap_or(0.0);
    let mut panels = Vec::new();
    let mut sweeps: Vec<Vec<&ReportRow>> = Vec::new();
    for section in ["students", "capacity"] {
        let mut rows: Vec<&ReportRow> = r
            .rows
            .iter()
            .filter(|v| v.section == section && v.fd.is_some())
            .collect();
        rows.sort_by_key(|v| v.students);
        if !rows.is_empty() {
            sweeps.push(rows);
        }
    }
    let ymax = sweeps
        .iter()
        .flatten()
        .map(|v| v.fd.unwrap_or(0.0) + v.fd_std.unwrap_or(0.0))
        .fold(floor, f64::max)
        * 1.1;
    for rows in &sweeps {
        panels.push(errorbar_chart(
            &pts(rows),
            floor,
            ymax,
            400,
            plot::palette(0),
        ));
    }
    if !panels.is_empty() {
        let p = out.join("fd_vs_k.png");
        plot::hstack(&panels)
            .save(&p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    // The K = 1 capacity-bound student at N, K·N, … iterations.
    let mut conv: Vec<&ReportRow> = r
        .rows
        .iter()
        .filter(|v| v.size == "capacity" && v.students == 1 && v.fd.is_some())
        .collect();
    conv.sort_by_key(|v| v.iterations_per_student);
    conv.dedup_by_key(|v| v.iterations_per_student);
    if conv.len() > 1 {
        let ymax = conv
            .iter()
            .map(|v| v.fd.unwrap_or(0.0) + v.fd_std.unwrap_or(0.0))
            .fold(floor, f64::max)
            * 1.1;
        let p = out.join("fd_vs_iterations.png");
        errorbar_chart(&pts(&conv), floor, ymax, 400, plot::palette(1))
            .save(&p)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
