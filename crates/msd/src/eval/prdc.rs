//! Precision and recall on k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019): each real
//! (fake) point owns a ball reaching its k-th nearest real (fake) neighbour; precision is the
//! share of fakes inside some real ball, recall the share of reals inside some fake ball.
//! Distances are computed in row blocks, so 10⁴ × 10⁴ pairs fit in little memory.

use crate::{Error, Result};
use tch::{Kind, Tensor};

const BLOCK: i64 = 1024;

/// Squared Euclidean distances between the rows of `a`: `[n, D]` and `b`: `[m, D]` → `[n, m]`.
fn sq_dist(a: &Tensor, b: &Tensor) -> Tensor {
    let aa = a.square().sum_dim_intlist(1, true, Kind::Float);
    let bb = b
        .square()
        .sum_dim_intlist(1, true, Kind::Float)
        .transpose(0, 1);
    (aa + bb - a.matmul(&b.transpose(0, 1)) * 2.0).clamp_min(0.0)
}

/// Squared distance of every row of `x` to its k-th nearest other row of `x`: `[N, D]` → `[N]`.
fn kth_radius(x: &Tensor, k: i64) -> Tensor {
    let n = x.size()[0];
    let mut out = Vec::new();
    for s in (0..n).step_by(BLOCK as usize) {
        let len = BLOCK.min(n - s);
        let d = sq_dist(&x.narrow(0, s, len), x);
        // Self-distance is 0, the smallest; the (k+1)-th smallest is the k-th neighbour.
        let (v, _) = d.topk(k + 1, 1, false, true);
        out.push(v.select(1, k));
    }
    Tensor::cat(&out, 0)
}

/// Share of rows of `query` within the (squared) radius of at least one row of `manifold`.
fn coverage(query: &Tensor, manifold: &Tensor, radii: &Tensor) -> f64 {
    let n = query.size()[0];
    let mut inside = 0i64;
    for s in (0..n).step_by(BLOCK as usize) {
        let len = BLOCK.min(n - s);
        let d = sq_dist(&query.narrow(0, s, len), manifold);
        let hit = d.le_tensor(&radii.unsqueeze(0)).any_dim(1, false);
        inside += hit.sum(Kind::Int64).int64_value(&[]);
    }
    inside as f64 / n as f64
}

/// (precision, recall) of `fake`: `[N_f, D]` against `real`: `[N_r, D]` with k-NN balls.
pub fn precision_recall(real: &Tensor, fake: &Tensor, k: i64) -> Result<(f64, f64)> {
    let (sr, sf) = (real.size(), fake.size());
    if sr.len() != 2 || sf.len() != 2 || sr[1] != sf[1] {
        return Err(Error::Invalid(format!(
            "precision/recall need two [N, D] feature sets of the same D, got {sr:?} and {sf:?}"
        )));
    }
    if k < 1 || sr[0] <= k || sf[0] <= k {
        return Err(Error::Invalid(format!(
            "precision/recall with k = {k} need more than k points in each set ({} real, {} fake)",
            sr[0], sf[0]
        )));
    }
    let real = real.to_kind(Kind::Float);
    let fake = fake.to_kind(Kind::Float);
    let rr = kth_radius(&real, k);
    let rf = kth_radius(&fake, k);
    Ok((coverage(&fake, &real, &rr), coverage(&real, &fake, &rf)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn identical_sets_are_fully_covered() {
        tch::manual_seed(2);
        let a = Tensor::randn([300, 5], (Kind::Float, Device::Cpu));
        let (p, r) = precision_recall(&a, &a, 3).unwrap();
        assert_eq!((p, r), (1.0, 1.0));
    }

    #[test]
    fn collapsed_fakes_have_precision_but_no_recall_and_far_fakes_neither() {
        tch::manual_seed(3);
        let o = (Kind::Float, Device::Cpu);
        let real = Tensor::randn([1000, 2], o);
        // Mode collapse: all fakes near the origin.
        let collapsed = Tensor::randn([1000, 2], o) * 0.05;
        let (p, r) = precision_recall(&real, &collapsed, 3).unwrap();
        assert!(p > 0.95 && r < 0.2, "p {p} r {r}");
        // Fakes far away: nothing matches.
        let far = Tensor::randn([1000, 2], o) + 20.0;
        assert_eq!(precision_recall(&real, &far, 3).unwrap(), (0.0, 0.0));
        // Same distribution: both high.
        let (p, r) = precision_recall(&real, &Tensor::randn([1000, 2], o), 3).unwrap();
        assert!(p > 0.8 && r > 0.8, "p {p} r {r}");
        assert!(precision_recall(&real, &far.narrow(0, 0, 3), 3).is_err());
    }
}
