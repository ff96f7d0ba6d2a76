//! Captioned digits: a text prompt for each image, built from its label and three attributes
//! measured on the image itself, worded by one of several paraphrase templates.
//!
//! - **Thickness** (mean stroke width, px) = 2 · ink mass / length of the ink boundary: a stroke
//!   of width `w` and length `L ≫ w` has mass `wL` and boundary `2L`. Ink mass is the sum of
//!   intensities in [0, 1]; the boundary counts 4-neighbour edges between pixels on either side
//!   of intensity 0.5 (outside the image counts as blank).
//! - **Slant** = −μ₁₁/μ₀₂ from the intensity-weighted second moments (x right, y down): the
//!   horizontal shift per pixel of height, positive when the top of the digit leans right.
//! - **Size** = area (px²) of the bounding box of the pixels with intensity ≥ 0.5.
//!
//! Each attribute is cut into three levels at terciles fitted on the *training* images
//! ([`Thresholds::fit`]); the same thresholds score generated images later. Thickness (px) and
//! slant (shear) are physical measures that mean the same for every digit, so their terciles
//! are over all training images ("leaning left" is a negative or small shear whatever the digit;
//! most MNIST digits lean right, so the cut between "upright" and "leaning right" is above 0).
//! The bounding-box area depends on the digit's shape (a one is narrow), so size terciles are
//! per digit class: "a large one" is large for a one.
//! The templates ([`TEMPLATES`]) all name the digit and the three levels; [`HELDOUT_TEMPLATES`]
//! are never used for training captions, so evaluation can prompt with wordings no model saw.
//! Template choice is a seeded ChaCha8 draw per image: same images + seed → same captions.

use crate::{Error, Result};
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Number of digit classes captions can name.
pub const NUM_DIGITS: i64 = 10;

const DIGIT_WORDS: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Attributes measured on one image (see the module doc for the definitions).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    /// Mean stroke width in pixels.
    pub thickness: f32,
    /// Horizontal shift per pixel of height; > 0 leans right.
    pub slant: f32,
    /// Bounding-box area of the ink in px².
    pub size: f32,
}

/// Which tercile an attribute falls in (see the module doc for the reference population).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Low,
    Mid,
    High,
}

impl Level {
    /// All levels, low to high.
    pub const ALL: [Level; 3] = [Level::Low, Level::Mid, Level::High];

    fn index(self) -> usize {
        match self {
            Level::Low => 0,
            Level::Mid => 1,
            Level::High => 2,
        }
    }

    /// `value`'s level given the two cut points `[t1, t2]`: `< t1` low, `< t2` mid, else high.
    pub fn of(value: f32, cuts: [f32; 2]) -> Level {
        if value < cuts[0] {
            Level::Low
        } else if value < cuts[1] {
            Level::Mid
        } else {
            Level::High
        }
    }
}

/// The levels of the three attributes of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Levels {
    pub thickness: Level,
    pub slant: Level,
    pub size: Level,
}

impl Levels {
    /// All 27 combinations.
    pub fn all() -> Vec<Levels> {
        let mut v = Vec::with_capacity(27);
        for thickness in Level::ALL {
            for slant in Level::ALL {
                for size in Level::ALL {
                    v.push(Levels {
                        thickness,
                        slant,
                        size,
                    });
                }
            }
        }
        v
    }
}

