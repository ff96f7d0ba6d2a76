//! `msd partition`: splits the classes of a run among K students and writes `partition.json`.

use anyhow::{bail, Result};
use msd::partition::Strategy;
use msd::run::{ensure_partition, RunDir};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (with config.toml and teacher/).
    #[arg(long)]
    pub run: PathBuf,
    /// Number of students (default: the config's distill.students).
    #[arg(long)]
    pub students: Option<usize>,
    /// How to split the classes (default: the config's distill.partition).
    #[arg(long, value_enum)]
    pub strategy: Option<Strategy>,
    /// Replace an existing partition.json.
    #[arg(long)]
    pub force: bool,
    #[arg(long, default_value = "cpu", value_parser = crate::device::parse)]
    pub device: tch::Device,
}

pub fn run(a: Args) -> Result<()> {
    let run = RunDir::new(&a.run);
    let cfg = run.load_config()?;
    // Replacing the partition under a training student would invalidate it: whole-run lock.
    let _lock = msd::train::lock::RunLock::acquire(&a.run)?;
    let k = a.students.unwrap_or(cfg.distill.students);
    let strategy = a.strategy.unwrap_or(cfg.distill.partition);
    let path = run.partition_path();
    if path.exists() {
        if !a.force {
            bail!(
                "{} exists; pass --force to replace it (students trained on it become invalid)",
                path.display()
            );
        }
        std::fs::remove_file(&path)?;
    }
    let teacher = run.load_teacher(a.device)?;
    // The run's config follows the partition, so that `msd distill` (which checks the
    // partition against `distill.students` / `distill.partition`) accepts it.
    if k != cfg.distill.students || strategy != cfg.distill.partition {
        let mut c = cfg.clone();
        c.distill.students = k;
        c.distill.partition = strategy;
        c.distill
            .validate()
            .map_err(|e| anyhow::anyhow!("--students {k}: {e}"))?;
        c.save(&run.config_path())?;
        println!(
            "config: distill.students = {k}, distill.partition = {strategy:?} (were {}, {:?}) in {}",
            cfg.distill.students,
            cfg.distill.partition,
            run.config_path().display()
        );
    }
    let p = ensure_partition(
        &path,
        &teacher,
        k,
        strategy,
        cfg.seed,
        &cfg.sampler,
        cfg.distill.kmeans_samples_per_class,
    )?;
    for s in 0..p.students {
        println!("student {s}: classes {:?}", p.classes_of(s));
    }
    println!("partition: {}", path.display());
    Ok(())
}
