//! The ADM discriminator head (DMD2): it sits on the encoder bottleneck of the fake-score UNet and
//! maps it to one logit per sample: conv 4×4 (stride 2 when the bottleneck is at least 4 wide,
//! else stride 1) → GroupNorm → SiLU → conv whose kernel covers what is left → `[B]`.
//!
//! Shapes: bottleneck `[B, C, S, S]` → logits `[B]`.

use super::unet::norm_groups;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// Configuration of [`DiscHead`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscHeadConfig {
    /// Hidden channels (0 = the bottleneck's channels).
    pub channels: i64,
}

/// The head's layers.
#[derive(Debug)]
pub struct DiscHead {
    conv: nn::Conv2D,
    norm: nn::GroupNorm,
    out: nn::Conv2D,
}

impl DiscHead {
    /// A head for a bottleneck of shape `[c, s, s]` (one sample), parameters under `p`.
    pub fn new(p: nn::Path, bottleneck: &[i64], cfg: &DiscHeadConfig) -> Self {
        let (c, s) = (bottleneck[0], bottleneck[1]);
        let hidden = if cfg.channels > 0 { cfg.channels } else { c };
        let (stride, pad) = if s >= 4 { (2, 1) } else { (1, 1) };
        let conv = nn::conv2d(
            &p / "conv",
            c,
            hidden,
            4,
            nn::ConvConfig {
                stride,
                padding: pad,
                ..Default::default()
            },
        );
        // Spatial size after the first conv: ⌊(s + 2·pad − 4)/stride⌋ + 1.
        let s1 = ((s + 2 * pad - 4) / stride + 1).max(1);
        let norm = nn::group_norm(&p / "norm", norm_groups(hidden), hidden, Default::default());
        let out = nn::conv2d(&p / "out", hidden, 1, s1, Default::default());
        Self { conv, norm, out }
    }

    /// `bottleneck`: `[B, C, S, S]` → logits `[B]`.
    pub fn forward(&self, bottleneck: &Tensor) -> Tensor {
        let h = self.norm.forward(&self.conv.forward(bottleneck)).silu();
        self.out
            .forward(&h)
            .flatten(1, -1)
            .mean_dim(1, false, tch::Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn one_logit_per_sample_for_several_bottleneck_sizes() {
        for s in [2, 3, 4, 7, 8] {
            let vs = nn::VarStore::new(Device::Cpu);
            let h = DiscHead::new(vs.root(), &[16, s, s], &DiscHeadConfig::default());
            let y = h.forward(&Tensor::randn([5, 16, s, s], (Kind::Float, Device::Cpu)));
            assert_eq!(y.size(), vec![5], "bottleneck {s}×{s}");
        }
    }
}
