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

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/`), embedded so that chart text
/// renders the same on any machine without system fonts.
const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers [`FONT`] as plotters' `sans-serif` family, once per process.
fn register_font() -> Result<()> {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *OK.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "the embedded chart font could not be parsed".into(),
        ))
    }
}

/// What a chart shows besides its data: caption, axis titles, size and y range.
#[derive(Clone, Debug)]
pub struct ChartSpec {
    pub caption: String,
    pub x_label: String,
    pub y_label: String,
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// The y range; `None`: from 0 (or the lowest value, if negative) to 1.1 × the highest
    /// value (bar tops and horizontal lines included).
    pub y_range: Option<(f64, f64)>,
    /// The x values are counts (e.g. K): ticks only on integers.
    pub integer_x: bool,
    /// A logarithmic y axis (for values spanning decades, e.g. FD from 100 down to 2): only
    /// positive values are drawn, a bar reaching to or below zero is cut at the axis' bottom, and
    /// the automatic range spans the lowest positive value to the highest with headroom in
    /// ratio; an explicit `y_range` must then be positive.
    pub log_y: bool,
}

impl ChartSpec {
    /// A `size`-pixel square chart with these texts and an automatic y range.
    pub fn new(caption: &str, x_label: &str, y_label: &str, size: u32) -> Self {
        Self {
            caption: caption.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            size: (size, size),
            y_range: None,
            integer_x: false,
            log_y: false,
        }
    }

    /// Whether the point `p` can be drawn: finite, and above zero on a logarithmic y axis.
    fn shows(&self, p: &(f64, f64)) -> bool {
        finite(p) && (!self.log_y || p.1 > 0.0)
    }
}

/// One line of a chart: `points` are (x, y), placed by value and joined in the given order,
/// each with a marker; `std` (empty, or one per point) draws ± std bars. Points with a
/// non-finite coordinate are skipped (and so are non-finite bars).
#[derive(Clone, Debug)]
pub struct Series {
    /// Its legend entry (series with an empty name stay out of the legend).
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub std: Vec<f64>,
    pub colour: Rgb<u8>,
}

/// A dashed horizontal reference line (e.g. a noise floor) with its legend entry.
#[derive(Clone, Debug)]
pub struct HLine {
    pub name: String,
    pub y: f64,
    pub colour: Rgb<u8>,
}

fn finite(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

/// `v` on a tick: integers without decimals, others with up to 4 significant decimals.
fn tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        format!("{}", v.round())
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A line chart drawn with plotters: tick marks with labels on both axes, the axis titles and
/// caption of `spec`, every series placed by x value (with its ± std bars when given), the
/// horizontal lines dashed, and a legend of the named entries when there is more than one
/// series or any horizontal line. Empty series, or series of non-finite values, draw an empty
/// frame (x from 0 to 1). With `spec.log_y` the y axis is logarithmic (see [`ChartSpec`]).
pub fn line_chart(spec: &ChartSpec, series: &[Series], hlines: &[HLine]) -> Result<RgbImage> {
    use plotters::prelude::*;
    register_font()?;
    let (w, h) = spec.size;
    let err = |e: &dyn std::fmt::Display| {
        Error::Invalid(format!("drawing the chart {:?}: {e}", spec.caption))
    };
    let shown = |p: &(f64, f64)| spec.shows(p);
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().copied().filter(shown))
    };
    let (mut x0, mut x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    let pad = if x1 > x0 { 0.05 * (x1 - x0) } else { 0.5 };
    let (x0, x1) = (x0 - pad, x1 + pad);
    // Every y a chart should show: points, bar ends and horizontal lines.
    let ys = || {
        let bars = series.iter().flat_map(|s| {
            s.points
                .iter()
                .zip(s.std.iter().chain(std::iter::repeat(&0.0)))
                .filter(|(p, e)| shown(p) && e.is_finite())
                .flat_map(|(p, e)| [p.1 - e.abs(), p.1 + e.abs()])
        });
        pts()
            .map(|p| p.1)
            .chain(bars)
            .chain(hlines.iter().map(|l| l.y).filter(|y| y.is_finite()))
    };
    let (y0, y1) = match spec.y_range {
        Some((a, b)) if spec.log_y && !(a > 0.0 && b > a) => {
            return Err(err(&format!(
                "a logarithmic y axis needs 0 < bottom < top, got y_range {a}..{b}"
            )))
        }
        Some(r) => r,
        None if spec.log_y => {
            let (lo, hi) = ys()
                .filter(|y| *y > 0.0)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
                    (a.min(y), b.max(y))
                });
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (1.0, 10.0) };
            // A fifth of the decades spanned below, a third above (room for the legend).
            let span = (hi / lo).max(10.0).ln();
            (lo * (-0.2 * span).exp(), hi * (span / 3.0).exp())
        }
        None => {
            let (lo, hi) = ys().fold((0.0f64, f64::NEG_INFINITY), |(a, b), y| {
                (a.min(y), b.max(y))
            });
            let hi = if hi > lo { hi } else { lo + 1.0 };
            (
                if lo < 0.0 { lo * 1.1 } else { 0.0 },
                hi * 1.1 - if lo < 0.0 { 0.1 * lo } else { 0.0 },
            )
        }
    };
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&spec.caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(56);
        let frame = Frame {
            spec,
            x: (x0, x1),
            y: (y0, y1),
        };
        if spec.log_y {
            let chart = builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(|e| err(&e))?;
            frame.draw(chart, series, hlines).map_err(|e| err(&e))?;
        } else {
            let chart = builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| err(&e))?;
            frame.draw(chart, series, hlines).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    RgbImage::from_raw(w, h, buf).ok_or_else(|| err(&"buffer size"))
}

/// A chart's spec and its settled x and y ranges: what [`Frame::draw`] needs besides the
/// data, whichever y coordinate (linear or logarithmic) the chart was built with.
struct Frame<'s> {
    spec: &'s ChartSpec,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame<'_> {
    /// Draws the mesh, the horizontal lines, the series with their bars and the legend into
    /// `chart` (see [`line_chart`]).
    fn draw<'a, Y>(
        &self,
        mut chart: plotters::chart::ChartContext<
            'a,
            plotters::prelude::BitMapBackend<'a>,
            plotters::prelude::Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
        >,
        series: &[Series],
        hlines: &[HLine],
    ) -> std::result::Result<(), String>
    where
        Y: plotters::coord::ranged1d::Ranged<ValueType = f64>
            + plotters::coord::ranged1d::ValueFormatter<f64>,
    {
        use plotters::prelude::*;
        let spec = self.spec;
        let (x0, x1) = self.x;
        let e = |e: &dyn std::fmt::Display| e.to_string();
        let shown = |p: &(f64, f64)| spec.shows(p);
        let mut mesh = chart.configure_mesh();
        if spec.integer_x {
            // A step of at least 1: ask for no more labels than integers in the range.
            mesh.x_labels(((x1 - x0).floor() as usize + 1).clamp(2, 11));
        }
        if spec.log_y {
            // Enough key points for every 1–9 multiple of a decade; only 1, 2 and 5 get labels.
            mesh.y_labels(40);
        }
        let int_tick = |v: &f64| {
            if (v - v.round()).abs() < 1e-9 {
                tick(v)
            } else {
                String::new()
            }
        };
        let log_tick = |v: &f64| {
            let m = v / 10f64.powf(v.log10().floor());
            if [1.0, 2.0, 5.0].iter().any(|k| (m - k).abs() < 1e-6) {
                tick(v)
            } else {
                String::new()
            }
        };
        mesh.disable_mesh()
            .x_desc(&spec.x_label)
            .y_desc(&spec.y_label)
            .x_label_formatter(if spec.integer_x { &int_tick } else { &tick })
            .y_label_formatter(if spec.log_y { &log_tick } else { &tick })
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()
            .map_err(|x| e(&x))?;
        let rgb = |c: Rgb<u8>| RGBColor(c.0[0], c.0[1], c.0[2]);
        for l in hlines.iter().filter(|l| shown(&(0.0, l.y))) {
            let style = rgb(l.colour).stroke_width(2);
            let a = chart
                .draw_series(DashedLineSeries::new([(x0, l.y), (x1, l.y)], 6, 4, style))
                .map_err(|x| e(&x))?;
            if !l.name.is_empty() {
                a.label(&l.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], style));
            }
        }
        for s in series {
            let c = rgb(s.colour);
            let p: Vec<(f64, f64)> = s.points.iter().copied().filter(shown).collect();
            let a = chart
                .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                .map_err(|x| e(&x))?;
            if !s.name.is_empty() {
                a.label(&s.name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
                });
            }
            chart
                .draw_series(
                    p.iter().map(|&q| {
                        EmptyElement::at(q) + Rectangle::new([(-3, -3), (3, 3)], c.filled())
                    }),
                )
                .map_err(|x| e(&x))?;
            if s.std.len() == s.points.len() {
                // On a log axis a bar reaching to or below zero ends at the axis' bottom.
                let bottom = |y: f64| if spec.log_y { y.max(self.y.0) } else { y };
                let bars = s
                    .points
                    .iter()
                    .zip(&s.std)
                    .filter(|(q, d)| shown(q) && d.is_finite())
                    .map(|(&(x, y), d)| {
                        ErrorBar::new_vertical(
                            x,
                            bottom(y - d.abs()),
                            y,
                            y + d.abs(),
                            c.stroke_width(2),
                            10,
                        )
                    });
                chart.draw_series(bars).map_err(|x| e(&x))?;
            }
        }
        let named = series.iter().filter(|s| !s.name.is_empty()).count()
            + hlines.iter().filter(|l| !l.name.is_empty()).count();
        if named > 0 && (series.len() > 1 || !hlines.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 12))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(|x| e(&x))?;
        }
        Ok(())
    }
}

/// The `loss` values of every logged line of a `stats.jsonl` (lines without one are skipped).
pub fn read_losses(stats: &Path) -> Result<Vec<f64>> {
    Ok(read_loss_points(stats)?.into_iter().map(|p| p.1).collect())
}

/// (step, loss) of every logged line of a `stats.jsonl` with a finite `loss`; the step is the
/// line's `step` field, or its index among these lines when it has none.
pub fn read_loss_points(stats: &Path) -> Result<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(stats).map_err(|e| Error::io(stats, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let loss = v.get("loss").and_then(|x| x.as_f64())?;
            Some((v.get("step").and_then(|x| x.as_f64()), loss))
        })
        .filter(|(_, l)| l.is_finite())
        .enumerate()
        .map(|(i, (step, l))| (step.unwrap_or(i as f64), l))
        .collect())
}

/// One logged loss: its field name and its (step, value) points.
pub type LossSeries = (String, Vec<(f64, f64)>);

/// Every loss a `stats.jsonl` logs, one series per field: `loss` and the fields ending in
/// `_loss` (a distillation stage logs `vsd_loss`, `fake_loss`, `regression_loss` and, in ADM,
/// the GAN terms), each as (step, value) over the lines that carry a finite value, in the order
/// the fields first appear (sorted by name within a line). The step is the line's `step`, or the
/// line's index among the parsed lines when it has none.
pub fn read_loss_series(stats: &Path) -> Result<Vec<LossSeries>> {
    let text = std::fs::read_to_string(stats).map_err(|e| Error::io(stats, e))?;
    let mut series: Vec<LossSeries> = Vec::new();
    let lines = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.as_object().cloned());
    for (i, line) in lines.enumerate() {
        let step = line
            .get("step")
            .and_then(|x| x.as_f64())
            .unwrap_or(i as f64);
        for (key, v) in &line {
            let Some(v) = v.as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            if key != "loss" && !key.ends_with("_loss") {
                continue;
            }
            match series.iter_mut().find(|(k, _)| k == key) {
                Some((_, pts)) => pts.push((step, v)),
                None => series.push((key.clone(), vec![(step, v)])),
            }
        }
    }
    Ok(series)
}

/// Writes the loss curves of a run's `stats.jsonl` to `out` (PNG): every logged loss (see
/// [`read_loss_series`]) against the logged step, one coloured line each with a legend when
/// there is more than one, y from 0 to the largest value.
pub fn write_loss_curve(stats: &Path, out: &Path) -> Result<()> {
    let series: Vec<Series> = read_loss_series(stats)?
        .into_iter()
        .enumerate()
        .map(|(i, (name, points))| Series {
            name,
            points,
            std: vec![],
            colour: palette(i),
        })
        .collect();
    let spec = ChartSpec::new("training losses", "logged step", "loss", 480);
    save_png(&line_chart(&spec, &series, &[])?, out)
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
        // A distillation stage's log: one series per `*_loss` field, other fields ignored.
        std::fs::write(
            &s,
            "{\"step\":20,\"vsd_loss\":0.5,\"fake_loss\":0.25,\"fake_lr\":1e-4}\n\
             {\"step\":40,\"vsd_loss\":0.4,\"fake_loss\":null,\"gan_generator_loss\":0.1}\n",
        )
        .unwrap();
        let series = read_loss_series(&s).unwrap();
        let names: Vec<&str> = series.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["fake_loss", "vsd_loss", "gan_generator_loss"]);
        assert_eq!(series[0].1, vec![(20.0, 0.25)]);
        assert_eq!(series[1].1, vec![(20.0, 0.5), (40.0, 0.4)]);
        assert!(read_losses(&s).unwrap().is_empty());
        write_loss_curve(&s, &out).unwrap();
        let img = image::open(&out).unwrap().to_rgb8();
        assert!(
            img.pixels().any(|p| *p == palette(1)),
            "second series drawn"
        );
        let e = read_losses(&d.path().join("none.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.jsonl"), "{e}");
    }

    /// Mean (column, row) of the pixels of colour `c`.
    fn mean_position(img: &RgbImage, c: Rgb<u8>) -> (f64, f64) {
        let at: Vec<(f64, f64)> = img
            .enumerate_pixels()
            .filter(|p| *p.2 == c)
            .map(|p| (p.0 as f64, p.1 as f64))
            .collect();
        assert!(!at.is_empty(), "no pixel of colour {c:?}");
        let n = at.len() as f64;
        let sum = at.iter().fold((0.0, 0.0), |s, p| (s.0 + p.0, s.1 + p.1));
        (sum.0 / n, sum.1 / n)
    }

    #[test]
    fn charts_carry_tick_labels_titles_and_a_caption() {
        let s = Series {
            name: "a".into(),
            points: vec![(1.0, 2.0), (2.0, 3.0), (4.0, 1.0)],
            std: vec![0.5, 0.5, 0.5],
            colour: palette(0),
        };
        let spec = ChartSpec::new("caption", "students K", "FD", 400);
        let img = line_chart(&spec, &[s], &[]).unwrap();
        assert_eq!((img.width(), img.height()), (400, 400));
        let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
            (x0..x1)
                .flat_map(|x| (y0..y1).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&v| v < 128))
                .count()
        };
        // The y axis sits at x = 10 (margin) + 56 (label area); tick marks reach 5 px left of
        // it, so anything dark further left is text: the y tick labels and the y title.
        assert!(dark(0, 55, 40, 340) > 100, "no y tick labels or title");
        // The caption above the plot, the x tick labels and title below it.
        assert!(dark(60, 340, 0, 28) > 30, "no caption");
        assert!(dark(70, 390, 365, 400) > 50, "no x tick labels or title");
    }

    /// One unnamed series per point, in colours `palette(1)`, `palette(2)`, …, each with its
    /// `std` (none when `std` is empty).
    fn dots(points: &[(f64, f64)], std: &[f64]) -> Vec<Series> {
        points
            .iter()
            .enumerate()
            .map(|(i, &p)| Series {
                name: String::new(),
                points: vec![p],
                std: std.get(i).map(|&e| vec![e]).unwrap_or_default(),
                colour: palette(i + 1),
            })
            .collect()
    }

    #[test]
    fn points_are_placed_by_x_value() {
        // K = 1, 2, 10: by value the second point is 1/9 of the way, by index it would be 1/2.
        let series = dots(&[(1.0, 0.5), (2.0, 0.5), (10.0, 0.5)], &[]);
        let mut spec = ChartSpec::new("", "x", "y", 400);
        spec.y_range = Some((0.0, 1.0));
        let img = line_chart(&spec, &series, &[]).unwrap();
        let c: Vec<f64> = (1..=3).map(|i| mean_position(&img, palette(i)).0).collect();
        assert!(c[0] < c[1] && c[1] < c[2], "{c:?}");
        let frac = (c[1] - c[0]) / (c[2] - c[0]);
        assert!((frac - 1.0 / 9.0).abs() < 0.02, "{frac} of the way, {c:?}");
    }

    #[test]
    fn a_log_axis_places_points_by_their_logarithm() {
        // y = 1, 10, 100: on a log axis 10 sits halfway, on a linear one 1/11 of the way up.
        // A bar reaching below zero must not break the log axis.
        let series = dots(&[(0.0, 1.0), (1.0, 10.0), (2.0, 100.0)], &[5.0, 0.0, 0.0]);
        let mut spec = ChartSpec::new("", "x", "y", 400);
        spec.log_y = true;
        // A non-positive point is left out instead of failing.
        let mut with_zero = series.clone();
        with_zero.extend(dots(&[(0.5, 0.0)], &[1.0]));
        let img = line_chart(&spec, &with_zero, &[]).unwrap();
        let r: Vec<f64> = (1..=3).map(|i| mean_position(&img, palette(i)).1).collect();
        assert!(r[0] > r[1] && r[1] > r[2], "{r:?}");
        let frac = (r[0] - r[1]) / (r[0] - r[2]);
        assert!((frac - 0.5).abs() < 0.05, "{frac} of the way up, {r:?}");
        spec.log_y = false;
        let img = line_chart(&spec, &series, &[]).unwrap();
        let r: Vec<f64> = (1..=3).map(|i| mean_position(&img, palette(i)).1).collect();
        let frac = (r[0] - r[1]) / (r[0] - r[2]);
        assert!(
            (frac - 9.0 / 99.0).abs() < 0.05,
            "{frac} of the way up, {r:?}"
        );
        // An explicit range must be positive on a log axis.
        spec.log_y = true;
        spec.y_range = Some((0.0, 10.0));
        let e = line_chart(&spec, &series, &[]).unwrap_err().to_string();
        assert!(e.contains("logarithmic") && e.contains("y_range"), "{e}");
    }

    #[test]
    fn empty_and_non_finite_series_draw_a_frame() {
        let spec = ChartSpec::new("empty", "x", "y", 300);
        let img = line_chart(&spec, &[], &[]).unwrap();
        assert_eq!((img.width(), img.height()), (300, 300));
        let bad = Series {
            name: "nan".into(),
            points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY), (2.0, 1.0)],
            std: vec![f64::NAN, 0.1, f64::NAN],
            colour: palette(3),
        };
        let empty = Series {
            name: "none".into(),
            points: vec![],
            std: vec![],
            colour: palette(4),
        };
        let floor = HLine {
            name: "floor".into(),
            y: f64::NAN,
            colour: palette(5),
        };
        let img = line_chart(&spec, &[bad, empty], &[floor]).unwrap();
        // The one finite point is drawn.
        assert!(img.pixels().any(|p| *p == palette(3)));
    }
}
