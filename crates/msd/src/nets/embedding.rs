//! Noise-level embedding: deterministic Fourier features of c_noise at geometrically spaced
//! frequencies, so nearby noise levels get nearby embeddings at every scale.

use tch::{Kind, Tensor};

/// Fourier features `[cos(2π f_i c), sin(2π f_i c)]`, f_i geometric in `[f_min, f_max]`.
/// `c_noise`: `[B]` → `[B, 2·n_freq]`.
pub fn fourier_features(c_noise: &Tensor, n_freq: i64, f_min: f64, f_max: f64) -> Tensor {
    let n = n_freq.max(1);
    let ratio = if n > 1 {
        (f_max / f_min).powf(1.0 / (n - 1) as f64)
    } else {
        1.0
    };
    let freqs: Vec<f32> = (0..n)
        .map(|i| (f_min * ratio.powi(i as i32)) as f32)
        .collect();
    let f = Tensor::from_slice(&freqs).to_device(c_noise.device());
    let arg =
        c_noise.to_kind(Kind::Float).unsqueeze(1) * f.unsqueeze(0) * (2.0 * std::f64::consts::PI);
    Tensor::cat(&[arg.cos(), arg.sin()], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_values() {
        let c = Tensor::from_slice(&[0.0f32, 0.25]);
        let e = fourier_features(&c, 2, 1.0, 2.0);
        assert_eq!(e.size(), vec![2, 4]);
        // c = 0.25, f = 1: cos(π/2) = 0, sin = 1; f = 2: cos(π) = −1, sin = 0.
        let v: Vec<f32> = Vec::try_from(e.get(1)).unwrap();
        let want = [0.0, -1.0, 1.0, 0.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }
}
