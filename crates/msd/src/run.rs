//! A run directory and what lives in it: `config.toml`, `teacher/`, `partition.json`,
//! `pairs.safetensors`, `students/<k>/<stage>/`, `bundle.json`. Helpers create the shared
//! artifacts on first use (atomically), so K student jobs can start independently.

use crate::bundle::{Bundle, TeacherRef};
use crate::config::RunConfig;
use crate::diffusion::{sample, SamplerConfig};
use crate::distill::pairs::RegressionPairs;
use crate::distill::DistillConfig;
use crate::model::EdmModel;
use crate::partition::{Partition, Strategy};
use crate::teacher::TrainSummary;
use crate::train::checkpoint;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Paths of one run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn teacher_dir(&self) -> PathBuf {
        self.root.join("teacher")
    }
    pub fn partition_path(&self) -> PathBuf {
        self.root.join("partition.json")
    }
    pub fn pairs_path(&self) -> PathBuf {
        self.root.join("pairs.safetensors")
    }
    pub fn student_dir(&self, k: usize, stage: &str) -> PathBuf {
        self.root.join("students").join(k.to_string()).join(stage)
    }
    pub fn bundle_path(&self) -> PathBuf {
        self.root.join("bundle.json")
    }

    /// The resolved config stored in the run directory.
    pub fn load_config(&self) -> Result<RunConfig> {
        let p = self.config_path();
        if !p.exists() {
            return Err(Error::io(
                &p,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no run config here; run `msd train-teacher --out` on this directory first",
                ),
            ));
        }
        RunConfig::load(&p)
    }

    /// The trained teacher.
    pub fn load_teacher(&self, device: Device) -> Result<EdmModel> {
        EdmModel::load_dir(&self.teacher_dir(), device)
    }

    /// Loads the run config `config` (with an optional seed override), creates the run
    /// directory and stores the resolved copy as its `config.toml`, the data paths re-expressed
    /// relative to the run directory.
    pub fn create(&self, config: &Path, seed: Option<u64>) -> Result<RunConfig> {
        let mut cfg = RunConfig::load(config)?;
        if let Some(s) = seed {
            cfg.seed = s;
        }
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let base = config.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        cfg.data.rebase(&base, &self.root)?;
        cfg.save(&self.config_path())?;
        Ok(cfg)
    }

    /// Trains (or resumes) the run's teacher in `teacher/` on the run's data.
    pub fn train_teacher(
        &self,
        cfg: &RunConfig,
        device: Device,
        on: &mut dyn FnMut(crate::teacher::Progress),
    ) -> Result<(EdmModel, TrainSummary)> {
        let data = cfg.data.open(&self.root)?;
        crate::teacher::train_teacher(
            &cfg.model,
            &cfg.teacher,
            data.as_ref(),
            &cfg.data.id(),
            &self.teacher_dir(),
            cfg.seed,
            device,
            on,
        )
    }

    /// [`Self::train_teacher`] with pictures, as `msd train-teacher` runs it: at each
    /// checkpoint a preview of every class (`teacher/samples/step-N.png`, redone on resume when
    /// a kill came between a checkpoint and its preview) and the loss curve
    /// (`teacher/loss.png`, also at the end when a training log exists). A preview that cannot
    /// be drawn does not stop training: the first such error is returned beside the result.
    pub fn train_teacher_with_previews(
        &self,
        cfg: &RunConfig,
        device: Device,
        on: &mut dyn FnMut(crate::teacher::Progress),
    ) -> Result<TeacherTrained> {
        use crate::teacher::Progress;
        let dir = self.teacher_dir();
        let samples = dir.join("samples");
        let stats = dir.join("stats.jsonl");
        let mut preview_error = None;
        let mut preview = |step: u64, model: &EdmModel, redo: bool| {
            let out = samples.join(format!("step-{step:07}.png"));
            if redo && out.exists() {
                return;
            }
            if let Err(e) = crate::draw::preview(model, &cfg.sampler, cfg.seed, &out) {
                preview_error.get_or_insert(e);
            }
        };
        let (model, summary) = self.train_teacher(cfg, device, &mut |p| {
            match &p {
                // The runner redraws `loss.png` at each checkpoint.
                Progress::Checkpoint { step, model } => preview(*step, model, false),
                Progress::Resumed { step, model } => preview(*step, model, true),
                Progress::Start { .. } | Progress::Step { .. } => {}
            }
            on(p)
        })?;
        // An imported teacher has no training log of its own here.
        let loss_curve = stats.exists();
        if loss_curve {
            crate::viz::write_loss_curve(&stats, &dir.join("loss.png"))?;
        }
        Ok(TeacherTrained {
            model,
            summary,
            loss_curve,
            preview_error,
        })
    }

    /// Brings an already trained teacher (`from`: model.json + model.safetensors [+
    /// train.json]) into `teacher/`, checked against the config's `[model]` and recorded with
    /// the hash this run would have trained it under.
    pub fn import_teacher(&self, cfg: &RunConfig, from: &Path) -> Result<TrainSummary> {
        crate::teacher::import_teacher(
            from,
            &cfg.model,
            &cfg.teacher,
            cfg.seed,
            &cfg.data.id(),
            &self.teacher_dir(),
        )
    }
}

