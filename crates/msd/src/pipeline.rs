//! The distillation pipeline of a run directory as one library call: [`Distiller::run`] takes the
//! run directory, the students and the stages, builds the shared artifacts (partition, regression
//! pairs), runs every stage of every student in order on the shared runner, and assembles the
//! bundle once every student has finished the last stage. It owns the stage order and the seed
//! rules (TSM of student k: `seed + k`; DM, ADM and CD: `seed`). Progress goes to an
//! [`Observer`]; the library never prints.

use crate::bundle::BundleManifest;
use crate::config::RunConfig;
use crate::data::TrainingData;
use crate::distill::pairs::RegressionPairs;
use crate::distill::tsm::{train_tsm, TsmJob};
use crate::distill::{distill_student, StudentJob};
use crate::error::ResultExt;
use crate::model::{EdmModel, ModelSpec};
use crate::partition::Partition;
use crate::run::{assemble_bundle, ensure_pairs, ensure_partition, teacher_id, RunDir};
use crate::teacher::Progress;
use crate::train::checkpoint::read_json;
use crate::train::lock::RunLock;
use crate::train::TrainSummary;
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Device;

pub use crate::distill::StageKind;

/// What to distil (the library's own options; the CLI maps its flags onto them).
#[derive(Clone, Debug)]
pub struct DistillOptions {
    /// Students to train, in this order; empty = all.
    pub students: Vec<usize>,
    /// Stages, in order: consecutive stages of TSM, DM, ADM, or of TSM, CD.
    pub stages: Vec<StageKind>,
    pub device: Device,
}

/// One finished stage of one student.
pub struct StageDone<'a> {
    pub student: usize,
    pub stage: StageKind,
    pub classes: &'a [i64],
    pub summary: &'a TrainSummary,
    pub dir: &'a Path,
}

/// One line: what the stage trained, for how long, and where it is.
impl std::fmt::Display for StageDone<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.summary;
        match self.stage {
            StageKind::Tsm => write!(
                f,
                "student {}: TSM {} steps, {:.0} s, {} parameters → {}",
                self.student,
                s.steps,
                s.train_seconds,
                s.params,
                self.dir.display()
            ),
            stage => write!(
                f,
                "student {}: {stage}, classes {:?}, {} iterations, {:.0} s → {}",
                self.student,
                self.classes,
                s.steps,
                s.train_seconds,
                self.dir.display()
            ),
        }
    }
}

/// Receives the pipeline's progress. Every method has an empty default.
pub trait Observer {
    /// A stage of a student starts (or is found finished, then no training events follow).
    fn stage_started(&mut self, _student: usize, _stage: StageKind, _total_steps: u64) {}
    /// A training event of the running stage.
    fn training(&mut self, _event: Progress) {}
    /// A stage of a student finished.
    fn stage_finished(&mut self, _done: &StageDone) {}
    /// The bundle was written.
    fn bundle_written(&mut self, _path: &Path, _stage: StageKind) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// Checks that `stages` are consecutive stages of TSM → DM → ADM, or of TSM → CD.
pub fn check_stages(stages: &[StageKind]) -> Result<()> {
    use StageKind::*;
    let orders: [&[StageKind]; 2] = [&[Tsm, Dm, Adm], &[Tsm, Cd]];
    let ok = !stages.is_empty()
        && orders
            .iter()
            .any(|o| o.windows(stages.len().min(o.len())).any(|w| w == stages));
    if ok {
        Ok(())
    } else {
        let names: Vec<&str> = stages.iter().map(|s| s.name()).collect();
        Err(Error::Invalid(format!(
            "give consecutive stages of tsm,dm,adm or tsm,cd in that order (e.g. dm, tsm,dm, dm,adm, cd), not {}",
            names.join(",")
        )))
    }
}

/// Distils the students of one run directory.
pub struct Distiller {
    pub run: RunDir,
}

impl Distiller {
    pub fn new(run: impl Into<PathBuf>) -> Self {
        Self {
            run: RunDir::new(run),
        }
    }

    /// The run's partition (built and saved on first use).
    pub fn partition(&self, teacher: &EdmModel) -> Result<Partition> {
        let cfg = self.run.load_config()?;
        let d = &cfg.distill;
        ensure_partition(
            &self.run.partition_path(),
            teacher,
            d.students,
            d.partition,
            cfg.seed,
            &cfg.sampler,
            d.kmeans_samples_per_class,
        )
    }

