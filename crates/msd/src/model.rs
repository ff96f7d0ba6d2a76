//! `EdmModel`: a network, its weights, and EDM preconditioning — a [`Denoiser`] that can be saved,
//! loaded (with a check of every tensor name and shape) and copied.
//!
//! ```
//! use msd::{model::EdmModel, nets::{NetConfig, MlpConfig}, diffusion::{Denoiser, EdmPrecond}};
//! let cfg = NetConfig::Mlp(MlpConfig { dim: 2, num_classes: 3, width: 16, depth: 1, noise_freqs: 4, cond: Default::default() });
//! let m = EdmModel::new(&cfg, EdmPrecond::default(), tch::Device::Cpu);
//! let x = tch::Tensor::zeros([5, 2], (tch::Kind::Float, tch::Device::Cpu));
//! let d = m.denoise(&x, &tch::Tensor::ones([5], (tch::Kind::Float, tch::Device::Cpu)), &tch::Tensor::zeros([5], (tch::Kind::Int64, tch::Device::Cpu)));
//! assert_eq!(d.size(), vec![5, 2]);
//! ```

use crate::diffusion::precond::broadcast_to;
use crate::diffusion::{Denoiser, EdmPrecond};
use crate::nets::{NetConfig, Network, Precision};
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
    /// Precision the network computes in (weights are stored in its kind).
    precision: Precision,
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
            precision: Precision::F32,
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

    /// Writes `dir/model.json` and `dir/model.safetensors` atomically. Only f32 models are
    /// saved (a bf16 copy is for inference; its weights lost precision).
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        self.require_f32("save_dir")?;
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

    /// Copies every weight that `other` has under the same name and shape (the rest keep their
    /// values); returns the names copied. For starting one network from another that shares
    /// most of it (a prompt-conditional network from a class-conditional one).
    pub fn copy_shared_from(&mut self, other: &EdmModel) -> Result<Vec<String>> {
        let src = other.vs.variables();
        let mut copied = Vec::new();
        tch::no_grad(|| -> Result<()> {
            for (name, mut d) in self.vs.variables() {
                if let Some(s) = src.get(&name) {
                    if s.size() == d.size() {
                        d.f_copy_(&s.to_kind(d.kind()))?;
                        copied.push(name);
                    }
                }
            }
            Ok(())
        })?;
        copied.sort();
        Ok(copied)
    }

    /// The precision the network computes in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Casts the weights to `p` (in place; f32 → bf16 → f32 loses the low 16 bits of every
    /// weight). The EDM preconditioning and the model's inputs and outputs stay f32.
    pub fn set_precision(&mut self, p: Precision) {
        if p != self.precision {
            match p {
                Precision::F32 => self.vs.float(),
                Precision::Bf16 => self.vs.bfloat16(),
            }
            self.precision = p;
        }
    }

    /// A copy of this model computing in `p`, for inference or as the low-precision shadow of
    /// mixed-precision training (see [`EdmModel::sync_from`] and [`EdmModel::take_grads_from`]).
    /// Building it draws initial weights from the global torch RNG before overwriting them,
    /// like any fresh model.
    pub fn copy_in(&self, p: Precision) -> Result<EdmModel> {
        let mut m = EdmModel::from_spec(&self.spec, self.device());
        m.set_precision(self.precision);
        m.copy_from(self)?;
        m.set_precision(p);
        Ok(m)
    }

    /// Overwrites this model's weights with `master`'s, cast to this model's precision (after
    /// each optimiser step of the master, for a low-precision shadow).
    pub fn sync_from(&mut self, master: &EdmModel) -> Result<()> {
        self.copy_from(master)
    }

    /// Mixed-precision backward step: adds this (shadow) model's gradients, cast to the
    /// master's kind, into `master`'s gradients and clears them here. Call after `backward()`
    /// of a loss computed with the shadow, before the master's optimiser step.
    pub fn take_grads_from(master: &EdmModel, shadow: &EdmModel) -> Result<()> {
        if master.spec.net != shadow.spec.net {
            return Err(Error::Invalid(
                "take_grads_from: the two models have different network configs".into(),
            ));
        }
        let src = shadow.vs.variables();
        let dst = master.vs.variables();
        // Give every trainable master weight a gradient tensor (a backward of 0·Σw adds zeros).
        let missing: Vec<&Tensor> = dst
            .values()
            .filter(|v| v.requires_grad() && !v.grad().defined())
            .collect();
        if !missing.is_empty() {
            let zero = missing
                .iter()
                .map(|v| v.sum(Kind::Float) * 0.0)
                .reduce(|a, b| a + b)
                .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, master.device())));
            zero.f_backward()?;
        }
        tch::no_grad(|| {
            for (name, d) in &dst {
                let Some(s) = src.get(name) else {
                    return Err(Error::Invalid(format!(
                        "take_grads_from: no `{name}` in the shadow"
                    )));
                };
                let mut sg = s.grad();
                if !sg.defined() || !d.requires_grad() {
                    continue;
                }
                let _ = d.grad().f_add_(&sg.to_kind(d.kind()))?;
                let _ = sg.f_zero_()?;
            }
            Ok(())
        })
    }

    /// Errors unless the model is f32 (saving, training).
    fn require_f32(&self, what: &str) -> Result<()> {
        if self.precision == Precision::F32 {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{what}: the model computes in {}; only f32 models can be saved or trained",
                self.precision
            )))
        }
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
        // The network computes in the weights' kind; both casts are no-ops in f32.
        let f = self
            .net
            .forward_t(
                &(x * broadcast_to(&c_in, x)).to_kind(self.precision.kind()),
                &c_noise,
                labels,
                train,
            )
            .to_kind(x.kind());
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
            &(x * broadcast_to(&c_in, x)).to_kind(self.precision.kind()),
            &c_noise,
            labels,
            train,
        )?;
        Some((
            broadcast_to(&c_skip, x) * x + broadcast_to(&c_out, x) * f.to_kind(x.kind()),
            b.to_kind(x.kind()),
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
