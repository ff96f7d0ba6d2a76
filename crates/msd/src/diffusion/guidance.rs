//! Classifier-free guidance: D_w = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)), where ∅ is the null
//! label a network learned through label dropout (for embedding conditions, the zero vector:
//! see [`crate::nets::condition`]). w = 1 is the plain conditional denoiser.
//!
//! The samplers apply their configured scale themselves (`SamplerConfig::guidance`, see
//! [`super::sample`]); wrap by hand only where guidance is not a sampler setting (the real score
//! of distribution matching has its own `real_guidance`).

use super::Denoiser;
use crate::nets::condition::null_like;
use tch::Tensor;

/// Wraps a denoiser with classifier-free guidance of scale `scale`.
pub struct Guided<'a> {
    pub inner: &'a dyn Denoiser,
    pub scale: f64,
    /// The label id meaning "no condition" (the network's `num_classes`).
    pub null_label: i64,
}

impl<'a> Guided<'a> {
    /// `inner` guided with `scale`, using the inner denoiser's null label; an error naming
    /// `field` when the scale is not 1 and `inner` has no null label.
    pub fn new(inner: &'a dyn Denoiser, scale: f64, field: &str) -> crate::Result<Self> {
        let null_label = match inner.null_label() {
            Some(l) => l,
            None if (scale - 1.0).abs() < 1e-12 => -1,
            None => {
                return Err(crate::Error::config(
                    field,
                    format!("guidance {scale} needs a denoiser with a null label"),
                ))
            }
        };
        Ok(Self {
            inner,
            scale,
            null_label,
        })
    }
}

impl Denoiser for Guided<'_> {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: &Tensor) -> Tensor {
        if (self.scale - 1.0).abs() < 1e-12 {
            return self.inner.denoise(x, sigma, labels);
        }
        let b = x.size()[0];
        let xx = Tensor::cat(&[x, x], 0);
        let ss = Tensor::cat(&[sigma, sigma], 0);
        let ll = Tensor::cat(&[labels, &null_like(labels, self.null_label)], 0);
        let d = self.inner.denoise(&xx, &ss, &ll);
        let cond = d.narrow(0, 0, b);
        let uncond = d.narrow(0, b, b);
        &uncond + (cond - &uncond) * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns x + label (as float), so conditional and unconditional outputs are known.
    struct AddLabel;
    impl Denoiser for AddLabel {
        fn denoise(&self, x: &Tensor, _s: &Tensor, l: &Tensor) -> Tensor {
            x + l.to_kind(x.kind()).unsqueeze(1)
        }
    }

    #[test]
    fn guidance_extrapolates_from_the_null_label() {
        let x = Tensor::zeros([2, 1], (tch::Kind::Float, tch::Device::Cpu));
        let s = Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu));
        let l = Tensor::from_slice(&[1i64, 3]);
        let g = Guided {
            inner: &AddLabel,
            scale: 2.0,
            null_label: 10,
        };
        // uncond = 10, cond = c: 10 + 2(c − 10) = 2c − 10.
        let out = g.denoise(&x, &s, &l);
        assert_eq!(
            Vec::<f32>::try_from(out.flatten(0, -1)).unwrap(),
            vec![-8.0, -4.0]
        );
        let g1 = Guided {
            inner: &AddLabel,
            scale: 1.0,
            null_label: 10,
        };
        assert_eq!(
            Vec::<f32>::try_from(g1.denoise(&x, &s, &l).flatten(0, -1)).unwrap(),
            vec![1.0, 3.0]
        );
    }
}
