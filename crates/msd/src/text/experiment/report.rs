//! The text experiment's `report.json` and `report.md`: one entry per row with every figure as
//! mean ± std over the evaluated training seeds (per-seed values kept), read from
//! `evals/<id>/s<seed>/eval.json` (the teacher's from `evals/teacher/`; rows not evaluated yet are
//! pending, rows missing some seeds partial), the FD per reference group with its floor, the
//! partition sizes of both strategies per seed, and the claims with the project's verdicts
//! ([`crate::experiment::stats::verdict_lower`]: `pending` below three seeds).

use super::driver::{budgeted_base, TextExperimentOptions};
use super::eval::TextEvalRecord;
use super::group_fd::GroupFd;
use super::{TextPlan, TextRowPlan};
use crate::experiment::driver::eval_dir;
use crate::experiment::report::{write_report_files, RowStatus};
use crate::experiment::stats::{fd_claim, Summary, Verdict, MIN_SEEDS};
use crate::experiment::{Provenance, StageKind};
use crate::text::prompt_eval::ScoreSummary;
use crate::train::checkpoint::read_json;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The FD of one reference group (or overall) over seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupRow {
    /// `None`: all samples against all training images.
    pub group: Option<usize>,
    /// FD at the matched n (generated vs the group's training images), over seeds.
    pub fd: Option<Summary>,
    /// FD of all the group's generated samples, over seeds.
    pub fd_all: Option<Summary>,
    /// Held-out real images vs the group's training images at the same n (the floor; it does
    /// not depend on the seed).
    pub floor: Option<f64>,
    /// Samples per side of the matched comparison, generated samples, held-out and training
    /// images in the group, evaluation prompts in the group (first evaluated seed).
    pub n: usize,
    pub generated: usize,
    pub heldout: usize,
    pub train: usize,
    pub prompts: Option<usize>,
}

/// One row of `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TextReportRow {
    pub name: String,
    pub run: Option<String>,
    pub stage: Option<StageKind>,
    pub students: usize,
    /// `none` (teacher), `kmeans` or `quadrants`.
    pub partition: String,
    pub status: RowStatus,
    pub seeds_done: Vec<u64>,
    pub nfe: Option<usize>,
    pub params_per_student: Option<i64>,
    pub prompts: Option<usize>,
    pub samples_per_prompt: Option<usize>,
    pub samples: Option<usize>,
    /// Overall first, then one per reference group.
    pub fd: Vec<GroupRow>,
    /// Digit accuracy and attribute agreement over all, seen-template and held-out-template
    /// prompts, over seeds.
    pub digit_all: Option<Summary>,
    pub digit_seen: Option<Summary>,
    pub digit_heldout: Option<Summary>,
    pub thickness: Option<Summary>,
    pub slant: Option<Summary>,
    pub size: Option<Summary>,
    /// Per evaluated seed: evaluation prompts per student, training captions per student.
    pub prompts_per_student: Vec<Vec<usize>>,
    pub partition_sizes: Vec<Vec<usize>>,
    /// Means over seeds.
    pub train_seconds: Option<f64>,
    pub generation_seconds: Option<f64>,
    /// The first evaluated seed's evaluation and grid.
    pub eval: Option<PathBuf>,
    pub grid: Option<PathBuf>,
}

/// One claim: ours (mean ± std) and the verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TextClaim {
    pub claim: String,
    pub better: String,
    pub worse: String,
    pub group: Option<usize>,
    pub ours: String,
    /// `None` while a side is not evaluated; `pending` below three seeds.
    pub verdict: Option<Verdict>,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TextReport {
    pub experiment: PathBuf,
    pub run_config: PathBuf,
    pub teacher: PathBuf,
    pub provenance: Provenance,
    pub seeds: Vec<u64>,
    pub feature_net: PathBuf,
    /// Always states that FDs use the project's MNIST CNN classifier, not Inception.
    pub feature_note: String,
    pub students: usize,
    pub dm_iterations: u64,
    pub adm_iterations: u64,
    pub batch: usize,
    pub sampler_steps: usize,
    pub guidance: f64,
    pub real_guidance: f64,
    pub prompts_per_digit: usize,
    pub samples_per_prompt: usize,
    pub rows: Vec<TextReportRow>,
    pub claims: Vec<TextClaim>,
    pub rows_done: usize,
}