    /// [`Self::run`] as a command runs it, beside other jobs of the same run: the run locked
    /// shared (students of one run may train side by side, one job each), each chosen
    /// student's folder exclusively (killed writers' temp files go); errors name the flags.
    pub fn run_locked(
        &self,
        opts: &DistillOptions,
        obs: &mut dyn Observer,
    ) -> Result<Option<BundleManifest>> {
        check_stages(&opts.stages).ctx(|| "--stages")?;
        self.run.load_config()?;
        let _run_lock = RunLock::shared(&self.run.root)?;
        let partition = self.partition(&self.run.load_teacher(opts.device)?)?;
        if let Some(&k) = opts.students.iter().find(|&&k| k >= partition.students) {
            return Err(Error::Invalid(format!(
                "--student {k}: the partition has students 0..{}",
                partition.students - 1
            )));
        }
        let mine: Vec<usize> = if opts.students.is_empty() {
            (0..partition.students).collect()
        } else {
            opts.students.clone()
        };
        let _student_locks = mine
            .iter()
            .map(|k| RunLock::acquire(&self.run.root.join("students").join(k.to_string())))
            .collect::<Result<Vec<_>>>()?;
        self.run(opts, obs)
    }

    /// Runs `opts.stages` for `opts.students` (resuming or reusing what is done). Returns the
    /// bundle manifest when every student of the partition has finished the last stage (none
    /// when the last stage is TSM, which makes no generator).
    pub fn run(
        &self,
        opts: &DistillOptions,
        obs: &mut dyn Observer,
    ) -> Result<Option<BundleManifest>> {
        check_stages(&opts.stages)?;
        let run = &self.run;
        let device = opts.device;
        let cfg = run.load_config()?;
        let teacher = run.load_teacher(device)?;
        cfg.check_teacher_record(&run.teacher_dir())?;
        let d = &cfg.distill;
        let has = |s: StageKind| opts.stages.contains(&s);
        if has(StageKind::Tsm) && d.student_net.is_none() {
            return Err(Error::config(
                "distill.student_net",
                format!(
                    "the tsm stage initialises a smaller student; set it in {}",
                    run.config_path().display()
                ),
            ));
        }
        let needs_data = has(StageKind::Tsm) || has(StageKind::Adm) || has(StageKind::Cd);
        let data = if needs_data {
            Some(cfg.data.open(&run.root)?)
        } else {
            None
        };
        let data_id = cfg.data.id();
        let partition = self.partition(&teacher)?;
        let students: Vec<usize> = if opts.students.is_empty() {
            (0..partition.students).collect()
        } else {
            opts.students.clone()
        };
        if let Some(&k) = students.iter().find(|&&k| k >= partition.students) {
            return Err(Error::Invalid(format!(
                "student {k}: the partition has students 0..={}",
                partition.students - 1
            )));
        }
        let mut pairs = ensure_pairs(&run.pairs_path(), &teacher, d, &cfg.sampler, cfg.seed)?;
        crate::distill::regression::attach_features(
            &mut pairs,
            d.regression_distance,
            &run.root,
            device,
        )?;
        let tid = teacher_id(&run.teacher_dir());
        for &k in &students {
            let classes = partition.classes_of(k);
            let tsm_dir = run.student_dir(k, StageKind::Tsm.name());
            let tsm = match (&data, &d.student_net) {
                (Some(data), Some(net)) if has(StageKind::Tsm) => {
                    let spec = ModelSpec {
                        net: net.clone(),
                        precond: teacher.spec.precond,
                    };
                    obs.stage_started(k, StageKind::Tsm, d.tsm.steps);
                    let job = TsmJob {
                        spec: &spec,
                        teacher: &teacher,
                        teacher_id: &tid,
                        data: data.as_ref(),
                        data_id: &data_id,
                        classes: classes.clone(),
                        sigma_max: d.sigma_max,
                        dir: &tsm_dir,
                        seed: cfg.seed.wrapping_add(k as u64),
                        device,
                    };
                    let (m, s) = train_tsm(&d.tsm, &job, &mut |p| obs.training(p))?;
                    obs.stage_finished(&StageDone {
                        student: k,
                        stage: StageKind::Tsm,
                        classes: &classes,
                        summary: &s,
                        dir: &tsm_dir,
                    });
                    Some((m, s.config_hash))
                }
                // A finished TSM stage from an earlier command still initialises the generator.
                _ => finished_stage(&tsm_dir, device)?,
            };
            let shared = StageInputs {
                run,
                cfg: &cfg,
                teacher: &teacher,
                partition: &partition,
                pairs: pairs.as_ref(),
                teacher_id: &tid,
                real_data: data.as_deref(),
                data_id: &data_id,
            };
            let init = tsm.as_ref().map(|(m, h)| (m, h.as_str()));
            generator_stages(&shared, k, &classes, &opts.stages, init, obs)?;
        }
        bundle_when_done(run, &partition, &opts.stages, &cfg, obs)
    }
}

/// What the generator stages of every student of a run share.
pub(crate) struct StageInputs<'a> {
    pub run: &'a RunDir,
    pub cfg: &'a RunConfig,
    pub teacher: &'a EdmModel,
    pub partition: &'a Partition,
    pub pairs: Option<&'a RegressionPairs>,
    pub teacher_id: &'a str,
    pub real_data: Option<&'a dyn TrainingData>,
    pub data_id: &'a str,
}

