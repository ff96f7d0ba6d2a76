//! An image folder: one sub-folder per class (classes are the sub-folder names in sorted order),
//! PNG or JPEG files inside (other files are ignored), each converted to the configured number of
//! channels (1 = grey, 3 = RGB) and resized to `size×size`.

use super::images::{ImageDataset, SplitConfig};
use super::source::{resolve, DataSource};
use super::TrainingData;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[data] kind = "folder"`: the folder, the image layout every file is converted to, and the
/// split. The `default_*` functions are the one owner of the layout defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    pub dir: PathBuf,
    #[serde(default = "FolderConfig::default_channels")]
    pub channels: usize,
    #[serde(default = "FolderConfig::default_size")]
    pub size: usize,
    #[serde(default = "SplitConfig::default_heldout")]
    pub heldout: usize,
    #[serde(default = "SplitConfig::default_split_seed")]
    pub split_seed: u64,
    #[serde(default = "SplitConfig::default_pad")]
    pub pad: i64,
}

impl FolderConfig {
    /// Channels when not given: 1 (grey).
    pub fn default_channels() -> usize {
        1
    }
    /// Side length when not given: 28.
    pub fn default_size() -> usize {
        28
    }
    /// The split settings.
    pub fn split(&self) -> SplitConfig {
        SplitConfig {
            heldout: self.heldout,
            split_seed: self.split_seed,
            pad: self.pad,
        }
    }
}

impl DataSource for FolderConfig {
    fn open(&self, base: &Path) -> Result<Box<dyn TrainingData>> {
        Ok(Box::new(self.open_images(base)?))
    }
    fn open_images(&self, base: &Path) -> Result<ImageDataset> {
        let d = resolve(base, &self.dir);
        let f = read_folder(&d, self.channels, self.size)?;
        let n_classes = f.class_names.len() as i64;
        ImageDataset::from_bytes(
            &f.pixels,
            [f.n, f.channels, f.size, f.size],
            &f.labels,
            Some(n_classes),
            &self.split(),
            &d.display().to_string(),
        )
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.dir]
    }
    fn to_spec(&self) -> String {
        format!(
            "folder:{},channels={},size={}{}",
            self.dir.display(),
            self.channels,
            self.size,
            super::source::split_spec(&self.split())
        )
    }
}

/// Images read from a folder, channel-major per image (`n·channels·size·size` bytes).
#[derive(Clone, Debug)]
pub struct FolderImages {
    pub class_names: Vec<String>,
    pub n: usize,
    pub channels: usize,
    pub size: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Largest `size` accepted (images are resized to `size×size`).
pub const MAX_SIZE: usize = 1024;

/// Reads every class sub-folder of `dir`.
pub fn read_folder(dir: &Path, channels: usize, size: usize) -> Result<FolderImages> {
    if channels != 1 && channels != 3 {
        return Err(Error::config(
            "data.channels",
            format!("must be 1 or 3, got {channels}"),
        ));
    }
    if size == 0 || size > MAX_SIZE {
        return Err(Error::config(
            "data.size",
            format!("must be between 1 and {MAX_SIZE}, got {size}"),
        ));
    }
    let classes: Vec<PathBuf> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if classes.is_empty() {
        return Err(Error::format(
            dir,
            "no class sub-folders (expected one sub-folder of images per class)",
        ));
    }
    let mut out = FolderImages {
        class_names: Vec::new(),
        n: 0,
        channels,
        size,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    let s = size as u32;
    for (label, cdir) in classes.iter().enumerate() {
        let files: Vec<PathBuf> = sorted_entries(cdir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if files.is_empty() {
            return Err(Error::format(
                cdir,
                "empty class folder: no PNG or JPEG files",
            ));
        }
        for f in files {
            let img = image::open(&f)
                .map_err(|e| Error::format(&f, format!("cannot decode image ({e})")))?;
            let img = if img.width() != s || img.height() != s {
                img.resize_exact(s, s, image::imageops::FilterType::Triangle)
            } else {
                img
            };
            if channels == 1 {
                out.pixels.extend_from_slice(img.to_luma8().as_raw());
            } else {
                // HWC → CHW.
                let rgb = img.to_rgb8();
                let raw = rgb.as_raw();
                for ch in 0..3 {
                    out.pixels.extend(raw.iter().skip(ch).step_by(3));
                }
            }
            out.labels.push(label as i64);
            out.n += 1;
        }
        out.class_names.push(
            cdir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn make(dir: &Path) {
        for (c, v) in [("a", 10u8), ("b", 200u8)] {
            std::fs::create_dir_all(dir.join(c)).unwrap();
            for i in 0..2 {
                RgbImage::from_pixel(8, 6, Rgb([v, v / 2, 0]))
                    .save(dir.join(c).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        std::fs::write(dir.join("a").join("notes.txt"), "ignored").unwrap();
    }

    #[test]
    fn reads_classes_converts_and_resizes() {
        let d = tempfile::tempdir().unwrap();
        make(d.path());
        let g = read_folder(d.path(), 1, 4).unwrap();
        assert_eq!(g.class_names, vec!["a", "b"]);
        assert_eq!((g.n, g.pixels.len()), (4, 4 * 16));
        assert_eq!(g.labels, vec![0, 0, 1, 1]);
        assert!(g.pixels[..16].iter().all(|&p| p < 20) && g.pixels[48..].iter().all(|&p| p > 100));
        let c = read_folder(d.path(), 3, 5).unwrap();
        assert_eq!(c.pixels.len(), 4 * 3 * 25);
        // Channel-major: first plane is red (200), second green (100), third blue (0) for class b.
        let img3 = &c.pixels[3 * 75..];
        assert_eq!((img3[0], img3[25], img3[50]), (200, 100, 0));
    }

    #[test]
    fn empty_class_and_undecodable_images_are_named() {
        let d = tempfile::tempdir().unwrap();
        make(d.path());
        std::fs::create_dir_all(d.path().join("c_empty")).unwrap();
        let e = read_folder(d.path(), 1, 4).unwrap_err().to_string();
        assert!(
            e.contains("c_empty") && e.contains("empty class folder"),
            "{e}"
        );
        std::fs::write(d.path().join("c_empty").join("broken.png"), b"not a png").unwrap();
        let e = read_folder(d.path(), 1, 4).unwrap_err().to_string();
        assert!(
            e.contains("broken.png") && e.contains("cannot decode"),
            "{e}"
        );
        let e = read_folder(&d.path().join("a"), 1, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no class sub-folders"), "{e}");
        assert!(read_folder(d.path(), 2, 4)
            .unwrap_err()
            .to_string()
            .contains("data.channels"));
    }
}