/// The note every FD line carries.
pub const FEATURE_NOTE: &str = "FD on the penultimate features of the project's MNIST CNN \
classifier (128-d), not Inception FID: comparable between rows of this report only";

fn summary(v: Vec<f64>) -> Option<Summary> {
    (!v.is_empty()).then(|| Summary::of(&v))
}

fn pick(s: &[ScoreSummary], name: &str, f: fn(&ScoreSummary) -> Option<f64>) -> Option<f64> {
    s.iter().find(|x| x.name == name).and_then(f)
}

/// Reads one row's evaluations over `seeds`.
fn row(
    o: &TextExperimentOptions,
    plan: &TextPlan,
    r: &TextRowPlan,
    seeds: &[u64],
) -> TextReportRow {
    let run = r.run.as_ref().and_then(|n| plan.run(n));
    let dirs: Vec<(Option<u64>, PathBuf)> = match run {
        None => vec![(None, eval_dir(&o.out, "teacher", None))],
        Some(_) => seeds
            .iter()
            .map(|&s| (Some(s), eval_dir(&o.out, &r.eval_id(), Some(s))))
            .collect(),
    };
    let found: Vec<(Option<u64>, PathBuf, TextEvalRecord)> = dirs
        .iter()
        .filter_map(|(s, d)| {
            read_json::<TextEvalRecord>(&d.join("eval.json"))
                .ok()
                .map(|e| (*s, d.clone(), e))
        })
        .collect();
    let status = if found.is_empty() {
        RowStatus::Pending
    } else if found.len() == dirs.len() {
        RowStatus::Done
    } else {
        RowStatus::Partial
    };
    let col = |f: &dyn Fn(&TextEvalRecord) -> Option<f64>| -> Option<Summary> {
        summary(found.iter().filter_map(|x| f(&x.2)).collect())
    };
    let first = found.first().map(|x| &x.2);
    let groups = first.map_or(0, |e| e.fd.len());
    let fd = (0..groups)
        .map(|i| {
            let at = |e: &TextEvalRecord| e.fd.get(i).cloned();
            let g: GroupFd = first.and_then(at).expect("i < groups of the first record");
            GroupRow {
                group: g.group,
                fd: col(&|e| at(e).and_then(|g| g.fd)),
                fd_all: col(&|e| at(e).and_then(|g| g.fd_all)),
                floor: g.floor,
                n: g.n,
                generated: g.generated,
                heldout: g.heldout,
                train: g.train,
                prompts: match g.group {
                    None => first.map(|e| e.prompts),
                    Some(k) => first.and_then(|e| e.prompts_per_group.get(k).copied()),
                },
            }
        })
        .collect();
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    TextReportRow {
        name: r.name.clone(),
        run: r.run.clone(),
        stage: r.stage,
        students: run.map_or(1, |x| x.students),
        partition: run.map_or("none".into(), |x| {
            crate::experiment::plan::partition_name(x.partition).into()
        }),
        status,
        seeds_done: found.iter().filter_map(|x| x.0).collect(),
        nfe: first.map(|e| e.nfe),
        params_per_student: first.map(|e| e.params_per_student),
        prompts: first.map(|e| e.prompts),
        samples_per_prompt: first.map(|e| e.samples_per_prompt),
        samples: first.map(|e| e.samples),
        fd,
        digit_all: col(&|e| pick(&e.summaries, "all prompts", |s| s.digit_accuracy)),
        digit_seen: col(&|e| pick(&e.summaries, "training templates", |s| s.digit_accuracy)),
        digit_heldout: col(&|e| pick(&e.summaries, "held-out templates", |s| s.digit_accuracy)),
        thickness: col(&|e| pick(&e.summaries, "all prompts", |s| s.thickness)),
        slant: col(&|e| pick(&e.summaries, "all prompts", |s| s.slant)),
        size: col(&|e| pick(&e.summaries, "all prompts", |s| s.size)),
        prompts_per_student: found
            .iter()
            .map(|x| x.2.prompts_per_student.clone())
            .collect(),
        partition_sizes: found.iter().map(|x| x.2.partition_sizes.clone()).collect(),
        train_seconds: mean(found.iter().filter_map(|x| x.2.train_seconds).collect()),
        generation_seconds: mean(found.iter().map(|x| x.2.generation_seconds).collect()),
        eval: found.first().map(|x| x.1.join("eval.json")),
        grid: found.first().map(|x| x.1.join("prompts.png")),
    }
}

