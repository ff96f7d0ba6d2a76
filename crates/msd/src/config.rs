//! The run configuration (`configs/*.toml`): data, model, teacher training, sampler — and, once a
//! run directory exists, the resolved copy stored there as `config.toml`. Unknown or malformed
//! fields are errors that name the field.

use crate::data::{toy2d::Toy2d, TrainingData};
use crate::diffusion::SamplerConfig;
use crate::distill::DistillConfig;
use crate::model::ModelSpec;
use crate::tagged::{decode_named, split_tag};
use crate::teacher::TeacherTrainConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the training data come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataConfig {
    /// The seeded 2-D toy mixture ([`Toy2d`]).
    Toy2d {
        #[serde(default = "d_classes")]
        classes: usize,
        #[serde(default = "d_modes")]
        modes: usize,
        #[serde(default = "d_cseed")]
        construction_seed: u64,
    },
    /// IDX image + label files (MNIST format, gzipped or not); see [`crate::data::idx`].
    Idx {
        images: PathBuf,
        labels: PathBuf,
        #[serde(default = "d_heldout")]
        heldout: usize,
        #[serde(default = "d_split_seed")]
        split_seed: u64,
        #[serde(default)]
        pad: i64,
    },
    /// One sub-folder of PNG/JPEG images per class; see [`crate::data::folder`].
    Folder {
        dir: PathBuf,
        #[serde(default = "d_channels")]
        channels: usize,
        #[serde(default = "d_size")]
        size: usize,
        #[serde(default = "d_heldout")]
        heldout: usize,
        #[serde(default = "d_split_seed")]
        split_seed: u64,
        #[serde(default)]
        pad: i64,
    },
}

fn d_heldout() -> usize {
    1000
}
fn d_split_seed() -> u64 {
    1000
}
fn d_channels() -> usize {
    1
}
fn d_size() -> usize {
    28
}

/// The fields of [`DataConfig::Toy2d`], decoded on their own so errors name the field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Toy2dFields {
    #[serde(default = "d_classes")]
    classes: usize,
    #[serde(default = "d_modes")]
    modes: usize,
    #[serde(default = "d_cseed")]
    construction_seed: u64,
}

/// The fields of [`DataConfig::Idx`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdxFields {
    images: PathBuf,
    labels: PathBuf,
    #[serde(default = "d_heldout")]
    heldout: usize,
    #[serde(default = "d_split_seed")]
    split_seed: u64,
    #[serde(default)]
    pad: i64,
}

/// The fields of [`DataConfig::Folder`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderFields {
    dir: PathBuf,
    #[serde(default = "d_channels")]
    channels: usize,
    #[serde(default = "d_size")]
    size: usize,
    #[serde(default = "d_heldout")]
    heldout: usize,
    #[serde(default = "d_split_seed")]
    split_seed: u64,
    #[serde(default)]
    pad: i64,
}

impl<'de> Deserialize<'de> for DataConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (kind, body) = split_tag(d)?;
        match kind.as_str() {
            "toy2d" => {
                let f: Toy2dFields = decode_named(body)?;
                Ok(DataConfig::Toy2d {
                    classes: f.classes,
                    modes: f.modes,
                    construction_seed: f.construction_seed,
                })
            }
            "idx" => {
                let f: IdxFields = decode_named(body)?;
                Ok(DataConfig::Idx {
                    images: f.images,
                    labels: f.labels,
                    heldout: f.heldout,
                    split_seed: f.split_seed,
                    pad: f.pad,
                })
            }
            "folder" => {
                let f: FolderFields = decode_named(body)?;
                Ok(DataConfig::Folder {
                    dir: f.dir,
                    channels: f.channels,
                    size: f.size,
                    heldout: f.heldout,
                    split_seed: f.split_seed,
                    pad: f.pad,
                })
            }
            k => Err(serde::de::Error::custom(format!(
                "unknown data kind `{k}` (expected toy2d, idx or folder)"
            ))),
        }
    }
}

