//! The text stages of a run directory (the same layout as a class run, [`RunDir`]): the run's
//! `config.toml` has an embedding-conditioned `[model.net]` (`cond = { kind = "embedding",
//! dim = 384 }`) and `distill.partition = "kmeans"` or `"quadrants"`.
//!
//! - `prompts/caption_embeddings.safetensors`: the captions' embeddings (cached, keyed by text);
//! - `teacher/`: the prompt-conditional teacher ([`TextRun::train_teacher`]), trained on every
//!   (image, caption embedding) pair with embedding dropout (`teacher.label_dropout`), optionally
//!   started from a class teacher ([`super::init`]);
//! - `partition.json`: prompt groups of the training captions' embeddings, with what assigns an
//!   unseen prompt ([`TextRun::partition`]);
//! - `students/<k>/{dm,adm}/` and `bundle.json` ([`TextRun::distill`]): student k is trained on
//!   the prompts of group k (DM draws its generator's conditions from them, ADM its real data).

use super::captioned::CaptionedSet;
use super::init::{init_from_class_model, InitReport};
use crate::bundle::BundleManifest;
use crate::config::RunConfig;
use crate::data::ImageDataset;
use crate::model::EdmModel;
use crate::nets::text_encoder::TextEncoder;
use crate::partition::Partition;
use crate::pipeline::{
    bundle_when_done, generator_stages, DistillOptions, Observer, StageInputs, StageKind,
};
use crate::run::{teacher_id, RunDir};
use crate::teacher::{train_denoiser, DenoiserJob, Progress, TrainSummary};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A run directory whose model is prompt-conditional, with the prompt encoder.
pub struct TextRun {
    pub run: RunDir,
    pub encoder: TextEncoder,
    /// Seed of the captions' template draw; `None`: the run's seed. Runs that share a teacher
    /// across training seeds (the seeded experiment) fix it to the teacher's, so that every seed
    /// trains on the captions the teacher saw.
    pub caption_seed: Option<u64>,
}

impl TextRun {
    /// The run at `root` with `encoder` (its width must be the network's `cond.dim`).
    pub fn new(root: impl Into<PathBuf>, encoder: TextEncoder) -> Self {
        Self {
            run: RunDir::new(root),
            encoder,
            caption_seed: None,
        }
    }

    /// The same run with the captions drawn with `seed` instead of the run's seed.
    pub fn with_caption_seed(mut self, seed: u64) -> Self {
        self.caption_seed = Some(seed);
        self
    }

    /// The seed of the captions' template draw for `cfg`.
    pub fn caption_seed_of(&self, cfg: &RunConfig) -> u64 {
        self.caption_seed.unwrap_or(cfg.seed)
    }

    /// The caption-embedding cache file.
    pub fn embeddings_path(&self) -> PathBuf {
        self.run
            .root
            .join("prompts")
            .join("caption_embeddings.safetensors")
    }

    /// The run's config, checked to be a text run that this encoder feeds.
    pub fn config(&self) -> Result<RunConfig> {
        let cfg = self.run.load_config()?;
        match cfg.model.net.cond().embedding_dim() {
            Some(d) if d == self.encoder.dim() => Ok(cfg),
            Some(d) => Err(Error::config(
                "model.net.cond.dim",
                format!("is {d} but the text encoder gives {}", self.encoder.dim()),
            )),
            None => Err(Error::config(
                "model.net.cond",
                "a text run needs cond = { kind = \"embedding\", dim = 384 }",
            )),
        }
    }

    /// The run's images and their captions (template draw seeded by [`Self::caption_seed_of`]).
    pub fn captioned(&self, cfg: &RunConfig) -> Result<(ImageDataset, CaptionedSet)> {
        let images = cfg.data.open_images(&self.run.root)?;
        let set = CaptionedSet::build(
            &images,
            &self.encoder,
            &self.embeddings_path(),
            self.caption_seed_of(cfg),
        )?;
        Ok((images, set))
    }

    /// What the prompt data is identified by in hashes: the images, the caption seed and the
    /// encoder.
    fn data_id(&self, cfg: &RunConfig) -> String {
        format!(
            "{}|captions(seed {})|{}",
            cfg.data.id(),
            self.caption_seed_of(cfg),
            crate::nets::text_encoder::MODEL_DIR_NAME
        )
    }

