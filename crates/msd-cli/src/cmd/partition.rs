//! `msd partition`: splits the classes of a run among K students and writes `partition.json`.

use anyhow::Result;
use msd::partition::Strategy;
use msd::run::{repartition, RunDir};
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
    let r = repartition(&run, a.students, a.strategy, a.force, a.device)?;
    let p = &r.partition;
    if let Some((k, strategy)) = r.config_was {
        println!(
            "config: distill.students = {}, distill.partition = {:?} (were {k}, {strategy:?}) in {}",
            p.students,
            p.strategy,
            run.config_path().display()
        );
    }
    for s in 0..p.students {
        println!("student {s}: classes {:?}", p.classes_of(s));
    }
    println!("partition: {}", run.partition_path().display());
    Ok(())
}
