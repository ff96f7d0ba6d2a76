//! Training machinery shared by every stage: a resumable AdamW, EMA, gradient clipping, LR
//! warm-up, atomic checkpoints, per-step seeding, the stats log, and the [`Runner`] that every
//! stage's [`Method`] trains on.

pub mod adamw;
pub mod checkpoint;
pub mod ema;
pub mod lock;
pub mod runner;
pub mod seed;
pub mod stats;
pub mod stop;

pub use adamw::{AdamW, AdamWConfig};
pub use checkpoint::{CheckpointDir, CheckpointExtra, TrainState};
pub use ema::ema_update;
pub use runner::{LogLine, Method, Progress, Runner, Slot, StepReport, TrainSummary};
pub use seed::{step_rng, step_seed};
pub use stats::StatsLog;
