//! What the image reproduction runs: its config file (`configs/experiment-<name>.toml`) and the
//! fixed plan of the table — which student runs to train (K, size, partition, stages, budget)
//! and which table rows read which run's stage, and the claims that compare rows. Pure data; the
//! driver is [`super::driver`].
//!
//! Runs are shared between rows: "1 student, DM", "1 student, DM → ADM" and "K = 1" are the same
//! run at different stages, so every student is trained once. Every run is trained once per
//! training seed.

use super::StageKind;
use crate::nets::NetConfig;
use crate::partition::Strategy;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// First noise seed of the evaluations (the same for every training seed).
    #[serde(default)]
    pub eval_seed: u64,
    /// Training seeds of the students (the CLI's `--seeds` overrides).
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
    /// The number-of-students ablation (same-size students, DM only).
    pub student_counts: Vec<usize>,
    /// The smaller students' network (must have fewer parameters than the teacher's); required
    /// with `same_size_rows` (it serves their smaller-students rows), unused without.
    #[serde(default)]
    pub small_net: Option<NetConfig>,
    /// Capacity-bound students (e.g. a quarter of the teacher's parameters), trained
    /// TSM → DM → ADM for every K of `capacity_counts`; none: no capacity rows.
    #[serde(default)]
    pub capacity_net: Option<NetConfig>,
    #[serde(default = "d_capacity_counts")]
    pub capacity_counts: Vec<usize>,
    /// Per-student budgets of the capacity-bound K sweep, as multiples m of the run config's
    /// (every stage's iterations times m): runs `c{K}` at m = 1, `c{K}-x{m}` above, so that
    /// the sweep can sit at a budget where one student has stopped improving.
    #[serde(default = "d_capacity_budgets")]
    pub capacity_budgets: Vec<u64>,
    /// Further budgets (multiples of the run config's) of one capacity-bound student alone,
    /// for its FD against iterations (`fd_vs_iterations.png`): has it stopped improving at the
    /// sweep's budget? The equal-compute runs `c1-x{K}` add their points too.
    #[serde(default)]
    pub capacity_k1_budgets: Vec<u64>,
    /// Plan the rows of same-size and smaller students (the main table, the K ablation, the
    /// partitions, their equal-compute rows and the controls); false: only the teacher and the
    /// capacity-bound rows, for an experiment about one capacity-bound student size.
    #[serde(default = "d_true")]
    pub same_size_rows: bool,
    /// Equal total compute: for each K here, one student with K times the per-student budget
    /// beside K students (same-size DM, and capacity-bound TSM → DM → ADM when planned).
    #[serde(default = "d_equal_compute")]
    pub equal_compute: Vec<usize>,
    /// Controls: DM continued for the ADM stage's iterations (K = 1 and 4), and K = 4 with
    /// regression weight 0.
    #[serde(default = "d_true")]
    pub controls: bool,
    /// Timed repetitions for the latency (batch 1) and throughput figures.
    #[serde(default = "d_reps")]
    pub latency_reps: usize,
    /// The batch of the throughput figure.
    #[serde(default = "d_throughput_batch")]
    pub throughput_batch: usize,
    /// Planned runs left out on purpose (`[dropped]`: run name = why, e.g. what it would cost):
    /// a call over every part skips them (`--only NAME` still trains one) and the report marks
    /// their rows and claims `dropped`, with the reason, instead of `pending`.
    #[serde(default)]
    pub dropped: BTreeMap<String, String>,
}

