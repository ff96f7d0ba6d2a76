//! The experiment's figures, drawn from its report: `fd_vs_k.png` (FD against K per student
//! size, ± std over seeds, the held-out floor dashed), `fd_vs_iterations.png` (the K = 1
//! capacity-bound student's FD against its per-student iterations) and `grad_share.png` (the
//! regression term's share of the generator's gradient against DM iterations, one line per run
//! with a regression term). A figure without data is not written.

use crate::experiment::report::{ExperimentReport, ReportRow};
use crate::viz::{errorbar_chart, hstack, palette, save_png};
use crate::Result;
use std::path::Path;

/// Writes the figures of `r` into `out` (see the module doc).
pub fn write_plots(out: &Path, r: &ExperimentReport) -> Result<()> {
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
        panels.push(errorbar_chart(&pts(rows), floor, ymax, 400, palette(0)));
    }
    if !panels.is_empty() {
        let p = out.join("fd_vs_k.png");
        save_png(&hstack(&panels), &p)?;
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
        save_png(
            &errorbar_chart(&pts(&conv), floor, ymax, 400, palette(1)),
            &p,
        )?;
    }
    // The regression term's gradient share against DM iterations, one line per run.
    let series: Vec<(Vec<f64>, image::Rgb<u8>)> = r
        .grad_share
        .iter()
        .enumerate()
        .filter(|(_, g)| !g.share.is_empty())
        .map(|(i, g)| (g.share.clone(), palette(i)))
        .collect();
    if !series.is_empty() {
        let p = out.join("grad_share.png");
        save_png(&crate::viz::line_chart(&series, &[], 400), &p)?;
    }
    Ok(())
}
