//! Fixtures shared by the library's unit tests: the tiny UNet (1×8×8 inputs, two levels, the
//! shape of the project's students), models with their zero-initialised layers randomised (a
//! fresh UNet outputs F = 0), and the relative error of two tensors.

use crate::diffusion::EdmPrecond;
use crate::model::EdmModel;
use crate::nets::{NetConfig, UNetConfig};
use tch::{Device, Kind, Tensor};

/// The tiny UNet: 3 classes, 8 base channels × [1, 2], one block per level, attention at 4×4
/// with 2 heads, no dropout. Variants change fields with `..tiny_unet_config()`.
pub(crate) fn tiny_unet_config() -> UNetConfig {
    UNetConfig {
        in_channels: 1,
        resolution: 8,
        num_classes: 3,
        base_channels: 8,
        channel_mult: vec![1, 2],
        blocks_per_level: 1,
        attn_resolutions: vec![4],
        heads: 2,
        dropout: 0.0,
        emb_mult: 2,
        noise_freqs: 4,
        cond: Default::default(),
    }
}

/// [`tiny_unet_config`] as a network config.
pub(crate) fn tiny_unet() -> NetConfig {
    NetConfig::Unet(tiny_unet_config())
}

/// The tiny UNet without attention (one head), with `num_classes` classes and `dropout`.
pub(crate) fn plain_tiny_unet(num_classes: i64, dropout: f64) -> UNetConfig {
    UNetConfig {
        num_classes,
        attn_resolutions: vec![],
        heads: 1,
        dropout,
        ..tiny_unet_config()
    }
}

/// A model of `cfg` seeded with `seed` whose zero-initialised weight layers are randomised
/// (× 0.1), so its F ≠ 0. Callers hold [`crate::rng_guard`].
pub(crate) fn random_model(cfg: &NetConfig, seed: i64) -> EdmModel {
    tch::manual_seed(seed);
    let m = EdmModel::new(cfg, EdmPrecond::default(), Device::Cpu);
    tch::no_grad(|| {
        for (_, mut v) in m.vs.variables() {
            if v.abs().max().double_value(&[]) == 0.0 && v.dim() > 1 {
                v.copy_(&(v.randn_like() * 0.1));
            }
        }
    });
    m
}

/// ‖a − b‖ / ‖b‖ in f64.
pub(crate) fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}
