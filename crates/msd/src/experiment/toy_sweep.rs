//! A toy sweep as `msd toy` runs it: the config (the embedded `configs/toy.toml` or another,
//! shrunk by `quick`), the run directory's lock, the (width, seed) groups trained in this
//! process or as `jobs` parallel single-thread worker processes (libtorch's generator is
//! process-global, so threads would not be reproducible; each worker is this executable run
//! as `toy --worker`, its output in `OUT/logs/`), then the report and `toy.png`.

use crate::config::RunConfig;
use crate::error::ResultExt;
use crate::experiment::toy::{quick_config, ToyContext, ToyMethod, ToyOptions, ToyOutcome};
use crate::experiment::workers::{run_workers, WorkerEvent, WorkerTask};
use crate::experiment::{Observer, Provenance};
use crate::train::lock::RunLock;
use crate::{Error, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use tch::Device;

/// The options of a sweep (the flags of `msd toy`).
#[derive(Clone, Debug)]
pub struct ToySweepOptions {
    /// Output directory (reused: finished pieces are not recomputed).
    pub out: PathBuf,
    /// Another config instead of the embedded `configs/toy.toml`.
    pub config: Option<PathBuf>,
    /// The config's seed (teacher, pairs, evaluation noise) instead of its own.
    pub seed: Option<u64>,
    /// Training seeds of the students.
    pub seeds: Vec<u64>,
    /// Student widths (empty: the teacher's).
    pub widths: Vec<i64>,
    /// Numbers of students.
    pub students: Vec<usize>,
    pub method: ToyMethod,
    /// Samples per class of every histogram (default 10 000; 2 000 with `quick`).
    pub samples: Option<usize>,
    /// Parallel worker processes, one per (width, seed) group.
    pub jobs: usize,
    /// The smoke-test budget.
    pub quick: bool,
    /// This process is a worker: train and evaluate its cells only, write no report (the
    /// parent holds the lock).
    pub worker: bool,
    /// Pilot runs: only student K of every cell, no report.
    pub pilot_student: Option<usize>,
    pub provenance: Provenance,
}

/// The sweep's run config: `path`'s or the embedded one, with `seed` and `quick` applied, and
/// the samples per class it implies.
pub fn toy_config(
    path: Option<&std::path::Path>,
    seed: Option<u64>,
    quick: bool,
) -> Result<(RunConfig, usize)> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| Error::io(p, e))
                .ctx(|| format!("--config {}", p.display()))?,
            p.to_path_buf(),
        ),
        None => (
            crate::experiment::toy::TOY_CONFIG.to_string(),
            PathBuf::from("configs/toy.toml (embedded)"),
        ),
    };
    let mut cfg = RunConfig::from_toml(&text, &origin)?;
    if let Some(s) = seed {
        cfg.seed = s;
    }
    let n_eval = if quick {
        quick_config(&mut cfg)
    } else {
        10_000
    };
    Ok((cfg, n_eval))
}

/// Runs the sweep; the outcome (report written, figure saved as `toy.png`) unless this is a
/// worker or a pilot run.
pub fn run_toy_sweep(o: &ToySweepOptions, obs: &mut dyn Observer) -> Result<Option<ToyOutcome>> {
    let wall = Instant::now();
    let (config, n_eval) = toy_config(o.config.as_deref(), o.seed, o.quick)?;
    if o.jobs == 0 {
        return Err(Error::Invalid("--jobs must be ≥ 1".into()));
    }
    // One sweep per output directory; its workers run under the parent's lock.
    let _lock = if o.worker {
        None
    } else {
        Some(RunLock::acquire(&o.out)?)
    };
    let opts = ToyOptions {
        config,
        out: o.out.clone(),
        seeds: o.seeds.clone(),
        widths: o.widths.clone(),
        students: o.students.clone(),
        method: o.method,
        samples_per_class: o.samples.unwrap_or(n_eval),
        report: !o.worker,
        quick: o.quick,
        provenance: o.provenance.clone(),
        device: Device::Cpu,
        pilot_student: o.pilot_student,
    };
    let ctx = ToyContext::prepare(opts, obs)?;
    let widths = ctx.options().widths()?;
    let seeds = ctx.options().seeds.clone();
    if o.pilot_student.is_some() {
        ctx.cells(&widths, &seeds, obs)?;
        return Ok(None);
    }
    if o.worker || o.jobs == 1 {
        ctx.cells(&widths, &seeds, obs)?;
    } else {
        workers(o, &widths, &seeds, obs)?;
    }
    if o.worker {
        return Ok(None);
    }
    let outcome = ctx.report(wall, obs)?;
    crate::viz::save_png(&outcome.figure()?, &o.out.join("toy.png"))?;
    Ok(Some(outcome))
}