fn d_n() -> usize {
    10_000
}
fn d_eval_batch() -> usize {
    250
}
fn d_seeds() -> Vec<u64> {
    vec![0]
}
fn d_capacity_counts() -> Vec<usize> {
    vec![1, 2, 5, 10]
}
fn d_capacity_budgets() -> Vec<u64> {
    vec![1]
}
fn d_equal_compute() -> Vec<usize> {
    vec![4, 10]
}
fn d_true() -> bool {
    true
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
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c: Self = toml::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.run, &mut c.teacher, &mut c.classifier] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if c.n < 4 || c.eval_batch == 0 || c.latency_reps == 0 || c.throughput_batch == 0 {
            return Err(Error::format(
                path,
                "n must be ≥ 4 and eval_batch, latency_reps, throughput_batch ≥ 1",
            ));
        }
        for (field, v) in [
            ("student_counts", &c.student_counts),
            ("capacity_counts", &c.capacity_counts),
        ] {
            if v.is_empty() || v.contains(&0) {
                return Err(Error::format(
                    path,
                    format!("{field} needs at least one K ≥ 1"),
                ));
            }
        }
        if c.capacity_budgets.is_empty() || c.capacity_budgets.contains(&0) {
            return Err(Error::format(
                path,
                "capacity_budgets needs at least one budget multiple ≥ 1",
            ));
        }
        if c.capacity_k1_budgets.contains(&0) {
            return Err(Error::format(
                path,
                "capacity_k1_budgets: every budget multiple must be ≥ 1",
            ));
        }
        if c.same_size_rows && c.small_net.is_none() {
            return Err(Error::format(
                path,
                "[small_net] is missing: the smaller-students rows of same_size_rows = true need \
                 it (or set same_size_rows = false for a capacity-only experiment)",
            ));
        }
        if !c.same_size_rows && c.capacity_net.is_none() {
            return Err(Error::format(
                path,
                "same_size_rows = false leaves no rows without a [capacity_net]",
            ));
        }
        if c.equal_compute.iter().any(|&k| k < 2) {
            return Err(Error::format(path, "equal_compute: every K must be ≥ 2"));
        }
        if c.seeds.is_empty() {
            return Err(Error::format(
                path,
                "seeds: give at least one training seed",
            ));
        }
        let planned = plan(&c);
        for (name, why) in &c.dropped {
            if planned.run(name).is_none() {
                let runs: Vec<&str> = planned.runs.iter().map(|r| r.name.as_str()).collect();
                return Err(Error::format(
                    path,
                    format!(
                        "[dropped] {name}: not a run of this plan ({})",
                        runs.join(", ")
                    ),
                ));
            }
            if why.trim().is_empty() {
                return Err(Error::format(
                    path,
                    format!("[dropped] {name}: say why it is dropped (the report shows it)"),
                ));
            }
        }
        Ok(c)
    }
}

/// The students' network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// The teacher's network, initialised from it.
    Same,
    /// `small_net` (fewer parameters than the teacher).
    Small,
    /// `capacity_net` (capacity-bound: one student cannot hold every class well).
    Capacity,
}

impl Size {
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Same => "same",
            Size::Small => "small",
            Size::Capacity => "capacity",
        }
    }
}

/// Per-student budget of a run relative to the run config's `[distill]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Budget {
    /// The run config's budgets.
    Standard,
    /// Every stage's iterations (TSM, DM, ADM) times this factor (equal total compute).
    Times(u64),
    /// DM for its own plus the ADM stage's iterations (the control of "ADM helps").
    DmPlusAdm,
}

/// One set of K students trained through some stages (a run directory per seed).
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    pub name: String,
    pub students: usize,
    pub size: Size,
    pub partition: Strategy,
    /// Consecutive stages of tsm, dm, adm.
    pub stages: Vec<StageKind>,
    pub budget: Budget,
    /// Overrides the regression weight (the ablation); `None` = the run config's.
    pub regression_weight: Option<f64>,
}

/// One row of the table: the teacher (`run = None`) or a run's students after `stage`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowPlan {
    pub name: String,
    /// Which part of the table: `main`, `students`, `partition`, `capacity`, `compute`,
    /// `convergence`, `controls`.
    pub section: &'static str,
    pub run: Option<String>,
    /// `None` for the teacher row.
    pub stage: Option<StageKind>,
}

impl RowPlan {
    /// The evaluation this row reads (rows sharing a run and stage share it).
    pub fn eval_id(&self) -> String {
        eval_id(self.run.as_deref(), self.stage)
    }
}

/// A comparison between two rows: "`better` has a lower FD than `worse`".
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimPlan {
    pub claim: String,
    /// Which question of the report it answers (a–e).
    pub question: char,
    pub better: String,
    pub worse: String,
    /// The paper's figures for the two sides.
    pub paper: &'static str,
}

/// The evaluation id of a run's stage (`teacher` for the teacher row).
pub fn eval_id(run: Option<&str>, stage: Option<StageKind>) -> String {
    match (run, stage) {
        (Some(r), Some(s)) => format!("{r}-{}", s.name()),
        _ => "teacher".into(),
    }
}

/// The partition strategy's name as configs and reports spell it.
pub fn partition_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Contiguous => "contiguous",
        Strategy::Random => "random",
        Strategy::Kmeans => "kmeans",
        Strategy::Quadrants => "quadrants",
    }
}

