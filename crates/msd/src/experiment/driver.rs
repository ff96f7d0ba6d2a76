//! Runs the image reproduction: trains every run of the plan ([`super::plan`]) that is missing,
//! once per training seed (`runs/<name>/s<seed>/`, the teacher, the partition and the
//! regression pairs fixed), assembles one bundle per evaluated stage, evaluates every row on the
//! same seeded, balanced sample set (`evals/<id>/s<seed>/`), times it (batch-1 latency,
//! throughput), and writes `report.json` and `report.md` ([`super::report`]). Resumable at every
//! level: finished stages, bundles and evaluations are reused (each evaluation is keyed by the
//! hashes of what made its students), and a killed stage resumes from its last checkpoint.
//! The run directories are large and not meant to be committed: a seed of a run whose rows are
//! all evaluated under the same plan (the `plan_key` of their `row.json`: the run config, the
//! teacher, the stage and the evaluation settings) is not trained again when its run directory
//! is gone, so a fresh clone of the committed `evals/` continues where the last machine stopped.

use super::eval::{EvalRecord, EvalSettings, Generator, Scorer};
use super::plan::{eval_id, plan, stages_up_to, Budget, ExperimentConfig, RunPlan, Size};
use super::report::{write_report, ExperimentReport};
use super::selection::Selection;
use super::students::student_dir;
use super::{Observer, Provenance, StageKind};
use crate::bundle::{Bundle, TeacherRef};
use crate::config::RunConfig;
use crate::diffusion::sample;
use crate::eval::Classifier;
use crate::model::{EdmModel, ModelSpec};
use crate::nets::NetConfig;
use crate::partition::Partition;
use crate::pipeline::{DistillOptions, Distiller, StageDone};
use crate::run::{teacher_id, RunDir};
use crate::teacher::{import_teacher, Progress, TrainSummary};
use crate::train::checkpoint::{config_hash, read_json, write_json_atomic};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What to run.
#[derive(Clone, Debug)]
pub struct ExperimentOptions {
    /// The experiment config file (recorded in the report).
    pub config_path: PathBuf,
    pub exp: ExperimentConfig,
    /// Output folder: report.md, report.json and evals/ (small, meant to be committed) and runs/.
    pub out: PathBuf,
    /// Training seeds (default: the config's `seeds`).
    pub seeds: Option<Vec<u64>>,
    /// Only these runs (or `teacher`); empty = all.
    pub only: Vec<String>,
    /// Measure the latency and throughput of finished rows again.
    pub retime: bool,
    /// Train and evaluate nothing: only write the report from what exists (e.g. to commit the
    /// rows finished so far while another process goes on training).
    pub report_only: bool,
    pub device: Device,
    pub provenance: Provenance,
}

/// `evals/<id>/s<seed>/row.json`: what made the evaluation and the row's timings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowRecord {
    /// Hash of the students' config hashes (or the teacher's) and the evaluation settings.
    pub key: String,
    /// Hash of what the row's plan asks before anything is trained (the run config at the
    /// seed, the teacher, the stage, the evaluation settings): lets a later invocation without
    /// the run directory know that the row is done. Absent in rows made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_key: Option<String>,
    pub params_per_student: i64,
    pub students: usize,
    /// Median latency of one image at batch 1 (ms), routing included.
    pub latency_ms_b1: f64,
    /// Images per second at `throughput_batch`.
    pub images_per_s: f64,
    pub throughput_batch: usize,
    pub timing_reps: usize,
    /// Summed training-loop seconds of every student and stage up to this row's.
    pub train_seconds: Option<f64>,
    pub bundle: Option<PathBuf>,
    pub nfe: usize,
    /// The machine that wrote the row ([`crate::evaluate::hardware`]): its timings and the
    /// last stage's training ran there. Absent in rows made before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
}

/// The evaluation folder of a row at a seed (`None`: the teacher's, which has no seed).
pub fn eval_dir(out: &Path, id: &str, seed: Option<u64>) -> PathBuf {
    let d = out.join("evals").join(id);
    match seed {
        Some(s) => d.join(format!("s{s}")),
        None => d,
    }
}

/// The run directory of a run at a seed.
pub fn run_dir(out: &Path, name: &str, seed: u64) -> PathBuf {
    out.join("runs").join(name).join(format!("s{seed}"))
}

/// Median wall time of `f` in milliseconds over `reps` runs (after two warm-up runs).
fn median_ms(reps: usize, f: impl FnMut()) -> f64 {
    crate::bench::median_ms_warm(2, reps, f)
}

