//! Writes a bundle of K freshly initialised students of a run config's network, for measuring
//! serving throughput of an architecture before any student is trained (the numbers depend on
//! the network, not on its weights).
//!
//! `cargo run --release -p msd-serve --example random_bundle -- configs/mnist.toml 4 runs/unet-bench`

use msd::bundle::Bundle;
use msd::config::RunConfig;
use msd::model::EdmModel;
use msd::partition::Partition;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, k, out] = args.as_slice() else {
        return Err("usage: random_bundle CONFIG.toml K OUT_DIR".into());
    };
    let cfg = RunConfig::load(config.as_ref())?;
    let k: usize = k.parse()?;
    let out = PathBuf::from(out);
    let classes = cfg.model.net.num_classes() as usize;
    let dirs: Vec<PathBuf> = (0..k)
        .map(|s| {
            tch::manual_seed(s as i64);
            let d = out.join("students").join(s.to_string());
            EdmModel::from_spec(&cfg.model, tch::Device::Cpu).save_dir(&d)?;
            Ok(d)
        })
        .collect::<msd::Result<_>>()?;
    let path = out.join("bundle.json");
    Bundle::assemble(&path, &Partition::contiguous(classes, k), &dirs, None, 80.0)?;
    println!("{}", path.display());
    Ok(())
}
