//! Networks. Each is built from a serialisable config and implements [`Network`], the raw F of
//! EDM's D = c_skip·x + c_out·F(c_in·x; c_noise, c). [`crate::model::EdmModel`] adds the
//! preconditioning and the weights.

pub mod embedding;
pub mod mlp;

pub use mlp::{Mlp, MlpConfig};

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// A raw conditional network F.
pub trait Network: Send {
    /// `x`: `[B, ...]` (already scaled by c_in), `c_noise`: `[B]`, `labels`: `[B]` int64 in
    /// `0..=num_classes` (`num_classes` is the null label for guidance). Returns `[B, ...]`.
    fn forward_t(&self, x: &Tensor, c_noise: &Tensor, labels: &Tensor, train: bool) -> Tensor;
}

/// Any network this crate can build, tagged by `kind` in TOML/JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetConfig {
    Mlp(MlpConfig),
}

impl<'de> Deserialize<'de> for NetConfig {
    /// Tagged by `kind`; decoded by hand so that errors name the offending field (serde's
    /// internally tagged enums lose the field path).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, body) = crate::config::split_tag(d)?;
        match kind.as_str() {
            "mlp" => crate::config::decode_named(body).map(NetConfig::Mlp),
            k => Err(serde::de::Error::custom(format!(
                "unknown network kind `{k}` (expected mlp)"
            ))),
        }
    }
}

impl NetConfig {
    /// Builds the network with its parameters under `path`.
    pub fn build(&self, path: nn::Path) -> Box<dyn Network> {
        match self {
            NetConfig::Mlp(c) => Box::new(Mlp::new(path, c)),
        }
    }

    /// Number of real classes (the null label is this value).
    pub fn num_classes(&self) -> i64 {
        match self {
            NetConfig::Mlp(c) => c.num_classes,
        }
    }

    /// Shape of one data sample (without the batch axis).
    pub fn sample_shape(&self) -> Vec<i64> {
        match self {
            NetConfig::Mlp(c) => vec![c.dim],
        }
    }

    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            NetConfig::Mlp(c) => c.validate(),
        }
    }
}
