//! Response bodies: a PNG picture of samples (a scatter plot for 2-D points, a grid for images
//! `[C, H, W]` with values in [−1, 1] and C = 1 or 3) or the raw float32 array as `.npy`.

use image::RgbImage;

/// Side of the square scatter plot of 2-D samples, in pixels.
pub const PLOT_SIZE: u32 = 384;
/// Half-width of the plotted box `[−PLOT_HALF, PLOT_HALF]²` (the toy data's box).
pub const PLOT_HALF: f64 = msd::data::toy2d::BOX;
/// Pixels between grid tiles.
pub const GUTTER: u32 = msd::viz::GUTTER;

/// The class palette (the library's, so pictures agree everywhere).
pub use msd::viz::palette;

/// Whether samples of `shape` can be drawn as a PNG.
pub fn png_supported(shape: &[i64]) -> bool {
    shape == [2] || (shape.len() == 3 && matches!(shape[0], 1 | 3) && shape[1] > 0 && shape[2] > 0)
}

/// Columns and rows of the grid for `n` samples in `groups` equal groups (one row per group when
/// a request names several classes, else a near-square grid).
pub fn grid_dims(n: usize, groups: usize) -> (u32, u32) {
    if groups > 1 {
        ((n / groups).max(1) as u32, groups as u32)
    } else {
        let cols = (n as f64).sqrt().ceil().max(1.0) as u32;
        (cols, (n as u32).div_ceil(cols))
    }
}

/// Pixel size of the PNG for `n` samples of `shape` in `groups` groups.
pub fn png_size(shape: &[i64], n: usize, groups: usize) -> (u32, u32) {
    if shape == [2] {
        return (PLOT_SIZE, PLOT_SIZE);
    }
    let (cols, rows) = grid_dims(n, groups);
    let (h, w) = (shape[1] as u32, shape[2] as u32);
    (
        cols * w + (cols + 1) * GUTTER,
        rows * h + (rows + 1) * GUTTER,
    )
}

/// Draws samples `x` (flattened, `labels.len()` × `shape`) as a PNG.
pub fn png(x: &[f32], shape: &[i64], labels: &[i64], groups: usize) -> Result<Vec<u8>, String> {
    if !png_supported(shape) {
        return Err(format!(
            "samples of shape {shape:?} have no PNG picture; ask for format \"npy\""
        ));
    }
    let img = if shape == [2] {
        scatter(x, labels)
    } else {
        grid(x, shape, labels.len(), groups)?
    };
    msd::viz::png_bytes(&img).map_err(|e| e.to_string())
}

fn scatter(x: &[f32], labels: &[i64]) -> RgbImage {
    let mut panel = msd::viz::Panel::new(PLOT_SIZE, PLOT_HALF);
    for (p, &c) in x.chunks_exact(2).zip(labels) {
        panel.scatter_with(&[[p[0], p[1]]], palette(c.max(0) as usize), -1..=1);
    }
    panel.img
}

/// The grid of `n` images: `cols` per row (see [`grid_dims`]), drawn as 8-bit images by the
/// library (the values evaluation scores).
fn grid(x: &[f32], shape: &[i64], n: usize, groups: usize) -> Result<RgbImage, String> {
    let (cols, rows) = grid_dims(n, groups);
    let per: usize = shape.iter().map(|&d| d as usize).product();
    let x = &x[..(n * per).min(x.len())];
    let bytes: Vec<u8> = msd::eval::to_u8(&tch::Tensor::from_slice(x))
        .and_then(|b| Ok(Vec::<u8>::try_from(b)?))
        .map_err(|e| e.to_string())?;
    let layout: Vec<Vec<usize>> = (0..rows as usize)
        .map(|r| (r * cols as usize..((r + 1) * cols as usize).min(n)).collect())
        .collect();
    msd::viz::image_grid(
        &bytes,
        [shape[0] as usize, shape[1] as usize, shape[2] as usize],
        &layout,
    )
    .map_err(|e| e.to_string())
}

/// The samples as a float32 `.npy` file (format 1.0) of shape `[n, ...shape]`, built in memory.
/// (libtorch's `Tensor::write_npy` needs a file: a temporary file per response cost about 2.5 ms,
/// more than generating the samples; the tests read these bytes back with libtorch's reader.)
pub fn npy(x: &[f32], n: usize, shape: &[i64]) -> Result<Vec<u8>, String> {
    let per: usize = shape.iter().map(|&d| d.max(0) as usize).product();
    if x.len() != n * per {
        return Err(format!(
            "npy: {} values for {n} samples of shape {shape:?}",
            x.len()
        ));
    }
    let dims: Vec<String> = std::iter::once(n.to_string())
        .chain(shape.iter().map(|d| d.to_string()))
        .collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64,
    // ending in a newline.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * x.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in x {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_and_grid_sizes() {
        let png2 = png(&[0.0, 0.0, 1.0, -1.0], &[2], &[0, 1], 1).unwrap();
        let img = image::load_from_memory(&png2).unwrap();
        assert_eq!((img.width(), img.height()), (PLOT_SIZE, PLOT_SIZE));
        // 6 grey 4×5 images in 2 groups: 3 columns × 2 rows.
        let x = vec![0.5f32; 6 * 20];
        let p = png(&x, &[1, 4, 5], &[0, 0, 0, 1, 1, 1], 2).unwrap();
        let img = image::load_from_memory(&p).unwrap().to_rgb8();
        assert_eq!(
            (img.width(), img.height()),
            (3 * 5 + 4 * GUTTER, 2 * 4 + 3 * GUTTER)
        );
        assert_eq!(img.get_pixel(GUTTER, GUTTER).0, [191, 191, 191]);
        // 5 colour images in one group: a 3×2 grid.
        assert_eq!(grid_dims(5, 1), (3, 2));
        let p = png(&vec![-1.0f32; 5 * 3 * 2 * 2], &[3, 2, 2], &[0; 5], 1).unwrap();
        let img = image::load_from_memory(&p).unwrap().to_rgb8();
        assert_eq!(img.get_pixel(GUTTER, GUTTER).0, [0, 0, 0]);
        assert!(png(&[0.0; 3], &[3], &[0], 1).is_err());
    }

    fn read_back(bytes: &[u8]) -> tch::Tensor {
        let f = tempfile::Builder::new().suffix(".npy").tempfile().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        tch::Tensor::read_npy(f.path()).unwrap()
    }

    #[test]
    fn npy_is_read_back_by_libtorch_and_matches_its_writer() {
        let bytes = npy(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, &[2]).unwrap();
        assert!(bytes.starts_with(b"\x93NUMPY"));
        assert_eq!(
            (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
            0
        );
        let t = read_back(&bytes);
        assert_eq!(t.size(), vec![3, 2]);
        assert_eq!(t.double_value(&[2, 1]), 6.0);
        // Images and a single axis.
        let x: Vec<f32> = (0..2 * 3 * 4 * 5).map(|i| i as f32 / 7.0).collect();
        let t = read_back(&npy(&x, 2, &[3, 4, 5]).unwrap());
        assert_eq!(t.size(), vec![2, 3, 4, 5]);
        let theirs = tch::Tensor::from_slice(&x).view([2, 3, 4, 5]);
        assert!(t.equal(&theirs));
        assert_eq!(read_back(&npy(&[1.5; 4], 4, &[]).unwrap()).size(), vec![4]);
        assert!(npy(&[1.0; 5], 3, &[2]).is_err());
    }
}
