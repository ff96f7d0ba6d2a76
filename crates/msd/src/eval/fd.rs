//! Fréchet distance between two sets of features, each summarised by a Gaussian:
//! FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁^{½} Σ₂ Σ₁^{½})^{½}).
//!
//! Means and covariances are accumulated in f64; both square roots come from symmetric
//! eigendecompositions (negative eigenvalues from round-off are clamped to zero), so the result
//! is real and stable where the product Σ₁Σ₂ is not symmetric.

use crate::{Error, Result};
use tch::{Kind, Tensor};

/// Mean and covariance of a feature set (f64).
#[derive(Debug)]
pub struct FeatureStats {
    /// Number of feature vectors summarised.
    pub n: i64,
    /// `[D]`
    pub mean: Tensor,
    /// `[D, D]` (unbiased, divided by n − 1)
    pub cov: Tensor,
}

impl FeatureStats {
    /// Statistics of `features`: `[N, D]` (any float kind; converted to f64), N ≥ 2.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        let s = features.size();
        if s.len() != 2 || s[0] < 2 {
            return Err(Error::Invalid(format!(
                "feature statistics need a [N ≥ 2, D] tensor, got {s:?}"
            )));
        }
        let f = features.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let mean = f.mean_dim(0, false, Kind::Double);
        let c = &f - mean.unsqueeze(0);
        let cov = c.transpose(0, 1).matmul(&c) / (s[0] - 1) as f64;
        Ok(Self { n: s[0], mean, cov })
    }
}

/// Symmetric PSD square root via eigendecomposition: V·diag(√max(λ, 0))·Vᵀ.
pub fn sqrtm_psd(a: &Tensor) -> Result<Tensor> {
    let sym = (a + a.transpose(0, 1)) * 0.5;
    let (vals, vecs) = sym.f_linalg_eigh("L")?;
    let r = vals.clamp_min(0.0).sqrt();
    Ok((&vecs * r.unsqueeze(0)).matmul(&vecs.transpose(0, 1)))
}

/// Fréchet distance between two feature summaries of the same dimension.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.mean.size() != b.mean.size() {
        return Err(Error::Invalid(format!(
            "feature dimensions differ: {:?} vs {:?}",
            a.mean.size(),
            b.mean.size()
        )));
    }
    let diff = (&a.mean - &b.mean)
        .square()
        .sum(Kind::Double)
        .double_value(&[]);
    let s1 = sqrtm_psd(&a.cov)?;
    let m = s1.matmul(&b.cov).matmul(&s1);
    let m = (&m + m.transpose(0, 1)) * 0.5;
    let tr_sqrt = m
        .f_linalg_eigvalsh("L")?
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]);
    let tr = a.cov.trace().double_value(&[]) + b.cov.trace().double_value(&[]);
    Ok((diff + tr - 2.0 * tr_sqrt).max(0.0))
}

/// Fréchet distance between two feature sets `[N₁, D]` and `[N₂, D]`.
pub fn frechet_distance_features(a: &Tensor, b: &Tensor) -> Result<f64> {
    frechet_distance(
        &FeatureStats::from_features(a)?,
        &FeatureStats::from_features(b)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn closed_form_for_known_gaussians() {
        // Diagonal covariances: FD = |μ₁ − μ₂|² + Σ (√a − √b)².
        let s1 = FeatureStats {
            n: 0,
            mean: Tensor::from_slice(&[0.0f64, 1.0, 2.0]),
            cov: Tensor::from_slice(&[1.0f64, 4.0, 9.0]).diag(0),
        };
        let s2 = FeatureStats {
            n: 0,
            mean: Tensor::from_slice(&[1.0f64, 1.0, 0.0]),
            cov: Tensor::from_slice(&[4.0f64, 1.0, 9.0]).diag(0),
        };
        let want = (1.0 + 0.0 + 4.0) + (1.0 + 1.0 + 0.0);
        assert!((frechet_distance(&s1, &s2).unwrap() - want).abs() < 1e-9);
        // Same covariance rotated into a non-diagonal basis: FD is unchanged.
        let th = 0.7f64;
        let r = Tensor::from_slice(&[
            th.cos(),
            -th.sin(),
            0.0,
            th.sin(),
            th.cos(),
            0.0,
            0.0,
            0.0,
            1.0,
        ])
        .reshape([3, 3]);
        let rot = |s: &FeatureStats| FeatureStats {
            n: 0,
            mean: r.matmul(&s.mean),
            cov: r.matmul(&s.cov).matmul(&r.transpose(0, 1)),
        };
        assert!((frechet_distance(&rot(&s1), &rot(&s2)).unwrap() - want).abs() < 1e-9);
        assert!(frechet_distance(&s1, &s1).unwrap().abs() < 1e-9);
    }

    #[test]
    fn sample_statistics_approach_the_truth() {
        tch::manual_seed(0);
        let n = 20_000;
        let a = Tensor::randn([n, 4], (Kind::Double, Device::Cpu));
        let b = Tensor::randn([n, 4], (Kind::Double, Device::Cpu)) * 2.0 + 0.5;
        // Truth: 4·0.25 + 4·(1 − 2)² = 5.
        let fd = frechet_distance_features(&a, &b).unwrap();
        assert!((fd - 5.0).abs() < 0.15, "{fd}");
        assert!(
            frechet_distance_features(&a, &Tensor::zeros([1, 4], (Kind::Double, Device::Cpu)))
                .is_err()
        );
    }
}
