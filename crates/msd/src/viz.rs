//! Pictures of samples, shared by the CLI (training previews, `msd sample`, evaluation grids,
//! the toy figure) and the server (PNG responses), so that a class has one colour and an image
//! one rendering everywhere: a class palette, 2-D scatter panels, image grids whose pixels are
//! the 8-bit values evaluation scores ([`crate::eval::to_u8`]), panels side by side, line charts
//! (loss curves from `stats.jsonl`), and PNG encoding.

use crate::{Error, Result};
use image::{ImageFormat, Rgb, RgbImage};
use std::io::Cursor;
use std::path::Path;
use tch::Tensor;

/// Grey of grid gutters and empty cells.
pub const GUTTER_GREY: Rgb<u8> = Rgb([128, 128, 128]);
/// Pixels between grid tiles.
pub const GUTTER: u32 = 2;

/// A distinct colour per class (matplotlib's tab10, cycled).
pub fn palette(i: usize) -> Rgb<u8> {
    const P: [[u8; 3]; 10] = [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ];
    Rgb(P[i % P.len()])
}

/// A square white panel of `size` pixels showing `[−half, half]²`, with light grey axes.
pub struct Panel {
    pub img: RgbImage,
    half: f64,
}

impl Panel {
    pub fn new(size: u32, half: f64) -> Self {
        let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
        let mid = size / 2;
        for i in 0..size {
            img.put_pixel(mid, i, Rgb([225, 225, 225]));
            img.put_pixel(i, mid, Rgb([225, 225, 225]));
        }
        Self { img, half }
    }

    /// Draws points as 2×2 pixel dots in colour `c` ([`Panel::scatter_with`] `0..=1`).
    pub fn scatter(&mut self, pts: &[[f32; 2]], c: Rgb<u8>) {
        self.scatter_with(pts, c, 0..=1);
    }

    /// Draws each point as a square of pixels `dot` around it (e.g. `0..=1`: 2×2 from the
    /// point's pixel, `-1..=1`: 3×3 centred) in colour `c`; points outside the panel and
    /// non-finite points are skipped.
    pub fn scatter_with(
        &mut self,
        pts: &[[f32; 2]],
        c: Rgb<u8>,
        dot: std::ops::RangeInclusive<i64>,
    ) {
        let s = self.img.width() as f64;
        for p in pts {
            let u = ((p[0] as f64 + self.half) / (2.0 * self.half) * s).floor();
            let v = ((self.half - p[1] as f64) / (2.0 * self.half) * s).floor();
            if !u.is_finite() || !v.is_finite() {
                continue;
            }
            for du in dot.clone() {
                for dv in dot.clone() {
                    let (x, y) = (u + du as f64, v + dv as f64);
                    if x >= 0.0 && y >= 0.0 && x < s && y < s {
                        self.img.put_pixel(x as u32, y as u32, c);
                    }
                }
            }
        }
    }
}

/// A grid of images: `bytes` holds `n` images of `shape` `[C, H, W]` (C = 1 or 3) as 8-bit
/// values, image after image; `rows[r]` lists the images of row r left to right. Tiles are
/// separated by [`GUTTER`] grey pixels; the width fits the longest row.
pub fn image_grid(bytes: &[u8], shape: [usize; 3], rows: &[Vec<usize>]) -> Result<RgbImage> {
    let [c, h, w] = shape;
    let per = c * h * w;
    if !(c == 1 || c == 3) || per == 0 || !bytes.len().is_multiple_of(per) {
        return Err(Error::Invalid(format!(
            "an image grid needs [1 or 3, H, W] images, got {shape:?} for {} values",
            bytes.len()
        )));
    }
    let n = bytes.len() / per;
    if let Some(i) = rows.iter().flatten().find(|&&i| i >= n) {
        return Err(Error::Invalid(format!(
            "image grid: image {i} asked of {n}"
        )));
    }
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0).max(1) as u32;
    let (h, w) = (h as u32, w as u32);
    let mut img = RgbImage::from_pixel(
        cols * (w + GUTTER) + GUTTER,
        rows.len().max(1) as u32 * (h + GUTTER) + GUTTER,
        GUTTER_GREY,
    );
    let plane = (h * w) as usize;
    for (r, idx) in rows.iter().enumerate() {
        for (col, &i) in idx.iter().enumerate() {
            let base = i * per;
            let (x0, y0) = (
                GUTTER + col as u32 * (w + GUTTER),
                GUTTER + r as u32 * (h + GUTTER),
            );
            for y in 0..h {
                for x in 0..w {
                    let p = (y * w + x) as usize;
                    let v = |ch: usize| bytes[base + ch * plane + p];
                    let rgb = if c == 1 {
                        [v(0); 3]
                    } else {
                        [v(0), v(1), v(2)]
                    };
                    img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
                }
            }
        }
    }
    Ok(img)
}

/// One row per class, in the order classes first appear in `labels`, each class's images left
/// to right.
pub fn rows_by_class(labels: &[i64]) -> Vec<Vec<usize>> {
    let mut rows: Vec<(i64, Vec<usize>)> = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        match rows.iter_mut().find(|(c, _)| *c == l) {
            Some((_, v)) => v.push(i),
            None => rows.push((l, vec![i])),
        }
    }
    rows.into_iter().map(|(_, v)| v).collect()
}

/// The class grid of `x`: `[N, C, H, W]` in [−1, 1] (rendered as 8-bit images, exactly as
/// evaluation scores them) with `labels` (N entries): one row per class.
pub fn class_grid(x: &Tensor, labels: &[i64]) -> Result<RgbImage> {
    let s = x.size();
    if s.len() != 4 || (s[1] != 1 && s[1] != 3) || s[0] as usize != labels.len() {
        return Err(Error::Invalid(format!(
            "a sample grid needs [N, 1 or 3, H, W] images and N labels, got {s:?} and {} labels",
            labels.len()
        )));
    }
    let bytes: Vec<u8> = Vec::try_from(crate::eval::to_u8(x)?.flatten(0, -1))?;
    image_grid(
        &bytes,
        [s[1] as usize, s[2] as usize, s[3] as usize],
        &rows_by_class(labels),
    )
}

