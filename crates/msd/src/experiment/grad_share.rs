//! The regression term's share of the generator's gradient over DM training (the fidelity
//! question of the regression term): every DM stage logs `reg_grad_share` =
//! ‖∇ regression‖ / (‖∇ regression‖ + ‖∇ DM‖) once per log window (see
//! [`crate::distill::grad_share`]). For one run this averages the share over its students at
//! each logged step, per training seed, and summarises the seeds (mean ± std per step, and the
//! mean over training per seed).
//!
//! Run directories are not committed, so [`collect`] keeps each seed's series beside the report
//! (`<out>/grad_share/<run>/s<seed>.json`, rewritten while the run directory exists) and reads
//! it back when the run directory is gone: the report can be rewritten from committed files.
//! Series from before these files existed (only their seed summary survives) are kept whole as
//! `<out>/grad_share/<run>/series.json`.

use super::stats::Summary;
use crate::train::checkpoint::{read_json, write_json_atomic};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The share of one run over training.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GradShareSeries {
    /// The run's name in the experiment plan.
    pub run: String,
    pub students: usize,
    pub regression_weight: f64,
    /// Logged generator steps (DM iterations) present for every seed.
    pub steps: Vec<u64>,
    /// Per step: mean over seeds of the students' mean share.
    pub share: Vec<f64>,
    pub share_std: Vec<f64>,
    /// Per seed: the share averaged over students and over training.
    pub mean_per_seed: Vec<f64>,
    pub mean: f64,
    pub mean_std: f64,
    /// The training seeds it is over.
    pub seeds: Vec<u64>,
}

/// One line of a DM `stats.jsonl` (only the fields read here).
#[derive(Deserialize)]
struct StatsLine {
    step: u64,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    reg_grad_share: Option<f64>,
}

/// Step → share of one student's DM stage (`<student dir>/dm/stats.jsonl`); empty when the
/// file is missing or logged no share (regression weight 0).
fn student_shares(stats: &Path) -> Result<BTreeMap<u64, f64>> {
    let mut out = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(stats) else {
        return Ok(out);
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let l: StatsLine =
            serde_json::from_str(line).map_err(|e| crate::Error::format(stats, e.to_string()))?;
        if l.stage.as_deref().is_some_and(|s| s != "dm") {
            continue;
        }
        if let Some(s) = l.reg_grad_share.filter(|s| s.is_finite()) {
            out.insert(l.step, s);
        }
    }
    Ok(out)
}

/// One training seed's share per logged DM step (mean over the run's students): what
/// `<out>/grad_share/<run>/s<seed>.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedShares {
    pub seed: u64,
    pub steps: Vec<u64>,
    pub share: Vec<f64>,
}

/// The shares of one seed's run directory (`students/<k>/dm/stats.jsonl` for k < `students`),
/// at the steps every student logged (a seed still training stops at its slowest student);
/// `None` when nothing was logged (no directory, or regression weight 0).
pub fn seed_shares(seed: u64, dir: &Path, students: usize) -> Result<Option<SeedShares>> {
    let mut sum: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
    for k in 0..students {
        let f = dir
            .join("students")
            .join(k.to_string())
            .join("dm")
            .join("stats.jsonl");
        for (step, s) in student_shares(&f)? {
            let e = sum.entry(step).or_default();
            e.0 += s;
            e.1 += 1;
        }
    }
    let (steps, share): (Vec<u64>, Vec<f64>) = sum
        .into_iter()
        .filter(|(_, (_, n))| *n == students)
        .map(|(step, (s, n))| (step, s / n as f64))
        .unzip();
    Ok((!steps.is_empty()).then_some(SeedShares { seed, steps, share }))
}

/// The series of run `name` from its seed directories (`(seed, run dir)`). `None` when no seed
/// logged a share.
pub fn grad_share_series(
    name: &str,
    students: usize,
    regression_weight: f64,
    seed_dirs: &[(u64, &Path)],
) -> Result<Option<GradShareSeries>> {
    let mut per_seed = Vec::new();
    for (seed, dir) in seed_dirs {
        per_seed.extend(seed_shares(*seed, dir, students)?);
    }
    Ok(series(name, students, regression_weight, &per_seed))
}

