//! The image reproduction's `report.json` and `report.md`: one entry per table row with every
//! figure as the mean over training seeds (FD also with its std and per-seed values), read from
//! `evals/<id>/s<seed>/{eval.json,row.json}` (rows not evaluated yet are pending — or dropped,
//! with the reason, when the config drops their run — rows missing some seeds partial), and the
//! claims (paper / ours / verdict) that compare rows.

use super::driver::{apply_budget, eval_dir, run_dir, ExperimentOptions, RowRecord};
use super::eval::EvalRecord;
use super::grad_share::{collect, GradShareSeries};
use super::plan::{partition_name, stages_up_to, Plan, RowPlan};
use super::stats::{fd_claim, Summary, Verdict};
use super::{Provenance, StageKind};
use crate::config::RunConfig;
use crate::nets::NetConfig;
use crate::train::checkpoint::{read_json, write_bytes_atomic, write_json_atomic};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether a row has results for every seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    Done,
    /// Some seeds are evaluated (the figures are over those).
    Partial,
    Pending,
    /// Not evaluated, and its run is dropped by the config (`[dropped]`).
    Dropped,
}

/// One row of `report.json`; figures are means over the evaluated seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportRow {
    pub name: String,
    pub section: String,
    /// The plan's run this row reads (`None` for the teacher); rows of one run and stage share
    /// their evaluation.
    #[serde(default)]
    pub run: Option<String>,
    /// The run's regression weight when it overrides the run config's (the ablation).
    #[serde(default)]
    pub regression_weight: Option<f64>,
    pub students: usize,
    /// `teacher`, `same`, `small` or `capacity`.
    pub size: String,
    pub stages: Vec<StageKind>,
    pub partition: String,
    pub status: RowStatus,
    /// Why the config drops this row's run (`[dropped]`), if it does.
    #[serde(default)]
    pub dropped: Option<String>,
    /// The seeds whose results the figures are over.
    pub seeds_done: Vec<u64>,
    /// Generator iterations per student (DM + ADM stages up to this row's) and the batch.
    pub iterations_per_student: u64,
    pub tsm_steps_per_student: u64,
    pub batch_per_student: usize,
    pub fd: Option<f64>,
    pub fd_std: Option<f64>,
    pub fd_per_seed: Vec<f64>,
    /// FD of the same samples scored on raw values (before 8-bit quantisation), mean over seeds.
    #[serde(default)]
    pub fd_raw: Option<f64>,
    pub kid: Option<f64>,
    /// KID's own estimator std (subsets), mean over seeds.
    pub kid_std: Option<f64>,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub class_accuracy: Option<f64>,
    pub per_class_accuracy: Vec<f64>,
    pub n: Option<usize>,
    pub floor_fd: Option<f64>,
    pub generation_seconds: Option<f64>,
    pub params_per_student: Option<i64>,
    pub latency_ms_b1: Option<f64>,
    pub images_per_s: Option<f64>,
    pub throughput_batch: usize,
    pub train_seconds: Option<f64>,
    /// The machine that wrote each evaluated seed's row (its timings), in the order of
    /// `seeds_done` (the teacher: one entry); `None` where the row predates the record.
    #[serde(default)]
    pub hardware_per_seed: Vec<Option<String>>,
    pub nfe: Option<usize>,
    pub timing_reps: Option<usize>,
    /// The first evaluated seed's bundle, evaluation and sample grid.
    pub bundle: Option<PathBuf>,
    pub eval: Option<PathBuf>,
    pub grid: Option<PathBuf>,
    /// The paper's figure for the row (ImageNet-64 FID).
    pub paper: String,
}

/// One claim: the paper's statement, its figures, ours (mean ± std) and the verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claim {
    pub claim: String,
    /// The question it answers (a: K vs 1 at equal per-student cost; b: equal total
    /// compute; c: ADM vs DM continued; d: smaller TSM students; e: partitions, regression).
    pub question: String,
    pub paper: String,
    pub ours: String,
    /// `None` while a side is not evaluated.
    pub verdict: Option<Verdict>,
    /// A side is not evaluated and its run is dropped by the config (`ours` names it).
    #[serde(default)]
    pub dropped: bool,
}

