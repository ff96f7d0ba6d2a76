//! Runs the text experiment: evaluates the shared teacher once, and for every training seed
//! trains each planned run (`runs/<run>/s<seed>/`: a text run directory holding a copy of the
//! teacher, the captions of the teacher's caption seed, the run's prompt partition and its
//! students DM → ADM), assembles one bundle per stage and evaluates every row
//! (`evals/<id>/s<seed>/eval.json` and `prompts.png`); then writes the report
//! ([`super::report`]). Resumable at every level: a finished stage is reused and a killed one
//! resumes from its checkpoint (the pipeline's rules), an evaluation whose key (what made the
//! students, and the settings) matches is reused, and `report_only` trains and evaluates nothing.

use super::eval::{TextEvalRecord, TextEvalSettings, TextGenerator, TextScorer};
use super::report::{write_report, TextReport};
use super::{plan, TextExperimentConfig, TextRowPlan, TextRunPlan};
use crate::bundle::{Bundle, TeacherRef};
use crate::config::RunConfig;
use crate::eval::Classifier;
use crate::experiment::driver::{eval_dir, run_dir, Relay};
use crate::experiment::selection::Selection;
use crate::experiment::{Observer, Provenance, StageKind};
use crate::model::EdmModel;
use crate::nets::text_encoder::TextEncoder;
use crate::partition::Partition;
use crate::pipeline::DistillOptions;
use crate::run::{teacher_id, RunDir};
use crate::teacher::TrainSummary;
use crate::text::captioned::CaptionedSet;
use crate::text::pipeline::TextRun;
use crate::train::checkpoint::{config_hash, read_json, write_json_atomic};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Device;

/// What to run.
#[derive(Clone, Debug)]
pub struct TextExperimentOptions {
    /// The experiment config file (recorded in the report).
    pub config_path: PathBuf,
    pub exp: TextExperimentConfig,
    /// report.md, report.json, evals/ (small, meant to be committed) and runs/ (weights).
    pub out: PathBuf,
    /// Training seeds (default: the config's).
    pub seeds: Option<Vec<u64>>,
    /// Only these runs (or `teacher`); empty = all.
    pub only: Vec<String>,
    /// Train and evaluate nothing; only rewrite the report from what exists.
    pub report_only: bool,
    /// The text encoder's folder (default: the config's, else the cache's).
    pub encoder: Option<PathBuf>,
    pub device: Device,
    pub provenance: Provenance,
}

impl TextExperimentOptions {
    /// The seeds this call covers.
    pub fn seeds(&self) -> Vec<u64> {
        self.seeds.clone().unwrap_or_else(|| self.exp.seeds.clone())
    }
}

/// The run config of `r` at `seed` in the run directory `root`: the base config with the
/// run's students and partition, the seed, and the experiment's budgets.
pub fn run_config(
    exp: &TextExperimentConfig,
    base: &RunConfig,
    r: &TextRunPlan,
    seed: u64,
    root: &Path,
) -> Result<RunConfig> {
    let mut cfg = base.clone();
    cfg.seed = seed;
    cfg.data
        .rebase(exp.run.parent().unwrap_or(Path::new(".")), root)?;
    let d = &mut cfg.distill;
    d.students = r.students;
    d.partition = r.partition;
    if let Some(n) = exp.dm_iterations {
        d.iterations = n;
    }
    if let Some(n) = exp.adm_iterations {
        d.adm.iterations = n;
    }
    if let Some(b) = exp.batch_size {
        d.batch_size = b;
    }
    Ok(cfg)
}

/// The base run config with the experiment's budgets (for the report).
pub fn budgeted_base(exp: &TextExperimentConfig) -> Result<RunConfig> {
    let base = RunConfig::load(&exp.run)?;
    let r = TextRunPlan {
        name: String::new(),
        students: base.distill.students,
        partition: base.distill.partition,
    };
    run_config(
        exp,
        &base,
        &r,
        base.seed,
        exp.run.parent().unwrap_or(Path::new(".")),
    )
}