/// The series over `per_seed` (mean ± std per step over the steps every seed logged, and per
/// seed the mean over training); `None` when it is empty.
pub fn series(
    name: &str,
    students: usize,
    regression_weight: f64,
    per_seed: &[SeedShares],
) -> Option<GradShareSeries> {
    let maps: Vec<BTreeMap<u64, f64>> = per_seed
        .iter()
        .map(|p| {
            p.steps
                .iter()
                .copied()
                .zip(p.share.iter().copied())
                .collect()
        })
        .collect();
    let first = maps.first()?;
    let steps: Vec<u64> = first
        .keys()
        .copied()
        .filter(|s| maps.iter().all(|m| m.contains_key(s)))
        .collect();
    let (mut share, mut share_std) = (Vec::new(), Vec::new());
    for s in &steps {
        let v = Summary::of(&maps.iter().map(|m| m[s]).collect::<Vec<_>>());
        share.push(v.mean);
        share_std.push(v.std);
    }
    let means: Vec<f64> = maps
        .iter()
        .map(|m| m.values().sum::<f64>() / m.len() as f64)
        .collect();
    let overall = Summary::of(&means);
    Some(GradShareSeries {
        run: name.to_string(),
        students,
        regression_weight,
        steps,
        share,
        share_std,
        mean_per_seed: means,
        mean: overall.mean,
        mean_std: overall.std,
        seeds: per_seed.iter().map(|p| p.seed).collect(),
    })
}

