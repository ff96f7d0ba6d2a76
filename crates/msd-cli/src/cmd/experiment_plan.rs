//! What `msd experiment` runs: its config file (`configs/experiment-<name>.toml`) and the fixed
//! plan of the reproduction table — which student runs to train (K, size, partition, stages) and
//! which table rows read which run's stage. Pure data; the driver is `experiment.rs`.
//!
//! Runs are shared between rows: "1 student, DM", "1 student, DM → ADM" and "K = 1" are the same
//! run at different stages, so every student is trained once and every row has the same
//! per-student iteration budget (the run config's `[distill]`).

use anyhow::{bail, Context, Result};
use msd::nets::NetConfig;
use msd::partition::Strategy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `configs/experiment-<name>.toml`; paths are relative to that file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The run config every row distils with (`[distill]` budgets, sampler, guidance).
    pub run: PathBuf,
    /// The trained teacher (model.json + model.safetensors + train.json).
    pub teacher: PathBuf,
    /// The feature network of every evaluation.
    pub classifier: PathBuf,
    /// Samples per evaluation (balanced over the classes).
    #[serde(default = "d_n")]
    pub n: usize,
    /// Samples per generation batch in the evaluations.
    #[serde(default = "d_eval_batch")]
    pub eval_batch: usize,
    /// First noise seed of the evaluations.
    #[serde(default)]
    pub eval_seed: u64,
    /// The number-of-students ablation (DM only).
    pub student_counts: Vec<usize>,
    /// The smaller students' network (must have fewer parameters than the teacher's).
    pub small_net: NetConfig,
    /// Timed repetitions for the latency (batch 1) and throughput figures.
    #[serde(default = "d_reps")]
    pub latency_reps: usize,
    /// The batch of the throughput figure.
    #[serde(default = "d_throughput_batch")]
    pub throughput_batch: usize,
}

fn d_n() -> usize {
    10_000
}
fn d_eval_batch() -> usize {
    250
}
fn d_reps() -> usize {
    20
}
fn d_throughput_batch() -> usize {
    64
}

impl ExperimentConfig {
    /// Reads `path` and resolves its paths against the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the experiment config {}", path.display()))?;
        let mut c: Self = toml::from_str(&text)
            .with_context(|| format!("parsing the experiment config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.run, &mut c.teacher, &mut c.classifier] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if c.n < 4 || c.eval_batch == 0 || c.latency_reps == 0 || c.throughput_batch == 0 {
            bail!(
                "{}: n must be ≥ 4 and eval_batch, latency_reps, throughput_batch ≥ 1",
                path.display()
            );
        }
        if c.student_counts.is_empty() || c.student_counts.contains(&0) {
            bail!(
                "{}: student_counts needs at least one K ≥ 1",
                path.display()
            );
        }
        Ok(c)
    }
}

/// Same-size (teacher's network, initialised from it) or smaller students.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Same,
    Small,
}

/// One set of K students trained through some stages (a run directory).
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    pub name: String,
    pub students: usize,
    pub size: Size,
    pub partition: Strategy,
    /// Consecutive stages of tsm, dm, adm.
    pub stages: Vec<&'static str>,
}

/// One row of the table: the teacher (`run = None`) or a run's students after `stage`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowPlan {
    pub name: String,
    /// Which part of the table: `main`, `students` (K ablation) or `partition`.
    pub section: &'static str,
    pub run: Option<String>,
    pub stage: &'static str,
}

impl RowPlan {
    /// The evaluation this row reads (rows sharing a run and stage share it).
    pub fn eval_id(&self) -> String {
        eval_id(self.run.as_deref(), self.stage)
    }
}

/// The evaluation id of a run's stage (`teacher` for the teacher row).
pub fn eval_id(run: Option<&str>, stage: &str) -> String {
    match run {
        None => "teacher".into(),
        Some(r) => format!("{r}-{stage}"),
    }
}

/// The partition strategy's name as configs and reports spell it.
pub fn partition_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Contiguous => "contiguous",
        Strategy::Random => "random",
        Strategy::Kmeans => "kmeans",
    }
}