/// Measures one image: `pixels` is `h·w` ink intensities in [0, 1], row-major.
pub fn measure(pixels: &[f32], h: usize, w: usize) -> Result<Attributes> {
    if pixels.len() != h * w || h == 0 || w == 0 {
        return Err(Error::Invalid(format!(
            "captions: {} pixels for a {h}×{w} image",
            pixels.len()
        )));
    }
    let ink = |r: usize, c: usize| pixels[r * w + c] >= 0.5;
    let mut mass = 0f64;
    let (mut sx, mut sy) = (0f64, 0f64);
    let mut edges = 0u64;
    let (mut rmin, mut rmax, mut cmin, mut cmax) = (usize::MAX, 0, usize::MAX, 0);
    for r in 0..h {
        for c in 0..w {
            let p = f64::from(pixels[r * w + c].clamp(0.0, 1.0));
            mass += p;
            sx += p * c as f64;
            sy += p * r as f64;
            if ink(r, c) {
                rmin = rmin.min(r);
                rmax = rmax.max(r);
                cmin = cmin.min(c);
                cmax = cmax.max(c);
                // Each ink pixel's 4 sides that face blank (or the image border).
                edges += u64::from(r == 0 || !ink(r - 1, c))
                    + u64::from(r + 1 == h || !ink(r + 1, c))
                    + u64::from(c == 0 || !ink(r, c - 1))
                    + u64::from(c + 1 == w || !ink(r, c + 1));
            }
        }
    }
    if mass <= 0.0 {
        return Ok(Attributes {
            thickness: 0.0,
            slant: 0.0,
            size: 0.0,
        });
    }
    let (cx, cy) = (sx / mass, sy / mass);
    let (mut mu11, mut mu02) = (0f64, 0f64);
    for r in 0..h {
        for c in 0..w {
            let p = f64::from(pixels[r * w + c].clamp(0.0, 1.0));
            let (dx, dy) = (c as f64 - cx, r as f64 - cy);
            mu11 += p * dx * dy;
            mu02 += p * dy * dy;
        }
    }
    let slant = if mu02 > 1e-9 { -mu11 / mu02 } else { 0.0 };
    let thickness = if edges > 0 {
        2.0 * mass / edges as f64
    } else {
        0.0
    };
    let size = if rmin == usize::MAX {
        0.0
    } else {
        ((rmax - rmin + 1) * (cmax - cmin + 1)) as f64
    };
    Ok(Attributes {
        thickness: thickness as f32,
        slant: slant as f32,
        size: size as f32,
    })
}

/// Measures a batch of images `[N, 1, H, W]` with pixels in [−1, 1] (the dataset's range).
pub fn measure_images(images: &Tensor) -> Result<Vec<Attributes>> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(Error::Invalid(format!(
            "captions: images must be [N, 1, H, W], got {size:?}"
        )));
    };
    if c != 1 {
        return Err(Error::Invalid(format!(
            "captions: attributes are measured on grayscale images, got {c} channels"
        )));
    }
    let flat = ((images.to_kind(Kind::Float).to_device(Device::Cpu) + 1.0) / 2.0)
        .clamp(0.0, 1.0)
        .reshape([-1]);
    let v: Vec<f32> = Vec::try_from(&flat)?;
    let (h, w) = (h as usize, w as usize);
    (0..n as usize)
        .map(|i| measure(&v[i * h * w..(i + 1) * h * w], h, w))
        .collect()
}

/// The value at quantile `q` of sorted `v` (linear interpolation, as numpy's default).
fn quantile(sorted: &[f32], q: f64) -> f32 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let t = (pos - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * t
}

/// Tercile cut points `[t1, t2]`: thickness and slant over all training images, size per
/// digit class (index = label).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub thickness: [f32; 2],
    pub slant: [f32; 2],
    pub size: Vec<[f32; 2]>,
}

fn terciles(v: &mut [f32]) -> [f32; 2] {
    v.sort_by(f32::total_cmp);
    [quantile(v, 1.0 / 3.0), quantile(v, 2.0 / 3.0)]
}

impl Thresholds {
    /// Fits the terciles (`labels[i]` is the class of `attrs[i]`). Every class in
    /// `0..NUM_DIGITS` needs at least one image.
    pub fn fit(attrs: &[Attributes], labels: &[i64]) -> Result<Self> {
        if attrs.len() != labels.len() {
            return Err(Error::Invalid(format!(
                "captions: {} attribute rows for {} labels",
                attrs.len(),
                labels.len()
            )));
        }
        let mut sizes: Vec<Vec<f32>> = vec![Vec::new(); NUM_DIGITS as usize];
        for (a, &l) in attrs.iter().zip(labels) {
            sizes
                .get_mut(usize::try_from(l).unwrap_or(usize::MAX))
                .ok_or(Error::UnknownClass {
                    class: l,
                    num_classes: NUM_DIGITS,
                })?
                .push(a.size);
        }
        let mut size = Vec::with_capacity(sizes.len());
        for (class, v) in sizes.iter_mut().enumerate() {
            if v.is_empty() {
                return Err(Error::Invalid(format!(
                    "captions: no training image of digit {class} to fit its size terciles"
                )));
            }
            size.push(terciles(v));
        }
        Ok(Thresholds {
            thickness: terciles(&mut attrs.iter().map(|a| a.thickness).collect::<Vec<_>>()),
            slant: terciles(&mut attrs.iter().map(|a| a.slant).collect::<Vec<_>>()),
            size,
        })
    }

