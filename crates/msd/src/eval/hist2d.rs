//! 2-D histogram distance for the toy: samples binned on a fixed `bins × bins` grid over
//! `[−half, half]²` (points outside fall in no bin but still count in the total), normalised to
//! probabilities; ℓ1 = Σ|p − q| ∈ [0, 2].
//!
//! ```
//! use msd::eval::{Hist2d, hist_l1};
//! let a = Hist2d::from_points(&[[0.1, 0.1]], 64, 2.5);
//! let b = Hist2d::from_points(&[[-1.0, 1.0]], 64, 2.5);
//! assert_eq!(hist_l1(&a, &a), 0.0);
//! assert_eq!(hist_l1(&a, &b), 2.0);
//! ```

/// A normalised 2-D histogram.
#[derive(Clone, Debug)]
pub struct Hist2d {
    pub bins: usize,
    pub half: f64,
    pub p: Vec<f64>,
}

impl Hist2d {
    /// Bins `pts` on a `bins × bins` grid over `[−half, half]²`.
    pub fn from_points(pts: &[[f32; 2]], bins: usize, half: f64) -> Self {
        let mut p = vec![0.0; bins * bins];
        let w = 1.0 / pts.len().max(1) as f64;
        for q in pts {
            let u = ((q[0] as f64 + half) / (2.0 * half) * bins as f64).floor();
            let v = ((q[1] as f64 + half) / (2.0 * half) * bins as f64).floor();
            if u >= 0.0 && v >= 0.0 && (u as usize) < bins && (v as usize) < bins {
                p[v as usize * bins + u as usize] += w;
            }
        }
        Self { bins, half, p }
    }
}

/// ℓ1 distance Σ|p − q| between two histograms on the same grid; mass outside the box counts as
/// one extra shared "outside" bin.
pub fn hist_l1(a: &Hist2d, b: &Hist2d) -> f64 {
    let inside: f64 = a.p.iter().zip(&b.p).map(|(x, y)| (x - y).abs()).sum();
    let out_a = 1.0 - a.p.iter().sum::<f64>();
    let out_b = 1.0 - b.p.iter().sum::<f64>();
    inside + (out_a - out_b).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_of_half_overlap_is_one() {
        let a = Hist2d::from_points(&[[0.1, 0.1], [1.0, 1.0]], 64, 2.5);
        let b = Hist2d::from_points(&[[0.1, 0.1], [-1.0, -1.0]], 64, 2.5);
        assert!((hist_l1(&a, &b) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn outside_mass_counts() {
        let a = Hist2d::from_points(&[[9.0, 9.0]], 64, 2.5);
        let b = Hist2d::from_points(&[[0.0, 0.0]], 64, 2.5);
        assert!((hist_l1(&a, &b) - 2.0).abs() < 1e-12);
        assert_eq!(hist_l1(&a, &a), 0.0);
    }
}
