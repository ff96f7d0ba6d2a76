//! Experiments as library calls: the 2-D toy sweep ([`toy`]) and the image reproduction table
//! ([`plan`], [`driver`], [`report`]), with training seeds and error bars ([`stats`]). A Rust
//! program runs them with an options struct and an [`Observer`]; the CLI only parses flags,
//! draws progress bars and pictures, and prints.
//!
//! Every experiment is resumable: each (row or sweep cell, seed) is its own run directory and
//! every finished training stage, bundle and evaluation is reused.

pub mod driver;
pub mod eval;
pub mod grad_share;
pub mod plan;
pub mod plots;
pub mod report;
pub mod selection;
pub mod stats;
mod students;
pub mod toy;
pub mod toy_sweep;
pub mod workers;

pub use crate::distill::StageKind;
pub use stats::{verdict_lower, Summary, Verdict};

use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

/// What an experiment tells its caller while it runs (the library never prints).
pub trait Observer {
    /// A line worth showing: what starts, what finished.
    fn note(&mut self, _msg: &str) {}
    /// A training job `label` starts (or resumes) towards `total` steps.
    fn begin(&mut self, _label: &str, _total: u64) {}
    /// The running job reached `step`.
    fn step(&mut self, _step: u64) {}
    /// The running job ended.
    fn end(&mut self) {}
    /// An evaluation wrote its report into `dir`; `x` are samples with their `labels` (for a
    /// picture beside the report).
    fn samples(&mut self, _dir: &Path, _x: &Tensor, _labels: &[i64]) -> Result<()> {
        Ok(())
    }
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Where a report's figures came from (recorded in every report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The command that wrote the report.
    pub command: String,
    /// The source commit.
    pub commit: String,
    /// CPU / GPU and thread count.
    pub hardware: String,
}

impl Provenance {
    /// This process: its command line, the commit of the working directory's checkout and
    /// the hardware. A binary that knows the commit it was built from uses [`Self::of_build`].
    pub fn of_this_process() -> Self {
        Self::of_build(&git_commit())
    }

    /// This process, built from `commit`: its command line, that commit and the hardware.
    pub fn of_build(commit: &str) -> Self {
        Self {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            commit: commit.to_string(),
            hardware: crate::evaluate::hardware(),
        }
    }
}

/// The current commit (short), or `unknown` outside a git checkout.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
