//! The run configuration (`configs/*.toml`): data, model, teacher training, sampler — and, once a
//! run directory exists, the resolved copy stored there as `config.toml`. Unknown or malformed
//! fields are errors that name the field.

use crate::diffusion::SamplerConfig;
use crate::distill::DistillConfig;
use crate::model::ModelSpec;
use crate::teacher::TeacherTrainConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub use crate::data::source::{DataConfig, DataSource};

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
        c.distill.validate()?;
        crate::diffusion::sigma::check_sigma_max(c.sampler.sigma_max)
            .map_err(|m| Error::config("sampler.sigma_max", m))?;
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

    /// [`crate::distill::checks::check_guidance`] against the teacher actually in `teacher_dir`:
    /// when the run guides, its `train.json` must carry the hash of this config's
    /// `[model]`/`[teacher]`/seed/data (so the `teacher.label_dropout` checked is the one the
    /// teacher was trained with).
    pub fn check_teacher_record(&self, teacher_dir: &Path) -> Result<()> {
        let cfg = self;
        crate::distill::checks::check_guidance(
            cfg.distill.real_guidance,
            cfg.sampler.guidance,
            &cfg.teacher,
        )?;
        if cfg.distill.real_guidance == 1.0 && cfg.sampler.guidance == 1.0 {
            return Ok(());
        }
        let path = teacher_dir.join("train.json");
        let recorded = crate::train::checkpoint::read_json::<crate::teacher::TrainSummary>(&path)?;
        let want = crate::teacher::teacher_hash(&cfg.model, &cfg.teacher, cfg.seed, &cfg.data.id());
        if recorded.config_hash != want {
            return Err(Error::config(
                "teacher.label_dropout",
                format!(
                    "the run guides (real_guidance {}, sampler.guidance {}), but {} was not made by this config's \
                     [model]/[teacher] (hash {} ≠ {want}), so the teacher's label dropout is unknown; \
                     retrain or re-import the teacher with this config",
                    cfg.distill.real_guidance,
                    cfg.sampler.guidance,
                    path.display(),
                    recorded.config_hash
                ),
            ));
        }
        Ok(())
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

    /// σ_max has one default (EDM's 80) and one check, and a bad one names its field.
    #[test]
    fn sigma_max_has_one_default_and_one_check() {
        let c = RunConfig::from_toml(MINI, Path::new("mini.toml")).unwrap();
        let edm = crate::diffusion::sigma::EDM_SIGMA_MAX;
        assert_eq!((c.sampler.sigma_max, c.distill.sigma_max), (edm, edm));
        for (table, value, field) in [
            ("[distill]", "sigma_max = 0.0", "distill.sigma_max"),
            ("[distill]", "sigma_max = 1e308", "distill.sigma_max"),
            ("[distill]", "sigma_min = 90.0", "distill.sigma_min"),
            ("[sampler]", "sigma_max = -1.0", "sampler.sigma_max"),
        ] {
            let text = format!("{MINI}\n{table}\n{value}\n");
            let e = RunConfig::from_toml(&text, Path::new("x.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{value}: {e}");
        }
    }

    /// Every run config committed under `configs/` still parses (the `[data]` table and σ_max
    /// moved owners; the files did not change).
    #[test]
    fn committed_run_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            if p.extension().is_some_and(|x| x == "toml") && text.contains("[model") {
                RunConfig::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} run configs found in {}", dir.display());
    }

    #[test]
    fn a_teacher_from_another_config_is_refused_when_the_run_guides() {
        let text = r#"
            [data]
            kind = "toy2d"
            [model.net]
            kind = "mlp"
            dim = 2
            num_classes = 8
            width = 8
            depth = 1
            [teacher]
            steps = 1
            batch_size = 2
            label_dropout = 0.1
            [distill]
            real_guidance = 1.5
        "#;
        let cfg = RunConfig::from_toml(text, Path::new("t.toml")).unwrap();
        let d = tempfile::tempdir().unwrap();
        let summary = |hash: String| crate::teacher::TrainSummary {
            steps: 1,
            final_loss: 0.0,
            train_seconds: 0.0,
            params: 1,
            seed: 0,
            config_hash: hash,
        };
        let write = |s: &crate::teacher::TrainSummary| {
            crate::train::checkpoint::write_json_atomic(&d.path().join("train.json"), s).unwrap()
        };
        let own = crate::teacher::teacher_hash(&cfg.model, &cfg.teacher, cfg.seed, &cfg.data.id());
        write(&summary(own));
        assert!(cfg.check_teacher_record(d.path()).is_ok());
        write(&summary("0123456789abcdef".into()));
        let e = cfg.check_teacher_record(d.path()).unwrap_err().to_string();
        assert!(e.contains("teacher.label_dropout"), "{e}");
        // Without guidance the record does not matter.
        let mut plain = cfg.clone();
        plain.distill.real_guidance = 1.0;
        assert!(plain.check_teacher_record(d.path()).is_ok());
        // And a config without label dropout is refused on load.
        let bad = text.replace("label_dropout = 0.1", "label_dropout = 0.0");
        let e = RunConfig::from_toml(&bad, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("distill.real_guidance"), "{e}");
    }
}