/// What [`RunDir::train_teacher_with_previews`] made.
pub struct TeacherTrained {
    pub model: EdmModel,
    pub summary: TrainSummary,
    /// `teacher/loss.png` was written (the teacher has a training log).
    pub loss_curve: bool,
    /// The first preview that could not be drawn.
    pub preview_error: Option<Error>,
}

/// The teacher's identity for config hashes: its training hash, or "external".
pub fn teacher_id(teacher_dir: &Path) -> String {
    checkpoint::read_json::<TrainSummary>(&teacher_dir.join("train.json"))
        .map(|s| s.config_hash)
        .unwrap_or_else(|_| "external".into())
}

/// Per-class embeddings for k-means partitions: the mean of `per_class` teacher samples of
/// each class (flattened).
pub fn class_embeddings(
    teacher: &EdmModel,
    per_class: usize,
    sampler: &SamplerConfig,
    seed: u64,
) -> Vec<Vec<f64>> {
    tch::manual_seed(seed as i64);
    (0..teacher.num_classes())
        .map(|c| {
            let mut shape = vec![per_class as i64];
            shape.extend(teacher.spec.net.sample_shape());
            let z = Tensor::randn(shape.as_slice(), (Kind::Float, teacher.device()));
            let l = Tensor::full([per_class as i64], c, (Kind::Int64, teacher.device()));
            // The teacher's conditional distribution, unguided (as it has always been: the
            // committed k-means partitions were made so).
            let unguided = SamplerConfig {
                guidance: 1.0,
                ..sampler.clone()
            };
            let x = sample(teacher, &z, &l, &unguided)
                .map(|x| x.flatten(1, -1).mean_dim(0, false, Kind::Double));
            x.and_then(|x| Ok(Vec::<f64>::try_from(x.to_device(Device::Cpu))?))
                .unwrap_or_default()
        })
        .collect()
}

/// Loads `path` if it exists (checking K and the class count), else builds the partition with
/// `strategy` and saves it (k-means embeds each class by the mean of `kmeans_per_class` teacher
/// samples).
pub fn ensure_partition(
    path: &Path,
    teacher: &EdmModel,
    students: usize,
    strategy: Strategy,
    seed: u64,
    sampler: &SamplerConfig,
    kmeans_per_class: usize,
) -> Result<Partition> {
    let c = teacher.num_classes() as usize;
    if path.exists() {
        let p = Partition::load(path)?;
        if p.students != students || p.num_conditions != c || p.strategy != strategy {
            return Err(Error::format(
                path,
                format!(
                    "holds a {:?} partition of {} conditions into {} students, but the config asks for {strategy:?} into {students} of {c}; delete it to rebuild",
                    p.strategy, p.num_conditions, p.students
                ),
            ));
        }
        return Ok(p);
    }
    let emb = if strategy == Strategy::Kmeans {
        Some(class_embeddings(
            teacher,
            kmeans_per_class.max(1),
            sampler,
            seed,
        ))
    } else {
        None
    };
    let p = Partition::build(strategy, c, students, seed, emb.as_deref())?;
    p.save(path)?;
    Ok(p)
}

/// What [`repartition`] did.
#[derive(Clone, Debug)]
pub struct Repartitioned {
    pub partition: Partition,
    /// The config's former (students, strategy) when the config was changed to follow the new
    /// partition.
    pub config_was: Option<(usize, Strategy)>,
}

