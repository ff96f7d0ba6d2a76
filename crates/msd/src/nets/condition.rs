//! What a network is conditioned on, and the input layer that turns a condition into the
//! network's conditioning vector.
//!
//! - [`Conditioning::Class`] (the default, and what every `model.json` without a `cond` field
//!   means): the condition is a class index `[B]` int64 in `0..=num_classes`, looked up in a
//!   learned table whose last row (`num_classes`) is the null label of classifier-free guidance.
//! - [`Conditioning::Embedding`]: the condition is a prompt embedding `[B, dim]` float (from
//!   [`crate::nets::text_encoder`]), mapped by a learned affine projection `W·e + b`.
//!
//! **The null embedding is the zero vector.** Real prompt embeddings are L2-normalised
//! (‖e‖ = 1), so 0 is never a real prompt; the projection maps it to its bias `b`, so the
//! unconditional conditioning vector is still learned (through embedding dropout, which replaces
//! a training prompt by 0), at no extra parameters; and the null condition can be built anywhere
//! without the network (guidance, dropout, unconditional rows): [`null_like`] is `zeros_like`.
//! The price: cond(e) − cond(∅) = W·e is linear in e (the null is not a free vector); the
//! network's non-linear layers after the projection absorb that.

use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// What a network is conditioned on (`cond` in a net config; absent = class labels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Conditioning {
    /// Class labels `[B]` int64; `num_classes` is the null label.
    #[default]
    Class,
    /// Prompt embeddings `[B, dim]` float; the zero vector is the null embedding.
    Embedding { dim: i64 },
}

impl Conditioning {
    /// True for class labels (the default; such configs serialise without a `cond` field, so
    /// existing `model.json` files and config hashes are unchanged).
    pub fn is_class(&self) -> bool {
        matches!(self, Conditioning::Class)
    }

    /// The embedding width, for embedding conditioning.
    pub fn embedding_dim(&self) -> Option<i64> {
        match self {
            Conditioning::Class => None,
            Conditioning::Embedding { dim } => Some(*dim),
        }
    }

    /// Checks value ranges; errors name the field.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            Conditioning::Embedding { dim } if *dim < 1 => Err(crate::Error::config(
                "net.cond.dim",
                format!("must be ≥ 1, got {dim}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The null condition for a batch of conditions `cond`: `null_label` for class labels (int),
/// the zero vector for embeddings (float). Same shape, kind and device as `cond`.
pub fn null_like(cond: &Tensor, null_label: i64) -> Tensor {
    if cond.is_floating_point() {
        cond.zeros_like()
    } else {
        cond.full_like(null_label)
    }
}

/// Condition dropout: rows `i` with `drop[i]` replaced by the null condition (see
/// [`null_like`]). `cond`: `[B]` int64 or `[B, dim]` float, `drop.len() == B`.
pub fn drop_conditions(cond: &Tensor, drop: &[bool], null_label: i64) -> crate::Result<Tensor> {
    let b = cond.size().first().copied().unwrap_or(0);
    if drop.len() as i64 != b {
        return Err(crate::Error::Invalid(format!(
            "condition dropout: {} flags for {b} conditions",
            drop.len()
        )));
    }
    let keep: Vec<bool> = drop.iter().map(|d| !d).collect();
    let mut mask = Tensor::from_slice(&keep).to_device(cond.device());
    for _ in 1..cond.dim() {
        mask = mask.unsqueeze(-1);
    }
    Ok(cond.f_where_self(&mask, &null_like(cond, null_label))?)
}

/// The input layer of the conditioning path: a label table or an embedding projection, both
/// giving a `[B, width]` vector.
#[derive(Debug)]
pub enum ConditionInput {
    /// `num_classes + 1` rows (parameters `label.weight`).
    Label(nn::Embedding),
    /// `dim → width` affine map (parameters `cond_proj.weight`, `cond_proj.bias`).
    Project(nn::Linear),
}

impl ConditionInput {
    /// Builds the layer for `cond` under `p` (`p / "label"` or `p / "cond_proj"`).
    pub fn new(p: &nn::Path, cond: Conditioning, num_classes: i64, width: i64) -> Self {
        match cond {
            Conditioning::Class => ConditionInput::Label(nn::embedding(
                p / "label",
                num_classes + 1,
                width,
                Default::default(),
            )),
            Conditioning::Embedding { dim } => {
                ConditionInput::Project(nn::linear(p / "cond_proj", dim, width, Default::default()))
            }
        }
    }

    /// `cond`: `[B]` int64 labels or `[B, dim]` float embeddings → `[B, width]` in `kind`.
    pub fn forward(&self, cond: &Tensor, kind: tch::Kind) -> Tensor {
        match self {
            ConditionInput::Label(e) => e.forward(cond),
            ConditionInput::Project(l) => l.forward(&cond.to_kind(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn class_is_the_default_and_serialises_as_before() {
        let c: Conditioning = serde_json::from_str(r#"{"kind":"class"}"#).unwrap();
        assert!(c.is_class());
        assert_eq!(Conditioning::default(), Conditioning::Class);
        let e: Conditioning = serde_json::from_str(r#"{"kind":"embedding","dim":384}"#).unwrap();
        assert_eq!(e.embedding_dim(), Some(384));
        assert!(
            serde_json::from_str::<Conditioning>(r#"{"kind":"embedding","dim":3,"x":1}"#).is_err()
        );
        assert!(Conditioning::Embedding { dim: 0 }
            .validate()
            .unwrap_err()
            .to_string()
            .contains("net.cond.dim"));
    }

    #[test]
    fn null_is_the_null_label_or_the_zero_vector() {
        let l = Tensor::from_slice(&[1i64, 2]);
        assert_eq!(
            Vec::<i64>::try_from(null_like(&l, 10)).unwrap(),
            vec![10, 10]
        );
        let e = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let n = null_like(&e, 10);
        assert_eq!(n.size(), vec![2, 3]);
        assert_eq!(n.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }

    #[test]
    fn dropout_replaces_exactly_the_flagged_rows() {
        let l = Tensor::from_slice(&[1i64, 2, 3]);
        let d = drop_conditions(&l, &[false, true, false], 10).unwrap();
        assert_eq!(Vec::<i64>::try_from(d).unwrap(), vec![1, 10, 3]);
        let e = Tensor::ones([3, 2], (Kind::Float, Device::Cpu));
        let d = drop_conditions(&e, &[true, false, true], 10).unwrap();
        let v: Vec<f32> = Vec::try_from(d.flatten(0, -1)).unwrap();
        assert_eq!(v, vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert!(drop_conditions(&e, &[true], 10).is_err());
    }

    #[test]
    fn the_projection_maps_the_null_embedding_to_its_bias() {
        // The projection's initialisation draws from libtorch's global generator.
        let _rng = crate::rng_guard();
        let vs = nn::VarStore::new(Device::Cpu);
        let inp = ConditionInput::new(&vs.root(), Conditioning::Embedding { dim: 4 }, 10, 6);
        let out = inp.forward(
            &Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)),
            Kind::Float,
        );
        assert_eq!(out.size(), vec![2, 6]);
        let bias = vs.variables()["cond_proj.bias"].shallow_clone();
        assert!(out.get(1).allclose(&bias, 0.0, 0.0, false));
        assert!(!vs.variables().contains_key("label.weight"));
    }
}
