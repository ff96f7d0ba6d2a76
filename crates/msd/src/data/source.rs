//! Opening image data described by a [`DataConfig`], and parsing the `--data` strings that every
//! data-reading command accepts:
//!
//! - `idx:IMAGES,LABELS` — IDX image and label files (gzipped or not);
//! - `folder:DIR` — one sub-folder per class, optionally `folder:DIR,channels=3,size=32`;
//! - `toy2d` — the 2-D toy.
//!
//! Options common to the image kinds may follow as `,key=value`: `heldout`, `split_seed`, `pad`.

use super::images::{ImageDataset, SplitConfig};
use super::{folder, idx};
use crate::config::DataConfig;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl DataConfig {
    /// Opens an image dataset (IDX or folder); relative paths are resolved against `base`.
    pub fn open_images(&self, base: &Path) -> Result<ImageDataset> {
        match self {
            DataConfig::Idx {
                images,
                labels,
                heldout,
                split_seed,
                pad,
            } => {
                let (ip, lp) = (resolve(base, images), resolve(base, labels));
                let (im, lb) = idx::read_pair(&ip, &lp)?;
                let labels: Vec<i64> = lb.iter().map(|&l| l as i64).collect();
                let split = SplitConfig {
                    heldout: *heldout,
                    split_seed: *split_seed,
                    pad: *pad,
                };
                ImageDataset::from_bytes(
                    &im.pixels,
                    [im.n, 1, im.rows, im.cols],
                    &labels,
                    None,
                    &split,
                    &ip.display().to_string(),
                )
            }
            DataConfig::Folder {
                dir,
                channels,
                size,
                heldout,
                split_seed,
                pad,
            } => {
                let d = resolve(base, dir);
                let f = folder::read_folder(&d, *channels, *size)?;
                let split = SplitConfig {
                    heldout: *heldout,
                    split_seed: *split_seed,
                    pad: *pad,
                };
                let n_classes = f.class_names.len() as i64;
                ImageDataset::from_bytes(
                    &f.pixels,
                    [f.n, f.channels, f.size, f.size],
                    &f.labels,
                    Some(n_classes),
                    &split,
                    &d.display().to_string(),
                )
            }
            DataConfig::Toy2d { .. } => Err(Error::Invalid(
                "this command needs image data (idx:… or folder:…), not the 2-D toy".into(),
            )),
        }
    }

    /// Parses a `--data` string (see the module docs). Errors quote the string.
    pub fn parse_spec(spec: &str) -> Result<DataConfig> {
        let bad = |msg: String| Error::config("--data", format!("`{spec}`: {msg}"));
        let (kind, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').collect()
        };
        let (positional, options): (Vec<&str>, Vec<&str>) =
            parts.into_iter().partition(|p| !p.contains('='));
        let mut opts = std::collections::BTreeMap::new();
        for o in options {
            let (k, v) = o.split_once('=').unwrap_or((o, ""));
            let v: u64 = v.parse().map_err(|_| {
                bad(format!(
                    "option `{k}` needs a non-negative integer, got `{v}`"
                ))
            })?;
            opts.insert(k.to_string(), v);
        }
        let mut take = |k: &str, default: u64| opts.remove(k).unwrap_or(default);
        let heldout = take("heldout", d_heldout() as u64) as usize;
        let split_seed = take("split_seed", 1000);
        let pad = take("pad", 0) as i64;
        let cfg = match kind {
            "idx" => match positional.as_slice() {
                [i, l] => DataConfig::Idx {
                    images: i.into(),
                    labels: l.into(),
                    heldout,
                    split_seed,
                    pad,
                },
                _ => return Err(bad("expected idx:IMAGES,LABELS".into())),
            },
            "folder" => match positional.as_slice() {
                [d] => {
                    let channels = take("channels", 1) as usize;
                    let size = take("size", 28) as usize;
                    DataConfig::Folder {
                        dir: d.into(),
                        channels,
                        size,
                        heldout,
                        split_seed,
                        pad,
                    }
                }
                _ => return Err(bad("expected folder:DIR".into())),
            },
            "toy2d" if positional.is_empty() => DataConfig::Toy2d {
                classes: 8,
                modes: 4,
                construction_seed: 2410,
            },
            _ => return Err(bad("expected idx:IMAGES,LABELS, folder:DIR or toy2d".into())),
        };
        if let Some(k) = opts.keys().next() {
            return Err(bad(format!("unknown option `{k}`")));
        }
        Ok(cfg)
    }

    /// The `--data` string that [`DataConfig::parse_spec`] reads back into this config (paths
    /// as stored, so rebase them first if they are relative to a config file).
    pub fn to_spec(&self) -> String {
        let opts = |heldout: usize, split_seed: u64, pad: i64| {
            format!(
                ",heldout={heldout},split_seed={split_seed},pad={}",
                pad.max(0)
            )
        };
        match self {
            DataConfig::Idx {
                images,
                labels,
                heldout,
                split_seed,
                pad,
            } => format!(
                "idx:{},{}{}",
                images.display(),
                labels.display(),
                opts(*heldout, *split_seed, *pad)
            ),
            DataConfig::Folder {
                dir,
                channels,
                size,
                heldout,
                split_seed,
                pad,
            } => format!(
                "folder:{},channels={channels},size={size}{}",
                dir.display(),
                opts(*heldout, *split_seed, *pad)
            ),
            DataConfig::Toy2d { .. } => "toy2d".into(),
        }
    }
}