/// The whole plan of an experiment config.
#[derive(Clone, Debug)]
pub struct Plan {
    pub runs: Vec<RunPlan>,
    pub rows: Vec<RowPlan>,
    pub claims: Vec<ClaimPlan>,
}

impl Plan {
    pub fn run(&self, name: &str) -> Option<&RunPlan> {
        self.runs.iter().find(|r| r.name == name)
    }
    pub fn row(&self, name: &str) -> Option<&RowPlan> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// The run of K capacity-bound students at m times the per-student budget: `c{K}`, `c{K}-x{m}`
/// (so `c1-x{K}`, one student at K times the budget, is also the equal-compute run).
fn capacity_run(k: usize, m: u64) -> String {
    match m {
        1 => format!("c{k}"),
        _ => format!("c{k}-x{m}"),
    }
}

/// The capacity sweep's row of K students at m times the per-student budget.
fn capacity_row(k: usize, m: u64) -> String {
    match m {
        1 => format!("K = {k}, capacity-bound students, TSM → DM → ADM"),
        _ => format!("K = {k}, capacity-bound students, {m}·N iterations each"),
    }
}

/// The budget of m times the run config's.
fn times(m: u64) -> Budget {
    match m {
        1 => Budget::Standard,
        _ => Budget::Times(m),
    }
}

/// The runs, rows and claims of the reproduction table.
pub fn plan(exp: &ExperimentConfig) -> Plan {
    use StageKind::{Adm, Dm, Tsm};
    let same = exp.same_size_rows;
    let capacity = exp.capacity_net.is_some();
    let mut runs: Vec<RunPlan> = Vec::new();
    let mut add = |name: String, k, size, partition, stages: &[StageKind], budget| {
        if !runs.iter().any(|r: &RunPlan| r.name == name) {
            runs.push(RunPlan {
                name,
                students: k,
                size,
                partition,
                stages: stages.to_vec(),
                budget,
                regression_weight: None,
            });
        }
    };
    let c = Strategy::Contiguous;
    let all = [Tsm, Dm, Adm];
    if same {
        add("k1".into(), 1, Size::Same, c, &[Dm, Adm], Budget::Standard);
        add("k4".into(), 4, Size::Same, c, &[Dm, Adm], Budget::Standard);
        add(
            "k4-small-tsm".into(),
            4,
            Size::Small,
            c,
            &all,
            Budget::Standard,
        );
        add(
            "k4-small".into(),
            4,
            Size::Small,
            c,
            &[Dm, Adm],
            Budget::Standard,
        );
        for &k in &exp.student_counts {
            add(format!("k{k}"), k, Size::Same, c, &[Dm], Budget::Standard);
        }
        for s in [Strategy::Random, Strategy::Kmeans] {
            add(
                format!("k4-{}", partition_name(s)),
                4,
                Size::Same,
                s,
                &[Dm],
                Budget::Standard,
            );
        }
    }
    if capacity {
        for &m in &exp.capacity_budgets {
            for &k in &exp.capacity_counts {
                add(capacity_run(k, m), k, Size::Capacity, c, &all, times(m));
            }
        }
    }
    for &k in &exp.equal_compute {
        if same {
            add(format!("k{k}"), k, Size::Same, c, &[Dm], Budget::Standard);
            add(
                format!("k1-x{k}"),
                1,
                Size::Same,
                c,
                &[Dm],
                Budget::Times(k as u64),
            );
        }
        if capacity {
            add(capacity_run(k, 1), k, Size::Capacity, c, &all, times(1));
            let m = k as u64;
            add(capacity_run(1, m), 1, Size::Capacity, c, &all, times(m));
        }
    }
    if capacity {
        for &m in &exp.capacity_k1_budgets {
            add(capacity_run(1, m), 1, Size::Capacity, c, &all, times(m));
        }
    }
    if same && exp.controls {
        add("k1-dmx".into(), 1, Size::Same, c, &[Dm], Budget::DmPlusAdm);
        add("k4-dmx".into(), 4, Size::Same, c, &[Dm], Budget::DmPlusAdm);
        runs.push(RunPlan {
            name: "k4-noreg".into(),
            students: 4,
            size: Size::Same,
            partition: c,
            stages: vec![Dm],
            budget: Budget::Standard,
            regression_weight: Some(0.0),
        });
    }

    let mut rows = Vec::new();
    let mut row = |name: String, section, run: Option<&str>, stage: Option<StageKind>| {
        rows.push(RowPlan {
            name,
            section,
            run: run.map(String::from),
            stage,
        })
    };
    row("teacher, Heun-18".into(), "main", None, None);
    if same {
        row("1 student, DM".into(), "main", Some("k1"), Some(Dm));
        row("1 student, DM → ADM".into(), "main", Some("k1"), Some(Adm));
        row("4 students, DM".into(), "main", Some("k4"), Some(Dm));
        row("4 students, DM → ADM".into(), "main", Some("k4"), Some(Adm));
        row(
            "4 smaller students, TSM → DM → ADM".into(),
            "main",
            Some("k4-small-tsm"),
            Some(Adm),
        );
        row(
            "4 smaller students, DM → ADM (no TSM)".into(),
            "main",
            Some("k4-small"),
            Some(Adm),
        );
        for &k in &exp.student_counts {
            row(
                format!("K = {k}, DM"),
                "students",
                Some(&format!("k{k}")),
                Some(Dm),
            );
        }
        for s in [Strategy::Contiguous, Strategy::Random, Strategy::Kmeans] {
            let r = if s == Strategy::Contiguous {
                "k4".to_string()
            } else {
                format!("k4-{}", partition_name(s))
            };
            row(
                format!("K = 4, {} partition, DM", partition_name(s)),
                "partition",
                Some(&r),
                Some(Dm),
            );
        }
    }
    if capacity {
        for &m in &exp.capacity_budgets {
            for &k in &exp.capacity_counts {
                let run = capacity_run(k, m);
                row(capacity_row(k, m), "capacity", Some(&run), Some(Adm));
            }
        }
    }
    for &k in &exp.equal_compute {
        if same {
            row(
                format!("{k} students, DM, N iterations each"),
                "compute",
                Some(&format!("k{k}")),
                Some(Dm),
            );
            row(
                format!("1 student, DM, {k}·N iterations"),
                "compute",
                Some(&format!("k1-x{k}")),
                Some(Dm),
            );
        }
        if capacity {
            row(
                format!("{k} capacity-bound students, N iterations each"),
                "compute",
                Some(&capacity_run(k, 1)),
                Some(Adm),
            );
            row(
                format!("1 capacity-bound student, {k}·N iterations"),
                "compute",
                Some(&capacity_run(1, k as u64)),
                Some(Adm),
            );
        }
    }
    if capacity {
        for &m in &exp.capacity_k1_budgets {
            let at = match m {
                1 => "N".to_string(),
                _ => format!("{m}·N"),
            };
            row(
                format!("1 capacity-bound student, {at} iterations"),
                "convergence",
                Some(&capacity_run(1, m)),
                Some(Adm),
            );
        }
    }
    if same && exp.controls {
        row(
            "1 student, DM continued for the ADM iterations".into(),
            "controls",
            Some("k1-dmx"),
            Some(Dm),
        );
        row(
            "4 students, DM continued for the ADM iterations".into(),
            "controls",
            Some("k4-dmx"),
            Some(Dm),
        );
        row(
            "4 students, DM, regression weight 0".into(),
            "controls",
            Some("k4-noreg"),
            Some(Dm),
        );
    }

    let mut claims = Vec::new();
    let mut claim = |question, claim: String, better: String, worse: String, paper| {
        claims.push(ClaimPlan {
            claim,
            question,
            better,
            worse,
            paper,
        })
    };
    if same {
        claim(
            'a',
            "4 same-size students beat 1 at equal per-student cost (DM → ADM)".into(),
            "4 students, DM → ADM".into(),
            "1 student, DM → ADM".into(),
            "1.20 vs DMD2 1.28",
        );
        claim(
            'a',
            "4 same-size students beat 1 at equal per-student cost (DM)".into(),
            "4 students, DM".into(),
            "1 student, DM".into(),
            "2.37 vs 2.60",
        );
        // The rest of the K sweep against K = 1 (K = 4 is asked above).
        for &k in exp.student_counts.iter().filter(|&&k| k > 1 && k != 4) {
            claim(
                'a',
                format!("{k} same-size students beat 1 at equal per-student cost (DM)"),
                format!("K = {k}, DM"),
                "1 student, DM".into(),
                match k {
                    2 => "2.49 vs 2.60",
                    8 => "2.32 vs 2.60",
                    _ => "",
                },
            );
        }
    }
    if capacity && exp.capacity_counts.contains(&1) {
        let kmax = exp.capacity_counts.iter().copied().max().unwrap_or(1);
        for &m in &exp.capacity_budgets {
            // The sweep's rows, then (at m = 1) the equal-compute rows for a K the sweep lacks:
            // those hold K capacity-bound students at N each too, the same comparison.
            let sweep = exp.capacity_counts.iter().map(|&k| (k, capacity_row(k, m)));
            let extra = exp
                .equal_compute
                .iter()
                .filter(|k| m == 1 && !exp.capacity_counts.contains(k))
                .map(|&k| (k, format!("{k} capacity-bound students, N iterations each")));
            let at = match m {
                1 => String::new(),
                _ => format!(", {m}·N iterations each"),
            };
            for (k, better) in sweep.chain(extra).filter(|&(k, _)| k > 1) {
                claim(
                    'a',
                    format!("{k} capacity-bound students beat 1 at equal per-student cost{at}"),
                    better,
                    capacity_row(1, m),
                    if k == kmax {
                        "K = 8: 2.32 vs K = 1: 2.60 (DM)"
                    } else {
                        ""
                    },
                );
            }
        }
    }
    for &k in &exp.equal_compute {
        if same {
            claim(
                'b',
                format!("{k} students beat 1 student with {k}× the iterations (DM)"),
                format!("{k} students, DM, N iterations each"),
                format!("1 student, DM, {k}·N iterations"),
                if k == 4 {
                    "4 × B=32 vs 1 × B=128"
                } else {
                    ""
                },
            );
        }
        if capacity {
            claim(
                'b',
                format!("{k} capacity-bound students beat 1 with {k}× the iterations"),
                format!("{k} capacity-bound students, N iterations each"),
                format!("1 capacity-bound student, {k}·N iterations"),
                "",
            );
        }
    }
    if same && exp.controls {
        claim(
            'c',
            "ADM beats DM continued for the same iterations (1 student)".into(),
            "1 student, DM → ADM".into(),
            "1 student, DM continued for the ADM iterations".into(),
            "",
        );
        claim(
            'c',
            "ADM beats DM continued for the same iterations (4 students)".into(),
            "4 students, DM → ADM".into(),
            "4 students, DM continued for the ADM iterations".into(),
            "",
        );
    }
    if same {
        claim(
            'd',
            "TSM initialisation helps smaller students".into(),
            "4 smaller students, TSM → DM → ADM".into(),
            "4 smaller students, DM → ADM (no TSM)".into(),
            "2.88 vs 11.67",
        );
        claim(
            'd',
            "same-size students beat smaller TSM students (the paper: close)".into(),
            "4 students, DM → ADM".into(),
            "4 smaller students, TSM → DM → ADM".into(),
            "1.20 vs 2.88",
        );
        claim(
            'e',
            "contiguous partition beats random".into(),
            "K = 4, contiguous partition, DM".into(),
            "K = 4, random partition, DM".into(),
            "2.37 vs 2.45",
        );
        claim(
            'e',
            "k-means partition beats random".into(),
            "K = 4, kmeans partition, DM".into(),
            "K = 4, random partition, DM".into(),
            "2.39 vs 2.45",
        );
    }
    if same && exp.controls {
        claim(
            'e',
            "the regression loss (weight 0.25) helps".into(),
            "4 students, DM".into(),
            "4 students, DM, regression weight 0".into(),
            "",
        );
    }
    Plan { runs, rows, claims }
}

/// The stages a row's students went through (up to and including its own).
pub fn stages_up_to(run: &RunPlan, stage: StageKind) -> Vec<StageKind> {
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

    fn config(counts: &[usize], capacity: bool) -> ExperimentConfig {
        let net: NetConfig =
            toml::from_str("kind = \"mlp\"\ndim = 2\nnum_classes = 10\nwidth = 8\ndepth = 1")
                .expect("net");
        ExperimentConfig {
            run: "r.toml".into(),
            teacher: "t".into(),
            classifier: "c".into(),
            n: 16,
            eval_batch: 8,
            eval_seed: 0,
            seeds: vec![0, 1, 2],
            student_counts: counts.to_vec(),
            small_net: Some(net.clone()),
            capacity_net: capacity.then_some(net),
            capacity_counts: vec![1, 2, 5, 10],
            capacity_budgets: vec![1],
            capacity_k1_budgets: vec![],
            same_size_rows: true,
            equal_compute: vec![4, 10],
            controls: true,
            latency_reps: 1,
            throughput_batch: 4,
            dropped: BTreeMap::new(),
        }
    }

    #[test]
    fn every_row_reads_a_planned_run_stage_and_runs_are_not_duplicated() {
        let p = plan(&config(&[1, 2, 5, 10], false));
        assert_eq!(p.rows.len(), 7 + 4 + 3 + 2 * 2 + 3);
        for r in &p.rows {
            if let Some(name) = &r.run {
                let run = p.run(name).expect(name);
                assert!(run.stages.contains(&r.stage.unwrap()), "{name}");
            }
        }
        let mut names: Vec<_> = p.runs.iter().map(|r| r.name.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), p.runs.len());
        // The same students behind "4 students, DM", the contiguous row and the equal-compute
        // row; with K = 4 in the ablation, that row joins them.
        let count = |p: &Plan, id: &str| p.rows.iter().filter(|r| r.eval_id() == id).count();
        assert_eq!(count(&p, "k4-dm"), 3);
        assert_eq!(count(&p, "k1-dm"), 2);
        let p8 = plan(&config(&[1, 2, 4, 8], false));
        assert_eq!(count(&p8, "k4-dm"), 4);
        assert!(p8.run("k5").is_none() && p8.run("k8").is_some());
        // k10 comes from the equal-compute comparison even without K = 10 in the ablation.
        assert!(p8.run("k10").is_some());
        let small = p.run("k4-small").unwrap();
        assert_eq!(
            stages_up_to(small, StageKind::Adm),
            vec![StageKind::Dm, StageKind::Adm]
        );
        assert_eq!(p.run("k1-x4").unwrap().budget, Budget::Times(4));
        assert_eq!(p.run("k4-noreg").unwrap().regression_weight, Some(0.0));
    }

