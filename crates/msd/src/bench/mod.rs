//! `msd bench`'s measurements: times what the experiments spend their CPU on, each beside its
//! PyTorch twin (`scripts/bench_unet.py`, the identical network and steps) in the same run with
//! the same thread count, in f32 and bf16:
//!
//! - `student_one_step` at batch 1 and 64 (one network evaluation, no gradient);
//! - `train_step` at batch 64 (forward, EDM loss, backward, AdamW with clipping);
//! - `dm_iteration` at the distillation batch: one step of the DM training code
//!   ([`crate::distill::dm::DmMethod`], TTUR 1): a generator update whose VSD direction uses the
//!   guided teacher (the real score) and the fake score, and a fake-score update;
//! - `teacher_heun18_guided` at batch 250: Heun-18 (35 NFE) with classifier-free guidance, so
//!   500 samples pass through the network per evaluation (`teacher_heun{N}_guided` with
//!   `teacher_steps = N`: a shorter run of the same per-step work);
//! - `teacher_guided_forward` at batch 250 under glibc's default allocator and under
//!   [`crate::runtime::AllocatorPolicy::Reuse`] (the "before/after" rows; ours only, timed in a
//!   child process started with `MSD_ALLOCATOR=system`).
//!
//! bf16 means: inference with bf16 weights (f32 preconditioning and sampler); the train step with
//! a bf16 shadow of the trained network; the DM iteration with `distill.precision = "bf16"`
//! (bf16 copies of the teacher and the fake score); f32 master weights, optimiser state and
//! losses throughout (the twin uses CPU autocast). `compile` adds the twin under
//! `torch.compile`. Parameter counts must agree. The twin runs with the same allocator policy
//! (`GLIBC_TUNABLES`), so the ratio compares the implementations.
//!
//! [`run`] returns a typed [`BenchReport`]; the caller writes and prints it.

mod peer;
mod rows;

use crate::config::RunConfig;
use crate::model::EdmModel;
use crate::nets::{NetConfig, Precision};
use crate::runtime::AllocatorPolicy;
use rows::Ctx;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::Device;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Msd(#[from] crate::Error),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The twin or the allocator child failed or answered something unexpected.
    #[error("{command}: {msg}")]
    Command { command: String, msg: String },
    #[error("{0}")]
    Invalid(String),
}

/// What to time, and how often (the `msd bench` flags).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The run config's path (recorded in the report).
    pub config: PathBuf,
    /// Timed repetitions per measurement (the median is reported).
    pub reps: usize,
    /// Alternating rounds (ours, PyTorch, ours, ...); each figure is the best median over the
    /// rounds. The teacher rows are timed in the first round only.
    pub rounds: usize,
    /// Heun steps of the teacher row.
    pub teacher_steps: usize,
    /// Batch of the teacher rows (before guidance doubles it).
    pub teacher_batch: i64,
    /// Timed runs of the teacher sampling row.
    pub teacher_reps: usize,
    /// Skip the teacher sampling rows.
    pub no_teacher: bool,
    /// Time only the teacher sampling rows.
    pub only_teacher: bool,
    pub precision: Vec<Precision>,
    /// Python with torch, for the twin.
    pub python: String,
    /// Skip the PyTorch twin.
    pub no_peer: bool,
    /// Rows also timed under `torch.compile` by the twin.
    pub compile: Vec<String>,
    /// Time only these non-teacher rows (by name: `student_one_step`, `train_step`,
    /// `dm_iteration`); empty = all.
    pub rows: Vec<String>,
}

/// One measurement: ours beside the twin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRow {
    pub name: String,
    pub batch: i64,
    pub precision: Precision,
    /// The C allocator policy of our process (`reuse` or `system`).
    pub allocator: String,
    pub ours_ms: f64,
    /// The PyTorch twin's time; `None` where there is no twin.
    pub pytorch_ms: Option<f64>,
    /// The twin under `torch.compile` (`--compile`); `None` where not timed or not supported.
    #[serde(default)]
    pub pytorch_compiled_ms: Option<f64>,
    /// ours / PyTorch.
    pub ratio: Option<f64>,
}

/// `bench.json`.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub config: PathBuf,
    pub hardware: String,
    pub threads: i32,
    pub reps: usize,
    pub rounds: usize,
    pub teacher_steps: usize,
    pub guidance: f64,
    pub params: i64,
    pub pytorch: Option<String>,
    /// 1-, 5- and 15-minute load averages of the machine when the run started and ended: the
    /// machine may be shared, and other work slows both sides.
    pub load_average_start: Option<[f64; 3]>,
    pub load_average_end: Option<[f64; 3]>,
    pub rows: Vec<BenchRow>,
    /// Ratios derived from the rows: bf16 over f32 (ours and twin) and reuse over system.
    pub speedups: Vec<Speedup>,
}

