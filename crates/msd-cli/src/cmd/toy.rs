//! `msd toy`: flags and pictures over `msd::experiment::toy` (the paper's Fig. 4 on the 2-D toy,
//! swept over student widths, numbers of students and training seeds). With `--jobs N` the
//! (width, seed) groups run as N parallel single-thread worker processes (libtorch's generator
//! is process-global, so threads would not be reproducible); the report is written once all
//! are done. Writes `toy_report.json`, `toy_report.md` and `toy.png`.

use crate::{plot, progress};
use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use msd::config::RunConfig;
use msd::data::toy2d::BOX;
use msd::experiment::toy::{
    points, quick_config, ToyContext, ToyMethod, ToyOptions, ToyOutcome, TOY_CONFIG,
};
use msd::experiment::Provenance;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::{Device, Tensor};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Method {
    /// Distribution matching.
    Dm,
    /// Consistency distillation.
    Cd,
}

#[derive(clap::Args)]
pub struct Args {
    /// Output directory (reused: finished pieces are not recomputed).
    #[arg(long)]
    pub out: PathBuf,
    /// The config's seed (teacher, pairs, evaluation noise) instead of its own.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Training seeds of the students (every figure is mean ± std over them).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seeds: Vec<u64>,
    /// Student widths (default: the teacher's); narrower students start from TSM.
    #[arg(long, value_delimiter = ',')]
    pub widths: Vec<i64>,
    /// Numbers of students to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub students: Vec<usize>,
    /// The per-student distillation method.
    #[arg(long, value_enum, default_value = "dm")]
    pub method: Method,
    /// Samples per class of every histogram (default 10000; 2000 with --quick).
    #[arg(long)]
    pub samples: Option<usize>,
    /// Parallel single-thread worker processes, one per (width, seed) group.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// A tiny budget (≤ 2 minutes) for smoke tests; the numbers are not meaningful.
    #[arg(long)]
    pub quick: bool,
    /// Another config instead of the embedded configs/toy.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Internal: train and evaluate the given cells only, write no report.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Pilot runs: train and evaluate only student K of every cell (no report).
    #[arg(long, hide = true)]
    pub pilot_student: Option<usize>,
}

/// The current commit (short), or `unknown` outside a git checkout.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(a: Args) -> Result<()> {
    let wall = Instant::now();
    let (text, origin) = match &a.config {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("--config {}", p.display()))?,
            p.clone(),
        ),
        None => (
            TOY_CONFIG.to_string(),
            PathBuf::from("configs/toy.toml (embedded)"),
        ),
    };
    let mut cfg = RunConfig::from_toml(&text, &origin)?;
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let mut n_eval = 10_000;
    if a.quick {
        n_eval = quick_config(&mut cfg);
    }
    if a.jobs == 0 {
        bail!("--jobs must be ≥ 1");
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let opts = ToyOptions {
        config: cfg,
        out: a.out.clone(),
        seeds: a.seeds.clone(),
        widths: a.widths.clone(),
        students: a.students.clone(),
        method: match a.method {
            Method::Dm => ToyMethod::Dm,
            Method::Cd => ToyMethod::Cd,
        },
        samples_per_class: a.samples.unwrap_or(n_eval),
        report: !a.worker,
        quick: a.quick,
        provenance: Provenance {
            command,
            commit: git_commit(),
            hardware: crate::cmd::eval::hardware(),
        },
        device: Device::Cpu,
        pilot_student: a.pilot_student,
    };
    let mut obs = progress::Console::default();
    let ctx = ToyContext::prepare(opts, &mut obs)?;
    let o = ctx.options();
    let widths = o.widths()?;
    if a.pilot_student.is_some() {
        ctx.cells(&widths, &o.seeds, &mut obs)?;
        return Ok(());
    }
    if a.worker || a.jobs == 1 {
        ctx.cells(&widths, &o.seeds, &mut obs)?;
    } else {
        workers(&a, &widths, &o.seeds)?;
    }
    if a.worker {
        return Ok(());
    }
    let outcome = ctx.report(wall, &mut obs)?;
    write_figure(&a.out.join("toy.png"), &outcome)?;
    for c in &outcome.report.claims {
        println!(
            "{}: {} ({:+.1}%) → {}",
            c.claim,
            c.ours,
            100.0 * c.relative_change,
            c.verdict.as_str()
        );
    }
    println!(
        "noise floor (teacher vs teacher) {:.4}; teacher to data {:.4}",
        outcome.report.noise_floor_l1, outcome.report.teacher.l1_to_data
    );
    println!("report: {}", a.out.join("toy_report.json").display());
    println!("figure: {}", a.out.join("toy.png").display());
    Ok(())
}