    #[test]
    fn capacity_rows_and_every_claim_refer_to_planned_rows() {
        let p = plan(&config(&[1, 2, 5, 10], true));
        for k in [1, 2, 5, 10] {
            let r = p.run(&format!("c{k}")).unwrap();
            assert_eq!(r.size, Size::Capacity);
            assert_eq!(
                r.stages,
                vec![StageKind::Tsm, StageKind::Dm, StageKind::Adm]
            );
        }
        assert_eq!(p.run("c1-x10").unwrap().budget, Budget::Times(10));
        for c in &p.claims {
            assert!(p.row(&c.better).is_some(), "{}", c.better);
            assert!(p.row(&c.worse).is_some(), "{}", c.worse);
            assert_ne!(c.better, c.worse);
        }
        // K = 4 is not in the capacity sweep but its equal-compute row has 4 capacity-bound
        // students at N: it is asked against K = 1 too, once; K = 10 (in the sweep) is not
        // asked twice.
        let per_student = |k: usize| {
            let name = format!("{k} capacity-bound students beat 1 at equal per-student cost");
            p.claims.iter().filter(|c| c.claim == name).count()
        };
        assert_eq!((per_student(4), per_student(10)), (1, 1));
        // The same-size K sweep: every K > 1 against K = 1 once (K = 4 by its own claim).
        let same_size = |k: usize| {
            let name = format!("{k} same-size students beat 1 at equal per-student cost (DM)");
            p.claims.iter().filter(|c| c.claim == name).count()
        };
        assert_eq!([1, 2, 4, 5, 10].map(same_size), [0, 1, 1, 1, 1]);
        // Every question of the issue is asked.
        for q in ['a', 'b', 'c', 'd', 'e'] {
            assert!(p.claims.iter().any(|c| c.question == q), "{q}");
        }
        assert!(!plan(&config(&[1], false))
            .runs
            .iter()
            .any(|r| r.size == Size::Capacity));
    }