impl BenchReport {
    /// The report as the text table `msd bench` prints (`teacher_reps`: runs of the teacher
    /// sampling row).
    pub fn text(&self, teacher_reps: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "UNet {} parameters, {} threads, {}; best of {} alternating rounds of median-of-{} (teacher rows: first round, {} run(s), Heun-{} guidance {})",
            self.params, self.threads, self.hardware, self.rounds, self.reps, teacher_reps, self.teacher_steps, self.guidance
        );
        if let (Some(a), Some(e)) = (self.load_average_start, self.load_average_end) {
            let _ = writeln!(
                s,
                "load average (1/5/15 min): {:.2} {:.2} {:.2} at the start, {:.2} {:.2} {:.2} at the end",
                a[0], a[1], a[2], e[0], e[1], e[2]
            );
        }
        let _ = writeln!(
            s,
            "{:<24} {:>6} {:>5} {:>7} {:>11} {:>11} {:>7} {:>13}",
            "row", "batch", "prec", "alloc", "msd (ms)", "torch (ms)", "ratio", "compiled (ms)"
        );
        let opt = |v: Option<f64>, w: usize, d: usize| match v {
            Some(v) => format!("{v:>w$.d$}"),
            None => format!("{:>w$}", "—"),
        };
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<24} {:>6} {:>5} {:>7} {:>11.1} {} {} {}",
                r.name,
                r.batch,
                r.precision.name(),
                r.allocator,
                r.ours_ms,
                opt(r.pytorch_ms, 11, 1),
                opt(r.ratio, 7, 2),
                opt(r.pytorch_compiled_ms, 13, 1)
            );
        }
        for x in &self.speedups {
            let _ = writeln!(s, "{:<60} {:>6.2}×", x.what, x.factor);
        }
        s
    }
}

