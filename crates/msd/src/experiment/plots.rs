//! The experiment's figures, drawn from its report: `fd_vs_k.png` (FD against K per student
//! size, one panel and FD scale each, ± std over seeds, the held-out floor dashed; a panel whose
//! FDs span more than a decade has a logarithmic FD axis), `fd_vs_iterations.png` (the K = 1
//! capacity-bound student's FD against its per-student iterations, with the teacher's FD) and `grad_share.png` (the
//! regression term's share of the generator's gradient against DM iterations, one line per run
//! with a regression term). A figure without data is not written.

use crate::experiment::report::{ExperimentReport, ReportRow};
use crate::viz::{hstack, line_chart, palette, save_png, ChartSpec, HLine, Series};
use crate::Result;
use image::Rgb;
use std::path::Path;

/// The grey of the held-out floor line.
const FLOOR_GREY: Rgb<u8> = Rgb([150, 150, 150]);
/// The colour of the teacher's FD line.
const TEACHER_RED: Rgb<u8> = Rgb([214, 39, 40]);

/// The K sweeps of a student size, one per per-student budget the section holds (the
/// capacity-bound sweep may sit at several): the rows of `section` (the `students` or
/// `capacity` sweep) at that budget and every other row of the same kind — same size,
/// partition, stages and per-student budget, no regression-weight override — that reads a run
/// the section does not (e.g. K = 4, whose same-size DM row lives in the `partition` and `main`
/// sections), one row per run, by K. Sweeps without a finished row are left out.
pub fn k_sweeps<'a>(report_rows: &'a [ReportRow], section: &str) -> Vec<Vec<&'a ReportRow>> {
    let own: Vec<&ReportRow> = report_rows
        .iter()
        .filter(|v| v.section == section)
        .collect();
    let mut budgets: Vec<u64> = Vec::new();
    for v in &own {
        if !budgets.contains(&v.iterations_per_student) {
            budgets.push(v.iterations_per_student);
        }
    }
    budgets
        .into_iter()
        .map(|it| {
            let at: Vec<&ReportRow> = own
                .iter()
                .copied()
                .filter(|v| v.iterations_per_student == it)
                .collect();
            k_sweep_of(report_rows, section, &at)
        })
        .filter(|rows| !rows.is_empty())
        .collect()
}

/// One K sweep: the finished rows of `own` (rows of `section` at one budget) and the rows of
/// their kind from other sections (see [`k_sweeps`]), by K.
fn k_sweep_of<'a>(
    report_rows: &'a [ReportRow],
    section: &str,
    own: &[&'a ReportRow],
) -> Vec<&'a ReportRow> {
    let Some(first) = own.first() else {
        return vec![];
    };
    let same_kind = |v: &ReportRow| {
        v.size == first.size
            && v.partition == first.partition
            && v.stages == first.stages
            && v.iterations_per_student == first.iterations_per_student
            && v.regression_weight.is_none()
    };
    let mut rows: Vec<&ReportRow> = own.iter().copied().filter(|v| v.fd.is_some()).collect();
    for v in report_rows.iter().filter(|v| v.section != section) {
        let seen = rows.iter().any(|u| match (&u.run, &v.run) {
            (Some(a), Some(b)) => a == b,
            // Reports written before rows named their run: one row per K.
            _ => u.students == v.students,
        });
        if same_kind(v) && v.fd.is_some() && !seen {
            rows.push(v);
        }
    }
    rows.sort_by_key(|v| v.students);
    rows
}

