//! The one training loop every stage runs on. A [`Method`] says what one step does, which
//! tensors make up its state and what it exports at the end; the [`Runner`] owns everything
//! around it: reuse of a finished directory, resume from the latest checkpoint (refusing one made
//! with another config hash), the checkpoint cadence, `stats.jsonl`, non-finite checks, the stop
//! request ([`super::stop`]) and finishing (`train.json` + the method's final files).
//!
//! Layout of a stage directory: `checkpoints/step-N/<slot>.safetensors` + `state.json`,
//! `checkpoints/latest.json`, `stats.jsonl` with its picture `loss.png` (redrawn at each
//! checkpoint), and at the end the exported files and `train.json`.

use super::checkpoint::{self, CheckpointDir, CheckpointExtra, TrainState, FORMAT_VERSION};
use super::{stop, AdamW};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::nn::VarStore;

/// Summary written to `train.json` when a stage finishes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub train_seconds: f64,
    pub params: i64,
    pub seed: u64,
    pub config_hash: String,
}

/// One piece of checkpointed state, saved as `<name>.safetensors`.
pub enum Slot<'a> {
    /// The variables of a store (weights, EMA weights).
    Vars(&'a mut VarStore),
    /// An optimiser's moments and step count.
    Optim(&'a mut AdamW),
}

/// What one step reports to the runner.
#[derive(Clone, Debug, Default)]
pub struct StepReport {
    /// The step's loss: recorded in checkpoints and as the final loss.
    pub loss: f64,
    /// Further values that must be finite (gradient norms, partial losses), by name.
    pub checked: Vec<(&'static str, f64)>,
}

/// One line of `stats.jsonl`, as the method summarises its log window.
#[derive(Clone, Debug, Default)]
pub struct LogLine {
    /// The window's mean of the main loss.
    pub loss: f64,
    pub examples_per_s: f64,
    /// The fields of the line; the runner adds `stage` and `step`.
    pub record: serde_json::Map<String, serde_json::Value>,
}

/// A training method: the step and the state of one stage.
pub trait Method {
    /// What the stage produces (e.g. the EMA model), shown at checkpoints and returned at the end.
    type Output;

    /// Stage name in `stats.jsonl` ("teacher", "tsm", "dm", "adm", "cd", "classifier").
    fn stage(&self) -> &str;
    /// Names the job in errors, e.g. "student 2 (dm)".
    fn describe(&self) -> String {
        self.stage().to_string()
    }
    /// Total number of steps.
    fn total_steps(&self) -> u64;
    /// Called once before the first step of a fresh (not resumed) run, e.g. to start from the
    /// weights of an earlier stage.
    fn init_fresh(&mut self) -> Result<()> {
        Ok(())
    }
    /// Runs step `step` (0-based). Every random draw must come from generators seeded by
    /// `(seed, step, stream)` so that a resumed run replays an uninterrupted one.
    fn step(&mut self, step: u64) -> Result<StepReport>;
    /// Summarises the steps since the last log line (`secs` of wall time) and starts a new window.
    fn log_line(&mut self, secs: f64) -> LogLine;
    /// The state a checkpoint holds, by file name (without `.safetensors`).
    fn state(&mut self) -> Vec<(&'static str, Slot<'_>)>;
    /// The stage's product so far.
    fn output(&self) -> &Self::Output;
    /// Writes the final files into `dir`; returns the exported parameter count.
    fn export(&self, dir: &Path) -> Result<i64>;
}

/// Progress events (the library never prints).
pub enum Progress<'a, T> {
    /// Training starts (or resumes) at `step` of `total`.
    Start { step: u64, total: u64 },
    /// A logged step: the window's mean loss and throughput, and the whole stats line.
    Step {
        step: u64,
        loss: f64,
        examples_per_s: f64,
        record: &'a serde_json::Map<String, serde_json::Value>,
    },
    /// A checkpoint was written; `model` is the stage's product so far (e.g. for sample grids).
    Checkpoint { step: u64, model: &'a T },
    /// Training resumed from the checkpoint at `step` (sent right after `Start`); `model` is that
    /// checkpoint's product, so that what a kill interrupted after the checkpoint was written
    /// (e.g. its preview) can be redone.
    Resumed { step: u64, model: &'a T },
}

/// Runs a [`Method`] in a stage directory.
#[derive(Clone, Debug)]
pub struct Runner<'a> {
    pub dir: &'a Path,
    /// Hash of the stage's semantic config (and of what it starts from).
    pub hash: String,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// The exported file whose presence (with a matching `train.json`) marks a finished stage.
    pub model_file: &'static str,
}

impl<'a> Runner<'a> {
    /// A runner for `dir` whose finished stage exports `model.safetensors`.
    pub fn new(
        dir: &'a Path,
        hash: String,
        seed: u64,
        checkpoint_every: u64,
        log_every: u64,
    ) -> Self {
        Self {
            dir,
            hash,
            seed,
            checkpoint_every,
            log_every,
            model_file: "model.safetensors",
        }
    }

    /// The summary of a stage that already finished with this hash, if any.
    pub fn finished(&self) -> Result<Option<TrainSummary>> {
        match checkpoint::read_json::<TrainSummary>(&self.dir.join("train.json")) {
            Ok(s) if s.config_hash == self.hash && self.dir.join(self.model_file).exists() => {
                Ok(Some(s))
            }
            _ => Ok(None),
        }
    }

    fn save(
        &self,
        ckpts: &CheckpointDir,
        m: &mut impl Method,
        step: u64,
        loss: f64,
        secs: f64,
    ) -> Result<()> {
        let state = TrainState {
            format_version: FORMAT_VERSION,
            step,
            seed: self.seed,
            config_hash: self.hash.clone(),
            extra: CheckpointExtra {
                train_seconds: secs,
                loss,
            },
        };
        ckpts.save(&state, |d| {
            for (name, slot) in m.state() {
                let p = d.join(format!("{name}.safetensors"));
                match slot {
                    Slot::Vars(vs) => checkpoint::save_varstore(vs, &p)?,
                    Slot::Optim(o) => o.save(&p)?,
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Trains (or resumes) to the end and finishes the directory. On a stop request it writes a
    /// checkpoint at the current step and returns [`Error::Interrupted`].
    pub fn run<M: Method>(
        &self,
        m: &mut M,
        on: &mut dyn FnMut(Progress<M::Output>),
    ) -> Result<TrainSummary> {
        let dir = self.dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let ckpts = CheckpointDir::new(dir);
        let total = m.total_steps();
        let (mut start, mut secs_before, mut saved_at) = (0, 0.0, None);
        if let Some((cdir, state)) = ckpts.resume(&self.hash)? {
            // Weights are copied in place, so optimisers keep pointing at the right tensors.
            for (name, slot) in m.state() {
                let p = cdir.join(format!("{name}.safetensors"));
                match slot {
                    Slot::Vars(vs) => checkpoint::load_varstore(vs, &p)?,
                    Slot::Optim(o) => o.load(&p)?,
                }
            }
            start = state.step;
            secs_before = state.train_seconds();
            saved_at = Some(state.step);
        } else {
            m.init_fresh()?;
        }
        let mut stats = super::StatsLog::open(&dir.join("stats.jsonl"), start)?;
        let t0 = Instant::now();
        let mut window = Instant::now();
        let mut last_loss = f64::NAN;
        on(Progress::Start { step: start, total });
        if let Some(step) = saved_at {
            on(Progress::Resumed {
                step,
                model: m.output(),
            });
        }
        for it in start..total {
            if stop::stop_requested() {
                if saved_at != Some(it) {
                    let secs = secs_before + t0.elapsed().as_secs_f64();
                    self.save(&ckpts, m, it, last_loss, secs)?;
                }
                return Err(Error::Interrupted { step: it });
            }
            let r = m.step(it)?;
            let bad = std::iter::once(("loss", r.loss))
                .chain(r.checked.iter().copied())
                .find(|(_, v)| !v.is_finite());
            if let Some((what, _)) = bad {
                return Err(Error::NonFinite {
                    what: format!("{} {what}", m.describe()),
                    step: it,
                });
            }
            last_loss = r.loss;
            let done = it + 1;
            if done % self.log_every.max(1) == 0 || done == total {
                let mut line = m.log_line(window.elapsed().as_secs_f64().max(1e-9));
                line.record.insert("stage".into(), m.stage().into());
                line.record.insert("step".into(), done.into());
                stats.log(&serde_json::Value::Object(line.record.clone()))?;
                on(Progress::Step {
                    step: done,
                    loss: line.loss,
                    examples_per_s: line.examples_per_s,
                    record: &line.record,
                });
                window = Instant::now();
            }
            if done % self.checkpoint_every.max(1) == 0 || done == total {
                let secs = secs_before + t0.elapsed().as_secs_f64();
                self.save(&ckpts, m, done, r.loss, secs)?;
                saved_at = Some(done);
                self.draw_losses();
                on(Progress::Checkpoint {
                    step: done,
                    model: m.output(),
                });
            }
        }
        self.finish(&ckpts, m, total, last_loss)
    }

    /// Ends a stage: writes the method's files and `train.json` from the last checkpoint's
    /// state. `last_loss` is NaN when no step ran in this process (the checkpoint's value is used).
    fn finish<M: Method>(
        &self,
        ckpts: &CheckpointDir,
        m: &M,
        steps: u64,
        last_loss: f64,
    ) -> Result<TrainSummary> {
        let (_, state) = ckpts.latest()?.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no checkpoint after training",
                self.dir.display()
            ))
        })?;
        let final_loss = if last_loss.is_nan() {
            state.extra.loss
        } else {
            last_loss
        };
        let params = m.export(self.dir)?;
        let summary = TrainSummary {
            steps,
            final_loss,
            train_seconds: state.train_seconds(),
            params,
            seed: self.seed,
            config_hash: self.hash.clone(),
        };
        checkpoint::write_json_atomic(&self.dir.join("train.json"), &summary)?;
        self.draw_losses();
        Ok(summary)
    }

    /// Redraws `loss.png` (every loss of `stats.jsonl` against the step) in the stage folder.
    /// Best effort: the picture is a view of `stats.jsonl`, which holds the same numbers, so a
    /// failure to draw it never fails (or loses) training.
    fn draw_losses(&self) {
        let stats = self.dir.join("stats.jsonl");
        if stats.exists() {
            let _ = crate::viz::write_loss_curve(&stats, &self.dir.join("loss.png"));
        }
    }
}
