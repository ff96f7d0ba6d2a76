//! `msd experiment mnist --out results/mnist`: the paper's main table in miniature. Trains every
//! run of the plan (`experiment_plan.rs`) that is missing, with the run config's per-student
//! budgets, assembles one bundle per evaluated stage, evaluates every row with `msd eval`'s metrics
//! on the same seeded, balanced sample set, times it (batch 1 latency, throughput), and writes
//! `report.json` and `report.md`. Resumable at every level: finished stages, bundles and
//! evaluations are reused (each evaluation is keyed by the hashes of what made its students), and
//! a killed stage resumes from its last checkpoint.

use super::experiment_plan::{
    eval_id, partition_name, plan, stages_up_to, ExperimentConfig, RunPlan, Size,
};
use crate::cmd::{bench::median_ms, distill, eval};
use anyhow::{bail, Context, Result};
use msd::bundle::{Bundle, TeacherRef};
use msd::config::RunConfig;
use msd::diffusion::sample;
use msd::model::EdmModel;
use msd::partition::Partition;
use msd::run::{ensure_pairs, teacher_id, RunDir};
use msd::teacher::{import_teacher, TrainSummary};
use msd::train::checkpoint::{read_json, write_json_atomic};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// The experiment: NAME reads configs/experiment-NAME.toml (e.g. `mnist`).
    pub name: String,
    /// The experiment config instead of configs/experiment-NAME.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder: report.md, report.json and evals/ (small, meant to be committed) and runs/
    /// (the students' weights and checkpoints).
    #[arg(long)]
    pub out: PathBuf,
    /// Only these parts (comma-separated run names, or `teacher` for the teacher row), e.g. to
    /// split the work between two processes; the report lists what exists so far.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Measure the latency and throughput of finished rows again (e.g. on an idle machine, so
    /// that every row is timed under the same conditions).
    #[arg(long)]
    pub retime: bool,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: Args) -> Result<()> {
    let device = crate::device::parse(&a.device)?;
    let cfg_path = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("configs/experiment-{}.toml", a.name)));
    if !cfg_path.exists() {
        bail!(
            "no experiment config at {} (pass --config, or a NAME with configs/experiment-NAME.toml)",
            cfg_path.display()
        );
    }
    let exp = ExperimentConfig::load(&cfg_path)?;
    let base = RunConfig::load(&exp.run)
        .with_context(|| format!("the run config `run` of {}", cfg_path.display()))?;
    let (runs, rows) = plan(&exp.student_counts);
    for o in &a.only {
        if o != "teacher" && !runs.iter().any(|r| &r.name == o) {
            let names: Vec<_> = runs.iter().map(|r| r.name.as_str()).collect();
            bail!(
                "--only {o}: not a part of this experiment (teacher, {})",
                names.join(", ")
            );
        }
    }
    let wanted = |name: &str| a.only.is_empty() || a.only.iter().any(|o| o == name);
    std::fs::create_dir_all(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    let teacher = EdmModel::load_dir(&exp.teacher, device)
        .with_context(|| format!("the experiment's teacher {}", exp.teacher.display()))?;
    let small_params = EdmModel::from_spec(
        &msd::model::ModelSpec {
            net: exp.small_net.clone(),
            precond: teacher.spec.precond,
        },
        Device::Cpu,
    )
    .num_params();
    if small_params >= teacher.num_params() {
        bail!(
            "{}: small_net has {small_params} parameters, not fewer than the teacher's {}",
            cfg_path.display(),
            teacher.num_params()
        );
    }
    let ctx = Ctx {
        exp: &exp,
        base: &base,
        out: &a.out,
        device,
        device_name: &a.device,
        teacher: &teacher,
        retime: a.retime,
    };
    if wanted("teacher") {
        ctx.teacher_row()?;
    }
    if runs.iter().any(|r| wanted(&r.name)) {
        // Regression pairs: generated once by the teacher and shared by every student.
        ensure_pairs(
            &a.out.join("pairs.safetensors"),
            &teacher,
            &base.distill,
            &base.sampler,
            base.seed,
        )?;
    }
    for r in runs.iter().filter(|r| wanted(&r.name)) {
        let t0 = Instant::now();
        let run = ctx.train(r)?;
        let mut stages: Vec<&str> = Vec::new();
        for w in rows
            .iter()
            .filter(|w| w.run.as_deref() == Some(r.name.as_str()))
        {
            if !stages.contains(&w.stage) {
                stages.push(w.stage);
            }
        }
        for stage in stages {
            ctx.students_row(r, &run, stage)?;
        }
        println!(
            "experiment: run {} done ({:.0} s in this process)",
            r.name,
            t0.elapsed().as_secs_f64()
        );
    }
    let report = super::experiment_report::write(
        &a.out,
        &exp,
        &cfg_path,
        &base,
        &runs,
        &rows,
        small_params,
        teacher.num_params(),
    )?;
    println!(
        "experiment: {} of {} rows evaluated → {}",
        report,
        rows.len(),
        a.out.join("report.md").display()
    );
    Ok(())
}