/// The image as PNG bytes.
pub fn png_bytes(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
        .map_err(|e| Error::Invalid(format!("PNG encoding failed: {e}")))?;
    Ok(buf)
}

/// Writes `img` as a PNG file at `path` atomically, creating the parent folder.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    crate::train::checkpoint::write_bytes_atomic(path, &png_bytes(img)?)
}

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

/// A line chart (no text: the numbers go to the reports beside it) of `ys` against evenly spaced x positions, with square markers, in a `size`
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

/// The `loss` values of every logged line of a `stats.jsonl` (lines without one are skipped).
pub fn read_losses(stats: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(stats).map_err(|e| Error::io(stats, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("loss").and_then(|x| x.as_f64()))
        .filter(|x| x.is_finite())
        .collect())
}

/// Writes the loss curve of a run's `stats.jsonl` to `out` (PNG): the logged mean loss against
/// the logged step, y from 0 to the largest loss.
pub fn write_loss_curve(stats: &Path, out: &Path) -> Result<()> {
    let losses = read_losses(stats)?;
    save_png(&line_chart(&[(losses, palette(0))], &[], 480), out)
}

/// Means with ± std bars at evenly spaced x positions (the K values in order), y from 0 to
/// `ymax`, a dashed grey line at `floor`.
pub fn errorbar_chart(
    pts: &[(f64, f64)],
    floor: f64,
    ymax: f64,
    size: u32,
    c: Rgb<u8>,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let (m, s) = (24.0, size as f64);
    let n = pts.len();
    let px = |i: usize| {
        m + (s - 2.0 * m)
            * if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            }
    };
    let py = |y: f64| s - m - (s - 2.0 * m) * (y / ymax.max(1e-9));
    let mut put = |x: f64, y: f64, c: Rgb<u8>| {
        if x >= 0.0 && y >= 0.0 && x < s && y < s {
            img.put_pixel(x as u32, y as u32, c);
        }
    };
    for i in 0..size {
        put(m, i as f64, Rgb([0, 0, 0]));
        put(i as f64, s - m, Rgb([0, 0, 0]));
    }
    for x in (m as u32..size - m as u32).filter(|x| (x / 6) % 2 == 0) {
        put(x as f64, py(floor), Rgb([150, 150, 150]));
    }
    for (i, &(mean, std)) in pts.iter().enumerate() {
        let x = px(i);
        for d in -3..=3 {
            for e in -3..=3 {
                put(x + d as f64, py(mean) + e as f64, c);
            }
        }
        let (lo, hi) = (py(mean + std), py(mean - std));
        let mut y = lo;
        while y <= hi {
            put(x, y, c);
            put(x + 1.0, y, c);
            y += 0.5;
        }
        for d in -6..=6 {
            put(x + d as f64, lo, c);
            put(x + d as f64, hi, c);
        }
        if i + 1 < n {
            let (x2, y2) = (px(i + 1), py(pts[i + 1].0));
            for k in 0..=200 {
                let t = k as f64 / 200.0;
                put(x + t * (x2 - x), py(mean) + t * (y2 - py(mean)), c);
            }
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_class_with_8_bit_pixels() {
        // Two classes interleaved: class 5 images are white (overshooting), class 2 black.
        let labels = [5, 2, 5, 2, 5];
        let x = Tensor::from_slice(&[1.3f32, -1.0, 1.0, -1.0, 1.0])
            .reshape([5, 1, 1, 1])
            .repeat([1, 1, 3, 4]);
        let img = class_grid(&x, &labels).unwrap();
        // 3 columns of width 4 (+ gutters), 2 rows of height 3.
        assert_eq!((img.width(), img.height()), (3 * 6 + 2, 2 * 5 + 2));
        assert_eq!(img.get_pixel(2, 2), &Rgb([255, 255, 255])); // row 0 = class 5
        assert_eq!(img.get_pixel(2, 7), &Rgb([0, 0, 0])); // row 1 = class 2
        assert_eq!(img.get_pixel(2 + 2 * 6, 7), &GUTTER_GREY); // class 2 has only 2 samples
        assert!(class_grid(&x, &labels[..3]).is_err());
        // Colour images keep their channels.
        let rgb = image_grid(&[10, 20, 30], [3, 1, 1], &[vec![0]]).unwrap();
        assert_eq!(rgb.get_pixel(2, 2), &Rgb([10, 20, 30]));
        assert!(image_grid(&[1, 2], [3, 1, 1], &[vec![0]]).is_err());
        assert!(image_grid(&[1], [1, 1, 1], &[vec![1]]).is_err());
    }

    #[test]
    fn scatter_places_points_and_skips_the_rest() {
        let mut p = Panel::new(10, 1.0);
        p.scatter(&[[-1.0, 1.0], [5.0, 0.0], [f32::NAN, 0.0]], palette(3));
        // (−1, 1) is the top-left corner: pixels (0,0),(1,0),(0,1),(1,1).
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            assert_eq!(p.img.get_pixel(x, y), &palette(3));
        }
        let coloured = p.img.pixels().filter(|&&px| px == palette(3)).count();
        assert_eq!(coloured, 4);
        let png = png_bytes(&p.img).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn loss_curve_reads_losses_and_draws() {
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
        assert!(img.pixels().any(|p| *p == palette(0)));
        let e = read_losses(&d.path().join("none.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.jsonl"), "{e}");
    }
}
