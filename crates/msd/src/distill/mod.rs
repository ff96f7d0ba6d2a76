//! Distillation of a teacher into one-step students: the DM losses ([`dm`]), the shared
//! regression pairs ([`pairs`]), and the per-student stage trainer ([`trainer`]).

pub mod adm;
pub mod checks;
pub mod dm;
pub mod export;
#[cfg(test)]
mod fidelity_tests;
pub mod grad_share;
pub mod pairs;
pub mod regression;
pub mod trainer;

pub use trainer::{distill_student, DistillConfig, StudentJob};
