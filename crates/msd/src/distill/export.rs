//! Which generator a distillation stage exports as its model (`distill.export`): the EMA of the
//! generator's weights (our default: smoother one-step samples at small batch sizes), or the raw
//! generator, as DMD2 evaluates it. Both are in every checkpoint either way.

use serde::{Deserialize, Serialize};

/// The exported generator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Export {
    /// The exponential moving average of the generator (`distill.ema_decay`).
    #[default]
    Ema,
    /// The generator's own weights (DMD2).
    Raw,
}

impl Export {
    /// Whether this is the default (kept out of serialised configs, so older config hashes hold).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}