/// The series of one run of a report in `out`, for `seeds`: each seed from its run directory
/// (`run_dir(seed)`, whose series is then kept in `out/grad_share/<run>/s<seed>.json`) or, when
/// that directory logged nothing, from the kept file. A run with no seed either way falls back
/// to `out/grad_share/<run>/series.json` (written once from `previous`, the series of the
/// report being replaced) when that covers only seeds of `seeds`.
pub fn collect(
    out: &Path,
    run: &str,
    students: usize,
    regression_weight: f64,
    seeds: &[u64],
    run_dir: impl Fn(u64) -> PathBuf,
    previous: Option<&GradShareSeries>,
) -> Result<Option<GradShareSeries>> {
    let kept = out.join("grad_share").join(run);
    let mut per_seed = Vec::new();
    for &seed in seeds {
        let file = kept.join(format!("s{seed}.json"));
        // A seed still training (some student's DM stage has no train.json yet) is not read:
        // its partial log would be kept, and committed, as the seed's series.
        let dir = run_dir(seed);
        let finished = (0..students).all(|k| {
            dir.join("students")
                .join(k.to_string())
                .join("dm")
                .join("train.json")
                .exists()
        });
        let fresh = match finished {
            true => seed_shares(seed, &dir, students)?,
            false => None,
        };
        if let Some(fresh) = fresh {
            write_json_atomic(&file, &fresh)?;
            per_seed.push(fresh);
        } else if file.exists() {
            per_seed.push(read_json(&file)?);
        }
    }
    if !per_seed.is_empty() {
        return Ok(series(run, students, regression_weight, &per_seed));
    }
    let whole = kept.join("series.json");
    if !whole.exists() {
        match previous {
            Some(p) => write_json_atomic(&whole, p)?,
            None => return Ok(None),
        }
    }
    let s: GradShareSeries = read_json(&whole)?;
    Ok(s.seeds.iter().all(|x| seeds.contains(x)).then_some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_stats(dir: &Path, k: usize, lines: &[(u64, Option<f64>)]) {
        let d = dir.join("students").join(k.to_string()).join("dm");
        std::fs::create_dir_all(&d).unwrap();
        let text: String = lines
            .iter()
            .map(|(step, s)| match s {
                Some(s) => format!("{{\"stage\":\"dm\",\"step\":{step},\"reg_grad_share\":{s}}}\n"),
                None => format!("{{\"stage\":\"dm\",\"step\":{step}}}\n"),
            })
            .collect();
        std::fs::write(d.join("stats.jsonl"), text).unwrap();
        std::fs::write(d.join("train.json"), "{}").unwrap();
    }

    #[test]
    fn averages_students_then_seeds_and_keeps_common_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("s0"), tmp.path().join("s1"));
        // Seed 0: two students; seed 1: student 1 has not logged step 40 yet.
        write_stats(&a, 0, &[(20, Some(0.2)), (40, Some(0.4))]);
        write_stats(&a, 1, &[(20, Some(0.4)), (40, Some(0.6))]);
        write_stats(&b, 0, &[(20, Some(0.1)), (40, Some(0.3))]);
        write_stats(&b, 1, &[(20, Some(0.3))]);
        let s = grad_share_series("k2", 2, 0.25, &[(0, &a), (1, &b)])
            .unwrap()
            .unwrap();
        assert_eq!(s.steps, vec![20]);
        // Step 20: seed 0 → 0.3, seed 1 → 0.2.
        assert!((s.share[0] - 0.25).abs() < 1e-12);
        // Seed 0 over training: (0.3 + 0.5) / 2 = 0.4; seed 1: only step 20 complete → 0.2.
        assert!((s.mean_per_seed[0] - 0.4).abs() < 1e-12);
        assert!((s.mean_per_seed[1] - 0.2).abs() < 1e-12);
        assert_eq!(s.seeds, vec![0, 1]);
    }

    #[test]
    fn no_share_logged_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("s0");
        write_stats(&a, 0, &[(20, None)]);
        assert!(grad_share_series("noreg", 1, 0.0, &[(0, &a)])
            .unwrap()
            .is_none());
        // A missing run directory as well.
        let missing = tmp.path().join("nope");
        assert!(grad_share_series("x", 1, 0.25, &[(0, &missing)])
            .unwrap()
            .is_none());
    }

    #[test]
    fn kept_files_survive_the_run_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let runs = tmp.path().join("runs");
        write_stats(&runs.join("s0"), 0, &[(20, Some(0.2)), (40, Some(0.4))]);
        write_stats(&runs.join("s1"), 0, &[(20, Some(0.6)), (40, Some(0.8))]);
        let dir = |s: u64| runs.join(format!("s{s}"));
        let first = collect(&out, "k1", 1, 0.25, &[0, 1], dir, None)
            .unwrap()
            .unwrap();
        assert!((first.share[0] - 0.4).abs() < 1e-12);
        assert!(out.join("grad_share/k1/s1.json").exists());
        std::fs::remove_dir_all(&runs).unwrap();
        let again = collect(&out, "k1", 1, 0.25, &[0, 1], dir, None)
            .unwrap()
            .unwrap();
        assert_eq!(again.share, first.share);
        assert_eq!(again.mean_per_seed, first.mean_per_seed);
        // Asking for seed 1 only gives seed 1 only.
        let one = collect(&out, "k1", 1, 0.25, &[1], dir, None)
            .unwrap()
            .unwrap();
        assert_eq!(one.seeds, vec![1]);
        assert!((one.mean - 0.7).abs() < 1e-12);
    }

    #[test]
    fn a_seed_still_training_is_neither_read_nor_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let runs = tmp.path().join("runs");
        write_stats(&runs.join("s0"), 0, &[(20, Some(0.2))]);
        write_stats(&runs.join("s1"), 0, &[(20, Some(0.6))]);
        // Seed 1's student is mid-DM: its log exists, its stage summary does not.
        std::fs::remove_file(runs.join("s1/students/0/dm/train.json")).unwrap();
        let dir = |s: u64| runs.join(format!("s{s}"));
        let s = collect(&out, "k1", 1, 0.25, &[0, 1], dir, None)
            .unwrap()
            .unwrap();
        assert_eq!(s.seeds, vec![0]);
        assert!(!out.join("grad_share/k1/s1.json").exists());
        // Once finished, it is read and kept.
        std::fs::write(runs.join("s1/students/0/dm/train.json"), "{}").unwrap();
        let s = collect(&out, "k1", 1, 0.25, &[0, 1], dir, None)
            .unwrap()
            .unwrap();
        assert_eq!(s.seeds, vec![0, 1]);
        assert!(out.join("grad_share/k1/s1.json").exists());
    }

    #[test]
    fn a_series_without_seed_files_is_carried_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let runs = tmp.path().join("runs");
        write_stats(&runs.join("s0"), 0, &[(20, Some(0.3))]);
        let old = grad_share_series("k4", 1, 0.25, &[(0, &runs.join("s0"))])
            .unwrap()
            .unwrap();
        let none = |s: u64| tmp.path().join(format!("gone{s}"));
        // No previous report and nothing kept: no series.
        assert!(collect(&out, "k4", 1, 0.25, &[0], none, None)
            .unwrap()
            .is_none());
        let carried = collect(&out, "k4", 1, 0.25, &[0, 1], none, Some(&old))
            .unwrap()
            .unwrap();
        assert_eq!(carried.share, old.share);
        // Kept from now on, without the previous report.
        let kept = collect(&out, "k4", 1, 0.25, &[0, 1], none, None)
            .unwrap()
            .unwrap();
        assert_eq!(kept.seeds, vec![0]);
        // Not for a report of other seeds.
        assert!(collect(&out, "k4", 1, 0.25, &[1], none, None)
            .unwrap()
            .is_none());
    }
}