/// Whether `dir/eval.json` exists and was made with `key`.
fn eval_done(dir: &Path, key: &str) -> bool {
    read_json::<TextEvalRecord>(&dir.join("eval.json")).is_ok_and(|r| r.key == key)
}

/// Copies `src` to `dst` (through a temporary file of this process, so that two processes of
/// one experiment can copy at once) unless `dst` exists.
fn copy_once(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        return Ok(());
    }
    if let Some(d) = dst.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let tmp = dst.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::copy(src, &tmp).map_err(|e| Error::io(src, e))?;
    std::fs::rename(&tmp, dst).map_err(|e| Error::io(dst, e))
}

struct Ctx<'a> {
    o: &'a TextExperimentOptions,
    base: RunConfig,
    /// The teacher's caption seed.
    caption_seed: u64,
    /// Loaded on first use: the encoder, the shared captions (file), the scorer.
    encoder: Option<TextEncoder>,
    scorer: Option<TextScorer>,
}

/// Runs the experiment (the parts `only` selects) and writes the report.
pub fn run_text_experiment(
    o: &TextExperimentOptions,
    obs: &mut dyn Observer,
) -> Result<TextReport> {
    let exp = &o.exp;
    let plan = plan(exp);
    let seeds = o.seeds();
    let run_names: Vec<&str> = plan.runs.iter().map(|r| r.name.as_str()).collect();
    let selection = Selection::check(&seeds, &o.only, o.report_only, &run_names)?;
    let wanted = |name: &str| selection.wants(name);
    std::fs::create_dir_all(&o.out).map_err(|e| Error::io(&o.out, e))?;
    if !o.report_only {
        let teacher: TrainSummary = read_json(&exp.teacher.join("train.json"))?;
        let base = RunConfig::load(&exp.run)?;
        let spec = EdmModel::load_dir(&exp.teacher, Device::Cpu)?.spec;
        if spec != base.model {
            return Err(Error::config(
                "teacher",
                format!(
                    "{}: its network differs from the [model] of {}",
                    exp.teacher.display(),
                    exp.run.display()
                ),
            ));
        }
        let mut ctx = Ctx {
            o,
            base,
            caption_seed: teacher.seed,
            encoder: None,
            scorer: None,
        };
        if wanted("teacher") {
            ctx.teacher_row(obs)?;
        }
        for r in plan.runs.iter().filter(|r| wanted(&r.name)) {
            for &seed in &seeds {
                let t0 = Instant::now();
                let run = ctx.train(r, seed, obs)?;
                let rows: Vec<TextRowPlan> = plan
                    .rows
                    .iter()
                    .filter(|w| w.run.as_deref() == Some(r.name.as_str()))
                    .cloned()
                    .collect();
                for row in rows {
                    ctx.students_row(&row, &run, seed, obs)?;
                }
                obs.note(&format!(
                    "text experiment: {} seed {seed} done ({:.0} s in this process)",
                    r.name,
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
    }
    write_report(
        o,
        &plan,
        &selection.report_seeds(&seeds, &o.out.join("report.json")),
    )
}

impl Ctx<'_> {
    fn settings(&self) -> TextEvalSettings {
        let e = &self.o.exp;
        TextEvalSettings {
            prompts_per_digit: e.prompts_per_digit,
            prompt_seed: e.prompt_seed,
            samples_per_prompt: e.samples_per_prompt,
            eval_seed: e.eval_seed,
            groups: e.students,
            caption_seed: self.caption_seed,
        }
    }

    /// The shared caption-embedding cache (`runs/caption_embeddings.safetensors`), seeded
    /// from the teacher's run when it has one for the same captions.
    fn shared_cache(&self) -> PathBuf {
        self.o
            .out
            .join("runs")
            .join("caption_embeddings.safetensors")
    }

    fn encoder(&mut self) -> Result<TextEncoder> {
        match self.encoder.take() {
            Some(e) => Ok(e),
            None => {
                let dir = self.o.encoder.as_ref().or(self.o.exp.encoder.as_ref());
                crate::text::prompt::load_encoder(dir.map(PathBuf::as_path), Device::Cpu)
            }
        }
    }

    /// The scorer, made on first use (captions, held-out captions, real features).
    fn scorer(&mut self) -> Result<&TextScorer> {
        if self.scorer.is_none() {
            let exp = &self.o.exp;
            let (clf, _) = Classifier::load_dir(&exp.classifier, self.o.device)?;
            let mut data = self.base.data.clone();
            data.rebase(exp.run.parent().unwrap_or(Path::new(".")), Path::new("."))?;
            let images = data.open_images(Path::new("."))?;
            let cache = self.shared_cache();
            let from = exp
                .teacher
                .parent()
                .map(|p| p.join("prompts").join("caption_embeddings.safetensors"));
            if let Some(f) = from.filter(|f| f.exists()) {
                copy_once(&f, &cache)?;
            }
            let enc = self.encoder()?;
            let built =
                CaptionedSet::build(&images, &enc, &cache, self.caption_seed).and_then(|set| {
                    TextScorer::new(
                        clf,
                        &images,
                        &set,
                        &enc,
                        &self
                            .o
                            .out
                            .join("runs")
                            .join("heldout_caption_embeddings.safetensors"),
                        self.settings(),
                    )
                });
            self.encoder = Some(enc);
            self.scorer = Some(built?);
        }
        Ok(self.scorer.as_ref().expect("set above"))
    }

    /// Writes `rec` (with `key`) and the grid into `dir`.
    fn write_eval(
        &mut self,
        dir: &Path,
        g: &TextGenerator,
        key: String,
        train_seconds: Option<f64>,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let device = self.o.device;
        let grid = self.o.exp.grid_per_prompt;
        let mut e = self.scorer()?.evaluate(g, grid, device)?;
        e.record.key = key;
        e.record.train_seconds = train_seconds;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let img = crate::viz::class_grid(&e.grid, &e.grid_rows)?;
        crate::viz::save_png(&img, &dir.join("prompts.png"))?;
        write_json_atomic(&dir.join("eval.json"), &e.record)?;
        let all = &e.record.fd[0];
        obs.note(&format!(
            "  FD {} (n {}, floor {}), digit accuracy {}",
            all.fd.map_or("—".into(), |v| format!("{v:.3}")),
            all.n,
            all.floor.map_or("—".into(), |v| format!("{v:.3}")),
            e.record
                .summaries
                .first()
                .and_then(|s| s.digit_accuracy)
                .map_or("—".into(), |v| format!("{:.1}%", 100.0 * v))
        ));
        Ok(())
    }

    /// The teacher row (no training seed): its sampler and guidance from the run config.
    fn teacher_row(&mut self, obs: &mut dyn Observer) -> Result<()> {
        let exp = &self.o.exp;
        let dir = eval_dir(&self.o.out, "teacher", None);
        let s = self.base.sampler.clone();
        let key = config_hash(&(teacher_id(&exp.teacher), self.settings(), &s));
        if eval_done(&dir, &key) {
            return Ok(());
        }
        let teacher = EdmModel::load_dir(&exp.teacher, self.o.device)?;
        obs.note(&format!(
            "text experiment: evaluating the teacher ({} prompts × {} samples, Heun-{})",
            20 * exp.prompts_per_digit,
            exp.samples_per_prompt,
            s.steps
        ));
        let train: Option<TrainSummary> = read_json(&exp.teacher.join("train.json")).ok();
        self.write_eval(
            &dir,
            &TextGenerator::Teacher(&teacher, &s),
            key,
            train.map(|t| t.train_seconds),
            obs,
        )
    }

    /// Prepares the run directory of `r` at `seed` and trains its students DM → ADM.
    fn train(&mut self, r: &TextRunPlan, seed: u64, obs: &mut dyn Observer) -> Result<RunDir> {
        let exp = &self.o.exp;
        let run = RunDir::new(run_dir(&self.o.out, &r.name, seed));
        std::fs::create_dir_all(&run.root).map_err(|e| Error::io(&run.root, e))?;
        let cfg = run_config(exp, &self.base, r, seed, &run.root)?;
        cfg.save(&run.config_path())?;
        // The shared teacher, verbatim (its train.json last: it marks the copy complete).
        let td = run.teacher_dir();
        if !td.join("train.json").exists() {
            for f in ["model.json", "model.safetensors", "train.json"] {
                copy_once(&exp.teacher.join(f), &td.join(f))?;
            }
        }
        if teacher_id(&td) != teacher_id(&exp.teacher) {
            return Err(Error::config(
                "teacher",
                format!(
                    "{} is not the teacher {} holds a copy of; remove that run directory to \
                     train it again with this teacher",
                    exp.teacher.display(),
                    run.root.display()
                ),
            ));
        }
        // The captions' embeddings, computed once for every run.
        self.scorer()?;
        copy_once(
            &self.shared_cache(),
            &run.root
                .join("prompts")
                .join("caption_embeddings.safetensors"),
        )?;
        obs.note(&format!(
            "text experiment: {} seed {seed} — {} students, {} partition, DM {} + ADM {} \
             iterations × batch {}",
            r.name,
            r.students,
            crate::experiment::plan::partition_name(r.partition),
            cfg.distill.iterations,
            cfg.distill.adm.iterations,
            cfg.distill.batch_size
        ));
        let text = TextRun::new(&run.root, self.encoder()?).with_caption_seed(self.caption_seed);
        let done = text.distill(
            &DistillOptions {
                students: Vec::new(),
                stages: vec![StageKind::Dm, StageKind::Adm],
                device: self.o.device,
            },
            &mut Relay {
                obs,
                label: format!("{} s{seed}", r.name),
            },
        );
        self.encoder = Some(text.encoder);
        done?;
        Ok(run)
    }

    /// Bundles the students of `run` after `row`'s stage and evaluates them.
    fn students_row(
        &mut self,
        row: &TextRowPlan,
        run: &RunDir,
        seed: u64,
        obs: &mut dyn Observer,
    ) -> Result<()> {
        let stage = row.stage.unwrap_or(StageKind::Adm);
        let dir = eval_dir(&self.o.out, &row.eval_id(), Some(seed));
        let partition = Partition::load(&run.partition_path())?;
        let stages: &[StageKind] = match stage {
            StageKind::Dm => &[StageKind::Dm],
            _ => &[StageKind::Dm, StageKind::Adm],
        };
        let (mut hashes, mut train_seconds) = (Vec::new(), 0.0);
        for k in 0..partition.students {
            for s in stages {
                let t: TrainSummary = read_json(&run.student_dir(k, s.name()).join("train.json"))?;
                hashes.push(t.config_hash);
                train_seconds += t.train_seconds;
            }
        }
        let key = config_hash(&(&hashes, self.settings()));
        if eval_done(&dir, &key) {
            return Ok(());
        }
        let bundle_path = run.root.join(format!("bundle-{}.json", stage.name()));
        let dirs: Vec<PathBuf> = (0..partition.students)
            .map(|k| run.student_dir(k, stage.name()))
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
            "text experiment: evaluating {} seed {seed}",
            row.eval_id()
        ));
        let bundle = Bundle::load(&bundle_path, self.o.device)?;
        self.write_eval(
            &dir,
            &TextGenerator::Bundle(&bundle),
            key,
            Some(train_seconds),
            obs,
        )
    }
}
