//! The `Denoiser` abstraction D(x; σ, c): the teacher, the fake score, every student and the
//! analytic reference denoisers used in tests all implement it.

use tch::Tensor;

/// A conditional denoiser D(x; σ, c) ≈ E[x₀ | x₀ + σε = x, c].
pub trait Denoiser {
    /// `x`: `[B, ...]` noisy data, `sigma`: `[B]` noise levels, `labels`: `[B]` int64 class ids.
    /// Returns the denoised estimate, shape `[B, ...]`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: &Tensor) -> Tensor;

    /// The label meaning "no condition" (for classifier-free guidance), if this denoiser has
    /// one. The samplers need it to apply a guidance scale ≠ 1.
    fn null_label(&self) -> Option<i64> {
        None
    }
}

/// The ideal denoiser for Gaussian data N(μ, s²·I) (independent of the label), in closed form:
/// D*(x; σ) = (s²·x + σ²·μ)/(s² + σ²). `mean` has the data's shape without the batch axis.
#[derive(Debug)]
pub struct GaussianDenoiser {
    pub mean: Tensor,
    pub std: f64,
}

impl Denoiser for GaussianDenoiser {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, _labels: &Tensor) -> Tensor {
        let s2 = self.std * self.std;
        let sig2 = super::precond::broadcast_to(&sigma.square(), x).to_kind(x.kind());
        (x * s2 + &sig2 * self.mean.to_kind(x.kind())) / (sig2 + s2)
    }
}

/// The ideal denoiser for an isotropic Gaussian mixture per class: for class c, components
/// (weight w_k, mean μ_k, std s_k). D*(x; σ) = Σ_k r_k(x)·(s_k²x + σ²μ_k)/(s_k² + σ²), with r_k the
/// posterior responsibility of component k under the noisy density N(μ_k, (s_k² + σ²)I).
#[derive(Debug, Clone)]
pub struct MixtureDenoiser {
    /// `classes[c]` lists `(weight, mean, std)` for class c.
    pub classes: Vec<Vec<(f64, Vec<f64>, f64)>>,
}

impl Denoiser for MixtureDenoiser {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: &Tensor) -> Tensor {
        let xd = x.to_kind(tch::Kind::Double);
        let mut out = xd.zeros_like();
        let labels_v: Vec<i64> =
            Vec::<i64>::try_from(labels.to_device(tch::Device::Cpu)).unwrap_or_default();
        for (c, comps) in self.classes.iter().enumerate() {
            let rows: Vec<i64> = labels_v
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == c as i64)
                .map(|(i, _)| i as i64)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let idx = Tensor::from_slice(&rows).to_device(x.device());
            let xc = xd.index_select(0, &idx); // [b, d]
            let sig2 = sigma
                .index_select(0, &idx)
                .to_kind(tch::Kind::Double)
                .square()
                .unsqueeze(1); // [b, 1]
            let d = xc.size()[1] as f64;
            let mut logits = Vec::new();
            let mut means = Vec::new();
            for (w, mu, s) in comps {
                let mu_t = Tensor::from_slice(mu)
                    .to_kind(tch::Kind::Double)
                    .to_device(x.device());
                let var = &sig2 + s * s; // [b,1]
                let dist2 = (&xc - &mu_t)
                    .square()
                    .sum_dim_intlist(1, true, tch::Kind::Double);
                let logp = -(dist2 / (&var * 2.0)) - var.log() * (d / 2.0) + w.ln();
                logits.push(logp);
                means.push((&xc * (s * s) + &sig2 * &mu_t) / (&sig2 + s * s));
            }
            let r = Tensor::cat(&logits, 1).softmax(1, tch::Kind::Double); // [b, K]
            let m = Tensor::stack(&means, 1); // [b, K, d]
            let dc = (m * r.unsqueeze(2)).sum_dim_intlist(1, false, tch::Kind::Double);
            let _ = out.index_copy_(0, &idx, &dc);
        }
        out.to_kind(x.kind())
    }
}