/// What every step of the experiment needs.
struct Ctx<'a> {
    exp: &'a ExperimentConfig,
    base: &'a RunConfig,
    out: &'a Path,
    device: Device,
    device_name: &'a str,
    teacher: &'a EdmModel,
    /// Time finished rows again.
    retime: bool,
}

/// The evaluation folder of a row (shared by rows reading the same run and stage).
pub fn eval_dir(out: &Path, id: &str) -> PathBuf {
    out.join("evals").join(id)
}

impl Ctx<'_> {
    fn eval_args(
        &self,
        teacher: Option<PathBuf>,
        bundle: Option<PathBuf>,
        out: PathBuf,
    ) -> Result<eval::Args> {
        let mut data = self.base.data.clone();
        let from = self.exp.run.parent().unwrap_or(Path::new("."));
        data.rebase(from, Path::new("."))?;
        Ok(eval::Args {
            teacher,
            bundle,
            steps: Some(self.base.sampler.steps),
            n: self.exp.n,
            classifier: Some(self.exp.classifier.clone()),
            data: Some(data.to_spec()),
            out: Some(out),
            guidance: Some(self.base.sampler.guidance),
            seed: self.exp.eval_seed,
            batch: self.exp.eval_batch,
            device: self.device_name.to_string(),
            precision: Default::default(),
        })
    }

    /// The teacher row: Heun with the run config's sampler and guidance.
    fn teacher_row(&self) -> Result<()> {
        let dir = eval_dir(self.out, "teacher");
        let s = &self.base.sampler;
        let key = json!({
            "teacher": teacher_id(&self.exp.teacher), "n": self.exp.n, "seed": self.exp.eval_seed,
            "batch": self.exp.eval_batch, "steps": s.steps, "guidance": s.guidance,
        });
        let done = row_done(&dir, &key);
        if done && !self.retime {
            return Ok(());
        }
        // An evaluation made by hand with the same settings (`msd eval --teacher … --out DIR`)
        // is adopted rather than repeated.
        let prior: Option<Value> = read_json(&dir.join("eval.json")).ok();
        let adopt = prior.as_ref().is_some_and(|e| {
            e["n"] == json!(self.exp.n)
                && e["sampler"]["steps"] == json!(s.steps)
                && e["sampler"]["guidance"].as_f64() == Some(s.guidance)
                && e["seeds"]["first"] == json!(self.exp.eval_seed)
                && e["teacher"]
                    .as_str()
                    .and_then(|t| std::fs::canonicalize(t).ok())
                    .is_some_and(|t| std::fs::canonicalize(&self.exp.teacher).ok() == Some(t))
        });
        if !adopt && !done {
            println!(
                "experiment: evaluating the teacher ({} samples, Heun-{})",
                self.exp.n, s.steps
            );
            eval::run(self.eval_args(Some(self.exp.teacher.clone()), None, dir.clone())?)?;
        }
        let teacher_reps = self.exp.latency_reps.div_ceil(10).max(1);
        let (b1, bn) = self.timings(teacher_reps, &mut |labels| {
            let l = Tensor::from_slice(labels).to_device(self.device);
            let mut shape = vec![labels.len() as i64];
            shape.extend(self.teacher.spec.net.sample_shape());
            let z = Tensor::randn(shape.as_slice(), (Kind::Float, self.device));
            let _ = sample(self.teacher, &z, &l, s);
        });
        let train: Option<TrainSummary> = read_json(&self.exp.teacher.join("train.json")).ok();
        let row = json!({
            "key": key, "params_per_student": self.teacher.num_params(), "students": 1,
            "latency_ms_b1": b1, "images_per_s_b": bn, "timing_reps": teacher_reps,
            "train_seconds": train.map(|t| t.train_seconds), "bundle": Value::Null,
            "nfe": s.nfe() * if s.guidance != 1.0 { 2 } else { 1 },
        });
        write_json_atomic(&dir.join("row.json"), &row)?;
        Ok(())
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
        let labels: Vec<i64> = (0..self.exp.throughput_batch as i64)
            .map(|j| j % c)
            .collect();
        let bn = median_ms(reps.div_ceil(4).max(1), || gen(&labels));
        (b1, self.exp.throughput_batch as f64 / (bn / 1e3))
    }

    /// Prepares the run directory of `r` and trains its students through its stages.
    fn train(&self, r: &RunPlan) -> Result<RunDir> {
        let run = RunDir::new(self.out.join("runs").join(&r.name));
        let mut cfg = self.base.clone();
        std::fs::create_dir_all(&run.root)
            .with_context(|| format!("creating {}", run.root.display()))?;
        cfg.data
            .rebase(self.exp.run.parent().unwrap_or(Path::new(".")), &run.root)?;
        cfg.distill.students = r.students;
        cfg.distill.partition = r.partition;
        cfg.distill.student_net = (r.size == Size::Small).then(|| self.exp.small_net.clone());
        cfg.save(&run.config_path())?;
        if !run.teacher_dir().join("train.json").exists() {
            import_teacher(
                &self.exp.teacher,
                &cfg.model,
                &cfg.teacher,
                cfg.seed,
                &cfg.data.id(),
                &run.teacher_dir(),
            )
            .with_context(|| format!("importing {}", self.exp.teacher.display()))?;
        }
        // The shared regression pairs, with the record of how they were drawn.
        let shared = self.out.join("pairs.safetensors");
        let key = |p: &Path| std::fs::read(p.with_extension("json")).ok();
        if shared.exists() && (key(&shared) != key(&run.pairs_path()) || !run.pairs_path().exists())
        {
            for (from, to) in [
                (shared.clone(), run.pairs_path()),
                (
                    shared.with_extension("json"),
                    run.pairs_path().with_extension("json"),
                ),
            ] {
                if from.exists() {
                    std::fs::copy(&from, &to)
                        .with_context(|| format!("copying {}", from.display()))?;
                }
            }
        }
        println!(
            "experiment: run {} — {} {} students, {} partition, stages {}",
            r.name,
            r.students,
            if r.size == Size::Small {
                "smaller"
            } else {
                "same-size"
            },
            partition_name(r.partition),
            r.stages.join(" → ")
        );
        distill::run(distill::Args {
            run: run.root.clone(),
            student: Vec::new(),
            stages: r
                .stages
                .iter()
                .map(|s| s.parse())
                .collect::<msd::Result<_>>()?,
            device: self.device_name.to_string(),
        })?;
        Ok(run)
    }

    /// Bundles the students of `run` after `stage`, evaluates and times them.
    fn students_row(&self, r: &RunPlan, run: &RunDir, stage: &str) -> Result<()> {
        let id = eval_id(Some(&r.name), stage);
        let dir = eval_dir(self.out, &id);
        let partition = Partition::load(&run.partition_path())?;
        let mut hashes = Vec::new();
        let mut train_seconds = 0.0;
        for k in 0..partition.students {
            for s in stages_up_to(r, stage) {
                let t: TrainSummary = read_json(&run.student_dir(k, s).join("train.json"))
                    .with_context(|| format!("student {k} has not finished stage {s}"))?;
                hashes.push(t.config_hash);
                train_seconds += t.train_seconds;
            }
        }
        let key = json!({
            "students": hashes, "n": self.exp.n, "seed": self.exp.eval_seed, "batch": self.exp.eval_batch,
        });
        let done = row_done(&dir, &key);
        if done && !self.retime {
            return Ok(());
        }
        let bundle_path = run.root.join(format!("bundle-{stage}.json"));
        if !done {
            let dirs: Vec<PathBuf> = (0..partition.students)
                .map(|k| run.student_dir(k, stage))
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
            println!(
                "experiment: evaluating {id} ({} samples, 1 NFE)",
                self.exp.n
            );
            eval::run(self.eval_args(None, Some(bundle_path.clone()), dir.clone())?)?;
        }
        let bundle = Bundle::load(&bundle_path, self.device)?;
        let manifest = &bundle.manifest;
        let reps = self.exp.latency_reps;
        let (b1, bn) = self.timings(reps, &mut |labels| {
            let z = bundle.noise(labels.len(), 0, self.device);
            let _ = bundle.generate(labels, &z);
        });
        let params: i64 = manifest.students.iter().map(|s| s.params).sum::<i64>()
            / manifest.students.len().max(1) as i64;
        let row = json!({
            "key": key, "params_per_student": params, "students": manifest.students.len(),
            "latency_ms_b1": b1, "images_per_s_b": bn, "timing_reps": reps,
            "train_seconds": train_seconds, "bundle": bundle_path, "nfe": 1,
        });
        write_json_atomic(&dir.join("row.json"), &row)?;
        Ok(())
    }
}

/// Whether `dir/row.json` exists and was made with `key`.
fn row_done(dir: &Path, key: &Value) -> bool {
    read_json::<Value>(&dir.join("row.json")).is_ok_and(|r| &r["key"] == key)
        && dir.join("eval.json").exists()
}
