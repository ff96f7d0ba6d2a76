//! Partitions of a continuous condition space (prompt embeddings) into groups, with what is
//! needed to assign a prompt never seen in training:
//!
//! - **k-means** ([`PromptGroups::kmeans`]): Lloyd iterations from a seeded k-means++ start;
//!   a prompt joins its nearest centroid. Groups follow the data's clusters, so their sizes can
//!   be very uneven (the paper's observation on text prompts).
//! - **Balanced quadrants** ([`PromptGroups::quadrants`]): the points are projected on their top
//!   `d` principal directions (of the centred points); a binary tree of median splits cuts the
//!   first projection at its median, then each half at the median of its own second projection,
//!   and so on — `2^d` groups of sizes within one of each other (for distinct projections). A
//!   prompt follows the same tests: group = Σ_j 2^(d−1−j)·[⟨e − mean, u_j⟩ > t_j(prefix)].
//!
//! Both are deterministic: same points (and seed) → same groups. Directions are sign-fixed
//! (largest-magnitude component positive), so an eigen-solver's sign choice does not matter.

use crate::{Error, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How prompts are assigned to groups (stored in `partition.json` as `prompts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PromptGroups {
    /// Nearest of `centroids` (`[k][dim]`).
    Kmeans { centroids: Vec<Vec<f32>> },
    /// Median-split tree along principal directions: `mean` `[dim]`, `directions` `[d][dim]`,
    /// `thresholds[j]` holds the `2^j` split values of depth `j` (indexed by the bits so far).
    Quadrants {
        mean: Vec<f32>,
        directions: Vec<Vec<f32>>,
        thresholds: Vec<Vec<f32>>,
    },
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum()
}

/// Checks that `points` is non-empty with one width and finite values; returns the width.
fn check_points(points: &[Vec<f32>], what: &str) -> Result<usize> {
    let dim = points
        .first()
        .map(Vec::len)
        .ok_or_else(|| Error::Partition(format!("{what}: no points")))?;
    if dim == 0 {
        return Err(Error::Partition(format!("{what}: points of width 0")));
    }
    if let Some(i) = points
        .iter()
        .position(|p| p.len() != dim || p.iter().any(|v| !v.is_finite()))
    {
        return Err(Error::Partition(format!(
            "{what}: point {i} has width {} (expected {dim}) or a non-finite value",
            points[i].len()
        )));
    }
    Ok(dim)
}

impl PromptGroups {
    /// k-means with `k` groups: k-means++ initialisation seeded by `seed`, then at most
    /// `iterations` Lloyd steps (stops when no point changes group). An emptied group takes the
    /// point farthest from its centroid.
    pub fn kmeans(points: &[Vec<f32>], k: usize, seed: u64, iterations: usize) -> Result<Self> {
        check_points(points, "kmeans")?;
        let n = points.len();
        if k == 0 || k > n {
            return Err(Error::config(
                "students",
                format!("k-means needs 1 ≤ k ≤ {n} points, got {k}"),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut centroids = vec![points[rng.gen_range(0..n)].clone()];
        let mut d2: Vec<f64> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
        while centroids.len() < k {
            let total: f64 = d2.iter().sum();
            let next = if total > 0.0 {
                let mut r = rng.gen::<f64>() * total;
                d2.iter()
                    .position(|&d| {
                        r -= d;
                        r <= 0.0
                    })
                    .unwrap_or(n - 1)
            } else {
                rng.gen_range(0..n)
            };
            centroids.push(points[next].clone());
            for (d, p) in d2.iter_mut().zip(points) {
                *d = d.min(dist2(p, &centroids[centroids.len() - 1]));
            }
        }
        let mut groups = PromptGroups::Kmeans { centroids };
        let mut owner: Vec<usize> = points.iter().map(|p| groups.assign(p)).collect();
        for _ in 0..iterations {
            let PromptGroups::Kmeans { centroids } = &mut groups else {
                unreachable!("built as k-means above")
            };
            let dim = centroids[0].len();
            let mut sums = vec![vec![0f64; dim]; k];
            let mut counts = vec![0usize; k];
            for (p, &o) in points.iter().zip(&owner) {
                counts[o] += 1;
                for (s, v) in sums[o].iter_mut().zip(p) {
                    *s += *v as f64;
                }
            }
            for j in 0..k {
                if counts[j] == 0 {
                    let far = (0..n)
                        .max_by(|&a, &b| {
                            dist2(&points[a], &centroids[owner[a]])
                                .total_cmp(&dist2(&points[b], &centroids[owner[b]]))
                        })
                        .unwrap_or(0);
                    centroids[j] = points[far].clone();
                    owner[far] = j;
                } else {
                    centroids[j] = sums[j]
                        .iter()
                        .map(|s| (s / counts[j] as f64) as f32)
                        .collect();
                }
            }
            let next: Vec<usize> = points.iter().map(|p| groups.assign(p)).collect();
            if next == owner {
                break;
            }
            owner = next;
        }
        Ok(groups)
    }

    /// Balanced quadrants: `2^depth` groups from median splits along the top `depth` principal
    /// directions (see the module docs).
    pub fn quadrants(points: &[Vec<f32>], depth: usize) -> Result<Self> {
        let dim = check_points(points, "quadrants")?;
        if depth == 0 || depth > dim.min(16) || (1usize << depth) > points.len() {
            return Err(Error::config(
                "students",
                format!(
                    "quadrants need 2^d groups with 1 ≤ d ≤ {} and 2^d ≤ {} points, got d = {depth}",
                    dim.min(16),
                    points.len()
                ),
            ));
        }
        let n = points.len() as i64;
        let flat: Vec<f64> = points.iter().flatten().map(|&v| v as f64).collect();
        let x = Tensor::from_slice(&flat)
            .view([n, dim as i64])
            .to_device(Device::Cpu);
        let mean_t = x.mean_dim(0, true, Kind::Double);
        let xc = &x - &mean_t;
        let cov = xc.tr().matmul(&xc) / n as f64;
        // Symmetric eigen-decomposition; eigenvalues ascending, so the top ones are last.
        let (_, vecs) = cov.f_linalg_eigh("L")?;
        let mut directions = Vec::with_capacity(depth);
        for j in 0..depth as i64 {
            let u: Vec<f64> = Vec::try_from(vecs.select(1, dim as i64 - 1 - j))?;
            let big = u
                .iter()
                .copied()
                .max_by(|a, b| a.abs().total_cmp(&b.abs()))
                .unwrap_or(1.0);
            let s = if big < 0.0 { -1.0 } else { 1.0 };
            directions.push(u.iter().map(|v| (v * s) as f32).collect::<Vec<f32>>());
        }
        let mean: Vec<f32> = Vec::<f64>::try_from(mean_t.squeeze_dim(0))?
            .into_iter()
            .map(|v| v as f32)
            .collect();
        // proj[i][j] = ⟨x_i − mean, u_j⟩.
        let proj: Vec<Vec<f64>> = points
            .iter()
            .map(|p| {
                let c: Vec<f32> = p.iter().zip(&mean).map(|(a, m)| a - m).collect();
                directions.iter().map(|u| dot(&c, u)).collect()
            })
            .collect();
        let mut prefix = vec![0usize; points.len()];
        let mut thresholds = Vec::with_capacity(depth);
        for j in 0..depth {
            let mut level = vec![0f32; 1 << j];
            for (node, t) in level.iter_mut().enumerate() {
                let mut v: Vec<f64> = proj
                    .iter()
                    .zip(&prefix)
                    .filter(|(_, &p)| p == node)
                    .map(|(x, _)| x[j])
                    .collect();
                v.sort_by(f64::total_cmp);
                // Midway between the lower half's largest and the upper half's smallest value
                // ("> t" goes up; an odd middle point goes low), so the halves differ by ≤ 1.
                let m = v.len();
                *t = match m {
                    0 => 0.0,
                    1 => v[0] as f32 + 1.0,
                    _ => ((v[(m - 1) / 2] + v[(m - 1) / 2 + 1]) / 2.0) as f32,
                };
            }
            for (x, p) in proj.iter().zip(prefix.iter_mut()) {
                let bit = (x[j] > level[*p] as f64) as usize;
                *p = *p * 2 + bit;
            }
            thresholds.push(level);
        }
        Ok(PromptGroups::Quadrants {
            mean,
            directions,
            thresholds,
        })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        match self {
            PromptGroups::Kmeans { centroids } => centroids.len(),
            PromptGroups::Quadrants { directions, .. } => 1 << directions.len(),
        }
    }

    /// Never true for a built partition (kept for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The embedding width the groups were fitted on.
    pub fn dim(&self) -> usize {
        match self {
            PromptGroups::Kmeans { centroids } => centroids.first().map_or(0, Vec::len),
            PromptGroups::Quadrants { mean, .. } => mean.len(),
        }
    }

    /// The group of embedding `e` (its width must be [`Self::dim`]; see [`Self::route`]).
    pub fn assign(&self, e: &[f32]) -> usize {
        match self {
            PromptGroups::Kmeans { centroids } => (0..centroids.len())
                .min_by(|&a, &b| dist2(e, &centroids[a]).total_cmp(&dist2(e, &centroids[b])))
                .unwrap_or(0),
            PromptGroups::Quadrants {
                mean,
                directions,
                thresholds,
            } => {
                let c: Vec<f32> = e.iter().zip(mean).map(|(a, m)| a - m).collect();
                directions
                    .iter()
                    .zip(thresholds)
                    .fold(0, |g, (u, t)| g * 2 + (dot(&c, u) > t[g] as f64) as usize)
            }
        }
    }

    /// The group of embedding `e`, checking its width and values.
    pub fn route(&self, e: &[f32]) -> Result<usize> {
        if e.len() != self.dim() {
            return Err(Error::Partition(format!(
                "a {}-d prompt embedding for groups fitted on {}-d embeddings",
                e.len(),
                self.dim()
            )));
        }
        if e.iter().any(|v| !v.is_finite()) {
            return Err(Error::Partition(
                "the prompt embedding holds a non-finite value".into(),
            ));
        }
        Ok(self.assign(e))
    }

    /// Checks the stored shapes (after loading a file); errors say what is inconsistent.
    pub fn validate(&self) -> Result<()> {
        let dim = self.dim();
        let bad = |m: String| Err(Error::Partition(format!("prompts: {m}")));
        match self {
            PromptGroups::Kmeans { centroids } => {
                if centroids.is_empty() || dim == 0 {
                    return bad("no centroids".into());
                }
                if centroids.iter().any(|c| c.len() != dim) {
                    return bad("centroids of different widths".into());
                }
            }
            PromptGroups::Quadrants {
                directions,
                thresholds,
                ..
            } => {
                if directions.is_empty() || dim == 0 || directions.len() > 16 {
                    return bad(format!(
                        "{} directions (expected 1 to 16)",
                        directions.len()
                    ));
                }
                if directions.iter().any(|u| u.len() != dim) {
                    return bad("directions of a width other than the mean's".into());
                }
                if thresholds.len() != directions.len()
                    || thresholds
                        .iter()
                        .enumerate()
                        .any(|(j, t)| t.len() != 1 << j)
                {
                    return bad("thresholds[j] must hold 2^j values per direction j".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` seeded Gaussian points in `dim` dimensions, scaled per axis by `scale`.
    fn cloud(n: usize, dim: usize, seed: u64, scale: &[f32]) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|d| {
                        // Box–Muller.
                        let (u, v): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
                        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
                            * scale[d % scale.len()]
                    })
                    .collect()
            })
            .collect()
    }

    fn sizes(g: &PromptGroups, pts: &[Vec<f32>]) -> Vec<usize> {
        let mut s = vec![0; g.len()];
        for p in pts {
            s[g.assign(p)] += 1;
        }
        s
    }

    #[test]
    fn quadrants_are_balanced_and_split_the_widest_directions() {
        let pts = cloud(1001, 6, 1, &[5.0, 1.0, 3.0, 0.5, 0.5, 0.5]);
        for d in 1..=3 {
            let g = PromptGroups::quadrants(&pts, d).unwrap();
            g.validate().unwrap();
            let s = sizes(&g, &pts);
            assert_eq!(s.len(), 1 << d);
            assert!(
                s.iter().max().unwrap() - s.iter().min().unwrap() <= 1,
                "{s:?}"
            );
        }
        // The top direction is the widest axis (0), then axis 2.
        let PromptGroups::Quadrants { directions, .. } = PromptGroups::quadrants(&pts, 2).unwrap()
        else {
            panic!("quadrants")
        };
        assert!(directions[0][0] > 0.99, "{:?}", directions[0]);
        assert!(directions[1][2] > 0.99, "{:?}", directions[1]);
    }

    #[test]
    fn unseen_points_go_to_the_side_of_each_split_they_lie_on() {
        // Two well-separated blobs along axis 0: an unseen point far right is in the upper half.
        let mut pts = cloud(200, 3, 2, &[0.1]);
        for p in pts.iter_mut().take(100) {
            p[0] += 10.0;
        }
        let g = PromptGroups::quadrants(&pts, 1).unwrap();
        assert_eq!(g.route(&[11.0, 0.0, 0.0]).unwrap(), 1);
        assert_eq!(g.route(&[-1.0, 0.0, 0.0]).unwrap(), 0);
        let k = PromptGroups::kmeans(&pts, 2, 0, 50).unwrap();
        let right = k.route(&[11.0, 0.0, 0.0]).unwrap();
        assert_ne!(right, k.route(&[-1.0, 0.0, 0.0]).unwrap());
        // Every training point of a blob is with the unseen point of that blob.
        assert!(pts[..100].iter().all(|p| k.assign(p) == right));
        // Wrong width or non-finite values are refused, not guessed.
        assert!(k.route(&[1.0, 2.0]).is_err());
        assert!(g.route(&[f32::NAN, 0.0, 0.0]).is_err());
    }

    #[test]
    fn kmeans_finds_uneven_clusters_and_is_deterministic() {
        let mut pts = cloud(300, 4, 3, &[0.2]);
        for p in pts.iter_mut().take(50) {
            p[1] += 8.0;
        }
        let a = PromptGroups::kmeans(&pts, 2, 7, 100).unwrap();
        let b = PromptGroups::kmeans(&pts, 2, 7, 100).unwrap();
        assert_eq!(a, b);
        let mut s = sizes(&a, &pts);
        s.sort();
        assert_eq!(s, vec![50, 250]);
        assert!(PromptGroups::kmeans(&pts, 0, 7, 10).is_err());
        assert!(PromptGroups::kmeans(&[], 1, 7, 10).is_err());
        assert_eq!(
            PromptGroups::quadrants(&pts, 2).unwrap(),
            PromptGroups::quadrants(&pts, 2).unwrap()
        );
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let pts = cloud(64, 5, 4, &[1.0]);
        for g in [
            PromptGroups::quadrants(&pts, 2).unwrap(),
            PromptGroups::kmeans(&pts, 3, 1, 20).unwrap(),
        ] {
            let back: PromptGroups =
                serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
            assert_eq!(back, g);
            for p in &pts {
                assert_eq!(back.assign(p), g.assign(p));
            }
        }
        let broken = PromptGroups::Quadrants {
            mean: vec![0.0; 2],
            directions: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            thresholds: vec![vec![0.0], vec![0.0]],
        };
        assert!(broken.validate().unwrap_err().to_string().contains("2^j"));
    }
}