impl Claim {
    /// The verdict as the report spells it: `pending` or `dropped` while a side has no figure.
    pub fn verdict_str(&self) -> &'static str {
        match (self.verdict, self.dropped) {
            (Some(v), _) => v.as_str(),
            (None, true) => "dropped",
            (None, false) => "pending",
        }
    }
}

/// One line: the question, the claim, our figure and the verdict (`pending` or `dropped` while a
/// side is not evaluated).
impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "({}) {}: {} → {}",
            self.question,
            self.claim,
            self.ours,
            self.verdict_str()
        )
    }
}

/// Model sizes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sizes {
    pub teacher_params: i64,
    pub small_params: Option<i64>,
    pub capacity_params: Option<i64>,
    pub teacher_net: NetConfig,
    pub small_net: Option<NetConfig>,
    pub capacity_net: Option<NetConfig>,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExperimentReport {
    pub experiment: PathBuf,
    pub run_config: PathBuf,
    pub provenance: Provenance,
    pub seeds: Vec<u64>,
    /// Samples per evaluation, its first noise seed and batch (the same for every seed).
    pub n: usize,
    pub eval_seed: u64,
    pub eval_batch: usize,
    pub feature_net: PathBuf,
    pub sizes: Sizes,
    /// The run config's per-student budgets (rows may scale them; see each row).
    pub dm_iterations: u64,
    pub adm_iterations: u64,
    pub tsm_steps: u64,
    pub batch: usize,
    pub ttur: u64,
    pub sampler_steps: usize,
    pub guidance: f64,
    pub real_guidance: f64,
    /// The run config's optimisation preset and its settings
    /// ([`crate::distill::preset::describe`]); every row uses it (rows differ only where their
    /// table says: students, sizes, budgets, regression weight).
    #[serde(default)]
    pub preset: String,
    pub rows: Vec<ReportRow>,
    pub claims: Vec<Claim>,
    /// The regression term's share of the generator's gradient over DM training, per run with
    /// a regression term (mean ± std over seeds).
    #[serde(default)]
    pub grad_share: Vec<GradShareSeries>,
    /// Rows with results for every seed, of all rows.
    pub rows_done: usize,
}

