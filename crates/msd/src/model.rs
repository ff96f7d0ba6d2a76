//! `EdmModel`: a network, its weights, and EDM preconditioning — a [`Denoiser`] that can be saved,
//! loaded (with a check of every tensor name and shape) and copied.
//!
//! ```
//! use msd::{model::EdmModel, nets::{NetConfig, MlpConfig}, diffusion::{Denoiser, EdmPrecond}};
//! let cfg = NetConfig::Mlp(MlpConfig { dim: 2, num_classes: 3, width: 16, depth: 1, noise_freqs: 4 });
//! let m = EdmModel::new(&cfg, EdmPrecond::default(), tch::Device::Cpu);
//! let x = tch::Tensor::zeros([5, 2], (tch::Kind::Float, tch::Device::Cpu));
//! let d = m.denoise(&x, &tch::Tensor::ones([5], (tch::Kind::Float, tch::Device::Cpu)), &tch::Tensor::zeros([5], (tch::Kind::Int64, tch::Device::Cpu)));
//! assert_eq!(d.size(), vec![5, 2]);
//! ```

use crate::diffusion::precond::broadcast_to;
use crate::diffusion::{Denoiser, EdmPrecond};
use crate::nets::{NetConfig, Network};
use crate::train::checkpoint;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// What is needed to rebuild a model: the network config and the preconditioning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub net: NetConfig,
    #[serde(default)]
    pub precond: EdmPrecond,
}

/// A preconditioned EDM denoiser with its own `VarStore`.
pub struct EdmModel {
    pub vs: nn::VarStore,
    net: Box<dyn Network>,
    pub spec: ModelSpec,
}

impl EdmModel {
    /// Builds a freshly initialised model on `device` (initialisation uses the global torch RNG).
    pub fn new(net: &NetConfig, precond: EdmPrecond, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let built = net.build(vs.root());
        Self {
            vs,
            net: built,
            spec: ModelSpec {
                net: net.clone(),
                precond,
            },
        }
    }

    /// Builds from a spec.
    pub fn from_spec(spec: &ModelSpec, device: Device) -> Self {
        Self::new(&spec.net, spec.precond, device)
    }

    /// Loads a model saved by [`EdmModel::save_dir`]: `dir/model.json` + `dir/model.safetensors`.
    pub fn load_dir(dir: &Path, device: Device) -> Result<Self> {
        let spec: ModelSpec = checkpoint::read_json(&dir.join("model.json"))?;
        spec.net.validate()?;
        let mut m = Self::from_spec(&spec, device);
        m.load_weights(&dir.join("model.safetensors"))?;
        m.vs.freeze();
        Ok(m)
    }

    /// Writes `dir/model.json` and `dir/model.safetensors` atomically.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        checkpoint::save_varstore(&self.vs, &dir.join("model.safetensors"))?;
        checkpoint::write_json_atomic(&dir.join("model.json"), &self.spec)
    }

    /// Loads weights, checking every name and shape against this model's config.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        checkpoint::load_varstore(&mut self.vs, path)
    }

    /// Copies all weights from a model with the same config.
    pub fn copy_from(&mut self, other: &EdmModel) -> Result<()> {
        if self.spec.net != other.spec.net {
            return Err(Error::Invalid(
                "copy_from: the two models have different network configs".into(),
            ));
        }
        tch::no_grad(|| self.vs.copy(&other.vs)).map_err(Error::from)
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// Shape of one sample's encoder bottleneck, for networks that have one (the UNet).
    pub fn bottleneck_shape(&self) -> Option<Vec<i64>> {
        match &self.spec.net {
            NetConfig::Unet(c) => Some(c.bottleneck_shape()),
            _ => None,
        }
    }

    /// Number of real classes.
    pub fn num_classes(&self) -> i64 {
        self.spec.net.num_classes()
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// D(x; σ, c) with train-mode switch. `x`: `[B, ...]`, `sigma`: `[B]`, `labels`: `[B]`.
    pub fn denoise_t(&self, x: &Tensor, sigma: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let sigma = sigma.to_kind(Kind::Float);
        let (c_skip, c_out, c_in, c_noise) = self.spec.precond.coefficients_t(&sigma);
        let f = self
            .net
            .forward_t(&(x * broadcast_to(&c_in, x)), &c_noise, labels, train);
        broadcast_to(&c_skip, x) * x + broadcast_to(&c_out, x) * f
    }

    /// D(x; σ, c) together with the network's encoder bottleneck (computed on c_in·x), for
    /// networks that have one (the UNet); `None` otherwise. Shapes as [`Self::denoise_t`], plus
    /// the bottleneck `[B, ...]` of [`crate::nets::UNetConfig::bottleneck_shape`].
    pub fn denoise_with_bottleneck(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        labels: &Tensor,
        train: bool,
    ) -> Option<(Tensor, Tensor)> {
        let sigma = sigma.to_kind(Kind::Float);
        let (c_skip, c_out, c_in, c_noise) = self.spec.precond.coefficients_t(&sigma);
        let (f, b) = self.net.forward_with_bottleneck(
            &(x * broadcast_to(&c_in, x)),
            &c_noise,
            labels,
            train,
        )?;
        Some((
            broadcast_to(&c_skip, x) * x + broadcast_to(&c_out, x) * f,
            b,
        ))
    }

    /// One-step generation G(z, c) = D(σ_max·z; σ_max, c). `z`: `[B, ...]` → `[B, ...]`.
    pub fn generate(&self, z: &Tensor, labels: &Tensor, sigma_max: f64) -> Tensor {
        self.generate_t(z, labels, sigma_max, false)
    }

    /// [`EdmModel::generate`] with the train-mode switch (dropout) exposed.
    pub fn generate_t(&self, z: &Tensor, labels: &Tensor, sigma_max: f64, train: bool) -> Tensor {
        let s = Tensor::full([z.size()[0]], sigma_max, (Kind::Float, z.device()));
        self.denoise_t(&(z * sigma_max), &s, labels, train)
    }

    /// Checks that every label is a real class of this model.
    pub fn check_labels(&self, labels: &[i64]) -> Result<()> {
        let n = self.num_classes();
        match labels.iter().find(|&&c| c < 0 || c >= n) {
            Some(&class) => Err(Error::UnknownClass {
                class,
                num_classes: n,
            }),
            None => Ok(()),
        }
    }
}

impl Denoiser for EdmModel {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: &Tensor) -> Tensor {
        self.denoise_t(x, sigma, labels, false)
    }

    /// Every network allocates the null label `num_classes` for guidance.
    fn null_label(&self) -> Option<i64> {
        Some(self.num_classes())
    }
}
