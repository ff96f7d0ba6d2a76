//! `msd bench`: times what the experiments spend their CPU on, each beside its PyTorch twin
//! (see [`msd::bench`], which does the timing); this command reads the flags, writes
//! `bench.json` and prints the table.

use anyhow::{bail, Context, Result};
use msd::bench::BenchOptions;
use msd::config::RunConfig;
use msd::nets::{NetConfig, Precision};
use std::path::PathBuf;

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
    /// Time only these rows besides the teacher rows (comma-separated: student_one_step,
    /// train_step, dm_iteration; default all).
    #[arg(long, value_delimiter = ',', value_parser = ["student_one_step", "train_step", "dm_iteration"])]
    pub rows: Vec<String>,
    /// Internal: time only the allocator row and print it as JSON (the child process).
    #[arg(long, hide = true)]
    pub allocator_child: bool,
    /// Where to write bench.json.
    #[arg(long, default_value = "runs/bench")]
    pub out: PathBuf,
}

impl Args {
    fn options(&self) -> BenchOptions {
        BenchOptions {
            config: self.config.clone(),
            reps: self.reps,
            rounds: self.rounds,
            teacher_steps: self.teacher_steps,
            teacher_batch: self.teacher_batch,
            teacher_reps: self.teacher_reps,
            no_teacher: self.no_teacher,
            only_teacher: self.only_teacher,
            precision: self.precision.clone(),
            python: self
                .python
                .clone()
                .or_else(|| std::env::var("MSD_TORCH_PYTHON").ok())
                .unwrap_or_else(|| "python3".into()),
            no_peer: self.no_peer,
            compile: self.compile.clone(),
            rows: self.rows.clone(),
        }
    }

    /// This binary in its allocator-child mode, with the same settings.
    fn allocator_child(&self, threads: i32) -> Result<std::process::Command> {
        let exe = std::env::current_exe().context("locating the msd binary")?;
        let mut c = std::process::Command::new(exe);
        c.args([
            "--threads",
            &threads.to_string(),
            "bench",
            "--allocator-child",
        ])
        .arg("--config")
        .arg(&self.config)
        .args(["--reps", &self.reps.to_string()])
        .args(["--teacher-batch", &self.teacher_batch.to_string()])
        .arg("--precision")
        .arg(
            self.precision
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(","),
        );
        Ok(c)
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
    let o = a.options();
    if a.allocator_child {
        let rows = msd::bench::allocator_rows(&cfg, &o)?;
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    let child = if a.no_allocator {
        None
    } else {
        Some(a.allocator_child(tch::get_num_threads())?)
    };
    let report = msd::bench::run(&cfg, &o, child)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    msd::train::checkpoint::write_json_atomic(&a.out.join("bench.json"), &report)?;
    print!("{}", report.text(a.teacher_reps));
    println!("report: {}", a.out.join("bench.json").display());
    Ok(())
}