    #[test]
    fn a_capacity_sweep_at_a_longer_budget_shares_its_k1_run_with_equal_compute() {
        let mut exp = config(&[1, 2], true);
        exp.capacity_budgets = vec![1, 4];
        let p = plan(&exp);
        for k in [2, 5, 10] {
            let r = p.run(&format!("c{k}-x4")).unwrap();
            assert_eq!((r.students, r.budget), (k, Budget::Times(4)));
        }
        // K = 1 at 4N is the equal-compute run c1-x4, planned once and read by both rows.
        assert_eq!(p.runs.iter().filter(|r| r.name == "c1-x4").count(), 1);
        let reads = |row: &str| p.row(row).unwrap().eval_id();
        assert_eq!(
            reads("K = 1, capacity-bound students, 4·N iterations each"),
            reads("1 capacity-bound student, 4·N iterations")
        );
        // Each budget's K > 1 is asked against K = 1 at the same budget.
        let at4: Vec<_> = p
            .claims
            .iter()
            .filter(|c| c.claim.ends_with(", 4·N iterations each"))
            .collect();
        assert_eq!(at4.len(), 3);
        for c in at4 {
            assert_eq!(
                c.worse,
                "K = 1, capacity-bound students, 4·N iterations each"
            );
            assert!(p.row(&c.better).is_some(), "{}", c.better);
        }
        // The sweep at N keeps its names (and so its finished rows).
        assert_eq!(p.run("c2").unwrap().budget, Budget::Standard);
    }

