//! # msd — Multi-Student Distillation of conditional diffusion models
//!
//! Distils a slow conditional diffusion teacher (EDM) into K one-step student generators, each
//! owning a subset of the conditions, served behind a router (Song et al., "Multi-student
//! Diffusion Distillation for Better One-step Generators", arXiv 2410.23274).
//!
//! Layout: [`diffusion`] (EDM core), [`nets`] (networks), [`model`] (preconditioned models),
//! [`data`] (datasets), [`train`] (optimiser, checkpoints), [`teacher`] (teacher training).

pub mod bench;
pub mod bundle;
pub mod config;
pub mod data;
pub mod diffusion;
pub mod distill;
pub mod draw;
pub mod error;
pub mod eval;
pub mod eval_run;
pub mod evaluate;
pub mod experiment;
pub mod launch;
pub mod limits;
pub mod model;
pub mod nets;
pub mod partition;
pub mod pipeline;
pub mod run;
pub mod runtime;
mod tagged;
pub mod teacher;
pub mod text;
pub mod train;
pub mod viz;

pub use error::{Error, Result};

#[cfg(test)]
pub(crate) mod test_support;

/// libtorch's random generator is process-global and unit tests run on parallel threads: tests
/// whose numbers depend on it hold this lock so each sees only its own seeded stream.
#[cfg(test)]
pub(crate) fn rng_guard() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
