//! Where the training data come from: the [`DataSource`] trait, one config struct per source
//! (beside its reader: [`Toy2dConfig`], [`IdxConfig`], [`FolderConfig`]), the `[data]` table
//! [`DataConfig`] that holds one of them, and the `--data` strings that every data-reading
//! command accepts:
//!
//! - `idx:IMAGES,LABELS` — IDX image and label files (gzipped or not);
//! - `folder:DIR` — one sub-folder per class, optionally `folder:DIR,channels=3,size=32`;
//! - `toy2d` — the 2-D toy.
//!
//! Options common to the image kinds may follow as `,key=value`: `heldout`, `split_seed`, `pad`.
//! Every default has one owner: the source's config (`Default` / `default_*` functions) or
//! [`SplitConfig::default`]; the spec parser and serde both read them from there.

use super::folder::FolderConfig;
use super::idx::IdxConfig;
use super::images::{ImageDataset, SplitConfig};
use super::toy2d::Toy2dConfig;
use super::TrainingData;
use crate::tagged::{decode_named, split_tag};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One kind of training data: what a `[data]` table of that `kind` can do.
pub trait DataSource {
    /// Opens the dataset; relative paths are resolved against `base`.
    fn open(&self, base: &Path) -> Result<Box<dyn TrainingData>>;
    /// Opens it as an image dataset (with its held-out split); sources that are not images
    /// refuse.
    fn open_images(&self, _base: &Path) -> Result<ImageDataset> {
        Err(Error::Invalid(
            "this command needs image data (idx:… or folder:…), not the 2-D toy".into(),
        ))
    }
    /// The file paths the source reads (rebased when a config moves; reduced to file names in
    /// [`DataConfig::id`]).
    fn paths_mut(&mut self) -> Vec<&mut PathBuf>;
    /// The `--data` string that [`DataConfig::parse_spec`] reads back into this source.
    fn to_spec(&self) -> String;
}

/// Resolves `p` against `base` unless it is absolute.
pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The `,heldout=…,split_seed=…,pad=…` tail of an image source's spec.
pub(crate) fn split_spec(s: &SplitConfig) -> String {
    format!(
        ",heldout={},split_seed={},pad={}",
        s.heldout,
        s.split_seed,
        s.pad.max(0)
    )
}

/// The `[data]` table: one source, tagged by `kind` (`toy2d`, `idx`, `folder`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataConfig {
    /// The seeded 2-D toy mixture ([`super::Toy2d`]).
    Toy2d(Toy2dConfig),
    /// IDX image + label files (MNIST format, gzipped or not); see [`super::idx`].
    Idx(IdxConfig),
    /// One sub-folder of PNG/JPEG images per class; see [`super::folder`].
    Folder(FolderConfig),
}

impl<'de> Deserialize<'de> for DataConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (kind, body) = split_tag(d)?;
        match kind.as_str() {
            "toy2d" => Ok(DataConfig::Toy2d(decode_named(body)?)),
            "idx" => Ok(DataConfig::Idx(decode_named(body)?)),
            "folder" => Ok(DataConfig::Folder(decode_named(body)?)),
            k => Err(serde::de::Error::custom(format!(
                "unknown data kind `{k}` (expected toy2d, idx or folder)"
            ))),
        }
    }
}

impl DataConfig {
    /// The source this table holds.
    pub fn source(&self) -> &dyn DataSource {
        match self {
            DataConfig::Toy2d(c) => c,
            DataConfig::Idx(c) => c,
            DataConfig::Folder(c) => c,
        }
    }

    fn source_mut(&mut self) -> &mut dyn DataSource {
        match self {
            DataConfig::Toy2d(c) => c,
            DataConfig::Idx(c) => c,
            DataConfig::Folder(c) => c,
        }
    }

    /// Opens the dataset; relative paths are resolved against `base`.
    pub fn open(&self, base: &Path) -> Result<Box<dyn TrainingData>> {
        self.source().open(base)
    }

    /// Opens an image dataset (IDX or folder); relative paths are resolved against `base`.
    pub fn open_images(&self, base: &Path) -> Result<ImageDataset> {
        self.source().open_images(base)
    }

    /// The `--data` string that [`DataConfig::parse_spec`] reads back into this config (paths
    /// as stored, so rebase them first if they are relative to a config file).
    pub fn to_spec(&self) -> String {
        self.source().to_spec()
    }