/// Reads every row's results and writes both reports.
pub(crate) fn write_report(
    o: &TextExperimentOptions,
    plan: &TextPlan,
    seeds: &[u64],
) -> Result<TextReport> {
    let exp = &o.exp;
    let base = budgeted_base(exp)?;
    let rows: Vec<TextReportRow> = plan.rows.iter().map(|r| row(o, plan, r, seeds)).collect();
    let fd_of = |name: &str, group: Option<usize>| -> Option<Summary> {
        let r = rows.iter().find(|r| r.name == name)?;
        r.fd.iter().find(|g| g.group == group)?.fd.clone()
    };
    let claims = plan
        .claims
        .iter()
        .map(|c| {
            let (b, w) = (fd_of(&c.better, c.group), fd_of(&c.worse, c.group));
            let (ours, verdict) = fd_claim(b.as_ref(), w.as_ref());
            TextClaim {
                claim: c.claim.clone(),
                better: c.better.clone(),
                worse: c.worse.clone(),
                group: c.group,
                ours,
                verdict,
            }
        })
        .collect();
    let d = &base.distill;
    let report = TextReport {
        experiment: o.config_path.clone(),
        run_config: exp.run.clone(),
        teacher: exp.teacher.clone(),
        provenance: o.provenance.clone(),
        seeds: seeds.to_vec(),
        feature_net: exp.classifier.clone(),
        feature_note: FEATURE_NOTE.into(),
        students: exp.students,
        dm_iterations: d.iterations,
        adm_iterations: d.adm.iterations,
        batch: d.batch_size,
        sampler_steps: base.sampler.steps,
        guidance: base.sampler.guidance,
        real_guidance: d.real_guidance,
        prompts_per_digit: exp.prompts_per_digit,
        samples_per_prompt: exp.samples_per_prompt,
        rows_done: rows.iter().filter(|r| r.status == RowStatus::Done).count(),
        rows,
        claims,
    };
    write_report_files(&o.out, &report, &markdown(&report, &o.out))?;
    Ok(report)
}

/// `mean ± std` over seeds; the teacher's single evaluation (no training seed) as a plain value.
fn show_for(s: &Option<Summary>, digits: usize, teacher: bool) -> String {
    match s {
        None => "—".into(),
        Some(s) if teacher => format!("{:.digits$}", s.mean),
        Some(s) => s.show(digits),
    }
}