/// The per-student budget of `r` applied to `cfg`.
pub fn apply_budget(cfg: &mut RunConfig, r: &RunPlan) {
    let d = &mut cfg.distill;
    match r.budget {
        Budget::Standard => {}
        Budget::Times(f) => {
            d.iterations *= f;
            d.adm.iterations *= f;
            d.tsm.steps *= f;
        }
        Budget::DmPlusAdm => d.iterations += d.adm.iterations,
    }
    if let Some(w) = r.regression_weight {
        d.regression_weight = w;
    }
}

struct Ctx<'a> {
    o: &'a ExperimentOptions,
    base: &'a RunConfig,
    teacher: &'a EdmModel,
    scorer: Option<Scorer>,
}

/// Runs the experiment (the parts `only` selects) and writes the report.
pub fn run_experiment(o: &ExperimentOptions, obs: &mut dyn Observer) -> Result<ExperimentReport> {
    let exp = &o.exp;
    let base = RunConfig::load(&exp.run)?;
    let plan = plan(exp);
    let seeds = o.seeds.clone().unwrap_or_else(|| exp.seeds.clone());
    let run_names: Vec<&str> = plan.runs.iter().map(|r| r.name.as_str()).collect();
    let selection = Selection::check(&seeds, &o.only, o.report_only, &run_names)?
        .skipping(exp.dropped.keys().cloned());
    let wanted = |name: &str| selection.wants(name);
    if o.only.is_empty() && !o.report_only {
        for (name, why) in &exp.dropped {
            obs.note(&format!(
                "experiment: run {name} is dropped by the config ({why}); `--only {name}` trains it"
            ));
        }
    }
    std::fs::create_dir_all(&o.out).map_err(|e| Error::io(&o.out, e))?;
    let teacher = EdmModel::load_dir(&exp.teacher, o.device)?;
    let params_of = |net: &NetConfig| {
        EdmModel::from_spec(
            &ModelSpec {
                net: net.clone(),
                precond: teacher.spec.precond,
            },
            Device::Cpu,
        )
        .num_params()
    };
    let small_params = exp.small_net.as_ref().map(params_of);
    let capacity_params = exp.capacity_net.as_ref().map(params_of);
    for (field, p) in [
        ("small_net", small_params),
        ("capacity_net", capacity_params),
    ] {
        if let Some(p) = p.filter(|&p| p >= teacher.num_params()) {
            return Err(Error::config(
                field,
                format!(
                    "has {p} parameters, not fewer than the teacher's {}",
                    teacher.num_params()
                ),
            ));
        }
    }
    let mut ctx = Ctx {
        o,
        base: &base,
        teacher: &teacher,
        scorer: None,
    };
    if wanted("teacher") {
        ctx.teacher_row(obs)?;
    }
    for r in plan.runs.iter().filter(|r| wanted(&r.name)) {
        let mut stages: Vec<StageKind> = Vec::new();
        for w in plan
            .rows
            .iter()
            .filter(|w| w.run.as_deref() == Some(r.name.as_str()))
        {
            if let Some(s) = w.stage.filter(|s| !stages.contains(s)) {
                stages.push(s);
            }
        }
        for &seed in &seeds {
            let t0 = Instant::now();
            if !run_dir(&o.out, &r.name, seed).exists()
                && stages.iter().try_fold(true, |all, &s| {
                    Ok::<_, Error>(all && ctx.evaluated_by_plan(r, s, seed)?)
                })?
            {
                obs.note(&format!(
                    "experiment: run {} seed {seed} is evaluated under this plan (evals/*/s{seed}/row.json); \
                     its run directory is gone, nothing to train",
                    r.name
                ));
                continue;
            }
            let run = ctx.train(r, seed, obs)?;
            for &stage in &stages {
                ctx.students_row(r, &run, stage, seed, obs)?;
            }
            obs.note(&format!(
                "experiment: run {} seed {seed} done ({:.0} s in this process)",
                r.name,
                t0.elapsed().as_secs_f64()
            ));
        }
    }
    write_report(
        o,
        &base,
        &plan,
        &selection.report_seeds(&seeds, &o.out.join("report.json")),
        small_params,
        capacity_params,
        teacher.num_params(),
    )
}

