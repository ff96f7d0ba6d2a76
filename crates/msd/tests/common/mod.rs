//! Fixtures shared by the library's integration tests: the lock on what is process-global
//! (libtorch's generator, the stop flag) for tests of one binary that run on parallel threads,
//! and the small 2-D MLP configs of the toy.

#![allow(dead_code)] // each test binary uses a part

use msd::model::ModelSpec;
use msd::nets::{Conditioning, MlpConfig, NetConfig};
use std::sync::{Mutex, MutexGuard};

/// Held by every test of a binary that seeds libtorch's generator or requests a stop.
pub fn global_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 2-D MLP with `num_classes` classes, `width` × `depth` hidden layers and `noise_freqs`
/// noise frequencies, class-conditional.
pub fn mlp(num_classes: i64, width: i64, depth: i64, noise_freqs: i64) -> NetConfig {
    mlp_with(
        num_classes,
        width,
        depth,
        noise_freqs,
        Conditioning::default(),
    )
}

/// [`mlp`] with another conditioning.
pub fn mlp_with(
    num_classes: i64,
    width: i64,
    depth: i64,
    noise_freqs: i64,
    cond: Conditioning,
) -> NetConfig {
    NetConfig::Mlp(MlpConfig {
        dim: 2,
        num_classes,
        width,
        depth,
        noise_freqs,
        cond,
    })
}

/// [`mlp`] with the default EDM preconditioning.
pub fn mlp_spec(num_classes: i64, width: i64, depth: i64, noise_freqs: i64) -> ModelSpec {
    ModelSpec {
        net: mlp(num_classes, width, depth, noise_freqs),
        precond: Default::default(),
    }
}
