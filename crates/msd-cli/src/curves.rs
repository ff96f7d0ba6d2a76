//! Loss curves from a run's `stats.jsonl`: the logged mean loss against the logged step, as a
//! PNG line chart (y from 0 to the largest loss; the numbers themselves stay in the JSONL).

use crate::plot;
use anyhow::{Context, Result};
use image::Rgb;
use std::path::Path;

/// The `loss` values of every logged line of `stats` (lines without one are skipped).
pub fn read_losses(stats: &Path) -> Result<Vec<f64>> {
    let text =
        std::fs::read_to_string(stats).with_context(|| format!("reading {}", stats.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .filter(|x| x.is_finite())
        .collect())
}

/// Writes the loss curve of `stats` to `out` (PNG).
pub fn write_loss_curve(stats: &Path, out: &Path) -> Result<()> {
    let losses = read_losses(stats)?;
    let img = plot::line_chart(&[(losses, Rgb([31, 119, 180]))], &[], 480);
    img.save(out)
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_losses_and_draws() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("stats.jsonl");
        std::fs::write(
            &s,
            "{\"step\":1,\"loss\":2.0}\n{\"step\":2}\nnot json\n{\"step\":3,\"loss\":0.5}\n",
        )
        .unwrap();
        assert_eq!(read_losses(&s).unwrap(), vec![2.0, 0.5]);
        let out = d.path().join("loss.png");
        write_loss_curve(&s, &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        // Some pixels carry the series colour.
        assert!(img.pixels().any(|p| *p == Rgb([31, 119, 180])));
    }
}