    /// Trains (or resumes, or reuses) the prompt-conditional teacher in `teacher/`, started
    /// from the class teacher in `init_from` (all but the projection, which is fitted; see
    /// [`super::init`]) or from scratch. Returns the model, its summary and the init report.
    pub fn train_teacher(
        &self,
        init_from: Option<&Path>,
        on: &mut dyn FnMut(Progress),
    ) -> Result<(EdmModel, TrainSummary, Option<InitReport>)> {
        let cfg = self.config()?;
        let device = self.encoder.device();
        let (images, set) = self.captioned(&cfg)?;
        let data = set.prompted(&images, None)?;
        let init = match init_from {
            None => None,
            Some(dir) => {
                let class = EdmModel::load_dir(dir, device)?;
                let mut text = EdmModel::from_spec(&cfg.model, device);
                let means = set.class_means(class.num_classes())?.to_device(device);
                let report = init_from_class_model(&mut text, &class, &means)?;
                Some((text, format!("{}+fit", teacher_id(dir)), report))
            }
        };
        let data_id = self.data_id(&cfg);
        let job = DenoiserJob {
            spec: &cfg.model,
            cfg: &cfg.teacher,
            data: &data,
            data_id: &data_id,
            classes: vec![0],
            target_teacher: None,
            sigma_max_share: 0.0,
            sigma_max: cfg.distill.sigma_max,
            init: init.as_ref().map(|(m, id, _)| (m, id.as_str())),
            dir: &self.run.teacher_dir(),
            seed: cfg.seed,
            device,
            stage: "teacher",
        };
        let (m, s) = train_denoiser(&job, on)?;
        Ok((m, s, init.map(|(_, _, r)| r)))
    }

    /// The run's prompt partition (built from the training captions' embeddings and saved on
    /// first use; `distill.partition` kmeans or quadrants, `distill.students` groups).
    pub fn partition(&self, cfg: &RunConfig, set: &CaptionedSet) -> Result<Partition> {
        let path = self.run.partition_path();
        let d = &cfg.distill;
        if path.exists() {
            let p = Partition::load(&path)?;
            if p.students == d.students && p.strategy == d.partition && p.prompts.is_some() {
                return Ok(p);
            }
        }
        let p = Partition::of_prompts(d.partition, &set.points()?, d.students, cfg.seed)?;
        p.save(&path)?;
        Ok(p)
    }

    /// A prompt partition of the training captions' embeddings with `strategy` into `students`
    /// groups, apart from the run's own (nothing is saved), with the captions per group.
    pub fn trial_partition(
        &self,
        strategy: crate::partition::Strategy,
        students: usize,
        seed: u64,
    ) -> Result<(Partition, Vec<usize>)> {
        use crate::error::ResultExt;
        let cfg = self.config()?;
        let (_, set) = self.captioned(&cfg)?;
        let points = set.points()?;
        let p = Partition::of_prompts(strategy, &points, students, seed)
            .ctx(|| "--strategy / --students")?;
        let sizes = group_sizes(&p, &points)?;
        Ok((p, sizes))
    }

    /// Runs `opts.stages` (DM, then ADM) for `opts.students` (all when empty) on their prompt
    /// groups, resuming or reusing what is done; returns the bundle manifest once every student
    /// has finished the last stage.
    pub fn distill(
        &self,
        opts: &DistillOptions,
        obs: &mut dyn Observer,
    ) -> Result<Option<BundleManifest>> {
        if opts.stages.is_empty()
            || opts
                .stages
                .iter()
                .any(|s| !matches!(s, StageKind::Dm | StageKind::Adm))
        {
            return Err(Error::config(
                "--stages",
                "text runs distil with dm, then adm (tsm and cd take class labels)",
            ));
        }
        crate::pipeline::check_stages(&opts.stages)?;
        let cfg = self.config()?;
        let teacher = self.run.load_teacher(opts.device)?;
        let (images, set) = self.captioned(&cfg)?;
        let partition = self.partition(&cfg, &set)?;
        let data = set.prompted(&images, Some(&partition))?;
        let data_id = self.data_id(&cfg);
        let tid = teacher_id(&self.run.teacher_dir());
        let students: Vec<usize> = if opts.students.is_empty() {
            (0..partition.students).collect()
        } else {
            opts.students.clone()
        };
        if let Some(&k) = students.iter().find(|&&k| k >= partition.students) {
            return Err(Error::config(
                "--students",
                format!("student {k}: the partition has {}", partition.students),
            ));
        }
        let shared = StageInputs {
            run: &self.run,
            cfg: &cfg,
            teacher: &teacher,
            partition: &partition,
            pairs: None,
            teacher_id: &tid,
            real_data: Some(&data),
            data_id: &data_id,
        };
        for &k in &students {
            let classes = partition.classes_of(k);
            generator_stages(&shared, k, &classes, &opts.stages, None, obs)?;
        }
        bundle_when_done(&self.run, &partition, &opts.stages, &cfg, obs)
    }
}

/// Number of `points` in each prompt group of `partition`.
pub fn group_sizes(partition: &Partition, points: &[Vec<f32>]) -> Result<Vec<usize>> {
    let g = partition
        .prompts
        .as_ref()
        .ok_or_else(|| Error::Partition("this partition splits classes, not prompts".into()))?;
    let mut sizes = vec![0; g.len()];
    for p in points {
        sizes[g.route(p)?] += 1;
    }
    Ok(sizes)
}