fn d_classes() -> usize {
    8
}
fn d_modes() -> usize {
    4
}
fn d_cseed() -> u64 {
    2410
}

impl DataConfig {
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
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                let target = from.join(&*p);
                let target = std::fs::canonicalize(&target).unwrap_or(target);
                let to = std::fs::canonicalize(&to).unwrap_or_else(|_| to.clone());
                if let Some(r) = pathdiff::diff_paths(&target, &to) {
                    *p = r;
                }
            }
        };
        match self {
            DataConfig::Toy2d { .. } => {}
            DataConfig::Idx { images, labels, .. } => {
                fix(images);
                fix(labels);
            }
            DataConfig::Folder { dir, .. } => fix(dir),
        }
        Ok(())
    }

    /// Opens the dataset; relative paths are resolved against `base`.
    pub fn open(&self, base: &Path) -> Result<Box<dyn TrainingData>> {
        match self {
            DataConfig::Idx { .. } | DataConfig::Folder { .. } => {
                Ok(Box::new(self.open_images(base)?))
            }
            DataConfig::Toy2d {
                classes,
                modes,
                construction_seed,
            } => {
                if *classes == 0 || *modes == 0 {
                    return Err(Error::config("data.classes / data.modes", "must be ≥ 1"));
                }
                Ok(Box::new(Toy2d::new(*classes, *modes, *construction_seed)))
            }
        }
    }

    /// A stable identifier of the data, part of every checkpoint's config hash. Paths enter by
    /// file name only, so a run directory stays valid when the repository moves.
    pub fn id(&self) -> String {
        let mut c = self.clone();
        let name = |p: &mut PathBuf| *p = p.file_name().map(PathBuf::from).unwrap_or_default();
        match &mut c {
            DataConfig::Toy2d { .. } => {}
            DataConfig::Idx { images, labels, .. } => {
                name(images);
                name(labels);
            }
            DataConfig::Folder { dir, .. } => name(dir),
        }
        serde_json::to_string(&c).unwrap_or_default()
    }
}

/// The whole configuration of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelSpec,
    pub teacher: TeacherTrainConfig,
    #[serde(default)]
    pub sampler: SamplerConfig,
    #[serde(default)]
    pub distill: DistillConfig,
}

impl RunConfig {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let c: RunConfig = toml::from_str(text)
            .map_err(|e| Error::format(origin, e.to_string().trim_end().replace('\n', " ")))?;
        c.model.net.validate()?;
        c.model.precond.validate()?;
        c.teacher.validate()?;
        c.sampler.validate()?;
        c.distill.validate()?;
        crate::distill::checks::check_guidance(
            c.distill.real_guidance,
            c.sampler.guidance,
            &c.teacher,
        )?;
        Ok(c)
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Writes the resolved config atomically as TOML.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::format(path, e.to_string()))?;
        crate::train::checkpoint::write_bytes_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"
        seed = 3
        [data]
        kind = "toy2d"
        [model.net]
        kind = "mlp"
        dim = 2
        num_classes = 8
        width = 32
        depth = 2
        [teacher]
        steps = 10
        batch_size = 8
    "#;

    #[test]
    fn parses_with_defaults_and_roundtrips() {
        let c = RunConfig::from_toml(MINI, Path::new("mini.toml")).unwrap();
        assert_eq!(c.seed, 3);
        assert_eq!(c.sampler.steps, 18);
        assert_eq!(c.model.precond.sigma_data, 0.5);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        c.save(&p).unwrap();
        assert_eq!(RunConfig::load(&p).unwrap(), c);
    }

    #[test]
    fn unknown_and_malformed_fields_are_named() {
        let bad = MINI.replace("width = 32", "widht = 32");
        let e = RunConfig::from_toml(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("widht"), "{e}");
        let bad = MINI.replace("batch_size = 8", "batch_size = \"eight\"");
        let e = RunConfig::from_toml(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_size"), "{e}");
        let bad = MINI.replace("depth = 2", "depth = 0");
        let e = RunConfig::from_toml(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("net.depth"), "{e}");
    }
}
