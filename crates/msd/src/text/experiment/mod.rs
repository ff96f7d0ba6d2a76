//! The seeded text-prompt experiment (issue 14's table): one shared prompt-conditional teacher,
//! and per training seed 1 student and 4 students (quadrant and k-means prompt partitions)
//! distilled DM → ADM, each evaluated on the standard prompt set (digit accuracy and attribute
//! agreement on seen and held-out templates, FD overall and per prompt group with real-vs-real
//! floors), reported as mean ± std over seeds with the project's verdict rule
//! ([`crate::experiment::stats`]).
//!
//! - this file: the config (`configs/experiment-text.toml`) and the fixed plan (runs, rows,
//!   claims);
//! - [`group_fd`]: FD per prompt group with its floor at the same n;
//! - [`eval`]: one row's evaluation (`eval.json`);
//! - [`driver`]: trains and evaluates what is missing (resumable), then writes the report;
//! - [`report`]: `report.json` and `report.md`.

pub mod driver;
pub mod eval;
pub mod group_fd;
pub mod report;

use crate::experiment::StageKind;
use crate::partition::Strategy;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `configs/experiment-text.toml`; paths are relative to that file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextExperimentConfig {
    /// The text run config every run distils with (`[distill]` settings, sampler, guidance);
    /// its `[model]` must be the teacher's.
    pub run: PathBuf,
    /// The shared prompt-conditional teacher (`<run>/teacher` of `msd text teacher`).
    pub teacher: PathBuf,
    /// The feature network of every evaluation (the project's MNIST CNN classifier).
    pub classifier: PathBuf,
    /// The all-MiniLM-L6-v2 folder (default: the cache's; the CLI's `--encoder` overrides).
    #[serde(default)]
    pub encoder: Option<PathBuf>,
    /// Training seeds (the CLI's `--seeds` overrides).
    #[serde(default = "d_seeds")]
    pub seeds: Vec<u64>,
    /// Students of the partitioned runs (quadrants need a power of two).
    #[serde(default = "d_students")]
    pub students: usize,
    /// Per-student budgets overriding the run config's (`distill.iterations`,
    /// `distill.adm.iterations`, `distill.batch_size`).
    #[serde(default)]
    pub dm_iterations: Option<u64>,
    #[serde(default)]
    pub adm_iterations: Option<u64>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// The evaluation prompts: [`crate::text::prompt_set::standard_prompts`] with this many
    /// level combinations per digit (2 prompts each: a training and a held-out wording).
    #[serde(default = "d_per_digit")]
    pub prompts_per_digit: usize,
    #[serde(default)]
    pub prompt_seed: u64,
    /// Samples per prompt; prompt i draws its noise after `manual_seed(eval_seed + i)`.
    #[serde(default = "d_spp")]
    pub samples_per_prompt: usize,
    #[serde(default)]
    pub eval_seed: u64,
    /// Samples of the grid per prompt (`prompts.png`).
    #[serde(default = "d_grid")]
    pub grid_per_prompt: usize,
}

fn d_seeds() -> Vec<u64> {
    vec![0, 1, 2]
}
fn d_students() -> usize {
    4
}
fn d_per_digit() -> usize {
    4
}
fn d_spp() -> usize {
    16
}
fn d_grid() -> usize {
    8
}

impl TextExperimentConfig {
    /// Reads `path` and resolves its paths against the file's folder.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c: Self = toml::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.run, &mut c.teacher, &mut c.classifier]
            .into_iter()
            .chain(c.encoder.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let bad = |msg: &str| Err(Error::format(path, msg.to_string()));
        if c.seeds.is_empty() {
            return bad("seeds: give at least one training seed");
        }
        if c.students < 2 || !c.students.is_power_of_two() {
            return bad("students: quadrant partitions need a power of two ≥ 2");
        }
        if c.prompts_per_digit == 0 || c.samples_per_prompt < 2 {
            return bad("prompts_per_digit must be ≥ 1 and samples_per_prompt ≥ 2");
        }
        if c.dm_iterations == Some(0) || c.batch_size == Some(0) {
            return bad("dm_iterations and batch_size must be ≥ 1");
        }
        Ok(c)
    }
}

/// One set of students trained DM → ADM (a run directory per seed).
#[derive(Clone, Debug, PartialEq)]
pub struct TextRunPlan {
    pub name: String,
    pub students: usize,
    pub partition: Strategy,
}

/// One row: the teacher (`run = None`) or a run's students after `stage`.
#[derive(Clone, Debug, PartialEq)]
pub struct TextRowPlan {
    pub name: String,
    pub run: Option<String>,
    pub stage: Option<StageKind>,
}

impl TextRowPlan {
    /// The evaluation folder name (`teacher`, `<run>-<stage>`).
    pub fn eval_id(&self) -> String {
        crate::experiment::plan::eval_id(self.run.as_deref(), self.stage)
    }
}