/// Runs the generator stages (DM, ADM, CD: `stages` without TSM) of student `k` in order, each
/// resuming or reusing what is done; ADM continues from the student's DM generator, and
/// `generator_init` (a finished TSM model with its config hash) starts the first.
pub(crate) fn generator_stages(
    s: &StageInputs,
    k: usize,
    classes: &[i64],
    stages: &[StageKind],
    generator_init: Option<(&EdmModel, &str)>,
    obs: &mut dyn Observer,
) -> Result<()> {
    let d = &s.cfg.distill;
    for &stage in stages.iter().filter(|s| **s != StageKind::Tsm) {
        let dir = s.run.student_dir(k, stage.name());
        let dm_dir = s.run.student_dir(k, StageKind::Dm.name());
        let job = StudentJob {
            teacher: s.teacher,
            partition: s.partition,
            student: k,
            pairs: s.pairs,
            dir: &dir,
            seed: s.cfg.seed,
            teacher_id: s.teacher_id,
            generator_init,
            stage,
            real_data: s.real_data,
            data_id: s.data_id,
            resume_from: (stage == StageKind::Adm).then_some(dm_dir.as_path()),
        };
        let total = match stage {
            StageKind::Adm => d.adm.iterations,
            StageKind::Cd => d.cd.iterations,
            _ => d.iterations,
        };
        obs.stage_started(k, stage, total);
        let (_, summary) = distill_student(d, &job, &mut |p| obs.training(p))?;
        obs.stage_finished(&StageDone {
            student: k,
            stage,
            classes,
            summary: &summary,
            dir: &dir,
        });
    }
    Ok(())
}

/// Assembles the bundle of the last of `stages` once every student of `partition` has finished
/// it (none when that stage is TSM, which makes no generator, or while students are missing).
pub(crate) fn bundle_when_done(
    run: &RunDir,
    partition: &Partition,
    stages: &[StageKind],
    cfg: &RunConfig,
    obs: &mut dyn Observer,
) -> Result<Option<BundleManifest>> {
    let last = *stages.last().unwrap_or(&StageKind::Dm);
    let all_done = (0..partition.students).all(|k| {
        run.student_dir(k, last.name())
            .join("model.safetensors")
            .exists()
    });
    if last == StageKind::Tsm || !all_done {
        return Ok(None);
    }
    let manifest = assemble_bundle(run, partition, last.name(), cfg)?;
    obs.bundle_written(&run.bundle_path(), last);
    Ok(Some(manifest))
}

/// The model of a finished stage in `dir`, with its config hash, if there is one.
fn finished_stage(dir: &Path, device: Device) -> Result<Option<(EdmModel, String)>> {
    match read_json::<TrainSummary>(&dir.join("train.json")) {
        Ok(s) => Ok(Some((EdmModel::load_dir(dir, device)?, s.config_hash))),
        Err(_) => Ok(None),
    }
}
