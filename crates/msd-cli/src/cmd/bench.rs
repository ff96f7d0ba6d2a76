//! `msd bench`: times what the experiments spend their CPU on, each beside its PyTorch twin
//! (`scripts/bench_unet.py`, the identical network and steps) in the same run with the same
//! thread count, in f32 and bf16:
//!
//! - `student_one_step` at batch 1 and 64 (one network evaluation, no gradient);
//! - `train_step` at batch 64 (forward, EDM loss, backward, AdamW with clipping);
//! - `dm_iteration` at the distillation batch: one step of the DM training code
//!   ([`msd::distill::dm::DmMethod`], TTUR 1): a generator update whose VSD direction uses the
//!   guided teacher (the real score) and the fake score, and a fake-score update;
//! - `teacher_heun18_guided` at batch 250: Heun-18 (35 NFE) with classifier-free guidance, so
//!   500 samples pass through the network per evaluation (`teacher_heun{N}_guided` with
//!   `--teacher-steps N`: a shorter run of the same per-step work);
//! - `teacher_guided_forward` at batch 250 under glibc's default allocator and under
//!   [`msd::runtime::AllocatorPolicy::Reuse`] (the "before/after" rows; ours only, timed in a
//!   child process started with `MSD_ALLOCATOR=system`).
//!
//! bf16 means: inference with bf16 weights (f32 preconditioning and sampler); the train step with
//! a bf16 shadow of the trained network; the DM iteration with `distill.precision = "bf16"`
//! (bf16 copies of the teacher and the fake score); f32 master weights, optimiser state and
//! losses throughout (the twin uses CPU autocast). `--compile` adds the twin under
//! `torch.compile`. Parameter counts must agree. The twin runs with the
//! same allocator policy (`GLIBC_TUNABLES`), so the ratio compares the implementations.

use anyhow::{bail, Context, Result};
use msd::config::RunConfig;
use msd::diffusion::precond::broadcast_to;
use msd::diffusion::{sample, Denoiser, Guided, SamplerConfig};
use msd::distill::dm::{DmMethod, DmParts};
use msd::distill::DistillConfig;
use msd::model::EdmModel;
use msd::nets::{NetConfig, Precision};
use msd::runtime::{AllocatorPolicy, ALLOCATOR_ENV, TRIM_THRESHOLD};
use msd::teacher::per_sample_mean;
use msd::train::{AdamW, AdamWConfig, Method};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Run config: its `model.net` (a UNet) is timed, `distill.batch_size` sets the DM batch and
    /// `distill.real_guidance` the teacher's guidance.
    #[arg(long, default_value = "configs/mnist-distill.toml")]
    pub config: PathBuf,
    /// Timed repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Alternating rounds (ours, PyTorch, ours, ...); each figure is the best median over the
    /// rounds, which evens out load that changes during the run on a shared machine. The
    /// teacher rows are timed in the first round only.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Heun steps of the teacher row (18 = EDM's Heun-18, 35 NFE).
    #[arg(long, default_value_t = 18)]
    pub teacher_steps: usize,
    /// Batch of the teacher rows (before guidance doubles it).
    #[arg(long, default_value_t = 250)]
    pub teacher_batch: i64,
    /// Timed runs of the teacher sampling row (no warm-up: 35 NFE amortise it).
    #[arg(long, default_value_t = 1)]
    pub teacher_reps: usize,
    /// Skip the teacher sampling rows (the slow ones).
    #[arg(long)]
    pub no_teacher: bool,
    /// Time only the teacher sampling rows.
    #[arg(long, conflicts_with = "no_teacher")]
    pub only_teacher: bool,
    /// Precisions to time.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Precision::F32, Precision::Bf16])]
    pub precision: Vec<Precision>,
    /// Python with torch (default: $MSD_TORCH_PYTHON, set by scripts/with-torch.sh).
    #[arg(long)]
    pub python: Option<String>,
    /// Skip the PyTorch twin.
    #[arg(long)]
    pub no_peer: bool,
    /// Skip the allocator before/after rows.
    #[arg(long)]
    pub no_allocator: bool,
    /// Also time the twin under `torch.compile` (inductor) for these rows (comma-separated
    /// names; the warm-up runs include the compilation). The target stays eager PyTorch; the
    /// compiled figure says how far the limit is.
    #[arg(long, value_delimiter = ',')]
    pub compile: Vec<String>,
    /// Internal: time only the allocator row and print it as JSON (the child process).
    #[arg(long, hide = true)]
    pub allocator_child: bool,
    /// Where to write bench.json.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
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