/// The FD axis of a chart of `rows`: logarithmic (automatic range) when their FDs span more
/// than a decade (e.g. the capacity-bound student from N to 10N iterations, where a linear axis
/// flattens everything but the worst point), otherwise linear from 0 to `top`.
fn fd_axis(spec: &mut ChartSpec, rows: &[&ReportRow], top: f64) {
    let fds = rows.iter().filter_map(|v| v.fd).filter(|y| *y > 0.0);
    let (lo, hi) = fds.fold((f64::INFINITY, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
    spec.log_y = hi > 10.0 * lo;
    spec.y_range = (!spec.log_y).then_some((0.0, top.max(1e-9)));
}

/// The (x, FD) points and FD std of `rows` with x from `x`.
fn fd_series(
    rows: &[&ReportRow],
    x: impl Fn(&ReportRow) -> f64,
    name: &str,
    colour: usize,
) -> Series {
    Series {
        name: name.into(),
        points: rows
            .iter()
            .map(|v| (x(v), v.fd.unwrap_or(f64::NAN)))
            .collect(),
        std: rows.iter().map(|v| v.fd_std.unwrap_or(0.0)).collect(),
        colour: palette(colour),
    }
}

/// Writes the figures of `r` into `out` (see the module doc).
pub fn write_plots(out: &Path, r: &ExperimentReport) -> Result<()> {
    let floor = r.rows.iter().find_map(|v| v.floor_fd);
    let floor_line = || -> Vec<HLine> {
        floor
            .map(|y| HLine {
                name: "held-out floor".into(),
                y,
                colour: FLOOR_GREY,
            })
            .into_iter()
            .collect()
    };
    let ytop = |rows: &[&ReportRow]| {
        rows.iter()
            .map(|v| v.fd.unwrap_or(0.0) + v.fd_std.unwrap_or(0.0))
            .fold(floor.unwrap_or(0.0), f64::max)
            * 1.3 // headroom for the legend box in the top right corner
    };
    let y_fd = "FD (MNIST CNN features)";
    let sweeps: Vec<(&str, Vec<Vec<&ReportRow>>)> = [
        ("same-size students, DM", "students"),
        ("capacity-bound students, TSM → DM → ADM", "capacity"),
    ]
    .into_iter()
    .map(|(caption, section)| (caption, k_sweeps(&r.rows, section)))
    .filter(|(_, sweeps)| !sweeps.is_empty())
    .collect();
    // Each panel has its own FD scale: the capacity-bound students' FDs can be ten times the
    // same-size ones', and a shared axis would flatten the same-size sweep. A panel with
    // sweeps at several per-student budgets draws one line each.
    let mut panels = Vec::new();
    for (caption, budgets) in &sweeps {
        let all: Vec<&ReportRow> = budgets.iter().flatten().copied().collect();
        let mut spec = ChartSpec::new(caption, "students K", y_fd, 440);
        fd_axis(&mut spec, &all, ytop(&all));
        spec.integer_x = true;
        let series: Vec<Series> = budgets
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                let name = match budgets.len() {
                    1 => "mean ± std over seeds (no bar: 1 seed)".to_string(),
                    _ => format!(
                        "{} iterations per student (DM + ADM)",
                        rows[0].iterations_per_student
                    ),
                };
                fd_series(rows, |v| v.students as f64, &name, i)
            })
            .collect();
        panels.push(line_chart(&spec, &series, &floor_line())?);
    }
    if !panels.is_empty() {
        save_png(&hstack(&panels), &out.join("fd_vs_k.png"))?;
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
        let mut spec = ChartSpec::new(
            "one capacity-bound student, longer training",
            "iterations per student",
            y_fd,
            440,
        );
        fd_axis(&mut spec, &conv, ytop(&conv));
        let s = fd_series(
            &conv,
            |v| v.iterations_per_student as f64,
            "mean ± std over seeds",
            0,
        );
        // The teacher the student distils: how far the longest budget still is from it.
        let teacher = r
            .rows
            .iter()
            .find(|v| v.size == "teacher")
            .and_then(|v| v.fd)
            .map(|y| HLine {
                name: "teacher".into(),
                y,
                colour: TEACHER_RED,
            });
        let lines: Vec<HLine> = floor_line().into_iter().chain(teacher).collect();
        save_png(
            &line_chart(&spec, &[s], &lines)?,
            &out.join("fd_vs_iterations.png"),
        )?;
    }
    // The regression term's gradient share against DM iterations, one line per run.
    let series: Vec<Series> = r
        .grad_share
        .iter()
        .filter(|g| !g.share.is_empty())
        .enumerate()
        .map(|(i, g)| Series {
            name: format!("{} (K = {})", g.run, g.students),
            points: g
                .steps
                .iter()
                .zip(&g.share)
                .map(|(&s, &y)| (s as f64, y))
                .collect(),
            std: vec![],
            colour: palette(i),
        })
        .collect();
    if !series.is_empty() {
        let spec = ChartSpec::new(
            "regression term's share of the gradient",
            "DM iteration",
            "regression share of generator gradient",
            480,
        );
        save_png(
            &line_chart(&spec, &series, &[])?,
            &out.join("grad_share.png"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A done row of `section` reading `run` with `k` students (same size, contiguous, DM,
    /// 400 iterations unless changed by `edit`) and FD `fd`.
    fn row(section: &str, run: &str, k: usize, fd: Option<f64>) -> ReportRow {
        serde_json::from_value(serde_json::json!({
            "name": format!("row of {run} in {section}"), "section": section, "run": run,
            "students": k, "size": "same", "stages": ["dm"], "partition": "contiguous",
            "status": "done", "seeds_done": [0], "iterations_per_student": 400,
            "tsm_steps_per_student": 0, "batch_per_student": 8, "fd": fd, "fd_std": 0.1,
            "fd_per_seed": [], "per_class_accuracy": [], "throughput_batch": 1, "paper": "",
        }))
        .unwrap()
    }

    #[test]
    fn the_fd_axis_turns_logarithmic_beyond_a_decade() {
        let (a, b, c) = (
            row("capacity", "c1", 1, Some(101.5)),
            row("capacity", "c1-x4", 1, Some(8.8)),
            row("capacity", "c1-x10", 1, Some(4.2)),
        );
        let mut spec = ChartSpec::new("", "K", "FD", 100);
        fd_axis(&mut spec, &[&a, &b, &c], 130.0);
        assert!(spec.log_y);
        assert_eq!(spec.y_range, None);
        fd_axis(&mut spec, &[&b, &c], 12.0);
        assert!(!spec.log_y);
        assert_eq!(spec.y_range, Some((0.0, 12.0)));
    }

    #[test]
    fn the_k_sweep_takes_k4_from_the_partition_section_once() {
        let mut rows = vec![
            row("main", "k4", 4, Some(9.4)),
            row("students", "k1", 1, Some(10.8)),
            row("students", "k2", 2, Some(9.8)),
            row("students", "k5", 5, None),
            row("partition", "k4", 4, Some(9.4)),
            row("partition", "k4-random", 4, Some(9.9)),
            row("compute", "k1-x4", 1, Some(8.0)),
            row("controls", "k4-noreg", 4, Some(10.1)),
        ];
        rows[5].partition = "random".into();
        rows[6].iterations_per_student = 1600;
        rows[7].regression_weight = Some(0.0);
        let sweeps = k_sweeps(&rows, "students");
        assert_eq!(sweeps.len(), 1);
        let sweep = &sweeps[0];
        let ks: Vec<usize> = sweep.iter().map(|v| v.students).collect();
        assert_eq!(ks, [1, 2, 4]);
        assert_eq!(sweep[2].run.as_deref(), Some("k4"));
        assert!(k_sweeps(&rows, "capacity").is_empty());
        // Without the K = 4 rows only the section's own two points remain.
        rows.retain(|v| v.students != 4);
        assert_eq!(k_sweeps(&rows, "students")[0].len(), 2);
    }

    #[test]
    fn a_capacity_section_at_two_budgets_gives_one_sweep_each() {
        let at = |section: &str, run: &str, k: usize, iters: u64| {
            let mut v = row(section, run, k, Some(50.0 / k as f64));
            v.size = "capacity".into();
            v.iterations_per_student = iters;
            v
        };
        let rows = vec![
            at("capacity", "c1", 1, 400),
            at("capacity", "c2", 2, 400),
            at("capacity", "c1-x4", 1, 1600),
            at("capacity", "c2-x4", 2, 1600),
            at("compute", "c4", 4, 400),
            at("compute", "c1-x4", 1, 1600),
            at("compute", "c1-x10", 1, 4000),
        ];
        let runs = |s: &[&ReportRow]| -> Vec<String> {
            s.iter().map(|v| v.run.clone().unwrap()).collect()
        };
        let sweeps = k_sweeps(&rows, "capacity");
        assert_eq!(sweeps.len(), 2);
        assert_eq!(runs(&sweeps[0]), ["c1", "c2", "c4"]);
        assert_eq!(runs(&sweeps[1]), ["c1-x4", "c2-x4"]);
    }
}
