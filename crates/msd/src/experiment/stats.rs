//! Figures over training seeds: mean ± standard deviation with the per-seed values kept, and the
//! verdict rule of every claim — "held" only when the intervals (mean ± std) do not overlap in
//! the claimed direction, "reversed" when they separate the other way, else "within noise";
//! with fewer than [`MIN_SEEDS`] seeds on a side a claim is "pending", whatever the gap.

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

/// The fewest training seeds per side before a claim gets a verdict (the project's rule: an
/// experimental claim is a mean ± std over at least three seeds).
pub const MIN_SEEDS: usize = 3;

/// Whether a claimed difference is larger than the seed-to-seed noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The intervals do not overlap, in the claimed direction.
    #[serde(rename = "held")]
    Held,
    /// The intervals overlap.
    #[serde(rename = "within noise")]
    WithinNoise,
    /// The intervals do not overlap, against the claimed direction.
    #[serde(rename = "reversed")]
    Reversed,
    /// Fewer than [`MIN_SEEDS`] seeds on a side: no verdict yet.
    #[serde(rename = "pending")]
    Pending,
}

impl Verdict {
    /// The report spelling: `held`, `within noise`, `reversed` or `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::WithinNoise => "within noise",
            Verdict::Reversed => "reversed",
            Verdict::Pending => "pending",
        }
    }
}

/// The verdict on the claim "`better` is lower than `worse`" (lower is better: FD, ℓ1).
/// With fewer than [`MIN_SEEDS`] seeds on either side the claim is [`Verdict::Pending`]: two
/// seeds give an error bar too unreliable to call anything "held".
pub fn verdict_lower(better: &Summary, worse: &Summary) -> Verdict {
    if better.per_seed.len() < MIN_SEEDS || worse.per_seed.len() < MIN_SEEDS {
        return Verdict::Pending;
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

/// A claim's figures and verdict, as the reports print them: "FD b vs w (±x%)" and
/// [`verdict_lower`] when both sides have figures, else "pending" and no verdict.
pub fn fd_claim(better: Option<&Summary>, worse: Option<&Summary>) -> (String, Option<Verdict>) {
    match (better, worse) {
        (Some(b), Some(w)) => (
            format!(
                "FD {} vs {} ({:+.1}%)",
                b.show(3),
                w.show(3),
                100.0 * (b.mean - w.mean) / w.mean
            ),
            Some(verdict_lower(b, w)),
        ),
        _ => ("pending".to_string(), None),
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
        // One or two seeds: pending, whatever the gap (two separated intervals are not enough).
        assert_eq!(
            verdict_lower(&Summary::of(&[0.0]), &Summary::of(&[9.0])),
            Verdict::Pending
        );
        let two_low = Summary::of(&[1.0, 1.1]);
        let two_high = Summary::of(&[5.0, 5.1]);
        assert_eq!(verdict_lower(&two_low, &two_high), Verdict::Pending);
        assert_eq!(verdict_lower(&two_low, &b), Verdict::Pending);
        assert_eq!(verdict_lower(&a, &two_high), Verdict::Pending);
        assert_eq!(
            serde_json::to_string(&Verdict::Pending).unwrap(),
            "\"pending\""
        );
        assert_eq!(
            serde_json::to_string(&Verdict::WithinNoise).unwrap(),
            "\"within noise\""
        );
    }
}
