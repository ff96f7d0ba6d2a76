//! Image sample grids: one row per class (in the order classes first appear in the labels), the
//! samples of that class left to right, 2-pixel grey gutters. Pixels in [−1, 1] map to 0..255.

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Builds the grid of `x`: `[N, C, H, W]` (C = 1 or 3) with `labels` (N entries).
pub fn class_grid(x: &Tensor, labels: &[i64]) -> Result<RgbImage> {
    let s = x.size();
    if s.len() != 4 || (s[1] != 1 && s[1] != 3) || s[0] as usize != labels.len() {
        bail!(
            "a sample grid needs [N, 1 or 3, H, W] images and N labels, got {s:?} and {} labels",
            labels.len()
        );
    }
    let (c, h, w) = (s[1] as usize, s[2] as u32, s[3] as u32);
    let mut rows: Vec<(i64, Vec<usize>)> = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        match rows.iter_mut().find(|(c, _)| *c == l) {
            Some((_, v)) => v.push(i),
            None => rows.push((l, vec![i])),
        }
    }
    let cols = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(1) as u32;
    let g = 2u32;
    let mut img = RgbImage::from_pixel(
        cols * (w + g) + g,
        rows.len() as u32 * (h + g) + g,
        Rgb([128, 128, 128]),
    );
    let px: Vec<u8> = Vec::try_from(
        ((x.to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .clamp(-1.0, 1.0)
            + 1.0)
            * 127.5)
            .round()
            .to_kind(Kind::Uint8)
            .flatten(0, -1),
    )?;
    let plane = (h * w) as usize;
    for (r, (_, idx)) in rows.iter().enumerate() {
        for (col, &i) in idx.iter().enumerate() {
            let base = i * c * plane;
            for y in 0..h {
                for xx in 0..w {
                    let p = (y * w + xx) as usize;
                    let v = |ch: usize| px[base + ch * plane + p];
                    let rgb = if c == 1 {
                        [v(0); 3]
                    } else {
                        [v(0), v(1), v(2)]
                    };
                    img.put_pixel(
                        g + col as u32 * (w + g) + xx,
                        g + r as u32 * (h + g) + y,
                        Rgb(rgb),
                    );
                }
            }
        }
    }
    Ok(img)
}

/// Writes the grid of `x` to `out` (PNG), creating the parent folder.
pub fn write_class_grid(x: &Tensor, labels: &[i64], out: &Path) -> Result<()> {
    let img = class_grid(x, labels)?;
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    img.save(out)
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_class_with_mapped_pixels() {
        // Two classes interleaved: class 5 images are white, class 2 images black.
        let labels = [5, 2, 5, 2, 5];
        let x = Tensor::from_slice(&[1.0f32, -1.0, 1.0, -1.0, 1.0])
            .reshape([5, 1, 1, 1])
            .repeat([1, 1, 3, 4]);
        let img = class_grid(&x, &labels).unwrap();
        // 3 columns of width 4 (+ gutters), 2 rows of height 3.
        assert_eq!((img.width(), img.height()), (3 * 6 + 2, 2 * 5 + 2));
        assert_eq!(img.get_pixel(2, 2), &Rgb([255, 255, 255])); // row 0 = class 5
        assert_eq!(img.get_pixel(2, 7), &Rgb([0, 0, 0])); // row 1 = class 2
        assert_eq!(img.get_pixel(2 + 2 * 6, 7), &Rgb([128, 128, 128])); // class 2 has only 2 samples
        assert!(class_grid(&x, &labels[..3]).is_err());
    }
}