/// The paper's figure for a row (ImageNet-64 FID), for the table's last column.
fn paper(row: &RowPlan) -> &'static str {
    match (row.section, row.name.as_str()) {
        ("main", "1 student, DM → ADM") => "DMD2 1.28",
        ("main", "4 students, DM") => "2.37",
        ("main", "4 students, DM → ADM") => "1.20",
        ("main", "4 smaller students, TSM → DM → ADM") => "2.88",
        ("main", "4 smaller students, DM → ADM (no TSM)") => "11.67",
        ("students", "K = 1, DM") => "2.60",
        ("students", "K = 2, DM") => "2.49",
        ("students", "K = 4, DM") => "2.37",
        ("students", "K = 5, DM") => "K = 4: 2.37",
        ("students", "K = 8, DM") => "2.32",
        ("students", "K = 10, DM") => "K = 8: 2.32",
        ("partition", "K = 4, contiguous partition, DM") => "2.37",
        ("partition", "K = 4, random partition, DM") => "2.45",
        ("partition", "K = 4, kmeans partition, DM") => "2.39",
        _ => "",
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Reads every row's results and writes both reports.
pub(crate) fn write_report(
    o: &ExperimentOptions,
    base: &RunConfig,
    plan: &Plan,
    seeds: &[u64],
    small_params: Option<i64>,
    capacity_params: Option<i64>,
    teacher_params: i64,
) -> Result<ExperimentReport> {
    let exp = &o.exp;
    let mut rows = Vec::new();
    for row in &plan.rows {
        let id = row.eval_id();
        let run = row.run.as_ref().and_then(|n| plan.run(n));
        let (students, size, stages, partition) = match run {
            None => (1, "teacher".to_string(), vec![], "none".to_string()),
            Some(r) => (
                r.students,
                r.size.as_str().to_string(),
                row.stage.map(|s| stages_up_to(r, s)).unwrap_or_default(),
                partition_name(r.partition).to_string(),
            ),
        };
        let mut cfg = base.clone();
        if let Some(r) = run {
            apply_budget(&mut cfg, r);
        }
        let d = &cfg.distill;
        let iterations: u64 = stages
            .iter()
            .map(|s| match s {
                StageKind::Dm => d.iterations,
                StageKind::Adm => d.adm.iterations,
                StageKind::Cd => d.cd.iterations,
                StageKind::Tsm => 0,
            })
            .sum();
        // The teacher row has no training seed: one evaluation.
        let dirs: Vec<(Option<u64>, PathBuf)> = match run {
            None => vec![(None, eval_dir(&o.out, &id, None))],
            Some(_) => seeds
                .iter()
                .map(|&s| (Some(s), eval_dir(&o.out, &id, Some(s))))
                .collect(),
        };
        let mut found: Vec<(Option<u64>, PathBuf, EvalRecord, RowRecord)> = Vec::new();
        for (s, dir) in dirs.iter() {
            if let (Ok(e), Ok(r)) = (
                read_json::<EvalRecord>(&dir.join("eval.json")),
                read_json::<RowRecord>(&dir.join("row.json")),
            ) {
                found.push((*s, dir.clone(), e, r));
            }
        }
        let dropped = row.run.as_ref().and_then(|n| exp.dropped.get(n)).cloned();
        let status = if found.is_empty() {
            if dropped.is_some() {
                RowStatus::Dropped
            } else {
                RowStatus::Pending
            }
        } else if found.len() == dirs.len() {
            RowStatus::Done
        } else {
            RowStatus::Partial
        };
        let col = |f: &dyn Fn(&EvalRecord, &RowRecord) -> Option<f64>| -> Option<f64> {
            mean(
                &found
                    .iter()
                    .filter_map(|(_, _, e, r)| f(e, r))
                    .collect::<Vec<_>>(),
            )
        };
        let fd = Summary::of(&found.iter().map(|x| x.2.fd).collect::<Vec<_>>());
        let classes = found.first().map_or(0, |x| x.2.per_class_accuracy.len());
        let first = found.first();
        rows.push(ReportRow {
            name: row.name.clone(),
            section: row.section.to_string(),
            run: row.run.clone(),
            regression_weight: run.and_then(|r| r.regression_weight),
            students,
            size,
            stages,
            partition,
            status,
            dropped,
            seeds_done: found.iter().filter_map(|x| x.0).collect(),
            iterations_per_student: iterations,
            tsm_steps_per_student: if run.is_some_and(|r| r.stages.contains(&StageKind::Tsm)) {
                d.tsm.steps
            } else {
                0
            },
            batch_per_student: d.batch_size,
            fd: (!found.is_empty()).then_some(fd.mean),
            fd_std: (!found.is_empty()).then_some(fd.std),
            fd_per_seed: fd.per_seed,
            fd_raw: col(&|e, _| e.fd_raw),
            kid: col(&|e, _| Some(e.kid)),
            kid_std: col(&|e, _| Some(e.kid_std)),
            precision: col(&|e, _| Some(e.precision)),
            recall: col(&|e, _| Some(e.recall)),
            class_accuracy: col(&|e, _| Some(e.class_accuracy)),
            per_class_accuracy: (0..classes)
                .filter_map(|c| {
                    mean(
                        &found
                            .iter()
                            .filter_map(|x| x.2.per_class_accuracy.get(c).copied())
                            .collect::<Vec<_>>(),
                    )
                })
                .collect(),
            n: first.map(|x| x.2.n),
            floor_fd: first.map(|x| x.2.floor_fd),
            generation_seconds: col(&|e, _| Some(e.generation_seconds)),
            params_per_student: first.map(|x| x.3.params_per_student),
            latency_ms_b1: col(&|_, r| Some(r.latency_ms_b1)),
            images_per_s: col(&|_, r| Some(r.images_per_s)),
            throughput_batch: exp.throughput_batch,
            train_seconds: col(&|_, r| r.train_seconds),
            hardware_per_seed: found.iter().map(|x| x.3.hardware.clone()).collect(),
            nfe: first.map(|x| x.3.nfe),
            timing_reps: first.map(|x| x.3.timing_reps),
            bundle: first.and_then(|x| x.3.bundle.clone()),
            eval: first.map(|x| x.1.join("eval.json")),
            grid: first.map(|x| x.1.join("samples.png")),
            paper: paper(row).to_string(),
        });
    }
    let by_name = |name: &str| rows.iter().find(|r| r.name == name);
    let summary = |name: &str| -> Option<Summary> {
        let r = by_name(name)?;
        r.fd.map(|_| Summary::of(&r.fd_per_seed))
    };
    let claims = plan
        .claims
        .iter()
        .map(|c| {
            let (b, w) = (summary(&c.better), summary(&c.worse));
            let (mut ours, verdict) = fd_claim(b.as_ref(), w.as_ref());
            // A side without figures whose run is dropped: the claim is dropped, not pending.
            let dropped: Vec<&str> = [&c.better, &c.worse]
                .into_iter()
                .filter_map(|n| by_name(n))
                .filter(|r| r.status == RowStatus::Dropped)
                .filter_map(|r| r.run.as_deref())
                .collect();
            if verdict.is_none() && !dropped.is_empty() {
                ours = format!("dropped ({})", dropped.join(", "));
            }
            Claim {
                claim: c.claim.clone(),
                question: c.question.to_string(),
                paper: c.paper.to_string(),
                ours,
                verdict,
                dropped: verdict.is_none() && !dropped.is_empty(),
            }
        })
        .collect();
    // The series of the report being replaced: kept whole for runs whose seeds left no file.
    let previous: Option<ExperimentReport> = read_json(&o.out.join("report.json")).ok();
    let mut grad_share = Vec::new();
    for r in plan
        .runs
        .iter()
        .filter(|r| r.stages.contains(&StageKind::Dm))
    {
        let weight = r
            .regression_weight
            .unwrap_or(base.distill.regression_weight);
        let before = previous
            .as_ref()
            .and_then(|p| p.grad_share.iter().find(|g| g.run == r.name));
        let dir = |s: u64| run_dir(&o.out, &r.name, s);
        if let Some(g) = collect(&o.out, &r.name, r.students, weight, seeds, dir, before)? {
            grad_share.push(g);
        }
    }
    let d = &base.distill;
    let report = ExperimentReport {
        experiment: o.config_path.clone(),
        run_config: exp.run.clone(),
        provenance: o.provenance.clone(),
        seeds: seeds.to_vec(),
        n: exp.n,
        eval_seed: exp.eval_seed,
        eval_batch: exp.eval_batch,
        feature_net: exp.classifier.clone(),
        sizes: Sizes {
            teacher_params,
            small_params,
            capacity_params,
            teacher_net: base.model.net.clone(),
            small_net: exp.small_net.clone(),
            capacity_net: exp.capacity_net.clone(),
        },
        dm_iterations: d.iterations,
        adm_iterations: d.adm.iterations,
        tsm_steps: d.tsm.steps,
        batch: d.batch_size,
        ttur: d.ttur,
        sampler_steps: base.sampler.steps,
        guidance: base.sampler.guidance,
        real_guidance: d.real_guidance,
        preset: crate::distill::preset::describe(d),
        rows_done: rows.iter().filter(|r| r.status == RowStatus::Done).count(),
        rows,
        claims,
        grad_share,
    };
    write_report_files(&o.out, &report, &markdown(&report, &o.out))?;
    Ok(report)
}

/// Writes `out/report.json` (from `report`) and `out/report.md` (`markdown`), each atomically.
pub(crate) fn write_report_files<T: Serialize>(
    out: &Path,
    report: &T,
    markdown: &str,
) -> Result<()> {
    write_json_atomic(&out.join("report.json"), report)?;
    write_bytes_atomic(&out.join("report.md"), markdown.as_bytes())
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn stages(v: &ReportRow) -> String {
    if v.stages.is_empty() {
        "Heun".into()
    } else {
        v.stages
            .iter()
            .map(|s| s.name().to_uppercase())
            .collect::<Vec<_>>()
            .join(" → ")
    }
}

/// Which machine timed which rows (ms/image, images/s, train s): evaluated rows grouped by the
/// machine their `row.json` records (a row split over machines names its seeds in each group);
/// rows made before the machine was recorded are counted apart.
fn hardware_note(rows: &[ReportRow]) -> String {
    let mut by: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
    for v in rows.iter().filter(|v| v.fd.is_some()) {
        let mut groups: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
        for (i, h) in v.hardware_per_seed.iter().enumerate() {
            let seed = v
                .seeds_done
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_default();
            groups.entry(h.as_deref()).or_default().push(seed);
        }
        for (h, seeds) in groups {
            let label = if seeds.len() == v.hardware_per_seed.len() {
                v.name.clone()
            } else {
                format!("{} (seeds {})", v.name, seeds.join(", "))
            };
            by.entry(h).or_default().push(label);
        }
    }
    if by.keys().all(Option::is_none) {
        return String::new();
    }
    let mut md =
        "Timings (ms/image, images/s, train s) by the machine that wrote each row:\n\n".to_string();
    for (h, labels) in by.iter().filter(|(h, _)| h.is_some()) {
        md.push_str(&format!(
            "- {}: {}\n",
            h.unwrap_or_default(),
            labels.join("; ")
        ));
    }
    if let Some(old) = by.get(&None) {
        md.push_str(&format!(
            "- not recorded (written before the machine was): the other {} rows or seeds\n",
            old.len()
        ));
    }
    md.push('\n');
    md
}

/// The `iters/student` cell: generator iterations (DM + ADM), and the TSM steps where the row's
/// students start from TSM ("600 + 300 TSM").
fn iterations(v: &ReportRow) -> String {
    match v.tsm_steps_per_student {
        0 => v.iterations_per_student.to_string(),
        t => format!("{} + {t} TSM", v.iterations_per_student),
    }
}

/// `report.md` of `r`, which is written into `out` (links are relative to it).
fn markdown(r: &ExperimentReport, out: &Path) -> String {
    let seeds: Vec<String> = r.seeds.iter().map(|s| s.to_string()).collect();
    let mut md = format!(
        "# MSD reproduction on MNIST-10k\n\n\
Generated by `{}` (commit `{}`). Hardware: {}. Training seeds {} (every student figure is the mean \
over them; FD as mean ± sample std, per-seed values in `report.json`); the evaluation noise is the \
same for every seed. Every row: {} samples (balanced over the classes, noise seeds from {} in \
batches of {}), scored by the project's own CNN classifier `{}` (penultimate-layer features; not \
Inception, so FD/KID are not comparable with published FID). Students: 1 network evaluation per \
sample from the student that owns its class; teacher: Heun-{} with classifier-free guidance {} (the \
students' real score uses guidance {}).\n\n\
Per-student budgets of the run config: DM {} iterations, ADM {} iterations, TSM {} steps, batch {}, \
TTUR {}; rows marked `·N` scale them (column `iters/student`). Sizes: teacher and same-size \
students {} parameters; smaller students {}; capacity-bound students {}.\n\n\
Optimisation preset of every row (`{}`; the regression weight of a row may differ, see its \
table): {}.\n\n",
        r.provenance.command,
        r.provenance.commit,
        r.provenance.hardware,
        seeds.join(", "),
        r.n,
        r.eval_seed,
        r.eval_batch,
        r.feature_net.display(),
        r.sampler_steps,
        r.guidance,
        r.real_guidance,
        r.dm_iterations,
        r.adm_iterations,
        r.tsm_steps,
        r.batch,
        r.ttur,
        r.sizes.teacher_params,
        r.sizes.small_params.map_or("—".to_string(), |p| p.to_string()),
        r.sizes
            .capacity_params
            .map_or("—".to_string(), |p| p.to_string()),
        r.run_config.display(),
        r.preset,
    );
    md.push_str("## Claims\n\n| question | claim | paper (ImageNet-64 FID) | ours (FD) | verdict |\n|---|---|---|---|---|\n");
    for c in &r.claims {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            c.question,
            c.claim,
            c.paper,
            c.ours,
            c.verdict_str()
        ));
    }
    md.push_str("\nVerdict: `held` only when the intervals mean ± std over seeds do not overlap in the claimed direction, `reversed` when they separate the other way, else `within noise`; `pending` with fewer than 3 seeds on a side or a row not yet evaluated; `dropped` when a side's run is left out on purpose (see *Dropped runs*).\n\n");
    // The dropped rows' runs, once each (a dropped run trained anyway with --only has figures
    // and is a row like any other).
    let unrun: BTreeMap<&str, &str> = r
        .rows
        .iter()
        .filter(|v| v.status == RowStatus::Dropped)
        .filter_map(|v| Some((v.run.as_deref()?, v.dropped.as_deref()?)))
        .collect();
    if !unrun.is_empty() {
        md.push_str(
            "## Dropped runs\n\nPlanned, not run (the config's `[dropped]`; `--only RUN` still \
             trains one):\n\n| run | why |\n|---|---|\n",
        );
        for (run, why) in unrun {
            md.push_str(&format!("| {run} | {why} |\n"));
        }
        md.push('\n');
    }
    let mut floor = None;
    for (section, title) in [
        ("main", "Main table"),
        ("students", "Number of students (same size, DM)"),
        ("partition", "Partition strategy (K = 4, DM)"),
        ("capacity", "Capacity-bound students (TSM → DM → ADM)"),
        ("compute", "Equal total compute"),
        ("convergence", "One capacity-bound student, longer training"),
        ("controls", "Controls"),
    ] {
        if !r.rows.iter().any(|v| v.section == section) {
            continue;
        }
        md.push_str(&format!(
            "## {title}\n\n| row | K | size | stages | iters/student | seeds | FD | FD raw | KID | precision | recall | class acc. | params/student | ms/image b1 | images/s b{} | train s | paper | grid |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            r.rows.first().map_or(0, |v| v.throughput_batch)
        ));
        for v in r.rows.iter().filter(|v| v.section == section) {
            floor = floor.or(v.floor_fd);
            let fd =
                v.fd.map(|_| Summary::of(&v.fd_per_seed).show(3))
                    .unwrap_or_else(|| {
                        match v.status {
                            RowStatus::Dropped => "dropped",
                            _ => "pending",
                        }
                        .into()
                    });
            let grid = v
                .grid
                .as_ref()
                .map(|g| format!("[png]({})", g.strip_prefix(out).unwrap_or(g).display()))
                .unwrap_or_default();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v.name,
                v.students,
                v.size,
                stages(v),
                iterations(v),
                v.seeds_done.len(),
                fd,
                num(v.fd_raw, 3),
                num(v.kid, 4),
                num(v.precision, 3),
                num(v.recall, 3),
                num(v.class_accuracy.map(|x| 100.0 * x), 2),
                v.params_per_student.map_or("—".into(), |p| p.to_string()),
                num(v.latency_ms_b1, 2),
                num(v.images_per_s, 1),
                num(v.train_seconds, 0),
                v.paper,
                grid
            ));
        }
        md.push('\n');
    }
    if let Some(f) = floor {
        md.push_str(&format!(
            "Floor: the held-out real images against the training split give FD {f:.3}.\n\n"
        ));
    }
    md.push_str(&hardware_note(&r.rows));
    if !r.grad_share.is_empty() {
        md.push_str("## The regression term's share of the generator's gradient (DM stage)\n\n`reg_grad_share` = ‖∇ w·regression‖ / (‖∇ w·regression‖ + ‖∇ DM‖) over the generator's parameters, logged at the first generator step of every log window, averaged over a run's students, then mean ± std over seeds (`grad_share.png`: the share against DM iterations, one line per run in the order of this table, colours of the class palette 0, 1, 2, …).\n\n| run | K | regression weight | seeds | share over training | first logged | last logged |\n|---|---|---|---|---|---|---|\n");
        for g in &r.grad_share {
            let at = |i: usize| {
                format!(
                    "{:.3} ± {:.3} (it. {})",
                    g.share[i], g.share_std[i], g.steps[i]
                )
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                g.run,
                g.students,
                g.regression_weight,
                g.seeds.len(),
                Summary::of(&g.mean_per_seed).show(3),
                if g.steps.is_empty() {
                    "—".into()
                } else {
                    at(0)
                },
                if g.steps.is_empty() {
                    "—".into()
                } else {
                    at(g.steps.len() - 1)
                },
            ));
        }
        md.push('\n');
    }
    md.push_str("Columns: iters/student = generator iterations per student (DM + ADM; `+ n TSM` = the TSM steps that initialise it); FD and KID on the classifier's features against the training split (means over the evaluated seeds; `seeds` = how many), every generated set scored as 8-bit images; FD raw = the same samples scored on their raw values, as reports before quantisation did (the difference is what 8-bit scoring changed); precision/recall k-NN (k = 3); class acc. = share of samples the classifier assigns to the requested class; ms/image b1 = median latency of one image (routing included; the teacher runs its full Heun sampler); train s = summed training-loop seconds of all the row's students and stages, mean over seeds. Rows that share a run and stage share one evaluation per seed. `fd_vs_k.png`: FD against K per student size (± std); `fd_vs_iterations.png`: the K = 1 capacity-bound student's FD against its iterations.\n");
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An evaluated row `name` whose seeds 0.. were written on the machines `hardware`.
    fn row(name: &str, hardware: &[Option<&str>]) -> ReportRow {
        serde_json::from_value(serde_json::json!({
            "name": name, "section": "students", "students": 1, "size": "same",
            "stages": ["dm"], "partition": "contiguous", "status": "done",
            "seeds_done": (0..hardware.len()).collect::<Vec<_>>(),
            "iterations_per_student": 400, "tsm_steps_per_student": 0, "batch_per_student": 8,
            "fd": 1.0, "fd_per_seed": [], "per_class_accuracy": [], "throughput_batch": 1,
            "paper": "", "hardware_per_seed": hardware,
        }))
        .unwrap()
    }

    #[test]
    fn the_hardware_note_names_the_machine_of_every_row_and_split_rows_by_seed() {
        let (zen3, avx512) = (Some("EPYC (AVX2), 1"), Some("EPYC (AVX-512), 1"));
        let mut pending = row("pending", &[]);
        pending.fd = None;
        let rows = [
            row("a", &[zen3, zen3]),
            row("b", &[None, avx512, avx512]),
            row("c", &[None]),
            pending,
        ];
        let md = hardware_note(&rows);
        assert!(md.contains("- EPYC (AVX2), 1: a\n"), "{md}");
        assert!(md.contains("- EPYC (AVX-512), 1: b (seeds 1, 2)\n"), "{md}");
        assert!(md.contains("the other 2 rows or seeds"), "{md}");
        // Nothing recorded anywhere: no note (old reports read as before).
        assert_eq!(hardware_note(&[row("c", &[None])]), "");
    }
}