    /// The levels of `a`, an image of digit `label`.
    pub fn levels(&self, label: i64, a: &Attributes) -> Result<Levels> {
        let size = usize::try_from(label)
            .ok()
            .and_then(|i| self.size.get(i))
            .ok_or(Error::UnknownClass {
                class: label,
                num_classes: self.size.len() as i64,
            })?;
        Ok(Levels {
            thickness: Level::of(a.thickness, self.thickness),
            slant: Level::of(a.slant, self.slant),
            size: Level::of(a.size, *size),
        })
    }
}

/// The paraphrase templates. Placeholders: `{digit}` (word), `{numeral}`, `{thick}` (adjective),
/// `{strokes}` (noun phrase), `{slant}` (phrase), `{slanted}` (adjective), `{size}`.
pub const TEMPLATES: [&str; 8] = [
    "a {thick} {digit} {slant}, {size}",
    "handwritten {numeral}, {strokes}, {slanted}, {size}",
    "the digit {digit}, {size}, with {strokes}, {slant}",
    "{size} {slanted} {numeral} in {thick} ink",
    "a {size} {thick} number {digit} {slant}",
    "{numeral} written with {strokes}, {size} and {slanted}",
    "a picture of a {slanted} {digit} drawn {size} in {thick} lines",
    "{size} sketch of the number {numeral}, {strokes}, {slant}",
];

/// Templates never used for training captions (evaluation wordings).
pub const HELDOUT_TEMPLATES: [usize; 2] = [6, 7];

/// Templates used for training captions: every template not held out.
pub fn training_templates() -> Vec<usize> {
    (0..TEMPLATES.len())
        .filter(|t| !HELDOUT_TEMPLATES.contains(t))
        .collect()
}

/// Words for each attribute level, low → high.
const THICK: [&str; 3] = ["thin", "regular", "bold"];
const STROKES: [&str; 3] = ["thin strokes", "medium strokes", "thick strokes"];
const SLANT: [&str; 3] = ["leaning left", "standing upright", "leaning right"];
const SLANTED: [&str; 3] = ["left-slanted", "upright", "right-slanted"];
const SIZE: [&str; 3] = ["small", "medium-sized", "large"];

/// The caption of digit `label` with attribute `levels`, worded by template `template`.
pub fn render(template: usize, label: i64, levels: Levels) -> Result<String> {
    let t = TEMPLATES.get(template).ok_or_else(|| {
        Error::Invalid(format!(
            "captions: template {template} does not exist (0..{})",
            TEMPLATES.len()
        ))
    })?;
    let digit = usize::try_from(label)
        .ok()
        .and_then(|i| DIGIT_WORDS.get(i))
        .ok_or(Error::UnknownClass {
            class: label,
            num_classes: NUM_DIGITS,
        })?;
    let (th, sl, sz) = (
        levels.thickness.index(),
        levels.slant.index(),
        levels.size.index(),
    );
    Ok(t.replace("{digit}", digit)
        .replace("{numeral}", &label.to_string())
        .replace("{thick}", THICK[th])
        .replace("{strokes}", STROKES[th])
        .replace("{slanted}", SLANTED[sl])
        .replace("{slant}", SLANT[sl])
        .replace("{size}", SIZE[sz]))
}

/// One image's caption.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    /// Index of the image in the set that was captioned.
    pub index: usize,
    pub label: i64,
    pub attributes: Attributes,
    pub levels: Levels,
    /// Index into [`TEMPLATES`].
    pub template: usize,
    pub text: String,
}

