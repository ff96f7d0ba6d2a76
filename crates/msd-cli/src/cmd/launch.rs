//! `msd launch slurm|k8s`: runs a run's students as jobs of a cluster scheduler. Makes the shared
//! artifacts (partition, regression pairs) once, writes the batch scripts or manifests into
//! `R/launch/<scheduler>/`, and (Slurm) submits them: a job array, one task per student, and a
//! bundle job that waits for the whole array.

use anyhow::{Context, Result};
use msd::distill::StageKind;
use msd::launch::k8s::{self, K8sOptions};
use msd::launch::launched::{launch_k8s, launch_slurm};
use msd::launch::slurm::SlurmOptions;
use msd::launch::{parse_students, prepare_run, student_device, BundleEval};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(clap::Subcommand)]
pub enum Target {
    /// A Slurm job array (task k = student k) and a dependent bundle job, submitted with sbatch.
    Slurm(SlurmArgs),
    /// Kubernetes manifests: an Indexed Job (index k = student k) and a bundle Job.
    K8s(K8sArgs),
}

#[derive(clap::Args)]
pub struct SlurmArgs {
    /// Run directory (with config.toml and teacher/), on a file system the nodes share.
    #[arg(long)]
    pub run: PathBuf,
    /// Students to launch: a range or list such as 0-3 or 0,2 (default: all).
    #[arg(long)]
    pub students: Option<String>,
    /// Stages each student runs, in order (as `msd distill --stages`: tsm,dm,adm or tsm,cd).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dm")]
    pub stages: Vec<StageKind>,
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Generic resources per student, e.g. gpu:1 (implies --device cuda unless given).
    #[arg(long)]
    pub gres: Option<String>,
    /// CPUs per student (also its tensor threads).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Time limit per student task, e.g. 4:00:00; the task checkpoints and requeues itself
    /// --warn-seconds before it.
    #[arg(long)]
    pub time: Option<String>,
    #[arg(long, default_value_t = 120)]
    pub warn_seconds: u32,
    /// Device of the students: cpu, cuda (default: cuda with --gres, else cpu).
    #[arg(long)]
    pub device: Option<String>,
    /// Prefix of the job names.
    #[arg(long, default_value = "msd")]
    pub job_name: String,
    /// Only write the scripts; submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The sbatch program.
    #[arg(long, default_value = "sbatch")]
    pub sbatch: PathBuf,
    /// After bundling, also evaluate the bundle on this many samples (`msd eval --bundle`,
    /// into RUN/eval-students) in the same dependent job.
    #[arg(long)]
    pub eval_n: Option<usize>,
    /// The feature network of that evaluation (`msd eval --classifier`), as the job sees it.
    #[arg(long, requires = "eval_n")]
    pub eval_classifier: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct K8sArgs {
    /// Run directory (its copy on the volume is what the pods use).
    #[arg(long)]
    pub run: PathBuf,
    /// Container image with `msd` on PATH (see the Dockerfile).
    #[arg(long)]
    pub image: String,
    /// PersistentVolumeClaim holding the run directory.
    #[arg(long)]
    pub volume: String,
    /// The run directory's path inside the claim (default: the claim's root).
    #[arg(long, default_value = "")]
    pub sub_path: String,
    /// Mount point of the run directory in the pods.
    #[arg(long, default_value = "/msd/run")]
    pub mount_path: String,
    /// Base of the Jobs' names (default: from the run directory's name).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dm")]
    pub stages: Vec<StageKind>,
    /// GPUs per student pod (nvidia.com/gpu); implies --device cuda unless given.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory per student pod, e.g. 16Gi.
    #[arg(long)]
    pub memory: Option<String>,
    /// Student pods running at once (default: all).
    #[arg(long)]
    pub parallelism: Option<usize>,
    #[arg(long)]
    pub device: Option<String>,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 120)]
    pub grace_seconds: u32,
    #[arg(long, default_value_t = 3)]
    pub backoff_limit: u32,
    /// After bundling, also evaluate the bundle on this many samples (`msd eval --bundle`,
    /// into RUN/eval-students) in the same dependent job.
    #[arg(long)]
    pub eval_n: Option<usize>,
    /// The feature network of that evaluation (`msd eval --classifier`), as the job sees it.
    #[arg(long, requires = "eval_n")]
    pub eval_classifier: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    match a.target {
        Target::Slurm(s) => run_slurm(s),
        Target::K8s(k) => run_k8s(k),
    }
}

/// `--eval-n` / `--eval-classifier` as the bundle job's evaluation.
fn bundle_eval(n: Option<usize>, classifier: Option<PathBuf>) -> Option<BundleEval> {
    n.map(|n| BundleEval { n, classifier })
}

fn run_slurm(a: SlurmArgs) -> Result<()> {
    // Shared artifacts first, so no two tasks race to make them.
    let (run_path, partition) = prepare_run(&a.run)?;
    let students = match &a.students {
        Some(s) => parse_students(s, partition.students)?,
        None => (0..partition.students).collect(),
    };
    let gpus = a.gres.as_deref().is_some_and(|g| g.contains("gpu"));
    let device = student_device(a.device, gpus);
    let opts = SlurmOptions {
        program: std::env::current_exe().context("locating the msd binary")?,
        run: run_path.clone(),
        students,
        stages: a.stages.clone(),
        device,
        partition: a.partition,
        gres: a.gres,
        cpus_per_task: a.cpus_per_task,
        time: a.time,
        warn_seconds: a.warn_seconds,
        job_name: a.job_name,
        eval: bundle_eval(a.eval_n, a.eval_classifier),
    };
    println!(
        "{}",
        launch_slurm(&opts, partition.students, a.dry_run, &a.sbatch)?
    );
    Ok(())
}

fn run_k8s(a: K8sArgs) -> Result<()> {
    let (run_path, partition) = prepare_run(&a.run)?;
    let device = student_device(a.device, a.gpus > 0);
    let opts = K8sOptions {
        name: a.name.unwrap_or_else(|| k8s::job_name_from(&run_path)),
        image: a.image,
        claim: a.volume,
        sub_path: a.sub_path,
        mount_path: a.mount_path,
        students: partition.students,
        parallelism: a.parallelism,
        stages: a.stages.clone(),
        device,
        gpus: a.gpus,
        cpus: a.cpus,
        memory: a.memory,
        grace_seconds: a.grace_seconds,
        backoff_limit: a.backoff_limit,
        eval: bundle_eval(a.eval_n, a.eval_classifier),
    };
    println!("{}", launch_k8s(&run_path, opts)?);
    Ok(())
}
