//! Training machinery shared by every stage: a resumable AdamW, EMA, gradient clipping, LR
//! warm-up, atomic checkpoints, per-step seeding and the stats log.

pub mod adamw;
pub mod checkpoint;
pub mod ema;
pub mod lock;
pub mod seed;
pub mod stats;
pub mod stop;

pub use adamw::{AdamW, AdamWConfig};
pub use checkpoint::{CheckpointDir, TrainState};
pub use ema::ema_update;
pub use seed::{step_rng, step_seed};
pub use stats::StatsLog;