    /// Re-expresses relative data paths, written relative to the folder `from`, relative to the
    /// folder `to` (so a run directory's `config.toml` finds the same files).
    pub fn rebase(&mut self, from: &Path, to: &Path) -> Result<()> {
        let abs = |p: &Path| -> Result<PathBuf> {
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::io(p, e))?
                    .join(p)
            };
            Ok(p)
        };
        let (from, to) = (abs(from)?, abs(to)?);
        for p in self.source_mut().paths_mut() {
            if p.is_relative() {
                let target = from.join(&*p);
                let target = std::fs::canonicalize(&target).unwrap_or(target);
                let to = std::fs::canonicalize(&to).unwrap_or_else(|_| to.clone());
                if let Some(r) = pathdiff::diff_paths(&target, &to) {
                    *p = r;
                }
            }
        }
        Ok(())
    }

    /// A stable identifier of the data, part of every checkpoint's config hash. Paths enter by
    /// file name only, so a run directory stays valid when the repository moves.
    pub fn id(&self) -> String {
        let mut c = self.clone();
        for p in c.source_mut().paths_mut() {
            *p = p.file_name().map(PathBuf::from).unwrap_or_default();
        }
        serde_json::to_string(&c).unwrap_or_default()
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
        let mut opts = BTreeMap::new();
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
        let split = SplitConfig {
            heldout: take("heldout", SplitConfig::default_heldout() as u64) as usize,
            split_seed: take("split_seed", SplitConfig::default_split_seed()),
            pad: take("pad", SplitConfig::default_pad() as u64) as i64,
        };
        let cfg = match kind {
            "idx" => match positional.as_slice() {
                [i, l] => DataConfig::Idx(IdxConfig {
                    images: i.into(),
                    labels: l.into(),
                    heldout: split.heldout,
                    split_seed: split.split_seed,
                    pad: split.pad,
                }),
                _ => return Err(bad("expected idx:IMAGES,LABELS".into())),
            },
            "folder" => match positional.as_slice() {
                [d] => DataConfig::Folder(FolderConfig {
                    dir: d.into(),
                    channels: take("channels", FolderConfig::default_channels() as u64) as usize,
                    size: take("size", FolderConfig::default_size() as u64) as usize,
                    heldout: split.heldout,
                    split_seed: split.split_seed,
                    pad: split.pad,
                }),
                _ => return Err(bad("expected folder:DIR".into())),
            },
            "toy2d" if positional.is_empty() => DataConfig::Toy2d(Toy2dConfig::default()),
            _ => return Err(bad("expected idx:IMAGES,LABELS, folder:DIR or toy2d".into())),
        };
        if let Some(k) = opts.keys().next() {
            return Err(bad(format!("unknown option `{k}`")));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{idx, TrainingData};

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
            DataConfig::Idx(IdxConfig {
                images: "a/i.gz".into(),
                labels: "a/l.gz".into(),
                heldout: 1000,
                split_seed: 1000,
                pad: 0
            })
        );
        assert_eq!(
            DataConfig::parse_spec("folder:imgs,channels=3,size=32,heldout=10").unwrap(),
            DataConfig::Folder(FolderConfig {
                dir: "imgs".into(),
                channels: 3,
                size: 32,
                heldout: 10,
                split_seed: 1000,
                pad: 0
            })
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

    /// The data id enters every config hash, and run directories store `config.toml`: both
    /// keep the exact text they had when `DataConfig` was an enum of inline fields.
    #[test]
    fn id_and_toml_text_are_stable() {
        let cases = [
            (
                "[data]\nkind = \"toy2d\"\n",
                r#"{"kind":"toy2d","classes":8,"modes":4,"construction_seed":2410}"#,
            ),
            (
                "[data]\nkind = \"idx\"\nimages = \"../d/i.gz\"\nlabels = \"l.gz\"\npad = 2\n",
                r#"{"kind":"idx","images":"i.gz","labels":"l.gz","heldout":1000,"split_seed":1000,"pad":2}"#,
            ),
            (
                "[data]\nkind = \"folder\"\ndir = \"x/imgs\"\nsize = 32\n",
                r#"{"kind":"folder","dir":"imgs","channels":1,"size":32,"heldout":1000,"split_seed":1000,"pad":0}"#,
            ),
        ];
        #[derive(Deserialize, Serialize)]
        struct T {
            data: DataConfig,
        }
        for (toml_text, id) in cases {
            let t: T = toml::from_str(toml_text).unwrap();
            assert_eq!(t.data.id(), id);
            let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
            assert_eq!(back.data, t.data);
        }
        let t: T =
            toml::from_str("[data]\nkind = \"idx\"\nimages = \"i\"\nlabels = \"l\"\n").unwrap();
        assert_eq!(
            toml::to_string(&t).unwrap(),
            "[data]\nkind = \"idx\"\nimages = \"i\"\nlabels = \"l\"\nheldout = 1000\nsplit_seed = 1000\npad = 0\n"
        );
        for (bad, field) in [
            (
                "kind = \"idx\"\nimages = \"i\"\nlabels = \"l\"\nheldot = 1",
                "heldot",
            ),
            ("kind = \"folder\"\ndir = \"d\"\nsize = \"big\"", "size"),
            ("kind = \"toy2d\"\nmodes = -1", "modes"),
            ("kind = \"png\"", "png"),
        ] {
            let e = toml::from_str::<T>(&format!("[data]\n{bad}\n"))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(field), "{e}");
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