    #[test]
    fn small_net_is_required_only_with_the_same_size_rows() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/experiment-mnist.toml"),
        )
        .expect("the shipped experiment config");
        let start = shipped.find("[small_net]").expect("a [small_net] table");
        let end = start
            + shipped[start..]
                .find("\n[capacity_net]")
                .expect("then [capacity_net]");
        let without = format!("{}{}", &shipped[..start], &shipped[end..]);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("exp.toml");
        std::fs::write(&path, &without).unwrap();
        let e = ExperimentConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("[small_net] is missing"), "{e}");
        std::fs::write(&path, format!("same_size_rows = false\n{without}")).unwrap();
        let c = ExperimentConfig::load(&path).expect("a capacity-only experiment");
        assert!(c.small_net.is_none() && c.capacity_net.is_some());
        std::fs::write(&path, &shipped).unwrap();
        assert!(ExperimentConfig::load(&path).unwrap().small_net.is_some());
    }

    #[test]
    fn dropped_runs_must_be_planned_and_say_why() {
        let shipped = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/experiment-mnist.toml"),
        )
        .expect("the shipped experiment config");
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("exp.toml");
        let with = |table: &str| {
            let body = match shipped.find("\n[dropped]") {
                Some(i) => &shipped[..i],
                None => &shipped[..],
            };
            std::fs::write(&path, format!("{body}\n[dropped]\n{table}\n")).unwrap();
            ExperimentConfig::load(&path)
        };
        let c = with("c5-x4 = \"2 core-hours per seed\"").expect("a planned run");
        assert_eq!(c.dropped["c5-x4"], "2 core-hours per seed");
        let e = with("c7-x4 = \"typo\"").unwrap_err().to_string();
        assert!(
            e.contains("[dropped] c7-x4: not a run") && e.contains("c5-x4"),
            "{e}"
        );
        let e = with("c5-x4 = \" \"").unwrap_err().to_string();
        assert!(e.contains("say why"), "{e}");
    }

    #[test]
    fn without_same_size_rows_only_the_teacher_and_capacity_rows_remain() {
        let mut exp = config(&[1, 2, 5, 10], true);
        exp.same_size_rows = false;
        exp.capacity_budgets = vec![4];
        exp.equal_compute = vec![];
        exp.capacity_k1_budgets = vec![1, 4, 10];
        let p = plan(&exp);
        // One student at N, 4N (the sweep's K = 1, planned once) and 10N; no K > 1 at N.
        let mut names: Vec<_> = p.runs.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["c1", "c1-x10", "c1-x4", "c10-x4", "c2-x4", "c5-x4"]);
        assert_eq!(
            p.row("1 capacity-bound student, 10·N iterations")
                .unwrap()
                .eval_id(),
            "c1-x10-adm"
        );
        assert!(p.runs.iter().all(|r| r.size == Size::Capacity));
        assert!(p
            .rows
            .iter()
            .all(|r| r.run.is_none() || ["capacity", "convergence"].contains(&r.section)));
        assert_eq!(p.rows.iter().filter(|r| r.run.is_none()).count(), 1);
        for c in &p.claims {
            assert!(p.row(&c.better).is_some(), "{}", c.better);
            assert!(p.row(&c.worse).is_some(), "{}", c.worse);
        }
        assert!(p.claims.iter().all(|c| c.question == 'a'));
    }
}