/// A derived ratio between two rows.
#[derive(Debug, Serialize)]
pub struct Speedup {
    pub what: String,
    /// time(before) / time(after): above 1 means faster.
    pub factor: f64,
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`; `None` elsewhere).
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some([*v.first()?, *v.get(1)?, *v.get(2)?])
}

/// Median wall time in milliseconds of `reps` runs of `f` after `warm` warm-up runs.
pub fn median_ms_warm(warm: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// What one side times: (name, batch, precision).
type Key = (String, i64, Precision);

fn row_keys(o: &BenchOptions, dm_batch: i64) -> Vec<Key> {
    let mut keys = Vec::new();
    if o.only_teacher {
        return keys;
    }
    for &p in &o.precision {
        keys.push(("student_one_step".into(), 1, p));
        keys.push(("student_one_step".into(), 64, p));
        keys.push(("train_step".into(), 64, p));
        keys.push(("dm_iteration".into(), dm_batch, p));
    }
    keys.retain(|k| o.rows.is_empty() || o.rows.contains(&k.0));
    keys
}

fn teacher_keys(o: &BenchOptions) -> Vec<Key> {
    if o.no_teacher {
        return Vec::new();
    }
    o.precision
        .iter()
        .map(|&p| {
            let name = format!("teacher_heun{}_guided", o.teacher_steps);
            (name, o.teacher_batch, p)
        })
        .collect()
}

fn keep_min(best: &mut Vec<(Key, f64)>, key: &Key, v: f64) {
    match best.iter_mut().find(|(k, _)| k == key) {
        Some((_, b)) => *b = b.min(v),
        None => best.push((key.clone(), v)),
    }
}

/// Builds the timed networks of `cfg` (a UNet) from seed 0, with a non-trivial output layer.
fn context(cfg: &RunConfig, reps: usize) -> Result<Ctx, BenchError> {
    if !matches!(cfg.model.net, NetConfig::Unet(_)) {
        return Err(BenchError::Invalid(
            "msd bench times a UNet; this config has another network".into(),
        ));
    }
    tch::manual_seed(0);
    let teacher = EdmModel::from_spec(&cfg.model, Device::Cpu);
    let generator = EdmModel::from_spec(&cfg.model, Device::Cpu);
    // Fresh UNets output F = 0 (zero-initialised last layer); give them a non-trivial output.
    tch::no_grad(|| {
        for m in [&teacher, &generator] {
            for (n, mut v) in m.vs.variables() {
                if n.starts_with("conv_out") {
                    v.copy_(&(v.randn_like() * 0.02));
                }
            }
        }
    });
    Ok(Ctx {
        shape: cfg.model.net.sample_shape(),
        classes: teacher.num_classes(),
        teacher,
        generator,
        guidance: cfg.distill.real_guidance,
        dm_batch: cfg.distill.batch_size as i64,
        reps,
    })
}

/// The allocator-child side: the guided teacher forward at `teacher_batch` per precision, under
/// this process's allocator policy.
pub fn allocator_rows(
    cfg: &RunConfig,
    o: &BenchOptions,
) -> Result<Vec<(Precision, f64)>, BenchError> {
    let ctx = context(cfg, o.reps)?;
    o.precision
        .iter()
        .map(|&p| Ok((p, ctx.teacher_forward(o.teacher_batch, p)?)))
        .collect()
}

/// Times every row of `o` for `cfg` with the current torch threads. `allocator_child` (this
/// program started in its allocator-child mode, answering [`allocator_rows`] as JSON) gives
/// the allocator "before" rows; `None` skips them.
pub fn run(
    cfg: &RunConfig,
    o: &BenchOptions,
    mut allocator_child: Option<Command>,
) -> Result<BenchReport, BenchError> {
    let threads = tch::get_num_threads();
    let load_start = load_average();
    let ctx = context(cfg, o.reps)?;
    let policy = AllocatorPolicy::from_env();
    let keys = row_keys(o, ctx.dm_batch);
    let tkeys = teacher_keys(o);
    let mut ours: Vec<(Key, f64)> = Vec::new();
    let mut peer: Vec<(Key, f64)> = Vec::new();
    let mut compiled: Vec<(Key, f64)> = Vec::new();
    let (mut torch_version, mut peer_params) = (None, None);
    let mut alloc_rows = Vec::new();
    for round in 0..o.rounds.max(1) {
        let mut these = keys.clone();
        if round == 0 {
            these.extend(tkeys.iter().cloned());
        }
        for k in &these {
            let v = ctx.time(k, o.teacher_steps, o.teacher_reps)?;
            keep_min(&mut ours, k, v);
        }
        if !o.no_peer {
            let out = peer::run_peer(cfg, o, &these, threads)?;
            for r in out.rows {
                let key = (r.name, r.batch, r.precision);
                if let Some(c) = r.compiled_ms {
                    keep_min(&mut compiled, &key, c);
                }
                keep_min(&mut peer, &key, r.ms);
            }
            torch_version = Some(out.torch);
            peer_params = Some(out.params);
        }
        if let Some(child) = allocator_child.take() {
            // Before (child, glibc defaults) and after (this process), alternating.
            for (p, ms) in peer::allocator_child(child)? {
                alloc_rows.push((
                    ("teacher_guided_forward".to_string(), o.teacher_batch, p),
                    "system",
                    ms,
                ));
            }
            for &p in &o.precision {
                let ms = ctx.teacher_forward(o.teacher_batch, p)?;
                alloc_rows.push((
                    ("teacher_guided_forward".to_string(), o.teacher_batch, p),
                    policy.name(),
                    ms,
                ));
            }
        }
    }
    let params = ctx.teacher.num_params();
    if let Some(pp) = peer_params {
        if pp != params {
            return Err(BenchError::Invalid(format!(
                "parameter counts differ: ours {params} vs PyTorch {pp}"
            )));
        }
    }
    let mut rows: Vec<BenchRow> = ours
        .iter()
        .map(|(k, o)| {
            let p = peer.iter().find(|(pk, _)| pk == k).map(|(_, v)| *v);
            let c = compiled.iter().find(|(pk, _)| pk == k).map(|(_, v)| *v);
            BenchRow {
                name: k.0.clone(),
                batch: k.1,
                precision: k.2,
                allocator: policy.name().into(),
                ours_ms: *o,
                pytorch_ms: p,
                pytorch_compiled_ms: c,
                ratio: p.map(|p| o / p),
            }
        })
        .collect();
    rows.extend(alloc_rows.iter().map(|(k, alloc, ms)| BenchRow {
        name: k.0.clone(),
        batch: k.1,
        precision: k.2,
        allocator: alloc.to_string(),
        ours_ms: *ms,
        pytorch_ms: None,
        pytorch_compiled_ms: None,
        ratio: None,
    }));
    let speedups = speedups(&rows);
    Ok(BenchReport {
        config: o.config.clone(),
        hardware: crate::evaluate::hardware(),
        threads,
        reps: o.reps,
        rounds: o.rounds.max(1),
        teacher_steps: o.teacher_steps,
        guidance: ctx.guidance,
        params,
        pytorch: torch_version,
        load_average_start: load_start,
        load_average_end: load_average(),
        rows,
        speedups,
    })
}

/// bf16 over f32 (ours, and the twin's) and glibc defaults over reuse, for every pair of rows
/// that has both sides.
pub fn speedups(rows: &[BenchRow]) -> Vec<Speedup> {
    let find = |name: &str, b: i64, p: Precision, alloc: &str| {
        rows.iter()
            .find(|r| r.name == name && r.batch == b && r.precision == p && r.allocator == alloc)
    };
    let mut speedups = Vec::new();
    for r in rows.iter().filter(|r| r.precision == Precision::F32) {
        if let Some(lo) = find(&r.name, r.batch, Precision::Bf16, &r.allocator) {
            speedups.push(Speedup {
                what: format!("{} b{} [{}]: ours f32/bf16", r.name, r.batch, r.allocator),
                factor: r.ours_ms / lo.ours_ms,
            });
            if let (Some(p32), Some(p16)) = (r.pytorch_ms, lo.pytorch_ms) {
                speedups.push(Speedup {
                    what: format!("{} b{}: PyTorch f32/bf16", r.name, r.batch),
                    factor: p32 / p16,
                });
            }
        }
    }
    for r in rows.iter().filter(|r| r.allocator == "system") {
        if let Some(after) = find(&r.name, r.batch, r.precision, "reuse") {
            speedups.push(Speedup {
                what: format!(
                    "{} b{} {}: allocator system/reuse",
                    r.name, r.batch, r.precision
                ),
                factor: r.ours_ms / after.ours_ms,
            });
        }
    }
    speedups
}