/// The worker command of one (width, seed) group: this executable with `toy --worker` and the
/// options that shape the cells.
pub fn worker_command(exe: &std::path::Path, o: &ToySweepOptions, w: i64, s: u64) -> Command {
    let mut c = Command::new(exe);
    c.args(["--threads", "1", "toy", "--worker", "--out"])
        .arg(&o.out)
        .args(["--seeds", &s.to_string(), "--widths", &w.to_string()])
        .arg("--students")
        .arg(
            o.students
                .iter()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .args(["--method", o.method.as_str()]);
    if let Some(p) = &o.config {
        c.arg("--config").arg(p);
    }
    if let Some(s) = o.seed {
        c.args(["--seed", &s.to_string()]);
    }
    if let Some(n) = o.samples {
        c.args(["--samples", &n.to_string()]);
    }
    if o.quick {
        c.arg("--quick");
    }
    c
}

/// Runs one worker process per (width, seed) group, `jobs` at a time.
fn workers(
    o: &ToySweepOptions,
    widths: &[i64],
    seeds: &[u64],
    obs: &mut dyn Observer,
) -> Result<()> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("the msd binary", e))
        .ctx(|| "locating the msd binary for --jobs")?;
    let mut tasks = Vec::new();
    for &w in widths {
        for &s in seeds {
            tasks.push(WorkerTask {
                label: format!("width {w}, seed {s}"),
                command: worker_command(&exe, o, w, s),
                log: o.out.join("logs").join(format!("w{w}-s{s}.log")),
            });
        }
    }
    run_workers(tasks, o.jobs, &mut |e| match e {
        WorkerEvent::Started { label, log } => {
            obs.note(&format!("worker: {label} → {}", log.display()))
        }
        WorkerEvent::Finished { label } => obs.note(&format!("worker: {label} done")),
    })
    .ctx(|| "toy workers")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(out: PathBuf) -> ToySweepOptions {
        ToySweepOptions {
            out,
            config: None,
            seed: Some(3),
            seeds: vec![0],
            widths: vec![],
            students: vec![1, 2],
            method: ToyMethod::Cd,
            samples: Some(50),
            jobs: 2,
            quick: true,
            worker: false,
            pilot_student: None,
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn a_worker_gets_the_options_that_shape_its_cells() {
        let c = worker_command(std::path::Path::new("msd"), &opts("o".into()), 32, 1);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "--threads 1 toy --worker --out o --seeds 1 --widths 32 --students 1,2 \
             --method cd --seed 3 --samples 50 --quick"
        );
    }

    #[test]
    fn quick_and_seed_apply_to_the_embedded_config() {
        let (full, n) = toy_config(None, None, false).unwrap();
        assert_eq!(n, 10_000);
        let (quick, n) = toy_config(None, Some(9), true).unwrap();
        assert_eq!((n, quick.seed, quick.distill.iterations), (2000, 9, 300));
        assert!(full.teacher.steps > quick.teacher.steps);
        let e = toy_config(
            Some(std::path::Path::new("/nonexistent/toy.toml")),
            None,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--config /nonexistent/toy.toml"), "{e}");
    }

    #[test]
    fn a_second_sweep_on_one_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RunLock::acquire(dir.path()).unwrap();
        let mut o = opts(dir.path().to_path_buf());
        o.jobs = 1;
        let e = run_toy_sweep(&o, &mut crate::experiment::Silent)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("is in use by another msd process"), "{e}");
    }
}