fn pct_for(s: &Option<Summary>, teacher: bool) -> String {
    let scaled = s
        .as_ref()
        .map(|s| Summary::of(&s.per_seed.iter().map(|v| 100.0 * v).collect::<Vec<_>>()));
    show_for(&scaled, 1, teacher)
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn stages(r: &TextReportRow) -> String {
    match r.stage {
        None => "Heun".into(),
        Some(StageKind::Dm) => "DM".into(),
        Some(_) => "DM → ADM".into(),
    }
}

/// The report as Markdown; links are relative to `out` (where report.md lives).
fn markdown(r: &TextReport, out: &std::path::Path) -> String {
    let seeds: Vec<String> = r.seeds.iter().map(|s| s.to_string()).collect();
    let first = r.rows.iter().find(|v| v.samples.is_some());
    let mut md = format!(
        "# Text prompts on MNIST-10k: teacher vs 1 student vs {k} students\n\n\
Generated by `{cmd}` (commit `{commit}`). Machine: {hw} — shared; timings are wall-clock under \
that load. Training seeds {seeds} (student figures are mean ± sample std over the evaluated \
seeds, per-seed values in `report.json`; `(1 seed)` where only one is in); the teacher is shared \
(`{teacher}`) and evaluated once. Every row: {prompts} prompts (the standard prompt set, \
{ppd} level combinations per digit, each worded once by a training and once by a held-out \
template) × {spp} samples = {samples} samples, prompt i's noise seeded by i (the same for every \
row and seed), scored as 8-bit images.\n\n\
**{note}.** FD is reported at a matched n: the generated samples (an evenly strided subset) and \
the held-out real images (the floor) are each compared with the training images at the same n, \
n = min(generated, held-out); FD is biased upward at small n, so read a row against its floor. \
Groups are the {k} quadrants of the training captions' embeddings (the reference partition, the \
same for every row and seed): a group's generated samples are those of its prompts, its real \
images those whose captions fall in it.\n\n\
Students: the teacher's network, initialised from it, 1 NFE per sample; DM {dm} iterations then \
ADM {adm} iterations per student, batch {batch}, real guidance {rg}. Teacher: Heun-{steps}, \
guidance {g}.\n\n",
        k = r.students,
        cmd = r.provenance.command,
        commit = r.provenance.commit,
        hw = r.provenance.hardware,
        seeds = seeds.join(", "),
        teacher = r.teacher.display(),
        prompts = first
            .and_then(|v| v.prompts)
            .unwrap_or(20 * r.prompts_per_digit),
        ppd = r.prompts_per_digit,
        spp = r.samples_per_prompt,
        samples = first
            .and_then(|v| v.samples)
            .unwrap_or(20 * r.prompts_per_digit * r.samples_per_prompt),
        note = FEATURE_NOTE,
        dm = r.dm_iterations,
        adm = r.adm_iterations,
        batch = r.batch,
        rg = r.real_guidance,
        steps = r.sampler_steps,
        g = r.guidance,
    );
    md.push_str(&format!(
        "## Claims\n\nVerdict: `held` only when the intervals mean ± std over seeds do not overlap \
in the claimed direction, `reversed` when they separate the other way, else `within noise`; \
`pending` with fewer than {MIN_SEEDS} seeds on a side or a row not yet evaluated.\n\n\
| claim | ours (FD, MNIST-CNN features, not Inception FID) | verdict |\n|---|---|---|\n"
    ));
    for c in &r.claims {
        md.push_str(&format!(
            "| {} | {} | {} |\n",
            c.claim,
            c.ours,
            c.verdict.map_or("pending", |v| v.as_str())
        ));
    }
    md.push_str(
        "\n## Table\n\n| row | K | stages | NFE | seeds | FD (n) — not Inception FID | \
floor (n) | FD, all samples | digit acc. % all | seen | held-out | thickness % | slant % | \
size % | train s | grid |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for v in &r.rows {
        let t = v.run.is_none();
        let pct = |s: &Option<Summary>| pct_for(s, t);
        let all = v.fd.first();
        let fd = all.map_or("pending".into(), |g| {
            format!("{} ({})", show_for(&g.fd, 3, t), g.n)
        });
        let floor = all.map_or("—".into(), |g| format!("{} ({})", num(g.floor, 3), g.n));
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            v.name,
            v.students,
            stages(v),
            v.nfe.map_or("—".into(), |n| n.to_string()),
            if v.run.is_none() {
                "—".to_string()
            } else {
                v.seeds_done.len().to_string()
            },
            fd,
            floor,
            all.map_or("—".into(), |g| show_for(&g.fd_all, 3, t)),
            pct(&v.digit_all),
            pct(&v.digit_seen),
            pct(&v.digit_heldout),
            pct(&v.thickness),
            pct(&v.slant),
            pct(&v.size),
            num(v.train_seconds, 0),
            v.grid
                .as_ref()
                .map(|g| format!("[png]({})", g.strip_prefix(out).unwrap_or(g).display()))
                .unwrap_or_default(),
        ));
    }
    md.push_str(
        "\nColumns: FD (n) = generated vs training images at the matched n (mean ± std over \
seeds); floor (n) = held-out real vs training images at the same n; FD, all samples = every \
generated sample vs the training images. Digit accuracy = the classifier reads the digit the \
prompt names (seen = training templates, held-out = templates no model trained on); attribute \
agreement = the level measured on the image equals the prompt's (chance ≈ 33%; the measures on \
real images, one row per level: `levels.png` of `msd captions`). train s = summed training-loop seconds of the row's students and \
stages (the teacher's own fine-tune for the teacher).\n\n",
    );
    // Per-group FD.
    let k = r.students;
    md.push_str(&format!(
        "## FD per prompt group (quadrant groups; MNIST-CNN features, not Inception FID)\n\n\
| row |{}\n|---|{}\n",
        (0..k).map(|g| format!(" group {g} |")).collect::<String>(),
        "---|".repeat(k)
    ));
    let mut floor_line = None;
    for v in &r.rows {
        let cells: String = (0..k)
            .map(|g| {
                v.fd.iter()
                    .find(|x| x.group == Some(g))
                    .map_or(" pending |".into(), |x| {
                        format!(" {} |", show_for(&x.fd, 3, v.run.is_none()))
                    })
            })
            .collect();
        md.push_str(&format!("| {} |{}\n", v.name, cells));
        if floor_line.is_none() && v.fd.len() > 1 {
            floor_line = Some(v);
        }
    }
    if let Some(v) = floor_line {
        let cell = |f: &dyn Fn(&GroupRow) -> String| -> String {
            (0..k)
                .map(|g| {
                    v.fd.iter()
                        .find(|x| x.group == Some(g))
                        .map_or(" — |".into(), |x| format!(" {} |", f(x)))
                })
                .collect()
        };
        md.push_str(&format!(
            "| floor (held-out real vs training) |{}\n| n per side (generated / held-out / training images; prompts) |{}\n",
            cell(&|x| num(x.floor, 3)),
            cell(&|x| format!(
                "{} ({} / {} / {}; {})",
                x.n,
                x.generated,
                x.heldout,
                x.train,
                x.prompts.map_or("—".into(), |p| p.to_string())
            ))
        ));
    }
    // Partition sizes.
    md.push_str(
        "\n## Partition sizes (training captions per student; evaluation prompts per student)\n\n\
| partition | seed | training captions per student | evaluation prompts per student |\n|---|---|---|---|\n",
    );
    let mut listed = std::collections::HashSet::new();
    for v in r.rows.iter().filter(|v| v.students > 1) {
        let Some(run) = &v.run else { continue };
        if !listed.insert(run.clone()) {
            continue;
        }
        for (i, s) in v.seeds_done.iter().enumerate() {
            md.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                v.partition,
                s,
                v.partition_sizes
                    .get(i)
                    .map_or("—".into(), |x| format!("{x:?}")),
                v.prompts_per_student
                    .get(i)
                    .map_or("—".into(), |x| format!("{x:?}")),
            ));
        }
    }
    md.push_str(&format!(
        "\nRows with results for every seed: {} of {}.\n",
        r.rows_done,
        r.rows.len()
    ));
    md
}
