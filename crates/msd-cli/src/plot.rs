//! Minimal raster plots written with `image`: panels side by side and a line chart (no text; the
//! numbers go to the JSON/markdown reports beside each picture); scatter panels and the palette
//! come from [`msd::viz`].

use image::{Rgb, RgbImage};

/// The class palette and scatter panels are the library's (one rendering everywhere).
pub use msd::viz::{palette, Panel};

/// Places panels side by side with a 4-pixel grey gutter.
pub fn hstack(panels: &[RgbImage]) -> RgbImage {
    let h = panels.iter().map(|p| p.height()).max().unwrap_or(1);
    let w: u32 = panels.iter().map(|p| p.width() + 4).sum::<u32>().max(1);
    let mut out = RgbImage::from_pixel(w, h, Rgb([200, 200, 200]));
    let mut x0 = 0;
    for p in panels {
        image::imageops::overlay(&mut out, p, x0 as i64, 0);
        x0 += p.width() + 4;
    }
    out
}

/// A line chart of `ys` against evenly spaced x positions, with square markers, in a `size`
/// panel; y runs from 0 to the max of `ys` (and of `extra_hlines`), drawn as dashed lines.
pub fn line_chart(
    series: &[(Vec<f64>, Rgb<u8>)],
    extra_hlines: &[(f64, Rgb<u8>)],
    size: u32,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let ymax = series
        .iter()
        .flat_map(|(v, _)| v.iter().copied())
        .chain(extra_hlines.iter().map(|h| h.0))
        .fold(1e-9, f64::max)
        * 1.1;
    let m = 24.0;
    let s = size as f64;
    let to_px = |i: usize, n: usize, y: f64| {
        let x = m
            + (s - 2.0 * m)
                * if n > 1 {
                    i as f64 / (n - 1) as f64
                } else {
                    0.5
                };
        let yy = s - m - (s - 2.0 * m) * (y / ymax);
        (x, yy)
    };
    let put = |img: &mut RgbImage, x: f64, y: f64, c: Rgb<u8>| {
        if x >= 0.0 && y >= 0.0 && x < s && y < s {
            img.put_pixel(x as u32, y as u32, c);
        }
    };
    for i in 0..size {
        put(&mut img, m, i as f64, Rgb([0, 0, 0]));
        put(&mut img, i as f64, s - m, Rgb([0, 0, 0]));
    }
    for (y, c) in extra_hlines {
        let (_, py) = to_px(0, 1, *y);
        for x in (m as u32..size - m as u32).filter(|x| (x / 6) % 2 == 0) {
            put(&mut img, x as f64, py, *c);
        }
    }
    for (ys, c) in series {
        let n = ys.len();
        for i in 0..n {
            let (x, y) = to_px(i, n, ys[i]);
            for dx in -3..=3 {
                for dy in -3..=3 {
                    put(&mut img, x + dx as f64, y + dy as f64, *c);
                }
            }
            if i + 1 < n {
                let (x2, y2) = to_px(i + 1, n, ys[i + 1]);
                for k in 0..=200 {
                    let t = k as f64 / 200.0;
                    put(&mut img, x + t * (x2 - x), y + t * (y2 - y), *c);
                }
            }
        }
    }
    img
}