/// Splits the run's classes among `students` (default: the config's) with `strategy` (default:
/// the config's) into `partition.json`, under the whole-run lock; an existing partition is
/// replaced only with `force`. The config follows the partition, so that distillation (which
/// checks the partition against `distill.students` / `distill.partition`) accepts it.
pub fn repartition(
    run: &RunDir,
    students: Option<usize>,
    strategy: Option<Strategy>,
    force: bool,
    device: Device,
) -> Result<Repartitioned> {
    let cfg = run.load_config()?;
    // Replacing the partition under a training student would invalidate it: whole-run lock.
    let _lock = crate::train::lock::RunLock::acquire(&run.root)?;
    let k = students.unwrap_or(cfg.distill.students);
    let strategy = strategy.unwrap_or(cfg.distill.partition);
    let path = run.partition_path();
    if path.exists() {
        if !force {
            return Err(Error::Invalid(format!(
                "{} exists; pass --force to replace it (students trained on it become invalid)",
                path.display()
            )));
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    let teacher = run.load_teacher(device)?;
    let mut config_was = None;
    if k != cfg.distill.students || strategy != cfg.distill.partition {
        let mut c = cfg.clone();
        c.distill.students = k;
        c.distill.partition = strategy;
        c.distill
            .validate()
            .map_err(|e| Error::Invalid(format!("--students {k}: {e}")))?;
        c.save(&run.config_path())?;
        config_was = Some((cfg.distill.students, cfg.distill.partition));
    }
    let partition = ensure_partition(
        &path,
        &teacher,
        k,
        strategy,
        cfg.seed,
        &cfg.sampler,
        cfg.distill.kmeans_samples_per_class,
    )?;
    Ok(Repartitioned {
        partition,
        config_was,
    })
}

/// Loads or generates the shared regression pairs (none when the regression weight is 0); a
/// sidecar `<path>.json` records how they were drawn, so stale pairs are drawn again.
pub fn ensure_pairs(
    path: &Path,
    teacher: &EdmModel,
    cfg: &DistillConfig,
    sampler: &SamplerConfig,
    seed: u64,
) -> Result<Option<RegressionPairs>> {
    if cfg.regression_weight <= 0.0 || cfg.regression_pairs_per_class == 0 {
        return Ok(None);
    }
    // Deterministic, and from the generator's σ_max (one owner: `distill.sigma_max`).
    let det = SamplerConfig {
        s_churn: 0.0,
        sigma_max: cfg.sigma_max,
        ..sampler.clone()
    };
    // The pairs are tied to how they were drawn: a changed sampler (e.g. its guidance), count or
    // seed draws them again.
    let key = checkpoint::config_hash(&(
        &det,
        cfg.regression_pairs_per_class,
        seed,
        teacher.num_params(),
    ));
    let key_path = path.with_extension("json");
    let stored_key = checkpoint::read_json::<String>(&key_path).ok();
    if path.exists() && stored_key.as_deref() == Some(key.as_str()) {
        let p = RegressionPairs::load(path, teacher.device())?;
        if p.len() as usize == cfg.regression_pairs_per_class * teacher.num_classes() as usize
            && p.sigma_max == cfg.sigma_max
        {
            return Ok(Some(p));
        }
    }
    let p = RegressionPairs::generate(
        teacher,
        cfg.regression_pairs_per_class,
        &det,
        seed ^ 0xA11_FA125,
        4096,
    );
    p.save(path)?;
    checkpoint::write_json_atomic(&key_path, &key)?;
    Ok(Some(p))
}

/// Assembles `bundle.json` of a run from its students' final stage directories, with the
/// run's generator σ_max and the teacher's sampler settings from `cfg`.
pub fn assemble_bundle(
    run: &RunDir,
    partition: &Partition,
    stage: &str,
    cfg: &RunConfig,
) -> Result<crate::bundle::BundleManifest> {
    let dirs: Vec<PathBuf> = (0..partition.students)
        .map(|k| run.student_dir(k, stage))
        .collect();
    let teacher = run.teacher_dir();
    Bundle::assemble(
        &run.bundle_path(),
        partition,
        &dirs,
        teacher.exists().then_some(TeacherRef {
            dir: &teacher,
            sampler: &cfg.sampler,
        }),
        cfg.distill.sigma_max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::nets::{MlpConfig, NetConfig};

    #[test]
    fn pairs_are_drawn_again_when_the_guidance_changes_and_reused_otherwise() {
        let _g = crate::rng_guard();
        tch::manual_seed(0);
        let spec = ModelSpec {
            net: NetConfig::Mlp(MlpConfig {
                dim: 2,
                num_classes: 2,
                width: 16,
                depth: 1,
                noise_freqs: 4,
                cond: Default::default(),
            }),
            precond: Default::default(),
        };
        let teacher = EdmModel::from_spec(&spec, Device::Cpu);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("pairs.safetensors");
        let cfg = DistillConfig {
            regression_pairs_per_class: 3,
            ..Default::default()
        };
        let mut sampler = SamplerConfig {
            steps: 3,
            ..Default::default()
        };
        let y = |s: &SamplerConfig| {
            ensure_pairs(&path, &teacher, &cfg, s, 7)
                .unwrap()
                .unwrap()
                .y
        };
        let plain = y(&sampler);
        assert!(y(&sampler).equal(&plain), "same settings reuse the file");
        sampler.guidance = 3.0;
        let guided = y(&sampler);
        assert!(
            !guided.allclose(&plain, 1e-6, 1e-6, false),
            "guidance draws new pairs"
        );
        assert!(y(&sampler).equal(&guided));
    }
}