/// Captions `images` (`[N, 1, H, W]` in [−1, 1], labels `[N]`): measures each image, takes its
/// levels from `thresholds`, and words it with a template drawn (seeded) from `templates`.
pub fn caption_images(
    images: &Tensor,
    labels: &[i64],
    thresholds: &Thresholds,
    templates: &[usize],
    seed: u64,
) -> Result<Vec<Caption>> {
    let attrs = measure_images(images)?;
    if attrs.len() != labels.len() {
        return Err(Error::Invalid(format!(
            "captions: {} images for {} labels",
            attrs.len(),
            labels.len()
        )));
    }
    if templates.is_empty() {
        return Err(Error::Invalid(
            "captions: no templates to choose from".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    attrs
        .into_iter()
        .zip(labels)
        .enumerate()
        .map(|(index, (attributes, &label))| {
            let levels = thresholds.levels(label, &attributes)?;
            let template = templates[rng.gen_range(0..templates.len())];
            Ok(Caption {
                index,
                label,
                attributes,
                levels,
                template,
                text: render(template, label, levels)?,
            })
        })
        .collect()
}

/// Captions a dataset's training images with the training templates, thresholds fitted on
/// those same images. Returns the thresholds (to score generated images) and the captions.
pub fn caption_training_set(
    data: &super::ImageDataset,
    seed: u64,
) -> Result<(Thresholds, Vec<Caption>)> {
    let images = data.train_images();
    let labels = data.train_labels();
    let attrs = measure_images(images)?;
    let thresholds = Thresholds::fit(&attrs, labels)?;
    let captions = caption_images(images, labels, &thresholds, &training_templates(), seed)?;
    Ok((thresholds, captions))
}

/// Every distinct caption text of `captions`, in first-seen order, and for each caption the
/// row of its text (captions repeat: 10 digits × 27 level combinations × a few templates).
pub fn distinct_texts(captions: &[Caption]) -> (Vec<String>, Vec<usize>) {
    let mut rows = std::collections::HashMap::new();
    let mut texts = Vec::new();
    let idx = captions
        .iter()
        .map(|c| {
            *rows.entry(c.text.clone()).or_insert_with(|| {
                texts.push(c.text.clone());
                texts.len() - 1
            })
        })
        .collect();
    (texts, idx)
}

/// How often the nearest training wording of a held-out wording (by embedding cosine) agrees
/// with it: a first look at whether an embedding router would send unseen wordings to the
/// right place. Fractions over all held-out wordings (every template × digit × levels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WordingCheck {
    /// Held-out wordings queried.
    pub queries: usize,
    /// Training wordings searched.
    pub candidates: usize,
    /// Nearest names the same digit.
    pub digit: f64,
    /// Nearest has the same thickness level.
    pub thickness: f64,
    /// Nearest has the same slant level.
    pub slant: f64,
    /// Nearest has the same size level.
    pub size: f64,
    /// Nearest agrees on the digit and all three levels.
    pub all: f64,
}

/// Embeds every wording of every digit × level combination with the training and the held-out
/// templates, and matches each held-out wording to its nearest training wording.
pub fn heldout_wording_check(
    encoder: &crate::nets::text_encoder::TextEncoder,
    batch_size: usize,
) -> Result<WordingCheck> {
    let mut seen = Vec::new();
    let mut held = Vec::new();
    let train = training_templates();
    for label in 0..NUM_DIGITS {
        for lv in Levels::all() {
            for t in 0..TEMPLATES.len() {
                let entry = (label, lv, render(t, label, lv)?);
                if train.contains(&t) {
                    seen.push(entry);
                } else {
                    held.push(entry);
                }
            }
        }
    }
    let texts = |v: &[(i64, Levels, String)]| v.iter().map(|e| e.2.clone()).collect::<Vec<_>>();
    let es = encoder.encode(&texts(&seen), batch_size)?;
    let eh = encoder.encode(&texts(&held), batch_size)?;
    // Rows are unit vectors: the largest dot product is the largest cosine.
    let nearest: Vec<i64> = Vec::try_from(eh.matmul(&es.tr()).argmax(1, false))?;
    let mut hits = [0usize; 5];
    for ((label, lv, _), &j) in held.iter().zip(&nearest) {
        let (nl, nlv, _) = &seen[j as usize];
        let m = [
            label == nl,
            lv.thickness == nlv.thickness,
            lv.slant == nlv.slant,
            lv.size == nlv.size,
            label == nl && lv == nlv,
        ];
        for (h, ok) in hits.iter_mut().zip(m) {
            *h += usize::from(ok);
        }
    }
    let frac = |k: usize| hits[k] as f64 / held.len() as f64;
    Ok(WordingCheck {
        queries: held.len(),
        candidates: seen.len(),
        digit: frac(0),
        thickness: frac(1),
        slant: frac(2),
        size: frac(3),
        all: frac(4),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const H: usize = 28;

    /// A vertical bar `width` px wide from row `top` to row `bottom` (inclusive), its left edge
    /// at column `left + shear·(centre_row − row)` (shear > 0 moves the top to the right).
    fn bar(width: usize, top: usize, bottom: usize, left: f64, shear: f64) -> Vec<f32> {
        let mut img = vec![0f32; H * H];
        let mid = (top + bottom) as f64 / 2.0;
        for r in top..=bottom {
            let l = (left + shear * (mid - r as f64)).round() as usize;
            for c in l..l + width {
                img[r * H + c] = 1.0;
            }
        }
        img
    }

    #[test]
    fn thickness_tracks_stroke_width() {
        let thin = measure(&bar(2, 4, 23, 13.0, 0.0), H, H).unwrap();
        let thick = measure(&bar(5, 4, 23, 12.0, 0.0), H, H).unwrap();
        // A w×L bar: mass wL, boundary 2(w+L) → 2·mass/boundary = wL/(w+L).
        let want = |w: f32, l: f32| w * l / (w + l);
        assert!((thin.thickness - want(2.0, 20.0)).abs() < 1e-4, "{thin:?}");
        assert!(
            (thick.thickness - want(5.0, 20.0)).abs() < 1e-4,
            "{thick:?}"
        );
        assert!(thick.thickness > 2.0 * thin.thickness);
        // Ink mass alone would also grow with length: a longer thin bar stays thin.
        let long_thin = measure(&bar(2, 0, 27, 13.0, 0.0), H, H).unwrap();
        assert!(long_thin.thickness < thick.thickness / 2.0);
    }

    #[test]
    fn slant_sign_follows_the_shear() {
        let upright = measure(&bar(3, 4, 23, 12.0, 0.0), H, H).unwrap();
        let right = measure(&bar(3, 4, 23, 12.0, 0.3), H, H).unwrap();
        let left = measure(&bar(3, 4, 23, 12.0, -0.3), H, H).unwrap();
        assert!(upright.slant.abs() < 1e-6, "{upright:?}");
        assert!(right.slant > 0.2 && right.slant < 0.4, "{right:?}");
        assert!(left.slant < -0.2 && left.slant > -0.4, "{left:?}");
    }

    #[test]
    fn size_is_the_ink_bounding_box() {
        let mut img = vec![0f32; H * H];
        for r in 5..15 {
            for c in 8..12 {
                img[r * H + c] = 0.9;
            }
        }
        img[20 * H + 20] = 0.3; // faint speck below 0.5: not ink for the box
        assert_eq!(measure(&img, H, H).unwrap().size, 40.0);
        let blank = measure(&[0f32; H * H], H, H).unwrap();
        assert_eq!(blank.size, 0.0);
        assert!(measure(&img[1..], H, H).is_err());
    }

    #[test]
    fn images_in_dataset_range_are_measured_like_intensities() {
        let img = bar(3, 4, 23, 12.0, 0.3);
        let direct = measure(&img, H, H).unwrap();
        let t = (Tensor::from_slice(&img).view([1, 1, H as i64, H as i64]) * 2.0 - 1.0)
            .repeat([2, 1, 1, 1]);
        let batch = measure_images(&t).unwrap();
        assert_eq!(batch.len(), 2);
        assert!((batch[1].slant - direct.slant).abs() < 1e-5);
        assert!((batch[1].thickness - direct.thickness).abs() < 1e-5);
        assert!(measure_images(&Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn terciles_pool_thickness_and_slant_but_not_size() {
        // Class c's values are c·100 + 0..30 (slant: negated).
        let mut attrs = Vec::new();
        let mut labels = Vec::new();
        for c in 0..NUM_DIGITS {
            for i in 0..30 {
                let v = (c * 100 + i) as f32;
                attrs.push(Attributes {
                    thickness: v,
                    slant: -v,
                    size: v,
                });
                labels.push(c);
            }
        }
        let th = Thresholds::fit(&attrs, &labels).unwrap();
        let mut pooled = std::collections::HashMap::new();
        let mut per_class = std::collections::HashMap::new();
        for (a, &l) in attrs.iter().zip(&labels) {
            let lv = th.levels(l, a).unwrap();
            *pooled.entry(lv.thickness).or_insert(0) += 1;
            *per_class.entry((l, lv.size)).or_insert(0) += 1;
            // Slant is the negated value: its order is reversed.
            let flipped = match lv.slant {
                Level::Low => Level::High,
                Level::Mid => Level::Mid,
                Level::High => Level::Low,
            };
            assert_eq!(flipped, lv.thickness);
            // Pooled terciles: digits 0–2 are all thin, 7–9 all thick.
            if l <= 2 {
                assert_eq!(lv.thickness, Level::Low);
            }
            if l >= 7 {
                assert_eq!(lv.thickness, Level::High);
            }
        }
        for lv in Level::ALL {
            assert!((99..=101).contains(&pooled[&lv]), "{lv:?}: {}", pooled[&lv]);
            for c in 0..NUM_DIGITS {
                let n = per_class.get(&(c, lv)).copied().unwrap_or(0);
                assert_eq!(n, 10, "class {c} size level {lv:?}: {n} of 30");
            }
        }
        assert!(th.levels(10, &attrs[0]).is_err());
        assert!(th.levels(-1, &attrs[0]).is_err());
        // A class with no image cannot be fitted.
        assert!(Thresholds::fit(&attrs[..30], &labels[..30]).is_err());
    }

    #[test]
    fn heldout_templates_are_disjoint_from_training_wordings() {
        let train = training_templates();
        assert!(!train.is_empty());
        for t in HELDOUT_TEMPLATES {
            assert!(t < TEMPLATES.len() && !train.contains(&t));
        }
        assert_eq!(train.len() + HELDOUT_TEMPLATES.len(), TEMPLATES.len());
        let mut seen = HashSet::new();
        for label in 0..NUM_DIGITS {
            for lv in Levels::all() {
                let train_texts: HashSet<String> = train
                    .iter()
                    .map(|&t| render(t, label, lv).unwrap())
                    .collect();
                for &t in &HELDOUT_TEMPLATES {
                    let s = render(t, label, lv).unwrap();
                    assert!(!train_texts.contains(&s), "{s}");
                    assert!(!s.contains('{'), "unfilled placeholder in {s}");
                }
                for s in &train_texts {
                    assert!(!s.contains('{'), "unfilled placeholder in {s}");
                }
                // Every (template, digit, levels) wording is distinct: captions identify them.
                for t in 0..TEMPLATES.len() {
                    assert!(seen.insert(render(t, label, lv).unwrap()));
                }
            }
        }
        assert!(render(TEMPLATES.len(), 0, Levels::all()[0]).is_err());
        assert!(render(0, 10, Levels::all()[0]).is_err());
    }

    #[test]
    fn captions_are_seeded_and_use_only_training_templates() {
        let imgs: Vec<Vec<f32>> = (0..12)
            .map(|i| bar(2 + i % 3, 4, 23, 11.0, (i as f64 - 6.0) * 0.05))
            .collect();
        let flat: Vec<f32> = imgs.iter().flatten().map(|p| p * 2.0 - 1.0).collect();
        let t = Tensor::from_slice(&flat).view([12, 1, H as i64, H as i64]);
        let labels: Vec<i64> = (0..12).map(|i| i % NUM_DIGITS).collect();
        let attrs = measure_images(&t).unwrap();
        let th = Thresholds::fit(&attrs, &labels).unwrap();
        let train = training_templates();
        let a = caption_images(&t, &labels, &th, &train, 7).unwrap();
        let b = caption_images(&t, &labels, &th, &train, 7).unwrap();
        let c = caption_images(&t, &labels, &th, &train, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a.iter().map(|x| x.template).collect::<Vec<_>>(),
            c.iter().map(|x| x.template).collect::<Vec<_>>()
        );
        for cap in &a {
            assert!(train.contains(&cap.template));
            assert_eq!(
                cap.text,
                render(cap.template, cap.label, cap.levels).unwrap()
            );
        }
        let (texts, rows) = distinct_texts(&a);
        assert!(texts.len() <= a.len());
        assert_eq!(texts.iter().collect::<HashSet<_>>().len(), texts.len());
        for (cap, &r) in a.iter().zip(&rows) {
            assert_eq!(texts[r], cap.text);
        }
        assert!(caption_images(&t, &labels[1..], &th, &train, 7).is_err());
        assert!(caption_images(&t, &labels, &th, &[], 7).is_err());
    }
}
