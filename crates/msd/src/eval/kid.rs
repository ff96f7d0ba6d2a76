//! Kernel Inception Distance (Bińkowski et al. 2018) on any feature set: the unbiased estimate of
//! the squared MMD with the polynomial kernel k(x, y) = (xᵀy / D + 1)³, averaged over random
//! subsets (drawn with a caller-seeded generator).

use crate::{Error, Result};
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// KID of `a`: `[N₁, D]` against `b`: `[N₂, D]`, over `subsets` subsets of `subset_size` rows
/// from each (capped at the smaller set). Returns (mean, standard deviation over subsets).
pub fn kid(
    a: &Tensor,
    b: &Tensor,
    subsets: usize,
    subset_size: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(f64, f64)> {
    let (sa, sb) = (a.size(), b.size());
    if sa.len() != 2 || sb.len() != 2 || sa[1] != sb[1] {
        return Err(Error::Invalid(format!(
            "KID needs two [N, D] feature sets of the same D, got {sa:?} and {sb:?}"
        )));
    }
    let m = subset_size.min(sa[0] as usize).min(sb[0] as usize);
    if m < 2 || subsets == 0 {
        return Err(Error::Invalid(format!(
            "KID needs subsets of ≥ 2 rows, got {m}"
        )));
    }
    let d = sa[1] as f64;
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let kern =
        |x: &Tensor, y: &Tensor| (x.matmul(&y.transpose(0, 1)) / d + 1.0).pow_tensor_scalar(3);
    let mut vals = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let pick = |t: &Tensor, n: i64, rng: &mut ChaCha8Rng| {
            let idx: Vec<i64> = sample(rng, n as usize, m)
                .into_iter()
                .map(|i| i as i64)
                .collect();
            t.index_select(0, &Tensor::from_slice(&idx).to_device(t.device()))
        };
        let x = pick(&a, sa[0], rng);
        let y = pick(&b, sb[0], rng);
        let kxx = kern(&x, &x);
        let kyy = kern(&y, &y);
        let kxy = kern(&x, &y);
        let mf = m as f64;
        let off =
            |k: &Tensor| (k.sum(Kind::Double) - k.trace()).double_value(&[]) / (mf * (mf - 1.0));
        vals.push(off(&kxx) + off(&kyy) - 2.0 * kxy.mean(Kind::Double).double_value(&[]));
    }
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
    Ok((mean, var.sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use tch::Device;

    #[test]
    fn zero_for_the_same_distribution_positive_for_a_shift() {
        tch::manual_seed(1);
        let opts = (Kind::Float, Device::Cpu);
        let a = Tensor::randn([2000, 8], opts);
        let b = Tensor::randn([2000, 8], opts);
        let c = Tensor::randn([2000, 8], opts) + 0.5;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (same, sd) = kid(&a, &b, 20, 500, &mut rng).unwrap();
        let (shift, _) = kid(&a, &c, 20, 500, &mut rng).unwrap();
        assert!(
            same.abs() < 0.02 && same.abs() < 4.0 * sd.max(1e-3),
            "same {same} ± {sd}"
        );
        assert!(
            shift > 0.1 && shift > 20.0 * same.abs(),
            "shift {shift} same {same}"
        );
        assert!(kid(&a, &Tensor::randn([10, 3], opts), 1, 5, &mut rng).is_err());
    }
}