impl Ctx<'_> {
    fn settings(&self) -> EvalSettings {
        EvalSettings {
            n: self.o.exp.n,
            batch: self.o.exp.eval_batch,
            seed: self.o.exp.eval_seed,
        }
    }

    /// The feature network and the real data, loaded on first use.
    fn scorer(&mut self) -> Result<&Scorer> {
        if self.scorer.is_none() {
            let (clf, _) = Classifier::load_dir(&self.o.exp.classifier, self.o.device)?;
            let mut data = self.base.data.clone();
            data.rebase(
                self.o.exp.run.parent().unwrap_or(Path::new(".")),
                Path::new("."),
            )?;
            let images = data.open_images(Path::new("."))?;
            self.scorer = Some(Scorer::new(clf, images)?);
        }
        Ok(self.scorer.as_ref().expect("set above"))
    }

    /// Evaluates `g` into `dir` (eval.json, and samples for the observer's picture).
    /// Evaluates `g` into `dir`; with `cache`, a teacher's generation resumes from the batches
    /// kept there (removed once `eval.json` is written).
    fn evaluate(
        &mut self,
        g: &Generator,
        dir: &Path,
        cache: Option<&Path>,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let s = self.settings();
        let device = self.o.device;
        let batches = s.n.div_ceil(s.batch.max(1));
        let mut on = |done: usize, reused: bool| {
            let how = if reused {
                "kept from an earlier process"
            } else {
                "made"
            };
            obs.note(&format!(
                "  batch {}/{batches} {how} ({done} samples)",
                done.div_ceil(s.batch.max(1))
            ));
        };
        let (rec, x, labels) = self
            .scorer()?
            .evaluate_resumable(g, &s, device, cache, &mut on)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_json_atomic(&dir.join("eval.json"), &rec)?;
        if let Some(c) = cache {
            std::fs::remove_dir_all(c).map_err(|e| Error::io(c, e))?;
        }
        let c = *labels.iter().max().unwrap_or(&0) as usize + 1;
        let take = (10.min(s.n / c).max(1) * c).min(s.n);
        obs.samples(dir, &x.narrow(0, 0, take as i64), &labels[..take])?;
        obs.note(&format!(
            "  FD {:.3} (floor {:.3}), KID {:.4}, class accuracy {:.2}%",
            rec.fd,
            rec.floor_fd,
            rec.kid,
            100.0 * rec.class_accuracy
        ));
        Ok(())
    }

    /// The teacher row: Heun with the run config's sampler and guidance.
    fn teacher_row(&mut self, obs: &mut dyn Observer) -> Result<()> {
        let dir = eval_dir(&self.o.out, "teacher", None);
        let s = self.base.sampler.clone();
        let key = config_hash(&(
            teacher_id(&self.o.exp.teacher),
            self.settings(),
            s.steps,
            s.guidance,
        ));
        let done = row_done(&dir, &key);
        if done && !self.o.retime {
            return Ok(());
        }
        if !done {
            obs.note(&format!(
                "experiment: evaluating the teacher ({} samples, Heun-{})",
                self.o.exp.n, s.steps
            ));
            let teacher = self.teacher;
            // 10,000 Heun samples take hours on a CPU: finished batches are kept (under runs/,
            // keyed by the row's key) so that an interrupted evaluation resumes.
            let cache = self.o.out.join("runs").join("teacher-eval").join(&key);
            obs.note(&format!(
                "  finished batches are kept in {} (a rerun resumes from them)",
                cache.display()
            ));
            self.evaluate(&Generator::Teacher(teacher, &s), &dir, Some(&cache), obs)?;
        }
        let reps = self.o.exp.latency_reps.div_ceil(10).max(1);
        let device = self.o.device;
        let (b1, bn) = self.timings(reps, &mut |labels| {
            let l = Tensor::from_slice(labels).to_device(device);
            let mut shape = vec![labels.len() as i64];
            shape.extend(self.teacher.spec.net.sample_shape());
            let z = Tensor::randn(shape.as_slice(), (Kind::Float, device));
            let _ = sample(self.teacher, &z, &l, &s);
        });
        let train: Option<TrainSummary> = read_json(&self.o.exp.teacher.join("train.json")).ok();
        let row = RowRecord {
            key,
            params_per_student: self.teacher.num_params(),
            students: 1,
            latency_ms_b1: b1,
            images_per_s: bn,
            throughput_batch: self.o.exp.throughput_batch,
            timing_reps: reps,
            train_seconds: train.map(|t| t.train_seconds),
            bundle: None,
            nfe: s.nfe() * if s.guidance != 1.0 { 2 } else { 1 },
            plan_key: None,
            hardware: Some(crate::evaluate::hardware()),
        };
        write_json_atomic(&dir.join("row.json"), &row)
    }

    /// Median latency per image at batch 1 (ms) and throughput at the configured batch
    /// (images/s) of `gen`, which generates one image per label.
    fn timings(&self, reps: usize, gen: &mut dyn FnMut(&[i64])) -> (f64, f64) {
        let c = self.teacher.num_classes();
        let mut i = 0i64;
        let b1 = median_ms(reps, || {
            gen(&[i % c]);
            i += 1;
        });
        let tb = self.o.exp.throughput_batch;
        let labels: Vec<i64> = (0..tb as i64).map(|j| j % c).collect();
        let bn = median_ms(reps.div_ceil(4).max(1), || gen(&labels));
        (b1, tb as f64 / (bn / 1e3))
    }

    /// The run config of `r` at `seed`.
    fn run_config(&self, r: &RunPlan, seed: u64, root: &Path) -> Result<RunConfig> {
        let exp = &self.o.exp;
        let mut cfg = self.base.clone();
        cfg.seed = seed;
        cfg.data
            .rebase(exp.run.parent().unwrap_or(Path::new(".")), root)?;
        cfg.distill.students = r.students;
        cfg.distill.partition = r.partition;
        cfg.distill.student_net = match r.size {
            Size::Same => None,
            Size::Small => Some(exp.small_net.clone().ok_or_else(|| {
                Error::config("small_net", "is needed by the smaller-students rows")
            })?),
            Size::Capacity => exp.capacity_net.clone(),
        };
        apply_budget(&mut cfg, r);
        Ok(cfg)
    }

    /// The `plan_key` of the row of `r` after `stage` at `seed`: the run config (its data by
    /// [`crate::data::DataConfig::id`], so without the folders it lies in), the teacher, the
    /// run, the stage and the evaluation settings.
    fn plan_key(&self, r: &RunPlan, stage: StageKind, seed: u64) -> Result<String> {
        let cfg = self.run_config(r, seed, &run_dir(&self.o.out, &r.name, seed))?;
        Ok(config_hash(&(
            cfg.seed,
            cfg.data.id(),
            &cfg.model,
            &cfg.teacher,
            &cfg.sampler,
            &cfg.distill,
            teacher_id(&self.o.exp.teacher),
            &r.name,
            stage.name(),
            self.settings(),
        )))
    }

    /// Whether the row of `r` after `stage` at `seed` has a scored evaluation made under
    /// today's plan (see [`RowRecord::plan_key`]).
    fn evaluated_by_plan(&self, r: &RunPlan, stage: StageKind, seed: u64) -> Result<bool> {
        let dir = eval_dir(
            &self.o.out,
            &eval_id(Some(&r.name), Some(stage)),
            Some(seed),
        );
        let want = self.plan_key(r, stage, seed)?;
        Ok(read_json::<RowRecord>(&dir.join("row.json"))
            .is_ok_and(|w| w.plan_key.as_deref() == Some(want.as_str()))
            && read_json::<EvalRecord>(&dir.join("eval.json"))
                .is_ok_and(|e| e.samples_as.is_some()))
    }

    /// Prepares the run directory of `r` at `seed` and trains its students through its stages.
    fn train(&self, r: &RunPlan, seed: u64, obs: &mut dyn Observer) -> Result<RunDir> {
        let run = RunDir::new(run_dir(&self.o.out, &r.name, seed));
        std::fs::create_dir_all(&run.root).map_err(|e| Error::io(&run.root, e))?;
        let cfg = self.run_config(r, seed, &run.root)?;
        cfg.save(&run.config_path())?;
        // The teacher is the same for every seed (its record names the run's seed, as the
        // pipeline's guidance check asks); the training seed draws the students' noise, the
        // regression pairs and (random, k-means) partitions.
        if !run.teacher_dir().join("train.json").exists() {
            import_teacher(
                &self.o.exp.teacher,
                &cfg.model,
                &cfg.teacher,
                cfg.seed,
                &cfg.data.id(),
                &run.teacher_dir(),
            )?;
        }
        obs.note(&format!(
            "experiment: run {} seed {seed} — {} {} students, {} partition, stages {}",
            r.name,
            r.students,
            r.size.as_str(),
            super::plan::partition_name(r.partition),
            r.stages
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(" → ")
        ));
        Distiller { run: run.clone() }.run(
            &DistillOptions {
                students: Vec::new(),
                stages: r.stages.clone(),
                device: self.o.device,
            },
            &mut Relay {
                obs,
                label: format!("{} s{seed}", r.name),
            },
        )?;
        Ok(run)
    }

    /// Bundles the students of `run` after `stage`, evaluates and times them.
    fn students_row(
        &mut self,
        r: &RunPlan,
        run: &RunDir,
        stage: StageKind,
        seed: u64,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let id = eval_id(Some(&r.name), Some(stage));
        let dir = eval_dir(&self.o.out, &id, Some(seed));
        let partition = Partition::load(&run.partition_path())?;
        let mut hashes = Vec::new();
        let mut train_seconds = 0.0;
        for k in 0..partition.students {
            for s in stages_up_to(r, stage) {
                let p = student_dir(&run.root, k, s).join("train.json");
                let t: TrainSummary = read_json(&p)?;
                hashes.push(t.config_hash);
                train_seconds += t.train_seconds;
            }
        }
        let key = config_hash(&(&hashes, self.settings()));
        let plan_key = self.plan_key(r, stage, seed)?;
        let done = row_done(&dir, &key);
        if done && !self.o.retime {
            // Rows made before `plan_key` existed get it while their students are at hand.
            let path = dir.join("row.json");
            let mut row: RowRecord = read_json(&path)?;
            if row.plan_key.as_deref() != Some(plan_key.as_str()) {
                row.plan_key = Some(plan_key);
                write_json_atomic(&path, &row)?;
            }
            return Ok(());
        }
        let bundle_path = run.root.join(format!("bundle-{}.json", stage.name()));
        if !done {
            let dirs: Vec<PathBuf> = (0..partition.students)
                .map(|k| student_dir(&run.root, k, stage))
                .collect();
            Bundle::assemble(
                &bundle_path,
                &partition,
                &dirs,
                Some(TeacherRef {
                    dir: &run.teacher_dir(),
                    sampler: &self.base.sampler,
                }),
                self.base.distill.sigma_max,
            )?;
            obs.note(&format!(
                "experiment: evaluating {id} seed {seed} ({} samples, 1 NFE)",
                self.o.exp.n
            ));
            let bundle = Bundle::load(&bundle_path, self.o.device)?;
            self.evaluate(&Generator::Bundle(&bundle), &dir, None, obs)?;
        }
        let bundle = Bundle::load(&bundle_path, self.o.device)?;
        let reps = self.o.exp.latency_reps;
        let device = self.o.device;
        let (b1, bn) = self.timings(reps, &mut |labels| {
            let z = bundle.noise(labels.len(), 0, device);
            let _ = bundle.generate(labels, &z);
        });
        let m = &bundle.manifest;
        let params: i64 =
            m.students.iter().map(|s| s.params).sum::<i64>() / m.students.len().max(1) as i64;
        let row = RowRecord {
            key,
            params_per_student: params,
            students: m.students.len(),
            latency_ms_b1: b1,
            images_per_s: bn,
            throughput_batch: self.o.exp.throughput_batch,
            timing_reps: reps,
            train_seconds: Some(train_seconds),
            bundle: Some(bundle_path),
            nfe: 1,
            plan_key: Some(plan_key),
            hardware: Some(crate::evaluate::hardware()),
        };
        write_json_atomic(&dir.join("row.json"), &row)
    }
}

/// Whether `dir/row.json` exists, was made with `key`, and `dir/eval.json` exists and scored
/// the samples as 8-bit images (older evaluations are made again).
fn row_done(dir: &Path, key: &str) -> bool {
    read_json::<RowRecord>(&dir.join("row.json")).is_ok_and(|r| r.key == key)
        && read_json::<EvalRecord>(&dir.join("eval.json")).is_ok_and(|e| e.samples_as.is_some())
}

/// Passes the pipeline's progress on to an experiment observer (also the text experiment's).
pub(crate) struct Relay<'a> {
    pub(crate) obs: &'a mut dyn Observer,
    pub(crate) label: String,
}

impl crate::pipeline::Observer for Relay<'_> {
    fn stage_started(&mut self, student: usize, stage: StageKind, total_steps: u64) {
        self.obs.begin(
            &format!("{} {} {student}", self.label, stage.name()),
            total_steps,
        );
    }
    fn training(&mut self, event: Progress) {
        if let Progress::Step { step, .. } | Progress::Start { step, .. } = event {
            self.obs.step(step);
        }
    }
    fn stage_finished(&mut self, _done: &StageDone) {
        self.obs.end();
    }
}