fn d_heldout() -> usize {
    SplitConfig::default().heldout
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::TrainingData;

    #[test]
    fn specs_round_trip() {
        for spec in [
            "idx:a/i.gz,a/l.gz,heldout=10,split_seed=3,pad=2",
            "folder:d,channels=3,size=32,heldout=0,split_seed=1000,pad=0",
        ] {
            let c = DataConfig::parse_spec(spec).unwrap();
            assert_eq!(c.to_spec(), spec);
            assert_eq!(DataConfig::parse_spec(&c.to_spec()).unwrap(), c);
        }
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            DataConfig::parse_spec("idx:a/i.gz,a/l.gz").unwrap(),
            DataConfig::Idx {
                images: "a/i.gz".into(),
                labels: "a/l.gz".into(),
                heldout: 1000,
                split_seed: 1000,
                pad: 0
            }
        );
        assert_eq!(
            DataConfig::parse_spec("folder:imgs,channels=3,size=32,heldout=10").unwrap(),
            DataConfig::Folder {
                dir: "imgs".into(),
                channels: 3,
                size: 32,
                heldout: 10,
                split_seed: 1000,
                pad: 0
            }
        );
        for bad in [
            "idx:onlyone",
            "folder:",
            "png:x",
            "idx:a,b,pad=x",
            "idx:a,b,colour=1",
            "folder:a,b",
        ] {
            let e = DataConfig::parse_spec(bad).unwrap_err().to_string();
            assert!(e.contains("--data") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn opens_a_folder_relative_to_base() {
        let d = tempfile::tempdir().unwrap();
        for (c, v) in [("zero", 0u8), ("one", 255u8)] {
            std::fs::create_dir_all(d.path().join("imgs").join(c)).unwrap();
            for i in 0..3 {
                image::GrayImage::from_pixel(6, 6, image::Luma([v]))
                    .save(d.path().join("imgs").join(c).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        let ds = DataConfig::parse_spec("folder:imgs,size=4,heldout=2")
            .unwrap()
            .open_images(d.path())
            .unwrap();
        assert_eq!((ds.num_classes(), ds.sample_shape()), (2, vec![1, 4, 4]));
        assert_eq!(ds.train_labels().len() + ds.heldout_labels().len(), 6);
        // Classes are the sorted folder names: "one" (white) is class 0.
        let i = ds.train_labels().iter().position(|&l| l == 0).unwrap();
        assert_eq!(ds.train_images().get(i as i64).max().double_value(&[]), 1.0);
    }

    #[test]
    fn opens_idx_relative_to_base() {
        let d = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..20 * 9).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.path().join("i"), idx::encode_images(20, 3, 3, &px)).unwrap();
        std::fs::write(
            d.path().join("l"),
            idx::encode_labels(&[0, 1, 2, 3, 4].repeat(4)),
        )
        .unwrap();
        let cfg = DataConfig::parse_spec("idx:i,l,heldout=5,pad=1").unwrap();
        let ds = cfg.open_images(d.path()).unwrap();
        assert_eq!(ds.num_classes(), 5);
        assert_eq!(ds.sample_shape(), vec![1, 5, 5]);
        assert_eq!(ds.heldout_labels().len(), 5);
        assert_eq!(cfg.open(d.path()).unwrap().num_classes(), 5);
        let e = DataConfig::parse_spec("idx:l,i")
            .unwrap()
            .open_images(d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrong magic"), "{e}");
    }
}
