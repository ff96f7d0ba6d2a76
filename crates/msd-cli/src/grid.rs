//! Image sample grids written as PNG files: one row per class, drawn by the library's
//! [`msd::viz::class_grid`] (the same rendering as the server's, and as evaluation scores).

use anyhow::{Context, Result};
use std::path::Path;
use tch::Tensor;

/// Writes the class grid of `x`: `[N, C, H, W]` with `labels` to `out` (PNG), creating the
/// parent folder.
pub fn write_class_grid(x: &Tensor, labels: &[i64], out: &Path) -> Result<()> {
    let img = msd::viz::class_grid(x, labels)?;
    msd::viz::save_png(&img, out).with_context(|| format!("writing {}", out.display()))
}
