//! Which parts of an experiment one call trains: `--seeds` and `--only` checked against the
//! experiment's plan (the MNIST reproduction and the text experiment share it).
//!
//! ```
//! use msd::experiment::selection::Selection;
//! let only = vec!["k4".to_string()];
//! let s = Selection::check(&[0, 1], &only, false, &["k1", "k4"]).unwrap();
//! assert!(s.wants("k4") && !s.wants("k1"));
//! assert!(Selection::check(&[0], &["k9".into()], false, &["k1"]).is_err());
//! ```

use crate::train::checkpoint::read_json;
use crate::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// A checked `--only` / `--report-only` choice.
#[derive(Debug, Clone)]
pub struct Selection {
    only: Vec<String>,
    report_only: bool,
    /// Parts a call over every part leaves out (the experiment's dropped runs).
    dropped: Vec<String>,
}

impl Selection {
    /// Checks that `seeds` is not empty and that every name of `only` is `teacher` or one of
    /// `runs` (the error names the flag and lists the valid parts).
    pub fn check(seeds: &[u64], only: &[String], report_only: bool, runs: &[&str]) -> Result<Self> {
        if seeds.is_empty() {
            return Err(Error::Invalid("--seeds: give at least one seed".into()));
        }
        if let Some(bad) = only
            .iter()
            .find(|n| *n != "teacher" && !runs.contains(&n.as_str()))
        {
            return Err(Error::Invalid(format!(
                "--only {bad}: not a part of this experiment (teacher, {})",
                runs.join(", ")
            )));
        }
        Ok(Self {
            only: only.to_vec(),
            report_only,
            dropped: Vec::new(),
        })
    }

    /// Leaves the parts `dropped` out of a call over every part; a call that names one with
    /// `--only` still trains it.
    pub fn skipping(mut self, dropped: impl IntoIterator<Item = String>) -> Self {
        self.dropped.extend(dropped);
        self
    }

    /// Whether this call trains and evaluates the part `name` (never with `--report-only`).
    pub fn wants(&self, name: &str) -> bool {
        let named = self.only.iter().any(|x| x == name);
        let all = self.only.is_empty() && !self.dropped.iter().any(|x| x == name);
        !self.report_only && (named || all)
    }

    /// The training seeds the report written by this call covers. A call that trains only some
    /// parts (`--only`) adds its `seeds` to those of the report already at `report_json`
    /// (sorted, without repeats), so that processes splitting the work by seed or by run do not
    /// each leave a report over their own seeds; any other call reports exactly `seeds`. An
    /// absent or unreadable report adds nothing (it is rewritten anyway).
    pub fn report_seeds(&self, seeds: &[u64], report_json: &Path) -> Vec<u64> {
        #[derive(Deserialize)]
        struct Reported {
            seeds: Vec<u64>,
        }
        let mut all = seeds.to_vec();
        if !self.report_only && !self.only.is_empty() {
            if let Ok(r) = read_json::<Reported>(report_json) {
                all.extend(r.seeds);
                all.sort_unstable();
                all.dedup();
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_over_every_part_skips_dropped_parts_unless_named() {
        let runs = ["k1", "k4", "c5-x4"];
        let all = Selection::check(&[0], &[], false, &runs)
            .unwrap()
            .skipping(["c5-x4".to_string()]);
        assert!(all.wants("k1") && all.wants("teacher") && !all.wants("c5-x4"));
        let named = Selection::check(&[0], &["c5-x4".into()], false, &runs)
            .unwrap()
            .skipping(["c5-x4".to_string()]);
        assert!(named.wants("c5-x4") && !named.wants("k1"));
    }

    #[test]
    fn a_partial_call_keeps_the_seeds_of_the_report_it_rewrites() {
        let d = tempfile::tempdir().unwrap();
        let json = d.path().join("report.json");
        std::fs::write(&json, r#"{"seeds": [2, 0, 1], "rows": []}"#).unwrap();
        let runs = ["k1", "k4"];
        let only = Selection::check(&[2, 3], &["k4".into()], false, &runs).unwrap();
        assert_eq!(only.report_seeds(&[2, 3], &json), vec![0, 1, 2, 3]);
        // A call over every part, or one that only reports, says which seeds it wants.
        let all = Selection::check(&[2], &[], false, &runs).unwrap();
        assert_eq!(all.report_seeds(&[2], &json), vec![2]);
        let report = Selection::check(&[1, 0], &[], true, &runs).unwrap();
        assert_eq!(report.report_seeds(&[1, 0], &json), vec![1, 0]);
        // Nothing to keep: no report, or one that is not a report.
        assert_eq!(
            only.report_seeds(&[3], &d.path().join("none.json")),
            vec![3]
        );
        std::fs::write(&json, "not json").unwrap();
        assert_eq!(only.report_seeds(&[3], &json), vec![3]);
    }
}