/// The runs and rows of the reproduction table for the given K ablation.
pub fn plan(student_counts: &[usize]) -> (Vec<RunPlan>, Vec<RowPlan>) {
    let run = |name: &str, k, size, partition, stages: &[&'static str]| RunPlan {
        name: name.into(),
        students: k,
        size,
        partition,
        stages: stages.to_vec(),
    };
    let mut runs = vec![
        run("k1", 1, Size::Same, Strategy::Contiguous, &["dm", "adm"]),
        run("k4", 4, Size::Same, Strategy::Contiguous, &["dm", "adm"]),
        run(
            "k4-small-tsm",
            4,
            Size::Small,
            Strategy::Contiguous,
            &["tsm", "dm", "adm"],
        ),
        run(
            "k4-small",
            4,
            Size::Small,
            Strategy::Contiguous,
            &["dm", "adm"],
        ),
    ];
    for &k in student_counts {
        if k != 1 && k != 4 {
            runs.push(run(
                &format!("k{k}"),
                k,
                Size::Same,
                Strategy::Contiguous,
                &["dm"],
            ));
        }
    }
    for s in [Strategy::Random, Strategy::Kmeans] {
        runs.push(run(
            &format!("k4-{}", partition_name(s)),
            4,
            Size::Same,
            s,
            &["dm"],
        ));
    }
    let row = |name: String, section, run: Option<&str>, stage| RowPlan {
        name,
        section,
        run: run.map(String::from),
        stage,
    };
    let mut rows = vec![
        row("teacher, Heun-18".into(), "main", None, "teacher"),
        row("1 student, DM".into(), "main", Some("k1"), "dm"),
        row("1 student, DM → ADM".into(), "main", Some("k1"), "adm"),
        row("4 students, DM".into(), "main", Some("k4"), "dm"),
        row("4 students, DM → ADM".into(), "main", Some("k4"), "adm"),
        row(
            "4 smaller students, TSM → DM → ADM".into(),
            "main",
            Some("k4-small-tsm"),
            "adm",
        ),
        row(
            "4 smaller students, DM → ADM (no TSM)".into(),
            "main",
            Some("k4-small"),
            "adm",
        ),
    ];
    for &k in student_counts {
        let name = format!("k{k}");
        rows.push(row(
            format!("K = {k}, DM"),
            "students",
            Some(if k == 4 { "k4" } else { name.as_str() }),
            "dm",
        ));
    }
    for s in [Strategy::Contiguous, Strategy::Random, Strategy::Kmeans] {
        let r = if s == Strategy::Contiguous {
            "k4".to_string()
        } else {
            format!("k4-{}", partition_name(s))
        };
        rows.push(row(
            format!("K = 4, {} partition, DM", partition_name(s)),
            "partition",
            Some(&r),
            "dm",
        ));
    }
    (runs, rows)
}

/// The stages a row's students went through (up to and including its own).
pub fn stages_up_to(run: &RunPlan, stage: &str) -> Vec<&'static str> {
    let end = run
        .stages
        .iter()
        .position(|s| *s == stage)
        .map_or(0, |i| i + 1);
    run.stages[..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_reads_a_planned_run_stage_and_runs_are_not_duplicated() {
        let (runs, rows) = plan(&[1, 2, 5, 10]);
        assert_eq!(rows.len(), 7 + 4 + 3);
        for r in &rows {
            if let Some(name) = &r.run {
                let run = runs.iter().find(|p| &p.name == name).expect(name);
                assert!(run.stages.contains(&r.stage), "{} {}", name, r.stage);
            }
        }
        let mut names: Vec<_> = runs.iter().map(|r| r.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), runs.len());
        // The same students behind "4 students, DM" and the contiguous row, and behind
        // "1 student, DM" and K = 1; with K = 4 in the ablation, that row joins them.
        let count = |rows: &[RowPlan], id: &str| rows.iter().filter(|r| r.eval_id() == id).count();
        assert_eq!(count(&rows, "k4-dm"), 2);
        assert_eq!(count(&rows, "k1-dm"), 2);
        let (runs8, rows8) = plan(&[1, 2, 4, 8]);
        assert_eq!(count(&rows8, "k4-dm"), 3);
        assert!(!runs8.iter().any(|r| r.name == "k5") && runs8.iter().any(|r| r.name == "k8"));
        let small = runs.iter().find(|r| r.name == "k4-small").unwrap();
        assert_eq!(stages_up_to(small, "adm"), vec!["dm", "adm"]);
    }
}
