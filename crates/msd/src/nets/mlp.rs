//! A conditional MLP for low-dimensional (toy) data: the noise embedding and a learned label
//! embedding (or a projected prompt embedding, see [`super::condition`]) are mixed into a conditioning vector that shifts every hidden layer.

use super::condition::{ConditionInput, Conditioning};
use super::embedding::fourier_features;
use super::Network;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// Configuration of [`Mlp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    /// Data dimension.
    pub dim: i64,
    /// Number of classes (an extra null label is always allocated for guidance).
    pub num_classes: i64,
    /// Hidden width.
    pub width: i64,
    /// Number of hidden layers.
    pub depth: i64,
    /// Number of Fourier frequencies for the noise embedding.
    #[serde(default = "default_noise_freqs")]
    pub noise_freqs: i64,
    /// What the network is conditioned on (absent: class labels).
    #[serde(default, skip_serializing_if = "Conditioning::is_class")]
    pub cond: Conditioning,
}

fn default_noise_freqs() -> i64 {
    16
}

impl MlpConfig {
    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> crate::Result<()> {
        for (name, v) in [
            ("net.dim", self.dim),
            ("net.num_classes", self.num_classes),
            ("net.width", self.width),
            ("net.depth", self.depth),
            ("net.noise_freqs", self.noise_freqs),
        ] {
            if v < 1 {
                return Err(crate::Error::config(name, format!("must be ≥ 1, got {v}")));
            }
            let max = crate::limits::MAX_WIDTH;
            if v > max {
                return Err(crate::Error::config(
                    name,
                    format!("must be ≤ {max}, got {v}"),
                ));
            }
        }
        self.cond.validate()
    }
}

/// The MLP network F(x, c_noise, label).
#[derive(Debug)]
pub struct Mlp {
    input: nn::Linear,
    noise: nn::Linear,
    label: ConditionInput,
    hidden: Vec<(nn::Linear, nn::Linear)>,
    output: nn::Linear,
    noise_freqs: i64,
}

impl Mlp {
    /// Builds the MLP with parameters under `p`.
    pub fn new(p: nn::Path, c: &MlpConfig) -> Self {
        let w = c.width;
        let input = nn::linear(&p / "input", c.dim, w, Default::default());
        let noise = nn::linear(&p / "noise", 2 * c.noise_freqs, w, Default::default());
        let label = ConditionInput::new(&p, c.cond, c.num_classes, w);
        let hidden = (0..c.depth)
            .map(|i| {
                let q = &p / "hidden" / i;
                (
                    nn::linear(&q / "cond", w, w, Default::default()),
                    nn::linear(&q / "linear", w, w, Default::default()),
                )
            })
            .collect();
        let output = nn::linear(&p / "output", w, c.dim, Default::default());
        Self {
            input,
            noise,
            label,
            hidden,
            output,
            noise_freqs: c.noise_freqs,
        }
    }
}

impl Network for Mlp {
    /// `x`: `[B, dim]`, `c_noise`: `[B]`, `labels`: `[B]` int64 (class conditioning) or
    /// `[B, cond.dim]` float (embedding conditioning) → `[B, dim]`.
    fn forward_t(&self, x: &Tensor, c_noise: &Tensor, labels: &Tensor, _train: bool) -> Tensor {
        let emb = fourier_features(c_noise, self.noise_freqs, 0.25, 16.0).to_kind(x.kind());
        let cond = (self.noise.forward(&emb) + self.label.forward(labels, x.kind())).silu();
        let mut h = self.input.forward(x);
        for (c, l) in &self.hidden {
            h = &h + l.forward(&(h.silu() + c.forward(&cond))).silu();
        }
        self.output.forward(&h.silu())
    }
}
