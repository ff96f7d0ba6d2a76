//! The attribute check grid (`levels.png` of `msd captions`): real training images, one row per
//! attribute level (thin / regular / bold, leaning left / upright / right, small / medium /
//! large), a few images of every digit per row, so that a reader can see whether the measured
//! levels mean what the caption words say before reading attribute agreement.
//!
//! ```
//! use msd::text::level_grid::ROW_NAMES;
//! assert_eq!(ROW_NAMES[0], "thickness: thin");
//! ```

use crate::data::captions::{Caption, Level, Levels, NUM_DIGITS};
use crate::{Error, Result};
use image::RgbImage;
use tch::Tensor;

/// The rows of the grid, top to bottom.
pub const ROW_NAMES: [&str; 9] = [
    "thickness: thin",
    "thickness: regular",
    "thickness: bold",
    "slant: leaning left",
    "slant: upright",
    "slant: leaning right",
    "size: small",
    "size: medium",
    "size: large",
];

/// The level of row `row`'s attribute in `l` (rows as in [`ROW_NAMES`]).
fn level_of(l: &Levels, row: usize) -> Level {
    match row / 3 {
        0 => l.thickness,
        1 => l.slant,
        _ => l.size,
    }
}

/// For each row of [`ROW_NAMES`], the first `per_digit` captioned images of every digit (0 to
/// 9, in order) whose attribute has the row's level; fewer where a digit has fewer.
pub fn level_rows(captions: &[Caption], per_digit: usize) -> Vec<Vec<usize>> {
    (0..ROW_NAMES.len())
        .map(|row| {
            let want = Level::ALL[row % 3];
            (0..NUM_DIGITS)
                .flat_map(|d| {
                    captions
                        .iter()
                        .filter(move |c| c.label == d && level_of(&c.levels, row) == want)
                        .take(per_digit)
                        .map(|c| c.index)
                })
                .collect()
        })
        .collect()
}

/// The grid of `images` (`[N, 1, H, W]` in [−1, 1], the set `captions` was made from) by
/// [`level_rows`].
pub fn level_grid(images: &Tensor, captions: &[Caption], per_digit: usize) -> Result<RgbImage> {
    let s = images.size();
    if s.len() != 4 || s[1] != 1 {
        return Err(Error::Invalid(format!(
            "a level grid needs [N, 1, H, W] images, got {s:?}"
        )));
    }
    let bytes: Vec<u8> = Vec::try_from(crate::eval::to_u8(images)?.flatten(0, -1))?;
    crate::viz::image_grid(
        &bytes,
        [1, s[2] as usize, s[3] as usize],
        &level_rows(captions, per_digit),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::captions::{measure_images, Thresholds};

    /// Images whose ink is a vertical bar of width 1 + (i mod 5) px, digit i mod 10.
    fn bars(n: usize) -> (Tensor, Vec<i64>) {
        let mut x = vec![-1f32; n * 28 * 28];
        for i in 0..n {
            let w = 1 + i % 5;
            for r in 4..24 {
                for c in 12..12 + w {
                    x[i * 784 + r * 28 + c] = 1.0;
                }
            }
        }
        let labels = (0..n as i64).map(|i| i % 10).collect();
        (Tensor::from_slice(&x).view([n as i64, 1, 28, 28]), labels)
    }

    #[test]
    fn each_row_holds_images_of_its_level_digit_by_digit() {
        let (x, labels) = bars(200);
        let attrs = measure_images(&x).unwrap();
        let th = Thresholds::fit(&attrs, &labels).unwrap();
        let captions = crate::data::captions::caption_images(&x, &labels, &th, &[0], 0).unwrap();
        let rows = level_rows(&captions, 2);
        assert_eq!(rows.len(), 9);
        for (row, idx) in rows.iter().enumerate() {
            // Digits appear in order, at most 2 of each.
            let digits: Vec<i64> = idx.iter().map(|&i| labels[i]).collect();
            assert!(digits.windows(2).all(|w| w[0] <= w[1]), "{digits:?}");
            for d in 0..10 {
                assert!(digits.iter().filter(|&&x| x == d).count() <= 2);
            }
            for &i in idx {
                assert_eq!(level_of(&captions[i].levels, row), Level::ALL[row % 3]);
            }
        }
        // Thin rows hold narrower bars than bold rows.
        let width = |i: usize| attrs[i].thickness;
        let mean = |v: &[usize]| v.iter().map(|&i| width(i)).sum::<f32>() / v.len() as f32;
        assert!(!rows[0].is_empty() && !rows[2].is_empty());
        assert!(mean(&rows[0]) < mean(&rows[2]));
        let img = level_grid(&x, &captions, 2).unwrap();
        assert_eq!(
            img.height(),
            9 * (28 + crate::viz::GUTTER) + crate::viz::GUTTER
        );
    }

    #[test]
    fn a_colour_set_is_refused() {
        let x = Tensor::zeros([2, 3, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
        assert!(level_grid(&x, &[], 1).is_err());
    }
}
