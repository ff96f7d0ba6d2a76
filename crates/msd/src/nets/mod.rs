//! Networks. Each is built from a serialisable config and implements [`Network`], the raw F of
//! EDM's D = c_skip·x + c_out·F(c_in·x; c_noise, c). [`crate::model::EdmModel`] adds the
//! preconditioning and the weights.

pub mod condition;
pub mod disc_head;
pub mod embedding;
pub mod mlp;
pub mod precision;
pub mod text_encoder;
pub mod unet;

pub use condition::Conditioning;
pub use mlp::{Mlp, MlpConfig};
pub use precision::Precision;
pub use unet::{UNet, UNetConfig};

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// A raw conditional network F.
pub trait Network: Send {
    /// `x`: `[B, ...]` (already scaled by c_in), `c_noise`: `[B]`, `labels`: the conditions —
    /// `[B]` int64 in `0..=num_classes` (`num_classes` is the null label for guidance), or for
    /// embedding-conditioned networks `[B, dim]` float (the zero vector is the null; see
    /// [`condition`]). Returns `[B, ...]`.
    /// Computes in `x`'s kind, which must be the weights' kind (see [`Precision`]).
    fn forward_t(&self, x: &Tensor, c_noise: &Tensor, labels: &Tensor, train: bool) -> Tensor;

    /// The output together with the encoder bottleneck, for networks that have one (the UNet:
    /// see [`UNet::forward_with_bottleneck`] for the shapes); `None` otherwise.
    fn forward_with_bottleneck(
        &self,
        _x: &Tensor,
        _c_noise: &Tensor,
        _labels: &Tensor,
        _train: bool,
    ) -> Option<(Tensor, Tensor)> {
        None
    }
}

/// Any network this crate can build, tagged by `kind` in TOML/JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NetConfig {
    Mlp(MlpConfig),
    Unet(UNetConfig),
}

impl<'de> Deserialize<'de> for NetConfig {
    /// Tagged by `kind`; decoded by hand so that errors name the offending field (serde's
    /// internally tagged enums lose the field path).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (kind, body) = crate::tagged::split_tag(d)?;
        match kind.as_str() {
            "mlp" => crate::tagged::decode_named(body).map(NetConfig::Mlp),
            "unet" => crate::tagged::decode_named(body).map(NetConfig::Unet),
            k => Err(serde::de::Error::custom(format!(
                "unknown network kind `{k}` (expected mlp or unet)"
            ))),
        }
    }
}

impl NetConfig {
    /// Builds the network with its parameters under `path`.
    pub fn build(&self, path: nn::Path) -> Box<dyn Network> {
        match self {
            NetConfig::Mlp(c) => Box::new(Mlp::new(path, c)),
            NetConfig::Unet(c) => Box::new(UNet::new(path, c)),
        }
    }

    /// What the network is conditioned on.
    pub fn cond(&self) -> Conditioning {
        match self {
            NetConfig::Mlp(c) => c.cond,
            NetConfig::Unet(c) => c.cond,
        }
    }

    /// Number of real classes (the null label is this value).
    pub fn num_classes(&self) -> i64 {
        match self {
            NetConfig::Mlp(c) => c.num_classes,
            NetConfig::Unet(c) => c.num_classes,
        }
    }

    /// Shape of one data sample (without the batch axis).
    pub fn sample_shape(&self) -> Vec<i64> {
        match self {
            NetConfig::Mlp(c) => vec![c.dim],
            NetConfig::Unet(c) => c.sample_shape(),
        }
    }

    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            NetConfig::Mlp(c) => c.validate(),
            NetConfig::Unet(c) => c.validate(),
        }
    }
}
