//! Figures over training seeds: mean ± standard deviation with the per-seed values kept, and the
//! verdict rule of every claim — "held" only when the intervals (mean ± std) do not overlap in
//! the claimed direction, "reversed" when they separate the other way, else "within noise".

use serde::{Deserialize, Serialize};

/// A figure over seeds: its mean, its sample standard deviation (n − 1; 0 for one seed) and the
/// per-seed values in seed order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub per_seed: Vec<f64>,
}

impl Summary {
    /// Summarises `values` (one per seed). An empty slice gives NaN mean and std.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else if values.len() == 1 {
            0.0
        } else {
            f64::NAN
        };
        Self {
            mean,
            std,
            per_seed: values.to_vec(),
        }
    }

    /// The interval mean ± std.
    pub fn interval(&self) -> (f64, f64) {
        (self.mean - self.std, self.mean + self.std)
    }

    /// `mean ± std` with `digits` decimals (and `(n = 1)` when there is a single seed).
    pub fn show(&self, digits: usize) -> String {
        if self.per_seed.len() == 1 {
            format!("{:.digits$} (1 seed)", self.mean)
        } else {
            format!("{:.digits$} ± {:.digits$}", self.mean, self.std)
        }
    }
}

/// Whether a claimed difference is larger than the seed-to-seed noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The intervals do not overlap, in the claimed direction.
    #[serde(rename = "held")]
    Held,
    /// The intervals overlap (or there are fewer than two seeds on a side).
    #[serde(rename = "within noise")]
    WithinNoise,
    /// The intervals do not overlap, against the claimed direction.
    #[serde(rename = "reversed")]
    Reversed,
}

impl Verdict {
    /// The report spelling: `held`, `within noise` or `reversed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::WithinNoise => "within noise",
            Verdict::Reversed => "reversed",
        }
    }
}

/// The verdict on the claim "`better` is lower than `worse`" (lower is better: FD, ℓ1).
/// With fewer than two seeds on either side there are no error bars, so nothing is "held".
pub fn verdict_lower(better: &Summary, worse: &Summary) -> Verdict {
    if better.per_seed.len() < 2 || worse.per_seed.len() < 2 {
        return Verdict::WithinNoise;
    }
    let (b_lo, b_hi) = better.interval();
    let (w_lo, w_hi) = worse.interval();
    if b_hi < w_lo {
        Verdict::Held
    } else if w_hi < b_lo {
        Verdict::Reversed
    } else {
        Verdict::WithinNoise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std_match_hand_computed_values() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 6.0]);
        assert_eq!(s.mean, 3.0);
        // Σ(x − 3)² = 4 + 1 + 0 + 9 = 14; /3.
        assert!((s.std - (14.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.per_seed, vec![1.0, 2.0, 3.0, 6.0]);
        assert_eq!(Summary::of(&[5.0]).std, 0.0);
        assert!(Summary::of(&[]).mean.is_nan());
    }

    #[test]
    fn verdict_is_held_only_for_separated_intervals_in_the_claimed_direction() {
        let a = Summary::of(&[1.0, 1.2, 1.1]); // 1.1 ± 0.1
        let b = Summary::of(&[2.0, 2.2, 2.1]); // 2.1 ± 0.1
        assert_eq!(verdict_lower(&a, &b), Verdict::Held);
        assert_eq!(verdict_lower(&b, &a), Verdict::Reversed);
        // Overlapping intervals: 1.1 ± 0.1 against 1.25 ± 0.15.
        let c = Summary::of(&[1.1, 1.4, 1.25]);
        assert_eq!(verdict_lower(&a, &c), Verdict::WithinNoise);
        assert_eq!(verdict_lower(&c, &a), Verdict::WithinNoise);
        // A single seed has no error bar: never held, whatever the gap.
        assert_eq!(
            verdict_lower(&Summary::of(&[0.0]), &Summary::of(&[9.0])),
            Verdict::WithinNoise
        );
        assert_eq!(
            serde_json::to_string(&Verdict::WithinNoise).unwrap(),
            "\"within noise\""
        );
    }
}
