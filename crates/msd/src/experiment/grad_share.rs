//! The regression term's share of the generator's gradient over DM training (the fidelity
//! question of the regression term): every DM stage logs `reg_grad_share` =
//! ‖∇ regression‖ / (‖∇ regression‖ + ‖∇ DM‖) once per log window (see
//! [`crate::distill::grad_share`]). For one run this averages the share over its students at
//! each logged step, per training seed, and summarises the seeds (mean ± std per step, and the
//! mean over training per seed).

use super::stats::Summary;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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

/// The series of run `name` from its seed directories (`(seed, run dir)`), each holding
/// `students/<k>/dm/stats.jsonl` for k < `students`. `None` when no seed logged a share.
pub fn grad_share_series(
    name: &str,
    students: usize,
    regression_weight: f64,
    seed_dirs: &[(u64, &Path)],
) -> Result<Option<GradShareSeries>> {
    // Per seed: step → mean over the students that logged it.
    let mut per_seed: Vec<(u64, BTreeMap<u64, f64>)> = Vec::new();
    for (seed, dir) in seed_dirs {
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
        // Only steps every student logged (a seed still training is left out).
        let mean: BTreeMap<u64, f64> = sum
            .into_iter()
            .filter(|(_, (_, n))| *n == students)
            .map(|(step, (s, n))| (step, s / n as f64))
            .collect();
        if !mean.is_empty() {
            per_seed.push((*seed, mean));
        }
    }
    if per_seed.is_empty() {
        return Ok(None);
    }
    let steps: Vec<u64> = per_seed[0]
        .1
        .keys()
        .copied()
        .filter(|s| per_seed.iter().all(|(_, m)| m.contains_key(s)))
        .collect();
    let (mut share, mut share_std) = (Vec::new(), Vec::new());
    for s in &steps {
        let v = Summary::of(&per_seed.iter().map(|(_, m)| m[s]).collect::<Vec<_>>());
        share.push(v.mean);
        share_std.push(v.std);
    }
    let means: Vec<f64> = per_seed
        .iter()
        .map(|(_, m)| m.values().sum::<f64>() / m.len() as f64)
        .collect();
    let overall = Summary::of(&means);
    Ok(Some(GradShareSeries {
        run: name.to_string(),
        students,
        regression_weight,
        steps,
        share,
        share_std,
        mean_per_seed: means,
        mean: overall.mean,
        mean_std: overall.std,
        seeds: per_seed.iter().map(|(s, _)| *s).collect(),
    }))
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
}
