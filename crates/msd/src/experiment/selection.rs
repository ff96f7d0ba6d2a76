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

use crate::{Error, Result};

/// A checked `--only` / `--report-only` choice.
#[derive(Debug, Clone)]
pub struct Selection {
    only: Vec<String>,
    report_only: bool,
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
        })
    }

    /// Whether this call trains and evaluates the part `name` (never with `--report-only`).
    pub fn wants(&self, name: &str) -> bool {
        !self.report_only && (self.only.is_empty() || self.only.iter().any(|x| x == name))
    }
}