/// "`better` has a lower FD than `worse`" (overall, or in prompt group `group`).
#[derive(Clone, Debug, PartialEq)]
pub struct TextClaimPlan {
    pub claim: String,
    pub better: String,
    pub worse: String,
    pub group: Option<usize>,
}

/// The whole plan.
#[derive(Clone, Debug)]
pub struct TextPlan {
    pub runs: Vec<TextRunPlan>,
    pub rows: Vec<TextRowPlan>,
    pub claims: Vec<TextClaimPlan>,
}

impl TextPlan {
    pub fn run(&self, name: &str) -> Option<&TextRunPlan> {
        self.runs.iter().find(|r| r.name == name)
    }
}

/// The run names of the plan for `k` partitioned students.
pub fn run_names(k: usize) -> [String; 3] {
    [
        "k1".into(),
        format!("k{k}-quadrants"),
        format!("k{k}-kmeans"),
    ]
}

/// Teacher; 1 student DM and DM → ADM; K quadrant students DM and DM → ADM; K k-means students
/// DM → ADM. Claims: K quadrant students vs 1 (DM → ADM overall and per group, and DM), and
/// quadrants vs k-means (DM → ADM).
pub fn plan(exp: &TextExperimentConfig) -> TextPlan {
    use StageKind::{Adm, Dm};
    let k = exp.students;
    let [one, quad, km] = run_names(k);
    let runs = vec![
        TextRunPlan {
            name: one.clone(),
            students: 1,
            // One group: k-means with k = 1 is the whole set.
            partition: Strategy::Kmeans,
        },
        TextRunPlan {
            name: quad.clone(),
            students: k,
            partition: Strategy::Quadrants,
        },
        TextRunPlan {
            name: km.clone(),
            students: k,
            partition: Strategy::Kmeans,
        },
    ];
    let row = |name: String, run: Option<&str>, stage| TextRowPlan {
        name,
        run: run.map(String::from),
        stage,
    };
    let (r1a, rqa, rka) = (
        "1 student, DM → ADM".to_string(),
        format!("{k} students (quadrants), DM → ADM"),
        format!("{k} students (k-means), DM → ADM"),
    );
    let (r1d, rqd) = (
        "1 student, DM".to_string(),
        format!("{k} students (quadrants), DM"),
    );
    let rows = vec![
        row("teacher".into(), None, None),
        row(r1d.clone(), Some(&one), Some(Dm)),
        row(r1a.clone(), Some(&one), Some(Adm)),
        row(rqd.clone(), Some(&quad), Some(Dm)),
        row(rqa.clone(), Some(&quad), Some(Adm)),
        row(rka.clone(), Some(&km), Some(Adm)),
    ];
    let claim = |claim: String, better: &str, worse: &str, group| TextClaimPlan {
        claim,
        better: better.to_string(),
        worse: worse.to_string(),
        group,
    };
    let mut claims = vec![
        claim(
            format!("{k} quadrant students beat 1 (DM → ADM)"),
            &rqa,
            &r1a,
            None,
        ),
        claim(
            format!("{k} quadrant students beat 1 (DM)"),
            &rqd,
            &r1d,
            None,
        ),
        claim(
            "quadrant partition beats k-means (DM → ADM)".into(),
            &rqa,
            &rka,
            None,
        ),
    ];
    for g in 0..k {
        claims.push(claim(
            format!("{k} quadrant students beat 1 on quadrant group {g} (DM → ADM)"),
            &rqa,
            &r1a,
            Some(g),
        ));
    }
    TextPlan { runs, rows, claims }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_resolves_paths_and_the_plan_reads_planned_runs() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.toml");
        std::fs::write(
            &p,
            "run = \"r.toml\"\nteacher = \"t\"\nclassifier = \"/abs/c\"\nseeds = [0, 1]\n",
        )
        .unwrap();
        let c = TextExperimentConfig::load(&p).unwrap();
        assert_eq!(c.run, d.path().join("r.toml"));
        assert_eq!(c.classifier, PathBuf::from("/abs/c"));
        assert_eq!((c.students, c.samples_per_prompt), (4, 16));
        let plan = plan(&c);
        assert_eq!(plan.rows.len(), 6);
        for r in &plan.rows {
            if let Some(n) = &r.run {
                assert!(plan.run(n).is_some(), "{n}");
            }
        }
        for c in &plan.claims {
            for side in [&c.better, &c.worse] {
                assert!(plan.rows.iter().any(|r| &r.name == side), "{side}");
            }
        }
        assert_eq!(plan.rows[4].eval_id(), "k4-quadrants-adm");
        assert_eq!(plan.claims.iter().filter(|c| c.group.is_some()).count(), 4);
        std::fs::write(
            &p,
            "run = \"r\"\nteacher = \"t\"\nclassifier = \"c\"\nstudents = 3\n",
        )
        .unwrap();
        let e = TextExperimentConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("students"), "{e}");
    }
}