/// Runs one worker process per (width, seed) group, `--jobs` at a time; their output goes to
/// `OUT/logs/`.
fn workers(a: &Args, widths: &[i64], seeds: &[u64]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the msd binary for --jobs")?;
    let logs = a.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let mut queue: Vec<(i64, u64)> = widths
        .iter()
        .flat_map(|&w| seeds.iter().map(move |&s| (w, s)))
        .collect();
    queue.reverse();
    let mut running: Vec<((i64, u64), std::process::Child, PathBuf)> = Vec::new();
    let mut failed = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < a.jobs {
            let Some((w, s)) = queue.pop() else { break };
            let log = logs.join(format!("w{w}-s{s}.log"));
            let file = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let mut c = Command::new(&exe);
            c.args(["--threads", "1", "toy", "--worker", "--out"])
                .arg(&a.out)
                .args(["--seeds", &s.to_string(), "--widths", &w.to_string()])
                .arg("--students")
                .arg(
                    a.students
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .args([
                    "--method",
                    match a.method {
                        Method::Dm => "dm",
                        Method::Cd => "cd",
                    },
                ]);
            if let Some(p) = &a.config {
                c.arg("--config").arg(p);
            }
            if let Some(s) = a.seed {
                c.args(["--seed", &s.to_string()]);
            }
            if let Some(n) = a.samples {
                c.args(["--samples", &n.to_string()]);
            }
            if a.quick {
                c.arg("--quick");
            }
            c.stdout(file.try_clone()?).stderr(file);
            let child = c.spawn().context("starting a toy worker")?;
            println!("worker: width {w}, seed {s} → {}", log.display());
            running.push(((w, s), child, log));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let ((w, s), _, log) = running.remove(i);
                if status.success() {
                    println!("worker: width {w}, seed {s} done");
                } else {
                    failed.push(format!("width {w}, seed {s} (see {})", log.display()));
                }
            } else {
                i += 1;
            }
        }
    }
    if !failed.is_empty() {
        bail!("toy workers failed: {}", failed.join("; "));
    }
    Ok(())
}

/// Teacher samples | narrowest width at the smallest K | … at the largest K | per width: ℓ1 to
/// the teacher against K with ± std bars and the noise floor.
fn write_figure(path: &Path, o: &ToyOutcome) -> Result<()> {
    let scatter = |x: &Tensor, labels: &[i64]| {
        let mut p = plot::Panel::new(400, BOX);
        for (pt, &c) in points(x).iter().zip(labels) {
            p.scatter(std::slice::from_ref(pt), plot::palette(c as usize));
        }
        p.img
    };
    let mut panels = vec![scatter(&o.teacher_samples.0, &o.teacher_samples.1)];
    for (_, x, l) in &o.student_samples {
        panels.push(scatter(x, l));
    }
    let r = &o.report;
    let ymax = r
        .runs
        .iter()
        .map(|x| x.l1_to_teacher + x.l1_to_teacher_std)
        .fold(r.noise_floor_l1, f64::max)
        * 1.1;
    let mut widths: Vec<i64> = r.runs.iter().map(|x| x.width).collect();
    widths.dedup();
    for w in widths {
        let rows: Vec<_> = r.runs.iter().filter(|x| x.width == w).collect();
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .map(|x| (x.l1_to_teacher, x.l1_to_teacher_std))
            .collect();
        panels.push(errorbar_chart(
            &pts,
            r.noise_floor_l1,
            ymax,
            400,
            plot::palette(0),
        ));
    }
    plot::hstack(&panels)
        .save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Means with ± std bars at evenly spaced x positions (the K values in order), y from 0 to
/// `ymax`, a dashed grey line at `floor`.
pub fn errorbar_chart(
    pts: &[(f64, f64)],
    floor: f64,
    ymax: f64,
    size: u32,
    c: Rgb<u8>,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let (m, s) = (24.0, size as f64);
    let n = pts.len();
    let px = |i: usize| {
        m + (s - 2.0 * m)
            * if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            }
    };
    let py = |y: f64| s - m - (s - 2.0 * m) * (y / ymax.max(1e-9));
    let mut put = |x: f64, y: f64, c: Rgb<u8>| {
        if x >= 0.0 && y >= 0.0 && x < s && y < s {
            img.put_pixel(x as u32, y as u32, c);
        }
    };
    for i in 0..size {
        put(m, i as f64, Rgb([0, 0, 0]));
        put(i as f64, s - m, Rgb([0, 0, 0]));
    }
    for x in (m as u32..size - m as u32).filter(|x| (x / 6) % 2 == 0) {
        put(x as f64, py(floor), Rgb([150, 150, 150]));
    }
    for (i, &(mean, std)) in pts.iter().enumerate() {
        let x = px(i);
        for d in -3..=3 {
            for e in -3..=3 {
                put(x + d as f64, py(mean) + e as f64, c);
            }
        }
        let (lo, hi) = (py(mean + std), py(mean - std));
        let mut y = lo;
        while y <= hi {
            put(x, y, c);
            put(x + 1.0, y, c);
            y += 0.5;
        }
        for d in -6..=6 {
            put(x + d as f64, lo, c);
            put(x + d as f64, hi, c);
        }
        if i + 1 < n {
            let (x2, y2) = (px(i + 1), py(pts[i + 1].0));
            for k in 0..=200 {
                let t = k as f64 / 200.0;
                put(x + t * (x2 - x), py(mean) + t * (y2 - py(mean)), c);
            }
        }
    }
    img
}
