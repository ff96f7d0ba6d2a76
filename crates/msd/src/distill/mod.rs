//! Distillation of a teacher into one-step students. One file per stage method, each a
//! [`crate::train::Method`] on the shared runner: [`tsm`] (stage 0 for smaller students),
//! [`dm`] (distribution matching), [`adm`] (DM plus a diffusion GAN), [`cd`] (consistency
//! distillation, the alternative per-student method); [`config`] holds the `[distill]` table,
//! [`pairs`] the shared regression pairs and [`regression`] their distance, [`student`] one
//! student's job and its dispatch; [`checks`] the consistency rules (σ_max of the pairs,
//! guidance needs label dropout, no dropout while distilling), [`grad_share`] the regression
//! term's share of the generator's gradient, [`export`] which generator a stage exports,
//! [`preset`] which optimisation preset (msd defaults / DMD2 reference) a config follows.

pub mod adm;
pub mod cd;
pub mod checks;
pub mod config;
pub mod dm;
pub mod export;
#[cfg(test)]
mod fidelity_tests;
pub mod grad_share;
pub mod pairs;
pub mod preset;
pub mod regression;
pub mod student;
pub mod tsm;

pub use config::DistillConfig;
pub use student::{distill_student, StudentJob};

use serde::{Deserialize, Serialize};

/// The stages of a student, in their order: TSM (smaller students), DM, ADM; or CD instead of
/// DM/ADM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum StageKind {
    /// Teacher Score Matching: initialises a smaller student (stage 0).
    Tsm,
    /// Distribution matching (stage 1).
    Dm,
    /// Adversarial distribution matching (stage 2), resumed from DM.
    Adm,
    /// Consistency distillation (instead of DM/ADM).
    Cd,
}

impl StageKind {
    /// The stage's name: its directory under `students/<k>/` and its tag in `stats.jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Tsm => "tsm",
            StageKind::Dm => "dm",
            StageKind::Adm => "adm",
            StageKind::Cd => "cd",
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StageKind {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        [StageKind::Tsm, StageKind::Dm, StageKind::Adm, StageKind::Cd]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                crate::Error::Invalid(format!("unknown stage `{s}` (expected tsm, dm, adm or cd)"))
            })
    }
}
