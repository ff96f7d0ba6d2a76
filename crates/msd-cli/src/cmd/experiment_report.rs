//! The reproduction's `report.json` and `report.md`: one entry per table row, read from the rows'
//! `evals/<id>/{eval.json,row.json}` (rows not evaluated yet are listed as pending), with the
//! hardware, sample counts, feature network, seeds, commit, sizes and budgets beside them.

use super::experiment_plan::{
    partition_name, stages_up_to, ExperimentConfig, RowPlan, RunPlan, Size,
};
use crate::cmd::eval::hardware;
use crate::cmd::experiment::eval_dir;
use anyhow::Result;
use msd::config::RunConfig;
use msd::train::checkpoint::{read_json, write_bytes_atomic, write_json_atomic};
use serde_json::{json, Value};
use std::path::Path;

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

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Writes both reports; returns how many rows have results.
#[allow(clippy::too_many_arguments)]
pub fn write(
    out: &Path,
    exp: &ExperimentConfig,
    cfg_path: &Path,
    base: &RunConfig,
    runs: &[RunPlan],
    rows: &[RowPlan],
    small_params: i64,
    teacher_params: i64,
) -> Result<usize> {
    let mut json_rows = Vec::new();
    let mut done = 0;
    for row in rows {
        let id = row.eval_id();
        let dir = eval_dir(out, &id);
        let run = row
            .run
            .as_ref()
            .and_then(|n| runs.iter().find(|r| &r.name == n));
        let (students, size, stages, partition) = match run {
            None => (1, "teacher".to_string(), vec![], "none".to_string()),
            Some(r) => (
                r.students,
                if r.size == Size::Small {
                    "small"
                } else {
                    "same"
                }
                .to_string(),
                stages_up_to(r, row.stage),
                partition_name(r.partition).to_string(),
            ),
        };
        let mut v = json!({
            "name": row.name, "section": row.section, "students": students, "size": size,
            "stages": stages, "partition": partition, "eval": dir.join("eval.json"),
            "grid": dir.join("samples.png"),
        });
        let e: Option<Value> = read_json(&dir.join("eval.json")).ok();
        let r: Option<Value> = read_json(&dir.join("row.json")).ok();
        if let (Some(e), Some(r)) = (e, r) {
            done += 1;
            for k in [
                "fd",
                "kid",
                "kid_std",
                "precision",
                "recall",
                "class_accuracy",
                "per_class_accuracy",
                "n",
                "floor_fd",
                "generation_seconds",
            ] {
                v[k] = e[k].clone();
            }
            for k in [
                "params_per_student",
                "latency_ms_b1",
                "train_seconds",
                "bundle",
                "nfe",
                "timing_reps",
            ] {
                v[k] = r[k].clone();
            }
            v[format!("images_per_s_b{}", exp.throughput_batch)] = r["images_per_s_b"].clone();
            v["status"] = "done".into();
        } else {
            v["status"] = "pending".into();
        }
        json_rows.push(v);
    }
    let d = &base.distill;
    let report = json!({
        "experiment": cfg_path, "run_config": exp.run, "command": format!("msd experiment --config {} --out {}", cfg_path.display(), out.display()),
        "commit": git_commit(), "hardware": hardware(), "n": exp.n,
        "eval_seeds": { "first": exp.eval_seed, "batch": exp.eval_batch },
        "feature_net": exp.classifier, "training_seed": base.seed,
        "sizes": { "teacher_params": teacher_params, "small_params": small_params, "teacher_net": base.model.net, "small_net": exp.small_net },
        "budgets_per_student": { "dm_iterations": d.iterations, "adm_iterations": d.adm.iterations, "tsm_steps": d.tsm.steps, "batch": d.batch_size, "tsm_batch": d.tsm.batch_size, "ttur": d.ttur },
        "sampler_steps": base.sampler.steps, "guidance": base.sampler.guidance, "real_guidance": d.real_guidance,
        "rows": json_rows,
    });
    write_json_atomic(&out.join("report.json"), &report)?;
    write_bytes_atomic(
        &out.join("report.md"),
        markdown(&report, exp, rows).as_bytes(),
    )?;
    Ok(done)
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn markdown(r: &Value, exp: &ExperimentConfig, rows: &[RowPlan]) -> String {
    let b = &r["budgets_per_student"];
    let mut md = format!(
        "# MSD reproduction on MNIST-10k\n\n\
Generated by `{}` (commit `{}`). Hardware: {}. Every row: {} samples (balanced over the 10 classes, \
noise seeds from {} in batches of {}), scored by the project's own CNN classifier `{}` (penultimate-layer \
features; not Inception, so FD/KID are not comparable with published FID). Students: 1 network evaluation \
per sample from the student that owns its class; teacher: Heun-{} with classifier-free guidance {} \
(the students' real score uses guidance {}).\n\n\
Per-student budgets (equal in every row): DM {} iterations, ADM {} iterations, TSM {} steps (batch {}), \
batch {}, TTUR {}; training seed {}. Sizes: teacher and same-size students {} parameters; smaller students {} \
({:.0}% fewer).\n\n",
        r["command"].as_str().unwrap_or(""),
        r["commit"].as_str().unwrap_or(""),
        r["hardware"].as_str().unwrap_or(""),
        exp.n,
        exp.eval_seed,
        exp.eval_batch,
        exp.classifier.display(),
        r["sampler_steps"],
        r["guidance"],
        r["real_guidance"],
        b["dm_iterations"],
        b["adm_iterations"],
        b["tsm_steps"],
        b["tsm_batch"],
        b["batch"],
        b["ttur"],
        r["training_seed"],
        r["sizes"]["teacher_params"],
        r["sizes"]["small_params"],
        100.0 * (1.0 - r["sizes"]["small_params"].as_f64().unwrap_or(0.0) / r["sizes"]["teacher_params"].as_f64().unwrap_or(1.0)),
    );
    let tb = exp.throughput_batch;
    let mut floor = None;
    for (section, title) in [
        ("main", "Main table"),
        ("students", "Number of students (DM)"),
        ("partition", "Partition strategy (K = 4, DM)"),
    ] {
        md.push_str(&format!(
            "## {title}\n\n| row | K | size | stages | partition | FD (msd CNN, not Inception FID) | KID | precision | recall | class acc. | params/student | ms/image b1 | images/s b{tb} | train s | paper (ImageNet-64 FID) | grid |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        ));
        for (plan, v) in rows.iter().zip(r["rows"].as_array().into_iter().flatten()) {
            if plan.section != section {
                continue;
            }
            if v["status"] == "pending" {
                md.push_str(&format!(
                    "| {} | {} | {} | {} | {} | pending |||||||||| |\n",
                    plan.name,
                    v["students"],
                    v["size"].as_str().unwrap_or(""),
                    stages(v),
                    v["partition"].as_str().unwrap_or(""),
                ));
                continue;
            }
            floor = floor.or(v["floor_fd"].as_f64());
            let grid = format!("evals/{}/samples.png", plan.eval_id());
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}% | {} | {} | {} | {} | {} | [png]({grid}) |\n",
                plan.name,
                v["students"],
                v["size"].as_str().unwrap_or(""),
                stages(v),
                v["partition"].as_str().unwrap_or(""),
                num(&v["fd"], 3),
                num(&v["kid"], 4),
                num(&v["precision"], 3),
                num(&v["recall"], 3),
                num(&(v["class_accuracy"].as_f64().map(|x| 100.0 * x).into()), 2),
                v["params_per_student"],
                num(&v["latency_ms_b1"], 2),
                num(&v[format!("images_per_s_b{tb}")], 1),
                num(&v["train_seconds"], 0),
                paper(plan),

            ));
        }
        md.push('\n');
    }
    if let Some(f) = floor {
        md.push_str(&format!(
            "Floor: the 1,000 held-out real images against the training split give FD {f:.3} (msd CNN features, not Inception FID).\n\n"
        ));
    }
    md.push_str("Columns: FD and KID on the classifier's features against the training split; precision/recall k-NN (k = 3); class acc. = share of samples the classifier assigns to the requested class; ms/image b1 = median latency of one image (routing included; the teacher runs its full Heun sampler); images/s at the throughput batch; train s = summed training-loop seconds of all the row's students and stages (the teacher row: its own training). Rows that share a run and stage share one evaluation (e.g. `4 students, DM` = `K = 4` = `contiguous`).\n");
    md
}

fn stages(v: &Value) -> String {
    let s: Vec<String> = v["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(|s| s.to_uppercase()))
        .collect();
    if s.is_empty() {
        "Heun".into()
    } else {
        s.join(" → ")
    }
}