/// A derived ratio between two rows.
#[derive(Debug, Serialize)]
pub struct Speedup {
    pub what: String,
    /// time(before) / time(after): above 1 means faster.
    pub factor: f64,
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`; `None` elsewhere).
fn load_average() -> Option<[f64; 3]> {
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

/// Inputs and networks of the timed rows.
struct Ctx {
    teacher: EdmModel,
    generator: EdmModel,
    shape: Vec<i64>,
    classes: i64,
    guidance: f64,
    dm_batch: i64,
    reps: usize,
}

fn opts() -> (Kind, Device) {
    (Kind::Float, Device::Cpu)
}

impl Ctx {
    fn noise(&self, b: i64) -> Tensor {
        let mut s = vec![b];
        s.extend(&self.shape);
        Tensor::randn(s.as_slice(), opts())
    }

    fn labels(&self, b: i64) -> Tensor {
        Tensor::arange(b, (Kind::Int64, Device::Cpu)).remainder(self.classes)
    }

    fn student_one_step(&self, b: i64, p: Precision) -> Result<f64> {
        let m = self.generator.copy_in(p)?;
        let (z, l) = (self.noise(b), self.labels(b));
        Ok(median_ms_warm(2, self.reps, || {
            let _ = tch::no_grad(|| m.generate(&z, &l, 80.0));
        }))
    }

    /// The teacher train step; in bf16 the forward/backward run on a bf16 shadow whose gradients
    /// are added to the f32 master before the step, then the shadow is re-synced.
    fn train_step(&self, b: i64, p: Precision) -> Result<f64> {
        let master = self.teacher.copy_in(Precision::F32)?;
        let mut shadow = (p != Precision::F32)
            .then(|| master.copy_in(p))
            .transpose()?;
        let mut opt = AdamW::new(&master.vs, AdamWConfig::default());
        let (x, l) = (self.noise(b), self.labels(b));
        let sd = master.spec.precond.sigma_data;
        let mut err = None;
        let ms = median_ms_warm(2, self.reps, || {
            let sigma = (Tensor::randn([b], opts()) * 1.2 - 1.2).exp();
            let noisy = &x + x.randn_like() * broadcast_to(&sigma, &x);
            let net = shadow.as_ref().unwrap_or(&master);
            let d = net.denoise_t(&noisy, &sigma, &l, true);
            let w = (sigma.square() + sd * sd) / (&sigma * sd).square();
            let loss = (w * per_sample_mean(&(d - &x).square())).mean(Kind::Float);
            opt.zero_grad();
            loss.backward();
            if let Some(s) = shadow.as_mut() {
                let r = EdmModel::take_grads_from(&master, s);
                opt.step();
                err = err.take().or(r.and_then(|_| s.sync_from(&master)).err());
            } else {
                opt.step();
            }
        });
        match err {
            Some(e) => Err(e.into()),
            None => Ok(ms),
        }
    }

    /// One DM iteration of the training code itself ([`DmMethod`] with TTUR 1: a generator
    /// update whose VSD direction uses the guided teacher and the fake score, then a fake-score
    /// update) in `distill.precision = p` (bf16: bf16 copies of the teacher and the fake score,
    /// f32 masters, optimiser state and losses).
    fn dm_iteration(&self, p: Precision) -> Result<f64> {
        let opt = AdamWConfig {
            lr: 2e-4,
            beta1: 0.0,
            beta2: 0.99,
            ..Default::default()
        };
        let cfg = DistillConfig {
            batch_size: self.dm_batch as usize,
            ttur: 1,
            regression_weight: 0.0,
            real_guidance: self.guidance,
            generator_optimizer: opt.clone(),
            fake_optimizer: opt,
            precision: p,
            ..Default::default()
        };
        let mut m = DmMethod::new(DmParts {
            cfg: &cfg,
            student: 0,
            classes: (0..self.classes).collect(),
            seed: 0,
            teacher: &self.teacher,
            pairs: None,
            generator: self.generator.copy_in(Precision::F32)?,
            adm: None,
            conditions: None,
        })?;
        let (mut it, mut err) = (0, None);
        let ms = median_ms_warm(2, self.reps, || {
            if let Err(e) = m.step(it) {
                err.get_or_insert(e);
            }
            it += 1;
        });
        match err {
            Some(e) => Err(e.into()),
            None => Ok(ms),
        }
    }

    fn guided_teacher(&self, p: Precision) -> Result<EdmModel> {
        Ok(self.teacher.copy_in(p)?)
    }

    fn teacher_heun(&self, b: i64, steps: usize, reps: usize, p: Precision) -> Result<f64> {
        let t = self.guided_teacher(p)?;
        let cfg = SamplerConfig {
            steps,
            guidance: self.guidance,
            ..Default::default()
        };
        let (z, l) = (self.noise(b), self.labels(b));
        let mut err = None;
        // The sampler applies cfg.guidance itself (two network rows per sample).
        let ms = median_ms_warm(0, reps, || {
            if let Err(e) = sample(&t, &z, &l, &cfg) {
                err = Some(e);
            }
        });
        match err {
            Some(e) => Err(e.into()),
            None => Ok(ms),
        }
    }

    fn teacher_forward(&self, b: i64, p: Precision) -> Result<f64> {
        let t = self.guided_teacher(p)?;
        let g = Guided {
            inner: &t as &dyn Denoiser,
            scale: self.guidance,
            null_label: self.classes,
        };
        let (x, l) = (self.noise(b) * 10.0, self.labels(b));
        let s = Tensor::full([b], 10.0, opts());
        Ok(median_ms_warm(1, self.reps.clamp(1, 3), || {
            let _ = tch::no_grad(|| g.denoise(&x, &s, &l));
        }))
    }
}

/// What one side times: (name, batch, precision).
type Key = (String, i64, Precision);

fn row_keys(a: &Args, dm_batch: i64) -> Vec<Key> {
    let mut keys = Vec::new();
    if a.only_teacher {
        return keys;
    }
    for &p in &a.precision {
        keys.push(("student_one_step".into(), 1, p));
        keys.push(("student_one_step".into(), 64, p));
        keys.push(("train_step".into(), 64, p));
        keys.push(("dm_iteration".into(), dm_batch, p));
    }
    keys
}

fn teacher_keys(a: &Args) -> Vec<Key> {
    if a.no_teacher {
        return Vec::new();
    }
    a.precision
        .iter()
        .map(|&p| {
            let name = format!("teacher_heun{}_guided", a.teacher_steps);
            (name, a.teacher_batch, p)
        })
        .collect()
}

fn time_ours(ctx: &Ctx, a: &Args, key: &Key) -> Result<f64> {
    let (name, b, p) = (key.0.as_str(), key.1, key.2);
    match name {
        "student_one_step" => ctx.student_one_step(b, p),
        "train_step" => ctx.train_step(b, p),
        "dm_iteration" => ctx.dm_iteration(p),
        n if n.starts_with("teacher_heun") => {
            ctx.teacher_heun(b, a.teacher_steps, a.teacher_reps, p)
        }
        "teacher_guided_forward" => ctx.teacher_forward(b, p),
        _ => bail!("unknown bench row {name}"),
    }
}

#[derive(Deserialize)]
struct PeerRow {
    name: String,
    batch: i64,
    precision: Precision,
    ms: f64,
    #[serde(default)]
    compiled_ms: Option<f64>,
}

#[derive(Deserialize)]
struct PeerOut {
    params: i64,
    torch: String,
    rows: Vec<PeerRow>,
}

#[derive(Serialize)]
struct PeerKey<'a> {
    name: &'a str,
    batch: i64,
    precision: Precision,
}

/// Runs `scripts/bench_unet.py` once for `keys` and parses its JSON.
fn run_peer(py: &str, cfg: &RunConfig, a: &Args, keys: &[Key], threads: i32) -> Result<PeerOut> {
    let NetConfig::Unet(unet) = &cfg.model.net else {
        bail!("the PyTorch twin mirrors the UNet only");
    };
    let rows: Vec<PeerKey> = keys
        .iter()
        .map(|k| PeerKey {
            name: &k.0,
            batch: k.1,
            precision: k.2,
        })
        .collect();
    let out = std::process::Command::new(py)
        .arg("scripts/bench_unet.py")
        .arg("--config")
        .arg(serde_json::to_string(unet)?)
        .args(["--sigma-data", &cfg.model.precond.sigma_data.to_string()])
        .arg("--rows")
        .arg(serde_json::to_string(&rows)?)
        .args(["--reps", &a.reps.to_string()])
        .args(["--teacher-reps", &a.teacher_reps.to_string()])
        .args(["--teacher-steps", &a.teacher_steps.to_string()])
        .args(["--guidance", &cfg.distill.real_guidance.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--compile", &a.compile.join(",")])
        // The same allocator policy as ours, so the ratio compares the implementations.
        .env(
            "GLIBC_TUNABLES",
            format!("glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"),
        )
        .output()
        .with_context(|| format!("running {py} scripts/bench_unet.py"))?;
    if !out.status.success() {
        bail!(
            "scripts/bench_unet.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the output of scripts/bench_unet.py")
}

/// Times the allocator row in a child process under glibc's default policy.
fn allocator_child(a: &Args, threads: i32) -> Result<Vec<(Precision, f64)>> {
    let exe = std::env::current_exe().context("locating the msd binary")?;
    let out = std::process::Command::new(exe)
        .args([
            "--threads",
            &threads.to_string(),
            "bench",
            "--allocator-child",
        ])
        .arg("--config")
        .arg(&a.config)
        .args(["--reps", &a.reps.to_string()])
        .args(["--teacher-batch", &a.teacher_batch.to_string()])
        .arg("--precision")
        .arg(
            a.precision
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env(ALLOCATOR_ENV, "system")
        .output()
        .context("running the allocator child")?;
    if !out.status.success() {
        bail!(
            "allocator child failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the allocator child's output")
}

fn keep_min(best: &mut Vec<(Key, f64)>, key: &Key, v: f64) {
    match best.iter_mut().find(|(k, _)| k == key) {
        Some((_, b)) => *b = b.min(v),
        None => best.push((key.clone(), v)),
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = RunConfig::load(&a.config)?;
    if !matches!(cfg.model.net, NetConfig::Unet(_)) {
        bail!(
            "{}: msd bench times a UNet; this config has another network",
            a.config.display()
        );
    }
    let threads = tch::get_num_threads();
    let load_start = load_average();
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
    let ctx = Ctx {
        shape: cfg.model.net.sample_shape(),
        classes: teacher.num_classes(),
        teacher,
        generator,
        guidance: cfg.distill.real_guidance,
        dm_batch: cfg.distill.batch_size as i64,
        reps: a.reps,
    };
    if a.allocator_child {
        let mut rows = Vec::new();
        for &p in &a.precision {
            rows.push((p, ctx.teacher_forward(a.teacher_batch, p)?));
        }
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    let policy = AllocatorPolicy::from_env();
    let py = a
        .python
        .clone()
        .or_else(|| std::env::var("MSD_TORCH_PYTHON").ok())
        .unwrap_or_else(|| "python3".into());
    let keys = row_keys(&a, ctx.dm_batch);
    let tkeys = teacher_keys(&a);
    let mut ours: Vec<(Key, f64)> = Vec::new();
    let mut peer: Vec<(Key, f64)> = Vec::new();
    let mut compiled: Vec<(Key, f64)> = Vec::new();
    let (mut torch_version, mut peer_params) = (None, None);
    let mut alloc_rows = Vec::new();
    for round in 0..a.rounds.max(1) {
        let mut these = keys.clone();
        if round == 0 {
            these.extend(tkeys.iter().cloned());
        }
        for k in &these {
            let v = time_ours(&ctx, &a, k)?;
            keep_min(&mut ours, k, v);
        }
        if !a.no_peer {
            let out = run_peer(&py, &cfg, &a, &these, threads)?;
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
        if round == 0 && !a.no_allocator {
            // Before (child, glibc defaults) and after (this process), alternating.
            for (p, ms) in allocator_child(&a, threads)? {
                alloc_rows.push((
                    ("teacher_guided_forward".to_string(), a.teacher_batch, p),
                    "system",
                    ms,
                ));
            }
            for &p in &a.precision {
                let ms = ctx.teacher_forward(a.teacher_batch, p)?;
                alloc_rows.push((
                    ("teacher_guided_forward".to_string(), a.teacher_batch, p),
                    policy.name(),
                    ms,
                ));
            }
        }
    }
    let params = ctx.teacher.num_params();
    if let Some(pp) = peer_params {
        if pp != params {
            bail!("parameter counts differ: ours {params} vs PyTorch {pp}");
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
    let report = BenchReport {
        config: a.config.clone(),
        hardware: crate::cmd::eval::hardware(),
        threads,
        reps: a.reps,
        rounds: a.rounds.max(1),
        teacher_steps: a.teacher_steps,
        guidance: ctx.guidance,
        params,
        pytorch: torch_version,
        load_average_start: load_start,
        load_average_end: load_average(),
        rows,
        speedups,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    msd::train::checkpoint::write_json_atomic(&a.out.join("bench.json"), &report)?;
    println!(
        "UNet {} parameters, {threads} threads, {}; best of {} alternating rounds of median-of-{} (teacher rows: first round, {} run(s), Heun-{} guidance {})",
        params, report.hardware, report.rounds, a.reps, a.teacher_reps, a.teacher_steps, ctx.guidance
    );
    if let (Some(s), Some(e)) = (report.load_average_start, report.load_average_end) {
        println!(
            "load average (1/5/15 min): {:.2} {:.2} {:.2} at the start, {:.2} {:.2} {:.2} at the end",
            s[0], s[1], s[2], e[0], e[1], e[2]
        );
    }
    println!(
        "{:<24} {:>6} {:>5} {:>7} {:>11} {:>11} {:>7} {:>13}",
        "row", "batch", "prec", "alloc", "msd (ms)", "torch (ms)", "ratio", "compiled (ms)"
    );
    let opt = |v: Option<f64>, w: usize, d: usize| match v {
        Some(v) => format!("{v:>w$.d$}"),
        None => format!("{:>w$}", "—"),
    };
    for r in &report.rows {
        println!(
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
    for s in &report.speedups {
        println!("{:<60} {:>6.2}×", s.what, s.factor);
    }
    println!("report: {}", a.out.join("bench.json").display());
    Ok(())
}
