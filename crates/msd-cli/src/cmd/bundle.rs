//! `msd bundle`: assembles and validates `bundle.json` from a run's students.

use anyhow::Result;
use msd::partition::Partition;
use msd::run::{assemble_bundle, RunDir};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Which stage's students to bundle.
    #[arg(long, default_value = "dm")]
    pub stage: String,
}

pub fn run(a: Args) -> Result<()> {
    let run = RunDir::new(&a.run);
    let cfg = run.load_config()?;
    // Refused while a whole-run writer (train-teacher, partition) holds the run.
    let _lock = msd::train::lock::RunLock::shared(&a.run)?;
    let partition = Partition::load(&run.partition_path())?;
    let m = assemble_bundle(&run, &partition, &a.stage, &cfg)?;
    msd::bundle::Bundle::load(&run.bundle_path(), tch::Device::Cpu)?;
    for s in &m.students {
        println!(
            "student {}: classes {:?}, {} parameters, {}",
            s.id, s.classes, s.params, s.dir
        );
    }
    println!("bundle: {} (validated)", run.bundle_path().display());
    Ok(())
}
