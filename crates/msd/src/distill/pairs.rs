//! Regression pairs (DMD): noise z, class c and the teacher's deterministic sample y = ODE(z, c),
//! generated once over **all** classes and shared, unfiltered, by every student (the paper found
//! that filtering them hurt mode coverage). Stored as `pairs.safetensors` (`z`, `labels`, `y`,
//! and `sigma_max`, the noise level the teacher's ODE started from).

use super::regression::FeatureDistance;
use crate::diffusion::{sample, SamplerConfig};
use crate::model::EdmModel;
use crate::train::checkpoint;
use crate::{Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The pairs, on one device.
pub struct RegressionPairs {
    /// `[N, ...]` noise.
    pub z: Tensor,
    /// `[N]` int64 classes.
    pub labels: Tensor,
    /// `[N, ...]` teacher outputs.
    pub y: Tensor,
    /// The σ_max the ODE started from (y = ODE(σ_max·z)); NaN when a file does not record it.
    pub sigma_max: f64,
    /// The network of the `perceptual` regression distance, when that distance is used (not
    /// stored with the pairs: see [`super::regression::attach_features`]).
    pub features: Option<FeatureDistance>,
}

impl RegressionPairs {
    /// Draws `per_class` pairs for every class of `teacher` with `cfg` (deterministic sampler
    /// expected; its classifier-free guidance applies), seeded by `seed`, in chunks of `chunk`
    /// samples.
    pub fn generate(
        teacher: &EdmModel,
        per_class: usize,
        cfg: &SamplerConfig,
        seed: u64,
        chunk: usize,
    ) -> Self {
        tch::manual_seed(seed as i64);
        let dev = teacher.device();
        let labels: Vec<i64> = (0..teacher.num_classes())
            .flat_map(|c| std::iter::repeat_n(c, per_class))
            .collect();
        let mut shape = vec![labels.len() as i64];
        shape.extend(teacher.spec.net.sample_shape());
        let z = Tensor::randn(shape.as_slice(), (Kind::Float, dev));
        let l = Tensor::from_slice(&labels).to_device(dev);
        let ys: Vec<Tensor> = (0..labels.len())
            .step_by(chunk.max(1))
            .map(|s| {
                let n = chunk.min(labels.len() - s) as i64;
                sample(
                    teacher,
                    &z.narrow(0, s as i64, n),
                    &l.narrow(0, s as i64, n),
                    cfg,
                )
                .expect("an EdmModel has a null label, so any guidance applies")
            })
            .collect();
        Self {
            z,
            labels: l,
            y: Tensor::cat(&ys, 0),
            sigma_max: cfg.sigma_max,
            features: None,
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the pairs atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        checkpoint::write_tensors_atomic(
            path,
            &[
                ("z".into(), self.z.shallow_clone()),
                ("labels".into(), self.labels.shallow_clone()),
                ("y".into(), self.y.shallow_clone()),
                ("sigma_max".into(), Tensor::from_slice(&[self.sigma_max])),
            ],
        )
    }

    /// Reads pairs, checking that the three tensors agree in length.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let t = checkpoint::read_tensors(path)?;
        let get = |k: &str| {
            t.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_device(device))
                .ok_or_else(|| Error::format(path, format!("missing tensor `{k}`")))
        };
        let p = Self {
            z: get("z")?,
            labels: get("labels")?,
            y: get("y")?,
            sigma_max: get("sigma_max")
                .ok()
                .and_then(|t| t.f_double_value(&[0]).ok())
                .unwrap_or(f64::NAN),
            features: None,
        };
        if p.z.size()[0] != p.len() || p.y.size()[0] != p.len() || p.z.size() != p.y.size() {
            return Err(Error::format(path, "z, labels and y disagree in shape"));
        }
        Ok(p)
    }

    /// The pairs at `idx` (`[n]` int64): `(z, labels, y)`.
    pub fn select(&self, idx: &Tensor) -> (Tensor, Tensor, Tensor) {
        (
            self.z.index_select(0, idx),
            self.labels.index_select(0, idx),
            self.y.index_select(0, idx),
        )
    }
}
