//! Running a run's K students as jobs of a cluster scheduler: Slurm job arrays ([`slurm`]) and
//! Kubernetes Indexed Jobs ([`k8s`]). Each student is an independent, resumable
//! `msd distill --run R --student k`; the shared artifacts (partition, regression pairs) are made
//! once here, before any job starts ([`prepare_shared`]), so tasks never race to create them;
//! a dependent job assembles the bundle when every student has finished.

pub mod k8s;
pub mod launched;
pub mod slurm;

use crate::distill::StageKind;
use crate::partition::Partition;
use crate::pipeline::{check_stages, Distiller};
use crate::run::{ensure_pairs, RunDir};
use crate::{Error, Result};
use tch::Device;

/// The optional evaluation the bundle job runs after assembling the bundle:
/// `msd eval --bundle R/bundle.json --n N --out R/eval-students [--classifier C]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleEval {
    /// Samples (balanced over the classes).
    pub n: usize,
    /// The feature network's directory as the job sees it (default: `msd eval`'s own).
    pub classifier: Option<std::path::PathBuf>,
}

impl BundleEval {
    /// The arguments after `msd --threads 1` for the run directory `run` (as the job sees it).
    pub fn args(&self, run: &std::path::Path) -> Vec<String> {
        let mut a = vec![
            "eval".to_string(),
            "--bundle".into(),
            run.join("bundle.json").to_string_lossy().into_owned(),
            "--n".into(),
            self.n.to_string(),
            "--out".into(),
            run.join("eval-students").to_string_lossy().into_owned(),
        ];
        if let Some(c) = &self.classifier {
            a.push("--classifier".into());
            a.push(c.to_string_lossy().into_owned());
        }
        a
    }

    /// Refuses an evaluation without samples.
    pub fn check(&self) -> Result<()> {
        if self.n == 0 {
            return Err(Error::Invalid(
                "--eval-n 0: the evaluation after bundling needs at least 1 sample".into(),
            ));
        }
        Ok(())
    }
}

/// Checks a stage list (as `msd distill --stages`) and returns the stage whose students are
/// bundled: the last one, which must make a generator (not TSM).
pub fn bundle_stage(stages: &[StageKind]) -> Result<StageKind> {
    let names = || {
        stages
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(",")
    };
    check_stages(stages).map_err(|e| Error::Invalid(format!("--stages {}: {e}", names())))?;
    match stages.last() {
        Some(&last) if last != StageKind::Tsm => Ok(last),
        _ => Err(Error::Invalid(format!(
            "--stages {}: the last stage must make a generator (dm, adm or cd) to bundle",
            names()
        ))),
    }
}

/// Parses a student list such as `0-3`, `1,3` or `0-1,5` into sorted, distinct indices below
/// `k` (the run's number of students).
pub fn parse_students(spec: &str, k: usize) -> Result<Vec<usize>> {
    let bad = |msg: String| Error::Invalid(format!("--students {spec}: {msg}"));
    let num = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad(format!("`{s}` is not a student index")))
    };
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(bad(format!("the range {a}-{b} is empty")));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    if let Some(&s) = out.iter().find(|&&s| s >= k) {
        return Err(bad(format!(
            "student {s} does not exist: this run has students 0..={}",
            k.saturating_sub(1)
        )));
    }
    Ok(out)
}

/// A sorted list of indices as ranges (`0-3`, `0-1,5`): a Slurm `--array` value.
pub fn ranges(students: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < students.len() {
        let mut j = i;
        while j + 1 < students.len() && students[j + 1] == students[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            students[i].to_string()
        } else {
            format!("{}-{}", students[i], students[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Makes the run's shared artifacts once, before any student job starts: the partition
/// (`partition.json`) and, when the regression loss is on, the regression pairs
/// (`pairs.safetensors`). Returns the partition.
pub fn prepare_shared(run: &RunDir, device: Device) -> Result<Partition> {
    let cfg = run.load_config()?;
    let teacher = run.load_teacher(device)?;
    let partition = Distiller::new(&run.root).partition(&teacher)?;
    ensure_pairs(
        &run.pairs_path(),
        &teacher,
        &cfg.distill,
        &cfg.sampler,
        cfg.seed,
    )?;
    Ok(partition)
}

/// The run directory `run` made absolute (the jobs start elsewhere) with its shared artifacts
/// made ([`prepare_shared`]); errors name `--run`.
pub fn prepare_run(run: &std::path::Path) -> Result<(std::path::PathBuf, Partition)> {
    use crate::error::ResultExt;
    let abs = std::fs::canonicalize(run)
        .map_err(|e| Error::io(run, e))
        .ctx(|| format!("--run {}", run.display()))?;
    let partition = prepare_shared(&RunDir::new(&abs), Device::Cpu)
        .ctx(|| format!("preparing the shared artifacts of {}", abs.display()))?;
    Ok((abs, partition))
}

/// The students' device: `given`, else `cuda` when they are given GPUs, else `cpu`.
pub fn student_device(given: Option<String>, gpus: bool) -> String {
    given.unwrap_or_else(|| if gpus { "cuda" } else { "cpu" }.into())
}

/// Quotes a string for a POSIX shell (single quotes; embedded quotes closed and escaped).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn students_run_on_cuda_only_when_given_gpus_or_asked() {
        assert_eq!(student_device(None, false), "cpu");
        assert_eq!(student_device(None, true), "cuda");
        assert_eq!(student_device(Some("cuda:1".into()), false), "cuda:1");
        let e = prepare_run(std::path::Path::new("/nonexistent/run"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--run /nonexistent/run");
    }

    #[test]
    fn student_lists_parse_and_print_as_ranges() {
        assert_eq!(parse_students("0-3", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_students("3,1,1", 4).unwrap(), vec![1, 3]);
        assert_eq!(parse_students("0-1,5", 8).unwrap(), vec![0, 1, 5]);
        assert_eq!(ranges(&[0, 1, 2, 3]), "0-3");
        assert_eq!(ranges(&[0, 1, 5, 7, 8]), "0-1,5,7-8");
        let e = parse_students("0-4", 4).unwrap_err().to_string();
        assert!(e.contains("--students 0-4") && e.contains("0..=3"), "{e}");
        for bad in ["", "a", "3-1", "1-"] {
            assert!(parse_students(bad, 4).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn stage_lists_must_be_consecutive_and_end_in_a_generator_stage() {
        use StageKind::*;
        assert_eq!(bundle_stage(&[Dm]).unwrap(), Dm);
        assert_eq!(bundle_stage(&[Tsm, Dm, Adm]).unwrap(), Adm);
        assert_eq!(bundle_stage(&[Tsm, Cd]).unwrap(), Cd);
        for bad in [&[][..], &[Tsm], &[Adm, Dm], &[Tsm, Adm], &[Dm, Cd]] {
            assert!(bundle_stage(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn shell_quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("/a/b-c_1"), "/a/b-c_1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
